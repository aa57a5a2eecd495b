//! The least-privilege Secrets mode (`rbac.restrictSecretAccess`), really installed: the
//! operator may `get` Secrets in the namespaces of `rbac.secretNamespaces` and nowhere else,
//! while the rest of its permissions stay cluster-wide.

use zeroflow_e2e::chart::{self, helm};
use zeroflow_e2e::client;

use crate::support::{check_permissions, dump, id, new_ns, remove_cluster_scoped};

#[tokio::test]
async fn restricted_secret_access_reaches_only_the_granting_namespaces() -> anyhow::Result<()> {
    let client = client().await?;
    let rel = new_ns(&client, "zfc-sec", true).await?;
    let (granted, other) = (new_ns(&client, "zfc-grant", false).await?, new_ns(&client, "zfc-nogrant", false).await?);
    let release = format!("zfc-{}", id(&rel));
    let chart = chart::chart().display().to_string();
    let grants = format!("rbac.secretNamespaces={{{}}}", granted.name);
    // Only RBAC is checked: the operator's pods need not start, so no --wait, no CRD (the real
    // one stays untouched) and no cluster-scoped admission policy.
    let install = helm(&[
        "install",
        &release,
        &chart,
        "-n",
        &rel.name,
        "--set",
        "rbac.restrictSecretAccess=true",
        "--set",
        &grants,
        "--set",
        "crds.install=false",
        "--set",
        "podPatchGuard.enabled=false",
    ])
    .await;
    let result = match install {
        Ok(_) => {
            let user = format!("system:serviceaccount:{}:{release}-zeroflow", rel.name);
            let dp = "datapipelines.zeroflow.dev";
            let allowed = vec![
                vec!["get", "secrets", "-n", granted.name.as_str()],
                // The rest of its permissions are still cluster-wide.
                vec!["watch", dp, "--all-namespaces"],
                vec!["create", "deployments.apps", "-n", other.name.as_str()],
            ];
            let refused = vec![
                vec!["get", "secrets", "-n", other.name.as_str()],
                vec!["get", "secrets", "-n", rel.name.as_str()],
                vec!["get", "secrets", "-n", "default"],
                vec!["get", "secrets", "-n", "kube-system"],
                vec!["get", "secrets", "--all-namespaces"],
                vec!["list", "secrets", "-n", granted.name.as_str()],
                vec!["watch", "secrets", "-n", granted.name.as_str()],
            ];
            check_permissions(&user, &allowed, &refused).await
        }
        Err(e) => Err(e),
    };
    if result.is_err() {
        eprintln!("{}", dump(&rel.name).await);
    }
    remove_cluster_scoped(&[(&release, &rel.name)], &[]).await;
    result
}
