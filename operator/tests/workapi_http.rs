//! The work API over real HTTP on loopback, with the real pipeline runtime and backlog, a fake
//! token verifier (the real TokenReview one is exercised by the e2e suite), the real ledger on an
//! in-memory object store, and presigning by the real S3 client against a dummy endpoint
//! (signing needs no network).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use object_store::memory::InMemory;
use object_store::signer::{Method as SignMethod, Url};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use zeroflow_core::PipelineKey;
use zeroflow_core::admission::Admission;
use zeroflow_core::backlog::{BacklogConfig, Counts, ObjectId, WorkItem};
use zeroflow_core::events::{EventKind, StorageEvent};
use zeroflow_core::ledger::{Ledger, Marker, Outcome};
use zeroflow_core::routing::Route;
use zeroflow_operator::metrics::Metrics;
use zeroflow_operator::runtime::{Access, Pipeline, Pipelines, Seed, Settings};
use zeroflow_operator::store::{S3Config, bucket_client};
use zeroflow_operator::workapi::{
    BucketAccess, Identity, ObjectError, ObjectInfo, S3Bucket, TokenVerifier, VerifyError, WorkApi, router,
};

const WORKER: &str = "worker-token";
const OTHER: &str = "other-token";

/// Tokens by value: the pipeline's worker, another pipeline's worker, anything else refused.
struct FakeVerifier;

impl TokenVerifier for FakeVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, VerifyError>> {
        let result = match token {
            WORKER => Ok(Identity { username: "system:serviceaccount:finance:invoices-worker".into(), pod: None }),
            OTHER => Ok(Identity { username: "system:serviceaccount:finance:other-worker".into(), pod: None }),
            _ => Err(VerifyError::Unauthenticated),
        };
        Box::pin(async move { result })
    }
}

/// The real S3 signer, with HEAD answered from a map instead of a store.
struct Source {
    s3: S3Bucket,
    objects: Mutex<HashMap<String, ObjectInfo>>,
}

impl BucketAccess for Source {
    fn name(&self) -> &str {
        self.s3.name()
    }

    fn presign<'a>(
        &'a self,
        method: SignMethod,
        key: &'a str,
        expires: Duration,
    ) -> BoxFuture<'a, Result<Url, ObjectError>> {
        self.s3.presign(method, key, expires)
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>, ObjectError>> {
        let found = self.objects.lock().expect("lock").get(key).cloned();
        Box::pin(async move { Ok(found) })
    }
}

fn dummy_config() -> S3Config {
    S3Config::with_keys("http://127.0.0.1:9", "us-east-1", "AKIDTEST", "secret-for-tests")
}

fn dummy_bucket(name: &str) -> S3Bucket {
    S3Bucket::new(name, bucket_client(&dummy_config(), name).expect("client"))
}

const LEDGER: &str = ".zeroflow/ledger/finance/invoices/";

struct Harness {
    addr: SocketAddr,
    pipelines: Arc<Pipelines>,
    pipeline: Arc<Pipeline>,
    metrics: Arc<Metrics>,
    source: Arc<Source>,
    ledger: Ledger,
}

async fn start(config: BacklogConfig) -> Harness {
    start_with_prefix(config, None).await
}

/// [`start`] for a pipeline that takes only keys under `prefix` of its bucket.
async fn start_with_prefix(config: BacklogConfig, prefix: Option<&str>) -> Harness {
    let key = PipelineKey::new("finance", "invoices");
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let (kick, _kicks) = tokio::sync::mpsc::unbounded_channel();
    let pipelines = Arc::new(Pipelines::new(1, kick, metrics.clone()));
    let route = Route {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        bucket: "raw-invoices".into(),
        prefix: prefix.map(str::to_owned),
        suffix: None,
        exclude_prefixes: vec![],
    };
    let mut settings = Settings::new(route, config);
    settings.sink_prefix = "parquet/".into();
    let pipeline = pipelines.upsert(&key, settings, &Seed::default());
    // Leasing starts when the scaler adopts a pipeline; no scaler runs here.
    pipeline.lock().backlog.hold_until(0);
    let source = Arc::new(Source { s3: dummy_bucket("raw-invoices"), objects: Mutex::new(HashMap::new()) });
    let ledger = Ledger::new(Arc::new(InMemory::new()), LEDGER).expect("ledger");
    let h = Harness { addr: "127.0.0.1:0".parse().expect("addr"), pipelines, pipeline, metrics, source, ledger };
    h.set_ledger(h.ledger.clone());
    let api = Arc::new(WorkApi::new(h.pipelines.clone(), Arc::new(FakeVerifier)));
    let app = router(api);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    Harness { addr, ..h }
}

