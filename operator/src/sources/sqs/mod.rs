//! The SQS consumer: S3 notifications (bare or in an SNS envelope) from one queue, long-polled
//! by the leader, admitted like the gateway's, each message deleted only once its records are
//! admitted.
//!
//! Nothing is lost on a crash or a leader change: a message is invisible while a consumer holds
//! it and comes back after the queue's visibility timeout unless deleted, and deletion follows
//! admission. A message admitted but not deleted (the leader died in between, or the delete
//! failed) is admitted again by whoever receives it next: a duplicate, which the backlog (same
//! object revision) or the ledger (already done) drops.

pub mod client;
pub mod message;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};
use zeroflow_core::admission::Admission;

use self::client::{Message, SqsQueue};
use self::message::{Discard, Verdict, classify};
use super::metrics::{Poll, SourceMetrics};
use crate::gateway::metrics::{EventOutcome, GatewayMetrics};

/// The `source` label of SQS's metrics.
pub const SOURCE: &str = "sqs";

/// SQS's largest batch for ReceiveMessage and DeleteMessageBatch.
const BATCH: u32 = 10;
/// After a failed poll, wait from this long, doubling, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What became of one message, and whether to delete it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Delete it: admitted, or never admissible. False only when a backlog was full: the
    /// message comes back after its visibility timeout and is admitted then.
    pub delete: bool,
    pub accepted: u64,
    pub duplicate: u64,
    pub unrouted: u64,
    pub skipped: u64,
    pub ignored: u64,
    pub rejected: u64,
    pub overloaded: u64,
}

/// Admits one message's events (the pure part of the consumer, apart from `admission`).
/// Records routed to no pipeline are counted and the message deleted: no pipeline wants them,
/// and a pipeline created later lists its bucket at start-up (resync) anyway.
pub fn settle(admission: &impl Admission, body: &str, received_at: Instant) -> (Settled, Option<String>) {
    match classify(body) {
        Verdict::Discard { kind: Discard::TestEvent, .. } => {
            (Settled { delete: true, ignored: 1, ..Settled::default() }, None)
        }
        Verdict::Discard { kind: Discard::Malformed, reason } => {
            (Settled { delete: true, rejected: 1, ..Settled::default() }, Some(reason))
        }
        Verdict::Admit { events, ignored } if events.is_empty() => {
            (Settled { delete: true, ignored, ..Settled::default() }, None)
        }
        Verdict::Admit { events, ignored } => match admission.admit(&events, received_at) {
            Ok(report) => (
                Settled {
                    delete: true,
                    accepted: report.accepted,
                    duplicate: report.duplicate,
                    unrouted: report.unrouted,
                    skipped: report.skipped,
                    ignored,
                    ..Settled::default()
                },
                None,
            ),
            Err(_) => (Settled { delete: false, overloaded: 1, ..Settled::default() }, None),
        },
    }
}

/// One queue's consumer.
pub struct SqsConsumer<A> {
    pub queue: SqsQueue,
    pub admission: A,
    pub events: GatewayMetrics,
    pub metrics: SourceMetrics,
    /// ReceiveMessage's `WaitTimeSeconds` (0 to 20): how long one poll waits for a message.
    pub wait_seconds: u32,
}

