//! What to do with one queued message body (an SQS message, a Kafka record): pure, no I/O
//! apart from the admission it is handed.
//!
//! A body is one of:
//! - an S3 event notification, `{"Records": [...]}`, as S3 sends it to a queue
//!   (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html>);
//! - S3's `{"Event": "s3:TestEvent", ...}`, sent once when a notification is configured;
//! - either of those inside an SNS envelope (`{"Type": "Notification", "Message": "<the S3 JSON
//!   as a string>"}`), what an SNS topic subscribed by the queue without raw message delivery
//!   sends (<https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html>);
//! - anything else, which no amount of retrying turns into an event.
//!
//! Decision (documented in docs/sources/sqs.md): a message that can never become an event is
//! deleted and counted (`rejected`, or `ignored` for test events), never left to reappear: a
//! FIFO queue would hold its whole message group behind it, and a standard queue without a
//! redrive policy would deliver it forever. Its id and a short excerpt are logged.

use std::time::Instant;

use serde::Deserialize;
use zeroflow_core::admission::Admission;
use zeroflow_core::events::parse_json;
use zeroflow_core::events::{EventKind, StorageEvent};

use crate::gateway::metrics::{EventOutcome, GatewayMetrics};

/// What one message body means.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Storage events to admit (created and removed objects only, possibly none when every
    /// record was of another kind); the message is deleted once they are admitted.
    Admit {
        events: Vec<StorageEvent>,
        /// Metadata-only records (tagging, ACL, restore...), counted as `metadata`.
        metadata: u64,
        /// Records of other kinds, counted as `ignored`.
        ignored: u64,
    },
    /// Nothing to admit, ever: delete the message now.
    Discard { kind: Discard, reason: String },
}

/// Why a message was discarded; each is counted under its own outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// S3's `s3:TestEvent` (counted `ignored`).
    TestEvent,
    /// Not a storage notification (counted `rejected`).
    Malformed,
}

#[derive(Deserialize)]
struct SnsEnvelope {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Message")]
    message: Option<String>,
}

#[derive(Deserialize)]
struct TestEventProbe {
    #[serde(rename = "Event")]
    event: Option<String>,
}

/// Classifies a message body (see the module's documentation for the shapes).
pub fn classify(body: &str) -> Verdict {
    // An SNS envelope is recognised by its `Type`; an S3 notification has no such field.
    if let Ok(envelope) = serde_json::from_str::<SnsEnvelope>(body) {
        return match (envelope.kind.as_str(), envelope.message) {
            ("Notification", Some(message)) => classify_s3(&message),
            (kind, _) => malformed(format!("SNS message of type {kind:?}, not a Notification")),
        };
    }
    classify_s3(body)
}

fn classify_s3(body: &str) -> Verdict {
    match parse_json(body.as_bytes()) {
        Ok(events) if events.is_empty() && is_test_event(body) => {
            Verdict::Discard { kind: Discard::TestEvent, reason: "s3:TestEvent".into() }
        }
        Ok(events) => {
            let metadata = events.iter().filter(|e| matches!(e.kind, EventKind::Metadata(_))).count() as u64;
            let ignored = events.iter().filter(|e| matches!(e.kind, EventKind::Other(_))).count() as u64;
            let events: Vec<_> =
                events.into_iter().filter(|e| matches!(e.kind, EventKind::Created | EventKind::Removed)).collect();
            Verdict::Admit { events, metadata, ignored }
        }
        Err(e) => malformed(e.to_string()),
    }
}

fn is_test_event(body: &str) -> bool {
    serde_json::from_str::<TestEventProbe>(body).is_ok_and(|p| p.event.as_deref() == Some("s3:TestEvent"))
}

fn malformed(reason: String) -> Verdict {
    Verdict::Discard { kind: Discard::Malformed, reason }
}

/// What became of one message, and whether to acknowledge it (delete it from SQS, commit past
/// it in Kafka).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Acknowledge it: admitted, or never admissible. False only when a backlog was full: the
    /// message must be admitted again later (SQS: it comes back after its visibility timeout).
    pub delete: bool,
    pub accepted: u64,
    pub duplicate: u64,
    pub unrouted: u64,
    pub skipped: u64,
    /// Routes to pipelines outside the queue's namespace (see [`settle`]).
    pub not_permitted: u64,
    pub metadata: u64,
    pub ignored: u64,
    pub rejected: u64,
    pub overloaded: u64,
}

