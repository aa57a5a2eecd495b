//! The gateway over real HTTP on loopback, with the real in-memory backlogs behind it.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use zeroflow_core::PipelineKey;
use zeroflow_core::backlog::{Backlog, BacklogConfig, Millis};
use zeroflow_core::routing::Route;
use zeroflow_operator::gateway::auth::BearerToken;
use zeroflow_operator::gateway::metrics::GatewayMetrics;
use zeroflow_operator::gateway::{GatewayConfig, router};
use zeroflow_operator::metrics::Metrics;
use zeroflow_operator::runtime::{Pipelines, Seed, Settings};

const TOKEN: &str = "t0ken-for-tests";

struct Harness {
    addr: SocketAddr,
    pipelines: Arc<Pipelines>,
    metrics: Arc<Metrics>,
    pipeline: PipelineKey,
}

impl Harness {
    /// Runs `f` on a pipeline's backlog.
    fn with<T>(&self, key: &PipelineKey, f: impl FnOnce(&mut Backlog, Millis) -> T) -> T {
        let pipeline = self.pipelines.get(key).expect("served");
        let now = self.pipelines.now();
        f(&mut pipeline.lock().backlog, now)
    }
}

async fn start(capacity: usize, body_limit: usize) -> Harness {
    let pipeline = PipelineKey::new("finance", "invoices");
    let routes = [
        Route {
            namespace: "finance".into(),
            name: "invoices".into(),
            bucket: "raw-invoices".into(),
            prefix: None,
            suffix: None,
            exclude_prefixes: vec!["out/".into()],
        },
        Route {
            namespace: "gcs".into(),
            name: "p".into(),
            bucket: "raw".into(),
            prefix: None,
            suffix: None,
            exclude_prefixes: vec![],
        },
        Route {
            namespace: "azure".into(),
            name: "p".into(),
            bucket: "landing".into(),
            prefix: None,
            suffix: None,
            exclude_prefixes: vec![],
        },
    ];
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    // The scaler is not running: its kicks go nowhere.
    let (kick, _kicks) = tokio::sync::mpsc::unbounded_channel();
    let pipelines = Arc::new(Pipelines::new(7, kick, metrics.clone()));
    let config = BacklogConfig { capacity, ..BacklogConfig::default() };
    for route in routes {
        let key = route.key();
        let runtime = pipelines.upsert(&key, Settings::new(route, config.clone()), &Seed::default());
        // Leasing starts when the scaler adopts a pipeline; here, at once.
        runtime.lock().backlog.hold_until(0);
    }
    let gateway_metrics = GatewayMetrics::register(metrics.registry()).expect("metrics");
    let config = GatewayConfig { token: Some(BearerToken::new(TOKEN).expect("token")), body_limit };
    let app = router(config, pipelines.clone(), gateway_metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    Harness { addr, pipelines, metrics, pipeline }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn send(addr: SocketAddr, method: Method, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut request = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

const AUTH: (&str, &str) = ("authorization", "Bearer t0ken-for-tests");
const JSON: (&str, &str) = ("content-type", "application/json");

async fn post_s3(h: &Harness, body: &str) -> Reply {
    send(h.addr, Method::POST, "/v1/events/s3", &[AUTH, JSON], body.as_bytes().to_vec()).await
}

/// A MinIO webhook body as the server sends it, for an escaped key.
fn minio_body(event: &str, bucket: &str, escaped_key: &str, etag: &str) -> String {
    serde_json::json!({
        "EventName": event,
        "Key": format!("{bucket}/{escaped_key}"),
        "Records": [{
            "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
            "eventTime": "2026-11-27T10:00:00.000Z", "eventName": event,
            "userIdentity": {"principalId": "minioadmin"},
            "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "187B", "x-minio-deployment-id": "d", "x-minio-origin-endpoint": "http://127.0.0.1:9000"},
            "s3": {
                "s3SchemaVersion": "1.0", "configurationId": "Config",
                "bucket": {"name": bucket, "ownerIdentity": {"principalId": "minioadmin"}, "arn": format!("arn:aws:s3:::{bucket}")},
                "object": {"key": escaped_key, "size": 42, "eTag": etag, "contentType": "text/csv",
                           "userMetadata": {"content-type": "text/csv"}, "sequencer": "187B3C9D1E2F"}
            },
            "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64) minio-go/v7.0.83"}
        }]
    })
    .to_string()
}

fn metrics_text(metrics: &Metrics) -> String {
    metrics.render().expect("render")
}

fn leased_keys(h: &Harness) -> Vec<String> {
    let mut keys = Vec::new();
    while let Some(lease) = h.with(&h.pipeline, |b, now| b.lease(now)) {
        keys.push(lease.item.object.key);
    }
    keys
}

#[tokio::test]
async fn head_probe_answers_ok_without_credentials() {
    let h = start(100, 1 << 20).await;
    let reply = send(h.addr, Method::HEAD, "/v1/events/s3", &[], vec![]).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn minio_put_is_accepted_once_then_duplicate() {
    let h = start(100, 1 << 20).await;
    let body = minio_body("s3:ObjectCreated:Put", "raw-invoices", "incoming%2Fmarch+2026.csv", "abc");
    let first = post_s3(&h, &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.json()["accepted"], 1);
    let second = post_s3(&h, &body).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!((second.json()["accepted"].clone(), second.json()["duplicate"].clone()), (0.into(), 1.into()));
    assert_eq!(leased_keys(&h), ["incoming/march 2026.csv"]);
    let text = metrics_text(&h.metrics);
    assert!(text.contains(r#"zeroflow_events_received_total{outcome="accepted",source="s3"} 1"#), "{text}");
    assert!(text.contains(r#"zeroflow_events_received_total{outcome="duplicate",source="s3"} 1"#), "{text}");
    assert!(text.contains(r#"zeroflow_gateway_request_duration_seconds_count{source="s3"} 2"#), "{text}");
}

#[tokio::test]
async fn hostile_but_legal_keys_arrive_exactly() {
    let h = start(100, 1 << 20).await;
    let long = "k".repeat(1024);
    let cases = [
        ("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd".to_owned()),
        ("%2Fleading%2Fslash", "/leading/slash".to_owned()),
        ("with+spaces+and%2Bplus.csv", "with spaces and+plus.csv".to_owned()),
        ("r%C3%A9sum%C3%A9%2F%E6%97%A5%E6%9C%AC.csv", "résumé/日本.csv".to_owned()),
        (long.as_str(), long.clone()),
    ];
    for (i, (escaped, _)) in cases.iter().enumerate() {
        let reply = post_s3(&h, &minio_body("s3:ObjectCreated:Put", "raw-invoices", escaped, &format!("e{i}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{escaped}: {}", reply.body);
        assert_eq!(reply.json()["accepted"], 1, "{escaped}");
    }
    let mut leased = leased_keys(&h);
    let mut expected: Vec<String> = cases.iter().map(|(_, k)| k.clone()).collect();
    leased.sort();
    expected.sort();
    assert_eq!(leased, expected);
}

#[tokio::test]
async fn invalid_keys_are_400() {
    let h = start(100, 1 << 20).await;
    for escaped in ["", "a%00b", "bad%zzescape", &"k".repeat(1025), "%FF"] {
        let reply = post_s3(&h, &minio_body("s3:ObjectCreated:Put", "raw-invoices", escaped, "e")).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{escaped:?}");
        assert!(reply.json()["error"].as_str().is_some_and(|e| e.contains("key")), "{}", reply.body);
    }
}

#[tokio::test]
async fn credentials_are_required() {
    let h = start(100, 1 << 20).await;
    let body = minio_body("s3:ObjectCreated:Put", "raw-invoices", "a.csv", "e").into_bytes();
    let missing = send(h.addr, Method::POST, "/v1/events/s3", &[JSON], body.clone()).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert!(missing.headers.get("www-authenticate").is_some_and(|v| v.as_bytes().starts_with(b"Bearer")));
    let wrong =
        send(h.addr, Method::POST, "/v1/events/s3", &[("authorization", "Bearer nope"), JSON], body.clone()).await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let ce = send(h.addr, Method::POST, "/v1/events/cloudevents", &[], body).await;
    assert_eq!(ce.status, StatusCode::UNAUTHORIZED);
    let text = metrics_text(&h.metrics);
    assert!(text.contains(r#"zeroflow_events_received_total{outcome="unauthorized",source="s3"} 2"#), "{text}");
    assert!(h.with(&h.pipeline, |b, _| b.is_idle()));
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let h = start(100, 4096).await;
    let big = format!("{{\"Records\": [], \"pad\": \"{}\"}}", "x".repeat(8192));
    let reply = post_s3(&h, &big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.json()["error"].is_string());
    let fits = post_s3(&h, &minio_body("s3:ObjectCreated:Put", "raw-invoices", "a.csv", "e")).await;
    assert_eq!(fits.status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_content_types_are_415() {
    let h = start(100, 1 << 20).await;
    let body = minio_body("s3:ObjectCreated:Put", "raw-invoices", "a.csv", "e").into_bytes();
    let s3 = send(h.addr, Method::POST, "/v1/events/s3", &[AUTH, ("content-type", "text/plain")], body.clone()).await;
    assert_eq!(s3.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let none = send(h.addr, Method::POST, "/v1/events/s3", &[AUTH], body.clone()).await;
    assert_eq!(none.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let ce = send(h.addr, Method::POST, "/v1/events/cloudevents", &[AUTH, ("content-type", "text/xml")], body).await;
    assert_eq!(ce.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn malformed_input_is_400_with_a_reason() {
    let h = start(100, 1 << 20).await;
    for body in ["{", "[]", "{}", "null", "{\"Records\": [{\"eventName\": 3}]}"] {
        let reply = post_s3(&h, body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(reply.json()["error"].is_string(), "{body}");
    }
    let unknown = r#"{"specversion":"1.0","id":"1","source":"x","type":"com.example.unknown","data":{}}"#;
    let reply = send(
        h.addr,
        Method::POST,
        "/v1/events/cloudevents",
        &[AUTH, ("content-type", "application/cloudevents+json")],
        unknown.into(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "unsupported CloudEvent type \"com.example.unknown\"");
}

#[tokio::test]
async fn overload_is_503_with_retry_after_and_nothing_is_lost_on_retry() {
    let h = start(1, 1 << 20).await;
    let first = post_s3(&h, &minio_body("s3:ObjectCreated:Put", "raw-invoices", "a.csv", "1")).await;
    assert_eq!(first.status, StatusCode::OK);
    let second_body = minio_body("s3:ObjectCreated:Put", "raw-invoices", "b.csv", "1");
    let refused = post_s3(&h, &second_body).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"7"[..]));
    assert!(h.with(&h.pipeline, |b, _| b.needs_resync()));
    // Once the backlog drains, the sender's retry of the same request is accepted.
    let lease = h.with(&h.pipeline, |b, now| b.lease(now)).expect("leased");
    assert_eq!(lease.item.object.key, "a.csv");
    h.with(&h.pipeline, |b, _| b.complete(lease.id)).expect("held");
    let retried = post_s3(&h, &second_body).await;
    assert_eq!((retried.status, retried.json()["accepted"].clone()), (StatusCode::OK, 1.into()));
    assert_eq!(leased_keys(&h), ["b.csv"]);
    let text = metrics_text(&h.metrics);
    assert!(text.contains(r#"zeroflow_events_received_total{outcome="overloaded",source="s3"} 1"#), "{text}");
}

#[tokio::test]
async fn removals_and_unrouted_events_are_counted_not_queued() {
    let h = start(100, 1 << 20).await;
    let removed = serde_json::json!({"Records": [{"eventName": "ObjectRemoved:Delete", "eventSource": "aws:s3",
        "s3": {"bucket": {"name": "raw-invoices"}, "object": {"key": "a.csv", "sequencer": "01"}}}]})
    .to_string();
    let reply = post_s3(&h, &removed).await;
    assert_eq!((reply.status, reply.json()["ignored"].clone()), (StatusCode::OK, 1.into()));
    let elsewhere = post_s3(&h, &minio_body("s3:ObjectCreated:Put", "other-bucket", "a.csv", "e")).await;
    assert_eq!((elsewhere.status, elsewhere.json()["unrouted"].clone()), (StatusCode::OK, 1.into()));
    let own_output = post_s3(&h, &minio_body("s3:ObjectCreated:Put", "raw-invoices", "out%2Fa.parquet", "e")).await;
    assert_eq!(own_output.json()["unrouted"], 1, "a pipeline never consumes its own output");
    let test_event = post_s3(&h, r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"raw-invoices"}"#).await;
    assert_eq!(test_event.status, StatusCode::OK);
    assert!(h.with(&h.pipeline, |b, _| b.is_idle()));
}

#[tokio::test]
async fn cloudevents_binary_and_structured() {
    let h = start(100, 1 << 20).await;
    let gcs =
        r#"{"bucket": "raw", "name": "a b/c.csv", "etag": "CKih", "generation": "1587627537231057", "size": "352"}"#;
    let binary = send(
        h.addr,
        Method::POST,
        "/v1/events/cloudevents",
        &[
            AUTH,
            JSON,
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "//storage.googleapis.com/projects/_/buckets/raw"),
            ("ce-type", "google.cloud.storage.object.v1.finalized"),
        ],
        gcs.into(),
    )
    .await;
    assert_eq!((binary.status, binary.json()["accepted"].clone()), (StatusCode::OK, 1.into()), "{}", binary.body);
    let azure = r#"{"specversion": "1.0", "id": "9", "type": "Microsoft.Storage.BlobCreated", "source": "/subscriptions/s",
        "subject": "/blobServices/default/containers/landing/blobs/dir/x+y z.json",
        "data": {"api": "PutBlockList", "eTag": "0x8D4", "contentLength": 5, "url": "https://a.blob.core.windows.net/landing/dir/x%2By%20z.json"}}"#;
    let structured = send(
        h.addr,
        Method::POST,
        "/v1/events/cloudevents",
        &[AUTH, ("content-type", "application/cloudevents+json; charset=utf-8")],
        azure.into(),
    )
    .await;
    assert_eq!((structured.status, structured.json()["accepted"].clone()), (StatusCode::OK, 1.into()));
    let azure_key = PipelineKey::new("azure", "p");
    let lease = h.with(&azure_key, |b, now| b.lease(now)).expect("leased");
    assert_eq!(lease.item.object.key, "dir/x+y z.json");
}

#[tokio::test]
async fn azure_handshake_echoes_the_origin() {
    let h = start(100, 1 << 20).await;
    let reply = send(
        h.addr,
        Method::OPTIONS,
        "/v1/events/cloudevents",
        &[("webhook-request-origin", "eventgrid.azure.net")],
        vec![],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers.get("webhook-allowed-origin").map(|v| v.as_bytes()), Some(&b"eventgrid.azure.net"[..]));
    assert_eq!(reply.headers.get("webhook-allowed-rate").map(|v| v.as_bytes()), Some(&b"*"[..]));
}

#[tokio::test]
async fn garbage_never_takes_the_server_down() {
    let h = start(100, 64 * 1024).await;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..300 {
        // xorshift: deterministic junk without another dependency.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 2048) as usize;
        let body: Vec<u8> = (0..len).map(|j| (seed.rotate_left((j % 64) as u32) >> 3) as u8).collect();
        let (path, ct) = match i % 3 {
            0 => ("/v1/events/s3", "application/json"),
            1 => ("/v1/events/cloudevents", "application/cloudevents+json"),
            _ => ("/v1/events/cloudevents", "application/cloudevents-batch+json"),
        };
        let reply = send(h.addr, Method::POST, path, &[AUTH, ("content-type", ct)], body).await;
        assert!(reply.status.is_client_error() || reply.status.is_success(), "{i}: {}", reply.status);
    }
    assert_eq!(send(h.addr, Method::HEAD, "/v1/events/s3", &[], vec![]).await.status, StatusCode::OK);
}
