//! S3 notifications through SQS (issue #15): the leader long-polls the testbed's ElasticMQ
//! (`e2e/testbed up --with sqs`), admits the records and deletes each message after admission.
//! MinIO cannot publish to SQS, so the tests send the messages S3 would send, for objects they
//! uploaded to MinIO (with no MinIO notification configured). Every test binds MinIO's webhook
//! address (the operator's gateway), so they run one at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use serde_json::{Value, json};
use zeroflow_e2e::loop_bed::LoopBed;
use zeroflow_e2e::pipelines::{OperatorExtras, WEBHOOK, upload};
use zeroflow_e2e::sqs::Sqs;
use zeroflow_e2e::{TIMEOUT, eventually, store_config};
use zeroflow_operator::store::bucket_client;

/// Seconds a received message stays invisible: short, so that a message held by a killed
/// operator comes back soon.
const VISIBILITY_SECONDS: u64 = 4;

fn unique(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// Operator flags and credentials to consume `queue_url`.
fn consume(queue_url: &str) -> anyhow::Result<OperatorExtras> {
    let var = |name: &str| zeroflow_e2e::service_env("sqs", name);
    Ok(OperatorExtras {
        flags: vec![
            "--sqs-queue-url".into(),
            queue_url.into(),
            "--sqs-region".into(),
            var("ZF_SQS_REGION")?,
            "--sqs-wait-seconds".into(),
            "20".into(),
        ],
        env: vec![
            ("ZEROFLOW_SQS_ACCESS_KEY_ID".into(), var("ZF_SQS_ACCESS_KEY")?),
            ("ZEROFLOW_SQS_SECRET_ACCESS_KEY".into(), var("ZF_SQS_SECRET_KEY")?),
        ],
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

/// Uploads `key` to the source bucket and returns the S3 notification S3 would send to a queue
/// for it (AWS's shape: `aws:s3`, no `s3:` prefix, the key form-encoded, the real ETag).
async fn put_object(t: &LoopBed, key: &str) -> anyhow::Result<String> {
    upload(&t.buckets.source, key, &format!("object {key}\n")).await?;
    let source = bucket_client(&store_config()?, &t.buckets.source)?;
    let meta = source.head(&Path::parse(key)?).await?;
    let encoded: String = form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>().replace("%2F", "/");
    Ok(json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-27T10:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "zeroflow",
               "bucket": {"name": t.buckets.source, "arn": format!("arn:aws:s3:::{}", t.buckets.source)},
               "object": {"key": encoded, "size": meta.size,
                          "eTag": meta.e_tag.unwrap_or_default().trim_matches('"'), "sequencer": "0055AED6DCD90281E5"}}
    }]})
    .to_string())
}

/// Keys the transform ran for, with how many times.
fn runs_per_key(log: &std::path::Path) -> BTreeMap<String, usize> {
    let mut runs = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *runs.entry(line.to_owned()).or_default() += 1;
    }
    runs
}

/// (visible, in flight) messages of the queue.
async fn queue_depth(sqs: &Sqs, queue: &str) -> anyhow::Result<(u64, u64)> {
    let names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"];
    let answer = sqs.call("GetQueueAttributes", json!({"QueueUrl": queue, "AttributeNames": names})).await?;
    let count = |name: &str| -> anyhow::Result<u64> {
        Ok(answer["Attributes"][name].as_str().with_context(|| format!("no {name}: {answer}"))?.parse()?)
    };
    Ok((count(names[0])?, count(names[1])?))
}

async fn wait_drained(sqs: &Sqs, queue: &str) -> anyhow::Result<()> {
    eventually("the queue drained", TIMEOUT, || async { Ok((queue_depth(sqs, queue).await? == (0, 0)).then_some(())) })
        .await
}

/// `zeroflow_events_received_total{source="sqs", outcome}` of the bed's current operator.
async fn sqs_events(t: &LoopBed, outcome: &str) -> anyhow::Result<f64> {
    let name = format!("zeroflow_events_received_total{{outcome=\"{outcome}\",source=\"sqs\"}}");
    Ok(t.metric(&name).await.unwrap_or(0.0))
}

