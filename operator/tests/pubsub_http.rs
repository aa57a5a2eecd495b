//! The Pub/Sub push endpoint over real HTTP on loopback, with the real in-memory backlogs
//! behind it: push envelopes exactly as Pub/Sub sends them for Cloud Storage notifications.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use zeroflow_core::PipelineKey;
use zeroflow_core::backlog::BacklogConfig;
use zeroflow_core::routing::Route;
use zeroflow_operator::gateway::GatewayConfig;
use zeroflow_operator::gateway::auth::{BearerToken, NamespaceTokens};
use zeroflow_operator::gateway::metrics::GatewayMetrics;
use zeroflow_operator::gateway::pubsub::{PUBSUB_PATH, router};
use zeroflow_operator::metrics::Metrics;
use zeroflow_operator::runtime::{Pipelines, Seed, Settings};

const TOKEN: &str = "t0ken-for-tests";

struct Harness {
    addr: SocketAddr,
    pipelines: Arc<Pipelines>,
    metrics: Arc<Metrics>,
    pipeline: PipelineKey,
}

async fn start(capacity: usize) -> Harness {
    start_with_tokens(capacity, NamespaceTokens::default()).await
}

/// [`start`] with namespaces' own sender tokens.
async fn start_with_tokens(capacity: usize, namespace_tokens: NamespaceTokens) -> Harness {
    let route = Route {
        namespace: "media".into(),
        name: "thumbs".into(),
        bucket: "photos".into(),
        prefix: Some("in/".into()),
        suffix: None,
        exclude_prefixes: vec![],
    };
    let pipeline = route.key();
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    // The scaler is not running: its kicks go nowhere.
    let (kick, _kicks) = tokio::sync::mpsc::unbounded_channel();
    let pipelines = Arc::new(Pipelines::new(7, kick, metrics.clone()));
    let runtime = pipelines.upsert(
        &pipeline,
        Settings::new(route, BacklogConfig { capacity, ..BacklogConfig::default() }),
        &Seed::default(),
    );
    runtime.lock().backlog.hold_until(0);
    let gateway_metrics = GatewayMetrics::register(metrics.registry()).expect("metrics");
    let config = GatewayConfig {
        token: Some(BearerToken::new(TOKEN).expect("token")),
        namespace_tokens,
        body_limit: 64 * 1024,
        ..GatewayConfig::default()
    };
    let app = router(config, pipelines.clone(), gateway_metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    Harness { addr, pipelines, metrics, pipeline }
}

impl Harness {
    fn pending(&self) -> usize {
        self.pipelines.get(&self.pipeline).expect("served").lock().backlog.counts().pending
    }

    fn counted(&self, outcome: &str) -> u64 {
        let text = self.metrics.render().expect("metrics render");
        let line = format!("zeroflow_events_received_total{{outcome=\"{outcome}\",source=\"pubsub\"}}");
        text.lines().find_map(|l| l.strip_prefix(&line)).map_or(0, |v| v.trim().parse().expect("a count"))
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: serde_json::Value,
}

async fn send(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut request = Request::builder().method(Method::POST).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender.send_request(request.body(Full::new(Bytes::from(body))).expect("request")).await;
    let response = response.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"));
    Reply { status, headers, body }
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// A push of a Cloud Storage notification, as Pub/Sub wraps it (JSON_API_V1 payload).
fn push(event_type: &str, bucket: &str, object: &str, generation: u64) -> Vec<u8> {
    let resource = json!({"kind": "storage#object", "name": object, "bucket": bucket,
                          "generation": generation.to_string(), "size": "12", "etag": "CKih16GjycICEAE="});
    json!({
        "message": {
            "attributes": {"eventType": event_type, "bucketId": bucket, "objectId": object,
                           "objectGeneration": generation.to_string(), "payloadFormat": "JSON_API_V1",
                           "eventTime": "2026-11-27T10:00:00Z"},
            "data": base64::engine::general_purpose::STANDARD.encode(resource.to_string()),
            "messageId": "1", "message_id": "1", "publishTime": "2026-11-27T10:00:01Z"
        },
        "subscription": "projects/p/subscriptions/zeroflow"
    })
    .to_string()
    .into_bytes()
}

fn with_token(path: &str) -> String {
    format!("{path}?token={TOKEN}")
}

#[tokio::test]
async fn a_finalize_is_admitted_with_the_token_in_the_url_or_the_header() {
    let h = start(100).await;
    let reply =
        send(h.addr, &with_token(PUBSUB_PATH), &[JSON], push("OBJECT_FINALIZE", "photos", "in/a b+c.jpg", 1)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["accepted"], 1);
    let bearer = format!("Bearer {TOKEN}");
    let reply = send(
        h.addr,
        PUBSUB_PATH,
        &[JSON, ("authorization", &bearer)],
        push("OBJECT_FINALIZE", "photos", "in/second.jpg", 2),
    )
    .await;
    assert_eq!((reply.status, reply.body["accepted"].clone()), (StatusCode::OK, json!(1)));
    // The same message delivered again (Pub/Sub delivers at least once) is a duplicate.
    let reply =
        send(h.addr, &with_token(PUBSUB_PATH), &[JSON], push("OBJECT_FINALIZE", "photos", "in/second.jpg", 2)).await;
    assert_eq!(reply.body["duplicate"], 1);
    assert_eq!(h.pending(), 2);
    assert_eq!((h.counted("accepted"), h.counted("duplicate")), (2, 1));
}

#[tokio::test]
async fn wrong_or_missing_tokens_are_refused() {
    let h = start(100).await;
    let body = push("OBJECT_FINALIZE", "photos", "in/x.jpg", 1);
    let reply = send(h.addr, &format!("{PUBSUB_PATH}?token=nope"), &[JSON], body.clone()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = send(h.addr, PUBSUB_PATH, &[JSON], body.clone()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.headers.contains_key("www-authenticate"));
    // A push subscription's OIDC token is a JWT, not the gateway token.
    let jwt = ("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ6ZXJvZmxvdyJ9.c2ln");
    let reply = send(h.addr, PUBSUB_PATH, &[JSON, jwt], body).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(h.pending(), 0);
    assert_eq!(h.counted("unauthorized"), 3);
}

#[tokio::test]
async fn other_event_types_unrouted_objects_and_unusable_messages_are_acknowledged() {
    let h = start(100).await;
    let path = with_token(PUBSUB_PATH);
    let reply = send(h.addr, &path, &[JSON], push("OBJECT_METADATA_UPDATE", "photos", "in/a.jpg", 3)).await;
    assert_eq!((reply.status, reply.body["metadata"].clone()), (StatusCode::OK, json!(1)));
    let reply = send(h.addr, &path, &[JSON], push("OBJECT_ARCHIVE", "photos", "in/a.jpg", 3)).await;
    assert_eq!((reply.status, reply.body["ignored"].clone()), (StatusCode::OK, json!(1)));
    let reply = send(h.addr, &path, &[JSON], push("OBJECT_FINALIZE", "other-bucket", "in/a.jpg", 3)).await;
    assert_eq!(reply.body["unrouted"], 1);
    // Another publisher's message on the same topic: acknowledged (Pub/Sub would redeliver it
    // for a week otherwise), counted as rejected.
    let foreign = json!({"message": {"data": "aGVsbG8=", "attributes": {"origin": "billing"}, "messageId": "9"},
                         "subscription": "projects/p/subscriptions/zeroflow"});
    let reply = send(h.addr, &path, &[JSON], foreign.to_string().into_bytes()).await;
    assert_eq!((reply.status, reply.body["rejected"].clone()), (StatusCode::OK, json!(1)));
    assert_eq!(h.pending(), 0);
    assert_eq!(
        (h.counted("metadata"), h.counted("ignored"), h.counted("unrouted"), h.counted("rejected")),
        (1, 1, 1, 1)
    );
}

#[tokio::test]
async fn a_delete_withdraws_the_pending_revision_it_follows() {
    let h = start(100).await;
    let path = with_token(PUBSUB_PATH);
    send(h.addr, &path, &[JSON], push("OBJECT_FINALIZE", "photos", "in/gone.jpg", 5)).await;
    assert_eq!(h.pending(), 1);
    let reply = send(h.addr, &path, &[JSON], push("OBJECT_DELETE", "photos", "in/gone.jpg", 5)).await;
    assert_eq!((reply.status, reply.body["withdrawn"].clone()), (StatusCode::OK, json!(1)));
    assert_eq!(h.pending(), 0);
}

#[tokio::test]
async fn what_is_not_a_push_is_refused_and_a_full_backlog_asks_to_retry() {
    let h = start(1).await;
    let path = with_token(PUBSUB_PATH);
    let reply = send(h.addr, &path, &[JSON], br#"{"Records": []}"#.to_vec()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
    let reply =
        send(h.addr, &path, &[("content-type", "text/plain")], push("OBJECT_FINALIZE", "photos", "in/a", 1)).await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = vec![b' '; 65 * 1024];
    let reply = send(h.addr, &path, &[JSON], big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.counted("rejected"), 3);

    let reply = send(h.addr, &path, &[JSON], push("OBJECT_FINALIZE", "photos", "in/1", 1)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = send(h.addr, &path, &[JSON], push("OBJECT_FINALIZE", "photos", "in/2", 1)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    assert_eq!(reply.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));
    assert_eq!(h.counted("overloaded"), 1);
}

/// A namespace's own sender token (docs/tenancy) reaches that namespace's pipelines only, in
/// the URL as on the other endpoints; a push for another namespace's pipeline is refused (403,
/// so Pub/Sub keeps the message and the misconfiguration shows) and admits nothing.
#[tokio::test]
async fn a_namespace_sender_token_reaches_only_its_namespace() {
    let tokens = NamespaceTokens::default();
    tokens.set("media", Some(BearerToken::new("media-sender").expect("token")));
    tokens.set("finance", Some(BearerToken::new("finance-sender").expect("token")));
    let h = start_with_tokens(100, tokens).await;
    let own = format!("{PUBSUB_PATH}?token=media-sender");
    let reply = send(h.addr, &own, &[JSON], push("OBJECT_FINALIZE", "photos", "in/own.jpg", 1)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["accepted"], 1);
    let foreign = format!("{PUBSUB_PATH}?token=finance-sender");
    let reply = send(h.addr, &foreign, &[JSON], push("OBJECT_FINALIZE", "photos", "in/foreign.jpg", 1)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(reply.body["error"].as_str().is_some_and(|e| e.contains("finance")), "{}", reply.body);
    assert_eq!(h.pending(), 1, "only the media sender's object is pending");
    assert_eq!(h.counted("not_permitted"), 1);
    let unknown = format!("{PUBSUB_PATH}?token=nobody");
    let reply = send(h.addr, &unknown, &[JSON], push("OBJECT_FINALIZE", "photos", "in/x.jpg", 1)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(h.pending(), 1);
}
