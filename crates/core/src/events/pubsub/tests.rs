use base64::Engine as _;
use proptest::prelude::*;
use serde_json::json;

use super::*;

/// A push request exactly as Pub/Sub sends one for a Cloud Storage `OBJECT_FINALIZE` with
/// `payloadFormat=JSON_API_V1` (the data is the object resource, base64; both spellings of the id
/// and time fields, as Pub/Sub sends them).
pub(crate) const FINALIZE: &str = r#"{
  "message": {
    "attributes": {
      "bucketId": "raw-invoices",
      "eventTime": "2026-11-27T10:00:00.123456Z",
      "eventType": "OBJECT_FINALIZE",
      "notificationConfig": "projects/_/buckets/raw-invoices/notificationConfigs/1",
      "objectGeneration": "1587627537231057",
      "objectId": "incoming/march 2026+q1.csv",
      "payloadFormat": "JSON_API_V1"
    },
    "data": "eyJraW5kIjoic3RvcmFnZSNvYmplY3QiLCJpZCI6InJhdy1pbnZvaWNlcy9pbmNvbWluZy9tYXJjaCAyMDI2K3ExLmNzdi8xNTg3NjI3NTM3MjMxMDU3Iiwic2VsZkxpbmsiOiJodHRwczovL3d3dy5nb29nbGVhcGlzLmNvbS9zdG9yYWdlL3YxL2IvcmF3LWludm9pY2VzL28vaW5jb21pbmclMkZtYXJjaCUyMDIwMjYrcTEuY3N2IiwibmFtZSI6ImluY29taW5nL21hcmNoIDIwMjYrcTEuY3N2IiwiYnVja2V0IjoicmF3LWludm9pY2VzIiwiZ2VuZXJhdGlvbiI6IjE1ODc2Mjc1MzcyMzEwNTciLCJtZXRhZ2VuZXJhdGlvbiI6IjEiLCJjb250ZW50VHlwZSI6InRleHQvY3N2IiwidGltZUNyZWF0ZWQiOiIyMDI2LTExLTI3VDEwOjAwOjAwLjAwMFoiLCJ1cGRhdGVkIjoiMjAyNi0xMS0yN1QxMDowMDowMC4wMDBaIiwic3RvcmFnZUNsYXNzIjoiU1RBTkRBUkQiLCJ0aW1lU3RvcmFnZUNsYXNzVXBkYXRlZCI6IjIwMjYtMTEtMjdUMTA6MDA6MDAuMDAwWiIsInNpemUiOiIzNTIiLCJtZDVIYXNoIjoiMUIyTTJZOEFzZ1RwZ0FtWTdQaENmZz09IiwibWVkaWFMaW5rIjoiaHR0cHM6Ly9zdG9yYWdlLmdvb2dsZWFwaXMuY29tL2Rvd25sb2FkL3N0b3JhZ2UvdjEvYi9yYXctaW52b2ljZXMvby9pbmNvbWluZyUyRm1hcmNoJTIwMjAyNitxMS5jc3Y/Z2VuZXJhdGlvbj0xNTg3NjI3NTM3MjMxMDU3JmFsdD1tZWRpYSIsImNyYzMyYyI6IkFBQUFBQT09IiwiZXRhZyI6IkNLaWgxNkdqeWNJQ0VBRT0ifQ==",
    "messageId": "2070443601311540",
    "message_id": "2070443601311540",
    "publishTime": "2026-11-27T10:00:00.456Z",
    "publish_time": "2026-11-27T10:00:00.456Z"
  },
  "subscription": "projects/acme/subscriptions/zeroflow-push",
  "deliveryAttempt": 1
}"#;

/// A push body with these attributes and, when given, this object resource as the data.
fn push(attributes: serde_json::Value, resource: Option<serde_json::Value>) -> Vec<u8> {
    let mut message = json!({"attributes": attributes, "messageId": "1", "publishTime": "2026-11-27T10:00:01Z"});
    if let Some(resource) = resource {
        message["data"] = json!(base64::engine::general_purpose::STANDARD.encode(resource.to_string()));
    }
    json!({"message": message, "subscription": "projects/p/subscriptions/s"}).to_string().into_bytes()
}

fn storage(body: &[u8]) -> StorageEvent {
    match parse_push(body).expect("a push envelope").parsed {
        Parsed::Storage(event) => event,
        Parsed::Unusable(why) => panic!("unusable: {why}"),
    }
}

#[test]
fn finalize_with_the_json_api_payload() {
    let message = parse_push(FINALIZE.as_bytes()).expect("parses");
    assert_eq!(message.message_id.as_deref(), Some("2070443601311540"));
    assert_eq!(message.subscription.as_deref(), Some("projects/acme/subscriptions/zeroflow-push"));
    assert_eq!(message.publish_time.as_deref(), Some("2026-11-27T10:00:00.456Z"));
    assert_eq!(
        message.parsed,
        Parsed::Storage(StorageEvent {
            kind: EventKind::Created,
            bucket: "raw-invoices".into(),
            // Raw: `+` stays a plus, the space a space.
            key: "incoming/march 2026+q1.csv".into(),
            etag: Some("CKih16GjycICEAE=".into()),
            version_id: Some("1587627537231057".into()),
            size: Some(352),
            sequencer: Some("00001587627537231057".into()),
            time: Some("2026-11-27T10:00:00.123456Z".into()),
        })
    );
}