#[tokio::test]
async fn objects_notified_through_a_fifo_queue_run_once_each_behind_a_poison_message() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let sqs = Sqs::from_env()?;
    // A FIFO queue with one message group: a message left undeleted holds back every message
    // after it, so the poison message first proves that it does not block.
    let queue = sqs
        .create_queue(
            &format!("{}.fifo", unique("zf-src")),
            json!({"FifoQueue": "true", "VisibilityTimeout": VISIBILITY_SECONDS.to_string()}),
        )
        .await?;
    let runs = std::env::temp_dir().join(format!("zf-sqs-fifo-runs-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&runs);
    let t = LoopBed::start_fed_by("sqsfifo", "viaqueue", pipeline_spec(&runs), consume(&queue)?).await?;

    let mut sequence = 0u32;
    let mut send = |body: String| {
        sequence += 1;
        let request = json!({"QueueUrl": queue, "MessageBody": body, "MessageGroupId": "bucket",
                             "MessageDeduplicationId": sequence.to_string()});
        sqs.call("SendMessage", request)
    };
    send("this is not an S3 notification".into()).await?;
    send(json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": t.buckets.source}).to_string()).await?;
    let keys: Vec<String> = (0..6).map(|i| format!("batch/o {i}.txt")).collect();
    let mut first = None;
    for key in &keys {
        let message = put_object(&t, key).await?;
        first.get_or_insert_with(|| message.clone());
        send(message).await?;
    }
    // S3 delivers at least once: the first notification again.
    send(first.context("no object")?).await?;

    t.wait_finished(keys.len() as i64, 0, Duration::from_secs(120)).await?;
    wait_drained(&sqs, &queue).await?;
    let runs = runs_per_key(&runs);
    let expected: BTreeMap<String, usize> = keys.iter().map(|k| (k.clone(), 1)).collect();
    assert_eq!(runs, expected, "every object ran exactly once");
    assert_eq!(t.markers().await?.len(), keys.len());
    for key in &keys {
        assert_eq!(t.read_sink(&format!("out/{key}/upper.txt")).await?, format!("OBJECT {}\n", key.to_uppercase()));
    }
    // Seven records went through SQS: six new objects and the notification delivered twice
    // (accepted or duplicate: the start-up resync, running while the test uploads, may list an
    // object first).
    let counts = (
        sqs_events(&t, "accepted").await? + sqs_events(&t, "duplicate").await?,
        sqs_events(&t, "ignored").await?,
        sqs_events(&t, "rejected").await?,
    );
    assert_eq!(counts, (7.0, 1.0, 1.0), "(accepted + duplicate, ignored, rejected) through SQS");
    assert!(sqs_events(&t, "duplicate").await? >= 1.0, "the second delivery is a duplicate");
    Ok(())
}

#[tokio::test]
async fn messages_an_operator_held_when_it_was_killed_are_processed_by_the_next() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let sqs = Sqs::from_env()?;
    let queue =
        sqs.create_queue(&unique("zf-src"), json!({"VisibilityTimeout": VISIBILITY_SECONDS.to_string()})).await?;
    let runs = std::env::temp_dir().join(format!("zf-sqs-kill-runs-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&runs);
    let mut t = LoopBed::start_fed_by("sqskill", "viaqueue", pipeline_spec(&runs), consume(&queue)?).await?;
    eventually("the consumer polling", TIMEOUT, || async {
        let polls = t.metric("zeroflow_source_polls_total{outcome=\"empty\",source=\"sqs\"}").await.unwrap_or(0.0);
        let log = std::fs::read_to_string(&t.operator.log).unwrap_or_default();
        Ok((polls > 0.0 || log.contains("consuming S3 notifications from SQS")).then_some(()))
    })
    .await?;

    // Freeze the operator inside its long poll, send the messages: SQS hands them to the frozen
    // poll, so they are in flight, held by an operator that will never delete them.
    let pid = t.operator.child.id().context("operator exited")?.to_string();
    let stopped = tokio::process::Command::new("kill").args(["-STOP", &pid]).status().await?;
    anyhow::ensure!(stopped.success(), "kill -STOP {pid}");
    let keys: Vec<String> = (0..5).map(|i| format!("held/o{i}.txt")).collect();
    let mut entries = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        entries.push(json!({"Id": i.to_string(), "MessageBody": put_object(&t, key).await?}));
    }
    // One batch, so that the frozen poll (up to 10 messages) takes them all at once.
    sqs.call("SendMessageBatch", json!({"QueueUrl": queue, "Entries": entries})).await?;
    let held = eventually("the messages in flight", Duration::from_secs(10), || async {
        let depth = queue_depth(&sqs, &queue).await?;
        Ok((depth.1 > 0).then_some(depth))
    })
    .await?;
    println!("(visible, in flight) when the operator is killed: {held:?}");
    t.operator.kill().await?;
    assert_eq!(runs_per_key(&runs), BTreeMap::new(), "nothing ran before the kill");

    let next = t.standby("next").await?;
    next.wait_ready(TIMEOUT).await?;
    t.operator = next;
    t.wait_finished(keys.len() as i64, 0, Duration::from_secs(120)).await?;
    // The queue empties only once the held messages came back and the new leader deleted them,
    // which it does after admitting their records.
    wait_drained(&sqs, &queue).await?;
    let expected: BTreeMap<String, usize> = keys.iter().map(|k| (k.clone(), 1)).collect();
    assert_eq!(runs_per_key(&runs), expected, "every object ran exactly once");
    let through_sqs = sqs_events(&t, "accepted").await? + sqs_events(&t, "duplicate").await?;
    // Accepted when the messages came back first; duplicates of the start-up resync's otherwise.
    assert!(through_sqs >= held.1 as f64, "{through_sqs} records admitted through SQS, {} were in flight", held.1);
    Ok(())
}