/// A ledger whose store refuses every connection (a closed port on loopback), without retries.
fn unreachable_ledger() -> Ledger {
    let client = object_store::aws::AmazonS3Builder::new()
        .with_endpoint("http://127.0.0.1:9")
        .with_region("us-east-1")
        .with_bucket_name("curated")
        .with_access_key_id("AKIDTEST")
        .with_secret_access_key("secret")
        .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
        .with_retry(object_store::RetryConfig { max_retries: 0, ..object_store::RetryConfig::default() })
        .build()
        .expect("client");
    Ledger::new(Arc::new(client), LEDGER).expect("ledger")
}

fn fast() -> BacklogConfig {
    BacklogConfig { max_attempts: 2, backoff_base_ms: 0, backoff_max_ms: 0, ..BacklogConfig::default() }
}

fn item(key: &str, etag: &str) -> WorkItem {
    WorkItem {
        object: ObjectId { bucket: "raw-invoices".into(), key: key.into() },
        etag: Some(etag.into()),
        version_id: None,
        size: Some(42),
        sequencer: None,
    }
}

impl Harness {
    fn set_ledger(&self, ledger: Ledger) {
        let access = Access {
            source: self.source.clone(),
            sink: Arc::new(dummy_bucket("curated")),
            source_store: Arc::new(InMemory::new()),
            ledger,
        };
        self.pipeline.lock().access = Some(Arc::new(access));
    }

    fn admit(&self, key: &str, etag: &str) {
        let admitted = self.pipelines.admit_item(&self.pipeline.key, item(key, etag));
        assert!(matches!(admitted, Some(Ok(_))), "{admitted:?}");
        self.pipeline.notify.notify_waiters();
    }

    fn counts(&self) -> Counts {
        self.pipeline.lock().backlog.counts()
    }

