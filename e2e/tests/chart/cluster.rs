//! Renders against the testbed's apiserver (`--dry-run=server`, prometheus-operator's CRDs for
//! the monitoring objects), helm's refusal of bad values, and the adoption of a CRD applied with
//! kubectl.

use kube::Client;
use serde_json::Value;
use zeroflow_e2e::chart::{self, Scratch, helm, helm_run, kubectl_run, raw_documents, template, test_chart};
use zeroflow_e2e::{TestNamespace, client};

use crate::support::{
    crd_kept, dry_run, dump, id, kubectl, monitoring_crds, new_ns, printer_columns, remove_cluster_scoped, write_docs,
};

#[tokio::test]
async fn helm_install_refuses_bad_values_before_creating_anything() -> anyhow::Result<()> {
    let chart = chart::chart().display().to_string();
    let args = ["install", "zf-bad", chart.as_str(), "-n", "default", "--set", "logFormat=xml", "--dry-run=server"];
    let out = helm_run(&args).await?.failure("helm install with logFormat=xml")?;
    anyhow::ensure!(out.contains("value must be one of 'plain', 'json'"), "{out}");
    anyhow::ensure!(!out.contains("cluster unreachable"), "{out}");
    Ok(())
}

#[tokio::test]
async fn default_render_is_accepted_by_the_apiserver() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = new_ns(&client, "zfc-dry", true).await?;
    let scratch = Scratch::new("chart-dry")?;
    let rendered = template(&format!("zfc-{}", id(&ns)), &chart::chart(), &ns.name, &[]).await?;
    std::fs::write(scratch.path("default.yaml"), rendered)?;
    let out = dry_run(&scratch.path("default.yaml")).await?;
    for kind in [
        "customresourcedefinition",
        "serviceaccount",
        "secret",
        "clusterrole",
        "clusterrolebinding",
        "role",
        "rolebinding",
        "service",
        "deployment",
        "validatingadmissionpolicy",
        "validatingadmissionpolicybinding",
    ] {
        let found = out.lines().any(|l| l.starts_with(&format!("{kind}.")) || l.starts_with(&format!("{kind}/")));
        anyhow::ensure!(found, "no {kind} in the default render:\n{out}");
    }
    Ok(())
}

#[tokio::test]
async fn non_default_render_is_accepted_by_the_apiserver() -> anyhow::Result<()> {
    let client = client().await?;
    let lim = new_ns(&client, "zfc-lim", true).await?;
    let (a, b) = (new_ns(&client, "zfc-a", false).await?, new_ns(&client, "zfc-b", false).await?);
    let release = format!("zfc-{}", id(&lim));
    let values = chart::root().join("e2e/chart/values-limited.yaml").display().to_string();
    let watch = format!("watchNamespaces={{{},{}}}", a.name, b.name);
    let docs =
        raw_documents(&template(&release, &chart::chart(), &lim.name, &["-f", &values, "--set", &watch]).await?)?;
    // The objects of prometheus-operator's API are checked by content first, the rest by the
    // apiserver.
    let (monitoring, core): (Vec<_>, Vec<_>) = docs
        .iter()
        .cloned()
        .partition(|(_, d)| d["apiVersion"].as_str().is_some_and(|v| v.starts_with("monitoring.coreos.com/")));
    let scratch = Scratch::new("chart-dry-lim")?;
    write_docs(&scratch.path("core.yaml"), &core)?;
    let out = dry_run(&scratch.path("core.yaml")).await?;
    for object in [
        format!("poddisruptionbudget.policy/{release}-zeroflow"),
        format!("networkpolicy.networking.k8s.io/{release}-zeroflow"),
        format!("configmap/{release}-zeroflow-dashboard"),
        format!("role.rbac.authorization.k8s.io/{release}-zeroflow"),
        format!("ingress.networking.k8s.io/{release}-zeroflow"),
    ] {
        anyhow::ensure!(out.contains(&object), "no {object} in:\n{out}");
    }
    anyhow::ensure!(
        !out.contains(&format!("clusterrole.rbac.authorization.k8s.io/{release}-zeroflow ")),
        "limited mode must not create the workload ClusterRole:\n{out}"
    );
    // And prometheus-operator's own CRDs validate them, with the PodMonitor variant too.
    let mut with_pods = raw_documents(
        &template(
            &release,
            &chart::chart(),
            &lim.name,
            &[
                "-f",
                &values,
                "--set",
                &watch,
                "--set",
                "serviceMonitor.enabled=false",
                "--set",
                "podMonitor.enabled=true",
            ],
        )
        .await?,
    )?;
    with_pods.retain(|(_, d)| d["kind"] == "PodMonitor");
    write_docs(&scratch.path("monitoring.yaml"), &[monitoring.clone(), with_pods].concat())?;
    let crds = monitoring_crds().await?;
    let checked = dry_run(&scratch.path("monitoring.yaml")).await;
    for crd in &crds {
        let _ = kubectl_run(&["delete", "crd", crd, "--ignore-not-found", "--wait=false"]).await;
    }
    let checked = checked?;
    for object in ["prometheusrule", "servicemonitor", "podmonitor"] {
        let name = format!("{object}.monitoring.coreos.com/{release}-zeroflow");
        anyhow::ensure!(checked.contains(&name), "no {name} in:\n{checked}");
    }
    let monitoring: Vec<Value> = monitoring.into_iter().map(|(_, d)| d).collect();
    let mut kinds: Vec<_> = monitoring.iter().filter_map(|d| d["kind"].as_str()).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["PrometheusRule", "ServiceMonitor"], "monitoring objects");
    let monitor = chart::find(&monitoring, "ServiceMonitor", &format!("{release}-zeroflow"))?;
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    assert!(!docs.iter().any(|(_, d)| d["kind"] == "Secret"), "existingSecret set, yet a Secret is rendered");
    let crd = docs.iter().any(|(_, d)| d["kind"] == "CustomResourceDefinition");
    assert!(!crd, "crds.install=false still renders the CRD");
    Ok(())
}

