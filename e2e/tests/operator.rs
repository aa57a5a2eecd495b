//! The operator against the testbed's real apiserver: CRD, children, status, edits, deletion,
//! CEL validation, printer columns.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually, kubectl};
use zeroflow_operator::api::DataPipeline;
use zeroflow_operator::api::conditions::{self, ACTIVE, READY};

fn minimal(name: &str) -> anyhow::Result<DataPipeline> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "zeroflow.dev/v1alpha1",
        "kind": "DataPipeline",
        "metadata": {"name": name},
        "spec": {"source": {"bucket": "raw-invoices"}, "transform": {"image": "example.org/csv2json:1"}}
    }))?)
}

async fn deployment(client: &Client, ns: &str, name: &str) -> anyhow::Result<Option<Deployment>> {
    Ok(Api::<Deployment>::namespaced(client.clone(), ns).get_opt(name).await?)
}

#[tokio::test]
async fn crd_is_established_with_short_name_and_columns() -> anyhow::Result<()> {
    let client = client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = crds.get("datapipelines.zeroflow.dev").await.context("CRD installed by `kubectl apply -f crds/`")?;
    let established = crd
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established, "CRD is not Established");
    assert_eq!(crd.spec.names.short_names, Some(vec!["dp".to_string()]));
    let columns: Vec<_> =
        crd.spec.versions[0].additional_printer_columns.iter().flatten().map(|c| c.name.clone()).collect();
    assert_eq!(
        columns,
        ["Ready", "Active", "Paused", "Replicas", "Pending", "Succeeded", "Failed", "Age", "Bucket", "Image"]
    );
    // `kubectl get dp` stays narrow; `-o wide` adds where the work comes from and what runs it.
    let wide: Vec<_> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.unwrap_or(0) > 0)
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(wide, ["Bucket", "Image"]);
    Ok(())
}

