//! Metrics of the queues the leader consumes, with bounded labels: `source` is `sqs` or `kafka`
//! (a constant), never a queue or topic name. Events themselves are counted with the gateway's
//! `zeroflow_events_received_total{source, outcome}`.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Debug, Clone)]
pub struct SourceMetrics {
    polls: IntCounterVec,
    age: HistogramVec,
    acks: IntCounterVec,
    connected: IntGaugeVec,
    errors: IntCounterVec,
}

/// What went wrong between a consumer and its queue: the `kind` label of
/// `zeroflow_source_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceError {
    /// The queue's servers cannot be reached (connection refused or lost, name not resolved).
    Unreachable,
    /// The queue refused the operator's credentials or their rights.
    Authentication,
    /// The TLS handshake failed (an unknown CA, a certificate for another name).
    Tls,
    Other,
}

impl SourceError {
    fn as_str(self) -> &'static str {
        match self {
            SourceError::Unreachable => "unreachable",
            SourceError::Authentication => "authentication",
            SourceError::Tls => "tls",
            SourceError::Other => "other",
        }
    }
}

/// What one poll of a queue returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    Messages,
    Empty,
    Error,
}

impl Poll {
    fn as_str(self) -> &'static str {
        match self {
            Poll::Messages => "messages",
            Poll::Empty => "empty",
            Poll::Error => "error",
        }
    }
}

impl SourceMetrics {
    /// Creates the metrics and registers them; call once per registry.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let polls = IntCounterVec::new(
            Opts::new("zeroflow_source_polls_total", "Polls of a notification queue by source and outcome"),
            &["source", "outcome"],
        )?;
        let age = HistogramVec::new(
            HistogramOpts::new(
                "zeroflow_source_message_age_seconds",
                "Time from the queue accepting a message to this leader receiving it (the consumer's lag)",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0]),
            &["source"],
        )?;
        let acks = IntCounterVec::new(
            Opts::new(
                "zeroflow_source_acks_total",
                "Messages deleted (SQS) or offsets committed (Kafka) after admission, by outcome (ok, error)",
            ),
            &["source", "outcome"],
        )?;
        let connected = IntGaugeVec::new(
            Opts::new(
                "zeroflow_source_connected",
                "1 while the consumer has a working connection to its queue's servers, else 0 (Kafka)",
            ),
            &["source"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "zeroflow_source_errors_total",
                "Errors between a consumer and its queue, by kind (unreachable, authentication, tls, other)",
            ),
            &["source", "kind"],
        )?;
        registry.register(Box::new(polls.clone()))?;
        registry.register(Box::new(age.clone()))?;
        registry.register(Box::new(acks.clone()))?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        Ok(Self { polls, age, acks, connected, errors })
    }

    /// Whether the consumer of `source` is connected to its queue now.
    pub fn connected(&self, source: &'static str, connected: bool) {
        self.connected.with_label_values(&[source]).set(i64::from(connected));
    }

    pub fn error(&self, source: &'static str, kind: SourceError) {
        self.errors.with_label_values(&[source, kind.as_str()]).inc();
    }

    pub fn poll(&self, source: &'static str, outcome: Poll) {
        self.polls.with_label_values(&[source, outcome.as_str()]).inc();
    }

    /// A message's age when received, in seconds.
    pub fn age(&self, source: &'static str, seconds: f64) {
        self.age.with_label_values(&[source]).observe(seconds.max(0.0));
    }

    pub fn acked(&self, source: &'static str, ok: u64, failed: u64) {
        for (outcome, n) in [("ok", ok), ("error", failed)] {
            if n > 0 {
                self.acks.with_label_values(&[source, outcome]).inc_by(n);
            }
        }
    }
}
