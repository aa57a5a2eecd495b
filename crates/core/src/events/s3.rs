//! S3 notification records as MinIO's webhook and AWS send them.
//!
//! MinIO wraps the records: `{"EventName": "s3:ObjectCreated:Put", "Key": "bucket/key",
//! "Records": [...]}` with `eventName` prefixed `s3:` and `eventSource` `minio:s3`; AWS sends
//! `{"Records": [...]}` with `ObjectCreated:Put` and `aws:s3`. In both, `s3.object.key` is
//! query-escaped. AWS's `s3:TestEvent` (sent when a notification is configured) carries no records.

use serde::Deserialize;

use super::key::decode_form_key;
use super::{EventKind, RecordError, StorageEvent, bare_etag, check_bucket};

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records")]
    records: Option<Vec<Record>>,
    #[serde(rename = "Event")]
    event: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Record {
    #[serde(rename = "eventName")]
    event_name: String,
    #[serde(rename = "eventSource")]
    event_source: Option<String>,
    #[serde(rename = "eventTime")]
    event_time: Option<String>,
    s3: Entity,
}

#[derive(Deserialize)]
struct Entity {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
struct Object {
    key: String,
    size: Option<u64>,
    #[serde(rename = "eTag")]
    etag: Option<String>,
    #[serde(rename = "versionId")]
    version_id: Option<String>,
    sequencer: Option<String>,
}

/// Parses a notification body. An S3 test event yields no records.
pub fn parse_notification(body: &[u8]) -> Result<Vec<StorageEvent>, RecordError> {
    let notification: Notification = serde_json::from_slice(body)?;
    match (notification.records, notification.event) {
        (Some(records), _) => records.into_iter().enumerate().map(|(i, r)| record_to_event(r, i)).collect(),
        (None, Some(event)) if event == "s3:TestEvent" => Ok(Vec::new()),
        (None, _) => Err(RecordError::Shape("no Records")),
    }
}

/// Parses one record given as a JSON value (the `data` of an S3 CloudEvent).
pub(crate) fn parse_record_value(value: serde_json::Value) -> Result<StorageEvent, RecordError> {
    let record: Record = serde_json::from_value(value)?;
    record_to_event(record, 0)
}

/// Parses a full notification given as a JSON value.
pub(crate) fn parse_notification_value(value: serde_json::Value) -> Result<Vec<StorageEvent>, RecordError> {
    let notification: Notification = serde_json::from_value(value)?;
    let records = notification.records.ok_or(RecordError::Shape("no Records"))?;
    records.into_iter().enumerate().map(|(i, r)| record_to_event(r, i)).collect()
}

fn record_to_event(record: Record, index: usize) -> Result<StorageEvent, RecordError> {
    // `minio:s3`, `aws:s3`, Ceph's `ceph:s3`: every S3-compatible sender names itself `<who>:s3`.
    if let Some(source) = &record.event_source
        && !source.ends_with(":s3")
    {
        return Err(RecordError::UnsupportedSource(source.clone()));
    }
    let key = decode_form_key(&record.s3.object.key).map_err(|source| RecordError::Key { index, source })?;
    Ok(StorageEvent {
        kind: kind_from_name(&record.event_name),
        bucket: check_bucket(&record.s3.bucket.name, index)?,
        key,
        etag: record.s3.object.etag.as_deref().and_then(bare_etag),
        version_id: record.s3.object.version_id.filter(|v| !v.is_empty()),
        size: record.s3.object.size,
        sequencer: record.s3.object.sequencer.filter(|s| !s.is_empty()),
        time: record.event_time,
    })
}

/// `s3:ObjectCreated:Put` (MinIO) and `ObjectCreated:Put` (AWS) mean the same.
pub(crate) fn kind_from_name(name: &str) -> EventKind {
    let name = name.strip_prefix("s3:").unwrap_or(name);
    if name.starts_with("ObjectCreated:") {
        EventKind::Created
    } else if name.starts_with("ObjectRemoved:") {
        EventKind::Removed
    } else {
        EventKind::Other(name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn names_map_to_kinds() {
        assert_eq!(kind_from_name("s3:ObjectCreated:CompleteMultipartUpload"), EventKind::Created);
        assert_eq!(kind_from_name("ObjectCreated:Copy"), EventKind::Created);
        assert_eq!(kind_from_name("s3:ObjectRemoved:DeleteMarkerCreated"), EventKind::Removed);
        assert_eq!(kind_from_name("s3:ObjectAccessed:Get"), EventKind::Other("ObjectAccessed:Get".into()));
    }

    #[test]
    fn refuses_foreign_sources_bad_keys_and_shapes() {
        let foreign = AWS_DELETE.replace("aws:s3", "aws:sqs");
        assert!(matches!(parse_notification(foreign.as_bytes()), Err(RecordError::UnsupportedSource(_))));
        let nul = AWS_DELETE.replace("a/b+c.txt", "a%00");
        assert!(matches!(parse_notification(nul.as_bytes()), Err(RecordError::Key { index: 0, .. })));
        let empty = AWS_DELETE.replace("a/b+c.txt", "");
        assert!(matches!(parse_notification(empty.as_bytes()), Err(RecordError::Key { .. })));
        assert!(matches!(parse_notification(b"{}"), Err(RecordError::Shape(_))));
        assert!(matches!(parse_notification(b"[1,2"), Err(RecordError::Json(_))));
        let negative = MINIO_PUT.replace("1234", "-1");
        assert!(matches!(parse_notification(negative.as_bytes()), Err(RecordError::Json(_))));
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
                any::<String>(),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map(names, inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
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
        fn never_panics_on_mutated_minio_bodies(cut in 0..MINIO_PUT.len(), byte in any::<u8>()) {
            let mut body = MINIO_PUT.as_bytes().to_vec();
            body[cut] = byte;
            let _ = parse_notification(&body);
            let _ = parse_notification(&MINIO_PUT.as_bytes()[..cut]);
        }
    }
}
