//! S3 notification records as MinIO's webhook, AWS and Ceph RGW send them.
//!
//! MinIO wraps the records: `{"EventName": "s3:ObjectCreated:Put", "Key": "bucket/key",
//! "Records": [...]}` with `eventName` prefixed `s3:` and `eventSource` `minio:s3`; AWS sends
//! `{"Records": [...]}` with `ObjectCreated:Put` and `aws:s3`; Ceph sends `{"Records": [...]}`
//! with `ceph:s3`, `eventVersion` 2.1 or 2.2, its own extensions (`s3.bucket.id`, `eventId`,
//! `opaqueData`, `s3.object.metadata` and `tags` as arrays of `{key, val}`) and, in its
//! documentation's sample, `size` as a string. AWS and MinIO query-escape `s3.object.key`; Ceph
//! sends it raw (see [`KeyEncoding`]). AWS's `s3:TestEvent` (sent when a destination is
//! configured) carries no records.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};
use serde_json::Value;

use super::key::KeyEncoding;
use super::names::s3_kind;
use super::{JsonU64, RecordError, RecordParts, StorageEvent, bare_etag, record_event};

/// Any JSON notification document. The EventBridge fields are read here too, so that the usual
/// records are parsed in one pass, without an intermediate `Value` (three times slower).
/// Strings that are only looked at, or copied into the event in another form, are [`Text`]:
/// borrowed from the body when they hold no escapes, so a record costs a few allocations
/// instead of a dozen.
#[derive(Deserialize)]
struct Notification<'a> {
    #[serde(rename = "Records", borrow)]
    records: Option<Vec<Record<'a>>>,
    #[serde(rename = "Event")]
    event: Option<String>,
    /// Ceph's pubsub sync module (Nautilus to Quincy) pushed `{"events": [...]}`.
    events: Option<Value>,
    #[serde(rename = "detail-type")]
    detail_type: Option<Value>,
    source: Option<Value>,
    detail: Option<Value>,
    time: Option<Value>,
}

#[derive(Deserialize)]
pub(crate) struct Record<'a> {
    #[serde(rename = "eventName", borrow)]
    event_name: Text<'a>,
    #[serde(rename = "eventSource", borrow)]
    event_source: Option<Text<'a>>,
    #[serde(rename = "eventTime")]
    event_time: Option<String>,
    /// A Ceph extension (the id to ack a pulled event by).
    #[serde(rename = "eventId")]
    event_id: Option<Value>,
    #[serde(borrow)]
    s3: Entity<'a>,
}

#[derive(Deserialize)]
struct Entity<'a> {
    #[serde(borrow)]
    bucket: Bucket<'a>,
    #[serde(borrow)]
    object: Object<'a>,
}

#[derive(Deserialize)]
struct Bucket<'a> {
    #[serde(default, borrow)]
    name: Text<'a>,
    /// A Ceph extension: the bucket's RADOS id.
    id: Option<Value>,
}

#[derive(Deserialize)]
struct Object<'a> {
    /// Absent or empty in some senders' bucket-level and tagging records (rustfs#2292).
    #[serde(default, borrow)]
    key: Text<'a>,
    size: Option<JsonU64>,
    #[serde(rename = "eTag", alias = "etag", borrow)]
    etag: Option<Text<'a>>,
    #[serde(rename = "versionId")]
    version_id: Option<String>,
    sequencer: Option<String>,
}

/// A JSON string, borrowed from the document when it holds no escapes. (serde borrows a
/// `Cow<str>` field itself, but not one inside an `Option`, which always comes out owned.)
#[derive(Default)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Cow<'de, str>;

            // The same words as `String`'s, so refusals read as before.
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        deserializer.deserialize_str(TextVisitor).map(Text)
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

const CEPH_PUBSUB_EVENTS: &str = "Ceph's pubsub \"events\" format (the pubsub sync module, removed in Reef) \
    carries no object etag, so a rewritten object could not be told from a duplicate: configure a bucket \
    notification with an HTTP topic instead (it sends S3 records)";

/// Parses a notification body of S3 records. An S3 test event yields no records.
pub fn parse_notification(body: &[u8]) -> Result<Vec<StorageEvent>, RecordError> {
    notification_events(serde_json::from_str(utf8(body)?)?, false)
}

