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
fn azure_content_that_is_not_final_is_not_a_creation() {
    for api in ["CreateFile", "SftpCreate"] {
        let body = AZURE_STRUCTURED.replace("PutBlockList", api);
        let events = parse_http(&headers(&[("content-type", STRUCTURED)]), body.as_bytes()).expect("parses");
        assert_eq!(events[0].kind, EventKind::Other(format!("BlobCreated:{api}")), "{api}");
    }
    for api in ["FlushWithClose", "SftpCommit", "PutBlob", "CopyBlob", "PutBlockFromURL"] {
        let body = AZURE_STRUCTURED.replace("PutBlockList", api);
        let events = parse_http(&headers(&[("content-type", STRUCTURED)]), body.as_bytes()).expect("parses");
        assert!(events[0].is_created(), "{api}");
    }
}

/// Azure's documented Data Lake rename (event-schema-blob-storage.md, CloudEvents schema).
const AZURE_RENAMED: &str = r#"{
  "source": "/subscriptions/{subscription-id}/resourceGroups/Storage/providers/Microsoft.Storage/storageAccounts/my-storage-account",
  "subject": "/blobServices/default/containers/my-file-system/blobs/my-renamed-file.txt",
  "type": "Microsoft.Storage.BlobRenamed",
  "time": "2017-06-26T18:41:00.9584103Z",
  "id": "831e1650-001e-001b-66ab-eeb76e069631",
  "data": {
    "api": "RenameFile",
    "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
    "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
    "destinationUrl": "https://my-storage-account.dfs.core.windows.net/my-file-system/my-renamed-file.txt",
    "sourceUrl": "https://my-storage-account.dfs.core.windows.net/my-file-system/my-original-file.txt",
    "sequencer": "00000000000004420000000000028963",
    "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"}
  },
  "specversion": "1.0"
}"#;

#[test]
fn azure_rename_publishes_its_destination_and_removes_its_source() {
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), AZURE_RENAMED.as_bytes()).expect("parses");
    let seen: Vec<_> = events.iter().map(|e| (e.kind.clone(), e.bucket.as_str(), e.key.as_str())).collect();
    assert_eq!(
        seen,
        [
            (EventKind::Removed, "my-file-system", "my-original-file.txt"),
            (EventKind::Created, "my-file-system", "my-renamed-file.txt")
        ]
    );
    // Without a subject the destination URL names the file (percent-encoded).
    let no_subject = AZURE_RENAMED
        .replace("\"subject\": \"/blobServices/default/containers/my-file-system/blobs/my-renamed-file.txt\",", "")
        .replace("my-renamed-file.txt\"", "dir/a%2Bb%20c.txt\"");
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), no_subject.as_bytes()).expect("parses");
    assert_eq!(events[1].key, "dir/a+b c.txt");
}

#[test]
fn azure_directories_tiers_and_account_events_are_not_content() {
    let tier = AZURE_STRUCTURED.replace("BlobCreated", "BlobTierChanged").replace("PutBlockList", "SetBlobTier");
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), tier.as_bytes()).expect("parses");
    assert_eq!(events[0].kind, EventKind::Metadata("BlobTierChanged".into()));
    for ty in ["DirectoryCreated", "DirectoryRenamed", "DirectoryDeleted", "AsyncOperationInitiated"] {
        let body = AZURE_STRUCTURED.replace("BlobCreated", ty);
        let events = parse_http(&headers(&[("content-type", STRUCTURED)]), body.as_bytes()).expect("parses");
        assert_eq!(events[0].kind, EventKind::Other(ty.into()));
    }
    // An account-level event names no blob: counted, not refused.
    let policy = r#"{"specversion": "1.0", "id": "1", "source": "/subscriptions/s", "type": "Microsoft.Storage.LifecyclePolicyCompleted",
        "subject": "BlobDataManagement/LifeCycleManagement/SummaryReport", "data": {"scheduleTime": "2022/05/24 22:57:29.3260160"}}"#;
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), policy.as_bytes()).expect("parses");
    assert!(!events[0].kind.is_work());
    let deleted = AZURE_STRUCTURED.replace("BlobCreated", "BlobDeleted").replace("PutBlockList", "DeleteBlob");
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), deleted.as_bytes()).expect("parses");
    assert_eq!((events[0].kind.clone(), events[0].key.as_str()), (EventKind::Removed, "dir/x+y z.json"));
}

#[test]
fn gcs_metadata_archive_and_unknown_actions_are_not_content() {
    let cases = [
        ("metadataUpdated", EventKind::Metadata("metadataUpdated".into())),
        ("archived", EventKind::Other("archived".into())),
        ("somethingNew", EventKind::Other("somethingNew".into())),
    ];
    for (action, kind) in cases {
        let body = GCS_STRUCTURED.replace("finalized", action);
        let events = parse_http(&headers(&[("content-type", STRUCTURED)]), body.as_bytes()).expect("parses");
        assert_eq!(events[0].kind, kind, "{action}");
    }
    let deleted = GCS_STRUCTURED.replace("finalized", "deleted");
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), deleted.as_bytes()).expect("parses");
    assert_eq!(
        (events[0].kind.clone(), events[0].version_id.as_deref()),
        (EventKind::Removed, Some("1587627537231057"))
    );
    let nameless = GCS_STRUCTURED.replace("finalized", "metadataUpdated").replace("\"name\": \"a b/c.csv\",", "");
    assert!(parse_http(&headers(&[("content-type", STRUCTURED)]), nameless.as_bytes()).is_ok());
}

