//! MinIO -> Kafka -> zeroflow (issue #16): MinIO publishes the bucket's notifications to the
//! testbed's Kafka (`e2e/testbed up --with kafka`, the queue-dir targets), the leader consumes the
//! topic in its own consumer group and commits offsets past admitted records: across a SIGKILL of
//! the operator, across the broker stopped for a while (`e2e/testbed stop kafka`), over the
//! broker's SASL_SSL listener (SCRAM-SHA-512, SCRAM-SHA-256, PLAIN; a wrong password) and over
//! its SSL listener that requires a client certificate (with one; without one; with one from
//! another CA). Every test binds MinIO's webhook address (the operator's gateway), so they run
//! one at a time; the topics are shared with other tests, whose records are unrouted here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use zeroflow_e2e::kafka;
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
    consume_from(&service_env("kafka", "ZF_KAFKA_BROKERS")?, &service_env("kafka", "ZF_KAFKA_TOPIC")?, group)
}

/// Operator flags to consume `topic` from the broker listener `brokers` in group `group`.
fn consume_from(brokers: &str, topic: &str, group: &str) -> anyhow::Result<OperatorExtras> {
    let flags = ["--kafka-brokers", brokers, "--kafka-topic", topic, "--kafka-group-id", group];
    Ok(OperatorExtras { flags: flags.map(String::from).to_vec(), env: vec![] })
}

