//! S3 notifications through SQS (issue #15): the leader long-polls the testbed's ElasticMQ
//! (`e2e/testbed up --with sqs`), admits the records and deletes each message after admission,
//! for the operator's own queues (flags) and for the queues pipelines name
//! (`spec.source.events.sqs`).
//! MinIO cannot publish to SQS, so the tests send the messages S3 would send, for objects they
//! uploaded to MinIO (with no MinIO notification configured). Every test binds MinIO's webhook
//! address (the operator's gateway), so they run one at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use serde_json::{Value, json};
use zeroflow_e2e::loop_bed::LoopBed;
use zeroflow_e2e::moto::{Keys, Moto, form, xml_text};
use zeroflow_e2e::pipelines::{Buckets, OperatorExtras, WEBHOOK, upload};
use zeroflow_e2e::sqs::Sqs;
use zeroflow_e2e::workers::HostWorkers;
use zeroflow_e2e::{TIMEOUT, TestNamespace, eventually, store_config};
use zeroflow_operator::api::{DataPipeline, QueueStatus};
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
    put_object_in(&t.buckets.source, key).await
}

/// Like [`put_object`], in any bucket of the testbed's MinIO.
async fn put_object_in(bucket: &str, key: &str) -> anyhow::Result<String> {
    upload(bucket, key, &format!("object {key}\n")).await?;
    let source = bucket_client(&store_config()?, bucket)?;
    let meta = source.head(&Path::parse(key)?).await?;
    let encoded: String = form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>().replace("%2F", "/");
    Ok(json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-27T10:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "zeroflow",
               "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
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

/// `status.queue` of pipeline `name` once its reason is `reason`.
async fn wait_queue_reason(pipelines: &Api<DataPipeline>, name: &str, reason: &str) -> anyhow::Result<QueueStatus> {
    let result = eventually(&format!("status.queue of {name} is {reason}"), TIMEOUT, || async {
        let queue = pipelines.get(name).await?.status.unwrap_or_default().queue;
        Ok(queue.filter(|q| q.reason == reason))
    })
    .await;
    match result {
        Ok(queue) => Ok(queue),
        Err(e) => {
            let status = pipelines.get(name).await.ok().and_then(|p| p.status);
            anyhow::bail!("{e:#}\nstatus of {name}: {status:?}")
        }
    }
}

/// Teams' own queues (`spec.source.events.sqs`): two namespaces, each with a pipeline on its own
/// bucket reading its own queue (one through a Secret, one through the operator's own AWS
/// identity, here the chain's environment keys), served by one operator that watches both.
/// Every object notified through either queue runs once; a message on A's queue naming B's
/// bucket is not admitted into B; a pipeline naming a queue that does not exist says so in
/// `status.queue`; the operator killed while both queues have messages in flight loses none.
#[tokio::test]
async fn pipelines_of_two_namespaces_consume_their_own_queues() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let sqs = Sqs::from_env()?;
    let var = |name: &str| zeroflow_e2e::service_env("sqs", name);
    let visibility = json!({"VisibilityTimeout": VISIBILITY_SECONDS.to_string()});
    let (queue_a, queue_b) = (
        sqs.create_queue(&unique("zf-team-a"), visibility.clone()).await?,
        sqs.create_queue(&unique("zf-team-b"), visibility).await?,
    );
    let client = zeroflow_e2e::client().await?;

    // Team B: its namespace, buckets, SQS keys in a Secret, and two pipelines: one on its queue,
    // one on a queue that does not exist. B's pipeline lists its bucket only at start and only
    // for objects newer than itself, so the object put there before it (named later in a message
    // on A's queue) can reach it only through that message.
    let ns_b = TestNamespace::create(&client, "zf-sqsb").await?;
    let buckets_b = Buckets::create(&client, &ns_b, "sqsb").await?;
    let cross_key = "cross/b-object.txt";
    let cross_message = put_object_in(&buckets_b.source, cross_key).await?;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creation times have whole seconds
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "sqs"}, "stringData": {
        "accessKeyId": var("ZF_SQS_ACCESS_KEY")?, "secretAccessKey": var("ZF_SQS_SECRET_KEY")?}}))?;
    Api::<Secret>::namespaced(client.clone(), &ns_b.name).create(&PostParams::default(), &secret).await?;
    let runs_b = std::env::temp_dir().join(format!("zf-sqs-team-b-runs-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&runs_b);
    let mut spec_b = pipeline_spec(&runs_b);
    spec_b["sink"] = json!({"prefix": "out/"});
    spec_b["source"] = json!({"resyncInterval": "0s", "backfill": false,
                              "events": {"sqs": {"queueUrl": queue_b, "credentialsSecretRef": {"name": "sqs"}}}});
    let pipelines_b: Api<DataPipeline> = Api::namespaced(client.clone(), &ns_b.name);
    pipelines_b.create(&PostParams::default(), &buckets_b.pipeline("viaqueue", "", spec_b)?).await?;
    let missing_url =
        format!("{}/{}/{}", var("ZF_SQS_ENDPOINT")?, var("ZF_SQS_ACCOUNT_ID")?, unique("zf-no-such-queue"));
    let spec_missing =
        json!({"source": {"events": {"sqs": {"queueUrl": missing_url, "credentialsSecretRef": {"name": "sqs"}}}}});
    pipelines_b.create(&PostParams::default(), &buckets_b.pipeline("missing", "never/", spec_missing)?).await?;
    let _workers_b = HostWorkers::start(client.clone(), &ns_b.name, "viaqueue")?;

    // Team A: no Secret; the operator's identity is the chain's first step, keys in its
    // environment. The operator watches both namespaces.
    let runs_a = std::env::temp_dir().join(format!("zf-sqs-team-a-runs-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&runs_a);
    let mut spec_a = pipeline_spec(&runs_a);
    spec_a["source"] = json!({"events": {"sqs": {"queueUrl": queue_a}}});
    let extras = OperatorExtras {
        flags: vec!["--namespaces".into(), ns_b.name.clone()],
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), var("ZF_SQS_ACCESS_KEY")?),
            ("AWS_SECRET_ACCESS_KEY".into(), var("ZF_SQS_SECRET_KEY")?),
        ],
    };
    let mut t = LoopBed::start_fed_by("sqsa", "viaqueue", spec_a, extras).await?;

    for (pipelines, name) in [(&t.pipelines, "viaqueue"), (&pipelines_b, "viaqueue")] {
        let queue = wait_queue_reason(pipelines, name, "Consuming").await?;
        assert!(queue.consuming, "{queue:?}");
    }
    let missing = wait_queue_reason(&pipelines_b, "missing", "QueueNotFound").await?;
    assert_eq!((missing.queue_url.as_str(), missing.consuming), (missing_url.as_str(), false));
    println!("status.queue of a pipeline naming a missing queue: {missing:?}");

    // Each team's objects through its own queue; on A's queue also B's object.
    let keys: Vec<String> = (0..4).map(|i| format!("batch/o {i}.txt")).collect();
    for key in &keys {
        sqs.send(&queue_a, &put_object(&t, key).await?).await?;
        sqs.send(&queue_b, &put_object_in(&buckets_b.source, key).await?).await?;
    }
    sqs.send(&queue_a, &cross_message).await?;
    let status_b = || async { Ok::<_, anyhow::Error>(pipelines_b.get("viaqueue").await?.status.unwrap_or_default()) };
    t.wait_finished(keys.len() as i64, 0, Duration::from_secs(120)).await?;
    eventually("team B's objects finished", Duration::from_secs(120), || async {
        let s = status_b().await?;
        Ok((s.succeeded == keys.len() as i64 && s.in_flight == 0 && s.pending == 0).then_some(()))
    })
    .await?;
    wait_drained(&sqs, &queue_a).await?;
    wait_drained(&sqs, &queue_b).await?;
    let expected: BTreeMap<String, usize> = keys.iter().map(|k| (k.clone(), 1)).collect();
    assert_eq!(runs_per_key(&runs_a), expected, "team A: every object ran once");
    assert_eq!(runs_per_key(&runs_b), expected, "team B: every object ran once, and not {cross_key}");
    assert_eq!(sqs_events(&t, "not_permitted").await?, 1.0, "B's object named on A's queue: not admitted into B");

    // Freeze the operator inside its long polls, fill both queues: the frozen polls take the
    // messages, which are then in flight, held by an operator that is killed.
    let held_keys: Vec<String> = (0..4).map(|i| format!("held/o{i}.txt")).collect();
    let pid = t.operator.child.id().context("operator exited")?.to_string();
    let stopped = tokio::process::Command::new("kill").args(["-STOP", &pid]).status().await?;
    anyhow::ensure!(stopped.success(), "kill -STOP {pid}");
    let (mut entries_a, mut entries_b) = (Vec::new(), Vec::new());
    for (i, key) in held_keys.iter().enumerate() {
        entries_a.push(json!({"Id": i.to_string(), "MessageBody": put_object(&t, key).await?}));
        entries_b.push(json!({"Id": i.to_string(), "MessageBody": put_object_in(&buckets_b.source, key).await?}));
    }
    sqs.call("SendMessageBatch", json!({"QueueUrl": queue_a, "Entries": entries_a})).await?;
    sqs.call("SendMessageBatch", json!({"QueueUrl": queue_b, "Entries": entries_b})).await?;
    for queue in [&queue_a, &queue_b] {
        let held = eventually("the messages in flight", Duration::from_secs(10), || async {
            let depth = queue_depth(&sqs, queue).await?;
            Ok((depth.1 > 0).then_some(depth))
        })
        .await?;
        println!("(visible, in flight) of {queue} when the operator is killed: {held:?}");
    }
    t.operator.kill().await?;
    let next = t.standby("next").await?;
    next.wait_ready(TIMEOUT).await?;
    t.operator = next;
    let all = keys.len() + held_keys.len();
    t.wait_finished(all as i64, 0, Duration::from_secs(120)).await?;
    eventually("team B's held objects finished", Duration::from_secs(120), || async {
        let s = status_b().await?;
        Ok((s.succeeded == all as i64 && s.in_flight == 0 && s.pending == 0).then_some(()))
    })
    .await?;
    wait_drained(&sqs, &queue_a).await?;
    wait_drained(&sqs, &queue_b).await?;
    let expected: BTreeMap<String, usize> = keys.iter().chain(&held_keys).map(|k| (k.clone(), 1)).collect();
    assert_eq!(runs_per_key(&runs_a), expected, "team A: every object ran once across the kill");
    assert_eq!(runs_per_key(&runs_b), expected, "team B: every object ran once across the kill");

    // A pipeline that stops naming its queue loses its consumer and its status.queue.
    let patch = json!({"spec": {"source": {"events": null}}});
    pipelines_b.patch("missing", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    eventually("status.queue removed", TIMEOUT, || async {
        Ok(pipelines_b.get("missing").await?.status.unwrap_or_default().queue.is_none().then_some(()))
    })
    .await?;
    Ok(())
}

/// A pipeline's own queue read without a Secret, against an SQS that verifies signatures: moto
/// with IAM auth on. The operator's identity is the chain's first step with temporary keys of a
/// role (access key, secret and session token, as STS issues them to IRSA and EKS Pod Identity),
/// obtained from moto's STS by a verified `AssumeRole`. moto checks every request's signature,
/// its session token and the role's policy (the one docs/sources/sqs.md gives a team); unsigned
/// and wrongly signed requests are refused (checked here); objects notified through the queue
/// (sent by a user of its own, signed) run once and their messages are deleted. The web identity
/// exchange itself is not part of this test: moto serves object_store's form of it
/// (`AssumeRoleWithWebIdentity` in the query string, unsigned) as an S3 `ListBuckets`; it is
/// proven against MinIO's STS by tests/stores.rs.
#[tokio::test]
async fn a_pipeline_without_a_secret_reads_its_queue_with_temporary_role_credentials_moto_verifies()
-> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    // The free requests: the six set-up calls below. Every request after them is verified.
    let moto = Moto::start(6).await?;
    let setup = Keys { access_key_id: "AKIASETUPSETUPSETUP1".into(), secret_access_key: "setup".into() };
    let trust = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/testbed"},
         "Action": "sts:AssumeRoleWithWebIdentity"},
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:user/sender"}, "Action": "sts:AssumeRole"}]});
    let created = moto
        .ok(
            "iam",
            Some(&setup),
            None,
            &form(&[
                ("Action", "CreateRole"),
                ("Version", "2010-05-08"),
                ("RoleName", "zeroflow"),
                ("AssumeRolePolicyDocument", &trust.to_string()),
            ]),
        )
        .await?;
    let role_arn = xml_text(&created, "Arn").context("CreateRole without Arn")?;
    // The policy docs/sources/sqs.md gives a team, plus sqs:DeleteMessageBatch: AWS authorizes
    // a batch call with its single action's permission (sqs:DeleteMessage), moto with the batch
    // action's own name.
    let policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:DeleteMessageBatch"], "Resource": "*"}]});
    moto.ok(
        "iam",
        Some(&setup),
        None,
        &form(&[
            ("Action", "PutRolePolicy"),
            ("Version", "2010-05-08"),
            ("RoleName", "zeroflow"),
            ("PolicyName", "queue"),
            ("PolicyDocument", &policy.to_string()),
        ]),
    )
    .await?;
    let queue = moto
        .ok(
            "sqs",
            Some(&setup),
            Some("AmazonSQS.CreateQueue"),
            &json!({"QueueName": "zf-verified", "Attributes": {"VisibilityTimeout": "4"}}).to_string(),
        )
        .await?;
    let queue_url: Value = serde_json::from_str(&queue)?;
    let queue_url = queue_url["QueueUrl"].as_str().context("CreateQueue without QueueUrl")?.to_owned();
    let sender_policy = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Action": ["sqs:SendMessage", "sts:AssumeRole"], "Resource": "*"}]});
    moto.ok(
        "iam",
        Some(&setup),
        None,
        &form(&[("Action", "CreateUser"), ("Version", "2010-05-08"), ("UserName", "sender")]),
    )
    .await?;
    moto.ok(
        "iam",
        Some(&setup),
        None,
        &form(&[
            ("Action", "PutUserPolicy"),
            ("Version", "2010-05-08"),
            ("UserName", "sender"),
            ("PolicyName", "send"),
            ("PolicyDocument", &sender_policy.to_string()),
        ]),
    )
    .await?;
    let key = moto
        .ok(
            "iam",
            Some(&setup),
            None,
            &form(&[("Action", "CreateAccessKey"), ("Version", "2010-05-08"), ("UserName", "sender")]),
        )
        .await?;
    let sender = Keys {
        access_key_id: xml_text(&key, "AccessKeyId").context("no AccessKeyId")?,
        secret_access_key: xml_text(&key, "SecretAccessKey").context("no SecretAccessKey")?,
    };

    // The role's temporary credentials, from a signed (verified) AssumeRole.
    let assumed = moto
        .ok(
            "sts",
            Some(&sender),
            None,
            &form(&[
                ("Action", "AssumeRole"),
                ("Version", "2011-06-15"),
                ("RoleArn", &role_arn),
                ("RoleSessionName", "zeroflow-e2e"),
            ]),
        )
        .await?;
    let (key_id, secret, session) = (
        xml_text(&assumed, "AccessKeyId").context("no AccessKeyId")?,
        xml_text(&assumed, "SecretAccessKey").context("no SecretAccessKey")?,
        xml_text(&assumed, "SessionToken").context("no SessionToken")?,
    );
    let extras = OperatorExtras {
        flags: vec![],
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), key_id),
            ("AWS_SECRET_ACCESS_KEY".into(), secret),
            ("AWS_SESSION_TOKEN".into(), session),
            ("SSL_CERT_FILE".into(), moto.ca.clone()),
        ],
    };
    let runs = std::env::temp_dir().join(format!("zf-sqs-irsa-runs-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&runs);
    let mut spec = pipeline_spec(&runs);
    spec["source"] = json!({"events": {"sqs": {"queueUrl": queue_url}}});
    let t = LoopBed::start_fed_by("sqsirsa", "viaqueue", spec, extras).await?;
    let consuming = wait_queue_reason(&t.pipelines, "viaqueue", "Consuming").await;
    if let Err(e) = consuming {
        anyhow::bail!("{e:#}\noperator log:\n{}\nmoto log:\n{}", t.operator.log_tail(), moto.log());
    }
    let log = std::fs::read_to_string(&t.operator.log)?;
    assert!(log.contains("AWS: environment keys"), "the operator's identity is the chain's");

    // moto's auth is on: unsigned, and signed with a wrong secret, the same receive is refused.
    let receive = json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 1}).to_string();
    let (unsigned, _) = moto.call("sqs", None, Some("AmazonSQS.ReceiveMessage"), &receive).await?;
    let forged = Keys { secret_access_key: format!("{}x", sender.secret_access_key), ..sender.clone() };
    let (wrong, answer) = moto.call("sqs", Some(&forged), Some("AmazonSQS.ReceiveMessage"), &receive).await?;
    println!("moto: unsigned receive -> HTTP {unsigned}, wrongly signed -> HTTP {wrong} {answer}");
    assert!(unsigned >= 400 && wrong == 403, "unsigned {unsigned}, wrongly signed {wrong}: {answer}");
    // The sender may send but not receive: policies are enforced too.
    let (not_allowed, _) = moto.call("sqs", Some(&sender), Some("AmazonSQS.ReceiveMessage"), &receive).await?;
    assert_eq!(not_allowed, 403, "the sender's policy allows only sqs:SendMessage");

    let keys: Vec<String> = (0..3).map(|i| format!("verified/o{i}.txt")).collect();
    for key in &keys {
        let message = json!({"QueueUrl": queue_url, "MessageBody": put_object(&t, key).await?}).to_string();
        moto.ok("sqs", Some(&sender), Some("AmazonSQS.SendMessage"), &message).await?;
    }
    t.wait_finished(keys.len() as i64, 0, Duration::from_secs(120)).await?;
    let expected: BTreeMap<String, usize> = keys.iter().map(|k| (k.clone(), 1)).collect();
    assert_eq!(runs_per_key(&runs), expected, "every object ran once");
    let through_sqs = sqs_events(&t, "accepted").await? + sqs_events(&t, "duplicate").await?;
    assert!(through_sqs >= keys.len() as f64, "{through_sqs} records admitted through the verified queue");
    let acks = t.metric("zeroflow_source_acks_total{outcome=\"ok\",source=\"sqs\"}").await.unwrap_or(0.0);
    let failed_acks = t.metric("zeroflow_source_acks_total{outcome=\"error\",source=\"sqs\"}").await.unwrap_or(0.0);
    println!("deletes: {acks} ok, {failed_acks} failed");
    assert!(acks >= keys.len() as f64, "moto deleted the admitted messages ({acks} ok, {failed_acks} failed)");
    let queue = t.status().await?.queue.context("no status.queue")?;
    assert_eq!((queue.reason.as_str(), queue.consuming), ("Consuming", true), "{queue:?}");
    Ok(())
}
