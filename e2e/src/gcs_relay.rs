//! A loopback HTTP relay in front of the testbed's fake-gcs-server, so that a pipeline can
//! *write* to GCS in a test: the operator's ledger markers are object_store uploads.
//!
//! Why it exists: object_store uploads an object with GCS's XML API, `PUT /<bucket>/<object>`
//! with a bearer token and no query. Real GCS accepts that request. fake-gcs-server (v1.56.1,
//! and upstream HEAD as of 2026-11) routes it to its JSON-API upload handler, which takes it
//! only with an `uploadType` query or a signed URL's `X-Goog-Algorithm` query and otherwise
//! answers 400 "invalid uploadType": XML-API uploads are upstream's open issue
//! fsouza/fake-gcs-server#331 (e2e/README.md, "GCS").
//!
//! What it does: it adapts the wire form of that one request and stores nothing itself. Such a
//! PUT is sent on as fake-gcs-server's equivalent JSON-API simple upload (the same path plus
//! `?uploadType=media&name=<object name>`, body and headers as received), and fake-gcs-server's
//! JSON answer becomes the XML API's (200 with `ETag` and `x-goog-generation`, the headers
//! object_store reads). Every other request (JSON API, listings, reads, deletes, signed URLs)
//! and every other answer passes through unchanged; only `Host` is set to fake-gcs-server's,
//! which routes its XML API and signed URLs by host.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse as _, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;

/// First path segments that are fake-gcs-server's own routes (JSON API, uploads, downloads,
/// batch, configuration), never a bucket of an XML-API path.
const RESERVED: [&str; 5] = ["storage", "upload", "download", "batch", "_internal"];

/// The largest JSON answer to a simple upload the relay reads (an object resource is ~1 KiB).
const MAX_ANSWER: usize = 1 << 20;

/// A running relay; it stops when dropped.
pub struct GcsRelay {
    /// `http://127.0.0.1:<port>`: give it as a GCS store's endpoint instead of fake-gcs-server's.
    pub endpoint: String,
    upstream: Arc<Upstream>,
    task: tokio::task::JoinHandle<()>,
}

/// Where requests go, and what the relay has rewritten.
struct Upstream {
    /// fake-gcs-server's `127.0.0.1:<port>`: the address to connect to and the `Host` to send.
    authority: String,
    /// XML-API uploads sent on as simple uploads that fake-gcs-server took.
    uploads: AtomicUsize,
}

impl GcsRelay {
    /// Listens on a free loopback port and relays to `upstream`, fake-gcs-server's plain-HTTP
    /// endpoint (`ZF_GCS_ENDPOINT`).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let uri: Uri = upstream.parse().with_context(|| format!("fake-gcs-server endpoint {upstream:?}"))?;
        anyhow::ensure!(uri.scheme_str() == Some("http"), "the relay speaks plain HTTP only: {upstream}");
        let authority = uri.authority().context("endpoint without host")?.to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let upstream = Arc::new(Upstream { authority, uploads: AtomicUsize::new(0) });
        let app = axum::Router::new().fallback(relay).with_state(upstream.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("gcs relay stopped: {e}");
            }
        });
        Ok(Self { endpoint, upstream, task })
    }

    /// How many XML-API uploads were rewritten and taken by fake-gcs-server so far.
    pub fn uploads(&self) -> usize {
        self.upstream.uploads.load(Ordering::Relaxed)
    }
}

impl Drop for GcsRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    match forward(&upstream, request).await {
        Ok(response) => response,
        Err(e) => (StatusCode::BAD_GATEWAY, format!("gcs relay: {e:#}")).into_response(),
    }
}

/// Sends `request` to fake-gcs-server (rewritten if it is an XML-API upload) on a connection of
/// its own, and returns the answer (rewritten likewise).
async fn forward(upstream: &Upstream, request: Request) -> anyhow::Result<Response> {
    let (mut parts, body) = request.into_parts();
    let upload = xml_upload(&parts.method, &parts.uri, &parts.headers);
    let target = match &upload {
        Some(upload) => upload.simple_upload_target(parts.uri.path()),
        None => parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned(),
    };
    parts.uri = target.parse()?;
    parts.headers.insert(header::HOST, HeaderValue::from_str(&upstream.authority)?);

    let stream = tokio::net::TcpStream::connect(&upstream.authority).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let response = sender.send_request(http::Request::from_parts(parts, body)).await?;
    if upload.is_none() {
        return Ok(response.map(Body::new));
    }

    // fake-gcs-server's errors (404 for a missing bucket, 412 for a failed precondition) carry
    // the status object_store maps, so they pass as they are.
    let (parts, body) = response.into_parts();
    if !parts.status.is_success() {
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    let json = axum::body::to_bytes(Body::new(body), MAX_ANSWER).await?;
    let (etag, generation) = xml_answer(&json)?;
    upstream.uploads.fetch_add(1, Ordering::Relaxed);
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::ETAG, etag)
        .header("x-goog-generation", generation)
        .body(Body::empty())?)
}

