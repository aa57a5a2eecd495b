//! Gateway metrics, registered into a registry the caller owns (the operator's, or a test's).

use std::sync::Arc;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The endpoint a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    S3,
    CloudEvents,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::S3, Source::CloudEvents];

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
    /// Routed to a pipeline outside the namespace of the sender token presented: not admitted.
    NotPermitted,
    /// Neither content, removal nor metadata (reads, content not final yet, directories...).
    Ignored,
    /// A metadata-only change (tags, ACL, retention, legal hold, storage class): never work.
    Metadata,
    /// Routed, but not work: a folder placeholder.
    Skipped,
    Rejected,
    Unauthorized,
    Overloaded,
}

impl EventOutcome {
    pub const ALL: [EventOutcome; 10] = [
        EventOutcome::Accepted,
        EventOutcome::Duplicate,
        EventOutcome::Unrouted,
        EventOutcome::NotPermitted,
        EventOutcome::Ignored,
        EventOutcome::Metadata,
        EventOutcome::Skipped,
        EventOutcome::Rejected,
        EventOutcome::Unauthorized,
        EventOutcome::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Accepted => "accepted",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Unrouted => "unrouted",
            EventOutcome::NotPermitted => "not_permitted",
            EventOutcome::Ignored => "ignored",
            EventOutcome::Metadata => "metadata",
            EventOutcome::Skipped => "skipped",
            EventOutcome::Rejected => "rejected",
            EventOutcome::Unauthorized => "unauthorized",
            EventOutcome::Overloaded => "overloaded",
        }
    }
}

/// What became of one SNS delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnsOutcome {
    /// The signature verified against SNS's certificate.
    Verified,
    /// Malformed, or not authentic (bad signature, certificate or URL not SNS's).
    Refused,
    /// The signing certificate could not be fetched or read: answered 503.
    CertificateUnavailable,
    /// Raw message delivery: no envelope, no signature.
    Raw,
    /// A subscription confirmed by visiting its SubscribeURL.
    Confirmed,
    /// A subscription that could not be confirmed (see the Warning Event).
    Unconfirmed,
}

impl SnsOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SnsOutcome::Verified => "verified",
            SnsOutcome::Refused => "refused",
            SnsOutcome::CertificateUnavailable => "certificate_unavailable",
            SnsOutcome::Raw => "raw",
            SnsOutcome::Confirmed => "confirmed",
            SnsOutcome::Unconfirmed => "unconfirmed",
        }
    }
}

#[derive(Debug, Clone)]
pub struct GatewayMetrics {
    events: IntCounterVec,
    duration: HistogramVec,
    sns: IntCounterVec,
    sns_unconfirmed: IntGaugeVec,
    /// The series of the endpoints in [`Source`], looked up once: a label lookup hashes the
    /// label values and takes the family's lock, twice per request otherwise.
    endpoints: Arc<[Endpoint; 2]>,
}

/// One endpoint's series: its events by outcome (in [`EventOutcome::ALL`]'s order) and its
/// request durations.
#[derive(Debug)]
struct Endpoint {
    events: [IntCounter; EventOutcome::ALL.len()],
    duration: Histogram,
}

impl GatewayMetrics {
    /// Creates the metrics and registers them; call once per registry.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let events = IntCounterVec::new(
            Opts::new(
                "zeroflow_events_received_total",
                "Storage notifications by endpoint and outcome: accepted/duplicate/skipped per record and \
                 pipeline, unrouted/metadata/ignored per record, rejected/unauthorized/overloaded per request",
            ),
            &["source", "outcome"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new("zeroflow_gateway_request_duration_seconds", "Time to answer one notification request")
                .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
            &["source"],
        )?;
        let sns = IntCounterVec::new(
            Opts::new("zeroflow_sns_messages_total", "SNS deliveries by message type and what became of them"),
            &["type", "outcome"],
        )?;
        let sns_unconfirmed = IntGaugeVec::new(
            Opts::new(
                "zeroflow_sns_subscription_unconfirmed",
                "1 for an SNS topic whose subscription to this gateway could not be confirmed (SNS delivers \
                 nothing until it is), 0 once confirmed; only topics whose messages were signed by SNS appear",
            ),
            &["topic_arn"],
        )?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(sns.clone()))?;
        registry.register(Box::new(sns_unconfirmed.clone()))?;
        let endpoint = |source: Source| Endpoint {
            events: EventOutcome::ALL.map(|outcome| events.with_label_values(&[source.as_str(), outcome.as_str()])),
            duration: duration.with_label_values(&[source.as_str()]),
        };
        let endpoints = Arc::new(Source::ALL.map(endpoint));
        Ok(Self { events, duration, sns, sns_unconfirmed, endpoints })
    }

    fn endpoint(&self, source: Source) -> &Endpoint {
        &self.endpoints[source as usize]
    }

    pub fn count(&self, source: Source, outcome: EventOutcome, n: u64) {
        if n > 0 {
            self.endpoint(source).events[outcome as usize].inc_by(n);
        }
    }

    pub fn observe(&self, source: Source, seconds: f64) {
        self.endpoint(source).duration.observe(seconds);
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

    /// Counts one SNS delivery of type `kind` (`Notification`, ...).
    pub fn sns(&self, kind: &str, outcome: SnsOutcome) {
        self.sns.with_label_values(&[kind, outcome.as_str()]).inc();
    }

    /// Marks a verified topic's subscription as unconfirmed or not.
    pub fn sns_unconfirmed(&self, topic_arn: &str, unconfirmed: bool) {
        self.sns_unconfirmed.with_label_values(&[topic_arn]).set(i64::from(unconfirmed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cached series are indexed by discriminant: the lists must be in declaration order.
    #[test]
    fn cached_series_are_indexed_in_declaration_order() {
        for (i, source) in Source::ALL.into_iter().enumerate() {
            assert_eq!(source as usize, i, "{}", source.as_str());
        }
        for (i, outcome) in EventOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i, "{}", outcome.as_str());
        }
    }

    #[test]
    fn counts_land_in_their_labelled_series() {
        let registry = Registry::new();
        let metrics = GatewayMetrics::register(&registry).expect("register");
        metrics.count(Source::CloudEvents, EventOutcome::Duplicate, 3);
        metrics.count(Source::S3, EventOutcome::Accepted, 2);
        metrics.observe(Source::S3, 0.001);
        let value = |source: &str, outcome: &str| metrics.events.with_label_values(&[source, outcome]).get();
        assert_eq!(value("cloudevents", "duplicate"), 3);
        assert_eq!(value("s3", "accepted"), 2);
        assert_eq!(value("s3", "duplicate"), 0);
        assert_eq!(metrics.duration.with_label_values(&["s3"]).get_sample_count(), 1);
        assert_eq!(metrics.duration.with_label_values(&["cloudevents"]).get_sample_count(), 0);
    }
}