/// The DESIGN's install path: `kubectl apply -f crds/`, then `helm install`. With crds.install
/// (the default) helm refuses to take over a CRD it did not create, with a message saying how;
/// crds.install=false installs next to it; and the CRD can be adopted, after which helm
/// upgrades it.
#[tokio::test]
async fn kubectl_applied_crd_is_left_alone_by_default_and_can_be_adopted() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = new_ns(&client, "zfc-adopt", true).await?;
    let release = format!("zfc-{}", id(&ns));
    let group = format!("a{}.chart-test.zeroflow.dev", id(&ns));
    let crd = format!("datapipelines.{group}");
    let result = adopt(&client, &ns, &release, &group, &crd).await;
    if result.is_err() {
        eprintln!("{}", dump(&ns.name).await);
    }
    remove_cluster_scoped(&[(&release, &ns.name)], &[&crd]).await;
    result
}

async fn adopt(client: &Client, ns: &TestNamespace, release: &str, group: &str, crd: &str) -> anyhow::Result<()> {
    let scratch = Scratch::new("chart-adopt")?;
    let chart = test_chart(&scratch.path("v1"), group, false)?;
    let crd_file = chart.join("files/datapipelines.zeroflow.dev.yaml").display().to_string();
    kubectl(&["apply", "--server-side", "-f", &crd_file]).await?;
    let chart = chart.display().to_string();
    // The README's quickstart: with the default values the chart leaves a CRD it does not own
    // alone (it looks it up), so the install succeeds and the CRD stays out of the release.
    helm(&["install", release, &chart, "-n", &ns.name, "--wait", "--timeout", "2m"]).await?;
    let manifest = helm(&["get", "manifest", release, "-n", &ns.name]).await?;
    anyhow::ensure!(
        !manifest.contains("kind: CustomResourceDefinition"),
        "helm took over the kubectl-applied CRD:\n{manifest}"
    );
    kubectl(&["annotate", "crd", crd, &format!("meta.helm.sh/release-name={release}")]).await?;
    kubectl(&["annotate", "crd", crd, &format!("meta.helm.sh/release-namespace={}", ns.name)]).await?;
    kubectl(&["label", "crd", crd, "app.kubernetes.io/managed-by=Helm"]).await?;
    let v2 = test_chart(&scratch.path("v2"), group, true)?.display().to_string();
    helm(&["upgrade", release, &v2, "-n", &ns.name, "--set", "crds.install=true", "--wait", "--timeout", "2m"]).await?;
    let columns = printer_columns(client, crd).await?;
    assert!(columns.contains(&"InFlight".to_owned()), "the adopted CRD was not upgraded: {columns:?}");
    helm(&["uninstall", release, "-n", &ns.name, "--wait", "--timeout", "2m"]).await?;
    crd_kept(client, crd).await
}
