//! What `helm lint` and `helm template` make of the chart: no cluster needed, only helm (and Go
//! for the Argo CD health check).

use std::collections::BTreeSet;

use anyhow::Context as _;
use serde_json::{Value, json};
use zeroflow_e2e::chart::{self, Scratch, documents, find, helm, helm_run, run_in, template};

/// The chart directory as helm takes it.
fn chart_arg() -> String {
    chart::chart().display().to_string()
}

/// `helm template` of the chart as release `zf` in `zeroflow-system` with `args`, parsed.
async fn render(args: &[&str]) -> anyhow::Result<Vec<Value>> {
    documents(&template("zf", &chart::chart(), "zeroflow-system", args).await?)
}

/// `helm template zf` with `args` that must fail; returns what helm printed.
async fn render_fails(args: &[&str]) -> anyhow::Result<String> {
    let chart = chart_arg();
    let mut all = vec!["template", "zf", chart.as_str()];
    all.extend_from_slice(args);
    helm_run(&all).await?.failure(&format!("helm template {}", args.join(" ")))
}

/// `helm template zf --show-only TEMPLATE` with `args`: empty when the template renders nothing.
async fn show_only(template_file: &str, args: &[&str]) -> anyhow::Result<String> {
    let chart = chart_arg();
    let mut all = vec!["template", "zf", chart.as_str(), "-n", "zeroflow-system", "--show-only", template_file];
    all.extend_from_slice(args);
    let run = helm_run(&all).await?;
    // helm fails with "could not find template" when the template renders nothing.
    if !run.ok && run.stderr.contains("could not find template") {
        return Ok(String::new());
    }
    run.success(&format!("helm template --show-only {template_file}"))
}

fn ensure_contains(what: &str, text: &str, needle: &str) -> anyhow::Result<()> {
    anyhow::ensure!(text.contains(needle), "{what}: no {needle:?} in:\n{text}");
    Ok(())
}

/// `helm lint --strict` with `args` is clean: no chart failed, no warning, no error.
async fn lint_clean(args: &[&str]) -> anyhow::Result<()> {
    let chart = chart_arg();
    let mut all = vec!["lint", "--strict", chart.as_str()];
    all.extend_from_slice(args);
    let text = helm_run(&all).await?.text();
    ensure_contains("lint", &text, "1 chart(s) linted, 0 chart(s) failed")?;
    anyhow::ensure!(!text.contains("[WARNING]") && !text.contains("[ERROR]"), "lint {args:?} is not clean:\n{text}");
    Ok(())
}

/// The `e2e/chart/values-*.yaml` files.
pub fn values_files() -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = std::fs::read_dir(chart::root().join("e2e/chart"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with("values-") && name.ends_with(".yaml")
        })
        .collect();
    files.sort();
    Ok(files)
}

#[tokio::test]
async fn lint_is_clean_with_default_values() -> anyhow::Result<()> {
    lint_clean(&[]).await
}

#[tokio::test]
async fn lint_is_clean_with_each_values_file() -> anyhow::Result<()> {
    let files = values_files()?;
    anyhow::ensure!(!files.is_empty(), "no e2e/chart/values-*.yaml");
    for file in files {
        let path = file.display().to_string();
        lint_clean(&["-f", &path]).await.with_context(|| path.clone())?;
    }
    Ok(())
}

