//! Gateway metrics, registered into a registry the caller owns (the operator's, or a test's).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    S3,
    CloudEvents,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::S3 => "s3",
            Source::CloudEvents => "cloudevents",
        }
    }
}

/// Per record (and pipeline, for accepted/duplicate/skipped) or, for whole-request refusals,
/// per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    Accepted,
    Duplicate,
    Unrouted,
    Ignored,
    /// Routed, but not work: a folder placeholder.
    Skipped,
    Rejected,
    Unauthorized,
    Overloaded,
}

impl EventOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Accepted => "accepted",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Unrouted => "unrouted",
            EventOutcome::Ignored => "ignored",
            EventOutcome::Skipped => "skipped",
            EventOutcome::Rejected => "rejected",
            EventOutcome::Unauthorized => "unauthorized",
            EventOutcome::Overloaded => "overloaded",
        }
    }
}

#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    events: IntCounterVec,
    duration: HistogramVec,
}

impl GatewayMetrics {
    /// Creates the metrics and registers them; call once per registry.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let events = IntCounterVec::new(
            Opts::new(
                "zeroflow_events_received_total",
                "Storage notifications by source and outcome: accepted/duplicate/skipped per record and \
                 pipeline, unrouted/ignored per record, rejected/unauthorized/overloaded per request",
            ),
            &["source", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("zeroflow_gateway_request_duration_seconds", "Time to answer one notification request")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            &["source"],
        )?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { events, duration })
    }

    pub fn count(&self, source: Source, outcome: EventOutcome, n: u64) {
        if n > 0 {
            self.events.with_label_values(&[source.as_str(), outcome.as_str()]).inc_by(n);
        }
    }

    pub fn observe(&self, source: Source, seconds: f64) {
        self.duration.with_label_values(&[source.as_str()]).observe(seconds);
    }

    /// [`GatewayMetrics::count`] for a source that is not one of the endpoints in [`Source`]:
    /// the Pub/Sub push endpoint (`pubsub`) and the queues the leader consumes (`sqs`,
    /// `kafka`). Labels stay bounded: callers pass constants.
    pub fn count_as(&self, source: &'static str, outcome: EventOutcome, n: u64) {
        if n > 0 {
            self.events.with_label_values(&[source, outcome.as_str()]).inc_by(n);
        }
    }

    /// [`GatewayMetrics::observe`] for the Pub/Sub push endpoint.
    pub fn observe_as(&self, source: &'static str, seconds: f64) {
        self.duration.with_label_values(&[source]).observe(seconds);
    }
}
