//! The whole loop, as a user sees it: objects uploaded to MinIO, notifications to the operator,
//! the worker Deployment scaled from zero, `zeroflow-runner` processes (one per worker pod, see
//! [`HostWorkers`]) running the transform, outputs and ledger markers in the sink, and the
//! return to zero. Every test binds MinIO's webhook address, so they run one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams};
use serde_json::json;
use zeroflow_core::ledger::Outcome;
use zeroflow_e2e::loop_bed::LoopBed as Loop;
use zeroflow_e2e::pipelines::{WEBHOOK, upload};
use zeroflow_e2e::{TIMEOUT, client, eventually, kubectl, mc};
use zeroflow_operator::api::conditions::is_true;

#[tokio::test]
async fn fifty_objects_scale_out_through_runner_processes_and_back_to_zero() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let transform = r#"sleep 0.3; tr a-z A-Z < "$ZEROFLOW_INPUT" > "$ZEROFLOW_OUTPUT_DIR/upper.txt""#;
    let spec = json!({
        "scaling": {"maxReplicas": 4, "targetPerReplica": 5, "concurrencyPerReplica": 2,
                    "idleTimeout": "3s", "scaleDownStabilization": "1s"},
        "transform": {"image": "example.org/t:1", "command": ["sh", "-c", transform], "contract": "exec",
                      "resources": {"requests": {"cpu": "250m"}}}
    });
    let t = Loop::start("loop", "upper", spec).await?;

    // The replica counts the Deployment goes through, sampled while the objects are processed.
    let seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let sampler = tokio::spawn({
        let (deployments, seen) = (t.deployments.clone(), seen.clone());
        async move {
            loop {
                if let Ok(d) = deployments.get("upper-worker").await {
                    let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(0);
                    seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(replicas);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // Uploaded only after the start-up resync: otherwise that listing may find the objects before
    // MinIO delivers their notifications, and the scale-up has no event to be measured from.
    eventually("the start-up resync has run", TIMEOUT, || async {
        Ok((t.metric("zeroflow_resync_duration_seconds_count").await.unwrap_or(0.0) >= 1.0).then_some(()))
    })
    .await?;
    const OBJECTS: usize = 50;
    let dir = std::env::temp_dir().join(format!("zf-loop-{}", t.ns.name));
    std::fs::create_dir_all(&dir)?;
    let mut expected = BTreeMap::new();
    for i in 0..OBJECTS {
        let content = format!("line {i}: the quick brown fox\n");
        std::fs::write(dir.join(format!("f{i:02}.txt")), &content)?;
        expected.insert(format!("batch/f{i:02}.txt"), content);
    }
    let alias = std::env::var("ZF_MC_ALIAS")?;
    mc(&["cp", "--recursive", &format!("{}/", dir.display()), &format!("{alias}/{}/batch/", t.buckets.source)]).await?;
    t.wait_finished(OBJECTS as i64, 0, Duration::from_secs(120)).await?;

    // Every output is there with the right content, and the ledger has one success per object.
    for (key, content) in &expected {
        assert_eq!(t.read_sink(&format!("out/{key}/upper.txt")).await?, content.to_uppercase(), "{key}");
    }
    let markers = t.markers().await?;
    assert_eq!(markers.keys().cloned().collect::<Vec<_>>(), expected.keys().cloned().collect::<Vec<_>>());
    for (key, marker) in &markers {
        assert_eq!(marker.outcome, Outcome::Succeeded, "{key}");
        assert_eq!(marker.outputs, vec![format!("out/{key}/upper.txt")], "{key}");
    }

    // Idle for idleTimeout: back to zero, Ready and not Active; every runner drained and exited 0.
    eventually("scaled back to zero", TIMEOUT, || async { Ok((t.replicas().await? == 0).then_some(())) }).await?;
    sampler.abort();
    let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    assert!(seen.iter().any(|r| *r > 1), "the workers scaled out beyond one: {seen:?}");
    assert!(seen.iter().all(|r| *r <= 4), "never beyond maxReplicas: {seen:?}");
    let started = t.workers().started();
    assert!(started.len() > 1, "more than one worker pod ran: {started:?}");
    eventually("runners of deleted pods exit", TIMEOUT, || async {
        Ok(t.workers().running().is_empty().then_some(()))
    })
    .await?;
    let exits = t.workers().exits();
    assert!(exits.iter().all(|(_, code)| *code == Some(0)), "runners drain and exit 0 on SIGTERM: {exits:?}");
    assert_eq!(t.workers().restarts(), 0);
    let status = eventually("idle status", TIMEOUT, || async {
        let s = t.status().await?;
        let idle = s.replicas == 0
            && is_true(&s.conditions, "Ready") == Some(true)
            && is_true(&s.conditions, "Active") == Some(false)
            && s.last_scale_reason.as_deref() == Some("idle")
            // The final usage figure lands on the progress publisher's first tick at zero.
            && s.usage.replica_seconds > 0.0;
        Ok(idle.then_some(s))
    })
    .await?;

    // Cost attribution and cold-start telemetry.
    assert!(status.usage.replica_seconds > 1.0, "{:?}", status.usage);
    let per_replica = status.usage.cpu_core_seconds / status.usage.replica_seconds;
    assert!((per_replica - 0.25).abs() < 0.01, "250m per worker: {:?}", status.usage);
    let cold = status.last_cold_start_seconds.context("a cold start was measured")?;
    assert!(cold > 0.0 && cold < 60.0, "{cold}");
    assert_eq!(t.metric("zeroflow_cold_start_seconds_count").await?, 1.0);
    assert_eq!(t.metric("zeroflow_event_to_scale_seconds_count").await?, 1.0);
    assert!(t.metric("zeroflow_replica_seconds_total").await? > 1.0);
    // One Event per transition: a scale-out is not folded into the first scale-up's series. The
    // first scale-up goes to what the backlog holds when the scaler looks (one worker for the
    // first object, more when several arrived meanwhile); a later scale-out has its own Event.
    let notes =
        kubectl(&["get", "events", "-n", &t.ns.name, "-o", "jsonpath={range .items[*]}{.message}{'\\n'}{end}"]).await?;
    let from_zero = notes
        .lines()
        .find_map(|n| {
            n.strip_prefix("scaled workers from 0 to ")?.strip_suffix(" (objects arrived while scaled to zero)")
        })
        .with_context(|| format!("no scale-up from zero: {notes}"))?;
    let first: i32 = from_zero.parse()?;
    assert!((1..=4).contains(&first), "{notes}");
    let peak = seen.iter().copied().max().unwrap_or(0);
    if first < peak {
        let scale_out = format!("scaled workers from {first} to ");
        assert!(notes.lines().any(|n| n.starts_with(&scale_out) && n.ends_with("(backlog)")), "{notes}");
    }
    assert!(notes.contains("to 0 (idle)"), "{notes}");
    dashboard_charts_only_exported_metrics(&t.operator.metrics().await?)?;
    Ok(())
}

/// Every metric the chart's Grafana dashboard queries is one this operator exports, with the
/// `pipeline` label where the dashboard filters on it (a renamed metric or label breaks panels
/// silently otherwise).
fn dashboard_charts_only_exported_metrics(exported: &str) -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/zeroflow/dashboards/zeroflow.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let panels = dashboard["panels"].as_array().context("panels")?;
    let exprs =
        panels.iter().flat_map(|p| p["targets"].as_array().into_iter().flatten()).filter_map(|t| t["expr"].as_str());
    // Only counted on failures, which this run has none of.
    let seen_only_on_errors = ["zeroflow_reconcile_errors_total"];
    let mut checked = BTreeSet::new();
    for expr in exprs {
        for (at, _) in expr.match_indices("zeroflow_") {
            let name: String =
                expr[at..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit()).collect();
            let selector = expr[at + name.len()..].split('}').next().unwrap_or_default();
            let family =
                ["_bucket", "_count", "_sum"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            if seen_only_on_errors.contains(&family) || !checked.insert(name.clone()) {
                continue;
            }
            let series: Vec<&str> = exported
                .lines()
                .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
                .collect();
            anyhow::ensure!(!series.is_empty(), "the dashboard queries {name}, which the operator does not export");
            if selector.contains("pipeline=~") {
                anyhow::ensure!(
                    series.iter().any(|l| l.contains("pipeline=\"")),
                    "the dashboard filters {name} by pipeline, which it is not labelled with: {series:?}"
                );
            }
        }
    }
    anyhow::ensure!(checked.len() > 10, "too few metrics found in the dashboard: {checked:?}");
    Ok(())
}

#[tokio::test]
async fn scale_down_spares_the_workers_in_the_middle_of_an_object() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    // Each object's run names its pod, then waits for the test to open its gate.
    let gates = std::env::temp_dir().join(format!("zf-gates-{}", std::process::id()));
    std::fs::create_dir_all(&gates)?;
    let transform = r#"name=$(basename "$ZEROFLOW_KEY"); echo "$ZEROFLOW_POD_NAME" > "$GATE_DIR/$name.pod"
while [ ! -e "$GATE_DIR/$name.go" ]; do sleep 0.1; done
echo "$ZEROFLOW_POD_NAME" > "$ZEROFLOW_OUTPUT_DIR/pod.txt""#;
    let spec = json!({
        "scaling": {"maxReplicas": 3, "targetPerReplica": 1, "idleTimeout": "60s", "scaleDownStabilization": "2s"},
        "transform": {"image": "example.org/t:1", "command": ["sh", "-c", transform], "contract": "exec",
                      "env": [{"name": "GATE_DIR", "value": gates.to_str().context("utf-8 path")?}]}
    });
    let t = Loop::start("spare", "spare", spec).await?;
    let holder = |name: &str| {
        let file = gates.join(format!("{name}.pod"));
        async move { Ok(std::fs::read_to_string(&file).ok().map(|pod| pod.trim().to_owned()).filter(|p| !p.is_empty())) }
    };
    upload(&t.buckets.source, "a.txt", "a").await?;
    let pod_a = eventually("the first worker has a.txt", TIMEOUT, || holder("a.txt")).await?;
    // The first pod is made clearly the oldest. Left to itself the ReplicaSet removes the newest
    // pods first (by log-scale age buckets), which below are the busy ones: only their deletion
    // cost can spare them.
    let pods: Api<Pod> = Api::namespaced(client().await?, &t.ns.name);
    eventually("the first pod is 8 s old", TIMEOUT, || async {
        let created = pods.get(&pod_a).await?.metadata.creation_timestamp.context("creation time")?;
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(created.0);
        Ok((age.as_secs() >= 8).then_some(()))
    })
    .await?;
    upload(&t.buckets.source, "b.txt", "b").await?;
    upload(&t.buckets.source, "c.txt", "c").await?;
    let pod_b = eventually("a worker has b.txt", TIMEOUT, || holder("b.txt")).await?;
    let pod_c = eventually("a worker has c.txt", TIMEOUT, || holder("c.txt")).await?;
    let busy = BTreeSet::from([pod_b.clone(), pod_c.clone()]);
    assert_eq!(busy.len(), 2, "one object per worker");
    assert!(!busy.contains(&pod_a));

    // The oldest pod finishes; two objects in flight want two workers: 3 -> 2.
    std::fs::write(gates.join("a.txt.go"), "")?;
    eventually("scaled down to two", TIMEOUT, || async { Ok((t.replicas().await? == 2).then_some(())) }).await?;
    let left = eventually("the ReplicaSet removed one pod", TIMEOUT, || async {
        let pods = pods.list(&ListParams::default().labels("zeroflow.dev/pipeline=spare")).await?.items;
        let live: Vec<Pod> = pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        Ok((live.len() == 2).then_some(live))
    })
    .await?;
    let names: BTreeSet<String> = left.iter().map(|p| p.name_any()).collect();
    assert_eq!(names, busy, "the idle pod went, not a busy one");
    for pod in &left {
        let cost = pod.annotations().get("controller.kubernetes.io/pod-deletion-cost").cloned();
        assert_eq!(cost.as_deref(), Some("1000"), "{} carries the higher deletion cost", pod.name_any());
    }

    for name in ["b.txt", "c.txt"] {
        std::fs::write(gates.join(format!("{name}.go")), "")?;
    }
    t.wait_finished(3, 0, Duration::from_secs(60)).await?;
    for (name, pod) in [("a.txt", &pod_a), ("b.txt", &pod_b), ("c.txt", &pod_c)] {
        assert_eq!(t.read_sink(&format!("out/{name}/pod.txt")).await?.trim(), pod.as_str());
    }
    let markers = t.markers().await?;
    assert!(markers.values().all(|m| m.outcome == Outcome::Succeeded && m.attempts == 1), "{markers:?}");
    assert_eq!(t.metric("zeroflow_workapi_leases_granted_total").await?, 3.0, "no object was leased twice");
    assert_eq!(t.workers().restarts(), 0);
    std::fs::remove_dir_all(&gates)?;
    Ok(())
}

#[tokio::test]
async fn a_killed_runner_loses_nothing_and_failing_transforms_report_their_stderr() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let transform = r#"
case "$ZEROFLOW_KEY" in
  crash*) if [ "$ZEROFLOW_ATTEMPT" = 1 ]; then touch "$HOME/crash-started"; sleep 30; fi ;;
  bad*) echo "reading $ZEROFLOW_KEY" >&2; echo "ValueError: row 3 has 2 columns, expected 4" >&2; exit 3 ;;
  hang*) sleep 30 ;;