#[tokio::test]
async fn chart_crd_is_the_generated_file() -> anyhow::Result<()> {
    // The chart's CRD is a symlink to the generated file, so it cannot drift; helm follows it
    // when rendering and packaging.
    let link = chart::chart().join("files/datapipelines.zeroflow.dev.yaml");
    let generated = chart::root().join("crds/datapipelines.zeroflow.dev.yaml");
    anyhow::ensure!(std::fs::symlink_metadata(&link)?.file_type().is_symlink(), "{} is not a symlink", link.display());
    assert_eq!(std::fs::canonicalize(&link)?, std::fs::canonicalize(&generated)?, "symlink target");

    let scratch = Scratch::new("chart-pkg")?;
    let dir = scratch.0.display().to_string();
    helm(&["package", &chart_arg(), "-d", &dir]).await?;
    let tgz = scratch.path("zeroflow-0.1.0.tgz");
    let tar = std::path::Path::new("tar");
    let file = "zeroflow/files/datapipelines.zeroflow.dev.yaml";
    run_in(None, tar, &["-xzf", &tgz.display().to_string(), "-C", &dir, file], &[]).await?.success("tar")?;
    assert_eq!(
        std::fs::read(scratch.path(file))?,
        std::fs::read(&generated)?,
        "the packaged chart's CRD differs from crds/"
    );

    // The rendered CRD is the file plus the keep policy and labels, nothing else.
    let rendered = show_only("templates/crds.yaml", &["--kube-version", &chart::kube_version()]).await?;
    let rendered = documents(&rendered)?;
    let file = documents(&std::fs::read_to_string(&generated)?)?;
    let (rendered, file) = (&rendered[0], &file[0]);
    for field in ["apiVersion", "kind", "spec"] {
        assert_eq!(rendered[field], file[field], "rendered CRD's {field} differs from crds/");
    }
    assert_eq!(rendered["metadata"]["name"], file["metadata"]["name"]);
    let metadata_keys: BTreeSet<_> = rendered["metadata"].as_object().context("metadata")?.keys().cloned().collect();
    assert_eq!(metadata_keys, BTreeSet::from(["annotations".into(), "labels".into(), "name".into()]));
    assert_eq!(rendered["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    assert_eq!(show_only("templates/crds.yaml", &["--set", "crds.install=false"]).await?, "", "crds.install=false");

    // Extra annotations (Argo CD's Delete=false) are added, and cannot remove the keep policy.
    let extra =
        r#"crds.annotations={"argocd.argoproj.io/sync-options":"Delete=false","helm.sh/resource-policy":"delete"}"#;
    let out = show_only("templates/crds.yaml", &["--set-json", extra]).await?;
    ensure_contains("extra CRD annotation", &out, "argocd.argoproj.io/sync-options: Delete=false")?;
    ensure_contains("keep policy wins", &out, "helm.sh/resource-policy: keep")?;
    anyhow::ensure!(!out.contains("resource-policy: delete"), "{out}");
    Ok(())
}

#[tokio::test]
async fn render_is_deterministic_with_an_existing_token_secret() -> anyhow::Result<()> {
    // Argo CD renders the chart on every refresh with no cluster access: with an existing token
    // Secret, two renders must be identical, or the Application would never be in sync.
    let limited = chart::root().join("e2e/chart/values-limited.yaml").display().to_string();
    for args in [vec!["-f", limited.as_str()], vec!["--set", "gatewayToken.existingSecret=mine"]] {
        let a = template("zeroflow", &chart::chart(), "zeroflow-system", &args).await?;
        let b = template("zeroflow", &chart::chart(), "zeroflow-system", &args).await?;
        assert!(a == b, "two renders with {args:?} differ");
    }
    // Without it only the generated token differs (what docs/argocd.md warns about).
    let a = template("zeroflow", &chart::chart(), "zeroflow-system", &[]).await?;
    let b = template("zeroflow", &chart::chart(), "zeroflow-system", &[]).await?;
    assert_eq!(a.lines().count(), b.lines().count());
    let differ: Vec<_> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).collect();
    assert_eq!(differ.len(), 1, "lines that differ between two default renders: {differ:?}");
    assert!(differ[0].0.trim_start().starts_with("token:"), "only the token differs: {differ:?}");
    Ok(())
}

#[tokio::test]
async fn schema_refuses_bad_values_with_a_readable_message() -> anyhow::Result<()> {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--set", "replicaCount=-1"],
            &["values don't meet the specifications of the schema", "at '/replicaCount': minimum: got -1, want 0"],
        ),
        (&["--set", "logFormat=xml"], &["at '/logFormat': value must be one of 'plain', 'json'"]),
        (&["--set", "replicaCont=2"], &["additional properties 'replicaCont' not allowed"]),
        (
            &["--set", "replicaCount=2", "--set", "leaderElection.enabled=false"],
            &["replicaCount > 1 needs leaderElection.enabled=true"],
        ),
        (
            &["--set", "podIdentity.aws.irsa.enabled=true"],
            &["at '/podIdentity/aws/irsa/roleArn': minLength: got 0, want 1"],
        ),
        (&["--set", "podIdentity.aws.irsa.roleArn=zeroflow"], &["at '/podIdentity/aws/irsa/roleArn'"]),
        (
            &["--set", "podIdentity.azureWorkload.enabled=true"],
            &["at '/podIdentity/azureWorkload/clientId': minLength: got 0, want 1"],
        ),
        (&["--set", "ingress.enabled=true"], &["at '/ingress/hosts': minItems: got 0, want 1"]),
        (&["--set", "global.imageRegistry=https://mirror.example.com"], &["at '/global/imageRegistry'"]),
        (&["--set-json", r#"extraVolumeMounts=[{"name":"ca"}]"#], &["missing property 'mountPath'"]),
        (&["--set", "prometheusRule.alerts.noLeader.for=2 minutes"], &["at '/prometheusRule/alerts/noLeader/for'"]),
        (&["--set", "prometheusRule.selector=job=zeroflow"], &["at '/prometheusRule/selector'"]),
        (&["--set", "prometheusRule.alerts.slowColdStarts.quantile=2"], &["maximum: got 2, want 1"]),
        (
            &["--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true"],
            &["enable serviceMonitor or podMonitor, not both"],
        ),
    ];
    for (args, messages) in cases {
        let out = render_fails(args).await?;
        for message in *messages {
            ensure_contains(&format!("{args:?}"), &out, message)?;
        }
    }
    let out =
        render(&["--set", "defaultStore.endpoint=http://minio:9000", "--set", "defaultStore.credentialsSecret=s3"])
            .await?;
    let deployment = find(&out, "Deployment", "zf-zeroflow")?.to_string();
    ensure_contains("default store env", &deployment, "ZEROFLOW_DEFAULT_STORE_SECRET_ACCESS_KEY")?;

    // Without credentialsSecret the default store uses the operator's identity: no key env.
    let out = render(&["--set", "defaultStore.endpoint=https://s3.eu-west-1.amazonaws.com"]).await?;
    let deployment = find(&out, "Deployment", "zf-zeroflow")?.to_string();
    ensure_contains("default store env", &deployment, "ZEROFLOW_DEFAULT_STORE_ENDPOINT")?;
    anyhow::ensure!(!deployment.contains("ZEROFLOW_DEFAULT_STORE_ACCESS_KEY_ID"), "{deployment}");

    // podIdentity annotates the ServiceAccount as each cloud's webhook expects, beside the
    // user's own annotations, and labels the pod for Azure's webhook.
    let out = render(&[
        "--set",
        "podIdentity.aws.irsa.enabled=true",
        "--set",
        "podIdentity.aws.irsa.roleArn=arn:aws:iam::123456789012:role/zeroflow",
        "--set",
        "podIdentity.azureWorkload.enabled=true",
        "--set",
        "podIdentity.azureWorkload.clientId=00000000-0000-0000-0000-000000000001",
        "--set",
        "podIdentity.gcp.enabled=true",
        "--set",
        "podIdentity.gcp.gcpIAMServiceAccount=zeroflow@project.iam.gserviceaccount.com",
        "--set",
        "serviceAccount.annotations.team=data",
    ])
    .await?;
    let account = find(&out, "ServiceAccount", "zf-zeroflow")?;
    let annotations = &account["metadata"]["annotations"];
    for (key, value) in [
        ("eks.amazonaws.com/role-arn", "arn:aws:iam::123456789012:role/zeroflow"),
        ("azure.workload.identity/client-id", "00000000-0000-0000-0000-000000000001"),
        ("iam.gke.io/gcp-service-account", "zeroflow@project.iam.gserviceaccount.com"),
        ("team", "data"),
    ] {
        anyhow::ensure!(annotations[key].as_str() == Some(value), "{key}: {annotations}");
    }
    let deployment = find(&out, "Deployment", "zf-zeroflow")?;
    let label = &deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"];
    anyhow::ensure!(label.as_str() == Some("true"), "{deployment}");
    Ok(())
}

#[tokio::test]
async fn dashboard_is_valid_charts_every_metric_and_ships_as_configmap() -> anyhow::Result<()> {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(chart::chart().join("dashboards/zeroflow.json"))?)?;
    let panels = dashboard["panels"].as_array().context("panels")?;
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let metrics = [
        "zeroflow_reconciles_total",
        "zeroflow_reconcile_errors_total",
        "zeroflow_reconcile_duration_seconds",
        "zeroflow_leader",
        "zeroflow_events_received_total",
        "zeroflow_backlog_pending",
        "zeroflow_inflight",
        "zeroflow_replicas",
        "zeroflow_cold_start_seconds",
        "zeroflow_event_to_scale_seconds",
        "zeroflow_workapi_completions_total",
        "zeroflow_processing_duration_seconds",
        "zeroflow_replica_seconds_total",
        "zeroflow_cpu_core_seconds_total",
        "zeroflow_resync_discovered_total",
        "zeroflow_resync_duration_seconds",
    ];
    let missing: Vec<_> = metrics.iter().filter(|m| !exprs.contains(*m)).collect();
    assert!(missing.is_empty(), "the dashboard does not chart {missing:?}");
    let ids: Vec<_> = panels.iter().map(|p| p["id"].as_i64()).collect();
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "duplicate panel ids");

    let out = show_only("templates/dashboard.yaml", &["--set", "dashboard.enabled=true"]).await?;
    ensure_contains("dashboard ConfigMap label", &out, r#"grafana_dashboard: "1""#)?;
    ensure_contains("dashboard ConfigMap content", &out, r#""uid": "zeroflow-overview""#)?;
    assert_eq!(show_only("templates/dashboard.yaml", &[]).await?, "", "dashboard on by default");
    Ok(())
}

#[tokio::test]
async fn pod_patch_guard_is_rendered_by_default_off_by_value_and_schema_checked() -> anyhow::Result<()> {
    let kube_version = chart::kube_version();
    let out = show_only("templates/podpatchguard.yaml", &["--kube-version", &kube_version]).await?;
    for want in [
        "kind: ValidatingAdmissionPolicy",
        "name: zf-zeroflow-pod-patch-guard",
        "kind: ValidatingAdmissionPolicyBinding",
        "validationActions: [Deny]",
        "request.userInfo.username == 'system:serviceaccount:zeroflow-system:zf-zeroflow'",
    ] {
        ensure_contains("pod patch guard", &out, want)?;
    }
    // The ServiceAccount's name follows serviceAccount.name, its namespace the release's.
    let chart = chart_arg();
    let args = ["template", "zf", chart.as_str(), "-n", "ops", "--set", "serviceAccount.create=false"];
    let mut args = args.to_vec();
    args.extend(["--set", "serviceAccount.name=mine", "--show-only", "templates/podpatchguard.yaml"]);
    let out = helm(&args).await?;
    ensure_contains("named ServiceAccount", &out, "request.userInfo.username == 'system:serviceaccount:ops:mine'")?;
    assert_eq!(show_only("templates/podpatchguard.yaml", &["--set", "podPatchGuard.enabled=false"]).await?, "");
    let out = render_fails(&["--set", "podPatchGuard.enabled=yes"]).await?;
    ensure_contains("not a boolean", &out, "at '/podPatchGuard/enabled': got string, want boolean")?;
    let out = render_fails(&["--set", "podPatchGuard.enable=false"]).await?;
    ensure_contains("typo", &out, "additional properties 'enable' not allowed")
}

#[tokio::test]
async fn argocd_health_check_and_example_application() -> anyhow::Result<()> {
    // The health check's cases run in Go (gopher-lua, as Argo CD runs it); the example
    // Application's values are written out for the checks below.
    let scratch = Scratch::new("argocd")?;
    let values = scratch.path("app-values.yaml");
    let home = std::env::var("HOME").context("HOME")?;
    let (gomod, gocache) =
        (format!("{home}/.cache/zeroflow-testbed/gomod"), format!("{home}/.cache/zeroflow-testbed/gocache"));
    let env = [
        ("GOTOOLCHAIN", "local"),
        ("GOFLAGS", "-mod=mod"),
        ("GOMODCACHE", gomod.as_str()),
        ("GOCACHE", gocache.as_str()),
        ("ZEROFLOW_APP_VALUES", values.to_str().context("utf-8")?),
    ];
    let dir = chart::root().join("argocd/healthtest");
    let go = std::path::Path::new("go");
    let out = run_in(Some(&dir), go, &["test", "-count=1", "-v", "./..."], &env).await?.success("go test")?;
    let cases = out.lines().filter(|l| l.contains("--- PASS: TestHealthChecks/") && l.contains("/testdata/")).count();
    assert!(cases >= 10, "only {cases} health cases passed:\n{out}");
    assert!(out.contains("--- PASS: TestExampleApplication"), "TestExampleApplication did not run:\n{out}");

    // The example Application's values are valid for the chart, and render the same every time
    // (no perpetual OutOfSync).
    let values = values.display().to_string();
    lint_clean(&["-f", &values]).await?;
    let a = template("zeroflow", &chart::chart(), "zeroflow-system", &["-f", &values]).await?;
    let b = template("zeroflow", &chart::chart(), "zeroflow-system", &["-f", &values]).await?;
    assert!(a == b, "the example Application's render is not deterministic");
    Ok(())
}

/// The ServiceMonitor or PodMonitor selects the operator's pods (through the Service for the
/// ServiceMonitor) on the metrics port, and keeps zeroflow's labels.
#[tokio::test]
async fn monitors_scrape_the_metrics_port_and_honor_zeroflow_labels() -> anyhow::Result<()> {
    let default = render(&[]).await?;
    assert!(
        !default.iter().any(|d| d["kind"] == "ServiceMonitor" || d["kind"] == "PodMonitor"),
        "a monitor by default: {:?}",
        chart::kinds(&default)
    );
    let pod_labels = |docs: &[Value]| -> anyhow::Result<Value> {
        Ok(find(docs, "Deployment", "zf-zeroflow")?["spec"]["template"]["metadata"]["labels"].clone())
    };
    let selects = |selector: &Value, labels: &Value| -> anyhow::Result<bool> {
        let wanted = selector["matchLabels"].as_object().context("matchLabels")?;
        Ok(!wanted.is_empty() && wanted.iter().all(|(k, v)| labels[k] == *v))
    };

    let docs = render(&["--set", "serviceMonitor.enabled=true"]).await?;
    let monitor = find(&docs, "ServiceMonitor", "zf-zeroflow")?;
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["honorLabels"], true, "{monitor}");
    assert_eq!(endpoint["port"], "metrics");
    assert_eq!(endpoint["path"], "/metrics");
    let service = find(&docs, "Service", "zf-zeroflow")?;
    assert!(selects(&monitor["spec"]["selector"], &service["metadata"]["labels"])?, "{monitor}\n{service}");
    let ports = service["spec"]["ports"].as_array().context("ports")?;
    assert!(ports.iter().any(|p| p["name"] == "metrics" && p["targetPort"] == "metrics"), "{service}");
    assert_eq!(monitor["spec"]["namespaceSelector"]["matchNames"][0], "zeroflow-system");

    let docs = render(&["--set", "podMonitor.enabled=true"]).await?;
    let monitor = find(&docs, "PodMonitor", "zf-zeroflow")?;
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["honorLabels"], true, "{monitor}");
    assert_eq!(endpoint["port"], "metrics");
    assert!(selects(&monitor["spec"]["selector"], &pod_labels(&docs)?)?, "{monitor}");
    let container = &find(&docs, "Deployment", "zf-zeroflow")?["spec"]["template"]["spec"]["containers"][0];
    let ports = container["ports"].as_array().context("container ports")?;
    assert!(ports.iter().any(|p| p["name"] == "metrics"), "{container}");
    assert!(!docs.iter().any(|d| d["kind"] == "ServiceMonitor"), "PodMonitor alone");

    // The value is what is rendered (the dashboard test shows what false would break).
    let docs = render(&["--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.honorLabels=false"]).await?;
    assert_eq!(find(&docs, "ServiceMonitor", "zf-zeroflow")?["spec"]["endpoints"][0]["honorLabels"], false);
    // Relabelings are passed through as they are, on either monitor.
    let relabel = r#"[{"sourceLabels":["exported_namespace"],"regex":"(.+)","targetLabel":"namespace"}]"#;
    for (monitor, endpoints) in [("serviceMonitor", "endpoints"), ("podMonitor", "podMetricsEndpoints")] {
        let docs = render(&[
            "--set",
            &format!("{monitor}.enabled=true"),
            "--set-json",
            &format!("{monitor}.metricRelabelings={relabel}"),
            "--set-json",
            &format!(r#"{monitor}.relabelings=[{{"action":"labeldrop","regex":"endpoint"}}]"#),
        ])
        .await?;
        let kind = if monitor == "serviceMonitor" { "ServiceMonitor" } else { "PodMonitor" };
        let endpoint = &find(&docs, kind, "zf-zeroflow")?["spec"][endpoints][0];
        assert_eq!(endpoint["metricRelabelings"], serde_json::from_str::<Value>(relabel)?, "{endpoint}");
        assert_eq!(endpoint["relabelings"][0]["action"], "labeldrop", "{endpoint}");
    }
    Ok(())
}

