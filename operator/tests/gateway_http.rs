//! The gateway over real HTTP on loopback, with the real in-memory backlogs behind it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
    start_with(capacity, GatewayConfig { body_limit, ..GatewayConfig::default() }).await
}

/// A gateway with `config` (its token replaced by [`TOKEN`]) in front of real backlogs for
/// `finance/invoices` (bucket `raw-invoices`), `gcs/p` (`raw`), `azure/p` (`landing`) and
/// `team-a/p1` (`in-bucket`, the cases' pipeline).
async fn start_with(capacity: usize, gateway: GatewayConfig) -> Harness {
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
        Route {
            namespace: "team-a".into(),
            name: "p1".into(),
            bucket: "in-bucket".into(),
            prefix: Some("incoming/".into()),
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
    let config = GatewayConfig { token: Some(BearerToken::new(TOKEN).expect("token")), ..gateway };
    let app = router(config, pipelines.clone(), gateway_metrics).expect("router");
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
    leased_items(h, &h.pipeline).into_iter().map(|(key, _)| key).collect()
}

/// Leases everything pending for `pipeline`: (key, etag) in lease order.
fn leased_items(h: &Harness, pipeline: &PipelineKey) -> Vec<(String, Option<String>)> {
    let mut items = Vec::new();
    while let Some(lease) = h.with(pipeline, |b, now| b.lease(now)) {
        items.push((lease.item.object.key.to_string(), lease.item.etag));
    }
    items
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

/// A body sent in `chunks` (chunked transfer encoding, no declared length).
async fn send_chunked(addr: SocketAddr, headers: &[(&str, &str)], chunks: Vec<Vec<u8>>) -> Reply {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let frames = chunks.into_iter().map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(c))));
    let mut request = Request::builder().method(Method::POST).uri("/v1/events/s3").header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(StreamBody::new(futures::stream::iter(frames))).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes();
    Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