esac
cp "$ZEROFLOW_INPUT" "$ZEROFLOW_OUTPUT_DIR/copy""#;
    let spec = json!({
        "scaling": {"maxReplicas": 1, "idleTimeout": "60s"},
        "delivery": {"maxAttempts": 2, "leaseDuration": "5s", "retryBackoff": "1s"},
        "transform": {"image": "example.org/t:1", "command": ["sh", "-c", transform], "contract": "exec",
                      "timeout": "3s"}
    });
    let t = Loop::start("crash", "crashy", spec).await?;

    // A runner SIGKILLed in the middle of an object: the lease expires, the object is leased
    // again (to the restarted runner) and completes on its second attempt.
    upload(&t.buckets.source, "crash.txt", "survives").await?;
    let pod = eventually("the transform started", TIMEOUT, || async {
        Ok(t.workers().started().into_iter().find(|pod| t.workers().scratch.join(pod).join("crash-started").exists()))
    })
    .await?;
    t.workers().kill(&pod).await?;
    t.wait_finished(1, 0, Duration::from_secs(60)).await?;
    assert_eq!(t.read_sink("out/crash.txt/copy").await?, "survives");
    let markers = t.markers().await?;
    assert_eq!(markers.get("crash.txt").map(|m| (m.outcome, m.attempts)), Some((Outcome::Succeeded, 2)));
    assert_eq!(t.workers().restarts(), 1, "the dead runner was restarted, as the kubelet does");

    // A transform that exits non-zero, and one that exceeds its timeout: failed after
    // maxAttempts, the stderr tail in the ledger and in the ObjectsFailed Event.
    upload(&t.buckets.source, "bad.csv", "a,b").await?;
    upload(&t.buckets.source, "hang.txt", "zzz").await?;
    t.wait_finished(1, 2, Duration::from_secs(90)).await?;
    let markers = t.markers().await?;
    let bad = markers.get("bad.csv").context("marker for bad.csv")?;
    assert_eq!((bad.outcome, bad.attempts), (Outcome::Failed, 2));
    let error = bad.error.clone().context("failure detail")?;
    assert_eq!(error.exit_code, Some(3));
    assert!(error.stderr_tail.contains("ValueError: row 3 has 2 columns"), "{error:?}");
    let hang = markers.get("hang.txt").context("marker for hang.txt")?;
    assert_eq!((hang.outcome, hang.attempts), (Outcome::Failed, 2));
    let detail = hang.error.clone().context("failure detail")?.stderr_tail;
    assert!(detail.contains("killed after the 3s timeout"), "{detail}");
    let notes = eventually("the ObjectsFailed Event", TIMEOUT, || async {
        let notes = kubectl(&[
            "get",
            "events",
            "-n",
            &t.ns.name,
            "--field-selector",
            "reason=ObjectsFailed",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .await?;
        Ok((notes.contains("ValueError") || notes.contains("timeout")).then_some(notes))
    })
    .await?;
    assert!(notes.contains("zeroflow.dev/redrive"), "{notes}");
    Ok(())
}

#[tokio::test]
async fn hostile_keys_never_leave_the_runner_work_dir() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    // The transform reports where its input was; the runner names it after the key's last segment.
    let transform = r#"printf '%s' "$ZEROFLOW_INPUT" > "$ZEROFLOW_OUTPUT_DIR/input-path"; cat "$ZEROFLOW_INPUT" > "$ZEROFLOW_OUTPUT_DIR/copy""#;
    let spec = json!({
        "scaling": {"maxReplicas": 1, "idleTimeout": "60s"},
        "delivery": {"maxAttempts": 1},
        "transform": {"image": "example.org/t:1", "command": ["sh", "-c", transform], "contract": "exec"}
    });
    let t = Loop::start("hostile", "hostile", spec).await?;
    // Near S3's 1024-byte limit; MinIO keeps each segment under 256 bytes.
    let long = format!("{}{}", format!("{}/", "d".repeat(200)).repeat(3), "n".repeat(250));
    // MinIO refuses `..` and `.` segments outright; these are the hostile keys it stores.
    let keys = ["%2e%2e%2F%2e%2e%2Fescape", "-rf", " leading space", "a/.../b", "x/..evil", long.as_str()];
    for key in keys {
        upload(&t.buckets.source, key, key).await?;
    }
    t.wait_finished(keys.len() as i64, 0, Duration::from_secs(90)).await?;

    let pod = t.workers().started().first().cloned().context("a worker ran")?;
    let work_dir = t.workers().scratch.join(&pod).join("work");
    for key in keys {
        assert_eq!(t.read_sink(&format!("out/{key}/copy")).await?, key, "the object is processed");
        let input = t.read_sink(&format!("out/{key}/input-path")).await?;
        let input = std::path::Path::new(&input);
        assert!(input.starts_with(&work_dir), "{key:?} was downloaded to {}", input.display());
        let below: Vec<_> = input.strip_prefix(&work_dir)?.components().collect();
        assert_eq!(below.len(), 3, "<object dir>/in/<one safe name> for {key:?}: {}", input.display());
        assert!(input.file_name().is_some_and(|n| n.len() <= 255), "{key:?}");
    }
    // Nothing anywhere but in the pod's own directories, and the per-object directories are gone.
    let scratch_files = zeroflow_e2e::workers::files_under(&t.workers().scratch);
    let allowed = ["token", "runner.log"];
    for file in &scratch_files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(allowed.contains(&name), "unexpected file {}", file.display());
    }
    let parent = t.workers().scratch.parent().context("scratch parent")?;
    for name in ["evil.txt", "escape", "b"] {
        assert!(!parent.join(name).exists(), "{name} escaped into {}", parent.display());
    }
    Ok(())
}