impl<A: Admission> SqsConsumer<A> {
    /// Polls until the task is aborted (when this replica stops leading). Messages held at that
    /// moment are neither admitted nor deleted: they come back after their visibility timeout.
    pub async fn run(self) {
        info!(queue = self.queue.url(), "consuming S3 notifications from SQS");
        let mut backoff = MIN_BACKOFF;
        loop {
            let messages = match self.queue.receive(BATCH, self.wait_seconds).await {
                Ok(messages) => {
                    backoff = MIN_BACKOFF;
                    messages
                }
                Err(e) => {
                    self.metrics.poll(SOURCE, Poll::Error);
                    warn!(queue = self.queue.url(), error = %e, retry_in = ?backoff, "cannot receive from SQS");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if messages.is_empty() {
                self.metrics.poll(SOURCE, Poll::Empty);
                continue;
            }
            self.metrics.poll(SOURCE, Poll::Messages);
            let received_at = Instant::now();
            self.handle(&messages, received_at).await;
        }
    }

    async fn handle(&self, messages: &[Message], received_at: Instant) {
        let now_millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut done: Vec<&str> = Vec::with_capacity(messages.len());
        for message in messages {
            if let Some(sent) = message.sent_at_millis() {
                self.metrics.age(SOURCE, now_millis.saturating_sub(sent) as f64 / 1000.0);
            }
            let (settled, problem) = settle(&self.admission, &message.body, received_at);
            if let Some(reason) = problem {
                let excerpt: String = message.body.chars().take(200).collect();
                warn!(
                    queue = self.queue.url(),
                    message_id = message.message_id,
                    reason,
                    excerpt,
                    "deleting an SQS message that is not an S3 notification"
                );
            }
            if !settled.delete {
                debug!(message_id = message.message_id, receives = ?message.receive_count(),
                       "a backlog is full: leaving the message to reappear after its visibility timeout");
            }
            self.count(&settled);
            if settled.delete {
                done.push(&message.receipt_handle);
            }
        }
        if done.is_empty() {
            return;
        }
        match self.queue.delete(&done).await {
            Ok(failed) => {
                self.metrics.acked(SOURCE, (done.len() - failed) as u64, failed as u64);
                if failed > 0 {
                    warn!(
                        queue = self.queue.url(),
                        failed, "SQS did not delete some messages; they will be admitted again"
                    );
                }
            }
            Err(e) => {
                self.metrics.acked(SOURCE, 0, done.len() as u64);
                warn!(queue = self.queue.url(), error = %e, "cannot delete admitted messages; they will be admitted again");
            }
        }
    }

    fn count(&self, s: &Settled) {
        for (outcome, n) in [
            (EventOutcome::Accepted, s.accepted),
            (EventOutcome::Duplicate, s.duplicate),
            (EventOutcome::Unrouted, s.unrouted),
            (EventOutcome::Skipped, s.skipped),
            (EventOutcome::Ignored, s.ignored),
            (EventOutcome::Rejected, s.rejected),
            (EventOutcome::Overloaded, s.overloaded),
        ] {
            self.events.count_as(SOURCE, outcome, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use zeroflow_core::backlog::BacklogConfig;
    use zeroflow_core::routing::Route;

    use super::*;
    use crate::metrics::Metrics;
    use crate::runtime::{Pipelines, Seed, Settings};

    /// Real in-memory pipelines serving bucket `photos` under `in/`, backlog of `capacity`.
    fn pipelines(capacity: usize) -> Arc<Pipelines> {
        let route = Route {
            namespace: "media".into(),
            name: "thumbs".into(),
            bucket: "photos".into(),
            prefix: Some("in/".into()),
            suffix: None,
            exclude_prefixes: vec![],
        };
        let (kick, _kicks) = tokio::sync::mpsc::unbounded_channel();
        let pipelines = Arc::new(Pipelines::new(7, kick, Arc::new(Metrics::new().expect("metrics"))));
        let key = route.key();
        let runtime = pipelines.upsert(
            &key,
            Settings::new(route, BacklogConfig { capacity, ..BacklogConfig::default() }),
            &Seed::default(),
        );
        runtime.lock().backlog.hold_until(0);
        pipelines
    }

    fn put(bucket: &str, key: &str) -> String {
        serde_json::json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "eventTime": "2026-11-27T10:00:00.000Z",
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 3, "eTag": "abc"}}}]})
        .to_string()
    }

    #[test]
    fn an_admitted_message_is_deleted_and_its_redelivery_is_a_duplicate() {
        let p = pipelines(10);
        let (first, _) = settle(&p, &put("photos", "in/a.jpg"), Instant::now());
        assert_eq!(first, Settled { delete: true, accepted: 1, ..Settled::default() });
        let (again, _) = settle(&p, &put("photos", "in/a.jpg"), Instant::now());
        assert_eq!(again, Settled { delete: true, duplicate: 1, ..Settled::default() });
    }

    #[test]
    fn a_full_backlog_keeps_the_message() {
        let p = pipelines(1);
        assert!(settle(&p, &put("photos", "in/1"), Instant::now()).0.delete);
        let (full, _) = settle(&p, &put("photos", "in/2"), Instant::now());
        assert_eq!(full, Settled { delete: false, overloaded: 1, ..Settled::default() });
    }

    #[test]
    fn unrouted_test_and_poison_messages_are_deleted_and_counted() {
        let p = pipelines(10);
        let (unrouted, _) = settle(&p, &put("elsewhere", "in/a"), Instant::now());
        assert_eq!(unrouted, Settled { delete: true, unrouted: 1, ..Settled::default() });
        let (test, _) =
            settle(&p, r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"photos"}"#, Instant::now());
        assert_eq!(test, Settled { delete: true, ignored: 1, ..Settled::default() });
        let (poison, reason) = settle(&p, "{\"Records\": 42}", Instant::now());
        assert_eq!(poison, Settled { delete: true, rejected: 1, ..Settled::default() });
        assert!(reason.is_some());
    }
}
