//! The chart against the testbed's apiserver: renders applied with `--dry-run=server`, and real
//! releases (install into a restricted namespace, least-privilege RBAC checked with `kubectl auth
//! can-i`, the pod patch guard exercised with the operator's own token, upgrade, uninstall, CRD
//! adoption, a namespace-limited release with extra volumes).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::{Value, json};
use zeroflow_e2e::chart::{self, Scratch, helm, helm_run, kubectl_run, raw_documents, template, test_chart};
use zeroflow_e2e::{TestNamespace, client, eventually};

const WAIT: Duration = Duration::from_secs(120);

/// A namespace for one test, labelled as the chart tests'; `restricted` enforces the restricted
/// Pod Security Standard in it.
async fn new_ns(client: &Client, prefix: &str, restricted: bool) -> anyhow::Result<TestNamespace> {
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
fn id(ns: &TestNamespace) -> String {
    ns.name.rsplit('-').next().unwrap_or("x").to_owned()
}

/// Runs kubectl; fails with its output unless it succeeds.
async fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    kubectl_run(args).await?.success(&format!("kubectl {}", args.join(" ")))
}

/// What is in a namespace, for failure messages.
async fn dump(ns: &str) -> String {
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
async fn remove_cluster_scoped(releases: &[(&str, &str)], crds: &[&str]) {
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
async fn can(user: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["auth", "can-i", "--as", user];
    all.extend_from_slice(args);
    Ok(kubectl_run(&all).await?.stdout.trim().to_owned())
}

/// Checks `allowed` and `refused` (each the arguments of one `kubectl auth can-i`) for `user`;
/// fails listing every mismatch.
async fn check_permissions(user: &str, allowed: &[Vec<&str>], refused: &[Vec<&str>]) -> anyhow::Result<()> {
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
async fn crd_kept(client: &Client, name: &str) -> anyhow::Result<()> {
    let crd =
        Api::<CustomResourceDefinition>::all(client.clone()).get(name).await.with_context(|| format!("CRD {name}"))?;
    anyhow::ensure!(crd.metadata.deletion_timestamp.is_none(), "CRD {name} is being deleted");
    Ok(())
}

async fn printer_columns(client: &Client, crd: &str) -> anyhow::Result<Vec<String>> {
    let crd = Api::<CustomResourceDefinition>::all(client.clone()).get(crd).await?;
    Ok(crd.spec.versions[0].additional_printer_columns.iter().flatten().map(|c| c.name.clone()).collect())
}

/// The value of environment variable `name` of the first container of a Deployment.
fn env_of(deployment: &Deployment, name: &str) -> Option<String> {
    let container = &deployment.spec.as_ref()?.template.spec.as_ref()?.containers[0];
    container.env.iter().flatten().find(|e| e.name == name)?.value.clone()
}

/// Writes the text of `docs` (see [`raw_documents`]) as one YAML stream to `path`.
fn write_docs(path: &Path, docs: &[(String, Value)]) -> anyhow::Result<()> {
    let text: Vec<&str> = docs.iter().map(|(text, _)| text.as_str()).collect();
    Ok(std::fs::write(path, text.join("---\n"))?)
}

/// `kubectl apply --dry-run=server -f FILE`: the applied objects (`kind.group/name`, one per
/// line) and warnings; fails on any PodSecurity warning.
async fn dry_run(file: &Path) -> anyhow::Result<String> {
    let run = kubectl_run(&["apply", "--dry-run=server", "-f", &file.display().to_string()]).await?;
    let text = run.text();
    anyhow::ensure!(run.ok, "kubectl apply --dry-run=server:\n{text}");
    anyhow::ensure!(!text.to_lowercase().contains("violate podsecurity"), "PodSecurity warnings:\n{text}");
    Ok(text)
}

/// Applies prometheus-operator's CRDs of the objects the chart renders (ServiceMonitor,
/// PodMonitor, PrometheusRule; from `e2e/testbed build monitoring_crds`) and waits until they
/// are established; returns their names, for the caller to delete.
async fn monitoring_crds() -> anyhow::Result<Vec<String>> {
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
    assert_eq!(ports, [("gateway".into(), 8080), ("lease-api".into(), 8081), ("metrics".into(), 9090)]);
    let deployment = Api::<Deployment>::namespaced(client.clone(), &sys.name).get(&fullname).await?;
    let lease_url = format!("http://{fullname}.{}.svc:8081", sys.name);
    assert_eq!(env_of(&deployment, "ZEROFLOW_LEASE_API_URL"), Some(lease_url));
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
    for verb in ["list", "patch"] {
        allowed.push(vec![verb, "pods", "-n", ns]);
    }
    allowed.push(vec!["patch", "deployments.apps", "--subresource=scale", "-n", ns]);
    allowed.push(vec!["create", "tokenreviews.authentication.k8s.io"]);

    // Nothing the operator does not call, and nothing dangerous.
    let mut refused: Vec<Vec<&str>> = Vec::new();
    for verb in ["update", "delete"] {
        refused.push(vec![verb, "deployments.apps", "-n", ns]);
        refused.push(vec![verb, "serviceaccounts", "-n", ns]);
    }
    refused.extend([
        vec!["update", "deployments.apps", "--subresource=scale", "-n", ns],
        vec!["get", "pods", "-n", ns],
        vec!["watch", "pods", "-n", ns],
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

    // Exactly the rules the operator uses: the workload ClusterRole has 8 rules, none with '*'.
    let role = Api::<ClusterRole>::all(client.clone()).get(fullname).await?;
    let rules = role.rules.unwrap_or_default();
    assert_eq!(rules.len(), 8, "rules of the workload ClusterRole: {rules:?}");
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
            vec!["get", "secrets", "-n", n],
            vec!["create", "events.events.k8s.io", "-n", n],
            vec!["patch", "pods", "-n", n],
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

/// The DESIGN's install path: `kubectl apply -f crds/`, then `helm install`. With crds.install
/// (the default) helm refuses to take over a CRD it did not create, with a message saying how;
/// crds.install=false installs next to it; and the CRD can be adopted, after which helm
/// upgrades it.
#[tokio::test]
async fn kubectl_applied_crd_is_refused_by_default_and_can_be_adopted() -> anyhow::Result<()> {
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
    let out = helm_run(&["install", release, &chart, "-n", &ns.name])
        .await?
        .failure("helm taking over a CRD it does not own")?;
    anyhow::ensure!(out.contains("invalid ownership metadata"), "{out}");
    helm(&["install", release, &chart, "-n", &ns.name, "--set", "crds.install=false", "--wait", "--timeout", "2m"])
        .await?;
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