#[tokio::test]
async fn extra_volumes_are_added_to_the_operator_pod() -> anyhow::Result<()> {
    let deployment = |docs: &[Value]| -> anyhow::Result<Value> { Ok(find(docs, "Deployment", "zf-zeroflow")?.clone()) };
    let names = |list: &Value| -> Vec<String> {
        list.as_array().into_iter().flatten().filter_map(|v| v["name"].as_str().map(str::to_owned)).collect()
    };
    let plain = deployment(&render(&[]).await?)?;
    let spec = &plain["spec"]["template"]["spec"];
    assert_eq!(names(&spec["volumes"]), ["gateway-token", "tmp"]);
    assert_eq!(names(&spec["containers"][0]["volumeMounts"]), ["gateway-token", "tmp"]);

    let volumes = r#"extraVolumes=[{"name":"store-ca","configMap":{"name":"store-ca"}}]"#;
    let mounts = r#"extraVolumeMounts=[{"name":"store-ca","mountPath":"/etc/zeroflow/ca","readOnly":true}]"#;
    let with = deployment(&render(&["--set-json", volumes, "--set-json", mounts]).await?)?;
    let spec = &with["spec"]["template"]["spec"];
    assert_eq!(names(&spec["volumes"]), ["gateway-token", "tmp", "store-ca"]);
    assert_eq!(spec["volumes"][2]["configMap"]["name"], "store-ca");
    let mount = &spec["containers"][0]["volumeMounts"][2];
    assert_eq!((mount["name"].as_str(), mount["mountPath"].as_str()), (Some("store-ca"), Some("/etc/zeroflow/ca")));
    assert_eq!(mount["readOnly"], true);
    Ok(())
}

