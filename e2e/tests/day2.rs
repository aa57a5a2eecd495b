//! Day-2 operations on the real operator (issue #18): a paused pipeline keeps admitting uploads
//! and runs nothing until it is unpaused; failed objects are listed in status one by one, and
//! one of them is re-driven alone by its key. MinIO's notifications, runner processes as the
//! worker pods. Every test binds MinIO's webhook address, so they run one at a time.

use std::time::Duration;

use serde_json::json;
use zeroflow_core::ledger::Outcome;
use zeroflow_e2e::loop_bed::LoopBed;
use zeroflow_e2e::pipelines::{WEBHOOK, upload};
use zeroflow_e2e::{TIMEOUT, eventually, kubectl};
use zeroflow_operator::api::conditions;

/// The value of `name{namespace=..,pipeline=..}` in the operator's metrics (None when absent).
async fn pipeline_series(t: &LoopBed, name: &str) -> anyhow::Result<Option<f64>> {
    let text = t.operator.metrics().await?;
    let prefix = format!("{name}{{namespace=\"{}\",pipeline=\"{}\"}}", t.ns.name, t.name);
    Ok(text.lines().find(|l| l.starts_with(&prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()))
}

async fn annotate(t: &LoopBed, annotation: &str) -> anyhow::Result<String> {
    kubectl(&["annotate", "--overwrite", "dp", &t.name, "-n", &t.ns.name, annotation]).await
}

#[tokio::test]
async fn a_paused_pipeline_admits_uploads_runs_nothing_and_drains_when_unpaused() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let spec = json!({
        "transform": {"image": "example.org/t:1",
                      "command": ["sh", "-c", "tr a-z A-Z < \"$ZEROFLOW_INPUT\" > \"$ZEROFLOW_OUTPUT_DIR/up.txt\""]},
        "scaling": {"idleTimeout": "3s", "maxReplicas": 2}
    });
    let t = LoopBed::start("paused", "paused", spec).await?;
    annotate(&t, "zeroflow.dev/paused=true").await?;
    eventually("Paused condition", TIMEOUT, || async {
        Ok(conditions::is_true(&t.status().await?.conditions, conditions::PAUSED).filter(|p| *p))
    })
    .await?;
    // `kubectl get dp` shows it in the Paused column.
    let columns = kubectl(&["get", "dp", &t.name, "-n", &t.ns.name, "--no-headers"]).await?;
    assert_eq!(columns.split_whitespace().nth(3), Some("True"), "NAME READY ACTIVE PAUSED ...: {columns}");
    // The gauge follows on the progress publisher's next tick (every 2 s).
    eventually("zeroflow_paused = 1", TIMEOUT, || async {
        Ok((pipeline_series(&t, "zeroflow_paused").await? == Some(1.0)).then_some(()))
    })
    .await?;

    for i in 0..3 {
        upload(&t.buckets.source, &format!("in/{i}.txt"), &format!("object {i}\n")).await?;
    }
    eventually("three uploads admitted while paused", TIMEOUT, || async {
        Ok((t.status().await?.pending == 3).then_some(()))
    })
    .await?;
    // Nothing may scale up: look for a while, past the moment a scale-up would have happened.
    for _ in 0..6 {
        assert_eq!(t.replicas().await?, 0, "a paused pipeline scaled up");
        let status = t.status().await?;
        assert_eq!((status.in_flight, status.succeeded), (0, 0), "a paused pipeline leased work");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(t.markers().await?.is_empty(), "a paused pipeline recorded results");

    annotate(&t, "zeroflow.dev/paused=false").await?;
    t.wait_finished(3, 0, Duration::from_secs(90)).await?;
    assert_eq!(t.read_sink("out/in/1.txt/up.txt").await?, "OBJECT 1\n");
    assert_eq!(conditions::is_true(&t.status().await?.conditions, conditions::PAUSED), Some(false));
    eventually("zeroflow_paused = 0", TIMEOUT, || async {
        Ok((pipeline_series(&t, "zeroflow_paused").await? == Some(0.0)).then_some(()))
    })
    .await?;
    eventually("back to zero", TIMEOUT, || async { Ok((t.replicas().await? == 0).then_some(())) }).await?;
    Ok(())
}

#[tokio::test]
async fn paused_replicas_holds_workers_and_a_bad_value_is_reported() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let spec = json!({"transform": {"image": "example.org/t:1", "command": ["true"]},
                      "scaling": {"idleTimeout": "3s", "maxReplicas": 3}});
    let t = LoopBed::start("held", "held", spec).await?;
    annotate(&t, "zeroflow.dev/paused-replicas=2").await?;
    eventually("held at 2 replicas", TIMEOUT, || async { Ok((t.replicas().await? == 2).then_some(())) }).await?;
    // Held, idle or not: past the idle timeout it stays at 2.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(t.replicas().await?, 2, "paused-replicas did not hold the workers");
    let paused = t.status().await?.conditions.into_iter().find(|c| c.type_ == conditions::PAUSED);
    assert!(paused.as_ref().is_some_and(|c| c.status == "True" && c.message.contains('2')), "{paused:?}");

    annotate(&t, "zeroflow.dev/paused-replicas=many").await?;
    let invalid = eventually("a bad paused-replicas reported", TIMEOUT, || async {
        let conditions = t.status().await?.conditions;
        Ok(conditions.into_iter().find(|c| c.type_ == conditions::READY && c.reason == "InvalidSpec"))
    })
    .await?;
    assert!(invalid.message.contains("zeroflow.dev/paused-replicas"), "{invalid:?}");
    Ok(())
}