/// Admits one message's events (the pure part of the consumer, apart from `admission`).
/// Records routed to no pipeline are counted and the message deleted: no pipeline wants them,
/// and a pipeline created later lists its bucket at start-up (resync) anyway.
///
/// `namespace` is whose queue it is: `None` for the operator's own queues and topics (its
/// flags, as trusted as the operator-wide token: their events reach every namespace), `Some(ns)`
/// for a queue a pipeline of `ns` names, whose events reach only the pipelines of `ns`; routes
/// elsewhere are counted `not_permitted`, and the message is deleted all the same.
pub fn settle(
    admission: &impl Admission,
    body: &str,
    received_at: Instant,
    namespace: Option<&str>,
) -> (Settled, Option<String>) {
    match classify(body) {
        Verdict::Discard { kind: Discard::TestEvent, .. } => {
            (Settled { delete: true, ignored: 1, ..Settled::default() }, None)
        }
        Verdict::Discard { kind: Discard::Malformed, reason } => {
            (Settled { delete: true, rejected: 1, ..Settled::default() }, Some(reason))
        }
        Verdict::Admit { events, metadata, ignored } if events.is_empty() => {
            (Settled { delete: true, metadata, ignored, ..Settled::default() }, None)
        }
        Verdict::Admit { events, metadata, ignored } => match admission.admit(&events, received_at, namespace) {
            Ok(report) => (
                Settled {
                    delete: true,
                    accepted: report.accepted,
                    duplicate: report.duplicate,
                    unrouted: report.unrouted,
                    skipped: report.skipped,
                    not_permitted: report.not_permitted,
                    metadata,
                    ignored,
                    ..Settled::default()
                },
                None,
            ),
            Err(_) => (Settled { delete: false, overloaded: 1, ..Settled::default() }, None),
        },
    }
}

impl Settled {
    /// Counts the outcomes in `zeroflow_events_received_total{source, outcome}`.
    pub fn count(&self, metrics: &GatewayMetrics, source: &'static str) {
        for (outcome, n) in [
            (EventOutcome::Accepted, self.accepted),
            (EventOutcome::Duplicate, self.duplicate),
            (EventOutcome::Unrouted, self.unrouted),
            (EventOutcome::Skipped, self.skipped),
            (EventOutcome::NotPermitted, self.not_permitted),
            (EventOutcome::Metadata, self.metadata),
            (EventOutcome::Ignored, self.ignored),
            (EventOutcome::Rejected, self.rejected),
            (EventOutcome::Overloaded, self.overloaded),
        ] {
            metrics.count_as(source, outcome, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as S3 sends it to SQS (trimmed of identity and request fields).
    const S3_PUT: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
        "eventTime":"2026-11-27T10:00:00.000Z","eventName":"ObjectCreated:Put",
        "s3":{"s3SchemaVersion":"1.0","configurationId":"zeroflow",
              "bucket":{"name":"photos","arn":"arn:aws:s3:::photos"},
              "object":{"key":"in/a+b%2Bc.jpg","size":12,"eTag":"0123abcd","sequencer":"0055AED6DCD90281E5"}}}]}"#;

    /// S3's test event (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html>).
    const TEST_EVENT: &str = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-27T10:00:00.000Z",
        "Bucket":"photos","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}"#;

    fn sns(message: &str) -> String {
        serde_json::json!({"Type": "Notification", "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:s3-events", "Subject": "Amazon S3 Notification",
            "Message": message, "Timestamp": "2026-11-27T10:00:01.000Z", "SignatureVersion": "1",
            "Signature": "EXAMPLE", "SigningCertURL": "https://sns.us-east-1.amazonaws.com/x.pem",
            "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe"})
        .to_string()
    }