/// An XML-API object upload without a signature, as object_store's `put` sends it.
#[derive(Debug, PartialEq)]
struct XmlUpload {
    /// The object name, percent-decoded from the path.
    name: String,
    /// `x-goog-if-generation-match` (object_store's create-only and conditional puts); the JSON
    /// API takes it as the `ifGenerationMatch` query parameter.
    if_generation_match: Option<String>,
}

impl XmlUpload {
    /// The JSON-API simple upload fake-gcs-server takes for it: the same path (which routes it
    /// to the bucket) with the upload type and the object's name in the query.
    fn simple_upload_target(&self, path: &str) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("uploadType", "media").append_pair("name", &self.name);
        if let Some(generation) = &self.if_generation_match {
            query.append_pair("ifGenerationMatch", generation);
        }
        format!("{path}?{}", query.finish())
    }
}

/// `Some` for `PUT /<bucket>/<object>` with no query at all (a signed URL, a multipart part or
/// a JSON-API upload has one) that is not a copy (`x-goog-copy-source`, whose body is empty).
fn xml_upload(method: &Method, uri: &Uri, headers: &HeaderMap) -> Option<XmlUpload> {
    if method != Method::PUT || uri.query().is_some() || headers.contains_key("x-goog-copy-source") {
        return None;
    }
    let (bucket, object) = uri.path().strip_prefix('/')?.split_once('/')?;
    if bucket.is_empty() || object.is_empty() || RESERVED.contains(&bucket) {
        return None;
    }
    let if_generation_match =
        headers.get("x-goog-if-generation-match").and_then(|v| v.to_str().ok()).map(str::to_owned);
    Some(XmlUpload { name: percent_decode(object)?, if_generation_match })
}

/// The XML API's `ETag` (quoted, as fake-gcs-server's own GET answers it) and
/// `x-goog-generation` from fake-gcs-server's JSON object resource.
fn xml_answer(json: &[u8]) -> anyhow::Result<(String, String)> {
    let object: serde_json::Value = serde_json::from_slice(json).context("simple upload answer is not JSON")?;
    let etag = [&object["etag"], &object["md5Hash"]]
        .into_iter()
        .find_map(|v| v.as_str().filter(|s| !s.is_empty()))
        .context("simple upload answer without etag or md5Hash")?;
    // The JSON API sends int64 fields as strings.
    let generation = object["generation"].as_str().context("simple upload answer without generation")?;
    Ok((format!("\"{etag}\""), generation.to_owned()))
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a name that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            decoded.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(method: Method, uri: &str, headers: &[(&'static str, &str)]) -> Option<XmlUpload> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).expect("header value"));
        }
        xml_upload(&method, &uri.parse().expect("uri"), &map)
    }

    #[test]
    fn only_unsigned_xml_uploads_are_rewritten() {
        let upload = classify(Method::PUT, "/b/batch%2Flast%20one%20%C3%BC.txt", &[]).expect("an upload");
        assert_eq!(upload.name, "batch/last one ü.txt");
        assert_eq!(
            upload.simple_upload_target("/b/batch%2Flast%20one%20%C3%BC.txt"),
            "/b/batch%2Flast%20one%20%C3%BC.txt?uploadType=media&name=batch%2Flast+one+%C3%BC.txt"
        );
        let create = classify(Method::PUT, "/b/k", &[("x-goog-if-generation-match", "0")]).expect("an upload");
        assert_eq!(create.simple_upload_target("/b/k"), "/b/k?uploadType=media&name=k&ifGenerationMatch=0");

        for (method, uri, headers) in [
            (Method::PUT, "/b/k?X-Goog-Algorithm=GOOG4-RSA-SHA256", vec![]),
            (Method::PUT, "/b/k?partNumber=1&uploadId=u", vec![]),
            (Method::PUT, "/b/k", vec![("x-goog-copy-source", "/b/j")]),
            (Method::PUT, "/upload/resumable/abc", vec![]),
            (Method::PUT, "/b/", vec![]),
            (Method::PUT, "/b/bad%zz", vec![]),
            (Method::GET, "/b/k", vec![]),
            (Method::POST, "/b/k", vec![]),
        ] {
            assert_eq!(classify(method.clone(), uri, &headers), None, "{method} {uri}");
        }
    }

    #[test]
    fn the_json_answer_becomes_the_xml_headers() {
        let json = br#"{"name":"k","etag":"XUFAKrxLKna5cZ2REBfFkg==","md5Hash":"XUFAKrxLKna5cZ2REBfFkg==","generation":"1764550000123456"}"#;
        assert_eq!(
            xml_answer(json).expect("headers"),
            ("\"XUFAKrxLKna5cZ2REBfFkg==\"".to_owned(), "1764550000123456".to_owned())
        );
        assert!(xml_answer(br#"{"name":"k","generation":"1"}"#).is_err());
        assert!(xml_answer(b"invalid uploadType").is_err());
    }
}