#[tokio::test]
async fn failed_objects_are_listed_and_one_is_re_driven_alone_by_its_key() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    // Objects under bad/ fail until a flag file exists for their name: the user's fix.
    let fixed = std::env::temp_dir().join(format!("zf-day2-fixed-{}", std::process::id()));
    std::fs::create_dir_all(&fixed)?;
    let script = format!(
        "name=$(basename \"$ZEROFLOW_KEY\"); case \"$ZEROFLOW_KEY\" in bad/*) [ -e {dir}/\"$name\" ] || \
         {{ echo \"cannot parse $name\" >&2; exit 3; }};; esac; cp \"$ZEROFLOW_INPUT\" \"$ZEROFLOW_OUTPUT_DIR/copy\"",
        dir = fixed.display()
    );
    let spec = json!({"transform": {"image": "example.org/t:1", "command": ["sh", "-c", script]},
                      "delivery": {"maxAttempts": 2}, "scaling": {"idleTimeout": "3s"}});
    let t = LoopBed::start("failures", "failures", spec).await?;
    upload(&t.buckets.source, "good/1.csv", "fine\n").await?;
    upload(&t.buckets.source, "bad/2024.csv", "x\n").await?;
    upload(&t.buckets.source, "bad/2025.csv", "y\n").await?;
    t.wait_finished(1, 2, Duration::from_secs(120)).await?;

    // Which objects failed and why, without store credentials.
    let failures = t.status().await?.recent_failures;
    let keys: Vec<&str> = failures.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys.len(), 2, "{failures:?}\noperator log:\n{}", t.operator.log_tail());
    assert!(keys.contains(&"bad/2024.csv") && keys.contains(&"bad/2025.csv"), "{keys:?}");
    for failure in &failures {
        assert_eq!((failure.attempts, failure.exit_code), (2, Some(3)), "{failure:?}");
        let name = failure.key.rsplit('/').next().unwrap_or_default();
        assert!(failure.message.contains(&format!("cannot parse {name}")), "stderr tail: {failure:?}");
    }

    // Fix one and re-drive it alone, by its key as the prefix.
    std::fs::write(fixed.join("2025.csv"), "")?;
    annotate(&t, "zeroflow.dev/redrive-prefix=bad/2025.csv").await?;
    annotate(&t, "zeroflow.dev/redrive=fix-2025").await?;
    t.wait_finished(2, 1, Duration::from_secs(120)).await?;
    // The reconcile that re-drove records it; its status write may land after the progress one.
    eventually("lastRedrive recorded", TIMEOUT, || async {
        Ok((t.status().await?.last_redrive.as_deref() == Some("fix-2025")).then_some(()))
    })
    .await?;
    // Later reconciles' status writes keep it (server-side apply removes what an apply leaves
    // out; a lost lastRedrive made the next reconcile re-drive again): back at zero, the
    // replicas in status changed.
    eventually("status shows zero replicas", TIMEOUT, || async {
        let status = t.status().await?;
        Ok((t.replicas().await? == 0 && status.replicas == 0).then_some(()))
    })
    .await?;
    let status = t.status().await?;
    assert_eq!(status.last_redrive.as_deref(), Some("fix-2025"), "a later status write removed it");
    let still: Vec<&str> = status.recent_failures.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(still, ["bad/2024.csv"], "the other failure stays listed");
    assert_eq!(t.read_sink("out/bad/2025.csv/copy").await?, "y\n");
    let markers = t.markers().await?;
    assert_eq!(markers["bad/2025.csv"].outcome, Outcome::Succeeded, "{:?}", markers["bad/2025.csv"]);
    assert_eq!(markers["bad/2024.csv"].outcome, Outcome::Failed, "{:?}", markers["bad/2024.csv"]);
    let _ = std::fs::remove_dir_all(&fixed);
    Ok(())
}
