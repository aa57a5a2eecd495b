//! Work API throughput: W simulated workers (tokio tasks, each with its own TokenRequest-minted
//! ServiceAccount token, each on its own kept-alive HTTP/1.1 connection) doing lease -> complete
//! loops against the operator's work API (served in-process: the production router, the real
//! TokenReview verifier, the real ledger in the testbed's MinIO), over N objects admitted up
//! front. Prints leases + completions per second and request latencies.
//!
//! Floor, in the same run, before and after: the store I/O the work API does per object, alone
//! (the ledger lookup a lease makes and the marker a completion writes, with the same ledger code
//! and concurrency, no HTTP, no backlog). operator objects/s / floor objects/s near 1 means the
//! store is the bottleneck; well below 1, the operator is.
//!
//! Run it with `e2e/bench/workapi-throughput [OBJECTS] [WORKERS]` (defaults 5000 and 200). Only
//! talks to the testbed on 127.0.0.1. Figures, not a test: it asserts only that every object
//! was completed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail, ensure};
use chrono::Utc;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use zeroflow_core::backlog::{BacklogConfig, ObjectId, WorkItem};
use zeroflow_core::ledger::{Ledger, Marker};
use zeroflow_e2e::work_api::WorkApiBed;
use zeroflow_e2e::{client, token};
use zeroflow_operator::store::bucket_client;

/// A kept-alive HTTP/1.1 connection to the work API, as a runner's client keeps one.
struct Connection {
    stream: BufReader<TcpStream>,
    addr: std::net::SocketAddr,
    bearer: String,
    /// Times the server had closed the kept-alive connection and a new one was opened.
    reconnects: usize,
}

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<BufReader<TcpStream>> {
    ensure!(addr.ip().is_loopback(), "only loopback: {addr}");
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(BufReader::new(stream))
}

impl Connection {
    async fn open(addr: std::net::SocketAddr, token: &str) -> anyhow::Result<Self> {
        Ok(Self { stream: connect(addr).await?, addr, bearer: format!("Bearer {token}"), reconnects: 0 })
    }

    /// One POST; returns the status and the JSON body (`Null` when empty). When the server
    /// closed the kept-alive connection meanwhile, once more on a new one, as HTTP clients do.
    async fn post(&mut self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        match self.exchange(path, body).await {
            Ok(answer) => Ok(answer),
            Err(_) => {
                self.reconnects += 1;
                self.stream = connect(self.addr).await?;
                self.exchange(path, body).await
            }
        }
    }

    async fn exchange(&mut self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let body = serde_json::to_vec(body)?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            self.bearer,
            body.len()
        );
        // Head and body in two writes, as some clients send them: the server must read a body
        // before it answers, or it closes the connection (what `reconnects` counted, before the
        // lease handler read its body).
        let stream = self.stream.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        let mut line = String::new();
        ensure!(self.stream.read_line(&mut line).await? > 0, "the server closed the connection");
        let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("bad status line")?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut payload = vec![0; length];
        self.stream.read_exact(&mut payload).await?;
        let value = if payload.is_empty() { Value::Null } else { serde_json::from_slice(&payload)? };
        Ok((status, value))
    }
}

