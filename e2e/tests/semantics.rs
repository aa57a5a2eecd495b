//! Only new content is work (issue #13): folder placeholders and objects that are gone before a
//! worker reads them are skipped, never failed; status says when the last event came. On the
//! real operator with MinIO's notifications and runner processes. Every test binds MinIO's
//! webhook address, so they run one at a time.

use std::time::Duration;

use serde_json::json;
use zeroflow_core::ledger::Outcome;
use zeroflow_e2e::loop_bed::LoopBed;
use zeroflow_e2e::pipelines::{WEBHOOK, upload};
use zeroflow_e2e::{TIMEOUT, eventually, http, kubectl, mc};

/// The value of a labelled series in the operator's metrics (0 when absent).
async fn series(t: &LoopBed, name: &str, labels: &str) -> anyhow::Result<f64> {
    let text = t.operator.metrics().await?;
    let prefix = format!("{name}{{{labels}");
    Ok(text.lines().find(|l| l.starts_with(&prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0))
}

fn skipped(t: &LoopBed, reason: &str) -> String {
    format!("namespace=\"{}\",pipeline=\"{}\",reason=\"{reason}\"", t.ns.name, t.name)
}

async fn events(t: &LoopBed) -> anyhow::Result<String> {
    kubectl(&["get", "events", "-n", &t.ns.name, "-o", "jsonpath={range .items[*]}{.reason}: {.message}{'\\n'}{end}"])
        .await
}

/// A transform that logs every run on the host, so the test can count them.
fn counting_transform(log: &std::path::Path) -> serde_json::Value {
    let script = format!(
        "echo \"$ZEROFLOW_KEY\" >> {}; tr a-z A-Z < \"$ZEROFLOW_INPUT\" > \"$ZEROFLOW_OUTPUT_DIR/up.txt\"",
        log.display()
    );
    json!({"image": "example.org/t:1", "command": ["sh", "-c", script]})
}

/// Case 07: what S3 consoles, rclone, s3fs and `mc mb bucket/prefix/` write for "create folder"
/// (a zero-byte object whose key ends in `/`) wakes nothing and fails nothing, by notification
/// or by resync.
#[tokio::test]
async fn folder_placeholders_are_never_work() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let runs = std::env::temp_dir().join(format!("zf-folders-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&runs);
    let spec = json!({"transform": counting_transform(&runs), "delivery": {"maxAttempts": 2},
                      "source": {"resyncInterval": "2s"}, "scaling": {"idleTimeout": "3s"}});
    let t = LoopBed::start("folders", "folders", spec).await?;
    let alias = std::env::var("ZF_MC_ALIAS")?;
    mc(&["mb", &format!("{alias}/{}/incoming/2026-01/", t.buckets.source)]).await?;
    let passes_before = t.metric("zeroflow_resync_duration_seconds_count").await.unwrap_or(0.0);
    eventually("the placeholder's notification counted as skipped", TIMEOUT, || async {
        Ok((series(&t, "zeroflow_objects_skipped_total", &skipped(&t, "folder_marker")).await? >= 1.0).then_some(()))
    })
    .await?;
    // Nothing to wait on for a scale-up that must not happen: look for a while (past several
    // resync passes, which list the placeholder too).
    for _ in 0..8 {
        assert_eq!(t.replicas().await?, 0, "a folder placeholder woke the workers");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let passes = t.metric("zeroflow_resync_duration_seconds_count").await? - passes_before;
    assert!(passes >= 2.0, "resync passes listed the placeholder meanwhile: {passes}");
    upload(&t.buckets.source, "incoming/2026-01/x.csv", "a,b\n").await?;
    t.wait_finished(1, 0, Duration::from_secs(90)).await?;
    assert_eq!(std::fs::read_to_string(&runs)?, "incoming/2026-01/x.csv\n", "one run, for the real object");
    let markers = t.markers().await?;
    assert_eq!(markers.keys().cloned().collect::<Vec<_>>(), ["incoming/2026-01/x.csv"]);
    assert!(!events(&t).await?.contains("ObjectsFailed"));
    let status = t.status().await?;
    assert_eq!((status.succeeded, status.failed), (1, 0));
    assert!(status.last_event_time.is_some(), "status says when the last event came");
    Ok(())
}

/// Case 13: an object deleted before a worker read it, and a notification for an object that
/// never existed, are skipped: no attempt used, no failure, no Event, nothing to re-drive.
#[tokio::test]
async fn objects_gone_before_a_worker_reads_them_are_skipped_not_failed() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let runs = std::env::temp_dir().join(format!("zf-gone-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&runs);
    let spec = json!({"transform": counting_transform(&runs), "delivery": {"maxAttempts": 3},
                      "scaling": {"idleTimeout": "3s"}});
    let t = LoopBed::start("gone", "gone", spec).await?;
    upload(&t.buckets.source, "incoming/keep.csv", "good\n").await?;
    upload(&t.buckets.source, "incoming/oops.csv", "oops\n").await?;
    let alias = std::env::var("ZF_MC_ALIAS")?;
    mc(&["rm", &format!("{alias}/{}/incoming/oops.csv", t.buckets.source)]).await?;
    // The gateway-only variant: a notification for an object that never existed.
    let ghost = json!({"EventName": "s3:ObjectCreated:Put", "Key": format!("{}/incoming/ghost.csv", t.buckets.source),
        "Records": [{"eventVersion": "2.0", "eventSource": "minio:s3", "eventName": "s3:ObjectCreated:Put",
            "s3": {"bucket": {"name": t.buckets.source}, "object": {"key": "incoming%2Fghost.csv", "size": 5,
                "eTag": "00000000000000000000000000000000", "sequencer": "17A0000000000001"}}}]});
    let bearer = format!("Bearer {}", std::env::var("ZF_WEBHOOK_TOKEN")?);
    let url = format!("http://{}/v1/events/s3", std::env::var("ZF_WEBHOOK_ADDR")?);
    let headers = [("Content-Type", "application/json"), ("Authorization", bearer.as_str())];
    let (status, body) = http("POST", &url, &headers, ghost.to_string().as_bytes()).await?;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    t.wait_finished(1, 0, Duration::from_secs(90)).await?;
    eventually("both skipped as gone", TIMEOUT, || async {
        Ok((series(&t, "zeroflow_objects_skipped_total", &skipped(&t, "gone")).await? >= 2.0).then_some(()))
    })
    .await?;
    let ran = std::fs::read_to_string(&runs)?;
    assert_eq!(ran, "incoming/keep.csv\n", "the gone objects never ran");
    let markers = t.markers().await?;
    assert_eq!(markers.keys().cloned().collect::<Vec<_>>(), ["incoming/keep.csv"]);
    assert_eq!(markers["incoming/keep.csv"].outcome, Outcome::Succeeded);
    let status = t.status().await?;
    assert_eq!((status.succeeded, status.failed, status.pending), (1, 0, 0));
    let completions = t.operator.metrics().await?;
    assert!(!completions.contains("outcome=\"retry\""), "no attempt was used on them: {completions}");
    assert!(!events(&t).await?.contains("ObjectsFailed"));
    Ok(())
}
