//! CloudEvents over HTTP (binary, structured and batch mode) carrying storage events.
//!
//! The `cloudevents-sdk` crate's `Event` type does the validation (spec version, required
//! attributes, time format). Its HTTP bindings are not used: they would turn on axum's default
//! features and the futures 0.1 compat layer. Binary mode is mapped onto the structured JSON form
//! instead, which is exactly what the HTTP binding specifies.
//!
//! Types understood:
//! - GCS: `google.cloud.storage.object.v1.{finalized,deleted,archived,metadataUpdated}`; data has
//!   `bucket`, `name` (raw), `etag`, and int64 `generation`/`size` as JSON strings.
//! - Azure Blob: `Microsoft.Storage.BlobCreated` / `BlobDeleted` (and other `Microsoft.Storage.*`
//!   as ignorable); container and raw blob path come from `subject`, else from `data.url`.
//! - S3: `com.amazonaws.s3.*` / `com.amazon.s3.*` whose name contains `ObjectCreated` or
//!   `ObjectRemoved` (case-insensitive), as Knative/TriggerMesh-style S3 sources name them; data is
//!   an S3 record, a whole notification, or an EventBridge `detail` (`bucket.name`, `object.key`).

use ::cloudevents::{AttributesReader, Data, Event};
use http::{HeaderMap, header::CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::key::{decode_form_key, decode_path, validate_key};
use super::{EventKind, RecordError, StorageEvent, bare_etag, check_bucket, s3};

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

/// Decodes the CloudEvents in an HTTP request and maps each onto storage events.
pub fn parse_http(headers: &HeaderMap, body: &[u8]) -> Result<Vec<StorageEvent>, RecordError> {
    let mut out = Vec::new();
    for event in decode_http(headers, body)? {
        out.extend(to_storage_events(&event)?);
    }
    Ok(out)
}

/// The CloudEvents of a request: structured and batch mode by content type, binary mode by the
/// `ce-specversion` header.
pub fn decode_http(headers: &HeaderMap, body: &[u8]) -> Result<Vec<Event>, RecordError> {
    let media = media_type(headers);
    match media.as_deref() {
        Some(STRUCTURED) => Ok(vec![serde_json::from_slice(body)?]),
        Some(BATCH) => Ok(serde_json::from_slice(body)?),
        _ if headers.contains_key("ce-specversion") => Ok(vec![binary_event(headers, media.as_deref(), body)?]),
        Some(other) => Err(RecordError::MediaType(other.to_owned())),
        None => Err(RecordError::MediaType(String::new())),
    }
}

/// The media type without parameters, lower-cased (`Application/JSON; charset=utf-8` ->
/// `application/json`). A content type that is not valid text counts as absent.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let media = raw.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    (!media.is_empty()).then_some(media)
}

pub fn is_json_media(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json") || media == "text/json"
}

fn binary_event(headers: &HeaderMap, media: Option<&str>, body: &[u8]) -> Result<Event, RecordError> {
    let mut attributes = Map::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else { continue };
        let value = value.to_str().map_err(|_| RecordError::CloudEvent(format!("header {name} is not text")))?;
        // The HTTP binding percent-encodes attribute values that are not printable ASCII.
        let value = decode_path(value).map_err(|e| RecordError::CloudEvent(format!("header {name}: {e}")))?;
        attributes.insert(attribute.to_owned(), Value::String(value));
    }
    if !body.is_empty() {
        match media {
            Some(media) if !is_json_media(media) => return Err(RecordError::MediaType(media.to_owned())),
            _ => {}
        }
        attributes.insert("datacontenttype".into(), Value::String(media.unwrap_or("application/json").to_owned()));
        attributes.insert("data".into(), serde_json::from_slice(body)?);
    }
    serde_json::from_value(Value::Object(attributes)).map_err(|e| RecordError::CloudEvent(e.to_string()))
}

/// Maps one CloudEvent onto the storage events it reports (usually one).
pub fn to_storage_events(event: &Event) -> Result<Vec<StorageEvent>, RecordError> {
    let ty = event.ty();
    if let Some(action) = ty.strip_prefix("google.cloud.storage.object.v1.") {
        gcs(event, action).map(|e| vec![e])
    } else if let Some(action) = ty.strip_prefix("Microsoft.Storage.") {
        azure(event, action).map(|e| vec![e])
    } else if ty.starts_with("com.amazonaws.s3.") || ty.starts_with("com.amazon.s3.") {
        aws(event)
    } else {
        Err(RecordError::UnknownType(ty.to_owned()))
    }
}

fn json_data(event: &Event) -> Result<Value, RecordError> {
    match event.data() {
        Some(Data::Json(value)) => Ok(value.clone()),
        Some(Data::String(text)) => Ok(serde_json::from_str(text)?),
        Some(Data::Binary(bytes)) => Ok(serde_json::from_slice(bytes)?),
        None => Err(RecordError::Data("missing".into())),
    }
}

fn event_time(event: &Event) -> Option<String> {
    event.time().map(|t| t.to_rfc3339())
}

/// int64 fields arrive as JSON strings from GCS (proto3 JSON mapping); accept numbers too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Int64 {
    Number(u64),
    Text(String),
}

impl Int64 {
    fn value(self, field: &str) -> Result<u64, RecordError> {
        match self {
            Int64::Number(n) => Ok(n),
            Int64::Text(s) => {
                s.parse().map_err(|_| RecordError::Data(format!("{field} is not a non-negative integer")))
            }
        }
    }
}

#[derive(Deserialize)]
struct GcsObject {
    bucket: String,
    name: String,
    etag: Option<String>,
    /// Base64 MD5, absent for composite objects.
    #[serde(rename = "md5Hash")]
    md5_hash: Option<String>,
    generation: Option<Int64>,
    size: Option<Int64>,
    updated: Option<String>,
}