/// Case 03's second record as one Ceph RGW push in CloudEvents mode (`cloudevents=true` on the
/// HTTP endpoint, rgw_pubsub_push.cc): binary mode, the S3 records as the JSON body, the raw
/// object key in `ce-subject`.
fn ceph_cloudevent(subject: &[u8]) -> (HeaderMap, String) {
    let notification: serde_json::Value =
        serde_json::from_str(include_str!("../../../testdata/events/case03-ceph-raw-keys.json")).expect("json");
    let record = notification["Records"][1].clone();
    let mut h = headers(&[
        ("ce-specversion", "1.0"),
        ("ce-type", "com.amazonaws.ObjectCreated:Put"),
        ("ce-time", "2026-01-10T10:00:00.223456Z"),
        ("ce-id", "req-2.1005-default-default"),
        ("ce-source", "ceph:s3.default.in-bucket"),
        ("content-type", "application/json"),
    ]);
    h.insert("ce-subject", HeaderValue::from_bytes(subject).expect("header bytes"));
    (h, serde_json::json!({"Records": [record]}).to_string())
}

#[test]
fn ceph_cloudevents_mode_keeps_raw_keys() {
    let (h, body) = ceph_cloudevent(b"incoming/100%.csv");
    let events = parse_http(&h, body.as_bytes()).expect("parses");
    assert_eq!((events[0].kind.clone(), events[0].key.as_str()), (EventKind::Created, "incoming/100%.csv"));
    assert_eq!(events[0].etag.as_deref(), Some("1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e"));
    // A raw UTF-8 subject is not percent-encoded as the binding asks; it is accepted anyway.
    let (h, body) = ceph_cloudevent("incoming/résumé 1+1.csv".as_bytes());
    assert!(parse_http(&h, body.as_bytes()).is_ok());
    // Releases that kept the `s3:` prefix in the event name.
    let (mut h, body) = ceph_cloudevent(b"incoming/100%.csv");
    h.insert("ce-type", HeaderValue::from_static("com.amazonaws.s3:ObjectCreated:Put"));
    assert!(parse_http(&h, body.as_bytes()).expect("parses")[0].is_created());
    // A time that is not RFC 3339 is dropped, not fatal.
    h.insert("ce-time", HeaderValue::from_static("2026-01-10 10:00:00"));
    assert!(parse_http(&h, body.as_bytes()).is_ok());
}

#[test]
fn s3_adapter_types_and_eventbridge_events_inside_cloudevents() {
    let envelope = include_str!("../../../testdata/events/case14-eventbridge-object-created.json");
    let structured = format!(
        r#"{{"specversion":"1.0","id":"1","source":"aws.s3","type":"com.amazonaws.s3.ObjectCreated:Put","data":{envelope}}}"#
    );
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), structured.as_bytes()).expect("parses");
    assert_eq!((events[0].kind.clone(), events[0].key.as_str()), (EventKind::Created, "incoming/report.csv"));
    let tagged = structured.replace("Object Created", "Object Tags Added");
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), tagged.as_bytes()).expect("parses");
    assert!(!events[0].kind.is_work(), "the detail-type decides, not the CloudEvent type");
    let old = r#"{"specversion":"1.0","id":"1","source":"s","type":"com.amazon.s3.objectremoved",
        "data":{"bucket":{"name":"b"},"object":{"key":"a%2Bb"}}}"#;
    let events = parse_http(&headers(&[("content-type", STRUCTURED)]), old.as_bytes()).expect("parses");
    assert_eq!((events[0].kind.clone(), events[0].key.as_str()), (EventKind::Removed, "a+b"));
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

proptest! {
    /// The gateway's allocation-free check says what lowering the media type and asking
    /// `is_json_media` says, for every content type a sender can put in a header.
    #[test]
    fn has_json_media_agrees_with_the_lowered_media_type(
        value in prop_oneof![
            "[ -~]{0,40}",
            "(?i)(application/json|text/json|application/[a-z.]{0,8}\\+json|application/cloudevents\\+jSoN)( ?;[ -~]{0,10})?",
        ],
    ) {
        let Ok(header) = HeaderValue::from_str(&value) else { return Ok(()) };
        let mut map = HeaderMap::new();
        map.insert(http::header::CONTENT_TYPE, header);
        let lowered = media_type(&map).unwrap_or_default();
        prop_assert_eq!(has_json_media(&map), is_json_media(&lowered), "{:?}", value);
    }
}

#[test]
fn has_json_media_takes_json_in_any_case_and_refuses_the_rest() {
    for json in ["application/json", "Application/JSON; charset=utf-8", "application/cloudevents+json", " text/json "] {
        assert!(has_json_media(&headers(&[("content-type", json)])), "{json}");
    }
    for other in ["text/plain", "application/jsonx", "json", ""] {
        assert!(!has_json_media(&headers(&[("content-type", other)])), "{other}");
    }
    assert!(!has_json_media(&HeaderMap::new()));
}