#[tokio::test]
async fn minimal_pipeline_gets_idle_workers_status_and_follows_edits_and_deletion() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-lifecycle").await?;
    let operator = Operator::start(&ns.name, "solo").await?;
    operator.wait_ready(TIMEOUT).await?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let created = pipelines.create(&PostParams::default(), &minimal("invoices")?).await?;

    // Children: an idle worker Deployment and a token-less ServiceAccount, both owned.
    let worker =
        eventually("worker Deployment", TIMEOUT, || async { deployment(&client, &ns.name, "invoices-worker").await })
            .await?;
    assert_eq!(worker.spec.as_ref().and_then(|s| s.replicas), Some(0), "workers start at zero");
    let owner = &worker.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("DataPipeline", "invoices"));
    assert_eq!(Some(owner.uid.clone()), created.metadata.uid);
    let account = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name).get("invoices-worker").await?;
    assert_eq!(account.automount_service_account_token, Some(false));
    assert_eq!(account.owner_references()[0].uid, owner.uid);

    // Status: observed generation and conditions of an idle pipeline.
    let status = eventually("Ready status", TIMEOUT, || async {
        let p = pipelines.get("invoices").await?;
        let status = p.status.clone().unwrap_or_default();
        Ok((status.observed_generation == p.metadata.generation
            && conditions::is_true(&status.conditions, READY) == Some(true))
        .then_some(status))
    })
    .await?;
    assert_eq!(conditions::is_true(&status.conditions, ACTIVE), Some(false), "idle at zero is not Active");
    assert_eq!(status.worker_deployment.as_deref(), Some("invoices-worker"));
    let ready = status.conditions.iter().find(|c| c.type_ == READY).context("Ready condition")?;
    assert_eq!(ready.reason, "Idle");

    // An event records the creation.
    let events = kubectl(&["get", "events", "-n", &ns.name, "-o", "jsonpath={.items[*].reason}"]).await?;
    assert!(events.contains("WorkersCreated"), "events: {events}");

    // kubectl shows the printer columns.
    let table = kubectl(&["get", "dp", "-n", &ns.name]).await?;
    let header = table.lines().next().unwrap_or_default();
    for column in ["NAME", "READY", "REPLICAS", "PENDING", "SUCCEEDED", "FAILED", "AGE"] {
        assert!(header.contains(column), "missing column {column} in {header:?}");
    }
    assert!(table.lines().nth(1).unwrap_or_default().contains("True"), "{table}");

    // A child deleted by hand comes back at once: its deletion triggers a reconcile (the
    // controller's own writes and status-only changes of children do not), not the next resync
    // five minutes later.
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name);
    Api::<Deployment>::namespaced(client.clone(), &ns.name).delete("invoices-worker", &DeleteParams::default()).await?;
    accounts.delete("invoices-worker", &DeleteParams::default()).await?;
    eventually("children recreated", Duration::from_secs(30), || async {
        let d = deployment(&client, &ns.name, "invoices-worker").await?;
        let sa = accounts.get_opt("invoices-worker").await?;
        Ok((d.is_some_and(|d| d.metadata.uid != worker.metadata.uid)
            && sa.is_some_and(|sa| sa.metadata.uid != account.metadata.uid))
        .then_some(()))
    })
    .await?;

    // Editing the spec updates the Deployment and advances observedGeneration.
    let patch = json!({"spec": {"transform": {"image": "example.org/csv2json:2", "args": ["--strict"]}}});
    pipelines.patch("invoices", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    eventually("Deployment follows the edit", TIMEOUT, || async {
        let d = deployment(&client, &ns.name, "invoices-worker").await?.context("deployment gone")?;
        let c = d.spec.and_then(|s| s.template.spec).map(|s| s.containers[0].clone()).context("container")?;
        Ok((c.image.as_deref() == Some("example.org/csv2json:2")
            && c.command.unwrap_or_default().last().map(String::as_str) == Some("--strict"))
        .then_some(()))
    })
    .await?;
    eventually("observedGeneration 2", TIMEOUT, || async {
        let p = pipelines.get("invoices").await?;
        Ok((p.status.and_then(|s| s.observed_generation) == Some(2)).then_some(()))
    })
    .await?;

    // Deleting the pipeline garbage-collects its children (kube-controller-manager's GC).
    pipelines.delete("invoices", &DeleteParams::background()).await?;
    eventually("children garbage-collected", TIMEOUT, || async {
        let d = deployment(&client, &ns.name, "invoices-worker").await?;
        let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name).get_opt("invoices-worker").await?;
        Ok((d.is_none() && sa.is_none()).then_some(()))
    })
    .await?;

    let metrics = operator.metrics().await?;
    assert!(metrics.contains("zeroflow_reconciles_total{outcome=\"ok\"}"), "{metrics}");
    Ok(())
}