fn item(bed: &WorkApiBed, i: usize) -> WorkItem {
    WorkItem {
        object: ObjectId::new(bed.bucket.as_str(), format!("in/{i:07}.csv")),
        etag: Some(format!("{i:032x}")),
        version_id: None,
        size: Some(100),
        sequencer: None,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64) * p) as usize;
    sorted.get(index.min(sorted.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}

fn summary(label: &str, mut millis: Vec<f64>) -> String {
    millis.sort_by(f64::total_cmp);
    format!(
        "{label}: n={} p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        millis.len(),
        percentile(&millis, 0.5),
        percentile(&millis, 0.9),
        percentile(&millis, 0.99),
        millis.last().copied().unwrap_or(f64::NAN)
    )
}

/// The store's share alone: per object, the ledger lookup of a lease and the marker of a
/// completion, `workers` at a time. Returns objects per second.
async fn floor(bed: &WorkApiBed, ledger: &Ledger, objects: usize, workers: usize, round: usize) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (next, ledger) = (next.clone(), ledger.clone());
        let bucket = bed.bucket.clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= objects {
                    return anyhow::Ok(());
                }
                let item = WorkItem {
                    object: ObjectId::new(bucket.as_str(), format!("floor-{round}/{i:07}.csv")),
                    etag: Some(format!("{i:032x}")),
                    version_id: None,
                    size: Some(100),
                    sequencer: None,
                };
                ensure!(!ledger.contains(&item.object.key, item.etag.as_deref()).await?, "a new key in the ledger");
                ledger.record(&Marker::succeeded(&item, 1, vec![], Utc::now())).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(objects as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let objects: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5000);
    let workers: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);
    let config = zeroflow_e2e::store_config()?;
    let endpoint = config.endpoint.as_deref().unwrap_or("AWS S3");
    if !endpoint.starts_with("http://127.0.0.1:") {
        bail!("refusing to run against {endpoint}: only the testbed on 127.0.0.1");
    }
    // A long lease: the bench measures throughput, not expiry.
    let backlog = BacklogConfig { capacity: objects + 1, lease_duration_ms: 600_000, ..BacklogConfig::default() };
    let bed = WorkApiBed::start("zf-bench-workapi", backlog).await?;
    let kube = client().await?;
    let mut tokens = Vec::with_capacity(workers);
    for _ in 0..workers {
        tokens.push(token(&kube, &bed.namespace, "demo-worker", "zeroflow").await?);
    }
    let floor_ledger = Ledger::new(
        Arc::new(bucket_client(&config, &bed.bucket)?),
        &format!(".zeroflow/ledger/{}/floor/", bed.namespace),
    )?;
    println!("work API throughput: {objects} objects, {workers} workers (each its own token and connection)");
    let floor_before = floor(&bed, &floor_ledger, objects, workers, 1).await?;
    println!("floor (store only: ledger lookup + marker PUT per object), before: {floor_before:.0} objects/s");

    for i in 0..objects {
        bed.pipelines.admit_item(&bed.pipeline, item(&bed, i)).context("no runtime")??;
    }
    bed.runtime.notify.notify_waiters();
    let path = format!("/v1/pipelines/{}/demo/leases", bed.namespace);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for token in tokens {
        let (addr, path) = (bed.addr, path.clone());
        tasks.spawn(async move {
            let mut connection = Connection::open(addr, &token).await?;
            let (mut leases, mut completions) = (Vec::new(), Vec::new());
            loop {
                let sent = Instant::now();
                let (status, lease) = connection.post(&format!("{path}?wait_seconds=0"), &json!({})).await?;
                match status {
                    204 => return anyhow::Ok((leases, completions, connection.reconnects)),
                    200 => leases.push(sent.elapsed().as_secs_f64() * 1000.0),
                    other => bail!("lease answered {other}: {lease}"),
                }
                let id = lease["lease_id"].as_str().context("lease without lease_id")?.to_owned();
                let sent = Instant::now();
                let (status, done) = connection.post(&format!("{path}/{id}/complete"), &json!({"outputs": []})).await?;
                ensure!(status == 200 && done["lease_held"] == true, "complete answered {status}: {done}");
                completions.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
        });
    }
    let (mut leases, mut completions, mut reconnects) = (Vec::new(), Vec::new(), 0);
    while let Some(done) = tasks.join_next().await {
        let (l, c, r) = done??;
        leases.extend(l);
        completions.extend(c);
        reconnects += r;
    }
    let elapsed = started.elapsed();
    ensure!(completions.len() == objects, "{} of {objects} objects completed", completions.len());
    let counts = bed.counts();
    ensure!(counts.pending == 0 && counts.in_flight == 0, "work left: {counts:?}");
    let floor_after = floor(&bed, &floor_ledger, objects, workers, 2).await?;

    let per_second = objects as f64 / elapsed.as_secs_f64();
    let floor_mean = (floor_before + floor_after) / 2.0;
    println!("floor, after: {floor_after:.0} objects/s");
    println!(
        "operator: {objects} objects in {:.2} s: {per_second:.0} objects/s = {:.0} leases+completions/s",
        elapsed.as_secs_f64(),
        2.0 * per_second
    );
    println!("connections the server closed and the workers reopened: {reconnects}");
    println!("{}", summary("lease latency     ", leases));
    println!("{}", summary("complete latency  ", completions));
    println!(
        "ratio operator / store floor (mean of before and after): {:.2} (before {:.2}, after {:.2})",
        per_second / floor_mean,
        per_second / floor_before,
        per_second / floor_after
    );
    Ok(())
}
