use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;

use super::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(*name, HeaderValue::from_str(value).expect("valid header"));
    }
    map
}

pub(crate) const GCS_STRUCTURED: &str = r#"{
  "specversion": "1.0", "id": "1234", "source": "//storage.googleapis.com/projects/_/buckets/raw",
  "type": "google.cloud.storage.object.v1.finalized", "subject": "objects/a b/c.csv",
  "time": "2026-11-27T10:00:00Z", "datacontenttype": "application/json",
  "data": {"bucket": "raw", "name": "a b/c.csv", "etag": "CKih16GjycICEAE=", "generation": "1587627537231057",
           "size": "352", "contentType": "text/csv", "updated": "2026-11-27T10:00:00.000Z"}
}"#;

pub(crate) const AZURE_STRUCTURED: &str = r#"{
  "specversion": "1.0", "id": "9aeb0fdf", "type": "Microsoft.Storage.BlobCreated",
  "source": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Storage/storageAccounts/acct",
  "subject": "/blobServices/default/containers/landing/blobs/dir/x+y z.json",
  "time": "2026-11-27T10:00:00Z",
  "data": {"api": "PutBlockList", "eTag": "0x8D4BCC2E4835CD0", "contentType": "application/json",
           "contentLength": 524288, "blobType": "BlockBlob",
           "url": "https://acct.blob.core.windows.net/landing/dir/x%2By%20z.json", "sequencer": "00000000000004420000000000028963"}
}"#;

#[test]
fn gcs_finalized_structured() {
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), GCS_STRUCTURED.as_bytes()).expect("parses");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!((e.kind.clone(), e.bucket.as_str(), e.key.as_str()), (EventKind::Created, "raw", "a b/c.csv"));
    assert_eq!((e.size, e.version_id.as_deref()), (Some(352), Some("1587627537231057")));
    assert_eq!(e.etag.as_deref(), Some("CKih16GjycICEAE="), "no md5Hash (a composite object): the JSON etag");
}

#[test]
fn gcs_revision_is_the_md5_object_store_lists() {
    // GCS sends md5Hash in base64; its XML API (object_store's listings and HEADs) shows the
    // same digest as a hex ETag, so that is the revision recorded.
    let body = GCS_STRUCTURED.replace(
        r#""etag": "CKih16GjycICEAE=""#,
        r#""etag": "CKih16GjycICEAE=", "md5Hash": "XUFAKrxLKna5cZ2REBfFkg==""#,
    );
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), body.as_bytes()).expect("parses");
    assert_eq!(events[0].etag.as_deref(), Some("5d41402abc4b2a76b9719d911017c592"));
}

#[test]
fn gcs_binary_mode() {
    let data = r#"{"bucket": "raw", "name": "x/ü.csv", "etag": "e", "generation": "7", "size": "10"}"#;
    let h = headers(&[
        ("content-type", "application/json; charset=utf-8"),
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "//storage.googleapis.com/projects/_/buckets/raw"),
        ("ce-type", "google.cloud.storage.object.v1.finalized"),
        ("ce-subject", "objects/x/%C3%BC.csv"),
    ]);
    let events = parse_http(&h, data.as_bytes()).expect("parses");
    assert_eq!(events[0].key, "x/ü.csv");
    assert_eq!(events[0].size, Some(10));
}

#[test]
fn azure_blob_created_uses_the_raw_subject_path() {
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), AZURE_STRUCTURED.as_bytes()).expect("parses");
    let e = &events[0];
    assert_eq!((e.kind.clone(), e.bucket.as_str(), e.key.as_str()), (EventKind::Created, "landing", "dir/x+y z.json"));
    assert_eq!((e.size, e.etag.as_deref()), (Some(524288), Some("0x8D4BCC2E4835CD0")));
}

#[test]
fn azure_falls_back_to_the_url() {
    let body =
        AZURE_STRUCTURED.replace("\"subject\": \"/blobServices/default/containers/landing/blobs/dir/x+y z.json\",", "");
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), body.as_bytes()).expect("parses");
    assert_eq!((events[0].bucket.as_str(), events[0].key.as_str()), ("landing", "dir/x+y z.json"));
}

#[test]
fn azure_data_lake_create_file_is_not_a_creation() {
    let body = AZURE_STRUCTURED.replace("PutBlockList", "CreateFile");
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), body.as_bytes()).expect("parses");
    assert!(!events[0].is_created());
}

