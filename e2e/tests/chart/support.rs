//! What the tests against the apiserver share: test namespaces, kubectl and `kubectl auth
//! can-i`, dry runs, prometheus-operator's CRDs, and the removal of cluster-scoped leftovers.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::Api;
use serde_json::Value;
use zeroflow_e2e::chart::{self, helm_run, kubectl_run};
use zeroflow_e2e::{TestNamespace, eventually};

pub(crate) const WAIT: Duration = Duration::from_secs(120);

/// A namespace for one test, labelled as the chart tests'; `restricted` enforces the restricted
/// Pod Security Standard in it.
pub(crate) async fn new_ns(client: &Client, prefix: &str, restricted: bool) -> anyhow::Result<TestNamespace> {
    let mut labels = vec![("zeroflow.dev/chart-test", "true")];
    if restricted {
        labels.extend([
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
            ("pod-security.kubernetes.io/warn", "restricted"),
            ("pod-security.kubernetes.io/audit", "restricted"),
        ]);
    }
    TestNamespace::create_with_labels(client, prefix, &labels).await
}

/// The random part of a test namespace's name, to name releases and API groups after.
pub(crate) fn id(ns: &TestNamespace) -> String {
    ns.name.rsplit('-').next().unwrap_or("x").to_owned()
}

/// Runs kubectl; fails with its output unless it succeeds.
pub(crate) async fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    kubectl_run(args).await?.success(&format!("kubectl {}", args.join(" ")))
}

/// What is in a namespace, for failure messages.
pub(crate) async fn dump(ns: &str) -> String {
    let mut out = format!("--- state of namespace {ns}\n");
    for args in [
        vec!["-n", ns, "get", "all,secrets,serviceaccounts,roles,rolebindings,leases", "-o", "wide"],
        vec!["-n", ns, "get", "events", "--sort-by=.lastTimestamp"],
    ] {
        if let Ok(run) = kubectl_run(&args).await {
            out.push_str(&run.text());
            out.push('\n');
        }
    }
    out
}

/// Removes what helm and the tests leave outside namespaces: the releases (their ClusterRoles,
/// bindings and admission policies) and the test CRDs. Best effort: runs after the test.
pub(crate) async fn remove_cluster_scoped(releases: &[(&str, &str)], crds: &[&str]) {
    for (release, ns) in releases {
        if helm_run(&["status", release, "-n", ns]).await.is_ok_and(|r| r.ok) {
            let _ = helm_run(&["uninstall", release, "-n", ns, "--wait=false"]).await;
        }
        let selector = format!("app.kubernetes.io/instance={release}");
        let kinds = "clusterrole,clusterrolebinding,validatingadmissionpolicy,validatingadmissionpolicybinding";
        let _ = kubectl_run(&["delete", kinds, "-l", &selector, "--ignore-not-found", "--wait=false"]).await;
    }
    for crd in crds {
        let _ = kubectl_run(&["delete", "crd", crd, "--ignore-not-found", "--wait=false"]).await;
    }
}

/// `kubectl auth can-i --as AS ARGS...`: "yes" or "no".
pub(crate) async fn can(user: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["auth", "can-i", "--as", user];
    all.extend_from_slice(args);
    Ok(kubectl_run(&all).await?.stdout.trim().to_owned())
}

/// Checks `allowed` and `refused` (each the arguments of one `kubectl auth can-i`) for `user`;
/// fails listing every mismatch.
pub(crate) async fn check_permissions(user: &str, allowed: &[Vec<&str>], refused: &[Vec<&str>]) -> anyhow::Result<()> {
    let mut wrong = Vec::new();
    for (args, want) in allowed.iter().map(|a| (a, "yes")).chain(refused.iter().map(|a| (a, "no"))) {
        let got = can(user, args).await?;
        if got != want {
            wrong.push(format!("can-i {}: got {got:?}, want {want}", args.join(" ")));
        }
    }
    anyhow::ensure!(wrong.is_empty(), "{user}:\n{}", wrong.join("\n"));
    Ok(())
}

/// The CRD exists and is not being deleted (a deleted CRD lingers while its finalizer removes
/// the custom resources).
pub(crate) async fn crd_kept(client: &Client, name: &str) -> anyhow::Result<()> {
    let crd =
        Api::<CustomResourceDefinition>::all(client.clone()).get(name).await.with_context(|| format!("CRD {name}"))?;
    anyhow::ensure!(crd.metadata.deletion_timestamp.is_none(), "CRD {name} is being deleted");
    Ok(())
}

pub(crate) async fn printer_columns(client: &Client, crd: &str) -> anyhow::Result<Vec<String>> {
    let crd = Api::<CustomResourceDefinition>::all(client.clone()).get(crd).await?;
    Ok(crd.spec.versions[0].additional_printer_columns.iter().flatten().map(|c| c.name.clone()).collect())
}

/// The value of environment variable `name` of the first container of a Deployment.
pub(crate) fn env_of(deployment: &Deployment, name: &str) -> Option<String> {
    let container = &deployment.spec.as_ref()?.template.spec.as_ref()?.containers[0];
    container.env.iter().flatten().find(|e| e.name == name)?.value.clone()
}

/// Writes the text of `docs` (see [`raw_documents`]) as one YAML stream to `path`.
pub(crate) fn write_docs(path: &Path, docs: &[(String, Value)]) -> anyhow::Result<()> {
    let text: Vec<&str> = docs.iter().map(|(text, _)| text.as_str()).collect();
    Ok(std::fs::write(path, text.join("---\n"))?)
}

/// `kubectl apply --dry-run=server -f FILE`: the applied objects (`kind.group/name`, one per
/// line) and warnings; fails on any PodSecurity warning.
pub(crate) async fn dry_run(file: &Path) -> anyhow::Result<String> {
    let run = kubectl_run(&["apply", "--dry-run=server", "-f", &file.display().to_string()]).await?;
    let text = run.text();
    anyhow::ensure!(run.ok, "kubectl apply --dry-run=server:\n{text}");
    anyhow::ensure!(!text.to_lowercase().contains("violate podsecurity"), "PodSecurity warnings:\n{text}");
    Ok(text)
}

/// Applies prometheus-operator's CRDs of the objects the chart renders (ServiceMonitor,
/// PodMonitor, PrometheusRule; from `e2e/testbed build monitoring_crds`) and waits until they
/// are established; returns their names, for the caller to delete.
pub(crate) async fn monitoring_crds() -> anyhow::Result<Vec<String>> {
    let dir = chart::testbed_dir("monitoring-crds", "PROMETHEUS_OPERATOR_VERSION")?;
    let mut names = Vec::new();
    for plural in ["servicemonitors", "podmonitors", "prometheusrules"] {
        let file = dir.join(format!("monitoring.coreos.com_{plural}.yaml")).display().to_string();
        kubectl(&["apply", "--server-side", "-f", &file]).await?;
        names.push(format!("{plural}.monitoring.coreos.com"));
    }
    for name in &names {
        // Retried: on a CRD created a moment ago, `kubectl wait` can fail on its unset conditions.
        let crd = format!("crd/{name}");
        eventually("CRD established", WAIT, || async {
            Ok(kubectl_run(&["wait", "--for=condition=Established", &crd, "--timeout=10s"]).await?.ok.then_some(()))
        })
        .await?;
    }
    Ok(names)
}