#[tokio::test]
async fn min_replicas_keeps_idle_workers_and_lowering_it_scales_them_down() -> anyhow::Result<()> {
    let client = client().await?;
    // A restricted namespace: the worker pods only appear if the operator's pod template passes
    // the restricted Pod Security Standard.
    let ns = TestNamespace::create_with_labels(
        &client,
        "zf-replicas",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let mut spec = minimal("warm")?;
    spec.spec.scaling.min_replicas = 2;
    pipelines.create(&PostParams::default(), &spec).await?;
    let operator = Operator::start(&ns.name, "solo").await?;
    operator.wait_ready(TIMEOUT).await?;
    // KWOK runs the pods, so the pipeline becomes Ready and Active with 2 ready workers.
    eventually("2 ready workers in status", Duration::from_secs(90), || async {
        let status = pipelines.get("warm").await?.status.unwrap_or_default();
        Ok((status.ready_replicas == 2
            && conditions::is_true(&status.conditions, READY) == Some(true)
            && conditions::is_true(&status.conditions, ACTIVE) == Some(true))
        .then_some(()))
    })
    .await?;

    let patch = json!({"spec": {"scaling": {"minReplicas": 0}}});
    pipelines.patch("warm", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    eventually("idle workers scaled back to zero", Duration::from_secs(90), || async {
        let d = deployment(&client, &ns.name, "warm-worker").await?.context("deployment")?;
        let status = pipelines.get("warm").await?.status.unwrap_or_default();
        Ok((d.spec.and_then(|s| s.replicas) == Some(0)
            && status.replicas == 0
            && conditions::is_true(&status.conditions, ACTIVE) == Some(false))
        .then_some(()))
    })
    .await?;
    let events = kubectl(&["get", "events", "-n", &ns.name, "-o", "jsonpath={.items[*].message}"]).await?;
    assert!(events.contains("scaled workers from 2 to 0"), "{events}");
    Ok(())
}

#[tokio::test]
async fn an_existing_object_of_the_same_name_is_never_taken_over() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-conflict").await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    let theirs: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "ingest-worker"}}))?;
    accounts.create(&PostParams::default(), &theirs).await?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    pipelines.create(&PostParams::default(), &minimal("ingest")?).await?;
    let operator = Operator::start(&ns.name, "solo").await?;
    operator.wait_ready(TIMEOUT).await?;
    let ready = eventually("a NameConflict on the pipeline", TIMEOUT, || async {
        let status = pipelines.get("ingest").await?.status.unwrap_or_default();
        Ok(status
            .conditions
            .into_iter()
            .find(|c| c.type_ == READY && c.message.contains("not owned by this DataPipeline")))
    })
    .await?;
    assert_eq!(ready.status, "False");
    let account = accounts.get("ingest-worker").await?;
    assert!(account.owner_references().is_empty(), "the team's ServiceAccount was adopted");
    assert_eq!(account.automount_service_account_token, None, "the team's ServiceAccount was changed");
    assert!(deployment(&client, &ns.name, "ingest-worker").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn invalid_specs_are_refused_by_the_apiserver_with_readable_messages() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-invalid").await?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let cases = [
        (
            json!({"source": {"bucket": "b1b"}, "transform": {"image": "i"}, "scaling": {"minReplicas": 5, "maxReplicas": 2}}),
            "minReplicas must be less than or equal to maxReplicas",
        ),
        (json!({"source": {}, "transform": {"image": "i"}}), "spec.source.bucket: Required value"),
        (
            json!({"source": {"bucket": "b1b"}, "transform": {"image": "i", "timeout": "ten minutes"}}),
            "must be a duration such as 500ms, 30s, 5m or 1h30m",
        ),
        (
            json!({"source": {"bucket": "b1b"}, "transform": {"image": "i"}, "scaling": {"idleTimeout": "5"}}),
            "must be a duration",
        ),
        (
            json!({"source": {"bucket": "Not_A_Bucket"}, "transform": {"image": "i"}}),
            "bucket must be a valid bucket name",
        ),
        (
            json!({"source": {"bucket": "b1b", "store": {"endpoint": "minio:9000", "credentialsSecretRef": {"name": "s"}}},
                "transform": {"image": "i"}}),
            "endpoint must be an http:// or https:// URL",
        ),
        (
            json!({"source": {"bucket": "b1b"}, "transform": {"image": "i"}, "sink": {"prefix": ""}}),
            "sink.prefix must not be empty when the sink is the source bucket",
        ),
        (
            json!({"source": {"bucket": "b1b"}, "transform": {"image": "i"}, "delivery": {"maxAttempts": 0}}),
            "maxAttempts must be between 1 and 100",
        ),
    ];
    for (i, (spec, message)) in cases.into_iter().enumerate() {
        let object = json!({"apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline",
            "metadata": {"name": format!("bad-{i}")}, "spec": spec});
        let data = serde_json::to_vec(&object)?;
        let request = http::Request::post(format!("/apis/zeroflow.dev/v1alpha1/namespaces/{}/datapipelines", ns.name))
            .header("content-type", "application/json")
            .body(data)?;
        let result = client.request_text(request).await;
        let error = match result {
            Ok(body) => anyhow::bail!("case {i} was accepted: {body}"),
            Err(kube::Error::Api(e)) => e,
            Err(e) => return Err(e.into()),
        };
        assert_eq!(error.code, 422, "case {i}: {error:?}");
        assert!(error.message.contains(message), "case {i}: expected {message:?} in {:?}", error.message);
    }
    // And a long name is refused because it would not fit the worker's labels.
    let mut long = minimal(&"a".repeat(60))?;
    long.metadata.namespace = Some(ns.name.clone());
    let error = pipelines.create(&PostParams::default(), &long).await.expect_err("60-char name refused");
    assert!(error.to_string().contains("at most 52 characters"), "{error}");
    Ok(())
}

#[tokio::test]
async fn source_reachability_is_checked_against_the_real_store() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-source").await?;
    let endpoint = std::env::var("ZF_S3_ENDPOINT")?;
    let alias = std::env::var("ZF_MC_ALIAS")?;
    let mc = std::env::var("MC")?;
    let bucket = format!("zf-src-{}", ns.name.rsplit('-').next().unwrap_or("x"));
    let made = tokio::process::Command::new(&mc).args(["mb", &format!("{alias}/{bucket}")]).output().await?;
    anyhow::ensure!(made.status.success(), "mc mb: {}", String::from_utf8_lossy(&made.stderr));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    for (name, key, secret) in [
        ("good", std::env::var("ZF_S3_ACCESS_KEY")?, std::env::var("ZF_S3_SECRET_KEY")?),
        ("wrong", std::env::var("ZF_S3_ACCESS_KEY")?, "not-the-password".to_owned()),
    ] {
        let s: Secret = serde_json::from_value(json!({
            "metadata": {"name": name},
            "stringData": {"accessKeyId": key, "secretAccessKey": secret}
        }))?;
        secrets.create(&PostParams::default(), &s).await?;
    }
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let cases = [
        ("reachable", bucket.as_str(), "good", true, "Listed"),
        ("no-bucket", "zf-no-such-bucket", "good", false, "BucketNotFound"),
        ("bad-creds", bucket.as_str(), "wrong", false, "AccessDenied"),
        ("no-secret", bucket.as_str(), "missing", false, "SecretNotFound"),
    ];
    for (name, bucket, secret, _, _) in &cases {
        let p: DataPipeline = serde_json::from_value(json!({
            "apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": name},
            "spec": {"source": {"bucket": bucket, "store": {"endpoint": endpoint, "credentialsSecretRef": {"name": secret}}},
                     "transform": {"image": "example.org/t:1"}}
        }))?;
        pipelines.create(&PostParams::default(), &p).await?;
    }
    let operator = Operator::start(&ns.name, "solo").await?;
    operator.wait_ready(TIMEOUT).await?;
    for (name, _, _, reachable, reason) in cases {
        let condition = eventually(&format!("SourceReachable on {name}"), TIMEOUT, || async {
            let status = pipelines.get(name).await?.status.unwrap_or_default();
            Ok(status.conditions.into_iter().find(|c| c.type_ == conditions::SOURCE_REACHABLE))
        })
        .await?;
        assert_eq!(condition.status == "True", reachable, "{name}: {condition:?}");
        assert_eq!(condition.reason, reason, "{name}: {condition:?}");
        let degraded = pipelines.get(name).await?.status.unwrap_or_default().conditions;
        assert_eq!(conditions::is_true(&degraded, conditions::DEGRADED), Some(!reachable), "{name}: {degraded:?}");
    }
    // The credentials never leak into status or Events.
    let everything = kubectl(&["get", "dp,events", "-n", &ns.name, "-o", "json"]).await?;
    assert!(!everything.contains(&std::env::var("ZF_S3_SECRET_KEY")?), "secret leaked");
    assert!(!everything.contains("not-the-password"), "secret leaked");
    Ok(())
}
