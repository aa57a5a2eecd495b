//! Gateway throughput and latency on loopback through the production admission path, against a
//! floor measured in the same run.
//!
//! `cargo bench -p zeroflow-operator --bench gateway [-- EVENTS CONNECTIONS PIPELINES WAITERS]`
//! (defaults 100000, 8, 100 and 200). MinIO webhook bodies, one record each, are POSTed over
//! keep-alive HTTP/1 connections by a client runtime of its own (a second process, near enough).
//!
//! What runs is what the leader runs: the gateway's router (token check, body limit, parsing,
//! metrics) and [`Pipelines`] as its admission, with a route for each of `PIPELINES` pipelines
//! (ten per bucket, each its own prefix; every event routes to one of them, in turn); the
//! [`Scaler`], which receives every admission's kick, with its ticks and the status writer and
//! progress publisher beside it; and `WAITERS` lease polls held open by workers on the work
//! API's router (spread over the pipelines). Two things stand in
//! for what the gateway never waits on: the apiserver is a canned one in memory (the scale
//! subresource answers 0 replicas when read and what was asked when patched, other writes are
//! echoed), and worker tokens are accepted by name instead of by TokenReview (production caches
//! reviews). The pipelines have no store access, and admissions wake a pipeline's polls only
//! when it could lease, so here the polls wait without being woken: this bench does not measure
//! what a wake-up costs the event path.
//!
//! Before the events are counted, one event per pipeline takes each from zero to one worker
//! (adopted at zero, scaled by the kick), so the counted kicks are the steady state's.
//!
//! The floor is the same HTTP server (axum on hyper, same listener, same client, same bodies)
//! answering `200 {}` after reading the body, without authentication, parsing or admission;
//! measured before and after. The bench prints events/s and latency percentiles of each, and
//! the ratio of the production path to the floor. It asserts nothing (figures, not a timed
//! test).

use std::alloc::System;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes as AxumBytes;
use axum::routing::post;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::net::{TcpListener, TcpStream};

use zeroflow_core::PipelineKey;
use zeroflow_core::backlog::BacklogConfig;
use zeroflow_core::routing::Route;
use zeroflow_operator::events::EventRecorder;
use zeroflow_operator::gateway::auth::BearerToken;
use zeroflow_operator::gateway::metrics::GatewayMetrics;
use zeroflow_operator::gateway::{GatewayConfig, router};
use zeroflow_operator::metrics::Metrics;
use zeroflow_operator::runtime::{Pipelines, Seed, Settings, progress};
use zeroflow_operator::scaler::Scaler;
use zeroflow_operator::status_writer::StatusWriter;
use zeroflow_operator::workapi::{self, Identity, TokenVerifier, VerifyError, WorkApi};

const TOKEN: &str = "bench-token";
const NAMESPACE: &str = "bench";
/// Pipelines per source bucket.
const PER_BUCKET: usize = 10;
/// How long each lease poll waits (the work API's maximum is 30 s).
const POLL_SECONDS: u64 = 25;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counts heap allocations of the whole process (server, client and all), so a run's
/// allocations per event can be set against the floor's.
#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Clone, Copy)]
struct Shape {
    events: usize,
    connections: usize,
    pipelines: usize,
    waiters: usize,
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let mut next = |default: usize| -> Result<usize, BoxError> {
        Ok(args.next().map(|a| a.parse()).transpose()?.unwrap_or(default))
    };
    let shape = Shape {
        events: next(100_000)?,
        connections: next(8)?.max(1),
        pipelines: next(100)?.max(1),
        waiters: next(200)?,
    };
    // The operator's runtime: tokio's default, one worker per core, as in production.
    let server = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The senders: a runtime of their own, as another process would be.
    let clients = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let floor_addr = server.block_on(serve(floor_router()))?;
    let production = server.block_on(Production::start(shape))?;
    println!(
        "gateway: {} events, {} connections, {} pipelines ({PER_BUCKET} per bucket), {} lease polls waiting",
        shape.events, shape.connections, shape.pipelines, shape.waiters
    );
    clients.block_on(production.warm_up(shape))?;

    let floor_before = clients.block_on(load(floor_addr, shape, 0))?;
    floor_before.print("floor (before)");
    let measured = clients.block_on(load(production.gateway, shape, 0))?;
    measured.print("production");
    let floor_after = clients.block_on(load(floor_addr, shape, shape.events))?;
    floor_after.print("floor (after)");

