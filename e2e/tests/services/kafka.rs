//! Kafka (KRaft): MinIO publishes bucket notifications to the testbed's topic, through the
//! queue-dir target and the one without, and to another topic through the SASL_SSL listener
//! (SCRAM-SHA-512, the testbed CA), and a consumer reads them (over SASL_SSL too). The records are compared
//! with the fixtures parser tests use (`e2e/fixtures/minio-kafka-{put,delete}.json`), so those
//! cannot drift from what MinIO really sends.

use std::collections::BTreeSet;

use anyhow::Context as _;
use serde_json::Value;
use zeroflow_e2e::kafka::{ConsoleConsumer, Record};
use zeroflow_e2e::{TIMEOUT, eventually, mc, service_env};

use super::unique;

const PUT_FIXTURE: &str = include_str!("../../fixtures/minio-kafka-put.json");
const DELETE_FIXTURE: &str = include_str!("../../fixtures/minio-kafka-delete.json");
const KEY: &str = "incoming/a b.csv";

/// Binds a new bucket to `arn` for puts and deletes, uploads and then removes `KEY`, and
/// returns the bucket and the two records MinIO published (read from the plaintext listener's
/// topic, or with `sasl_ssl` from the SASL_SSL listener's).
async fn put_delete_and_consume(arn: &str, prefix: &str, sasl_ssl: bool) -> anyhow::Result<(String, Record, Record)> {
    let alias = std::env::var("ZF_MC_ALIAS").context("ZF_MC_ALIAS")?;
    let topic = service_env("kafka", if sasl_ssl { "ZF_KAFKA_TLS_TOPIC" } else { "ZF_KAFKA_TOPIC" })?;
    let bucket = unique(prefix);
    mc(&["mb", &format!("{alias}/{bucket}")]).await?;
    // MinIO refuses to bind a target it believes offline; it re-checks on its own.
    eventually("mc event add", TIMEOUT, || async {
        Ok(mc(&["event", "add", &format!("{alias}/{bucket}"), arn, "--event", "put,delete"]).await.ok())
    })
    .await?;
    let mut consumer = if sasl_ssl {
        ConsoleConsumer::over_sasl_ssl(&topic, &service_env("kafka", "ZF_KAFKA_SASL_PASSWORD")?)?
    } else {
        ConsoleConsumer::from_beginning(&topic)?
    };
    let wanted = format!("{bucket}/{KEY}");
    let mut next_for_key = async || {
        tokio::time::timeout(TIMEOUT, async {
            while let Some(record) = consumer.next().await? {
                if record.key == wanted {
                    return anyhow::Ok(record);
                }
            }
            anyhow::bail!("the console consumer exited")
        })
        .await
        .with_context(|| format!("no record with key {wanted} on {topic} within {TIMEOUT:?}"))?
    };

    let dir = std::env::temp_dir().join(unique("zf-kafka-upload"));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("upload.csv");
    std::fs::write(&file, "id,amount\n1,9.99\n")?;
    let uploaded = unix_ms()?;
    mc(&["cp", file.to_str().context("utf-8 path")?, &format!("{alias}/{bucket}/{KEY}")]).await?;
    let put = next_for_key().await?;
    // A figure, not a check: from `mc cp` starting to the broker appending MinIO's record.
    println!(
        "{arn}: put record on partition {} offset {}, appended {} ms after mc cp started",
        put.partition,
        put.offset,
        put.timestamp_ms - uploaded
    );
    let _ = std::fs::remove_dir_all(dir);

    mc(&["rm", &format!("{alias}/{bucket}/{KEY}")]).await?;
    let delete = next_for_key().await?;
    Ok((bucket, put, delete))
}

fn unix_ms() -> anyhow::Result<i64> {
    Ok(i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis())?)
}

/// The set of JSON paths in `value` (object keys joined by '.', array items as `[]`), without
/// what is user-defined (the object's metadata).
fn shape(value: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                let path = format!("{prefix}.{key}");
                if key != "userMetadata" {
                    shape(item, &path, paths);
                }
                paths.insert(path);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| shape(item, &format!("{prefix}[]"), paths)),
        _ => {}
    }
}

