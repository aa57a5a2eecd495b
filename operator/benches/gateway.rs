//! Gateway throughput and latency on loopback: the real router and in-memory backlogs, fed MinIO
//! webhook bodies over keep-alive HTTP/1 connections.
//!
//! `cargo bench -p zeroflow-operator --bench gateway [-- EVENTS CONNECTIONS]` (defaults 50000 and 8).
//! Prints events/s and latency percentiles; it asserts nothing (figures, not a timed test).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use zeroflow_core::PipelineKey;
use zeroflow_core::backlog::BacklogConfig;
use zeroflow_core::routing::Route;
use zeroflow_operator::gateway::auth::BearerToken;
use zeroflow_operator::gateway::metrics::GatewayMetrics;
use zeroflow_operator::gateway::{GatewayConfig, router};
use zeroflow_operator::metrics::Metrics;
use zeroflow_operator::runtime::{Pipelines, Seed, Settings};

const TOKEN: &str = "bench-token";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let events: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(50_000);
    let connections: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(8).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(events, connections))
}

async fn run(events: usize, connections: usize) -> Result<(), BoxError> {
    let pipeline = PipelineKey::new("bench", "p");
    let route = Route {
        namespace: "bench".into(),
        name: "p".into(),
        bucket: "bench".into(),
        prefix: Some("in/".into()),
        suffix: Some(".csv".into()),
        exclude_prefixes: vec!["out/".into()],
    };
    let metrics = Arc::new(Metrics::new()?);
    // The production admission path: the runtime map, its backlog, the waiters' wake-up and a
    // kick per admission; the kicks are drained here as the scaler's fast path would (the
    // pipeline is not at zero, so a kick costs one look).
    let (kick, mut kicks) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move { while kicks.recv().await.is_some() {} });
    let pipelines = Arc::new(Pipelines::new(1, kick, metrics.clone()));
    let backlog = BacklogConfig { capacity: events + 1_000, ..BacklogConfig::default() };
    pipelines.upsert(&pipeline, Settings::new(route, backlog), &Seed::default());
    let gateway_metrics = GatewayMetrics::register(metrics.registry())?;
    let config = GatewayConfig { token: Some(BearerToken::new(TOKEN)?), ..GatewayConfig::default() };
    let app = router(config, pipelines.clone(), gateway_metrics)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // Warm up connections and code paths with events that are not counted.
    let warm = tokio::spawn(client(addr, 0, connections, 200, usize::MAX / 2));
    warm.await??;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        tasks.push(tokio::spawn(client(addr, c, connections, events, 0)));
    }
    let mut latencies = Vec::with_capacity(events);
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    server.abort();

    latencies.sort();
    let pending = pipelines.get(&pipeline).map_or(0, |p| p.lock().backlog.counts().pending);
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!("gateway: {} events over {connections} connections in {:.2}s", latencies.len(), elapsed.as_secs_f64());
    println!("gateway: {rate:.0} events/s");
    println!(
        "gateway: latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 0.999)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    println!("gateway: backlog holds {pending} pending items");
    Ok(())
}

/// One keep-alive connection sending every `stride`-th event of `total`, numbered from `offset`.
async fn client(
    addr: SocketAddr,
    first: usize,
    stride: usize,
    total: usize,
    offset: usize,
) -> Result<Vec<Duration>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(total / stride + 1);
    for i in (first..total).step_by(stride) {
        let body = minio_body(offset + i);
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

fn minio_body(i: usize) -> String {
    format!(
        r#"{{"EventName":"s3:ObjectCreated:Put","Key":"bench/in/day+{d}/obj-{i}.csv","Records":[{{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2026-11-27T10:00:00.000Z","eventName":"s3:ObjectCreated:Put","userIdentity":{{"principalId":"minioadmin"}},"requestParameters":{{"principalId":"minioadmin","region":"","sourceIPAddress":"127.0.0.1"}},"responseElements":{{"x-amz-request-id":"187B3C9D1E2F","x-minio-deployment-id":"d","x-minio-origin-endpoint":"http://127.0.0.1:9000"}},"s3":{{"s3SchemaVersion":"1.0","configurationId":"Config","bucket":{{"name":"bench","ownerIdentity":{{"principalId":"minioadmin"}},"arn":"arn:aws:s3:::bench"}},"object":{{"key":"in%2Fday+{d}%2Fobj-{i}.csv","size":1024,"eTag":"{i:032x}","contentType":"text/csv","userMetadata":{{"content-type":"text/csv"}},"sequencer":"{i:016X}"}}}},"source":{{"host":"127.0.0.1","port":"","userAgent":"MinIO (linux; amd64) minio-go/v7.0.83"}}}}]}}"#,
        d = i % 31
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