    let floor_rate = (floor_before.rate() + floor_after.rate()) / 2.0;
    let floor_p50 = (ms(floor_before.percentile(0.5)) + ms(floor_after.percentile(0.5))) / 2.0;
    let floor_p99 = (ms(floor_before.percentile(0.99)) + ms(floor_after.percentile(0.99))) / 2.0;
    println!(
        "gateway: production/floor: throughput {:.2}x, p50 latency {:.2}x, p99 latency {:.2}x",
        measured.rate() / floor_rate,
        ms(measured.percentile(0.5)) / floor_p50,
        ms(measured.percentile(0.99)) / floor_p99,
    );
    let (pending, scaled) = production.state();
    println!(
        "gateway: backlogs hold {pending} pending items; {scaled} of {} pipelines at one worker; {} lease polls answered (each waited its {POLL_SECONDS} s or was refused)",
        shape.pipelines,
        production.polls.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The operator's parts that an event touches, started as `main` starts them.
struct Production {
    gateway: SocketAddr,
    pipelines: Arc<Pipelines>,
    polls: Arc<AtomicU64>,
}

impl Production {
    async fn start(shape: Shape) -> Result<Self, BoxError> {
        let metrics = Arc::new(Metrics::new()?);
        let (kick, kicks) = tokio::sync::mpsc::unbounded_channel();
        let pipelines = Arc::new(Pipelines::new(1, kick, metrics.clone()));
        let client = canned_apiserver();
        let recorder =
            EventRecorder::new(client.clone(), Reporter { controller: "zeroflow-bench".into(), instance: None });
        let (status, _status_task) = StatusWriter::spawn(client.clone(), pipelines.clone());
        let scaler = Arc::new(Scaler::new(client, pipelines.clone(), recorder.clone(), status.clone()));
        tokio::spawn(scaler.run(kicks));
        tokio::spawn(progress::run(pipelines.clone(), status, recorder));

        // Room for every event of the warm-up and of one run in any one backlog.
        let backlog = BacklogConfig { capacity: shape.events + shape.pipelines + 1_000, ..BacklogConfig::default() };
        for p in 0..shape.pipelines {
            let key = pipeline_key(p);
            let route = Route {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                bucket: bucket(p),
                prefix: Some(format!("in/{}/", key.name)),
                suffix: Some(".csv".into()),
                exclude_prefixes: vec!["out/".into()],
            };
            pipelines.upsert(&key, Settings::new(route, backlog.clone()), &Seed::default());
        }

        let gateway_metrics = GatewayMetrics::register(metrics.registry())?;
        let config = GatewayConfig { token: Some(BearerToken::new(TOKEN)?), ..GatewayConfig::default() };
        let gateway = serve(router(config, pipelines.clone(), gateway_metrics)?).await?;
        let work_api = serve(workapi::router(Arc::new(WorkApi::new(pipelines.clone(), Arc::new(ByName))))).await?;
        let polls = Arc::new(AtomicU64::new(0));
        for w in 0..shape.waiters {
            tokio::spawn(wait_for_leases(work_api, pipeline_key(w % shape.pipelines), polls.clone()));
        }
        Ok(Self { gateway, pipelines, polls })
    }

    /// One event per pipeline, then until every pipeline has been scaled to one worker.
    async fn warm_up(&self, shape: Shape) -> Result<(), BoxError> {
        let warm = Shape { events: shape.pipelines, connections: 1, ..shape };
        load(self.gateway, warm, usize::MAX / 2).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, scaled) = self.state();
            if scaled == shape.pipelines {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(
                    format!("only {scaled} of {} pipelines scaled to one worker in 30 s", shape.pipelines).into()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Pending items over all backlogs, and how many pipelines run one worker.
    fn state(&self) -> (usize, usize) {
        let mut pending = 0;
        let mut scaled = 0;
        for pipeline in self.pipelines.all() {
            let state = pipeline.lock();
            pending += state.backlog.counts().pending;
            scaled += usize::from(state.scale.replicas() == Some(1));
        }
        (pending, scaled)
    }
}

fn pipeline_key(p: usize) -> PipelineKey {
    PipelineKey::new(NAMESPACE, format!("p{p:04}"))
}

fn bucket(p: usize) -> String {
    format!("bench-{:03}", p / PER_BUCKET)
}

/// Worker tokens are the worker's username itself: what a cached TokenReview answers.
struct ByName;

impl TokenVerifier for ByName {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, VerifyError>> {
        let identity = Identity { username: token.to_owned(), pod: None };
        Box::pin(async move { Ok(identity) })
    }
}

/// One worker slot polling for leases, for ever.
async fn wait_for_leases(addr: SocketAddr, pipeline: PipelineKey, polls: Arc<AtomicU64>) -> Result<(), BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let token = zeroflow_contract::worker::worker_username(&pipeline.namespace, &pipeline.name);
    let path = format!("/v1/pipelines/{}/{}/leases?wait_seconds={POLL_SECONDS}", pipeline.namespace, pipeline.name);
    loop {
        let request = Request::builder()
            .method(Method::POST)
            .uri(path.as_str())
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        response.into_body().collect().await?;
        polls.fetch_add(1, Ordering::Relaxed);
    }
}

/// A `kube::Client` whose apiserver is canned, in memory: reads of a scale subresource say 0
/// replicas, patches of one say what was asked, every other request is echoed.
fn canned_apiserver() -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            tokio::spawn(async move {
                let (parts, body) = request.into_parts();
                let sent = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let sent: Value = serde_json::from_slice(&sent).unwrap_or(Value::Null);
                let path = parts.uri.path().to_owned();
                let answer = if path.ends_with("/scale") {
                    let replicas = sent.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
                    let name = path.rsplit('/').nth(1).unwrap_or_default();
                    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                           "metadata": {"name": name, "namespace": NAMESPACE},
                           "spec": {"replicas": replicas}, "status": {"replicas": replicas}})
                } else {
                    sent
                };
                let response = Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap_or_default()));
                if let Ok(response) = response {
                    respond.send_response(response);
                }
            });
        }
    });
    Client::new(service, NAMESPACE)
}

