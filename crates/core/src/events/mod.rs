//! Storage notifications in, [`StorageEvent`]s out. Pure: bytes and headers are the only input.
//!
//! Wire families understood:
//! - S3-style notification records ([`s3`]): MinIO's webhook, AWS S3 (directly or unwrapped from
//!   SNS), Ceph RGW (whose keys are raw, see [`key::KeyEncoding`]) and other S3-compatible stores;
//! - EventBridge's own envelope for S3 events ([`eventbridge`]), as an API destination posts it;
//! - SNS HTTP(S) deliveries ([`sns`]): the envelope, its signature, its subscription handshake;
//! - CloudEvents carrying S3, Ceph, GCS or Azure Blob storage events ([`cloudevents`]);
//! - Cloud Storage notifications in Pub/Sub push requests ([`pubsub`]).
//!
//! Every sender's event names are reduced to four kinds ([`EventKind`], tables in [`names`]):
//! new content at a key (the only work), removal, a metadata-only change, and anything else.
//! Keys are validated only where the record is work: a tag change whose key a sender left empty
//! must not turn a whole request into a 4xx that a queueing sender then resends forever.

pub mod cloudevents;
pub mod eventbridge;
pub mod key;
pub mod names;
pub mod pubsub;
pub mod s3;
pub mod sns;

use serde::Deserialize;
use thiserror::Error;

pub use key::{KeyEncoding, KeyError, MAX_KEY_BYTES};

/// What happened to an object, reduced to what a pipeline cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// New bytes at the key (put, copy, multipart completion, GCS finalize, Azure BlobCreated once
    /// committed, a rename's destination): the only kind that is work.
    Created,
    /// The object (or a version of it) was deleted or expired.
    Removed,
    /// Only the object's metadata changed (tags, ACL, retention, legal hold, storage class or
    /// access tier, a restore from an archive tier), by the sender's wire name: the bytes at the
    /// key are the ones announced before, so it is never work.
    Metadata(String),
    /// Anything else the store reports (reads, replication status, content that is not final
    /// yet, directory operations, bucket operations...), by its wire name.
    Other(String),
}

impl EventKind {
    /// Content and removals are what a pipeline acts on; the rest is only counted.
    pub fn is_work(&self) -> bool {
        matches!(self, EventKind::Created | EventKind::Removed)
    }
}

/// One object-level notification, source-agnostic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageEvent {
    pub kind: EventKind,
    /// Bucket (S3, GCS) or container (Azure).
    pub bucket: String,
    /// The decoded key, byte-exact: never normalized, see [`key`].
    pub key: String,
    /// Content identity when the store sends one, without surrounding quotes.
    pub etag: Option<String>,
    /// Object version (S3 versionId, GCS generation).
    pub version_id: Option<String>,
    pub size: Option<u64>,
    /// Per-key ordering token when the store sends one (S3 `sequencer`, Azure `sequencer`).
    pub sequencer: Option<String>,
    /// Event time as the sender wrote it (RFC 3339).
    pub time: Option<String>,
}

impl StorageEvent {
    pub fn is_created(&self) -> bool {
        self.kind == EventKind::Created
    }

    pub fn is_removed(&self) -> bool {
        self.kind == EventKind::Removed
    }

    /// A "folder" placeholder: what S3 consoles, rclone and s3fs write for "create folder", a
    /// (zero-byte) object whose key ends in `/`. Never work: it holds no data, and object_store
    /// cannot address such a key to presign it.
    pub fn is_folder_marker(&self) -> bool {
        is_folder_marker(&self.key)
    }
}

/// Whether an object key names a folder placeholder (see [`StorageEvent::is_folder_marker`]).
pub fn is_folder_marker(key: &str) -> bool {
    key.ends_with('/')
}

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed JSON: the body is not UTF-8")]
    NotUtf8,
    #[error("not a storage notification: {0}")]
    Shape(&'static str),
    #[error("unsupported event source {0:?}")]
    UnsupportedSource(String),
    #[error("record {index}: {source}")]
    Key { index: usize, source: KeyError },
    #[error("record {0}: empty bucket name")]
    EmptyBucket(usize),
    #[error("unsupported CloudEvent type {0:?}")]
    UnknownType(String),
    #[error("invalid CloudEvent: {0}")]
    CloudEvent(String),
    #[error("CloudEvent data: {0}")]
    Data(String),
    #[error("unsupported media type {0:?}")]
    MediaType(String),
    /// A format zeroflow recognizes and deliberately refuses, with what to use instead.
    #[error("{0}")]
    Refused(&'static str),
    #[error(transparent)]
    Sns(#[from] sns::SnsError),
}

impl RecordError {
    /// True when the request's content type, not its content, is the problem (HTTP 415).
    pub fn is_media_type(&self) -> bool {
        matches!(self, RecordError::MediaType(_))
    }
}

/// A JSON notification of whichever family the document is: an EventBridge event (it has
/// `detail-type`, `source` and `detail`), else S3 notification records or an S3 test event.
/// What arrives at `/v1/events/s3` and inside SNS notifications.
pub fn parse_json(body: &[u8]) -> Result<Vec<StorageEvent>, RecordError> {
    s3::parse_any(body)
}

/// [`parse_json`] of a document already parsed.
pub fn parse_json_value(value: serde_json::Value) -> Result<Vec<StorageEvent>, RecordError> {
    if eventbridge::is_envelope(&value) {
        eventbridge::parse_envelope(value)
    } else {
        s3::parse_notification_value(value)
    }
}

/// HTTP ETags arrive quoted from some senders and bare from others; they are kept in their
/// canonical form ([`crate::etag::canonical_etag`]), `None` when empty.
pub(crate) fn bare_etag(etag: &str) -> Option<String> {
    let bare = crate::etag::canonical_etag(etag);
    (!bare.is_empty()).then(|| bare.into_owned())
}

pub(crate) fn check_bucket(bucket: &str, index: usize) -> Result<String, RecordError> {
    if bucket.is_empty() { Err(RecordError::EmptyBucket(index)) } else { Ok(bucket.to_owned()) }
}

/// A non-negative integer that senders write as a JSON number (AWS, MinIO, Ceph's code) or as a
/// string (GCS's int64 fields per the proto3 JSON mapping; Ceph's documented sample).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum JsonU64 {
    Number(u64),
    Text(String),
}

impl JsonU64 {
    pub(crate) fn value(&self, field: &str) -> Result<u64, RecordError> {
        match self {
            JsonU64::Number(n) => Ok(*n),
            JsonU64::Text(s) => {
                s.trim().parse().map_err(|_| RecordError::Data(format!("{field} is not a non-negative integer")))
            }
        }
    }
}

/// What one record says before its kind decides what must be valid.
pub(crate) struct RecordParts<'a> {
    pub index: usize,
    pub bucket: &'a str,
    /// The key as sent, and how this sender encodes keys.
    pub wire_key: &'a str,
    pub encoding: KeyEncoding,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub size: Option<u64>,
    pub sequencer: Option<String>,
    pub time: Option<String>,
}