#[tokio::test]
async fn a_deleted_worker_hands_back_what_it_cannot_finish_within_its_grace_period() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    // The first run outlasts the pod's 5 s grace period; the next (on another pod) is quick.
    let transform = r#"if [ ! -e "$HOME/../long-started" ]; then touch "$HOME/../long-started" "$HOME/long-started"; sleep 60; fi; cp "$ZEROFLOW_INPUT" "$ZEROFLOW_OUTPUT_DIR/copy""#;
    let spec = json!({
        "scaling": {"maxReplicas": 1, "idleTimeout": "60s"},
        // One attempt: handing an object back must not use it up.
        "delivery": {"maxAttempts": 1},
        "transform": {"image": "example.org/t:1", "command": ["sh", "-c", transform], "contract": "exec",
                      "timeout": "120s", "podTemplate": {"terminationGracePeriodSeconds": 5}}
    });
    let t = Loop::start("handback", "handback", spec).await?;
    upload(&t.buckets.source, "long.bin", "payload").await?;
    let pod = eventually("the long attempt started", TIMEOUT, || async {
        Ok(t.workers().started().into_iter().find(|pod| t.workers().scratch.join(pod).join("long-started").exists()))
    })
    .await?;
    // The pod goes away (a node drain, say): SIGTERM to its runner, which must not wait 60 s.
    let pods: Api<Pod> = Api::namespaced(client().await?, &t.ns.name);
    let deleted_at = std::time::Instant::now();
    pods.delete(&pod, &Default::default()).await?;
    eventually("the runner exits within the grace period", Duration::from_secs(20), || async {
        Ok(t.workers().exits().into_iter().find(|(p, _)| p == &pod))
    })
    .await?;
    let took = deleted_at.elapsed();
    assert!(took < Duration::from_secs(10), "the runner outlived its grace period: {took:?}");
    assert!(t.workers().log(&pod).contains("handing back unfinished objects"), "{}", t.workers().log(&pod));
    // The replacement pod's runner takes the object again and finishes it.
    t.wait_finished(1, 0, Duration::from_secs(60)).await?;
    assert_eq!(t.read_sink("out/long.bin/copy").await?, "payload");
    let markers = t.markers().await?;
    assert_eq!(
        markers.get("long.bin").map(|m| (m.outcome, m.attempts)),
        Some((Outcome::Succeeded, 1)),
        "the handed-back run is not an attempt"
    );
    let metrics = t.operator.metrics().await?;
    let handed_back = metrics.lines().find(|l| l.contains("outcome=\"handed_back\""));
    assert_eq!(handed_back.and_then(|l| l.rsplit(' ').next()), Some("1"), "{metrics}");
    Ok(())
}