    /// Every marker in the ledger, in key order.
    async fn records(&self) -> Vec<Marker> {
        use futures::StreamExt as _;
        let names: Vec<_> = self.ledger.list().collect().await;
        let mut markers = Vec::new();
        for name in names {
            let name = name.expect("listing");
            let etag = (!name.etag.is_empty()).then_some(name.etag.as_str());
            markers.push(self.ledger.get(&name.key, etag).await.expect("get").expect("marker"));
        }
        markers
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b));
        }
        send(self.addr, Method::POST, path, &headers, body.to_string().into_bytes()).await
    }

    async fn lease(&self, wait_seconds: u64) -> Reply {
        self.post(
            &format!("/v1/pipelines/finance/invoices/leases?wait_seconds={wait_seconds}"),
            Some(WORKER),
            json!({}),
        )
        .await
    }

    async fn on_lease(&self, lease_id: &str, action: &str, body: Value) -> Reply {
        self.post(&format!("/v1/pipelines/finance/invoices/leases/{lease_id}/{action}"), Some(WORKER), body).await
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    fn lease_id(&self) -> String {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        self.json()["lease_id"].as_str().expect("lease_id").to_owned()
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

fn metrics_text(metrics: &Metrics) -> String {
    metrics.render().expect("render")
}

#[tokio::test]
async fn callers_must_be_the_pipelines_worker() {
    let h = start(fast()).await;
    let path = "/v1/pipelines/finance/invoices/leases?wait_seconds=0";
    let missing = h.post(path, None, json!({})).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert!(missing.headers.get("www-authenticate").is_some_and(|v| v.as_bytes().starts_with(b"Bearer")));
    let forged = h.post(path, Some("forged"), json!({})).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(forged.headers.contains_key("www-authenticate"));
    assert_eq!(h.post(path, Some(OTHER), json!({})).await.status, StatusCode::FORBIDDEN);
    // The other pipeline's worker is authenticated but there is no such pipeline: auth first, 404.
    let ghost = h.post("/v1/pipelines/finance/other/leases?wait_seconds=0", Some(OTHER), json!({})).await;
    assert_eq!(ghost.status, StatusCode::NOT_FOUND);
    assert_eq!(h.lease(0).await.status, StatusCode::NO_CONTENT);
    assert!(metrics_text(&h.metrics).contains("zeroflow_workapi_requests_refused_total{reason=\"forbidden\"} 1"));
}

#[tokio::test]
async fn a_lease_runs_from_poll_to_completion_with_presigned_urls() {
    let h = start(fast()).await;
    h.admit("incoming/march 2026.csv", "abc");
    let lease = h.lease(0).await;
    let id = lease.lease_id();
    let body = lease.json();
    assert_eq!(
        (body["bucket"].as_str(), body["key"].as_str()),
        (Some("raw-invoices"), Some("incoming/march 2026.csv"))
    );
    assert_eq!(
        (body["etag"].as_str(), body["size"].as_u64(), body["attempt"].as_u64()),
        (Some("abc"), Some(42), Some(1))
    );
    assert_eq!(
        (body["lease_seconds"].as_u64(), body["heartbeat_interval_seconds"].as_u64()),
        (Some(120), Some(10)),
        "heartbeats at most every 10 s"
    );
    let input = Url::parse(body["input_url"].as_str().expect("input_url")).expect("url");
    assert_eq!(input.path(), "/raw-invoices/incoming/march%202026.csv");
    let query: HashMap<_, _> = input.query_pairs().into_owned().collect();
    assert_eq!(query.get("X-Amz-Algorithm").map(String::as_str), Some("AWS4-HMAC-SHA256"));
    assert_eq!(query.get("X-Amz-Expires").map(String::as_str), Some("120"));
    assert!(query.contains_key("X-Amz-Signature") && query.contains_key("X-Amz-Credential"));

    let beat = h.on_lease(&id, "heartbeat", json!({})).await;
    assert_eq!(beat.status, StatusCode::OK, "{}", beat.body);
    assert!(beat.json()["deadline_unix_ms"].as_u64() >= body["deadline_unix_ms"].as_u64());

    let output = h.on_lease(&id, "outputs", json!({"name": "out.parquet"})).await;
    assert_eq!(output.status, StatusCode::OK, "{}", output.body);
    let output = output.json();
    assert_eq!(output["key"], "parquet/incoming/march 2026.csv/out.parquet");
    assert_eq!(output["bucket"], "curated");
    let put = Url::parse(output["url"].as_str().expect("url")).expect("url");
    assert_eq!(put.path(), "/curated/parquet/incoming/march%202026.csv/out.parquet");
    assert!(put.query_pairs().any(|(k, _)| k == "X-Amz-Signature"));
    for bad in ["", "../x", "a/b", "..", "a\u{0}b", &"x".repeat(256)] {
        let refused = h.on_lease(&id, "outputs", json!({ "name": bad })).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad:?}: {}", refused.body);
    }
    let bad_complete = h.on_lease(&id, "complete", json!({"outputs": ["../../etc/passwd"]})).await;
    assert_eq!(bad_complete.status, StatusCode::BAD_REQUEST);

    let done = h.on_lease(&id, "complete", json!({"outputs": ["out.parquet"]})).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.json(), json!({"recorded": true, "lease_held": true}));
    let records = h.records().await;
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].source.key.as_str(), records[0].outcome), ("incoming/march 2026.csv", Outcome::Succeeded));
    assert_eq!(
        (records[0].attempts, records[0].outputs.clone()),
        (1, vec!["parquet/incoming/march 2026.csv/out.parquet".to_owned()])
    );
    assert_eq!((h.counts().in_flight, h.counts().succeeded), (0, 1));
    // The lease is finished: it is no longer known, and without the object named, not accepted.
    assert_eq!(h.on_lease(&id, "heartbeat", json!({})).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.on_lease(&id, "complete", json!({})).await.status, StatusCode::NOT_FOUND);

    let text = metrics_text(&h.metrics);
    assert!(
        text.contains("zeroflow_workapi_leases_granted_total{namespace=\"finance\",pipeline=\"invoices\"} 1"),
        "{text}"
    );
    assert!(text.contains("outcome=\"done\",pipeline=\"invoices\"} 1"), "{text}");
    assert!(
        text.contains("zeroflow_processing_duration_seconds_count{namespace=\"finance\",pipeline=\"invoices\"} 1"),
        "{text}"
    );
    assert!(text.contains("zeroflow_workapi_lease_wait_seconds_count{result=\"leased\"} 1"), "{text}");
}