/// The floor: the same server reading each body and answering at once.
fn floor_router() -> Router {
    Router::new().route(
        "/v1/events/s3",
        post(|body: AxumBytes| async move {
            std::hint::black_box(body);
            ([("content-type", "application/json")], "{}")
        }),
    )
}

async fn serve(app: Router) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// What one load run measured.
struct Run {
    elapsed: Duration,
    /// Heap allocations (and reallocations) in the whole process during the run.
    allocations: u64,
    /// Sorted.
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }

    fn print(&self, what: &str) {
        println!(
            "gateway: {what}: {} events in {:.2} s = {:.0} events/s, {:.1} allocations/event; latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
            self.latencies.len(),
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.allocations as f64 / self.latencies.len().max(1) as f64,
            ms(self.percentile(0.5)),
            ms(self.percentile(0.9)),
            ms(self.percentile(0.99)),
            ms(self.percentile(0.999)),
            ms(self.latencies.last().copied().unwrap_or_default()),
        );
    }
}

/// `shape.events` events, numbered from `offset`, over `shape.connections` connections.
async fn load(addr: SocketAddr, shape: Shape, offset: usize) -> Result<Run, BoxError> {
    let allocations = allocations_so_far();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..shape.connections {
        tasks.push(tokio::spawn(client(addr, c, shape, offset)));
    }
    let mut latencies = Vec::with_capacity(shape.events);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    let allocations = allocations_so_far() - allocations;
    latencies.sort();
    Ok(Run { elapsed, allocations, latencies })
}

/// One keep-alive connection sending every `connections`-th event, starting with the `first`.
async fn client(addr: SocketAddr, first: usize, shape: Shape, offset: usize) -> Result<Vec<Duration>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(shape.events / shape.connections + 1);
    for i in (first..shape.events).step_by(shape.connections) {
        let body = minio_body(offset + i, shape.pipelines);
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/events/s3")
            .header("host", addr.to_string())
            .header("authorization", "Bearer bench-token")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let sent = Instant::now();
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        latencies.push(sent.elapsed());
        if status != StatusCode::OK {
            return Err(format!("event {i}: status {status}").into());
        }
    }
    Ok(latencies)
}

/// A MinIO webhook body for object `i`, in pipeline `i % pipelines`'s bucket and prefix.
fn minio_body(i: usize, pipelines: usize) -> String {
    let p = i % pipelines;
    let name = pipeline_key(p).name;
    let bucket = bucket(p);
    format!(
        r#"{{"EventName":"s3:ObjectCreated:Put","Key":"{bucket}/in/{name}/day+{d}/obj-{i}.csv","Records":[{{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2026-11-27T10:00:00.000Z","eventName":"s3:ObjectCreated:Put","userIdentity":{{"principalId":"minioadmin"}},"requestParameters":{{"principalId":"minioadmin","region":"","sourceIPAddress":"127.0.0.1"}},"responseElements":{{"x-amz-request-id":"187B3C9D1E2F","x-minio-deployment-id":"d","x-minio-origin-endpoint":"http://127.0.0.1:9000"}},"s3":{{"s3SchemaVersion":"1.0","configurationId":"Config","bucket":{{"name":"{bucket}","ownerIdentity":{{"principalId":"minioadmin"}},"arn":"arn:aws:s3:::{bucket}"}},"object":{{"key":"in%2F{name}%2Fday+{d}%2Fobj-{i}.csv","size":1024,"eTag":"{i:032x}","contentType":"text/csv","userMetadata":{{"content-type":"text/csv"}},"sequencer":"{i:016X}"}}}},"source":{{"host":"127.0.0.1","port":"","userAgent":"MinIO (linux; amd64) minio-go/v7.0.83"}}}}]}}"#,
        d = i % 31
    )
}

/// Allocations and reallocations since the process started.
fn allocations_so_far() -> u64 {
    let stats = ALLOCATOR.stats();
    (stats.allocations + stats.reallocations) as u64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
