//! Google Cloud Storage notifications delivered by a Pub/Sub push subscription.
//!
//! A push subscription POSTs one message per request, wrapped (the default, "wrapped payload"):
//!
//! ```json
//! {"message": {"data": "<base64>", "attributes": {...}, "messageId": "...", "publishTime": "..."},
//!  "subscription": "projects/<project>/subscriptions/<name>", "deliveryAttempt": 1}
//! ```
//!
//! (<https://cloud.google.com/pubsub/docs/push>, the `PubsubMessage` REST resource). A Cloud
//! Storage notification configuration (<https://cloud.google.com/storage/docs/pubsub-notifications>)
//! publishes messages whose attributes say what happened: `eventType` (`OBJECT_FINALIZE`,
//! `OBJECT_METADATA_UPDATE`, `OBJECT_DELETE`, `OBJECT_ARCHIVE`), `bucketId`, `objectId` (the raw
//! object name), `objectGeneration`, `eventTime`, `payloadFormat` (`JSON_API_V1` or `NONE`), and
//! with `JSON_API_V1` the data is the object's JSON API resource (int64 fields such as `size` and
//! `generation` as JSON strings, `etag`). The attributes alone are enough; the payload adds the
//! etag and the size when it is there.
//!
//! Two kinds of failure are told apart, because Pub/Sub redelivers every message that is not
//! answered 2xx until it expires (7 days by default), whatever the status code:
//! - a request that is not a push envelope at all ([`PushError::Envelope`]) was not sent by Pub/Sub
//!   and is refused;
//! - a push envelope whose message is not a usable storage notification ([`Parsed::Unusable`]:
//!   another publisher on the topic, a payload that does not decode) is acknowledged and counted,
//!   so that it is not redelivered forever. Such a message names no object zeroflow could find
//!   anyway, and resync finds every object whose notification was lost.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::key::validate_key;
use super::{EventKind, StorageEvent, bare_etag, check_bucket};

/// The push request body (wrapped payload).
#[derive(Deserialize)]
struct Push {
    message: Message,
    /// `projects/<project>/subscriptions/<name>`.
    #[serde(default)]
    subscription: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    // Pub/Sub sends both spellings of these two (camelCase and snake_case), older
    // subscriptions only the snake_case one.
    #[serde(default, rename = "messageId")]
    message_id: Option<String>,
    #[serde(default, rename = "message_id")]
    message_id_snake: Option<String>,
    #[serde(default, rename = "publishTime")]
    publish_time: Option<String>,
    #[serde(default, rename = "publish_time")]
    publish_time_snake: Option<String>,
}

/// The object resource GCS puts in the data with `payloadFormat=JSON_API_V1`; only what zeroflow
/// uses. int64 fields are JSON strings (proto3 JSON mapping); numbers are accepted too.
#[derive(Deserialize)]
struct ObjectResource {
    etag: Option<String>,
    size: Option<Int64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Int64 {
    Number(u64),
    Text(String),
}

impl Int64 {
    fn value(&self) -> Option<u64> {
        match self {
            Int64::Number(n) => Some(*n),
            Int64::Text(s) => s.parse().ok(),
        }
    }
}

/// A request that is not a Pub/Sub push envelope: answer it 4xx.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("not a Pub/Sub push request: {0}")]
    Envelope(String),
}

/// What one push message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A Cloud Storage notification (one object event of any kind).
    Storage(StorageEvent),
    /// A valid push whose message is not a usable Cloud Storage notification, with why.
    /// Acknowledge it (2xx) and count it: Pub/Sub would redeliver it forever otherwise.
    Unusable(String),
}

/// What one push request carried, with Pub/Sub's own identity of the message for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    pub parsed: Parsed,
    pub message_id: Option<String>,
    pub subscription: Option<String>,
    /// When Pub/Sub accepted the message (RFC 3339).
    pub publish_time: Option<String>,
}

/// Parses a push request body (the wrapped payload).
pub fn parse_push(body: &[u8]) -> Result<PushMessage, PushError> {
    let push: Push = serde_json::from_slice(body).map_err(|e| PushError::Envelope(e.to_string()))?;
    let Push { mut message, subscription } = push;
    message.publish_time = message.publish_time.take().or(message.publish_time_snake.take());
    let parsed = match storage_event(&message) {
        Ok(event) => Parsed::Storage(event),
        Err(why) => Parsed::Unusable(why),
    };
    Ok(PushMessage {
        parsed,
        message_id: message.message_id.or(message.message_id_snake),
        subscription,
        publish_time: message.publish_time,
    })
}

/// The event kind of a Cloud Storage notification's `eventType`.
pub fn kind_of(event_type: &str) -> EventKind {
    match event_type {
        "OBJECT_FINALIZE" => EventKind::Created,
        // Also sent for the live generation an overwrite replaces (with `overwrittenByGeneration`);
        // a removal withdraws only a pending revision it comes after, so that is harmless.
        "OBJECT_DELETE" => EventKind::Removed,
        // Metadata only: the bytes are the ones announced before.
        "OBJECT_METADATA_UPDATE" => EventKind::Metadata(event_type.to_owned()),
        // A version becoming noncurrent: never new content.
        other => EventKind::Other(other.to_owned()),
    }
}

fn storage_event(message: &Message) -> Result<StorageEvent, String> {
    let attribute = |name: &str| message.attributes.get(name).filter(|v| !v.is_empty());
    let (Some(event_type), Some(bucket), Some(object)) =
        (attribute("eventType"), attribute("bucketId"), attribute("objectId"))
    else {
        return Err("not a Cloud Storage notification (no eventType, bucketId and objectId attributes)".into());
    };
    let kind = kind_of(event_type);
    let generation = match attribute("objectGeneration") {
        Some(g) => Some(g.parse::<u64>().map_err(|_| format!("objectGeneration {g:?} is not a number"))?),
        None => None,
    };
    let resource = match message.data.as_deref().filter(|d| !d.is_empty()) {
        // With payloadFormat NONE there is no data; the attributes say everything needed.
        None => None,
        Some(data) => Some(object_resource(data)?),
    };
    Ok(StorageEvent {
        kind,
        bucket: check_bucket(bucket, 0).map_err(|e| e.to_string())?,
        // GCS object names are sent raw, not escaped.
        key: validate_key(object.clone()).map_err(|e| e.to_string())?,
        etag: resource.as_ref().and_then(|r| r.etag.as_deref()).and_then(bare_etag),
        version_id: generation.map(|g| g.to_string()),
        size: resource.as_ref().and_then(|r| r.size.as_ref()).and_then(Int64::value),
        // The generation orders versions of one name (as in the CloudEvents form of the same
        // notifications); zero-padded so that it sorts as text.
        sequencer: generation.map(|g| format!("{g:020}")),
        time: attribute("eventTime").cloned().or_else(|| message.publish_time.clone()),
    })
}

fn object_resource(data: &str) -> Result<ObjectResource, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("message data is not base64: {e}"))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| format!("message data is not JSON: {e}"))?;
    serde_json::from_value(value).map_err(|e| format!("message data is not an object resource: {e}"))
}

#[cfg(test)]
mod tests;
