//! The testbed's Kafka (`e2e/testbed up --with kafka`) read through Kafka's own console
//! consumer, so the tests do not decide which Rust Kafka client the operator will use.

use std::collections::BTreeMap;
use std::process::Stdio;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::{TIMEOUT, eventually, service_env};

/// One record as the console consumer prints it.
#[derive(Debug, Clone)]
pub struct Record {
    /// The record's timestamp in milliseconds since the Unix epoch: when the broker appended it
    /// on a topic with `message.timestamp.type=LogAppendTime` (the testbed's topic), else the
    /// producer's.
    pub timestamp_ms: i64,
    pub partition: u32,
    /// The record's offset in its partition.
    pub offset: u64,
    /// The record key as text (MinIO's: `<bucket>/<key>`, unescaped).
    pub key: String,
    /// The value as text (MinIO's values are one line of JSON).
    pub value: String,
}

/// A running `kafka-console-consumer` reading a topic from its first offset; killed when dropped.
pub struct ConsoleConsumer {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ConsoleConsumer {
    /// Starts reading every partition of `topic` from the beginning, without a consumer group of
    /// its own choosing (nothing it reads is committed for anyone else).
    pub fn from_beginning(topic: &str) -> anyhow::Result<Self> {
        Self::start(&service_env("kafka", "ZF_KAFKA_BROKERS")?, topic, &[])
    }

    /// Like [`ConsoleConsumer::from_beginning`], through the broker's SASL_SSL listener as user
    /// `ZF_KAFKA_SASL_USERNAME` with SCRAM-SHA-512 and `password`, the broker's certificate
    /// verified against the testbed CA.
    pub fn over_sasl_ssl(topic: &str, password: &str) -> anyhow::Result<Self> {
        // One file per consumer: tests of one process start consumers on the same topic with
        // different passwords at once, and the JVM reads the file only after it has started.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config =
            std::env::temp_dir().join(format!("zf-kafka-client-{}-{n}-{topic}.properties", std::process::id()));
        let user = service_env("kafka", "ZF_KAFKA_SASL_USERNAME")?;
        let jaas = format!(
            "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{user}\" password=\"{password}\";"
        );
        let properties = format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config={jaas}\n\
             ssl.truststore.type=PEM\nssl.truststore.location={}\n",
            service_env("kafka", "ZF_KAFKA_CA_FILE")?
        );
        std::fs::write(&config, properties)?;
        let config = config.to_str().context("utf-8 path")?.to_owned();
        Self::start(&service_env("kafka", "ZF_KAFKA_SASL_SSL_BROKERS")?, topic, &["--consumer.config", &config])
    }

    fn start(brokers: &str, topic: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let bin = service_env("kafka", "ZF_KAFKA_BIN")?;
        let mut child = Command::new(format!("{bin}/kafka-console-consumer"))
            .args(["--bootstrap-server", brokers, "--topic", topic, "--from-beginning"])
            .args(extra)
            .args(["--property", "print.timestamp=true", "--property", "print.partition=true"])
            .args(["--property", "print.offset=true"])
            .args(["--property", "print.key=true", "--property", "key.separator=\t"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting kafka-console-consumer")?;
        let stdout = child.stdout.take().context("no stdout")?;
        Ok(Self { _child: child, lines: BufReader::new(stdout).lines() })
    }

    /// The next record (waits for one); `None` when the consumer exited.
    pub async fn next(&mut self) -> anyhow::Result<Option<Record>> {
        let Some(line) = self.lines.next_line().await? else { return Ok(None) };
        parse_line(&line).map(Some)
    }
}

/// One partition of a consumer group as `kafka-consumer-groups --describe` reports it: the
/// group's committed offset (`None` before its first commit) and the partition's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPartition {
    pub committed: Option<u64>,
    pub end: u64,
}

/// The committed offsets of consumer group `group` on the plaintext listener, by topic and
/// partition, read with Kafka's own `kafka-consumer-groups --describe`.
pub async fn group_offsets(group: &str) -> anyhow::Result<BTreeMap<(String, u32), GroupPartition>> {
    let bin = service_env("kafka", "ZF_KAFKA_BIN")?;
    let out = Command::new(format!("{bin}/kafka-consumer-groups"))
        .args(["--bootstrap-server", &service_env("kafka", "ZF_KAFKA_BROKERS")?, "--describe", "--group", group])
        .output()
        .await
        .context("running kafka-consumer-groups")?;
    anyhow::ensure!(out.status.success(), "kafka-consumer-groups: {}", String::from_utf8_lossy(&out.stderr));
    parse_describe(group, &String::from_utf8_lossy(&out.stdout))
}

/// Waits until `group` has committed every partition up to its end as it is now: past this, a
/// consumer of the group killed at once loses nothing it had read. (librdkafka commits stored
/// offsets in the background, once a second.)
pub async fn committed_to_the_end(group: &str) -> anyhow::Result<()> {
    let now = group_offsets(group).await?;
    eventually("the group's offsets committed to the end", TIMEOUT, || async {
        let later = group_offsets(group).await?;
        let done = now.iter().all(|(at, before)| {
            later.get(at).and_then(|p| p.committed).is_some_and(|committed| committed >= before.end)
        });
        Ok((!now.is_empty() && done).then_some(()))
    })
    .await
}

/// Parses the table of `kafka-consumer-groups --describe --group GROUP`: rows `GROUP TOPIC
/// PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...`, `-` for an offset not committed yet.
fn parse_describe(group: &str, text: &str) -> anyhow::Result<BTreeMap<(String, u32), GroupPartition>> {
    let mut partitions = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 || fields[0] != group {
            continue;
        }
        let committed = match fields[3] {
            "-" => None,
            n => Some(n.parse().with_context(|| format!("bad offset in {line:?}"))?),
        };
        let end = fields[4].parse().with_context(|| format!("bad end offset in {line:?}"))?;
        let partition = fields[2].parse().with_context(|| format!("bad partition in {line:?}"))?;
        partitions.insert((fields[1].to_owned(), partition), GroupPartition { committed, end });
    }
    Ok(partitions)
}

