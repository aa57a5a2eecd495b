//! A release limited to two namespaces, with the non-default values of
//! `e2e/chart/values-limited.yaml` really installed.

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use zeroflow_e2e::chart::{self, helm};
use zeroflow_e2e::{TestNamespace, client};

use crate::support::{check_permissions, dump, env_of, id, kubectl, new_ns, remove_cluster_scoped};

/// A release limited to two namespaces: Roles there and nothing elsewhere, an existing token
/// Secret mounted instead of a generated one, and the values file's extra volume, image mirror
/// and two replicas really installed.
#[tokio::test]
async fn limited_release_is_confined_to_its_namespaces_and_mounts_extra_volumes() -> anyhow::Result<()> {
    let client = client().await?;
    let lim = new_ns(&client, "zfc-lim", true).await?;
    let release = format!("zfc-{}", id(&lim));
    let result = limited_release(&client, &lim, &release).await;
    if result.is_err() {
        eprintln!("{}", dump(&lim.name).await);
    }
    remove_cluster_scoped(&[(&release, &lim.name)], &[]).await;
    result
}

async fn limited_release(client: &Client, lim: &TestNamespace, release: &str) -> anyhow::Result<()> {
    let (a, b) = (new_ns(client, "zfc-team-a", false).await?, new_ns(client, "zfc-team-b", false).await?);
    let other = new_ns(client, "zfc-other", false).await?;
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "zeroflow-gateway-token-external"}, "stringData": {"bearer": "test-token"}}),
    )?;
    Api::<Secret>::namespaced(client.clone(), &lim.name).create(&PostParams::default(), &secret).await?;
    let ca: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "store-ca"}, "data": {"ca.crt": "not checked here"}}))?;
    Api::<ConfigMap>::namespaced(client.clone(), &lim.name).create(&PostParams::default(), &ca).await?;
    // values-limited.yaml as it is, except the monitoring objects (no prometheus-operator here).
    let values = chart::root().join("e2e/chart/values-limited.yaml").display().to_string();
    let chart = chart::chart().display().to_string();
    let watch = format!("watchNamespaces={{{},{}}}", a.name, b.name);
    helm(&[
        "install",
        release,
        &chart,
        "-n",
        &lim.name,
        "-f",
        &values,
        "--set",
        &watch,
        "--set",
        "serviceMonitor.enabled=false",
        "--set",
        "prometheusRule.enabled=false",
        "--wait",
        "--timeout",
        "3m",
    ])
    .await?;
    let selector = format!("app.kubernetes.io/instance={release}");
    kubectl(&["-n", &lim.name, "wait", "pod", "-l", &selector, "--for=condition=Ready", "--timeout=2m"]).await?;
    let fullname = format!("{release}-zeroflow");
    let deployment = Api::<Deployment>::namespaced(client.clone(), &lim.name).get(&fullname).await?;
    // Only the leader is ready on a real node (followers answer 503), so check the value.
    assert_eq!(deployment.spec.as_ref().and_then(|s| s.replicas), Some(2), "replicas");
    assert_eq!(env_of(&deployment, "ZEROFLOW_NAMESPACES"), Some(format!("{},{}", a.name, b.name)));

    let user = format!("system:serviceaccount:{}:{fullname}", lim.name);
    let dp = "datapipelines.zeroflow.dev";
    let mut allowed: Vec<Vec<&str>> = Vec::new();
    let mut refused: Vec<Vec<&str>> = Vec::new();
    for n in [a.name.as_str(), b.name.as_str()] {
        allowed.extend([
            vec!["watch", dp, "-n", n],
            vec!["patch", dp, "--subresource=status", "-n", n],
            vec!["create", "deployments.apps", "-n", n],
            vec!["patch", "serviceaccounts", "-n", n],
            vec!["patch", "deployments.apps", "--subresource=scale", "-n", n],
            vec!["get", "deployments.apps", "--subresource=scale", "-n", n],
            vec!["get", "secrets", "-n", n],
            vec!["create", "events.events.k8s.io", "-n", n],
            // A worker pod's FailedMount Events (the runner's image volume, issue #17).
            vec!["list", "events", "-n", n],
            vec!["patch", "pods", "-n", n],
            vec!["watch", "pods", "-n", n],
        ]);
        refused.push(vec!["list", "secrets", "-n", n]);
    }
    allowed.push(vec!["patch", "leases.coordination.k8s.io", "-n", &lim.name]);
    allowed.push(vec!["create", "tokenreviews.authentication.k8s.io"]);
    // Nothing outside the listed namespaces.
    refused.extend([
        vec!["get", "secrets", "-n", &other.name],
        vec!["get", "secrets", "-n", "default"],
        vec!["list", dp, "-n", &other.name],
        vec!["list", dp, "--all-namespaces"],
        vec!["create", "deployments.apps", "-n", &other.name],
        vec!["patch", "deployments.apps", "-n", &other.name],
        vec!["patch", "pods", "-n", &other.name],
        vec!["list", "events", "-n", &other.name],
        vec!["create", "leases.coordination.k8s.io", "-n", &a.name],
        vec!["delete", "namespaces"],
        vec!["create", "clusterroles.rbac.authorization.k8s.io"],
        vec!["create", "pods", "--subresource=exec", "-n", &a.name],
        vec!["create", "serviceaccounts", "--subresource=token", "-n", &a.name],
        vec!["patch", "nodes"],
    ]);
    check_permissions(&user, &allowed, &refused).await?;

    // The existing Secret is mounted, none is generated.
    let generated =
        Api::<Secret>::namespaced(client.clone(), &lim.name).get_opt(&format!("{fullname}-gateway-token")).await?;
    assert!(generated.is_none(), "a token Secret was generated");
    let pod_spec = deployment.spec.as_ref().and_then(|s| s.template.spec.clone()).context("pod spec")?;
    let volume = |name: &str| pod_spec.volumes.iter().flatten().find(|v| v.name == name).cloned();
    let token_volume = volume("gateway-token").and_then(|v| v.secret).and_then(|s| s.secret_name);
    assert_eq!(token_volume.as_deref(), Some("zeroflow-gateway-token-external"));

    // The extra volume and its mount, in the Deployment and in the pods it made.
    let pods = Api::<Pod>::namespaced(client.clone(), &lim.name).list(&ListParams::default().labels(&selector)).await?;
    assert_eq!(pods.items.len(), 2, "operator pods");
    for spec in std::iter::once(pod_spec.clone()).chain(pods.items.iter().filter_map(|p| p.spec.clone())) {
        let ca = spec.volumes.iter().flatten().find(|v| v.name == "store-ca").context("extra volume store-ca")?;
        assert_eq!(ca.config_map.as_ref().map(|c| c.name.as_str()), Some("store-ca"));
        let container = &spec.containers[0];
        let mount = container.volume_mounts.iter().flatten().find(|m| m.name == "store-ca").context("extra mount")?;
        assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/zeroflow/ca", Some(true)));
        let cert_dir = container.env.iter().flatten().find(|e| e.name == "SSL_CERT_DIR").and_then(|e| e.value.clone());
        assert_eq!(cert_dir.as_deref(), Some("/etc/ssl/certs:/etc/zeroflow/ca"));
        // global.imageRegistry: the image comes from the mirror.
        let image = container.image.as_deref().unwrap_or_default();
        assert!(image.starts_with("mirror.example.com:5000/mirror/zeroflow-operator@sha256:"), "{image}");
    }
    Ok(())
}