fn gcs(event: &Event, action: &str) -> Result<StorageEvent, RecordError> {
    let kind = match action {
        "finalized" => EventKind::Created,
        "deleted" => EventKind::Removed,
        "archived" | "metadataUpdated" => EventKind::Other(action.to_owned()),
        _ => return Err(RecordError::UnknownType(event.ty().to_owned())),
    };
    let object: GcsObject = serde_json::from_value(json_data(event)?)?;
    let generation = object.generation.map(|g| g.value("generation")).transpose()?;
    Ok(StorageEvent {
        kind,
        bucket: check_bucket(&object.bucket, 0)?,
        // GCS names are sent raw, not escaped.
        key: validate_key(object.name).map_err(|source| RecordError::Key { index: 0, source })?,
        // The revision as object_store lists and HEADs it (GCS's XML API): the MD5, whose ETag
        // is the hex digest, rather than the JSON API's `etag`, which no listing shows. Composite
        // objects have no MD5 and keep the JSON etag (see crate::etag).
        etag: object.md5_hash.as_deref().or(object.etag.as_deref()).and_then(bare_etag),
        version_id: generation.map(|g| g.to_string()),
        size: object.size.map(|s| s.value("size")).transpose()?,
        // The generation orders versions of one name; it doubles as a sequencer.
        sequencer: generation.map(|g| format!("{g:020}")),
        time: event_time(event).or(object.updated),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzureBlob {
    api: Option<String>,
    url: Option<String>,
    e_tag: Option<String>,
    content_length: Option<u64>,
    sequencer: Option<String>,
}

fn azure(event: &Event, action: &str) -> Result<StorageEvent, RecordError> {
    let data: AzureBlob = serde_json::from_value(json_data(event)?)?;
    let kind = match action {
        // Data Lake's CreateFile raises BlobCreated for an empty file that is written later; the
        // FlushWithClose that follows is the real creation.
        "BlobCreated" if data.api.as_deref() == Some("CreateFile") => EventKind::Other("BlobCreated:CreateFile".into()),
        "BlobCreated" => EventKind::Created,
        "BlobDeleted" => EventKind::Removed,
        _ => EventKind::Other(action.to_owned()),
    };
    let (container, blob) = match event.subject().and_then(azure_subject) {
        Some(parts) => parts,
        None => azure_url(data.url.as_deref().ok_or(RecordError::Data("no subject or url".into()))?)?,
    };
    Ok(StorageEvent {
        kind,
        bucket: check_bucket(&container, 0)?,
        key: validate_key(blob).map_err(|source| RecordError::Key { index: 0, source })?,
        etag: data.e_tag.as_deref().and_then(bare_etag),
        version_id: None,
        size: data.content_length,
        sequencer: data.sequencer,
        time: event_time(event),
    })
}

/// `/blobServices/default/containers/<container>/blobs/<path>`; the path is raw and may contain
/// anything, including `/blobs/`.
fn azure_subject(subject: &str) -> Option<(String, String)> {
    let rest = subject.strip_prefix("/blobServices/default/containers/")?;
    let (container, blob) = rest.split_once("/blobs/")?;
    Some((container.to_owned(), blob.to_owned()))
}

/// `https://<account>.blob.core.windows.net/<container>/<percent-encoded path>`.
fn azure_url(url: &str) -> Result<(String, String), RecordError> {
    let bad = || RecordError::Data("url is not a blob URL".into());
    let after_scheme = url.split_once("://").ok_or_else(bad)?.1;
    let path = after_scheme.split_once('/').ok_or_else(bad)?.1;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let (container, blob) = path.split_once('/').ok_or_else(bad)?;
    let blob = decode_path(blob).map_err(|source| RecordError::Key { index: 0, source })?;
    Ok((container.to_owned(), blob))
}

fn aws(event: &Event) -> Result<Vec<StorageEvent>, RecordError> {
    let data = json_data(event)?;
    let kind_from_type = || {
        let lower = event.ty().to_ascii_lowercase();
        if lower.contains("objectcreated") {
            EventKind::Created
        } else if lower.contains("objectremoved") {
            EventKind::Removed
        } else {
            EventKind::Other(event.ty().to_owned())
        }
    };
    let data = match data {
        Value::Object(mut map) if map.contains_key("detail") => map.remove("detail").unwrap_or_default(),
        other => other,
    };
    if data.get("Records").is_some() {
        s3::parse_notification_value(data)
    } else if data.get("s3").is_some() {
        Ok(vec![s3::parse_record_value(data)?])
    } else {
        eventbridge_detail(data, kind_from_type(), event_time(event)).map(|e| vec![e])
    }
}

#[derive(Deserialize)]
struct Detail {
    bucket: DetailBucket,
    object: DetailObject,
}

#[derive(Deserialize)]
struct DetailBucket {
    name: String,
}

#[derive(Deserialize)]
struct DetailObject {
    key: String,
    size: Option<u64>,
    etag: Option<String>,
    #[serde(rename = "version-id")]
    version_id: Option<String>,
    sequencer: Option<String>,
}

fn eventbridge_detail(data: Value, kind: EventKind, time: Option<String>) -> Result<StorageEvent, RecordError> {
    let detail: Detail = serde_json::from_value(data)?;
    Ok(StorageEvent {
        kind,
        bucket: check_bucket(&detail.bucket.name, 0)?,
        // Escaped like notification records.
        key: decode_form_key(&detail.object.key).map_err(|source| RecordError::Key { index: 0, source })?,
        etag: detail.object.etag.as_deref().and_then(bare_etag),
        version_id: detail.object.version_id,
        size: detail.object.size,
        sequencer: detail.object.sequencer,
        time,
    })
}

#[cfg(test)]
mod tests;