/// JSON is UTF-8 (RFC 8259, 8.1). serde_json checks it only in the strings it keeps, not in the
/// fields it skips, so the whole body is checked first: a document is valid or refused as a
/// whole, the same here as inside an SNS message.
fn utf8(body: &[u8]) -> Result<&str, RecordError> {
    std::str::from_utf8(body).map_err(|_| RecordError::NotUtf8)
}

/// Parses a full notification given as a JSON value (its strings are borrowed from it).
pub(crate) fn parse_notification_value(value: Value) -> Result<Vec<StorageEvent>, RecordError> {
    notification_events(Notification::deserialize(&value)?, false)
}

/// Parses S3 records or an EventBridge event (see [`super::parse_json`]).
pub(crate) fn parse_any(body: &[u8]) -> Result<Vec<StorageEvent>, RecordError> {
    notification_events(serde_json::from_str(utf8(body)?)?, true)
}

/// Parses one record given as a JSON value (the `data` of an S3 CloudEvent).
pub(crate) fn parse_record_value(value: Value) -> Result<StorageEvent, RecordError> {
    record_to_event(Record::deserialize(&value)?, 0)
}

fn notification_events(notification: Notification<'_>, eventbridge: bool) -> Result<Vec<StorageEvent>, RecordError> {
    if eventbridge
        && let Notification { detail_type: Some(detail_type), source: Some(source), detail: Some(detail), time, .. } =
            notification
    {
        let envelope =
            serde_json::json!({"detail-type": detail_type, "source": source, "detail": detail, "time": time});
        return super::eventbridge::parse_envelope(envelope);
    }
    match notification {
        Notification { records: Some(records), .. } => {
            records.into_iter().enumerate().map(|(i, r)| record_to_event(r, i)).collect()
        }
        Notification { event: Some(event), .. } if event == "s3:TestEvent" => Ok(Vec::new()),
        Notification { events: Some(_), .. } => Err(RecordError::Refused(CEPH_PUBSUB_EVENTS)),
        _ => Err(RecordError::Shape("no Records")),
    }
}

/// How this record's sender writes keys. Ceph names itself `ceph:s3`; a record that carries
/// Ceph's own extensions (`s3.bucket.id` and `eventId`) is Ceph's whatever its `eventSource`
/// says, since the same code wrote it.
fn key_encoding(record: &Record<'_>) -> KeyEncoding {
    let ceph_source = record.event_source.as_deref().is_some_and(|s| s.starts_with("ceph:"));
    let ceph_shape = record.s3.bucket.id.is_some() && record.event_id.is_some();
    if ceph_source || ceph_shape { KeyEncoding::Raw } else { KeyEncoding::Form }
}