#[tokio::test]
async fn global_image_registry_replaces_the_registry_of_every_image() -> anyhow::Result<()> {
    /// The operator's image and the runner image it puts into worker pods.
    fn images(docs: &[Value]) -> anyhow::Result<(String, String)> {
        let container = &find(docs, "Deployment", "zf-zeroflow")?["spec"]["template"]["spec"]["containers"][0];
        let env = container["env"].as_array().context("env")?;
        let runner = env.iter().find(|e| e["name"] == "ZEROFLOW_RUNNER_IMAGE").context("ZEROFLOW_RUNNER_IMAGE")?;
        Ok((
            container["image"].as_str().context("image")?.to_owned(),
            runner["value"].as_str().context("runner image")?.to_owned(),
        ))
    }
    let cases: &[(&[&str], (&str, &str))] = &[
        (&[], ("ghcr.io/zeroflow-dev/zeroflow-operator:0.1.0", "ghcr.io/zeroflow-dev/zeroflow-runner:0.1.0")),
        (
            &["--set", "global.imageRegistry=mirror.example.com:5000"],
            (
                "mirror.example.com:5000/zeroflow-dev/zeroflow-operator:0.1.0",
                "mirror.example.com:5000/zeroflow-dev/zeroflow-runner:0.1.0",
            ),
        ),
        (
            // A path after the host is kept; a trailing slash is not doubled.
            &["--set", "global.imageRegistry=mirror.example.com/ghcr/"],
            (
                "mirror.example.com/ghcr/zeroflow-dev/zeroflow-operator:0.1.0",
                "mirror.example.com/ghcr/zeroflow-dev/zeroflow-runner:0.1.0",
            ),
        ),
        (
            // Docker Hub repositories (no registry part) are kept whole; localhost is a registry;
            // digests and tags are kept.
            &[
                "--set",
                "global.imageRegistry=mirror.local",
                "--set",
                "image.repository=acme/zeroflow-operator",
                "--set",
                "image.tag=1.2",
                "--set",
                "runnerImage.repository=localhost:5000/zeroflow-runner",
                "--set",
                "runnerImage.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ],
            (
                "mirror.local/acme/zeroflow-operator:1.2",
                "mirror.local/zeroflow-runner@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ),
        ),
    ];
    for (args, (operator, runner)) in cases {
        let got = images(&render(args).await?)?;
        assert_eq!((got.0.as_str(), got.1.as_str()), (*operator, *runner), "{args:?}");
    }
    Ok(())
}

#[tokio::test]
async fn ingress_routes_only_the_gateway() -> anyhow::Result<()> {
    let default = render(&[]).await?;
    assert!(!default.iter().any(|d| d["kind"] == "Ingress"), "an Ingress by default");
    let docs = render(&[
        "--set",
        "ingress.enabled=true",
        "--set",
        "ingress.className=nginx",
        "--set-json",
        r#"ingress.hosts=["events.example.com","events.example.org"]"#,
        "--set-json",
        r#"ingress.tls=[{"secretName":"zeroflow-events-tls","hosts":["events.example.com"]}]"#,
        "--set-json",
        r#"ingress.annotations={"cert-manager.io/cluster-issuer":"letsencrypt"}"#,
    ])
    .await?;
    let ingress = find(&docs, "Ingress", "zf-zeroflow")?;
    let spec = &ingress["spec"];
    assert_eq!(spec["ingressClassName"], "nginx");
    assert_eq!(spec["tls"][0]["secretName"], "zeroflow-events-tls");
    assert_eq!(ingress["metadata"]["annotations"]["cert-manager.io/cluster-issuer"], "letsencrypt");
    let rules = spec["rules"].as_array().context("rules")?;
    let hosts: Vec<_> = rules.iter().filter_map(|r| r["host"].as_str()).collect();
    assert_eq!(hosts, ["events.example.com", "events.example.org"]);
    for rule in rules {
        let paths = rule["http"]["paths"].as_array().context("paths")?;
        assert_eq!(paths.len(), 1, "{rule}");
        let path = &paths[0];
        assert_eq!((path["path"].as_str(), path["pathType"].as_str()), (Some("/v1/events"), Some("Prefix")));
        // The Service's gateway port, never the work API or metrics.
        assert_eq!(path["backend"]["service"]["name"], "zf-zeroflow");
        assert_eq!(path["backend"]["service"]["port"], serde_json::json!({"name": "gateway"}));
    }
    let service = find(&docs, "Service", "zf-zeroflow")?;
    let ports = service["spec"]["ports"].as_array().context("ports")?;
    assert!(ports.iter().any(|p| p["name"] == "gateway"), "{service}");
    Ok(())
}

#[tokio::test]
async fn sqs_queues_and_kafka_topics_become_the_consumers_env() -> anyhow::Result<()> {
    let env_of = |docs: &[Value]| -> anyhow::Result<Vec<Value>> {
        let deployment = find(docs, "Deployment", "zf-zeroflow")?;
        Ok(deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().cloned().unwrap_or_default())
    };
    let named = |env: &[Value], name: &str| env.iter().find(|e| e["name"] == name).cloned();
    let defaults = env_of(&render(&[]).await?)?;
    assert_eq!(named(&defaults, "ZEROFLOW_SQS_QUEUE_URLS"), None, "no queue by default");
    let wait = named(&defaults, "ZEROFLOW_SQS_WAIT_SECONDS").map(|e| e["value"].clone());
    assert_eq!(wait, Some(json!("20")), "the long poll of the queues pipelines name, too");

    let queues =
        r#"sqs.queueUrls=["https://sqs.eu-west-1.amazonaws.com/1/a","https://sqs.eu-west-1.amazonaws.com/1/b"]"#;
    let args = ["--set-json", queues, "--set", "sqs.region=eu-west-1", "--set", "sqs.credentialsSecret=aws"];
    let env = env_of(&render(&args).await?)?;
    let value = |name: &str| named(&env, name).map(|e| e["value"].clone());
    assert_eq!(
        value("ZEROFLOW_SQS_QUEUE_URLS"),
        Some(json!("https://sqs.eu-west-1.amazonaws.com/1/a,https://sqs.eu-west-1.amazonaws.com/1/b"))
    );
    assert_eq!(value("ZEROFLOW_SQS_REGION"), Some(json!("eu-west-1")));
    let secret = named(&env, "ZEROFLOW_SQS_SECRET_ACCESS_KEY").context("no secret key env")?;
    assert_eq!(secret["valueFrom"]["secretKeyRef"], json!({"name": "aws", "key": "secretAccessKey"}));
    let token = named(&env, "ZEROFLOW_SQS_SESSION_TOKEN").context("no session token env")?;
    assert_eq!(token["valueFrom"]["secretKeyRef"]["optional"], true);
    assert_eq!(named(&env, "ZEROFLOW_KAFKA_BROKERS"), None, "no Kafka by default");
    // Without a Secret, the operator's own AWS identity: no key variables at all.
    let env = env_of(&render(&["--set-json", queues]).await?)?;
    assert!(named(&env, "ZEROFLOW_SQS_QUEUE_URLS").is_some());
    for name in ["ZEROFLOW_SQS_ACCESS_KEY_ID", "ZEROFLOW_SQS_SECRET_ACCESS_KEY", "ZEROFLOW_SQS_SESSION_TOKEN"] {
        assert_eq!(named(&env, name), None, "{name} without sqs.credentialsSecret");
    }

    let kafka = ["--set-json", r#"kafka.brokers=["k-0:9092","k-1:9092"]"#, "--set-json", r#"kafka.topics=["events"]"#];
    let env = env_of(&render(&kafka).await?)?;
    let value = |name: &str| named(&env, name).map(|e| e["value"].clone());
    assert_eq!(value("ZEROFLOW_KAFKA_BROKERS"), Some(json!("k-0:9092,k-1:9092")));
    assert_eq!(value("ZEROFLOW_KAFKA_TOPICS"), Some(json!("events")));
    assert_eq!(value("ZEROFLOW_KAFKA_GROUP_ID"), Some(json!("zeroflow-operator")));

    for (args, message) in [
        (
            vec!["--set-json", r#"sqs.queueUrls=["zeroflow-events"]"#, "--set", "sqs.credentialsSecret=aws"],
            "at '/sqs/queueUrls/0'",
        ),
        (vec!["--set", "sqs.waitSeconds=30"], "at '/sqs/waitSeconds'"),
        (vec!["--set-json", r#"kafka.brokers=["kafka:9092"]"#], "at '/kafka/topics': minItems: got 0, want 1"),
        (
            vec!["--set-json", r#"kafka.brokers=["kafka"]"#, "--set-json", r#"kafka.topics=["t"]"#],
            "at '/kafka/brokers/0'",
        ),
    ] {
        ensure_contains(&format!("{args:?}"), &render_fails(&args).await?, message)?;
    }
    Ok(())
}

#[tokio::test]
async fn kafka_tls_and_sasl_become_env_and_mounted_secrets_never_plain_values() -> anyhow::Result<()> {
    let args = [
        "--set-json",
        r#"kafka.brokers=["k-0:9093"]"#,
        "--set-json",
        r#"kafka.topics=["events"]"#,
        "--set",
        "kafka.tls.enabled=true",
        "--set",
        "kafka.tls.caSecret=kafka-ca",
        "--set",
        "kafka.tls.clientCertificateSecret=kafka-client",
        "--set",
        "kafka.sasl.mechanism=SCRAM-SHA-512",
        "--set",
        "kafka.sasl.credentialsSecret=kafka-user",
    ];
    let docs = render(&args).await?;
    let pod = &find(&docs, "Deployment", "zf-zeroflow")?["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let env = container["env"].as_array().context("env")?;
    let named = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    let value = |name: &str| named(name).map(|e| e["value"].clone());
    assert_eq!(value("ZEROFLOW_KAFKA_TLS"), Some(json!("true")));
    assert_eq!(value("ZEROFLOW_KAFKA_CA_FILE"), Some(json!("/etc/zeroflow/kafka-tls/ca.crt")));
    assert_eq!(value("ZEROFLOW_KAFKA_CLIENT_CERT_FILE"), Some(json!("/etc/zeroflow/kafka-client/tls.crt")));
    assert_eq!(value("ZEROFLOW_KAFKA_CLIENT_KEY_FILE"), Some(json!("/etc/zeroflow/kafka-client/tls.key")));
    assert_eq!(value("ZEROFLOW_KAFKA_SASL_MECHANISM"), Some(json!("SCRAM-SHA-512")));
    for (name, key) in [("ZEROFLOW_KAFKA_SASL_USERNAME", "username"), ("ZEROFLOW_KAFKA_SASL_PASSWORD", "password")] {
        let var = named(name).with_context(|| format!("no {name}"))?;
        assert_eq!(var["valueFrom"]["secretKeyRef"], json!({"name": "kafka-user", "key": key}), "{name}");
    }
    let mounts = container["volumeMounts"].as_array().context("mounts")?;
    let volumes = pod["volumes"].as_array().context("volumes")?;
    for (volume, path, secret) in [
        ("kafka-tls", "/etc/zeroflow/kafka-tls", "kafka-ca"),
        ("kafka-client", "/etc/zeroflow/kafka-client", "kafka-client"),
    ] {
        let mount = mounts.iter().find(|m| m["name"] == volume).with_context(|| format!("no mount {volume}"))?;
        assert_eq!((mount["mountPath"].as_str(), mount["readOnly"].as_bool()), (Some(path), Some(true)));
        let volume = volumes.iter().find(|v| v["name"] == volume).with_context(|| format!("no volume {volume}"))?;
        assert_eq!(volume["secret"]["secretName"], secret);
    }
    // Without TLS and SASL nothing of them is rendered.
    let plain = ["--set-json", r#"kafka.brokers=["k-0:9092"]"#, "--set-json", r#"kafka.topics=["events"]"#];
    let docs = render(&plain).await?;
    let pod = &find(&docs, "Deployment", "zf-zeroflow")?["spec"]["template"]["spec"];
    let text = pod.to_string();
    assert!(!text.contains("KAFKA_TLS") && !text.contains("KAFKA_SASL") && !text.contains("kafka-tls"), "{text}");

    let mechanism_without_secret = [
        "--set-json",
        r#"kafka.brokers=["k-0:9093"]"#,
        "--set-json",
        r#"kafka.topics=["events"]"#,
        "--set",
        "kafka.sasl.mechanism=PLAIN",
    ];
    ensure_contains(
        "mechanism without secret",
        &render_fails(&mechanism_without_secret).await?,
        "at '/kafka/sasl/credentialsSecret': minLength: got 0, want 1",
    )?;
    ensure_contains(
        "unknown mechanism",
        &render_fails(&["--set", "kafka.sasl.mechanism=GSSAPI"]).await?,
        "at '/kafka/sasl/mechanism'",
    )?;
    Ok(())
}
