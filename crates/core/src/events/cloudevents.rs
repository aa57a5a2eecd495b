//! CloudEvents over HTTP (binary, structured and batch mode) carrying storage events.
//!
//! The `cloudevents-sdk` crate's `Event` type does the validation (spec version, required
//! attributes, time format). Its HTTP bindings are not used: they would turn on axum's default
//! features and the futures 0.1 compat layer. Binary mode is mapped onto the structured JSON form
//! instead, which is exactly what the HTTP binding specifies.
//!
//! Types understood:
//! - GCS: `google.cloud.storage.object.v1.{finalized,deleted,archived,metadataUpdated}`; data has
//!   `bucket`, `name` (raw), `etag`, and int64 `generation`/`size` as JSON strings. `finalized`
//!   is content, `deleted` a removal (GCS also sends it for the generation an overwrite
//!   replaces), `metadataUpdated` metadata only, `archived` (a version became noncurrent) other.
//! - Azure Blob: `Microsoft.Storage.*` (Azure's "Blob Storage as an Event Grid source"):
//!   `BlobCreated` is content except the empty file that Data Lake's `CreateFile` and SFTP's
//!   `SftpCreate` announce before the data (the `FlushWithClose` / `SftpCommit` that follows is
//!   the creation); `BlobRenamed` publishes its destination and removes its source;
//!   `BlobDeleted` is a removal; `BlobTierChanged` metadata only; directory events and
//!   `AsyncOperationInitiated` other. Container and raw blob path come from `subject`, else
//!   from the percent-encoded blob URL.
//! - S3: `com.amazonaws.*` and `com.amazon.s3.*`: the CloudEvents AWS S3 adapter's
//!   `com.amazonaws.s3.<eventName>`, Ceph RGW's `cloudevents=true` HTTP endpoint
//!   (`com.amazonaws.<eventName>`, body `{"Records": [...]}`, raw object key in `ce-subject`),
//!   Knative/TriggerMesh-style sources. Data is an S3 notification, one record, or an
//!   EventBridge event or `detail`.

