//! The Kafka consumer: storage notifications that MinIO and Ceph RGW publish to Kafka topics
//! (each record's value is the S3 notification the webhook would post, `{"Records": [...]}`,
//! with MinIO's `EventName` and `Key` around it), consumed by the leader, admitted like the
//! gateway's, the offset committed only past admitted records.
//!
//! Client: rdkafka (librdkafka), because the job needs committed consumer-group offsets, which
//! the pure-Rust clients do not have (rskafka has no groups or offset commits; `kafka` 0.10 fails
//! against Kafka 4). Its costs, measured on this machine (e2e/README.md): a C build of about
//! 4 minutes, cached; TLS and SASL SCRAM through the system's OpenSSL (the `ssl` feature), beside
//! the rustls the rest of the operator uses ([`settings`]).
//!
//! Offsets: `enable.auto.offset.store=false` and the offset of a record stored only once it is
//! settled (admitted, or never admissible); librdkafka commits stored offsets every second and
//! when the consumer closes. A leader that dies loses at most the last second of commits: those
//! records are consumed again by the next leader as duplicates, which the backlog (same object
//! revision pending) or the ledger (already done) drops. Nothing is skipped: an offset is never
//! stored before its record is admitted, and a full backlog is retried until it takes it.
//!
//! Brokers away: librdkafka reconnects by itself (its backoff grows to 10 s), the consumer waits
//! in `recv`, and [`context`] reports the outage as a metric and log lines.

pub mod context;
pub mod settings;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message as _};
use tracing::{debug, info, warn};
use zeroflow_core::admission::Admission;

use super::message::settle;
use super::metrics::{Poll, SourceMetrics};
use crate::gateway::metrics::GatewayMetrics;

/// The `source` label of Kafka's metrics.
pub const SOURCE: &str = "kafka";

pub use settings::KafkaSettings;
/// One consumer for all the topics.
pub struct KafkaConsumer<A> {
    pub settings: KafkaSettings,
    pub admission: A,
    pub events: GatewayMetrics,
    pub metrics: SourceMetrics,
}

impl<A: Admission> KafkaConsumer<A> {
    /// Consumes until the task is aborted (when this replica stops leading); dropping the
    /// consumer commits the stored offsets and leaves the group. Errors when the consumer cannot
    /// be created or subscribed (a bad setting) or fails fatally.
    pub async fn run(self) -> Result<(), String> {
        let context = context::Context::new(self.metrics.clone(), self.settings.brokers.clone());
        let consumer: StreamConsumer<context::Context> =
            self.settings.client_config().create_with_context(context).map_err(|e| format!("Kafka consumer: {e}"))?;
        let topics: Vec<&str> = self.settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| format!("subscribing to {topics:?}: {e}"))?;
        info!(
            brokers = self.settings.brokers,
            ?topics,
            group = self.settings.group_id,
            security = self.settings.security_protocol(),
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
                // A fatal error leaves the consumer unusable: the caller creates a new one.
                Err(e @ KafkaError::MessageConsumptionFatal(_)) => {
                    self.metrics.poll(SOURCE, Poll::Error);
                    return Err(format!("the Kafka consumer failed: {e}"));
                }
                // Informational: librdkafka recovers by itself, and the context has logged and
                // counted the error already. No pause here: during an outage librdkafka queues an
                // error per reconnect attempt, and pausing on each would leave the consumer
                // working through that backlog, records waiting behind it, long after the
                // brokers are back.
                Err(e) => {
                    self.metrics.poll(SOURCE, Poll::Error);
                    debug!(error = %e, "Kafka consumer error");
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
