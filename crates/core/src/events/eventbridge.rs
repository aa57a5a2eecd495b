//! S3 events in EventBridge's own envelope, as an API destination posts them.
//!
//! AWS S3 cannot call a webhook; with EventBridge enabled on a bucket, a rule on `source:
//! aws.s3` can send each event to an API destination, which POSTs the event unchanged
//! (Amazon S3 user guide, "EventBridge event message structure"):
//!
//! ```json
//! {"version": "0", "id": "...", "detail-type": "Object Created", "source": "aws.s3",
//!  "account": "111122223333", "time": "2021-11-12T00:00:00Z", "region": "ca-central-1",
//!  "resources": ["arn:aws:s3:::bucket"],
//!  "detail": {"version": "0", "bucket": {"name": "bucket"},
//!             "object": {"key": "k", "size": 5, "etag": "...", "version-id": "...", "sequencer": "..."},
//!             "request-id": "...", "requester": "...", "reason": "PutObject"}}
//! ```
//!
//! The kind comes from `detail-type` ([`eventbridge_kind`]). Keys are form-escaped like the
//! notification records' (AWS's own Lambda Powertools decodes them with `unquote_plus`).
//! `Object Deleted` carries no size or etag.

use serde::Deserialize;
use serde_json::Value;

use super::key::KeyEncoding;
use super::names::eventbridge_kind;
use super::{EventKind, JsonU64, RecordError, RecordParts, StorageEvent, bare_etag, record_event};

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type")]
    detail_type: String,
    source: String,
    time: Option<String>,
    detail: Value,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(default)]
    bucket: DetailBucket,
    #[serde(default)]
    object: DetailObject,
}

#[derive(Default, Deserialize)]
struct DetailBucket {
    #[serde(default)]
    name: String,
}

#[derive(Default, Deserialize)]
struct DetailObject {
    #[serde(default)]
    key: String,
    size: Option<JsonU64>,
    etag: Option<String>,
    #[serde(rename = "version-id")]
    version_id: Option<String>,
    sequencer: Option<String>,
}

/// Whether a JSON document looks like an EventBridge event (any source): the three fields
/// every EventBridge event has and no storage notification does.
pub fn is_envelope(value: &Value) -> bool {
    ["detail-type", "source", "detail"].iter().all(|field| value.get(field).is_some())
}

/// Parses an EventBridge event of `source: aws.s3` into its storage event.
pub fn parse_envelope(value: Value) -> Result<Vec<StorageEvent>, RecordError> {
    let envelope: Envelope = serde_json::from_value(value)?;
    if envelope.source != "aws.s3" {
        return Err(RecordError::UnsupportedSource(envelope.source));
    }
    let kind = eventbridge_kind(&envelope.detail_type);
    Ok(vec![detail_event(envelope.detail, kind, envelope.time)?])
}

/// One event from an EventBridge `detail` whose kind the caller knows (from `detail-type`, or
/// from a CloudEvent's type).
pub(crate) fn detail_event(detail: Value, kind: EventKind, time: Option<String>) -> Result<StorageEvent, RecordError> {
    let detail: Detail = serde_json::from_value(detail)?;
    let object = detail.object;
    let size = match object.size.map(|s| s.value("size")) {
        Some(Err(e)) if kind.is_work() => return Err(e),
        size => size.and_then(Result::ok),
    };
    record_event(
        kind,
        RecordParts {
            index: 0,
            bucket: &detail.bucket.name,
            wire_key: &object.key,
            encoding: KeyEncoding::Form,
            etag: object.etag.as_deref().and_then(bare_etag),
            version_id: object.version_id,
            size,
            sequencer: object.sequencer,
            time,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Case 14: the envelope an API destination posts, exactly as the case gives it.
    pub(crate) const CASE14: &str = include_str!("../../testdata/events/case14-eventbridge-object-created.json");

    fn parse(body: &str) -> Result<Vec<StorageEvent>, RecordError> {
        parse_envelope(serde_json::from_str(body)?)
    }

    #[test]
    fn case14_object_created() {
        let value: Value = serde_json::from_str(CASE14).expect("json");
        assert!(is_envelope(&value));
        let events = parse_envelope(value).expect("parses");
        assert_eq!(
            events,
            vec![StorageEvent {
                kind: EventKind::Created,
                bucket: "in-bucket".into(),
                key: "incoming/report.csv".into(),
                etag: Some("b1946ac92492d2347c6235b4d2611184".into()),
                version_id: Some("IYV3p45BT0ac8hjHg1houSdS1a.Mro8e".into()),
                size: Some(5),
                sequencer: Some("617f08299329d189".into()),
                time: Some("2026-01-10T10:00:00Z".into()),
            }]
        );
    }

    #[test]
    fn case14_object_deleted_is_a_removal_without_size_or_etag() {
        let deleted = r#"{"version":"0","id":"2ee9cc15-d022-99ea-1fb8-1b1bac4850f9","detail-type":"Object Deleted",
            "source":"aws.s3","account":"111122223333","time":"2026-01-10T10:00:00Z","region":"eu-west-1",
            "resources":["arn:aws:s3:::in-bucket"],
            "detail":{"version":"0","bucket":{"name":"in-bucket"},
              "object":{"key":"incoming/report.csv","sequencer":"617f08299329d189"},
              "request-id":"0BH729840619AG5K","requester":"111122223333","source-ip-address":"192.0.2.10",
              "reason":"DeleteObject","deletion-type":"Permanently Deleted"}}"#;
        let events = parse(deleted).expect("parses");
        assert_eq!((events[0].kind.clone(), events[0].key.as_str()), (EventKind::Removed, "incoming/report.csv"));
        assert_eq!((events[0].size, events[0].etag.as_deref()), (None, None));
    }

    #[test]
    fn metadata_detail_types_and_escaped_keys() {
        let tags = CASE14.replace("Object Created", "Object Tags Added");
        assert_eq!(parse(&tags).expect("parses")[0].kind, EventKind::Metadata("Object Tags Added".into()));
        let escaped = CASE14.replace("incoming/report.csv", "incoming/a+b%2Bc.csv");
        assert_eq!(parse(&escaped).expect("parses")[0].key, "incoming/a b+c.csv");
        let elsewhere = CASE14.replace("\"aws.s3\"", "\"aws.ec2\"");
        assert!(matches!(parse(&elsewhere), Err(RecordError::UnsupportedSource(_))));
        let empty_key = CASE14.replace("incoming/report.csv", "");
        assert!(matches!(parse(&empty_key), Err(RecordError::Key { .. })));
        let tag_without_key = tags.replace("incoming/report.csv", "");
        assert!(parse(&tag_without_key).is_ok(), "a metadata event is never refused for its key");
    }

    proptest! {
        #[test]
        fn never_panics_on_mutated_envelopes(cut in 0..CASE14.len(), byte in any::<u8>()) {
            let mut body = CASE14.as_bytes().to_vec();
            body[cut] = byte;
            if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                let _ = is_envelope(&value);
                let _ = parse_envelope(value);
            }
        }

        #[test]
        fn keys_round_trip_through_form_escaping(key in "[^\u{0}]{1,100}") {
            let escaped: String = form_urlencoded::byte_serialize(key.as_bytes()).collect();
            let mut value: Value = serde_json::from_str(CASE14).expect("json");
            value["detail"]["object"]["key"] = Value::String(escaped);
            prop_assert_eq!(&parse_envelope(value).expect("parses")[0].key, &key);
        }
    }
}