use ::cloudevents::{AttributesReader, Data, Event};
use http::{HeaderMap, header::CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::key::{KeyEncoding, decode_path};
use super::names::{eventbridge_kind, s3_kind};
use super::{EventKind, JsonU64, RecordError, RecordParts, StorageEvent, bare_etag, eventbridge, record_event, s3};

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

/// Whether a request carries CloudEvents: a CloudEvents media type (structured, batch) or a
/// `ce-specversion` header (binary mode).
pub fn is_cloudevents_request(headers: &HeaderMap) -> bool {
    matches!(media_type(headers).as_deref(), Some(STRUCTURED | BATCH)) || headers.contains_key("ce-specversion")
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

/// Whether the request's `Content-Type` is JSON: [`is_json_media`] of [`media_type`], without
/// lowering a copy of it (once per request on the gateway's path).
pub fn has_json_media(headers: &HeaderMap) -> bool {
    let Some(raw) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let media = raw.split(';').next().unwrap_or_default().trim().as_bytes();
    media.eq_ignore_ascii_case(b"application/json")
        || (media.len() >= 5 && media[media.len() - 5..].eq_ignore_ascii_case(b"+json"))
        || media.eq_ignore_ascii_case(b"text/json")
}

/// A binary-mode attribute header's value. The HTTP binding percent-encodes values that are
/// not printable ASCII; Ceph RGW puts the raw object key into `ce-subject` instead (UTF-8,
/// possibly with a bare `%`), so a value that is UTF-8 but not a valid escape is taken as sent.
fn attribute_value(raw: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(raw).ok()?;
    Some(decode_path(text).unwrap_or_else(|_| text.to_owned()))
}

fn binary_event(headers: &HeaderMap, media: Option<&str>, body: &[u8]) -> Result<Event, RecordError> {
    let mut attributes = Map::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else { continue };
        let Some(value) = attribute_value(value.as_bytes()) else {
            return Err(RecordError::CloudEvent(format!("header {name} is not UTF-8")));
        };
        // `time` is optional and only informative here: one a sender formats loosely is dropped
        // rather than failing the event.
        if attribute == "time" && chrono::DateTime::parse_from_rfc3339(&value).is_err() {
            continue;
        }
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

/// Maps one CloudEvent onto the storage events it reports (usually one; an Azure rename two).
pub fn to_storage_events(event: &Event) -> Result<Vec<StorageEvent>, RecordError> {
    let ty = event.ty();
    if let Some(action) = ty.strip_prefix("google.cloud.storage.object.v1.") {
        gcs(event, action).map(|e| vec![e])
    } else if let Some(action) = ty.strip_prefix("Microsoft.Storage.") {
        azure(event, action)
    } else if let Some(name) = ty.strip_prefix("com.amazonaws.").or_else(|| ty.strip_prefix("com.amazon.")) {
        aws(event, name)
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

/// An optional number that must be valid only where the event is work.
fn lenient(value: Option<JsonU64>, field: &str, kind: &EventKind) -> Result<Option<u64>, RecordError> {
    match value.map(|v| v.value(field)) {
        Some(Err(e)) if kind.is_work() => Err(e),
        value => Ok(value.and_then(Result::ok)),
    }
}

#[derive(Deserialize)]
struct GcsObject {
    #[serde(default)]
    bucket: String,
    #[serde(default)]
    name: String,
    etag: Option<String>,
    /// Base64 MD5, absent for composite objects.
    #[serde(rename = "md5Hash")]
    md5_hash: Option<String>,
    generation: Option<JsonU64>,
    size: Option<JsonU64>,
    updated: Option<String>,
}

fn gcs(event: &Event, action: &str) -> Result<StorageEvent, RecordError> {
    let kind = match action {
        "finalized" => EventKind::Created,
        "deleted" => EventKind::Removed,
        "metadataUpdated" => EventKind::Metadata(action.to_owned()),
        // `archived`: a version became noncurrent (the live one was replaced or deleted, which
        // has its own event); and whatever GCS adds next.
        _ => EventKind::Other(action.to_owned()),
    };
    let object: GcsObject = serde_json::from_value(json_data(event)?)?;
    let generation = lenient(object.generation, "generation", &kind)?;
    let size = lenient(object.size, "size", &kind)?;
    record_event(
        kind,
        RecordParts {
            index: 0,
            bucket: &object.bucket,
            // GCS names are sent raw, not escaped.
            wire_key: &object.name,
            encoding: KeyEncoding::Raw,
            // The revision as object_store lists and HEADs it (GCS's XML API): the MD5, whose
            // ETag is the hex digest, rather than the JSON API's `etag`, which no listing shows.
            // Composite objects have no MD5 and keep the JSON etag (see crate::etag).
            etag: object.md5_hash.as_deref().or(object.etag.as_deref()).and_then(bare_etag),
            version_id: generation.map(|g| g.to_string()),
            size,
            // The generation orders versions of one name; it doubles as a sequencer.
            sequencer: generation.map(|g| format!("{g:020}")),
            time: event_time(event).or(object.updated),
        },
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzureBlob {
    api: Option<String>,
    url: Option<String>,
    source_url: Option<String>,
    destination_url: Option<String>,
    e_tag: Option<String>,
    content_length: Option<JsonU64>,
    sequencer: Option<String>,
}

/// Where an Azure event's blob is: its container and the blob path as sent, with how that path
/// is encoded (raw in `subject`, percent-encoded in URLs).
struct AzureLocation {
    container: String,
    path: String,
    encoding: KeyEncoding,
}

fn azure(event: &Event, action: &str) -> Result<Vec<StorageEvent>, RecordError> {
    let data: AzureBlob = serde_json::from_value(json_data(event)?)?;
    let api = data.api.as_deref().unwrap_or_default();
    let kind = match action {
        "BlobCreated" if matches!(api, "CreateFile" | "SftpCreate") => EventKind::Other(format!("BlobCreated:{api}")),
        "BlobCreated" | "BlobRenamed" => EventKind::Created,
        "BlobDeleted" => EventKind::Removed,
        "BlobTierChanged" => EventKind::Metadata(action.to_owned()),
        _ => EventKind::Other(action.to_owned()),
    };
    // A rename's subject and destinationUrl name the new path; `url` everything else's.
    let url = if action == "BlobRenamed" { data.destination_url.as_deref() } else { data.url.as_deref() };
    let location = event.subject().and_then(azure_subject).or_else(|| url.and_then(azure_url));
    let location = match location {
        Some(location) => location,
        None if kind.is_work() => return Err(RecordError::Data("no blob subject or url".into())),
        None => AzureLocation { container: String::new(), path: String::new(), encoding: KeyEncoding::Raw },
    };
    let size = lenient(data.content_length, "contentLength", &kind)?;
    let mut events = Vec::new();
    if action == "BlobRenamed"
        && let Some(source) = data.source_url.as_deref().and_then(azure_url)
    {
        // The file is gone from its old path: anything still pending there is withdrawn.
        events.push(azure_event(EventKind::Removed, &source, None, None, data.sequencer.clone(), event)?);
    }
    let etag = data.e_tag.as_deref().and_then(bare_etag);
    events.push(azure_event(kind, &location, etag, size, data.sequencer, event)?);
    Ok(events)
}

fn azure_event(
    kind: EventKind,
    location: &AzureLocation,
    etag: Option<String>,
    size: Option<u64>,
    sequencer: Option<String>,
    event: &Event,
) -> Result<StorageEvent, RecordError> {
    record_event(
        kind,
        RecordParts {
            index: 0,
            bucket: &location.container,
            wire_key: &location.path,
            encoding: location.encoding,
            etag,
            version_id: None,
            size,
            sequencer,
            time: event_time(event),
        },
    )
}

/// `/blobServices/default/containers/<container>/blobs/<path>`; the path is raw and may contain
/// anything, including `/blobs/`.
fn azure_subject(subject: &str) -> Option<AzureLocation> {
    let rest = subject.strip_prefix("/blobServices/default/containers/")?;
    let (container, blob) = rest.split_once("/blobs/")?;
    Some(AzureLocation { container: container.to_owned(), path: blob.to_owned(), encoding: KeyEncoding::Raw })
}

/// `https://<account>.{blob,dfs}.core.windows.net/<container>/<percent-encoded path>`.
fn azure_url(url: &str) -> Option<AzureLocation> {
    let after_scheme = url.split_once("://")?.1;
    let path = after_scheme.split_once('/')?.1;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let (container, blob) = path.split_once('/')?;
    Some(AzureLocation { container: container.to_owned(), path: blob.to_owned(), encoding: KeyEncoding::Path })
}

/// `name` is the type after `com.amazonaws.` / `com.amazon.`: `s3.ObjectCreated:Put` (the
/// CloudEvents AWS S3 adapter), `ObjectCreated:Put` (Ceph), `s3.objectcreated` (older sources).
fn aws(event: &Event, name: &str) -> Result<Vec<StorageEvent>, RecordError> {
    let data = json_data(event)?;
    if data.get("Records").is_some() {
        return s3::parse_notification_value(data);
    }
    if data.get("s3").is_some() {
        return Ok(vec![s3::parse_record_value(data)?]);
    }
    let time = event_time(event);
    if eventbridge::is_envelope(&data) {
        let mut events = eventbridge::parse_envelope(data)?;
        for e in &mut events {
            e.time = e.time.take().or_else(|| time.clone());
        }
        return Ok(events);
    }
    let kind = match data.get("detail-type").and_then(Value::as_str) {
        Some(detail_type) => eventbridge_kind(detail_type),
        None => kind_from_type(name),
    };
    let detail = match data {
        Value::Object(mut map) if map.contains_key("detail") => map.remove("detail").unwrap_or_default(),
        other => other,
    };
    Ok(vec![eventbridge::detail_event(detail, kind, time)?])
}

fn kind_from_type(name: &str) -> EventKind {
    let bare = name.strip_prefix("s3.").or_else(|| name.strip_prefix("s3:")).unwrap_or(name);
    match s3_kind(bare) {
        EventKind::Other(_) => {
            // Lower-case names of older S3 sources (`com.amazon.s3.objectcreated`).
            let lower = bare.to_ascii_lowercase();
            if lower.starts_with("objectcreated") {
                EventKind::Created
            } else if lower.starts_with("objectremoved") {
                EventKind::Removed
            } else {
                EventKind::Other(name.to_owned())
            }
        }
        kind => kind,
    }
}

#[cfg(test)]
mod tests;