    #[test]
    fn an_s3_record_is_admitted_with_its_key_decoded() {
        let Verdict::Admit { events, metadata: 0, ignored: 0 } = classify(S3_PUT) else { panic!("not admitted") };
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].bucket.as_str(), events[0].key.as_str()), ("photos", "in/a b+c.jpg"));
        assert_eq!(events[0].etag.as_deref(), Some("0123abcd"));
    }

    #[test]
    fn the_same_record_inside_an_sns_envelope_is_admitted_alike() {
        assert_eq!(classify(&sns(S3_PUT)), classify(S3_PUT));
    }

    #[test]
    fn test_events_are_discarded_bare_or_wrapped() {
        for body in [TEST_EVENT.to_owned(), sns(TEST_EVENT)] {
            assert!(matches!(classify(&body), Verdict::Discard { kind: Discard::TestEvent, .. }), "{body}");
        }
    }

    #[test]
    fn what_can_never_be_an_event_is_discarded_as_malformed() {
        let unsubscribe = r#"{"Type":"UnsubscribeConfirmation","Message":"You have chosen to deactivate"}"#;
        for body in ["not json", "{}", r#"{"Records": [{"eventName": 3}]}"#, unsubscribe, &sns("hello")] {
            assert!(matches!(classify(body), Verdict::Discard { kind: Discard::Malformed, .. }), "{body}");
        }
    }

    /// Records MinIO really published to Kafka (`e2e/tests/services/kafka.rs` keeps them true).
    #[test]
    fn minio_kafka_records_are_admitted() {
        let put = include_str!("../../../e2e/fixtures/minio-kafka-put.json");
        let Verdict::Admit { events, ignored: 0, .. } = classify(put) else { panic!("not admitted") };
        assert_eq!((events[0].bucket.as_str(), events[0].key.as_str()), ("fixture-bucket", "incoming/a b.csv"));
        assert_eq!(events[0].kind, EventKind::Created);
        let delete = include_str!("../../../e2e/fixtures/minio-kafka-delete.json");
        let Verdict::Admit { events, ignored: 0, .. } = classify(delete) else { panic!("not admitted") };
        assert_eq!(events[0].kind, EventKind::Removed);
    }

    #[test]
    fn metadata_and_other_records_are_counted_not_admitted() {
        let restore = S3_PUT.replace("ObjectCreated:Put", "ObjectRestore:Completed");
        assert_eq!(classify(&restore), Verdict::Admit { events: vec![], metadata: 1, ignored: 0 });
        let read = S3_PUT.replace("ObjectCreated:Put", "ObjectAccessed:Get");
        assert_eq!(classify(&read), Verdict::Admit { events: vec![], metadata: 0, ignored: 1 });
        let removed = S3_PUT.replace("ObjectCreated:Put", "ObjectRemoved:Delete");
        let Verdict::Admit { events, ignored: 0, .. } = classify(&removed) else { panic!("not admitted") };
        assert_eq!(events[0].kind, EventKind::Removed);
    }
}

#[cfg(test)]
mod settle_tests {
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
        let (first, _) = settle(&p, &put("photos", "in/a.jpg"), Instant::now(), None);
        assert_eq!(first, Settled { delete: true, accepted: 1, ..Settled::default() });
        let (again, _) = settle(&p, &put("photos", "in/a.jpg"), Instant::now(), None);
        assert_eq!(again, Settled { delete: true, duplicate: 1, ..Settled::default() });
    }

    #[test]
    fn a_full_backlog_keeps_the_message() {
        let p = pipelines(1);
        assert!(settle(&p, &put("photos", "in/1"), Instant::now(), None).0.delete);
        let (full, _) = settle(&p, &put("photos", "in/2"), Instant::now(), None);
        assert_eq!(full, Settled { delete: false, overloaded: 1, ..Settled::default() });
    }

    #[test]
    fn unrouted_test_and_poison_messages_are_deleted_and_counted() {
        let p = pipelines(10);
        let (unrouted, _) = settle(&p, &put("elsewhere", "in/a"), Instant::now(), None);
        assert_eq!(unrouted, Settled { delete: true, unrouted: 1, ..Settled::default() });
        let (test, _) =
            settle(&p, r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"photos"}"#, Instant::now(), None);
        assert_eq!(test, Settled { delete: true, ignored: 1, ..Settled::default() });
        let (poison, reason) = settle(&p, "{\"Records\": 42}", Instant::now(), None);
        assert_eq!(poison, Settled { delete: true, rejected: 1, ..Settled::default() });
        assert!(reason.is_some());
    }

    #[test]
    fn a_namespace_queue_admits_only_into_its_namespace_and_deletes_the_rest() {
        let p = pipelines(10);
        let (elsewhere, _) = settle(&p, &put("photos", "in/a.jpg"), Instant::now(), Some("other"));
        assert_eq!(elsewhere, Settled { delete: true, not_permitted: 1, ..Settled::default() });
        // Accepted, not a duplicate: the first message admitted nothing.
        let (own, _) = settle(&p, &put("photos", "in/a.jpg"), Instant::now(), Some("media"));
        assert_eq!(own, Settled { delete: true, accepted: 1, ..Settled::default() });
    }
}
