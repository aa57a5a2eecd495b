//! A DataPipeline the operator cannot read (stored under an older, looser schema) is reported
//! on the object and does not stall the others.
//!
//! This test swaps the cluster-wide CRD for a moment, so it lives in its own test binary: cargo
//! runs test binaries one after another.

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::json;
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually, kubectl};
use zeroflow_operator::api::DataPipeline;

#[tokio::test]
async fn a_malformed_pipeline_is_reported_and_the_others_keep_going() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-malformed").await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let real = DataPipeline::crd();
    let ssa = PatchParams::apply("zeroflow-e2e").force();

    // An "older" CRD whose spec accepts anything, as if the object predates today's schema.
    let mut loose = real.clone();
    loose.spec.versions[0].schema = serde_json::from_value(json!({"openAPIV3Schema": {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }
    }}))?;
    let result = async {
        crds.patch(&real.name_any(), &ssa, &Patch::Apply(&loose)).await?;
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("zeroflow.dev", "v1alpha1", "DataPipeline"),
            "datapipelines",
        );
        let dynamic: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);
        let bad: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": "broken"},
            "spec": {"source": {"bucket": "b1b"}, "transform": {"image": "i"}, "scaling": {"maxReplicas": "lots"}}
        }))?;
        eventually("loose schema in effect", TIMEOUT, || async {
            Ok(dynamic.create(&PostParams::default(), &bad).await.ok())
        })
        .await?;
        anyhow::Ok(())
    }
    .await;
    // Always restore the real CRD, even when the setup failed, the way it was installed
    // (kubectl's server-side apply), so a later `kubectl apply -f crds/` meets no conflict.
    let crd_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/");
    kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crd_dir]).await?;
    result?;
    let crd_name = real.name_any();
    let established = await_condition(crds.clone(), &crd_name, conditions::is_crd_established());
    tokio::time::timeout(TIMEOUT, established).await.context("CRD re-established")??;

    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let good: DataPipeline = serde_json::from_value(json!({
        "apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": "healthy"},
        "spec": {"source": {"bucket": "b1b"}, "transform": {"image": "i"}}
    }))?;
    eventually("strict schema back", TIMEOUT, || async {
        Ok(pipelines.create(&PostParams::default(), &good).await.ok())
    })
    .await?;

    let operator = Operator::start(&ns.name, "solo").await?;
    operator.wait_ready(TIMEOUT).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    eventually("the healthy pipeline gets workers", TIMEOUT, || async {
        deployments.get_opt("healthy-worker").await.map_err(Into::into)
    })
    .await?;
    let events = eventually("a Malformed warning on the broken pipeline", TIMEOUT, || async {
        let out = kubectl(&[
            "get",
            "events",
            "-n",
            &ns.name,
            "--field-selector",
            "involvedObject.name=broken",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ])
        .await?;
        Ok(out.contains("Malformed").then_some(out))
    })
    .await?;
    assert!(events.contains("cannot be read") && events.contains("\"lots\""), "{events}");
    assert!(deployments.get_opt("broken-worker").await?.is_none(), "nothing is built from an unreadable spec");
    // The unreadable object is parked until it changes, not retried in a loop.
    eventually("the malformed reconcile counted once", TIMEOUT, || async {
        let metrics = operator.metrics().await?;
        Ok(metrics.contains("zeroflow_reconcile_errors_total{category=\"malformed\"} 1").then_some(()))
    })
    .await?;
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let metrics = operator.metrics().await?;
    assert!(metrics.contains("zeroflow_reconcile_errors_total{category=\"malformed\"} 1"), "retried: {metrics}");
    Ok(())
}