/// Turns a classified record into an event. Only content must have a usable bucket and key (a
/// bad one refuses the request: losing an upload silently is worse). A removal whose key cannot
/// be decoded cannot match anything pending (such a key was never admitted), so it becomes
/// [`EventKind::Other`] and is counted, not refused. Metadata-only and other records keep their
/// key as well as it decodes, else as sent, and are never refused for it.
pub(crate) fn record_event(kind: EventKind, parts: RecordParts<'_>) -> Result<StorageEvent, RecordError> {
    let decoded = key::decode_key(parts.encoding, parts.wire_key);
    let (kind, key) = match kind {
        EventKind::Created => {
            let key = decoded.map_err(|source| RecordError::Key { index: parts.index, source })?;
            check_bucket(parts.bucket, parts.index)?;
            (EventKind::Created, key)
        }
        EventKind::Removed => match decoded {
            Ok(key) if !parts.bucket.is_empty() => (EventKind::Removed, key),
            Ok(key) => (EventKind::Other("removal without a bucket".into()), key),
            Err(e) => (EventKind::Other(format!("removal with an unusable key ({e})")), parts.wire_key.to_owned()),
        },
        other => (other, decoded.unwrap_or_else(|_| parts.wire_key.to_owned())),
    };
    Ok(StorageEvent {
        kind,
        bucket: parts.bucket.to_owned(),
        key,
        etag: parts.etag,
        version_id: parts.version_id.filter(|v| !v.is_empty()),
        size: parts.size,
        sequencer: parts.sequencer.filter(|s| !s.is_empty()),
        time: parts.time,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_lose_quotes_only() {
        assert_eq!(bare_etag("\"abc\"").as_deref(), Some("abc"));
        assert_eq!(bare_etag("abc-2").as_deref(), Some("abc-2"));
        assert_eq!(bare_etag("\"\""), None);
    }

    fn parts(bucket: &'static str, wire_key: &'static str) -> RecordParts<'static> {
        RecordParts {
            index: 3,
            bucket,
            wire_key,
            encoding: KeyEncoding::Form,
            etag: None,
            version_id: Some(String::new()),
            size: None,
            sequencer: None,
            time: None,
        }
    }

    #[test]
    fn only_content_must_have_a_valid_key_and_bucket() {
        assert!(matches!(
            record_event(EventKind::Created, parts("b", "")),
            Err(RecordError::Key { index: 3, source: KeyError::Empty })
        ));
        assert!(matches!(record_event(EventKind::Created, parts("", "k")), Err(RecordError::EmptyBucket(3))));
        let tagged =
            record_event(EventKind::Metadata("ObjectCreated:PutTagging".into()), parts("b", "")).expect("kept");
        assert_eq!((tagged.kind.is_work(), tagged.key.as_str()), (false, ""));
        let odd = record_event(EventKind::Other("x".into()), parts("", "bad%zz")).expect("kept");
        assert_eq!(odd.key, "bad%zz", "an undecodable key is kept as sent");
        let removal = record_event(EventKind::Removed, parts("b", "a%00")).expect("kept");
        assert!(matches!(removal.kind, EventKind::Other(ref why) if why.contains("NUL")), "{removal:?}");
        let removal = record_event(EventKind::Removed, parts("", "a")).expect("kept");
        assert!(!removal.kind.is_work());
        let good = record_event(EventKind::Removed, parts("b", "a+b")).expect("kept");
        assert_eq!((good.kind, good.key.as_str(), good.version_id), (EventKind::Removed, "a b", None));
    }

    #[test]
    fn integers_arrive_as_numbers_or_strings() {
        let n: JsonU64 = serde_json::from_str("12").expect("number");
        let s: JsonU64 = serde_json::from_str("\"1024\"").expect("string");
        assert_eq!((n.value("size").ok(), s.value("size").ok()), (Some(12), Some(1024)));
        let bad: JsonU64 = serde_json::from_str("\"-3\"").expect("string");
        assert!(matches!(bad.value("size"), Err(RecordError::Data(_))));
        assert!(serde_json::from_str::<JsonU64>("-3").is_err());
    }
}
