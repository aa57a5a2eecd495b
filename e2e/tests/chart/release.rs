//! The operator's release in a restricted namespace, from install to uninstall: restricted Pod
//! Security, least-privilege RBAC checked with `kubectl auth can-i`, the pod patch guard
//! exercised with the operator's own token, upgrade and uninstall.

use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use zeroflow_e2e::chart::{self, Scratch, helm, helm_run, kubectl_run, test_chart};
use zeroflow_e2e::{TestNamespace, client, eventually};

use crate::support::{
    WAIT, check_permissions, crd_kept, dump, env_of, id, kubectl, new_ns, printer_columns, remove_cluster_scoped,
};

/// The operator's release in a restricted namespace, from install to uninstall: every step needs
/// the previous one's release, so they run in order in one test.
#[tokio::test]
async fn release_installs_restricted_is_least_privilege_upgrades_and_uninstalls() -> anyhow::Result<()> {
    let client = client().await?;
    let sys = new_ns(&client, "zfc-sys", true).await?;
    let release = format!("zfc-{}", id(&sys));
    let crd = format!("datapipelines.t{}.chart-test.zeroflow.dev", id(&sys));
    let result = release_lifecycle(&client, &sys, &release, &crd).await;
    if result.is_err() {
        eprintln!("{}", dump(&sys.name).await);
    }
    remove_cluster_scoped(&[(&release, &sys.name)], &[&crd]).await;
    result
}

async fn release_lifecycle(client: &Client, sys: &TestNamespace, release: &str, crd: &str) -> anyhow::Result<()> {
    let group = crd.strip_prefix("datapipelines.").context("CRD name")?;
    let scratch = Scratch::new("chart-release")?;
    let fullname = format!("{release}-zeroflow");
    let token = install_restricted(client, sys, release, &scratch, group).await.context("install")?;
    let workers = new_ns(client, "zfc-workers", true).await?;
    worker_pod_is_admitted_restricted(client, &workers, &scratch).await.context("worker pod")?;
    let a = new_ns(client, "zfc-team-a", false).await?;
    let operator = format!("system:serviceaccount:{}:{fullname}", sys.name);
    rbac_cluster_wide(client, &operator, &a.name, &sys.name, &fullname).await.context("RBAC cluster-wide")?;
    pod_patch_guard(client, sys, &workers, &fullname, &scratch).await.context("pod patch guard")?;
    upgrade(client, sys, release, crd, &token, &scratch, group).await.context("upgrade")?;
    uninstall(client, sys, release, crd).await.context("uninstall")
}

/// helm install into a restricted namespace; the pods run with the restricted settings.
/// Returns the generated gateway token.
async fn install_restricted(
    client: &Client,
    sys: &TestNamespace,
    release: &str,
    scratch: &Scratch,
    group: &str,
) -> anyhow::Result<String> {
    let chart = test_chart(&scratch.path("v1"), group, false)?.display().to_string();
    let run = helm_run(&["install", release, &chart, "-n", &sys.name, "--wait", "--timeout", "3m"]).await?;
    let text = run.text();
    anyhow::ensure!(run.ok, "helm install:\n{text}");
    anyhow::ensure!(!text.to_lowercase().contains("violate podsecurity"), "PodSecurity warnings at install:\n{text}");
    anyhow::ensure!(text.contains("Send storage events to the gateway"), "no NOTES:\n{text}");
    let fullname = format!("{release}-zeroflow");
    kubectl(&["-n", &sys.name, "rollout", "status", &format!("deploy/{fullname}"), "--timeout=2m"]).await?;
    let selector = format!("app.kubernetes.io/instance={release}");
    kubectl(&["-n", &sys.name, "wait", "pod", "-l", &selector, "--for=condition=Ready", "--timeout=2m"]).await?;

    let pods = Api::<Pod>::namespaced(client.clone(), &sys.name).list(&ListParams::default().labels(&selector)).await?;
    let phases: Vec<_> = pods.items.iter().map(|p| p.status.as_ref().and_then(|s| s.phase.clone())).collect();
    assert_eq!(phases, [Some("Running".to_owned())], "pod phases");
    // The pods really run with the restricted settings.
    let sc = pods.items[0]
        .spec
        .as_ref()
        .and_then(|s| s.containers[0].security_context.clone())
        .context("securityContext")?;
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_owned()]));
    assert_eq!(sc.seccomp_profile.map(|p| p.type_), Some("RuntimeDefault".to_owned()));

    let service = Api::<Service>::namespaced(client.clone(), &sys.name).get(&fullname).await?;
    let ports: Vec<_> = service
        .spec
        .and_then(|s| s.ports)
        .unwrap_or_default()
        .iter()
        .map(|p| (p.name.clone().unwrap_or_default(), p.port))
        .collect();
    assert_eq!(ports, [("gateway".into(), 8080), ("work-api".into(), 8081), ("metrics".into(), 9090)]);
    let deployment = Api::<Deployment>::namespaced(client.clone(), &sys.name).get(&fullname).await?;
    let work_api_url = format!("http://{fullname}.{}.svc:8081", sys.name);
    assert_eq!(env_of(&deployment, "ZEROFLOW_WORK_API_URL"), Some(work_api_url));
    let secret = Api::<Secret>::namespaced(client.clone(), &sys.name).get(&format!("{fullname}-gateway-token")).await?;
    let token = secret.data.and_then(|d| d.get("token").cloned()).context("token key")?;
    let token = String::from_utf8(token.0)?;
    assert_eq!(token.len(), 48, "generated gateway token length");
    let crd = Api::<CustomResourceDefinition>::all(client.clone()).get(&format!("datapipelines.{group}")).await?;
    assert_eq!(crd.annotations().get("helm.sh/resource-policy").map(String::as_str), Some("keep"));
    Ok(token)
}

