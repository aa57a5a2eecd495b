//! The Kafka consumer: storage notifications that MinIO and Ceph RGW publish to Kafka topics
//! (each record's value is the S3 notification the webhook would post, `{"Records": [...]}`,
//! with MinIO's `EventName` and `Key` around it), consumed by the leader, admitted like the
//! gateway's, the offset committed only past admitted records.
//!
//! Client: rdkafka (librdkafka), because the job needs committed consumer-group offsets, which
//! the pure-Rust clients do not have (rskafka has no groups or offset commits; `kafka` 0.10 fails
//! against Kafka 4). Its costs, measured on this machine (e2e/README.md): a C build of about
//! 4 minutes, cached; TLS would be OpenSSL beside rustls (the `ssl` feature), not enabled yet, so
//! brokers are reached in plaintext.
//!
//! Offsets: `enable.auto.offset.store=false` and the offset of a record stored only once it is
//! settled (admitted, or never admissible); librdkafka commits stored offsets every second and
//! when the consumer closes. A leader that dies loses at most the last second of commits: those
//! records are consumed again by the next leader as duplicates, which the backlog (same object
//! revision pending) or the ledger (already done) drops. Nothing is skipped: an offset is never
//! stored before its record is admitted, and a full backlog is retried until it takes it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message as _};
use tracing::{info, warn};
use zeroflow_core::admission::Admission;

use super::message::settle;
use super::metrics::{Poll, SourceMetrics};
use crate::gateway::metrics::GatewayMetrics;

/// The `source` label of Kafka's metrics.
pub const SOURCE: &str = "kafka";

/// After a failed receive, wait this long (librdkafka reconnects on its own meanwhile).
const RECEIVE_BACKOFF: Duration = Duration::from_secs(1);

/// The topics to consume and how.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port,...` (librdkafka's `bootstrap.servers`).
    pub brokers: String,
    pub topics: Vec<String>,
    /// The consumer group whose committed offsets this operator resumes from.
    pub group_id: String,
}

impl KafkaSettings {
    /// librdkafka's configuration (<https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md>).
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            // Offsets are stored by hand after admission and committed in the background.
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            // A new group starts at the oldest record the topic still holds: replaying is
            // harmless (duplicates), skipping would lose objects.
            .set("auto.offset.reset", "earliest")
            // A killed leader's membership ends after this, and the next leader's join waits
            // for it; the broker's minimum (group.min.session.timeout.ms) is 6 s by default.
            .set("session.timeout.ms", "6000")
            .set("client.id", "zeroflow-operator");
        config
    }
}

/// One consumer for all the topics.
pub struct KafkaConsumer<A> {
    pub settings: KafkaSettings,
    pub admission: A,
    pub events: GatewayMetrics,
    pub metrics: SourceMetrics,
}

impl<A: Admission> KafkaConsumer<A> {
    /// Consumes until the task is aborted (when this replica stops leading); dropping the
    /// consumer commits the stored offsets and leaves the group. Errors only when the consumer
    /// cannot be created or subscribed (a bad setting).
    pub async fn run(self) -> Result<(), String> {
        let consumer: StreamConsumer =
            self.settings.client_config().create().map_err(|e| format!("Kafka consumer: {e}"))?;
        let topics: Vec<&str> = self.settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| format!("subscribing to {topics:?}: {e}"))?;
        info!(
            brokers = self.settings.brokers,
            ?topics,
            group = self.settings.group_id,
            "consuming storage notifications from Kafka"
        );
        loop {
            match consumer.recv().await {
                Ok(record) => {
                    self.metrics.poll(SOURCE, Poll::Messages);
                    self.handle(&record).await;
                    match consumer.store_offset_from_message(&record) {
                        Ok(()) => self.metrics.acked(SOURCE, 1, 0),
                        Err(e) => {
                            // E.g. the partition was revoked meanwhile: its next owner (this
                            // replica again, after a rebalance) consumes the record again.
                            self.metrics.acked(SOURCE, 0, 1);
                            warn!(error = %e, topic = record.topic(), partition = record.partition(),
                                  offset = record.offset(), "cannot store the offset of an admitted record");
                        }
                    }
                }
                Err(e) => {
                    self.metrics.poll(SOURCE, Poll::Error);
                    warn!(error = %e, "cannot receive from Kafka");
                    tokio::time::sleep(RECEIVE_BACKOFF).await;
                }
            }
        }
    }

    /// Settles one record: returns once it is admitted or known never to be admissible.
    async fn handle(&self, record: &BorrowedMessage<'_>) {
        let received_at = Instant::now();
        if let Some(sent) = record.timestamp().to_millis() {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            self.metrics.age(SOURCE, (now - sent) as f64 / 1000.0);
        }
        let body = match record.payload_view::<str>() {
            Some(Ok(body)) => body,
            Some(Err(_)) | None => {
                warn!(
                    topic = record.topic(),
                    partition = record.partition(),
                    offset = record.offset(),
                    "skipping a Kafka record whose value is not UTF-8 text"
                );
                self.events.count_as(SOURCE, crate::gateway::metrics::EventOutcome::Rejected, 1);
                return;
            }
        };
        loop {
            let (settled, problem) = settle(&self.admission, body, received_at, None);
            settled.count(&self.events, SOURCE);
            if let Some(reason) = problem {
                let excerpt: String = body.chars().take(200).collect();
                warn!(
                    topic = record.topic(),
                    partition = record.partition(),
                    offset = record.offset(),
                    reason,
                    excerpt,
                    "skipping a Kafka record that is not a storage notification"
                );
            }
            if settled.delete {
                return;
            }
            // A backlog is full: this record (and the partition behind it) waits until it takes it.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stored_by_hand_and_a_new_group_starts_at_the_oldest_record() {
        let settings =
            KafkaSettings { brokers: "127.0.0.1:9092".into(), topics: vec!["events".into()], group_id: "zf".into() };
        let config = settings.client_config();
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("auto.offset.reset"), Some("earliest"));
        assert_eq!(config.get("group.id"), Some("zf"));
    }
}