fn record_to_event(record: Record<'_>, index: usize) -> Result<StorageEvent, RecordError> {
    // `minio:s3`, `aws:s3`, `ceph:s3`: every S3-compatible sender names itself `<who>:s3`.
    if let Some(source) = &record.event_source
        && !source.ends_with(":s3")
    {
        return Err(RecordError::UnsupportedSource(source.0.to_string()));
    }
    let encoding = key_encoding(&record);
    let kind = s3_kind(&record.event_name);
    let object = record.s3.object;
    // Like the key, the size only has to make sense where the record is work.
    let size = match object.size.map(|s| s.value("size")) {
        Some(Err(e)) if kind.is_work() => return Err(e),
        size => size.and_then(Result::ok),
    };
    record_event(
        kind,
        RecordParts {
            index,
            bucket: &record.s3.bucket.name,
            wire_key: &object.key,
            encoding,
            etag: object.etag.as_deref().and_then(bare_etag),
            version_id: object.version_id,
            size,
            sequencer: object.sequencer,
            time: record.event_time,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;
    use proptest::prelude::*;

    /// The shape MinIO's webhook target posts (trimmed of identity and request fields).
    pub(crate) const MINIO_PUT: &str = r#"{
      "EventName": "s3:ObjectCreated:Put",
      "Key": "raw-invoices/incoming/march 2026+q1.csv",
      "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
        "eventTime": "2026-11-27T10:00:00.000Z", "eventName": "s3:ObjectCreated:Put",
        "userIdentity": {"principalId": "minioadmin"},
        "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "1", "x-minio-origin-endpoint": "http://127.0.0.1:9000"},
        "s3": {
          "s3SchemaVersion": "1.0", "configurationId": "Config",
          "bucket": {"name": "raw-invoices", "ownerIdentity": {"principalId": "minioadmin"}, "arn": "arn:aws:s3:::raw-invoices"},
          "object": {"key": "incoming%2Fmarch+2026%2Bq1.csv", "size": 1234, "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                     "contentType": "text/csv", "userMetadata": {"content-type": "text/csv"}, "sequencer": "17A1B2C3D4E5F607"}
        },
        "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.0"}
      }]
    }"#;

    const AWS_DELETE: &str = r#"{"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-27T10:00:00.000Z", "eventName": "ObjectRemoved:Delete",
        "s3": {"bucket": {"name": "b"}, "object": {"key": "a/b+c.txt", "sequencer": "0055AED6DCD90281E5"}}
    }]}"#;

    /// Case 01: MinIO's tag write on a processed object, exactly as the case gives it.
    const CASE01: &str = include_str!("../../testdata/events/case01-minio-puttagging.json");
    /// Case 03: Ceph RGW's two records with raw keys.
    const CASE03: &str = include_str!("../../testdata/events/case03-ceph-raw-keys.json");
    /// Case 07: a folder placeholder's creation, as MinIO announces it.
    const CASE07: &str = include_str!("../../testdata/events/case07-folder-marker.json");

    /// Found by fuzzing (fuzz/regressions/s3_json): serde_json skips ignored string fields
    /// without checking their UTF-8, so a body that is not JSON was accepted on the gateway's
    /// direct path while the same document inside an SNS message was refused.
    /// RFC 8259 leaves a repeated name's meaning to the receiver; a record that names its object
    /// twice says two things, so it is refused whichever copy is malformed, not guessed at.
    #[test]
    fn a_record_that_repeats_a_field_is_refused() {
        for object in
            [r#""object":{"key":{}},"object":{"key":"a.csv"}"#, r#""object":{"key":"a.csv"},"object":{"key":"b.csv"}"#]
        {
            let body = format!(
                r#"{{"Records":[{{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"b"}},{object}}}}}]}}"#
            );
            let result = parse_any(body.as_bytes());
            assert!(matches!(result, Err(RecordError::Json(_))), "{body}: {result:?}");
        }
    }

    /// Strings are borrowed from the body where they can be; escaped ones are decoded all the same.
    #[test]
    fn escaped_strings_read_the_same_as_plain_ones() {
        let plain = r#"{"Records":[{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b/c"},"object":{"key":"a%2Fb.csv","eTag":"\"e1\""}}}]}"#;
        let escaped = r#"{"Records":[{"eventSource":"aws:\u0073\u0033","eventName":"ObjectCreated:\u0050ut","s3":{"bucket":{"name":"b\/c"},"object":{"key":"a%2F\u0062.csv","eTag":"\"e\u0031\""}}}]}"#;
        let expected = parse_any(plain.as_bytes()).expect("plain parses");
        assert_eq!(parse_any(escaped.as_bytes()).expect("escaped parses"), expected);
        assert_eq!((expected[0].bucket.as_str(), expected[0].key.as_str()), ("b/c", "a/b.csv"));
        assert_eq!(expected[0].etag.as_deref(), Some("e1"));
        let value: Value = serde_json::from_str(escaped).expect("JSON");
        assert_eq!(parse_notification_value(value.clone()).expect("from a value"), expected);
        let record = value["Records"][0].clone();
        assert_eq!(parse_record_value(record).expect("one record from a value"), expected[0]);
        let not_a_string = plain.replace(r#""name":"b/c""#, r#""name":7"#);
        let err = parse_any(not_a_string.as_bytes()).expect_err("a number is no bucket name").to_string();
        assert!(err.contains("expected a string"), "{err}");
    }

    #[test]
    fn a_body_that_is_not_utf8_is_refused_even_in_fields_not_read() {
        let mut bad = AWS_DELETE.replace(r#""awsRegion": "us-east-1""#, "\"awsRegion\": \"\u{1}\"").into_bytes();
        let at = bad.iter().position(|b| *b == 1).expect("marker");
        bad[at] = 0x95;
        assert!(matches!(parse_any(&bad), Err(RecordError::NotUtf8)), "{:?}", parse_any(&bad));
        assert!(matches!(parse_notification(&bad), Err(RecordError::NotUtf8)));
        assert!(parse_any(AWS_DELETE.as_bytes()).is_ok());
    }

    #[test]
    fn minio_put_decodes_key_size_and_etag() {
        let events = parse_notification(MINIO_PUT.as_bytes()).expect("parses");
        assert_eq!(
            events,
            vec![StorageEvent {
                kind: EventKind::Created,
                bucket: "raw-invoices".into(),
                key: "incoming/march 2026+q1.csv".into(),
                etag: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
                version_id: None,
                size: Some(1234),
                sequencer: Some("17A1B2C3D4E5F607".into()),
                time: Some("2026-11-27T10:00:00.000Z".into()),
            }]
        );
    }

    #[test]
    fn aws_removal_has_no_size_or_etag() {
        let events = parse_notification(AWS_DELETE.as_bytes()).expect("parses");
        assert_eq!(events[0].kind, EventKind::Removed);
        assert_eq!(events[0].key, "a/b c.txt");
        assert_eq!((events[0].size, events[0].etag.as_deref()), (None, None));
    }

    #[test]
    fn test_event_has_no_records() {
        let body = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-27T10:00:00Z","Bucket":"b"}"#;
        assert!(parse_notification(body.as_bytes()).expect("parses").is_empty());
    }

    #[test]
    fn case01_metadata_writes_are_never_content() {
        for name in ["PutTagging", "DeleteTagging", "PutRetention", "PutLegalHold"] {
            let body = CASE01.replace("PutTagging", name);
            let events = parse_notification(body.as_bytes()).expect("parses");
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].kind, EventKind::Metadata(format!("ObjectCreated:{name}")), "{name}");
            assert_eq!((events[0].bucket.as_str(), events[0].key.as_str()), ("in-bucket", "incoming/report.csv"));
            assert_eq!(events[0].etag.as_deref(), Some("<ETAG-OF-PROCESSED-OBJECT>"));
        }
        // rustfs sends the tag write with an empty key: still a metadata event, not an error.
        let empty = CASE01.replace(r#""key":"incoming%2Freport.csv""#, r#""key":"""#);
        let events = parse_notification(empty.as_bytes()).expect("an empty key on a tag write is no error");
        assert_eq!((events[0].kind.is_work(), events[0].key.as_str()), (false, ""));
        // The same record as an upload would be refused: only work must have a key.
        let upload = empty.replace("PutTagging", "Put");
        assert!(matches!(parse_notification(upload.as_bytes()), Err(RecordError::Key { index: 0, .. })));
    }

    #[test]
    fn case03_ceph_keys_are_raw() {
        let events = parse_notification(CASE03.as_bytes()).expect("parses");
        let keys: Vec<_> = events.iter().map(|e| (e.kind.clone(), e.bucket.as_str(), e.key.as_str())).collect();
        assert_eq!(
            keys,
            [
                (EventKind::Created, "in-bucket", "incoming/Q1 report+final.csv"),
                (EventKind::Created, "in-bucket", "incoming/100%.csv")
            ]
        );
        assert_eq!(events[0].etag.as_deref(), Some("0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f"));
        assert_eq!((events[0].size, events[0].version_id.as_deref()), (Some(11), None), "an empty versionId is none");
        assert_eq!(events[1].sequencer.as_deref(), Some("5D7A2E1B0F3C4A12"));
    }

    #[test]
    fn case03_regression_the_same_names_escaped_by_minio() {
        let minio = MINIO_PUT.replace("incoming%2Fmarch+2026%2Bq1.csv", "incoming%2FQ1+report%2Bfinal.csv");
        assert_eq!(parse_notification(minio.as_bytes()).expect("parses")[0].key, "incoming/Q1 report+final.csv");
        let minio = MINIO_PUT.replace("incoming%2Fmarch+2026%2Bq1.csv", "incoming%2F100%25.csv");
        assert_eq!(parse_notification(minio.as_bytes()).expect("parses")[0].key, "incoming/100%.csv");
    }

    #[test]
    fn every_variation_of_cephs_records() {
        // Ceph's code writes eventVersion 2.2; its documentation's sample 2.1, a string size,
        // and metadata and tags as arrays of {key, val}.
        let newer = CASE03
            .replace(r#""eventVersion":"2.1""#, r#""eventVersion":"2.2""#)
            .replace(r#""size":11"#, r#""size":"1024""#)
            .replace(
                r#""metadata":[],"tags":[]"#,
                r#""metadata":[{"key":"x-amz-meta-a","val":"1"}],"tags":[{"key":"k","val":"v"},{"key":"k","val":"w"}]"#,
            )
            .replace(r#""opaqueData":"""#, r#""opaqueData":"me@example.com""#);
        let events = parse_notification(newer.as_bytes()).expect("parses");
        assert_eq!((events[0].key.as_str(), events[0].size), ("incoming/Q1 report+final.csv", Some(1024)));
        // Older releases and its POSIX driver prefix the name with `s3:`.
        let prefixed = CASE03.replace(r#""eventName":"ObjectCreated:Put""#, r#""eventName":"s3:ObjectCreated:Put""#);
        assert!(parse_notification(prefixed.as_bytes()).expect("parses").iter().all(StorageEvent::is_created));
        // A record with Ceph's extensions is Ceph's, whatever its eventSource says.
        let aws_named = CASE03.replace("ceph:s3", "aws:s3");
        assert_eq!(parse_notification(aws_named.as_bytes()).expect("parses")[1].key, "incoming/100%.csv");
        // Lifecycle, multisite sync and delete-marker events.
        for (name, kind) in [
            ("ObjectLifecycle:Expiration:Current", EventKind::Removed),
            ("ObjectLifecycle:Transition:Current", EventKind::Metadata("ObjectLifecycle:Transition:Current".into())),
            ("ObjectSynced:Create", EventKind::Created),
            ("ObjectRemoved:DeleteMarkerCreated", EventKind::Removed),
        ] {
            let body = CASE03.replace("ObjectCreated:Put", name);
            assert_eq!(parse_notification(body.as_bytes()).expect("parses")[0].kind, kind, "{name}");
        }
        // The pubsub sync module's own format is refused, saying why and what to use.
        let legacy = r#"{"events":[{"id":"1","event":"OBJECT_CREATE","timestamp":"2019-11-22T13:47:35Z",
            "info":{"attrs":{"mtime":"2019-11-22T13:47:35Z"},"bucket":{"name":"b","tenant":"","bucket_id":"x"},
            "key":{"name":"a+b","instance":""}}}]}"#;
        let err = parse_notification(legacy.as_bytes()).expect_err("refused");
        assert!(err.to_string().contains("bucket notification"), "{err}");
    }

    #[test]
    fn case07_folder_markers_parse_as_markers() {
        let events = parse_notification(CASE07.as_bytes()).expect("parses");
        assert_eq!((events[0].key.as_str(), events[0].size), ("incoming/2026-01/", Some(0)));
        assert!(events[0].is_created() && events[0].is_folder_marker());
    }

    #[test]
    fn refuses_foreign_sources_bad_keys_and_shapes() {
        let foreign = AWS_DELETE.replace("aws:s3", "aws:sqs");
        assert!(matches!(parse_notification(foreign.as_bytes()), Err(RecordError::UnsupportedSource(_))));
        let nul = MINIO_PUT.replace("incoming%2Fmarch+2026%2Bq1.csv", "a%00");
        assert!(matches!(parse_notification(nul.as_bytes()), Err(RecordError::Key { index: 0, .. })));
        let empty = MINIO_PUT.replace("incoming%2Fmarch+2026%2Bq1.csv", "");
        assert!(matches!(parse_notification(empty.as_bytes()), Err(RecordError::Key { .. })));
        assert!(matches!(parse_notification(b"{}"), Err(RecordError::Shape(_))));
        assert!(matches!(parse_notification(b"[1,2"), Err(RecordError::Json(_))));
        let negative = MINIO_PUT.replace("1234", "-1");
        assert!(matches!(parse_notification(negative.as_bytes()), Err(RecordError::Json(_))));
    }

    #[test]
    fn removals_with_unusable_keys_are_counted_not_refused() {
        let nul = AWS_DELETE.replace("a/b+c.txt", "a%00");
        let events = parse_notification(nul.as_bytes()).expect("not refused");
        assert!(!events[0].kind.is_work(), "{:?}", events[0].kind);
        let bad = AWS_DELETE.replace("a/b+c.txt", "100%");
        assert!(!parse_notification(bad.as_bytes()).expect("not refused")[0].kind.is_work());
    }

    fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
            prop_oneof![Just("s3"), Just("object"), Just("key"), Just("Records"), Just("ObjectCreated:Put")]
                .prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let names = prop_oneof![
                Just("Records".to_owned()),
                Just("s3".to_owned()),
                Just("bucket".to_owned()),
                Just("object".to_owned()),
                Just("name".to_owned()),
                Just("key".to_owned()),
                Just("size".to_owned()),
                Just("eventName".to_owned()),
                Just("eventSource".to_owned()),
                Just("eventId".to_owned()),
                Just("id".to_owned()),
                Just("events".to_owned()),
                any::<String>(),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(names, inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A key S3 could hold: arbitrary text plus the characters escaping is about.
    fn legal_key() -> impl Strategy<Value = String> {
        let interesting = prop_oneof![
            Just('+'),
            Just('%'),
            Just('/'),
            Just(' '),
            Just('"'),
            Just('\\'),
            any::<char>().prop_filter("no NUL", |c| *c != '\0'),
        ];
        prop::collection::vec(interesting, 1..120).prop_map(|cs| cs.into_iter().collect())
    }

    fn record(source: &str, name: &str, wire_key: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"Records": [{
            "eventSource": source, "eventName": name,
            "s3": {"bucket": {"name": "b"}, "object": {"key": wire_key, "eTag": "e"}}
        }]}))
        .expect("serializes")
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_notification(&body);
        }

        #[test]
        fn never_panics_on_json(value in arbitrary_json()) {
            let body = serde_json::to_vec(&value).expect("serializes");
            let _ = parse_notification(&body);
        }

        #[test]
        fn never_panics_on_mutated_bodies(cut in 0..CASE03.len(), byte in any::<u8>(), which in 0..3usize) {
            let base = [MINIO_PUT, CASE03, CASE01][which];
            let cut = cut.min(base.len() - 1);
            let mut body = base.as_bytes().to_vec();
            body[cut] = byte;
            let _ = parse_notification(&body);
            let _ = parse_notification(&base.as_bytes()[..cut]);
        }

        #[test]
        fn ceph_keys_round_trip_byte_exact(key in legal_key()) {
            let events = parse_notification(&record("ceph:s3", "ObjectCreated:Put", &key)).expect("parses");
            prop_assert_eq!(&events[0].key, &key);
        }

        #[test]
        fn aws_and_minio_keys_round_trip_through_form_escaping(key in legal_key()) {
            let escaped: String = form_urlencoded::byte_serialize(key.as_bytes()).collect();
            for (source, name) in [("aws:s3", "ObjectCreated:Put"), ("minio:s3", "s3:ObjectCreated:Put")] {
                let events = parse_notification(&record(source, name, &escaped)).expect("parses");
                prop_assert_eq!(&events[0].key, &key);
            }
        }

        #[test]
        fn non_work_records_never_fail_on_their_key(wire in any::<String>(), name in prop_oneof![
            Just("s3:ObjectCreated:PutTagging"), Just("ObjectTagging:Put"), Just("s3:ObjectAccessed:Get"),
            Just("ObjectRemoved:Delete"), Just("s3:BucketCreated"),
        ]) {
            let events = parse_notification(&record("minio:s3", name, &wire));
            prop_assert!(events.is_ok(), "{:?}", events);
        }
    }
}
