//! Storage notifications in, [`StorageEvent`]s out. Pure: bytes and headers are the only input.
//!
//! Two wire families are understood: S3-style notification records (MinIO webhooks, AWS S3) and
//! CloudEvents carrying S3, GCS or Azure Blob storage events; and Cloud Storage notifications
//! in Pub/Sub push requests ([`pubsub`]).

pub mod cloudevents;
pub mod key;
pub mod pubsub;
pub mod s3;

use thiserror::Error;

pub use key::{KeyError, MAX_KEY_BYTES};

/// What happened to an object, reduced to what a pipeline cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// New content at the key (put, copy, multipart completion, GCS finalize, Azure BlobCreated).
    Created,
    /// The object (or a version of it) was deleted.
    Removed,
    /// Anything else the store reports (access, restore, tagging...), by its wire name.
    Other(String),
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
}

impl RecordError {
    /// True when the request's content type, not its content, is the problem (HTTP 415).
    pub fn is_media_type(&self) -> bool {
        matches!(self, RecordError::MediaType(_))
    }
}

/// HTTP ETags arrive quoted from some senders and bare from others; compare them bare.
pub(crate) fn bare_etag(etag: &str) -> Option<String> {
    let bare = etag.trim().trim_matches('"');
    (!bare.is_empty()).then(|| bare.to_owned())
}

pub(crate) fn check_bucket(bucket: &str, index: usize) -> Result<String, RecordError> {
    if bucket.is_empty() { Err(RecordError::EmptyBucket(index)) } else { Ok(bucket.to_owned()) }
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
}
