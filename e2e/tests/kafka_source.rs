//! MinIO -> Kafka -> zeroflow (issue #16): MinIO publishes the bucket's notifications to the
//! testbed's Kafka (`e2e/testbed up --with kafka`, the queue-dir target), the leader consumes the
//! topic in its own consumer group and commits offsets past admitted records. Every test binds
//! MinIO's webhook address (the operator's gateway), so they run one at a time; the topic is
//! shared with other tests, whose records are unrouted here.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use zeroflow_e2e::loop_bed::LoopBed;
use zeroflow_e2e::pipelines::{OperatorExtras, WEBHOOK, upload};
use zeroflow_e2e::{TIMEOUT, eventually, mc, service_env};

fn unique(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// Operator flags to consume the testbed's topic in consumer group `group`.
fn consume(group: &str) -> anyhow::Result<OperatorExtras> {
    Ok(OperatorExtras {
        flags: vec![
            "--kafka-brokers".into(),
            service_env("kafka", "ZF_KAFKA_BROKERS")?,
            "--kafka-topic".into(),
            service_env("kafka", "ZF_KAFKA_TOPIC")?,
            "--kafka-group-id".into(),
            group.into(),
        ],
        env: vec![],
    })
}

/// A transform that logs every run (`<key>` per line) and upper-cases the object.
fn pipeline_spec(runs: &std::path::Path) -> Value {
    let script = format!(
        "echo \"$ZEROFLOW_KEY\" >> {log}; tr a-z A-Z < \"$ZEROFLOW_INPUT\" > \"$ZEROFLOW_OUTPUT_DIR/upper.txt\"",
        log = runs.display()
    );
    json!({
        "scaling": {"maxReplicas": 2, "targetPerReplica": 4, "concurrencyPerReplica": 2,
                    "idleTimeout": "3s", "scaleDownStabilization": "1s"},
        "transform": {"image": "example.org/t:1", "command": ["sh", "-c", script], "contract": "exec"}
    })
}

/// Binds the source bucket to the testbed's Kafka target (with a queue dir) for puts.
async fn notify_kafka(t: &LoopBed) -> anyhow::Result<()> {
    let alias = std::env::var("ZF_MC_ALIAS")?;
    let arn = service_env("kafka", "ZF_KAFKA_ARN")?;
    let target = format!("{alias}/{}", t.buckets.source);
    eventually("mc event add", TIMEOUT, || async {
        Ok(mc(&["event", "add", &target, &arn, "--event", "put"]).await.ok())
    })
    .await
    .map(drop)
}

fn runs_per_key(log: &std::path::Path) -> BTreeMap<String, usize> {
    let mut runs = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *runs.entry(line.to_owned()).or_default() += 1;
    }
    runs
}

async fn kafka_events(t: &LoopBed, outcome: &str) -> anyhow::Result<f64> {
    let name = format!("zeroflow_events_received_total{{outcome=\"{outcome}\",source=\"kafka\"}}");
    Ok(t.metric(&name).await.unwrap_or(0.0))
}

#[tokio::test]
async fn minio_to_kafka_to_zeroflow_runs_every_object_once_across_a_sigkill() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let runs = std::env::temp_dir().join(format!("zf-kafka-runs-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&runs);
    let group = unique("zf-kafka");
    let mut t = LoopBed::start_fed_by("kafka", "viakafka", pipeline_spec(&runs), consume(&group)?).await?;
    notify_kafka(&t).await?;

    // First half: consumed and committed by the first operator.
    let keys: Vec<String> = (0..10).map(|i| format!("stream/o{i}.txt")).collect();
    for key in &keys[..5] {
        upload(&t.buckets.source, key, &format!("object {key}\n")).await?;
    }
    eventually("the first half done", TIMEOUT, || async { Ok((t.status().await?.succeeded == 5).then_some(())) })
        .await?;
    // Every record of the first half consumed (accepted, or a duplicate when the start-up
    // resync, which runs while the test uploads, listed the object first).
    let through_kafka =
        || async { anyhow::Ok(kafka_events(&t, "accepted").await? + kafka_events(&t, "duplicate").await?) };
    let before = eventually("the first half consumed", TIMEOUT, || async {
        let n = through_kafka().await?;
        Ok((n >= 5.0).then_some(n))
    })
    .await?;
    // Offsets are committed once a second: let the last commit happen before the kill.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The leader dies; the second half is published while no one consumes.
    t.operator.kill().await?;
    for key in &keys[5..] {
        upload(&t.buckets.source, key, &format!("object {key}\n")).await?;
    }
    let next = t.standby("next").await?;
    next.wait_ready(TIMEOUT).await?;
    t.operator = next;
    t.wait_finished(keys.len() as i64, 0, Duration::from_secs(180)).await?;
    let expected: BTreeMap<String, usize> = keys.iter().map(|k| (k.clone(), 1)).collect();
    assert_eq!(runs_per_key(&runs), expected, "every object ran exactly once");
    for key in &keys {
        assert_eq!(t.read_sink(&format!("out/{key}/upper.txt")).await?, format!("OBJECT {}\n", key.to_uppercase()));
    }
    // The new leader resumed from the committed offsets: exactly the second half reached it
    // through Kafka (accepted, or a duplicate when its start-up resync listed the object
    // first), and nothing of the first half, committed seconds before the kill, was re-read.
    let (accepted, duplicate) = (kafka_events(&t, "accepted").await?, kafka_events(&t, "duplicate").await?);
    println!("first leader: {before} records through Kafka; the next: {accepted} accepted, {duplicate} duplicates");
    assert_eq!(before, 5.0, "the first leader consumed each record of the first half once");
    assert_eq!(accepted + duplicate, 5.0, "the new leader consumed the second half, and only it");
    Ok(())
}