#[tokio::test]
async fn a_waiting_poll_wakes_when_work_is_admitted() {
    let h = start(fast()).await;
    let started = Instant::now();
    let empty = h.lease(1).await;
    assert_eq!(empty.status, StatusCode::NO_CONTENT);
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());

    let poll = {
        let addr = h.addr;
        tokio::spawn(async move {
            let started = Instant::now();
            let reply = send(
                addr,
                Method::POST,
                "/v1/pipelines/finance/invoices/leases?wait_seconds=20",
                &[("authorization", "Bearer worker-token")],
                vec![],
            )
            .await;
            (reply, started.elapsed())
        })
    };
    // Admission goes through the gateway's path, which wakes the poll.
    let event = StorageEvent {
        kind: EventKind::Created,
        bucket: "raw-invoices".into(),
        key: "late.csv".into(),
        etag: Some("e1".into()),
        version_id: None,
        size: Some(1),
        sequencer: None,
        time: None,
    };
    // Give the poll time to start waiting; the assertion below is on the wake-up, not this.
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.pipelines.admit(&[event], Instant::now(), None).expect("admit");
    let (reply, waited) = poll.await.expect("poll");
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["key"], "late.csv");
    assert!(waited < Duration::from_secs(2), "woken late: {waited:?}");
}

#[tokio::test]
async fn nothing_is_acknowledged_before_it_is_recorded() {
    let h = start(fast()).await;
    h.admit("a.csv", "e");
    let id = h.lease(0).await.lease_id();
    h.set_ledger(unreachable_ledger());
    let refused = h.on_lease(&id, "complete", json!({"outputs": ["a.out"]})).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.counts().in_flight, 1, "the lease is still held, so the worker can retry");
    h.set_ledger(h.ledger.clone());
    assert_eq!(h.on_lease(&id, "complete", json!({"outputs": ["a.out"]})).await.status, StatusCode::OK);
    assert_eq!(h.counts().succeeded, 1);
}

#[tokio::test]
async fn failures_retry_then_are_recorded_with_a_bounded_stderr() {
    let h = start(fast()).await;
    h.admit("poison.csv", "p");
    let first = h.lease(0).await.lease_id();
    let retry = h.on_lease(&first, "fail", json!({"retryable": true, "exit_code": 1, "stderr_tail": "boom"})).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    assert_eq!(retry.json()["recorded"], false);
    assert!(h.records().await.is_empty());

    let second = h.lease(2).await;
    assert_eq!(second.json()["attempt"], 2);
    let huge = format!("{}TAIL", "x".repeat(10_000));
    let last =
        h.on_lease(&second.lease_id(), "fail", json!({"retryable": true, "exit_code": 3, "stderr_tail": huge})).await;
    assert_eq!(last.json()["recorded"], true);
    let records = h.records().await;
    let error = records[0].error.clone().expect("failure detail");
    assert_eq!((records[0].outcome, records[0].attempts, error.exit_code), (Outcome::Failed, 2, Some(3)));
    assert!(error.stderr_tail.ends_with("TAIL") && error.stderr_tail.len() <= 4096, "{}", error.stderr_tail.len());
    assert_eq!((h.counts().pending, h.counts().failed), (0, 1));
    let malformed = h.on_lease("x", "fail", json!({"exit_code": "nope"})).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_silent_lease_expires_and_the_object_is_leased_again() {
    let h = start(BacklogConfig { lease_duration_ms: 300, ..fast() }).await;
    h.admit("slow.csv", "s");
    let first = h.lease(0).await.lease_id();
    let again = h.lease(5).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!((again.json()["key"].as_str(), again.json()["attempt"].as_u64()), (Some("slow.csv"), Some(2)));
    // The first worker's heartbeat (which names its object, as the runner's does) is refused:
    // the object is another worker's now.
    let object = json!({"bucket": "raw-invoices", "key": "slow.csv", "etag": "s", "attempt": 1});
    h.source.objects.lock().expect("lock").insert("slow.csv".into(), ObjectInfo { etag: Some("s".into()), size: 1 });
    assert_eq!(h.on_lease(&first, "heartbeat", object).await.status, StatusCode::GONE);
    assert_eq!(h.on_lease(&first, "heartbeat", json!({})).await.status, StatusCode::NOT_FOUND, "forgotten");
    assert_eq!(h.on_lease(&first, "outputs", json!({"name": "o"})).await.status, StatusCode::NOT_FOUND);

    // The second attempt also goes silent: that was the last one, so the object is recorded as
    // failed when the lease is reclaimed, and nothing is handed out again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.records().await.is_empty() {
        assert!(Instant::now() < deadline, "expired lease never recorded");
        assert_eq!(h.lease(1).await.status, StatusCode::NO_CONTENT);
    }
    let records = h.records().await;
    let reason = records[0].error.clone().expect("failure detail").stderr_tail;
    assert_eq!((records[0].attempts, reason.as_str()), (2, "lease expired"));
    assert_eq!(h.counts().failed, 1);
}