/// Parses `<type>:<ms>\tPartition:<p>\tOffset:<o>\t<key>\t<value>`, the console consumer's line
/// with `print.timestamp`, `print.partition`, `print.offset`, `print.key` and a tab as separator
/// (`<type>` is `CreateTime` or `LogAppendTime`).
fn parse_line(line: &str) -> anyhow::Result<Record> {
    let mut fields = line.splitn(5, '\t');
    let timestamp = fields.next().with_context(|| format!("no timestamp in {line:?}"))?;
    let (_, timestamp_ms) = timestamp.split_once(':').with_context(|| format!("no timestamp in {line:?}"))?;
    let mut next = |prefix: &str| -> anyhow::Result<String> {
        let field = fields.next().with_context(|| format!("no {prefix} field in {line:?}"))?;
        Ok(field.strip_prefix(prefix).with_context(|| format!("expected {prefix} in {line:?}"))?.to_owned())
    };
    Ok(Record {
        timestamp_ms: timestamp_ms.parse()?,
        partition: next("Partition:")?.parse()?,
        offset: next("Offset:")?.parse()?,
        key: next("")?,
        value: next("")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_console_consumer_line() -> anyhow::Result<()> {
        let record =
            parse_line("LogAppendTime:1796056062176\tPartition:1\tOffset:42\tbucket/a b.csv\t{\"x\":\"\\t\"}")?;
        assert_eq!((record.timestamp_ms, record.partition, record.offset), (1_796_056_062_176, 1, 42));
        assert_eq!(record.key, "bucket/a b.csv");
        assert_eq!(record.value, "{\"x\":\"\\t\"}");
        assert!(parse_line("no tabs").is_err());
        Ok(())
    }

    #[test]
    fn parses_a_consumer_group_description() -> anyhow::Result<()> {
        let text = "\nGROUP  TOPIC   PARTITION  CURRENT-OFFSET  LOG-END-OFFSET  LAG  CONSUMER-ID  HOST  CLIENT-ID\n\
                    g1     events  0          5               7               2    rdkafka-1    /127.0.0.1  rdkafka\n\
                    g1     events  1          -               3               -    -            -     -\n";
        let parsed = parse_describe("g1", text)?;
        assert_eq!(parsed[&("events".to_owned(), 0)], GroupPartition { committed: Some(5), end: 7 });
        assert_eq!(parsed[&("events".to_owned(), 1)], GroupPartition { committed: None, end: 3 });
        assert_eq!(parsed.len(), 2);
        assert!(parse_describe("g1", "g1 events x 1 2 1").is_err(), "a bad partition is an error");
        Ok(())
    }
}