/// A pod shaped like the operator's worker pods is admitted in a restricted namespace, and the
/// check bites: the same pod with privilege escalation allowed is refused.
async fn worker_pod_is_admitted_restricted(
    client: &Client,
    workers: &TestNamespace,
    scratch: &Scratch,
) -> anyhow::Result<()> {
    let account: ServiceAccount = serde_json::from_value(
        json!({"metadata": {"name": "invoices-worker"}, "automountServiceAccountToken": false}),
    )?;
    Api::<ServiceAccount>::namespaced(client.clone(), &workers.name).create(&PostParams::default(), &account).await?;
    let pod_file = chart::root().join("e2e/chart/worker-pod.yaml");
    let run = kubectl_run(&["-n", &workers.name, "create", "-f", &pod_file.display().to_string()]).await?;
    let text = run.text();
    anyhow::ensure!(run.ok, "worker pod refused:\n{text}");
    anyhow::ensure!(!text.to_lowercase().contains("violate podsecurity"), "PodSecurity warnings:\n{text}");
    kubectl(&["-n", &workers.name, "wait", "pod/invoices-worker-test", "--for=condition=Ready", "--timeout=2m"])
        .await?;

    let bad = std::fs::read_to_string(&pod_file)?
        .replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")
        .replace("name: invoices-worker-test", "name: invoices-worker-bad");
    std::fs::write(scratch.path("bad-pod.yaml"), bad)?;
    let out = kubectl_run(&["-n", &workers.name, "create", "-f", &scratch.path("bad-pod.yaml").display().to_string()])
        .await?
        .failure("creating an escalating pod")?;
    anyhow::ensure!(out.contains(r#"violates PodSecurity "restricted:latest""#), "{out}");
    Ok(())
}

/// The cluster-wide release's ServiceAccount may do exactly what the operator calls.
async fn rbac_cluster_wide(client: &Client, user: &str, ns: &str, sys: &str, fullname: &str) -> anyhow::Result<()> {
    let dp = "datapipelines.zeroflow.dev";
    let mut allowed: Vec<Vec<&str>> = Vec::new();
    for verb in ["get", "list", "watch"] {
        allowed.push(vec![verb, dp, "-n", ns]);
    }
    allowed.push(vec!["list", dp, "--all-namespaces"]);
    allowed.push(vec!["patch", dp, "--subresource=status", "-n", ns]);
    for verb in ["get", "list", "watch", "create", "patch"] {
        allowed.push(vec![verb, "deployments.apps", "-n", ns]);
        allowed.push(vec![verb, "serviceaccounts", "-n", ns]);
    }
    allowed.push(vec!["get", "secrets", "-n", ns]);
    for verb in ["create", "patch"] {
        allowed.push(vec![verb, "events.events.k8s.io", "-n", ns]);
    }
    for verb in ["get", "create", "patch"] {
        allowed.push(vec![verb, "leases.coordination.k8s.io", "-n", sys]);
    }
    for verb in ["list", "watch", "patch"] {
        allowed.push(vec![verb, "pods", "-n", ns]);
    }
    for verb in ["get", "patch"] {
        allowed.push(vec![verb, "deployments.apps", "--subresource=scale", "-n", ns]);
    }
    allowed.push(vec!["create", "tokenreviews.authentication.k8s.io"]);
    // Core Events are only listed: a worker pod stuck on its image volume says why only there.
    allowed.push(vec!["list", "events", "-n", ns]);

    // Nothing the operator does not call, and nothing dangerous.
    let mut refused: Vec<Vec<&str>> = Vec::new();
    for verb in ["update", "delete"] {
        refused.push(vec![verb, "deployments.apps", "-n", ns]);
        refused.push(vec![verb, "serviceaccounts", "-n", ns]);
    }
    refused.extend([
        vec!["update", "deployments.apps", "--subresource=scale", "-n", ns],
        vec!["get", "pods", "-n", ns],
        vec!["update", dp, "--subresource=status", "-n", ns],
        vec!["update", "leases.coordination.k8s.io", "-n", sys],
        vec!["list", "secrets", "-n", ns],
        vec!["watch", "secrets", "-n", ns],
        vec!["list", "secrets", "--all-namespaces"],
        vec!["create", "secrets", "-n", ns],
        vec!["delete", "namespaces"],
        vec!["create", "clusterroles.rbac.authorization.k8s.io"],
        vec!["create", "rolebindings.rbac.authorization.k8s.io", "-n", ns],
        vec!["create", "pods", "-n", ns],
        vec!["create", "pods", "--subresource=exec", "-n", ns],
        vec!["delete", "pods", "-n", ns],
        vec!["create", "serviceaccounts", "--subresource=token", "-n", ns],
        vec!["patch", "nodes"],
        vec!["create", dp, "-n", ns],
        vec!["delete", dp, "-n", ns],
        vec!["patch", dp, "-n", ns],
        vec!["update", "customresourcedefinitions.apiextensions.k8s.io"],
        vec!["create", "leases.coordination.k8s.io", "-n", ns],
        vec!["delete", "leases.coordination.k8s.io", "-n", sys],
        vec!["create", "subjectaccessreviews.authorization.k8s.io"],
        vec!["get", "configmaps", "-n", ns],
        vec!["create", "events", "-n", ns],
        vec!["impersonate", "serviceaccounts", "-n", ns],
    ]);
    check_permissions(user, &allowed, &refused).await?;

    // Exactly the rules the operator uses: the workload ClusterRole has 9 rules, none with '*'.
    let role = Api::<ClusterRole>::all(client.clone()).get(fullname).await?;
    let rules = role.rules.unwrap_or_default();
    assert_eq!(rules.len(), 9, "rules of the workload ClusterRole: {rules:?}");
    let words = rules
        .iter()
        .flat_map(|r| r.api_groups.iter().flatten().chain(r.resources.iter().flatten()).chain(r.verbs.iter()));
    assert!(!words.into_iter().any(|w| w.contains('*')), "wildcard in the ClusterRole: {rules:?}");
    Ok(())
}

/// A client that authenticates with a bearer token only (the testbed's kubeconfig, its client
/// certificate replaced), as a pod using its ServiceAccount token would.
async fn client_with_token(token: &str) -> anyhow::Result<Client> {
    let mut kubeconfig = kube::config::Kubeconfig::read()?;
    let auth: kube::config::AuthInfo = serde_json::from_value(json!({ "token": token }))?;
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(auth.clone());
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

/// The answer to one PATCH of a pod: HTTP status and the Status message (empty on success).
async fn patch_pod(
    client: &Client,
    ns: &str,
    pod: &str,
    kind: &str,
    body: &str,
    dry_run: bool,
) -> anyhow::Result<(u16, String)> {
    let query = if dry_run { "?dryRun=All" } else { "" };
    let request = http::Request::patch(format!("/api/v1/namespaces/{ns}/pods/{pod}{query}"))
        .header("Content-Type", format!("application/{kind}-patch+json"))
        .body(body.as_bytes().to_vec())?;
    match client.request_text(request).await {
        Ok(_) => Ok((200, String::new())),
        Err(kube::Error::Api(status)) => Ok((status.code, status.message)),
        Err(e) => Err(e.into()),
    }
}

/// What a patch may not change, to compare before and after refused patches.
async fn pod_shape(pods: &Api<Pod>, name: &str) -> anyhow::Result<Value> {
    let pod = pods.get(name).await?;
    Ok(json!([pod.metadata.labels, pod.metadata.annotations, pod.metadata.finalizers, pod.spec]))
}

/// The ValidatingAdmissionPolicy lets the operator's ServiceAccount set only worker pods'
/// deletion cost, and leaves other users alone. Patches are sent as the scaler sends them, with
/// the ServiceAccount's own token (`kubectl patch --as` would GET the pod first, which it may not).
async fn pod_patch_guard(
    client: &Client,
    sys: &TestNamespace,
    workers: &TestNamespace,
    fullname: &str,
    scratch: &Scratch,
) -> anyhow::Result<()> {
    let (worker, plain) = ("invoices-worker-test", "plain-pod-test");
    let policy = format!("{fullname}-pod-patch-guard");
    let binding =
        kubectl(&["get", "validatingadmissionpolicybinding", &policy, "-o", "jsonpath={.spec.policyName}"]).await?;
    assert_eq!(binding, policy, "binding's policy");
    // The apiserver type-checks every expression against the Pod schema and reports any
    // warning in the policy's status.
    eventually("the policy's status", Duration::from_secs(30), || async {
        let observed =
            kubectl(&["get", "validatingadmissionpolicy", &policy, "-o", "jsonpath={.status.observedGeneration}"])
                .await?;
        let generation =
            kubectl(&["get", "validatingadmissionpolicy", &policy, "-o", "jsonpath={.metadata.generation}"]).await?;
        Ok((observed == generation).then_some(()))
    })
    .await?;
    let warnings = kubectl(&[
        "get",
        "validatingadmissionpolicy",
        &policy,
        "-o",
        "jsonpath={.status.typeChecking.expressionWarnings}",
    ])
    .await?;
    assert_eq!(warnings, "", "type-checking warnings");

    let account: Api<ServiceAccount> = Api::namespaced(client.clone(), &sys.name);
    let request = k8s_openapi::api::authentication::v1::TokenRequest {
        spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = account.create_token_request(fullname, &PostParams::default(), &request).await?;
    let operator = client_with_token(&token.status.context("TokenRequest status")?.token).await?;
    let patch = |pod: &'static str, kind: &'static str, body: String| {
        let (operator, ns) = (operator.clone(), workers.name.clone());
        async move { patch_pod(&operator, &ns, pod, kind, &body, false).await }
    };

    // The policy applies once the apiserver has loaded it: wait until a dry-run label change by
    // the operator is refused.
    let refusal = "the zeroflow operator may only change the controller.kubernetes.io/pod-deletion-cost annotation of zeroflow worker pods";
    let probe = r#"{"metadata":{"labels":{"zfc-probe":"x"}}}"#;
    eventually("the policy applies", Duration::from_secs(30), || async {
        let (code, message) = patch_pod(&operator, &workers.name, worker, "merge", probe, true).await?;
        Ok((code == 403 && message.contains(refusal)).then_some(()))
    })
    .await?;

    // What the scaler sends is allowed (set, changed).
    let cost = |value: u32| {
        format!(r#"{{"metadata":{{"annotations":{{"controller.kubernetes.io/pod-deletion-cost":"{value}"}}}}}}"#)
    };
    assert_eq!(patch(worker, "merge", cost(2000)).await?.0, 200);
    assert_eq!(patch(worker, "merge", cost(0)).await?.0, 200);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &workers.name);
    let annotations = pods.get(worker).await?.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get("controller.kubernetes.io/pod-deletion-cost").map(String::as_str), Some("0"));
    let before = pod_shape(&pods, worker).await?;

    // Anything else the ServiceAccount could do with `pods: patch` is refused.
    let refused = [
        ("merge", r#"{"metadata":{"labels":{"team":"evil"}}}"#, "labels changed"),
        ("merge", r#"{"metadata":{"labels":{"zeroflow.dev/pipeline":null}}}"#, "labels changed"),
        ("merge", r#"{"metadata":{"annotations":{"team":"evil"}}}"#, "another annotation changed"),
        (
            "merge",
            r#"{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"1000","team":"evil"}}}"#,
            "another annotation changed",
        ),
        (
            "json",
            r#"[{"op":"replace","path":"/spec/containers/0/image","value":"ghcr.io/evil/miner:1"}]"#,
            "the spec changed",
        ),
        ("merge", r#"{"metadata":{"finalizers":["evil.example/hold"]}}"#, "finalizers or ownerReferences changed"),
    ];
    for (kind, body, why) in refused {
        let (code, message) = patch(worker, kind, body.to_owned()).await?;
        assert_eq!(code, 403, "{body}: {message}");
        assert!(message.contains(&format!("{refusal}: {why}")), "{body}: {message}");
    }
    assert_eq!(pod_shape(&pods, worker).await?, before, "worker pod after the refusals");

    // A pod without the zeroflow.dev/pipeline label (else worker-shaped) is not the operator's.
    let pod_file = chart::root().join("e2e/chart/worker-pod.yaml");
    let plain_yaml: String = std::fs::read_to_string(&pod_file)?
        .lines()
        .filter(|l| !l.contains("zeroflow.dev/pipeline:"))
        .map(|l| l.replace(&format!("name: {worker}"), &format!("name: {plain}")) + "\n")
        .collect();
    anyhow::ensure!(!plain_yaml.contains("zeroflow.dev/pipeline"), "the label is still in the plain pod");
    std::fs::write(scratch.path("plain-pod.yaml"), plain_yaml)?;
    kubectl(&["-n", &workers.name, "create", "-f", &scratch.path("plain-pod.yaml").display().to_string()]).await?;
    let (code, message) = patch(plain, "merge", cost(1000)).await?;
    assert_eq!(code, 403, "{message}");
    assert!(message.contains(&format!("{refusal}: this pod has no zeroflow.dev/pipeline label")), "{message}");
    assert_eq!(
        pods.get(plain).await?.metadata.annotations.unwrap_or_default().len(),
        0,
        "non-worker pod's annotations"
    );

    // Other users are not matched: an admin still patches a worker pod's labels, after which
    // the operator still sets the cost.
    kubectl(&[
        "-n",
        &workers.name,
        "patch",
        "pod",
        worker,
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"team":"finance"}}}"#,
    ])
    .await?;
    assert_eq!(pods.get(worker).await?.labels().get("team").map(String::as_str), Some("finance"));
    assert_eq!(patch(worker, "merge", cost(3000)).await?.0, 200);
    kubectl(&["-n", &workers.name, "delete", "pod", plain, "--wait=false"]).await?;
    Ok(())
}

/// helm upgrade changes values, upgrades the CRD and keeps the generated token; turning
/// crds.install off keeps the CRD (without the keep policy helm would delete it, and every
/// DataPipeline with it).
async fn upgrade(
    client: &Client,
    sys: &TestNamespace,
    release: &str,
    crd: &str,
    token: &str,
    scratch: &Scratch,
    group: &str,
) -> anyhow::Result<()> {
    let v2 = test_chart(&scratch.path("v2"), group, true)?.display().to_string();
    anyhow::ensure!(
        !printer_columns(client, crd).await?.contains(&"InFlight".to_owned()),
        "the column is there before the upgrade"
    );
    let fullname = format!("{release}-zeroflow");
    helm(&[
        "upgrade",
        release,
        &v2,
        "-n",
        &sys.name,
        "--reuse-values",
        "--set",
        "logFormat=json",
        "--wait",
        "--timeout",
        "3m",
    ])
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &sys.name);
    assert_eq!(env_of(&deployments.get(&fullname).await?, "ZEROFLOW_LOG_FORMAT").as_deref(), Some("json"));
    kubectl(&["-n", &sys.name, "rollout", "status", &format!("deploy/{fullname}"), "--timeout=2m"]).await?;
    let columns = printer_columns(client, crd).await?;
    assert!(columns.contains(&"InFlight".to_owned()), "helm upgrade did not upgrade the CRD (columns: {columns:?})");
    // The generated gateway token survives upgrades (lookup).
    let secret = Api::<Secret>::namespaced(client.clone(), &sys.name).get(&format!("{fullname}-gateway-token")).await?;
    let after = secret.data.and_then(|d| d.get("token").cloned()).context("token key")?;
    assert_eq!(String::from_utf8(after.0)?, token, "gateway token after upgrade");
    helm(&[
        "upgrade",
        release,
        &v2,
        "-n",
        &sys.name,
        "--reuse-values",
        "--set",
        "crds.install=false",
        "--wait",
        "--timeout",
        "3m",
    ])
    .await?;
    crd_kept(client, crd).await
}

/// helm uninstall removes everything of the release but the CRD.
async fn uninstall(client: &Client, sys: &TestNamespace, release: &str, crd: &str) -> anyhow::Result<()> {
    helm(&["uninstall", release, "-n", &sys.name, "--wait", "--timeout", "2m"]).await?;
    let selector = format!("app.kubernetes.io/instance={release}");
    // Pods of a deleted Deployment go away through the garbage collector; wait for them.
    let kinds = "deploy,rs,pods,svc,secrets,serviceaccounts,roles,rolebindings";
    let left = eventually("the release's namespaced objects are gone", WAIT, || async {
        let left = kubectl(&["-n", &sys.name, "get", kinds, "-l", &selector, "-o", "name"]).await?;
        Ok(left.trim().is_empty().then_some(()))
    })
    .await;
    if left.is_err() {
        bail!("left behind: {}", kubectl(&["-n", &sys.name, "get", kinds, "-l", &selector, "-o", "name"]).await?);
    }
    let cluster_kinds =
        "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings";
    let left = kubectl(&["get", cluster_kinds, "-l", &selector, "-o", "name"]).await?;
    assert_eq!(left.trim(), "", "left behind");
    crd_kept(client, crd).await
}