/// Fails unless `value` has exactly the fields of `fixture`.
fn assert_same_shape(value: &Value, fixture: &str, name: &str) -> anyhow::Result<()> {
    let fixture: Value = serde_json::from_str(fixture)?;
    let (mut live, mut saved) = (BTreeSet::new(), BTreeSet::new());
    shape(value, "", &mut live);
    shape(&fixture, "", &mut saved);
    assert_eq!(live, saved, "MinIO's Kafka record no longer has the fields of e2e/fixtures/{name}; update it");
    Ok(())
}

/// Checks both records: envelope, key escaping, sizes, and the fixtures' shape.
fn assert_records(bucket: &str, put: &Record, delete: &Record) -> anyhow::Result<()> {
    for record in [put, delete] {
        // The record key is bucket/key, unescaped: the same object always lands on one partition.
        assert_eq!(record.key, format!("{bucket}/{KEY}"));
    }
    let put: Value = serde_json::from_str(&put.value).with_context(|| format!("not JSON: {}", put.value))?;
    assert_eq!(put["EventName"], "s3:ObjectCreated:Put");
    // The envelope's Key is bucket/key unescaped; the record's object key is query-escaped.
    assert_eq!(put["Key"], format!("{bucket}/{KEY}").as_str());
    assert_eq!(put["Records"].as_array().map(Vec::len), Some(1));
    let record = &put["Records"][0];
    assert_eq!(record["eventSource"], "minio:s3");
    assert_eq!(record["s3"]["bucket"]["name"], bucket);
    assert_eq!(record["s3"]["object"]["key"], "incoming%2Fa+b.csv");
    assert_eq!(record["s3"]["object"]["size"], 17);
    assert_same_shape(&put, PUT_FIXTURE, "minio-kafka-put.json")?;

    let delete: Value = serde_json::from_str(&delete.value).with_context(|| format!("not JSON: {}", delete.value))?;
    assert_eq!(delete["EventName"], "s3:ObjectRemoved:Delete");
    assert_eq!(delete["Key"], format!("{bucket}/{KEY}").as_str());
    // Removal events carry no size or eTag.
    assert!(delete["Records"][0]["s3"]["object"].get("size").is_none(), "{delete}");
    assert_same_shape(&delete, DELETE_FIXTURE, "minio-kafka-delete.json")?;
    Ok(())
}

#[tokio::test]
async fn minio_publishes_notifications_to_kafka_through_its_queue_dir_target() -> anyhow::Result<()> {
    let arn = service_env("kafka", "ZF_KAFKA_ARN")?;
    let (bucket, put, delete) = put_delete_and_consume(&arn, "zf-kafka", false).await?;
    assert_records(&bucket, &put, &delete)
}

#[tokio::test]
async fn minio_publishes_notifications_to_kafka_through_its_target_without_queue() -> anyhow::Result<()> {
    let arn = service_env("kafka", "ZF_KAFKA_ARN_NO_QUEUE")?;
    let (bucket, put, delete) = put_delete_and_consume(&arn, "zf-kafka-noq", false).await?;
    assert_records(&bucket, &put, &delete)
}

#[tokio::test]
async fn minio_publishes_notifications_through_the_sasl_ssl_listener() -> anyhow::Result<()> {
    let arn = service_env("kafka", "ZF_KAFKA_TLS_ARN")?;
    let (bucket, put, delete) = put_delete_and_consume(&arn, "zf-kafka-tls", true).await?;
    assert_records(&bucket, &put, &delete)
}

#[tokio::test]
async fn the_sasl_ssl_listener_refuses_a_wrong_password() -> anyhow::Result<()> {
    let topic = service_env("kafka", "ZF_KAFKA_TLS_TOPIC")?;
    let mut consumer = ConsoleConsumer::over_sasl_ssl(&topic, "not-the-password")?;
    // Kafka's console consumer exits on an authentication failure, without a record.
    let next = tokio::time::timeout(TIMEOUT, consumer.next()).await.context("the consumer neither read nor exited")?;
    assert!(next?.is_none(), "read a record with a wrong password");
    Ok(())
}