#[tokio::test]
async fn an_unknown_lease_is_accepted_only_for_the_real_object_revision() {
    let h = start(fast()).await;
    h.source
        .objects
        .lock()
        .expect("lock")
        .insert("done.csv".into(), ObjectInfo { etag: Some("\"e9\"".into()), size: 5 });
    let object = json!({"bucket": "raw-invoices", "key": "done.csv", "etag": "e9"});
    let lease = "0123456789abcdef-7";
    let mut body = object.clone();
    body["name"] = json!("o.txt");
    let output = h.on_lease(lease, "outputs", body).await;
    assert_eq!(output.status, StatusCode::OK, "{}", output.body);
    assert_eq!(output.json()["key"], "parquet/done.csv/o.txt");

    let mut body = object.clone();
    body["outputs"] = json!(["o.txt"]);
    let done = h.on_lease(lease, "complete", body).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.json(), json!({"recorded": true, "lease_held": false}));
    let records = h.records().await;
    assert_eq!((records[0].outcome, records[0].attempts), (Outcome::Succeeded, 1));
    assert_eq!(records[0].outputs, ["parquet/done.csv/o.txt"]);

    let stale =
        h.on_lease(lease, "complete", json!({"bucket": "raw-invoices", "key": "done.csv", "etag": "old"})).await;
    assert_eq!(stale.status, StatusCode::GONE);
    let missing =
        h.on_lease(lease, "complete", json!({"bucket": "raw-invoices", "key": "nope.csv", "etag": "e9"})).await;
    assert_eq!(missing.status, StatusCode::GONE);
    let elsewhere = h.on_lease(lease, "complete", json!({"bucket": "curated", "key": "done.csv", "etag": "e9"})).await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);
    let permanent =
        json!({"bucket": "raw-invoices", "key": "done.csv", "etag": "e9", "retryable": false, "exit_code": 2});
    assert_eq!(h.on_lease(lease, "fail", permanent).await.json()["recorded"], true);
    let records = h.records().await;
    assert_eq!((records.len(), records[0].outcome), (1, Outcome::Failed), "the revision's marker, overwritten");
}

/// Two pipelines may share a bucket. A forged (or another pipeline's) lease id naming an object
/// outside this pipeline's route gets nothing: no upload URL, no record, no heartbeat, and no
/// answer that tells whether the object exists.
#[tokio::test]
async fn an_unknown_lease_is_refused_for_an_object_outside_the_route() {
    let h = start_with_prefix(fast(), Some("finance/")).await;
    for key in ["finance/a.csv", "hr/salaries.csv", ".zeroflow/ledger/finance/other/k/x"] {
        h.source.objects.lock().expect("lock").insert(key.into(), ObjectInfo { etag: Some("\"e1\"".into()), size: 5 });
    }
    let lease = "0123456789abcdef-9";
    for key in ["hr/salaries.csv", ".zeroflow/ledger/finance/other/k/x", "hr/missing.csv"] {
        let object = json!({"bucket": "raw-invoices", "key": key, "etag": "e1", "attempt": 1});
        let mut body = object.clone();
        body["name"] = json!("o.txt");
        assert_eq!(h.on_lease(lease, "outputs", body).await.status, StatusCode::NOT_FOUND, "{key}");
        assert_eq!(h.on_lease(lease, "heartbeat", object.clone()).await.status, StatusCode::NOT_FOUND, "{key}");
        let mut body = object.clone();
        body["outputs"] = json!([]);
        assert_eq!(h.on_lease(lease, "complete", body).await.status, StatusCode::NOT_FOUND, "{key}");
        let mut body = object.clone();
        body["retryable"] = json!(false);
        assert_eq!(h.on_lease(lease, "fail", body.clone()).await.status, StatusCode::NOT_FOUND, "{key}");
        body["input_missing"] = json!(true);
        assert_eq!(h.on_lease(lease, "fail", body).await.status, StatusCode::NOT_FOUND, "{key}");
    }
    assert!(h.records().await.is_empty(), "nothing recorded for objects outside the route");
    // The same forged lease for an object of the route is the restart case, and is accepted.
    let own = json!({"bucket": "raw-invoices", "key": "finance/a.csv", "etag": "e1", "outputs": []});
    assert_eq!(h.on_lease(lease, "complete", own).await.status, StatusCode::OK);
    assert_eq!(h.records().await.len(), 1);
}