#[test]
fn s3_cloudevent_with_a_record_or_eventbridge_detail() {
    let record = r#"{"specversion":"1.0","id":"1","source":"arn:aws:s3:::b","type":"com.amazonaws.s3.ObjectCreated:Put",
        "data":{"eventName":"ObjectCreated:Put","eventSource":"aws:s3",
                "s3":{"bucket":{"name":"b"},"object":{"key":"k%2B1+2","size":3,"eTag":"e"}}}}"#;
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), record.as_bytes()).expect("parses");
    assert_eq!(events[0].key, "k+1 2");
    let detail = r#"{"specversion":"1.0","id":"1","source":"aws.s3","type":"com.amazonaws.s3.objectcreated",
        "data":{"version":"0","detail-type":"Object Created","detail":{"bucket":{"name":"b"},
                "object":{"key":"a/b.csv","size":5,"etag":"\"e\"","version-id":"v1","sequencer":"00"}}}}"#;
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), detail.as_bytes()).expect("parses");
    assert_eq!(events[0].kind, EventKind::Created);
    assert_eq!((events[0].etag.as_deref(), events[0].version_id.as_deref()), (Some("e"), Some("v1")));
}

#[test]
fn batch_mode_yields_every_event() {
    let body = format!("[{GCS_STRUCTURED},{AZURE_STRUCTURED}]");
    let events = parse_http(&headers(&[("content-type", BATCH)]), body.as_bytes()).expect("parses");
    assert_eq!(events.len(), 2);
}

#[test]
fn errors_are_typed() {
    let structured = headers(&[("content-type", STRUCTURED)]);
    let unknown = GCS_STRUCTURED.replace("google.cloud.storage.object.v1.finalized", "com.example.thing");
    let err = parse_http(&structured, unknown.as_bytes()).expect_err("unknown type");
    assert!(matches!(err, RecordError::UnknownType(_)));
    assert_eq!(err.to_string(), "unsupported CloudEvent type \"com.example.thing\"");
    let bad_size = GCS_STRUCTURED.replace("\"352\"", "\"-3\"");
    assert!(matches!(parse_http(&structured, bad_size.as_bytes()), Err(RecordError::Data(_))));
    let no_id = GCS_STRUCTURED.replace("\"id\": \"1234\",", "");
    assert!(parse_http(&structured, no_id.as_bytes()).is_err());
    let text = headers(&[("content-type", "text/plain")]);
    assert!(parse_http(&text, b"{}").expect_err("415").is_media_type());
    assert!(parse_http(&HeaderMap::new(), b"{}").expect_err("415").is_media_type());
    let binary_xml = headers(&[("content-type", "application/xml"), ("ce-specversion", "1.0")]);
    assert!(parse_http(&binary_xml, b"<a/>").expect_err("415").is_media_type());
    let binary_missing = headers(&[("content-type", "application/json"), ("ce-specversion", "1.0")]);
    assert!(matches!(parse_http(&binary_missing, b"{}"), Err(RecordError::CloudEvent(_))));
}

proptest! {
    #[test]
    fn never_panics_on_structured_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_http(&headers(&[("content-type", STRUCTURED)]), &body);
        let _ = parse_http(&headers(&[("content-type", BATCH)]), &body);
    }

    #[test]
    fn never_panics_on_mutated_events(cut in 0..AZURE_STRUCTURED.len(), byte in any::<u8>(), gcs in any::<bool>()) {
        let base = if gcs { GCS_STRUCTURED } else { AZURE_STRUCTURED };
        let cut = cut.min(base.len() - 1);
        let mut body = base.as_bytes().to_vec();
        body[cut] = byte;
        let _ = parse_http(&headers(&[("content-type", STRUCTURED)]), &body);
    }

    #[test]
    fn never_panics_on_binary_headers(ty in any::<String>(), subject in any::<String>(), data in any::<String>()) {
        let mut h = headers(&[("content-type", "application/json"), ("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "s")]);
        if let Ok(v) = HeaderValue::from_str(&ty) { h.insert("ce-type", v); }
        if let Ok(v) = HeaderValue::from_str(&subject) { h.insert("ce-subject", v); }
        let _ = parse_http(&h, data.as_bytes());
    }
}