/// Like [`consume_from`], over TLS with the broker's certificate verified against the testbed CA.
fn consume_over_tls(brokers: &str, topic: &str, group: &str) -> anyhow::Result<OperatorExtras> {
    let mut extras = consume_from(brokers, topic, group)?;
    extras.flags.extend(["--kafka-tls".into(), "--kafka-ca-file".into(), service_env("kafka", "ZF_KAFKA_CA_FILE")?]);
    Ok(extras)
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

/// Operator flags and environment to consume `topic` through the testbed's SASL_SSL listener in
/// group `group`: TLS verified against the testbed CA, SASL `mechanism` with `password`.
fn consume_over_sasl_ssl(topic: &str, group: &str, mechanism: &str, password: &str) -> anyhow::Result<OperatorExtras> {
    let mut extras = consume_over_tls(&service_env("kafka", "ZF_KAFKA_SASL_SSL_BROKERS")?, topic, group)?;
    extras.flags.extend(["--kafka-sasl-mechanism".into(), mechanism.into()]);
    extras.env = vec![
        ("ZEROFLOW_KAFKA_SASL_USERNAME".into(), service_env("kafka", "ZF_KAFKA_SASL_USERNAME")?),
        ("ZEROFLOW_KAFKA_SASL_PASSWORD".into(), password.into()),
    ];
    Ok(extras)
}

/// A client certificate and its key: PEM file paths.
type ClientCertificate = (String, String);

/// The testbed's client certificate, signed by the CA the broker trusts.
fn testbed_client_certificate() -> anyhow::Result<ClientCertificate> {
    Ok((service_env("kafka", "ZF_KAFKA_CLIENT_CERT_FILE")?, service_env("kafka", "ZF_KAFKA_CLIENT_KEY_FILE")?))
}

/// A client certificate for the same name as the testbed's, signed by a CA of its own that the
/// broker does not know, made in `dir` with openssl.
async fn foreign_client_certificate(dir: &std::path::Path) -> anyhow::Result<ClientCertificate> {
    std::fs::create_dir_all(dir)?;
    let ca = "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=not-the-testbed-ca -keyout ca.key -out ca.crt";
    let csr = "req -newkey rsa:2048 -nodes -subj /CN=zeroflow-operator -keyout client.key -out client.csr";
    let sign = "x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -out client.crt";
    for args in [ca, csr, sign].map(|step| step.split(' ').collect::<Vec<_>>()) {
        let out = tokio::process::Command::new("openssl").args(&args).current_dir(dir).output().await?;
        anyhow::ensure!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let path = |name: &str| dir.join(name).to_str().map(str::to_owned).context("utf-8 path");
    Ok((path("client.crt")?, path("client.key")?))
}

/// Operator flags to consume the testbed's topic through its SSL listener, which requires a
/// client certificate, in group `group`, presenting `certificate` (`None`: none).
fn consume_over_mutual_tls(group: &str, certificate: Option<ClientCertificate>) -> anyhow::Result<OperatorExtras> {
    let brokers = service_env("kafka", "ZF_KAFKA_SSL_BROKERS")?;
    let mut extras = consume_over_tls(&brokers, &service_env("kafka", "ZF_KAFKA_TOPIC")?, group)?;
    if let Some((cert, key)) = certificate {
        extras.flags.extend(["--kafka-client-cert-file".into(), cert, "--kafka-client-key-file".into(), key]);
    }
    Ok(extras)
}

/// Binds the source bucket to the testbed's Kafka target (with a queue dir) for puts.
async fn notify_kafka(t: &LoopBed) -> anyhow::Result<()> {
    notify_through(t, &service_env("kafka", "ZF_KAFKA_ARN")?).await
}

/// Binds the source bucket to the MinIO notification target `arn` for puts.
async fn notify_through(t: &LoopBed, arn: &str) -> anyhow::Result<()> {
    let alias = std::env::var("ZF_MC_ALIAS")?;
    let target = format!("{alias}/{}", t.buckets.source);
    eventually("mc event add", TIMEOUT, || async {
        Ok(mc(&["event", "add", &target, arn, "--event", "put"]).await.ok())
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

/// Records that reached the operator through Kafka: accepted, or a duplicate (an object the
/// start-up resync or an earlier record had admitted already).
async fn through_kafka(t: &LoopBed) -> anyhow::Result<f64> {
    Ok(kafka_events(t, "accepted").await? + kafka_events(t, "duplicate").await?)
}

/// `zeroflow_source_connected{source="kafka"}`: 1 with a broker connection up, 0 without.
async fn kafka_connected(t: &LoopBed) -> anyhow::Result<f64> {
    t.metric("zeroflow_source_connected{source=\"kafka\"}").await
}

async fn kafka_errors(t: &LoopBed, kind: &str) -> anyhow::Result<f64> {
    let name = format!("zeroflow_source_errors_total{{kind=\"{kind}\",source=\"kafka\"}}");
    Ok(t.metric(&name).await.unwrap_or(0.0))
}

/// The operator's log so far.
fn operator_log(t: &LoopBed) -> String {
    std::fs::read_to_string(&t.operator.log).unwrap_or_default()
}

/// Runs `e2e/testbed <args>` (stop or start a component of the running testbed).
async fn testbed(args: &[&str]) -> anyhow::Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testbed");
    let out = tokio::process::Command::new(script).args(args).output().await?;
    anyhow::ensure!(out.status.success(), "testbed {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Starts the testbed's broker again when dropped, so a failed test leaves it running.
struct BrokerBack;

impl Drop for BrokerBack {
    fn drop(&mut self) {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testbed");
        let _ = std::process::Command::new(script).args(["start", "kafka"]).output();
    }
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
    // Offsets are committed once a second, in the background: wait for the last commit before the kill.
    kafka::committed_to_the_end(&group).await?;

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

#[tokio::test]
async fn kafka_away_for_a_while_then_back_loses_nothing_and_says_so() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let runs = std::env::temp_dir().join(format!("zf-kafka-away-runs-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&runs);
    let group = unique("zf-kafka-away");
    let t = LoopBed::start_fed_by("kafkaaway", "kafkaaway", pipeline_spec(&runs), consume(&group)?).await?;
    notify_kafka(&t).await?;

    let keys: Vec<String> = (0..10).map(|i| format!("away/o{i}.txt")).collect();
    for key in &keys[..5] {
        upload(&t.buckets.source, key, &format!("object {key}\n")).await?;
    }
    eventually("the first half done", TIMEOUT, || async { Ok((t.status().await?.succeeded == 5).then_some(())) })
        .await?;
    eventually("the first half consumed", TIMEOUT, || async { Ok((through_kafka(&t).await? >= 5.0).then_some(())) })
        .await?;
    eventually("connected", TIMEOUT, || async { Ok((kafka_connected(&t).await? == 1.0).then_some(())) }).await?;
    // Offsets are committed once a second, in the background: wait for the last commit before the broker goes.
    kafka::committed_to_the_end(&group).await?;

    // The broker goes away; MinIO keeps the second half's events in its queue dir meanwhile.
    let _back = BrokerBack;
    testbed(&["stop", "kafka"]).await?;
    let stopped = std::time::Instant::now();
    for key in &keys[5..] {
        upload(&t.buckets.source, key, &format!("object {key}\n")).await?;
    }
    // What a user sees: the gauge at 0, errors counted as `unreachable`, and log lines.
    eventually("the operator sees the broker gone", TIMEOUT, || async {
        Ok((kafka_connected(&t).await? == 0.0 && kafka_errors(&t, "unreachable").await? >= 1.0).then_some(()))
    })
    .await?;
    let seen_after = stopped.elapsed();
    // Away longer than the group's session timeout (6 s), so the consumer must also rejoin.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed())).await;
    let log = operator_log(&t);
    assert!(log.contains("no connection to any Kafka broker"), "no outage in the log:\n{log}");
    assert!(log.contains("cannot reach a Kafka broker"), "no unreachable error in the log:\n{log}");
    let away = stopped.elapsed();

    testbed(&["start", "kafka"]).await?;
    let restarted = std::time::Instant::now();
    t.wait_finished(keys.len() as i64, 0, Duration::from_secs(180)).await?;
    let all_done = restarted.elapsed();
    eventually("every record consumed", TIMEOUT, || async { Ok((through_kafka(&t).await? >= 10.0).then_some(())) })
        .await?;
    eventually("connected again", TIMEOUT, || async { Ok((kafka_connected(&t).await? == 1.0).then_some(())) }).await?;
    assert!(operator_log(&t).contains("Kafka brokers reachable again"), "no recovery in the log");

    let expected: BTreeMap<String, usize> = keys.iter().map(|k| (k.clone(), 1)).collect();
    assert_eq!(runs_per_key(&runs), expected, "every object ran exactly once");
    for key in &keys {
        assert_eq!(t.read_sink(&format!("out/{key}/upper.txt")).await?, format!("OBJECT {}\n", key.to_uppercase()));
    }
    println!(
        "broker away {:.1} s (the operator said so after {:.1} s; {} unreachable errors); all {} objects done {:.1} s \
         after it was back; {} records through Kafka",
        away.as_secs_f64(),
        seen_after.as_secs_f64(),
        kafka_errors(&t, "unreachable").await?,
        keys.len(),
        all_done.as_secs_f64(),
        through_kafka(&t).await?
    );
    Ok(())
}

/// Six objects stored in a bucket that publishes through MinIO's target `arn`, consumed by an
/// operator started with `extras` (an authenticated listener): each runs exactly once, and the
/// operator is connected with no authentication or TLS error. Returns the bed for more checks.
async fn each_object_runs_once(tag: &str, arn: &str, extras: OperatorExtras) -> anyhow::Result<LoopBed> {
    let runs = std::env::temp_dir().join(format!("zf-{tag}-runs-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&runs);
    let t = LoopBed::start_fed_by(tag, tag, pipeline_spec(&runs), extras).await?;
    notify_through(&t, arn).await?;
    let keys: Vec<String> = (0..6).map(|i| format!("{tag}/o{i}.txt")).collect();
    for key in &keys {
        upload(&t.buckets.source, key, &format!("object {key}\n")).await?;
    }
    t.wait_finished(keys.len() as i64, 0, Duration::from_secs(180)).await?;
    eventually("every record consumed", TIMEOUT, || async {
        Ok((through_kafka(&t).await? >= keys.len() as f64).then_some(()))
    })
    .await?;
    let expected: BTreeMap<String, usize> = keys.iter().map(|k| (k.clone(), 1)).collect();
    assert_eq!(runs_per_key(&runs), expected, "every object ran exactly once");
    // The gauge follows librdkafka's statistics, every 2 s: the objects may be done sooner.
    eventually("connected", TIMEOUT, || async { Ok((kafka_connected(&t).await? == 1.0).then_some(())) }).await?;
    assert_eq!(kafka_errors(&t, "authentication").await?, 0.0);
    assert_eq!(kafka_errors(&t, "tls").await?, 0.0);
    println!("{tag}: {} objects, {} records through Kafka", keys.len(), through_kafka(&t).await?);
    Ok(t)
}

#[tokio::test]
async fn minio_to_kafka_over_sasl_ssl_runs_every_object_once() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let password = service_env("kafka", "ZF_KAFKA_SASL_PASSWORD")?;
    let topic = service_env("kafka", "ZF_KAFKA_TLS_TOPIC")?;
    let extras = consume_over_sasl_ssl(&topic, &unique("zf-kafka-tls"), "SCRAM-SHA-512", &password)?;
    // MinIO publishes through the SASL_SSL listener too (SCRAM-SHA-512, the testbed CA).
    let t = each_object_runs_once("kafkatls", &service_env("kafka", "ZF_KAFKA_TLS_ARN")?, extras).await?;
    let log = operator_log(&t);
    assert!(log.contains("sasl_ssl"), "the operator did not say it uses SASL_SSL:\n{log}");
    Ok(())
}

// The other mechanisms and mutual TLS: MinIO publishes to the shared topic through the plaintext
// listener without a queue dir (sooner), the operator consumes it through the authenticated one.

#[tokio::test]
async fn kafka_over_sasl_ssl_with_scram_sha_256_runs_every_object_once() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let password = service_env("kafka", "ZF_KAFKA_SASL_PASSWORD")?;
    let topic = service_env("kafka", "ZF_KAFKA_TOPIC")?;
    let extras = consume_over_sasl_ssl(&topic, &unique("zf-kafka-sha256"), "SCRAM-SHA-256", &password)?;
    each_object_runs_once("kafkasha256", &service_env("kafka", "ZF_KAFKA_ARN_NO_QUEUE")?, extras).await?;
    Ok(())
}

#[tokio::test]
async fn kafka_over_sasl_ssl_with_plain_runs_every_object_once() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let password = service_env("kafka", "ZF_KAFKA_SASL_PASSWORD")?;
    let topic = service_env("kafka", "ZF_KAFKA_TOPIC")?;
    let extras = consume_over_sasl_ssl(&topic, &unique("zf-kafka-plain"), "PLAIN", &password)?;
    each_object_runs_once("kafkaplain", &service_env("kafka", "ZF_KAFKA_ARN_NO_QUEUE")?, extras).await?;
    Ok(())
}

#[tokio::test]
async fn kafka_with_a_client_certificate_runs_every_object_once() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let extras = consume_over_mutual_tls(&unique("zf-kafka-mtls"), Some(testbed_client_certificate()?))?;
    let t = each_object_runs_once("kafkamtls", &service_env("kafka", "ZF_KAFKA_ARN_NO_QUEUE")?, extras).await?;
    let log = operator_log(&t);
    assert!(log.contains("\"ssl\""), "the operator did not say it uses SSL:\n{log}");
    Ok(())
}

#[tokio::test]
async fn a_wrong_kafka_password_is_an_error_a_user_sees_not_a_stall() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let runs = std::env::temp_dir().join(format!("zf-kafka-badpw-runs-{}.log", std::process::id()));
    let group = unique("zf-kafka-badpw");
    let topic = service_env("kafka", "ZF_KAFKA_TLS_TOPIC")?;
    let extras = consume_over_sasl_ssl(&topic, &group, "PLAIN", "not-the-password")?;
    let t = LoopBed::start_fed_by("kafkabadpw", "kafkabadpw", pipeline_spec(&runs), extras).await?;
    eventually("an authentication error counted", TIMEOUT, || async {
        Ok((kafka_errors(&t, "authentication").await? >= 1.0).then_some(()))
    })
    .await?;
    // The gauge starts at 0: it means something once librdkafka's statistics (every 2 s) said so.
    eventually("the statistics say disconnected", TIMEOUT, || async {
        Ok(operator_log(&t).contains("no connection to any Kafka broker").then_some(()))
    })
    .await?;
    assert_eq!(kafka_connected(&t).await?, 0.0, "connected with a wrong password");
    let log = operator_log(&t);
    let line = log
        .lines()
        .find(|l| l.contains("Kafka refused the operator's credentials"))
        .with_context(|| format!("no authentication error in the log:\n{log}"))?;
    assert!(line.contains("ERROR") || line.contains("\"level\":\"ERROR\""), "not logged as an error: {line}");
    // librdkafka's own reason is in the line, so the user learns what the broker said.
    assert!(line.to_lowercase().contains("authentication"), "{line}");
    println!("logged: {line}");
    Ok(())
}

/// An operator on the SSL listener presenting `certificate`, which the broker must refuse: a
/// `tls` error counted, the gauge at 0, and an error logged with the broker's alert.
async fn refused_by_the_mutual_tls_listener(tag: &str, certificate: Option<ClientCertificate>) -> anyhow::Result<()> {
    let runs = std::env::temp_dir().join(format!("zf-{tag}-runs-{}.log", std::process::id()));
    let extras = consume_over_mutual_tls(&unique(tag), certificate)?;
    let t = LoopBed::start_fed_by(tag, tag, pipeline_spec(&runs), extras).await?;
    eventually("a TLS error counted", TIMEOUT, || async { Ok((kafka_errors(&t, "tls").await? >= 1.0).then_some(())) })
        .await?;
    // The gauge starts at 0: it means something once librdkafka's statistics (every 2 s) said so.
    eventually("the statistics say disconnected", TIMEOUT, || async {
        Ok(operator_log(&t).contains("no connection to any Kafka broker").then_some(()))
    })
    .await?;
    assert_eq!(kafka_connected(&t).await?, 0.0, "connected with a refused client certificate");
    let log = operator_log(&t);
    let line = log
        .lines()
        .find(|l| l.contains("TLS with a Kafka broker failed"))
        .with_context(|| format!("no TLS error in the log:\n{log}"))?;
    assert!(line.contains("ERROR") || line.contains("\"level\":\"ERROR\""), "not logged as an error: {line}");
    // The line names the flags to check, and librdkafka's reason carries the broker's alert.
    assert!(line.contains("--kafka-client-cert-file"), "{line}");
    // (The fields follow the message, which ends in "retrying"; plain logs colour field names.)
    let fields = line.split_once("retrying").map(|(_, fields)| fields).with_context(|| format!("no fields: {line}"))?;
    assert!(fields.contains("alert"), "no TLS alert in the reason: {line}");
    println!("{tag} logged: {line}");
    Ok(())
}

#[tokio::test]
async fn kafka_without_the_required_client_certificate_is_an_error_a_user_sees_not_a_stall() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    refused_by_the_mutual_tls_listener("kafkanocert", None).await
}

#[tokio::test]
async fn a_kafka_client_certificate_from_another_ca_is_an_error_a_user_sees() -> anyhow::Result<()> {
    let _webhook = WEBHOOK.lock().await;
    let dir = std::env::temp_dir().join(unique("zf-kafka-foreign-ca"));
    let certificate = foreign_client_certificate(&dir).await?;
    let refused = refused_by_the_mutual_tls_listener("kafkaforeign", Some(certificate)).await;
    let _ = std::fs::remove_dir_all(&dir);
    refused
}