#[tokio::test]
async fn bodies_in_several_chunks_are_joined_and_bounded() {
    let h = start(100, 4096).await;
    let body = minio_body("s3:ObjectCreated:Put", "raw-invoices", "a.csv", "e").into_bytes();
    let thirds: Vec<Vec<u8>> = body.chunks(body.len() / 3 + 1).map(<[u8]>::to_vec).collect();
    assert_eq!(thirds.len(), 3);
    let reply = send_chunked(h.addr, &[AUTH, JSON], thirds).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["accepted"], 1);
    let big = format!("{{\"Records\": [], \"pad\": \"{}\"}}", "x".repeat(8192)).into_bytes();
    let pieces: Vec<Vec<u8>> = big.chunks(1000).map(<[u8]>::to_vec).collect();
    let reply = send_chunked(h.addr, &[AUTH, JSON], pieces).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
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
    assert_eq!(&*lease.item.object.key, "a.csv");
    h.with(&h.pipeline, |b, _| b.complete(lease.id)).expect("held");
    let retried = post_s3(&h, &second_body).await;
    assert_eq!((retried.status, retried.json()["accepted"].clone()), (StatusCode::OK, 1.into()));
    assert_eq!(leased_keys(&h), ["b.csv"]);
    let text = metrics_text(&h.metrics);
    assert!(text.contains(r#"zeroflow_events_received_total{outcome="overloaded",source="s3"} 1"#), "{text}");
}

#[tokio::test]
async fn unrouted_events_are_counted_not_queued() {
    let h = start(100, 1 << 20).await;
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
    assert_eq!(&*lease.item.object.key, "dir/x+y z.json");
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

// ---------------------------------------------------------------------------------------------
// What storage systems really send (cases 01, 03, 07, 14, 15 of the shared case files).

const CASE01: &str = include_str!("../../crates/core/testdata/events/case01-minio-puttagging.json");
const CASE03: &str = include_str!("../../crates/core/testdata/events/case03-ceph-raw-keys.json");
const CASE07: &str = include_str!("../../crates/core/testdata/events/case07-folder-marker.json");
const CASE14: &str = include_str!("../../crates/core/testdata/events/case14-eventbridge-object-created.json");
const SNS_CONFIRMATION: &str =
    include_str!("../../crates/core/testdata/events/case15-sns-subscription-confirmation.json");
const SNS_NOTIFICATION: &str = include_str!("../../crates/core/testdata/events/case15-sns-notification.json");
const S3_TEST_EVENT: &str = include_str!("../../crates/core/testdata/events/case15-s3-test-event.json");

fn team_a() -> PipelineKey {
    PipelineKey::new("team-a", "p1")
}

fn metric_line(h: &Harness, line: &str) -> bool {
    metrics_text(&h.metrics).lines().any(|l| l == line)
}

#[tokio::test]
async fn metadata_only_events_answer_2xx_and_never_reach_a_backlog() {
    let h = start(100, 1 << 20).await;
    let processed_etag = "9b2cf535f27731c974343645a3985328";
    let mut bodies: Vec<String> = ["PutTagging", "DeleteTagging", "PutRetention", "PutLegalHold"]
        .iter()
        .map(|name| CASE01.replace("PutTagging", name).replace("<ETAG-OF-PROCESSED-OBJECT>", processed_etag))
        .collect();
    // rustfs's variant: the tag write with an empty key.
    bodies.push(CASE01.replace(r#""key":"incoming%2Freport.csv""#, r#""key":"""#));
    for body in &bodies {
        let reply = post_s3(&h, body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let summary = reply.json();
        assert_eq!((summary["accepted"].clone(), summary["metadata"].clone()), (0.into(), 1.into()), "{summary}");
    }
    assert!(leased_items(&h, &team_a()).is_empty(), "no metadata change is work");
    assert!(h.with(&team_a(), |b, _| b.is_idle()));
    assert!(
        metric_line(&h, r#"zeroflow_events_received_total{outcome="metadata",source="s3"} 5"#),
        "{}",
        metrics_text(&h.metrics)
    );
    // The same object's real upload is still work.
    let upload = CASE01.replace("PutTagging", "Put").replace("<ETAG-OF-PROCESSED-OBJECT>", processed_etag);
    assert_eq!(post_s3(&h, &upload).await.json()["accepted"], 1);
    assert_eq!(leased_items(&h, &team_a()), [("incoming/report.csv".to_owned(), Some(processed_etag.to_owned()))]);
}

#[tokio::test]
async fn ceph_raw_keys_arrive_byte_exact() {
    let h = start(100, 1 << 20).await;
    let reply = post_s3(&h, CASE03).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["accepted"], 2);
    assert_eq!(
        leased_items(&h, &team_a()),
        [
            ("incoming/Q1 report+final.csv".to_owned(), Some("0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f".to_owned())),
            ("incoming/100%.csv".to_owned(), Some("1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e".to_owned())),
        ]
    );
    // Regression guard: the same names as MinIO escapes them decode to the same keys.
    let h = start(100, 1 << 20).await;
    for escaped in ["incoming%2FQ1+report%2Bfinal.csv", "incoming%2F100%25.csv"] {
        let reply = post_s3(&h, &minio_body("s3:ObjectCreated:Put", "in-bucket", escaped, "e2")).await;
        assert_eq!(reply.json()["accepted"], 1, "{escaped}");
    }
    let keys: Vec<_> = leased_items(&h, &team_a()).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["incoming/Q1 report+final.csv", "incoming/100%.csv"]);
}

#[tokio::test]
async fn folder_markers_are_skipped_not_queued() {
    let h = start(100, 1 << 20).await;
    let reply = post_s3(&h, CASE07).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!((reply.json()["accepted"].clone(), reply.json()["skipped"].clone()), (0.into(), 1.into()));
    assert!(leased_items(&h, &team_a()).is_empty());
}

#[tokio::test]
async fn tokens_in_the_path_and_basic_credentials_authenticate() {
    let h = start(100, 1 << 20).await;
    let body = |key: &str| minio_body("s3:ObjectCreated:Put", "raw-invoices", key, "e").into_bytes();
    let path = format!("/v1/events/s3/t/{TOKEN}");
    let by_path = send(h.addr, Method::POST, &path, &[JSON], body("path.csv")).await;
    assert_eq!((by_path.status, by_path.json()["accepted"].clone()), (StatusCode::OK, 1.into()), "{}", by_path.body);
    let basic = format!("Basic {}", base64_encode(&format!("zeroflow:{TOKEN}")));
    let by_basic =
        send(h.addr, Method::POST, "/v1/events/s3", &[("authorization", &basic), JSON], body("basic.csv")).await;
    assert_eq!((by_basic.status, by_basic.json()["accepted"].clone()), (StatusCode::OK, 1.into()));
    // The Ceph payload through the path form, and a CloudEvent to the other endpoint's.
    let ceph = send(h.addr, Method::POST, &path, &[JSON], CASE03.into()).await;
    assert_eq!(ceph.json()["accepted"], 2);
    let ce_path = format!("/v1/events/cloudevents/t/{TOKEN}");
    let envelope = send(h.addr, Method::POST, &ce_path, &[JSON], CASE14.into()).await;
    assert_eq!(envelope.json()["accepted"], 1, "{}", envelope.body);
    assert_eq!(send(h.addr, Method::HEAD, &path, &[], vec![]).await.status, StatusCode::OK);

    // Wrong ones are 403 and counted; none of them admitted anything.
    let wrong_basic = format!("Basic {}", base64_encode("zeroflow:not-the-token"));
    let refused = [
        send(h.addr, Method::POST, "/v1/events/s3/t/not-the-token", &[JSON], body("x1.csv")).await,
        send(h.addr, Method::POST, &format!("/v1/events/s3/t/{TOKEN}x"), &[JSON], body("x2.csv")).await,
        send(h.addr, Method::POST, "/v1/events/s3/t/%FF%FE", &[JSON], body("x3.csv")).await,
        send(h.addr, Method::POST, "/v1/events/cloudevents/t/nope", &[JSON], CASE14.into()).await,
        send(h.addr, Method::POST, "/v1/events/s3", &[("authorization", &wrong_basic), JSON], body("x4.csv")).await,
    ];
    for reply in &refused {
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
        assert!(!reply.body.contains("not-the-token") && !reply.body.contains("nope"), "the token is not echoed");
    }
    let text = metrics_text(&h.metrics);
    assert!(text.contains(r#"zeroflow_events_received_total{outcome="unauthorized",source="s3"} 4"#), "{text}");
    assert!(
        text.contains(r#"zeroflow_events_received_total{outcome="unauthorized",source="cloudevents"} 1"#),
        "{text}"
    );
    // A request without any credentials is challenged for both schemes (SNS answers Basic).
    let missing = send(h.addr, Method::POST, "/v1/events/s3", &[JSON], body("x5.csv")).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    let challenges: Vec<_> =
        missing.headers.get_all("www-authenticate").iter().map(|v| v.as_bytes().to_vec()).collect();
    assert_eq!(challenges, [b"Bearer realm=\"zeroflow\"".to_vec(), b"Basic realm=\"zeroflow\"".to_vec()]);
    let mut keys = leased_keys(&h);
    keys.sort();
    assert_eq!(keys, ["basic.csv", "path.csv"]);
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn ceph_cloudevents_mode_over_http() {
    let h = start(100, 1 << 20).await;
    let notification: serde_json::Value = serde_json::from_str(CASE03).expect("json");
    for (i, subject) in ["incoming/Q1 report+final.csv", "incoming/100%.csv"].iter().enumerate() {
        let body = serde_json::json!({"Records": [notification["Records"][i].clone()]}).to_string();
        let reply = send(
            h.addr,
            Method::POST,
            &format!("/v1/events/s3/t/{TOKEN}"),
            &[
                ("ce-specversion", "1.0"),
                ("ce-type", "com.amazonaws.ObjectCreated:Put"),
                ("ce-time", "2026-01-10T10:00:00.123456Z"),
                ("ce-id", "req-1.1005-default-default"),
                ("ce-source", "ceph:s3.default.in-bucket"),
                ("ce-subject", subject),
                JSON,
            ],
            body.into_bytes(),
        )
        .await;
        assert_eq!((reply.status, reply.json()["accepted"].clone()), (StatusCode::OK, 1.into()), "{}", reply.body);
    }
    let keys: Vec<_> = leased_items(&h, &team_a()).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["incoming/Q1 report+final.csv", "incoming/100%.csv"]);
}

#[tokio::test]
async fn eventbridge_envelopes_as_api_destinations_send_them() {
    let headers = [
        AUTH,
        ("content-type", "application/json; charset=utf-8"),
        ("user-agent", "Amazon/EventBridge/ApiDestinations"),
    ];
    for path in ["/v1/events/s3", "/v1/events/cloudevents"] {
        let h = start(100, 1 << 20).await;
        let created = send(h.addr, Method::POST, path, &headers, CASE14.into()).await;
        assert_eq!(created.status, StatusCode::OK, "{path}: {}", created.body);
        assert_eq!(created.json()["accepted"], 1, "{path}");
        let deleted = CASE14
            .replace("Object Created", "Object Deleted")
            .replace(r#""reason":"PutObject""#, r#""reason":"DeleteObject","deletion-type":"Permanently Deleted""#);
        assert_eq!(
            leased_items(&h, &team_a()),
            [("incoming/report.csv".to_owned(), Some("b1946ac92492d2347c6235b4d2611184".to_owned()))],
            "{path}"
        );
        // `Object Deleted` is a removal: handed to admission (see
        // `removals_reach_admission_as_removals`), neither ignored nor metadata.
        let reply = send(h.addr, Method::POST, path, &headers, deleted.into()).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.body);
        assert_eq!((reply.json()["ignored"].clone(), reply.json()["metadata"].clone()), (0.into(), 0.into()));
    }
    // On the CloudEvents endpoint, JSON that is neither a CloudEvent nor an EventBridge event
    // is refused with what to send instead.
    let h = start(100, 1 << 20).await;
    let reply = send(h.addr, Method::POST, "/v1/events/cloudevents", &headers, CASE03.into()).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(reply.json()["error"].as_str().is_some_and(|e| e.contains("EventBridge")), "{}", reply.body);
}

// ---------------------------------------------------------------------------------------------
// SNS over HTTP(S): a local stand-in for SNS serves the test CA's signing certificate and
// records the confirmation GETs (the gateway's `endpoint` points SNS URLs at it).

use std::sync::Mutex;

use zeroflow_core::events::sns::SignatureVersion;
use zeroflow_core::events::sns::testing::TestSigner;
use zeroflow_operator::gateway::notices::{Notice, Notices};
use zeroflow_operator::gateway::sns::{CertificateSource, SnsSettings};

const CERT_URL: &str = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000000000000000000000.pem";
const TOPIC: &str = "arn:aws:sns:eu-west-1:111122223333:in-bucket-events";

fn signer() -> &'static TestSigner {
    static SIGNER: std::sync::OnceLock<TestSigner> = std::sync::OnceLock::new();
    SIGNER.get_or_init(TestSigner::new)
}

/// A case 15 body signed by the test signing certificate.
fn signed(body: &str, version: SignatureVersion) -> String {
    let mut document: serde_json::Value = serde_json::from_str(body).expect("json");
    signer().sign(&mut document, version, CERT_URL);
    document.to_string()
}

struct StandIn {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl StandIn {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// SNS's two URLs on loopback: `*.pem` answers the certificate, anything else (SubscribeURL)
/// a ConfirmSubscriptionResponse.
async fn sns_stand_in() -> StandIn {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let cert = signer().cert_pem.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (seen, cert) = (seen.clone(), cert.clone());
        async move {
            seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(uri.to_string());
            if uri.path().ends_with(".pem") {
                cert
            } else {
                "<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>arn</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>".to_owned()
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    StandIn { addr, requests }
}

#[derive(Clone, Default)]
struct RecordedNotices(Arc<Mutex<Vec<(String, String)>>>);

impl Notice for RecordedNotices {
    fn warn(&self, reason: &'static str, note: String) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((reason.to_owned(), note));
    }
}

impl RecordedNotices {
    fn all(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

async fn sns_gateway(sns: SnsSettings) -> (Harness, RecordedNotices) {
    let notices = RecordedNotices::default();
    let config = GatewayConfig { sns, notices: Notices::new(notices.clone()), ..GatewayConfig::default() };
    (start_with(100, config).await, notices)
}

fn through(stand_in: &StandIn) -> SnsSettings {
    SnsSettings { endpoint: Some(format!("http://{}", stand_in.addr).parse().expect("url")), ..SnsSettings::default() }
}

/// POSTs an SNS delivery as SNS sends it: text/plain, its headers, Basic credentials from the
/// subscription URL's userinfo.
async fn post_sns(h: &Harness, kind: &str, body: &str) -> Reply {
    let basic = format!("Basic {}", base64_encode(&format!("zeroflow:{TOKEN}")));
    let headers = [
        ("content-type", "text/plain; charset=UTF-8"),
        ("x-amz-sns-message-type", kind),
        ("x-amz-sns-message-id", "165545c9-2a5c-472c-8df2-7ff2be2b3b1b"),
        ("x-amz-sns-topic-arn", TOPIC),
        ("user-agent", "Amazon Simple Notification Service Agent"),
        ("authorization", basic.as_str()),
    ];
    send(h.addr, Method::POST, "/v1/events/s3", &headers, body.as_bytes().to_vec()).await
}

#[tokio::test]
async fn sns_subscription_is_confirmed_after_the_signature_is_verified() {
    let stand_in = sns_stand_in().await;
    let (h, notices) = sns_gateway(through(&stand_in)).await;
    let reply = post_sns(&h, "SubscriptionConfirmation", &signed(SNS_CONFIRMATION, SignatureVersion::Sha1)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["subscription"], "confirmed");
    assert_eq!(reply.json()["accepted"], 0);
    let requests = stand_in.requests();
    assert_eq!(
        requests,
        [
            "/SimpleNotificationService-0000000000000000000000.pem".to_owned(),
            "/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:eu-west-1:111122223333:in-bucket-events&Token=2336412f37fb687f5d51e6e2".to_owned(),
        ]
    );
    assert!(notices.all().is_empty());
    assert!(h.with(&team_a(), |b, _| b.is_idle()), "a confirmation creates no pending object");
    let text = metrics_text(&h.metrics);
    assert!(
        text.contains(r#"zeroflow_sns_messages_total{outcome="confirmed",type="SubscriptionConfirmation"} 1"#),
        "{text}"
    );
    assert!(text.contains(&format!(r#"zeroflow_sns_subscription_unconfirmed{{topic_arn="{TOPIC}"}} 0"#)), "{text}");
}

#[tokio::test]
async fn sns_notifications_test_events_and_unsubscriptions() {
    let stand_in = sns_stand_in().await;
    let (h, _) = sns_gateway(through(&stand_in)).await;
    // Case 15 (2): the S3 records inside Message; AWS form-escapes `a b` as `a+b`.
    let reply = post_sns(&h, "Notification", &signed(SNS_NOTIFICATION, SignatureVersion::Sha256)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["accepted"], 1);
    assert_eq!(
        leased_items(&h, &team_a()),
        [("incoming/a b.csv".to_owned(), Some("b1946ac92492d2347c6235b4d2611184".to_owned()))]
    );
    // Case 15 (3): S3's test event in the same envelope.
    let mut test_event: serde_json::Value = serde_json::from_str(SNS_NOTIFICATION).expect("json");
    test_event["Message"] = serde_json::Value::from(S3_TEST_EVENT);
    let reply = post_sns(&h, "Notification", &signed(&test_event.to_string(), SignatureVersion::Sha1)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!((reply.json()["accepted"].clone(), reply.json()["ignored"].clone()), (0.into(), 0.into()));
    // An EventBridge event published to the topic.
    let mut via_eventbridge: serde_json::Value = serde_json::from_str(SNS_NOTIFICATION).expect("json");
    via_eventbridge["Message"] = serde_json::Value::from(CASE14.replace("incoming/report.csv", "incoming/eb.csv"));
    let reply = post_sns(&h, "Notification", &signed(&via_eventbridge.to_string(), SignatureVersion::Sha256)).await;
    assert_eq!(reply.json()["accepted"], 1, "{}", reply.body);
    // UnsubscribeConfirmation: acknowledged, nothing visited.
    let unsubscribe = SNS_CONFIRMATION.replace("SubscriptionConfirmation", "UnsubscribeConfirmation");
    let reply = post_sns(&h, "UnsubscribeConfirmation", &signed(&unsubscribe, SignatureVersion::Sha1)).await;
    assert_eq!((reply.status, reply.json()["subscription"].clone()), (StatusCode::OK, "unsubscribed".into()));
    // The certificate was fetched once and cached; no SubscribeURL was visited.
    assert_eq!(stand_in.requests(), ["/SimpleNotificationService-0000000000000000000000.pem"]);
    // Raw message delivery: the records themselves, unsigned, flagged by SNS's header.
    let raw = serde_json::from_str::<serde_json::Value>(SNS_NOTIFICATION).expect("json")["Message"]
        .as_str()
        .expect("string")
        .replace("incoming/a+b.csv", "incoming/raw.csv");
    let basic = format!("Basic {}", base64_encode(&format!("zeroflow:{TOKEN}")));
    let reply = send(
        h.addr,
        Method::POST,
        "/v1/events/s3",
        &[
            ("content-type", "text/plain; charset=UTF-8"),
            ("x-amz-sns-message-type", "Notification"),
            ("x-amz-sns-rawdelivery", "true"),
            ("authorization", &basic),
        ],
        raw.into_bytes(),
    )
    .await;
    assert_eq!(reply.json()["accepted"], 1, "{}", reply.body);
    let keys: Vec<_> = leased_items(&h, &team_a()).into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["incoming/eb.csv", "incoming/raw.csv"]);
}

#[tokio::test]
async fn sns_messages_that_do_not_verify_are_refused() {
    let stand_in = sns_stand_in().await;
    let (h, notices) = sns_gateway(through(&stand_in)).await;
    // The case's own bodies carry `Signature: EXAMPLE==`.
    for (kind, body) in [("SubscriptionConfirmation", SNS_CONFIRMATION), ("Notification", SNS_NOTIFICATION)] {
        let reply = post_sns(&h, kind, body).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{kind}: {}", reply.body);
        assert!(reply.json()["error"].as_str().is_some_and(|e| e.contains("Signature")), "{}", reply.body);
    }
    // A signed message changed afterwards (another bucket's records).
    let tampered = signed(SNS_NOTIFICATION, SignatureVersion::Sha256).replace("in-bucket\\\"", "other-bucket\\\"");
    let reply = post_sns(&h, "Notification", &tampered).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(reply.json()["error"], "the SNS message signature does not verify against the signing certificate");
    // A certificate from a host that is not SNS's is never fetched.
    let mut elsewhere: serde_json::Value = serde_json::from_str(SNS_NOTIFICATION).expect("json");
    signer().sign(
        &mut elsewhere,
        SignatureVersion::Sha256,
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
    );
    let reply = post_sns(&h, "Notification", &elsewhere.to_string()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.json()["error"].as_str().is_some_and(|e| e.contains("SigningCertURL")), "{}", reply.body);
    // A confirmation whose SubscribeURL is not SNS's is not visited, even when signed.
    let foreign =
        SNS_CONFIRMATION.replace("https://sns.eu-west-1.amazonaws.com/?Action", "https://evil.example/?Action");
    let reply = post_sns(&h, "SubscriptionConfirmation", &signed(&foreign, SignatureVersion::Sha1)).await;
    assert_eq!((reply.status, reply.json()["subscription"].clone()), (StatusCode::OK, "unconfirmed".into()));
    assert!(stand_in.requests().iter().all(|r| r.ends_with(".pem")), "{:?}", stand_in.requests());
    assert!(notices.all().iter().any(|(_, note)| note.contains("SubscribeURL")), "{:?}", notices.all());
    // A header that does not match the document, and an unknown type.
    let reply = post_sns(&h, "Notification", &signed(SNS_CONFIRMATION, SignatureVersion::Sha1)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = post_sns(&h, "Surprise", SNS_NOTIFICATION).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(h.with(&team_a(), |b, _| b.is_idle()));
    let text = metrics_text(&h.metrics);
    assert!(text.contains(r#"zeroflow_events_received_total{outcome="unauthorized",source="s3"} 4"#), "{text}");
    assert!(text.contains(r#"zeroflow_sns_messages_total{outcome="refused",type="Notification"} 4"#), "{text}");
}

#[tokio::test]
async fn air_gapped_confirmations_say_what_to_do() {
    // The certificate comes from a directory; SNS itself cannot be reached (a closed port).
    let dir = std::env::temp_dir().join(format!("zf-sns-certs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("SimpleNotificationService-0000000000000000000000.pem"), &signer().cert_pem)
        .expect("write");
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
    let settings = SnsSettings {
        certificates: CertificateSource::Directory(dir.clone()),
        endpoint: Some(format!("http://{closed}").parse().expect("url")),
        timeout: Duration::from_secs(2),
        ..SnsSettings::default()
    };
    let (h, notices) = sns_gateway(settings).await;
    let reply = post_sns(&h, "SubscriptionConfirmation", &signed(SNS_CONFIRMATION, SignatureVersion::Sha1)).await;
    assert_eq!(
        (reply.status, reply.json()["subscription"].clone()),
        (StatusCode::OK, "unconfirmed".into()),
        "{}",
        reply.body
    );
    let recorded = notices.all();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let (reason, note) = &recorded[0];
    assert_eq!(reason, "SnsSubscriptionUnconfirmed");
    assert!(note.contains(TOPIC) && note.contains("aws sns confirm-subscription --topic-arn"), "{note}");
    let text = metrics_text(&h.metrics);
    assert!(text.contains(&format!(r#"zeroflow_sns_subscription_unconfirmed{{topic_arn="{TOPIC}"}} 1"#)), "{text}");
    // Notifications verify from the directory alone.
    let reply = post_sns(&h, "Notification", &signed(SNS_NOTIFICATION, SignatureVersion::Sha256)).await;
    assert_eq!(reply.json()["accepted"], 1, "{}", reply.body);

    // Without the certificate there is nothing to verify with: 503 so that SNS retries.
    std::fs::remove_file(dir.join("SimpleNotificationService-0000000000000000000000.pem")).expect("rm");
    let (h, notices) =
        sns_gateway(SnsSettings { certificates: CertificateSource::Directory(dir.clone()), ..SnsSettings::default() })
            .await;
    let reply = post_sns(&h, "SubscriptionConfirmation", &signed(SNS_CONFIRMATION, SignatureVersion::Sha1)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    assert_eq!(reply.headers.get("retry-after").map(|v| v.as_bytes()), Some(&b"30"[..]));
    assert!(notices.all().iter().any(|(_, note)| note.contains(TOPIC) && note.contains("signing certificate")));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// The partition: content and removals reach admission, as `StorageEvent`s of their kind; the
// rest never does. Observed with an admission that records what it is handed.

use zeroflow_core::admission::{Admission, AdmitReport, Overloaded};
use zeroflow_core::events::{EventKind, StorageEvent};

#[derive(Default)]
struct Recording(Mutex<Vec<StorageEvent>>);

impl Admission for Recording {
    fn admit(
        &self,
        events: &[StorageEvent],
        _received_at: std::time::Instant,
        _namespace: Option<&str>,
    ) -> Result<AdmitReport, Overloaded> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(events);
        Ok(AdmitReport { accepted: events.len() as u64, ..AdmitReport::default() })
    }
}

#[tokio::test]
async fn removals_reach_admission_as_removals() {
    let recording = Arc::new(Recording::default());
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let gateway_metrics = GatewayMetrics::register(metrics.registry()).expect("metrics");
    let config = GatewayConfig { token: Some(BearerToken::new(TOKEN).expect("token")), ..GatewayConfig::default() };
    let app = router(config, recording.clone(), gateway_metrics).expect("router");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

    let minio_delete = minio_body("s3:ObjectRemoved:Delete", "in-bucket", "incoming%2Fa+b.csv", "e");
    let aws_expired =
        serde_json::json!({"Records": [{"eventName": "LifecycleExpiration:Delete", "eventSource": "aws:s3",
        "s3": {"bucket": {"name": "in-bucket"}, "object": {"key": "incoming/old.csv", "sequencer": "02"}}}]})
        .to_string();
    let ceph_delete = CASE03.replace("ObjectCreated:Put", "ObjectRemoved:Delete");
    let eventbridge_delete = CASE14.replace("Object Created", "Object Deleted");
    let tagging = CASE01.replace("<ETAG-OF-PROCESSED-OBJECT>", "e");
    let read = minio_body("s3:ObjectAccessed:Get", "in-bucket", "incoming%2Fread.csv", "e");
    for body in [&minio_delete, &aws_expired, &ceph_delete, &eventbridge_delete, &tagging, &read] {
        let reply = send(addr, Method::POST, "/v1/events/s3", &[AUTH, JSON], body.clone().into_bytes()).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let azure_rename = r#"{"specversion": "1.0", "id": "1", "source": "/subscriptions/s", "type": "Microsoft.Storage.BlobRenamed",
        "subject": "/blobServices/default/containers/landing/blobs/final/x.csv",
        "data": {"api": "RenameFile", "sourceUrl": "https://a.dfs.core.windows.net/landing/tmp/x.csv",
                 "destinationUrl": "https://a.dfs.core.windows.net/landing/final/x.csv", "sequencer": "01"}}"#;
    let reply = send(
        addr,
        Method::POST,
        "/v1/events/cloudevents",
        &[AUTH, ("content-type", "application/cloudevents+json")],
        azure_rename.into(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let seen: Vec<_> = recording
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|e| (e.kind.clone(), e.bucket.clone(), e.key.clone()))
        .collect();
    let expected = [
        (EventKind::Removed, "in-bucket", "incoming/a b.csv"),
        (EventKind::Removed, "in-bucket", "incoming/old.csv"),
        (EventKind::Removed, "in-bucket", "incoming/Q1 report+final.csv"),
        (EventKind::Removed, "in-bucket", "incoming/100%.csv"),
        (EventKind::Removed, "in-bucket", "incoming/report.csv"),
        (EventKind::Removed, "landing", "tmp/x.csv"),
        (EventKind::Created, "landing", "final/x.csv"),
    ]
    .map(|(kind, bucket, key)| (kind, bucket.to_owned(), key.to_owned()));
    assert_eq!(seen, expected, "no tag change or read reached admission");
    let text = metrics.render().expect("render");
    assert!(text.contains(r#"zeroflow_events_received_total{outcome="metadata",source="s3"} 1"#), "{text}");
    assert!(text.contains(r#"zeroflow_events_received_total{outcome="ignored",source="s3"} 1"#), "{text}");
}