/// hyper drops the handler when the client goes away, so an abandoned poll does not take an
/// object that would then sit leased, unseen, until its lease expires. The sleeps give the poll
/// time to start waiting and the (absent) lease time to happen; there is no condition to await.
#[tokio::test]
async fn a_poll_whose_client_left_takes_no_lease() {
    let h = start(fast()).await;
    {
        let mut stream = TcpStream::connect(h.addr).await.expect("connect");
        let request = "POST /v1/pipelines/finance/invoices/leases?wait_seconds=20 HTTP/1.1\r\nhost: x\r\n\
                       authorization: Bearer worker-token\r\ncontent-length: 0\r\n\r\n";
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.expect("write");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.admit("after.csv", "a");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.counts().in_flight, 0, "the abandoned poll must not hold the object");
}

/// A new leader serves the work API before its first reconciles have loaded the pipelines: a
/// worker of a pipeline that exists is told to retry (503), not that it is gone (404), until
/// the caches list it no more.
#[tokio::test]
async fn a_pipeline_the_leader_has_not_loaded_yet_is_unavailable_not_missing() {
    let h = start(fast()).await;
    let other = PipelineKey::new("finance", "other");
    let path = "/v1/pipelines/finance/other/leases?wait_seconds=0";
    let lease = format!("/v1/pipelines/finance/other/leases/{}/complete", "0-1-1");
    let declared = h.pipelines.declared();
    declared.expect_scopes(1);
    // The watch has not listed yet: nothing can be called missing.
    let before_listing = h.post(path, Some(OTHER), json!({})).await;
    assert_eq!(before_listing.status, StatusCode::SERVICE_UNAVAILABLE, "{}", before_listing.body);
    assert_eq!(before_listing.headers.get("retry-after").map(|v| v.as_bytes()), Some(b"1".as_slice()));
    assert!(before_listing.body.contains("not loaded"), "{}", before_listing.body);
    // Listed, runtime not there yet: still retry, for a lease and for a report alike.
    declared.declare(None, [other.clone(), h.pipeline.key.clone()].into());
    assert_eq!(h.post(path, Some(OTHER), json!({})).await.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.post(&lease, Some(OTHER), json!({})).await.status, StatusCode::SERVICE_UNAVAILABLE);
    // Deleted: the next listing no longer has it.
    declared.declare(None, [h.pipeline.key.clone()].into());
    assert_eq!(h.post(path, Some(OTHER), json!({})).await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.lease(0).await.status, StatusCode::NO_CONTENT, "the loaded pipeline answers as before");
    let metrics = metrics_text(&h.metrics);
    assert!(metrics.contains("zeroflow_workapi_requests_refused_total{reason=\"loading\"} 3"), "{metrics}");
}

/// A lease request whose body arrives after its head (a client that writes them apart, as the
/// work API benchmark's did) keeps its kept-alive connection. The handler reads the body
/// before answering; when it answered first, hyper found the body unread after the response,
/// could not tell where the next request would start, and closed the connection under the
/// client's next request (1 request in 80-100 of the benchmark's, each a reset and a retry).
#[tokio::test]
async fn a_lease_request_whose_body_comes_after_its_head_keeps_the_connection() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    /// Reads one response (status line, headers, a `Content-Length` body); its status.
    async fn response(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        reader.read_exact(&mut vec![0; length]).await?;
        Ok(status)
    }

    let h = start(fast()).await;
    let stream = TcpStream::connect(h.addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut reader = BufReader::new(stream);
    let head = format!(
        "POST /v1/pipelines/finance/invoices/leases?wait_seconds=0 HTTP/1.1\r\nHost: {}\r\n\
         Authorization: Bearer {WORKER}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n",
        h.addr
    );
    reader.get_mut().write_all(head.as_bytes()).await.expect("write the head");
    // Time for an answer to come before the body, as it did.
    let _ = tokio::time::timeout(Duration::from_millis(300), reader.fill_buf()).await;
    reader.get_mut().write_all(b"{}").await.expect("write the body");
    assert_eq!(response(&mut reader).await.expect("first response"), 204, "nothing to lease");

    let whole = format!("{head}{{}}");
    reader.get_mut().write_all(whole.as_bytes()).await.expect("write the second request");
    let second = response(&mut reader).await;
    assert_eq!(second.ok(), Some(204), "the second request must be answered on the same connection");
}