#[test]
fn payload_format_none_needs_only_the_attributes() {
    let event = storage(&push(
        json!({"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "a/ü.csv", "objectGeneration": "7",
               "payloadFormat": "NONE"}),
        None,
    ));
    assert_eq!((event.bucket.as_str(), event.key.as_str()), ("b", "a/ü.csv"));
    assert_eq!((event.etag, event.size, event.version_id.as_deref()), (None, None, Some("7")));
    // Without eventTime, the publish time.
    assert_eq!(event.time.as_deref(), Some("2026-11-27T10:00:01Z"));
}

#[test]
fn every_event_type_has_its_kind() {
    let kind = |event_type: &str| {
        storage(&push(
            json!({"eventType": event_type, "bucketId": "b", "objectId": "k", "objectGeneration": "1"}),
            None,
        ))
        .kind
    };
    assert_eq!(kind("OBJECT_FINALIZE"), EventKind::Created);
    assert_eq!(kind("OBJECT_DELETE"), EventKind::Removed);
    assert_eq!(kind("OBJECT_METADATA_UPDATE"), EventKind::Metadata("OBJECT_METADATA_UPDATE".into()));
    assert_eq!(kind("OBJECT_ARCHIVE"), EventKind::Other("OBJECT_ARCHIVE".into()));
    assert_eq!(kind("SOMETHING_NEW"), EventKind::Other("SOMETHING_NEW".into()));
}

#[test]
fn size_and_generation_may_be_numbers() {
    let event = storage(&push(
        json!({"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "k", "objectGeneration": "12"}),
        Some(json!({"name": "k", "bucket": "b", "size": 5, "etag": "\"x\""})),
    ));
    assert_eq!((event.size, event.etag.as_deref()), (Some(5), Some("x")));
}

#[test]
fn messages_of_other_publishers_and_bad_payloads_are_unusable_not_refused() {
    let unusable = |body: Vec<u8>| match parse_push(&body).expect("an envelope").parsed {
        Parsed::Unusable(why) => why,
        Parsed::Storage(e) => panic!("parsed {e:?}"),
    };
    // Another publisher on the same topic.
    assert!(unusable(push(json!({"origin": "billing"}), Some(json!({"total": 3})))).contains("not a Cloud Storage"));
    // A notification whose data is not base64 / not JSON.
    let mut body: serde_json::Value =
        serde_json::from_slice(&push(json!({"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": "k"}), None))
            .expect("json");
    body["message"]["data"] = json!("%%%");
    assert!(unusable(body.to_string().into_bytes()).contains("not base64"));
    body["message"]["data"] = json!(base64::engine::general_purpose::STANDARD.encode("not json"));
    assert!(unusable(body.to_string().into_bytes()).contains("not JSON"));
    // A generation that is not a number, an empty bucket, a NUL in the name.
    let attributes = |generation: &str, bucket: &str, object: &str| json!({"eventType": "OBJECT_FINALIZE", "bucketId": bucket, "objectId": object, "objectGeneration": generation});
    assert!(unusable(push(attributes("x", "b", "k"), None)).contains("objectGeneration"));
    assert!(unusable(push(attributes("1", "", "k"), None)).contains("not a Cloud Storage"));
    assert!(unusable(push(attributes("1", "b", "a\0b"), None)).contains("NUL"));
}

#[test]
fn what_is_not_a_push_envelope_is_refused() {
    assert!(matches!(parse_push(b"{}"), Err(PushError::Envelope(_))));
    assert!(matches!(parse_push(b"[1"), Err(PushError::Envelope(_))));
    // An S3 notification posted to the wrong endpoint.
    assert!(parse_push(br#"{"Records": []}"#).is_err());
    // The unwrapped delivery mode (the data as the body) is not a push envelope either.
    assert!(parse_push(br#"{"kind": "storage#object", "name": "k", "bucket": "b"}"#).is_err());
}

proptest! {
    #[test]
    fn never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_push(&body);
    }

    #[test]
    fn never_panics_on_mutated_pushes(cut in 0..FINALIZE.len(), byte in any::<u8>()) {
        let mut body = FINALIZE.as_bytes().to_vec();
        body[cut] = byte;
        let _ = parse_push(&body);
        let _ = parse_push(&FINALIZE.as_bytes()[..cut]);
    }

    #[test]
    fn object_names_arrive_byte_exact(name in "[^\u{0}]{1,64}") {
        let event = storage(&push(
            json!({"eventType": "OBJECT_FINALIZE", "bucketId": "b", "objectId": name.clone()}),
            None,
        ));
        prop_assert_eq!(event.key, name);
    }
}
