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
pub mod pipelines;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};
use zeroflow_core::admission::Admission;

use self::client::{Message, SqsQueue};
use super::message::settle;
use super::metrics::{Poll, SourceMetrics};
use crate::gateway::metrics::GatewayMetrics;

/// The `source` label of SQS's metrics.
pub const SOURCE: &str = "sqs";

/// SQS's largest batch for ReceiveMessage and DeleteMessageBatch.
const BATCH: u32 = 10;
/// After a failed poll, wait from this long, doubling, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the polls of a queue go, as reported to whoever shows it (a pipeline's `status.queue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollState {
    /// The last receive succeeded.
    Consuming,
    /// The last receive failed: a reason of [`client::SqsError::reason`], and SQS's error type
    /// when it answered with one (never the raw answer, which whatever sits at the endpoint wrote).
    Failing { reason: &'static str, error_type: String },
}

/// Called with each change of [`PollState`].
pub type StateReport = Box<dyn Fn(PollState) + Send + Sync>;

/// One queue's consumer.
pub struct SqsConsumer<A> {
    pub queue: SqsQueue,
    pub admission: A,
    pub events: GatewayMetrics,
    pub metrics: SourceMetrics,
    /// ReceiveMessage's `WaitTimeSeconds` (0 to 20): how long one poll waits for a message.
    pub wait_seconds: u32,
    /// Whose queue it is: `None` for the operator's own (events reach every namespace),
    /// `Some(ns)` for a queue named by pipelines of `ns` (events reach only those of `ns`).
    pub namespace: Option<String>,
    /// Told when the polls start or stop succeeding.
    pub on_state: Option<StateReport>,
}

impl<A: Admission> SqsConsumer<A> {
    /// Polls until the task is aborted (when this replica stops leading). Messages held at that
    /// moment are neither admitted nor deleted: they come back after their visibility timeout.
    pub async fn run(self) {
        info!(queue = self.queue.url(), namespace = self.namespace, "consuming S3 notifications from SQS");
        let mut backoff = MIN_BACKOFF;
        let mut state = None;
        loop {
            let result = self.queue.receive(BATCH, self.wait_seconds).await;
            let now = match &result {
                Ok(_) => PollState::Consuming,
                Err(e) => PollState::Failing { reason: e.reason(), error_type: e.error_type().to_owned() },
            };
            if state.as_ref() != Some(&now) {
                if let Some(report) = &self.on_state {
                    report(now.clone());
                }
                state = Some(now);
            }
            let messages = match result {
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
            let (settled, problem) = settle(&self.admission, &message.body, received_at, self.namespace.as_deref());
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
            settled.count(&self.events, SOURCE);
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
}
