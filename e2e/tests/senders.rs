//! What storage systems really send, end to end on the testbed: the real operator, the real
//! MinIO, runner processes in the worker pods' place.
//!
//! - Case 01: MinIO announces tag changes as `s3:ObjectCreated:PutTagging`/`DeleteTagging`
//!   under the `put` subscription the README recommends. A tag set on a processed object must
//!   not wake the pipeline at zero nor run the transform again, even after the operator
//!   restarted (its in-memory memory of finished objects gone).
//! - Case 03: Ceph RGW sends keys raw. Its payload, posted to the gateway the way Ceph's HTTP
//!   endpoint can (the token in the path, no headers), for objects that exist under exactly
//!   those raw names: both processed, none failed.
//!
//! Every test binds MinIO's webhook address, so they run one at a time behind a lock.

use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use object_store::ObjectStore as _;
use object_store::path::Path;
use serde_json::json;
use zeroflow_core::ledger::Outcome;
use zeroflow_e2e::loop_bed::LoopBed;
use zeroflow_e2e::pipelines::{WEBHOOK, upload};
use zeroflow_e2e::{TIMEOUT, eventually, mc};

/// Copies the input to `copy` in the output directory: one output per object.
fn copy_transform(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "scaling": {"maxReplicas": 1, "idleTimeout": "3s", "scaleDownStabilization": "1s"},
        "transform": {"image": "example.org/t:1", "contract": "exec",
                      "command": ["sh", "-c", r#"cp "$ZEROFLOW_INPUT" "$ZEROFLOW_OUTPUT_DIR/copy""#]}
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    spec
}

/// Every object under `out/` in the sink, sorted.
async fn outputs(t: &LoopBed) -> anyhow::Result<Vec<String>> {
    let listed: Vec<_> = t.sink()?.list(Some(&Path::parse("out")?)).try_collect().await?;
    let mut keys: Vec<String> = listed.into_iter().map(|m| m.location.to_string()).collect();
    keys.sort();
    Ok(keys)
}

/// The sum of one counter's series whose labels include all of `labels`.
async fn counter(t: &LoopBed, name: &str, labels: &[&str]) -> anyhow::Result<f64> {
    let text = t.operator.metrics().await?;
    let mut sum = 0.0;
    let series = |l: &&str| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '));
    for line in text.lines().filter(series) {
        if labels.iter().all(|l| line.contains(l)) {
            sum += line.rsplit(' ').next().unwrap_or_default().parse::<f64>()?;
        }
    }
    Ok(sum)
}

#[tokio::test]
async fn tag_changes_on_a_processed_object_never_wake_the_pipeline() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let mut t = LoopBed::start("tags", "p1", copy_transform(json!({}))).await?;
    let alias = std::env::var("ZF_MC_ALIAS")?;
    let object = format!("{alias}/{}/incoming/report.csv", t.buckets.source);
    upload(&t.buckets.source, "incoming/report.csv", "a,b\n1,2\n").await?;
    t.wait_finished(1, 0, Duration::from_secs(120)).await?;
    eventually("back at zero", TIMEOUT, || async { Ok((t.replicas().await? == 0).then_some(())) }).await?;
    assert_eq!(outputs(&t).await?, ["out/incoming/report.csv/copy"]);

    // A new leader knows nothing of what finished: only the event's kind keeps it from work.
    t.operator.kill().await?;
    t.operator = t.standby("again").await?;
    t.operator.wait_ready(TIMEOUT).await?;

    mc(&["tag", "set", &object, "reviewed=yes"]).await?;
    mc(&["tag", "remove", &object]).await?;
    // MinIO really sends both (PutTagging, DeleteTagging) through its queued webhook target; the
    // gateway counts them as metadata.
    eventually("MinIO's two tag events reached the gateway", Duration::from_secs(60), || async {
        let metadata = counter(&t, "zeroflow_events_received_total", &[r#"outcome="metadata""#]).await?;
        Ok((metadata >= 2.0).then_some(metadata))
    })
    .await?;

    // For 30 s: no worker, no second run, still one output and one ledger marker.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut samples = 0;
    while tokio::time::Instant::now() < deadline {
        let replicas = t.replicas().await?;
        assert_eq!(replicas, 0, "a tag change woke the pipeline (sample {samples})");
        samples += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = t.status().await?;
    assert_eq!((status.succeeded, status.failed, status.pending, status.in_flight), (1, 0, 0, 0), "{status:?}");
    assert_eq!(outputs(&t).await?, ["out/incoming/report.csv/copy"]);
    let markers = t.markers().await?;
    assert_eq!(markers.keys().collect::<Vec<_>>(), ["incoming/report.csv"]);
    assert_eq!(counter(&t, "zeroflow_events_received_total", &[r#"outcome="accepted""#]).await?, 0.0);
    assert_eq!(t.workers().started().len(), 1, "one worker pod ever ran: {:?}", t.workers().started());
    eprintln!("{samples} replica samples over 30 s, all 0");
    Ok(())
}

#[tokio::test]
async fn cephs_raw_keys_posted_with_the_token_in_the_path_are_processed() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    // Only the Ceph payload announces the objects: no MinIO notification, no resync meanwhile.
    let spec = copy_transform(json!({"source": {"resyncInterval": "1h"}}));
    let t = LoopBed::start("ceph", "p1", spec).await?;
    let alias = std::env::var("ZF_MC_ALIAS")?;
    mc(&["event", "rm", &format!("{alias}/{}", t.buckets.source), "--force"]).await?;
    // The start-up resync pass has listed the (empty) bucket; the next is an hour away.
    eventually("the first resync pass", TIMEOUT, || async {
        let passes = counter(&t, "zeroflow_resync_duration_seconds_count", &[]).await?;
        Ok((passes >= 1.0).then_some(()))
    })
    .await?;

    let keys = ["incoming/Q1 report+final.csv", "incoming/100%.csv"];
    let mut etags = Vec::new();
    for key in keys {
        upload(&t.buckets.source, key, "hello ceph\n").await?;
        let stat = mc(&["stat", "--json", &format!("{alias}/{}/{key}", t.buckets.source)]).await?;
        let stat: serde_json::Value = serde_json::from_str(&stat).with_context(|| format!("mc stat: {stat}"))?;
        etags.push(stat["etag"].as_str().context("etag")?.trim_matches('"').to_owned());
    }
    // Nothing announced them yet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(t.status().await?.pending, 0);

    // Case 03's payload, with this test's bucket and the objects' real etags.
    let payload = include_str!("../../crates/core/testdata/events/case03-ceph-raw-keys.json")
        .replace("\"in-bucket\"", &format!("\"{}\"", t.buckets.source))
        .replace("arn:aws:s3:::in-bucket", &format!("arn:aws:s3:::{}", t.buckets.source))
        .replace("0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f", &etags[0])
        .replace("1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e", &etags[1]);
    let webhook = std::env::var("ZF_WEBHOOK_ADDR")?;
    let token = std::env::var("ZF_WEBHOOK_TOKEN")?;
    let url = format!("http://{webhook}/v1/events/s3/t/{token}");
    let (status, body) =
        zeroflow_e2e::http("POST", &url, &[("Content-Type", "application/json")], payload.as_bytes()).await?;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(summary["accepted"], 2, "{summary}");

    t.wait_finished(2, 0, Duration::from_secs(120)).await?;
    let markers = t.markers().await?;
    assert_eq!(
        markers.keys().map(String::as_str).collect::<Vec<_>>(),
        ["incoming/100%.csv", "incoming/Q1 report+final.csv"]
    );
    for (key, etag) in keys.iter().zip(&etags) {
        let marker = &markers[*key];
        assert_eq!(marker.outcome, Outcome::Succeeded, "{key}");
        assert_eq!(marker.source.etag.as_deref(), Some(etag.as_str()), "{key}");
        assert_eq!(t.read_sink(&format!("out/{key}/copy")).await?, "hello ceph\n", "{key}");
    }
    let status = t.status().await?;
    assert_eq!(status.failed, 0, "{status:?}");
    Ok(())
}
