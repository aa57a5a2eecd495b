//! The chaos run (issue #14): several pipelines on the testbed's MinIO, objects uploaded the whole
//! time (some overwritten, some deleted at once, some failing or hanging on purpose), while a
//! seeded fault schedule kills operator leaders, worker pods, runners, and restarts MinIO and the
//! apiserver. At the end it checks the history ([`history::check`]) and prints one summary line.
//!
//! Everything is real: the testbed's apiserver and MinIO, `zeroflow-operator` processes (two
//! replicas at all times, leader election in the test namespace), and one `zeroflow-runner` per
//! Running worker pod ([`crate::workers::HostWorkers`]). The run binds MinIO's webhook address:
//! hold [`crate::pipelines::WEBHOOK`]. It restarts the shared MinIO and apiserver, so nothing
//! else may use the testbed meanwhile (`e2e/test-all` runs test binaries one at a time).

pub mod history;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use futures::TryStreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt as _;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde_json::json;
use zeroflow_core::ledger::{Marker, parse_marker_name};
use zeroflow_operator::api::DataPipeline;
use zeroflow_operator::store::bucket_client;

use crate::pipelines::Buckets;
use crate::workers::HostWorkers;
use crate::{Operator, TIMEOUT, TestNamespace, client, eventually, free_port, mc};
use history::{FinalRevision, Inputs, Interruption, SeenMarker, Verdict};
use schedule::{Fault, FaultKind, FaultRates, ObjectKind, Rng};

/// One pipeline of the run: its own prefix in the shared source bucket, contract, scaling and
/// timeout.
#[derive(Debug, Clone, Copy)]
pub struct PipelinePlan {
    pub name: &'static str,
    pub contract: &'static str,
    pub max_replicas: i32,
    pub concurrency: i32,
    pub timeout_seconds: u64,
    pub max_attempts: i32,
    /// How long the transform works on each object (keeps workers busy while faults hit).
    pub work: &'static str,
    /// Bound to MinIO's webhook target with a queue dir (events survive a gateway outage);
    /// otherwise to the queue-less one, so only the periodic resync finds what a leader change
    /// dropped (the notification gap).
    pub queued: bool,
    /// Gets objects that hang past the timeout.
    pub hangs: bool,
    pub resync_interval: &'static str,
}

/// The three pipelines: exec with two slots per worker, stdio with a short timeout for the hangs,
/// and exec on the queue-less target with a short resync.
pub const PIPELINES: [PipelinePlan; 3] = [
    PipelinePlan {
        name: "a",
        contract: "exec",
        max_replicas: 3,
        concurrency: 2,
        timeout_seconds: 30,
        max_attempts: 3,
        work: "0.3",
        queued: true,
        hangs: false,
        resync_interval: "60s",
    },
    PipelinePlan {
        name: "b",
        contract: "stdio",
        max_replicas: 2,
        concurrency: 2,
        timeout_seconds: 4,
        max_attempts: 2,
        work: "0.2",
        queued: true,
        hangs: true,
        resync_interval: "60s",
    },
    PipelinePlan {
        name: "c",
        contract: "exec",
        max_replicas: 2,
        concurrency: 1,
        timeout_seconds: 20,
        max_attempts: 3,
        work: "0.3",
        queued: false,
        hangs: false,
        resync_interval: "10s",
    },
];

/// How long and how hard.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    /// Uploads run this long; faults stop `quiet` before its end.
    pub length: Duration,
    pub quiet: Duration,
    /// Objects uploaded per second (over all pipelines).
    pub objects_per_second: f64,
    pub rates: FaultRates,
    /// How long everything may take to drain after the uploads stop.
    pub drain_timeout: Duration,
    /// The operators' `--backlog-capacity`: small, so bursts (MinIO's queue replayed after a
    /// leader change, a resync) overflow it and the overflow's resync must find the rest.
    pub backlog_capacity: u32,
}

impl ChaosConfig {
    /// The CI schedule: 3 minutes, about 650 objects, every fault kind at least once.
    pub fn short(seed: u64) -> Self {
        Self {
            seed,
            length: Duration::from_secs(180),
            quiet: Duration::from_secs(20),
            objects_per_second: 3.6,
            rates: FaultRates::standard(),
            drain_timeout: Duration::from_secs(300),
            backlog_capacity: 8,
        }
    }

    /// The benchmark's schedule: `minutes` long, the same rates, more objects per second.
    pub fn long(seed: u64, minutes: u64) -> Self {
        Self {
            length: Duration::from_secs(minutes * 60),
            quiet: Duration::from_secs(30),
            objects_per_second: 5.0,
            ..Self::short(seed)
        }
    }
}

/// The seed: `ZF_CHAOS_SEED` when set (to replay a run), else from the clock.
pub fn seed_from_env() -> u64 {
    std::env::var("ZF_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| u64::from(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())))
}

/// What a run found, for the test's assertions and the benchmark's figures.
#[derive(Debug)]
pub struct Report {
    pub verdict: Verdict,
    pub summary: String,
    /// Faults injected, by kind.
    pub injected: BTreeMap<FaultKind, usize>,
    /// Deployments not back at zero replicas after the drain: (pipeline, replicas).
    pub not_at_zero: Vec<(String, i32)>,
    /// Objects of the queue-less pipeline uploaded while no gateway listened.
    pub gap_objects: usize,
    /// Notifications refused for a full backlog, over every leader.
    pub overloaded: f64,
    /// Whether everything drained (every existing revision got its marker) within the timeout.
    pub drained: bool,
}

fn unix_ns(at: SystemTime) -> u128 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn now_ns() -> u128 {
    unix_ns(SystemTime::now())
}

/// The transform: logs `start`/`end` lines to the run log, hangs on `hang` keys, fails on `fail`
/// keys, else writes the deterministic output ([`schedule::expected_output`]).
const TRANSFORM: &str = r#"#!/bin/sh
# chaos transform: $1 pipeline, $2 run log, $3 contract (exec|stdio), $4 seconds of work
p=$1 log=$2 contract=$3 work=$4
etag=$(printf %s "$ZEROFLOW_ETAG" | tr -d '"')
echo "start $p $ZEROFLOW_KEY $etag $ZEROFLOW_POD_NAME $(date +%s%N)" >> "$log"
sleep "$work"
case $ZEROFLOW_KEY in
  *hang*) sleep 600 ;;
  *fail*) echo "end $p $ZEROFLOW_KEY $etag $ZEROFLOW_POD_NAME $(date +%s%N) fail" >> "$log"
          echo "failing on purpose" >&2; exit 3 ;;
esac
if [ "$contract" = stdio ]; then
  printf 'pipeline=%s\n' "$p"; tr a-z A-Z
else
  { printf 'pipeline=%s\n' "$p"; tr a-z A-Z < "$ZEROFLOW_INPUT"; } > "$ZEROFLOW_OUTPUT_DIR/out.txt"
fi
echo "end $p $ZEROFLOW_KEY $etag $ZEROFLOW_POD_NAME $(date +%s%N) ok" >> "$log"
"#;

/// Two operator replicas at all times; a replaced one gets the next identity.
struct Replicas {
    ns: String,
    lease_addr: String,
    token_file: PathBuf,
    running: Vec<Operator>,
    next: usize,
    /// Unplanned exits (e.g. a leader that lost its lease while the apiserver was down).
    exits: Vec<(String, u128)>,
    /// When each replica was first seen leading: (identity, unix ns, rss KiB, threads).
    took_over: Vec<(String, u128, u64, u64)>,
    backlog_capacity: String,
    /// Counters summed over every leader, scraped before it is killed and at the end.
    totals: Counters,
}

/// Counters of the operators' /metrics that the summary reports, summed over leaders.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    /// Notifications refused because a backlog was full.
    overloaded: f64,
    /// Objects a resync found that no notification had brought.
    resync_discovered: f64,
}

impl Counters {
    fn add(&mut self, metrics: &str) {
        self.overloaded += sum_series(metrics, "zeroflow_events_received_total{", "outcome=\"overloaded\"");
        self.resync_discovered += sum_series(metrics, "zeroflow_resync_discovered_total", "");
    }
}

/// The sum of the series of `name` (a prefix of the line) whose labels contain `label`.
fn sum_series(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Replicas {
    async fn start(&mut self) -> anyhow::Result<()> {
        let identity = format!("op-{}", self.next);
        self.next += 1;
        let webhook = std::env::var("ZF_WEBHOOK_ADDR")?;
        let lease_url = format!("http://{}", self.lease_addr);
        let token = self.token_file.to_str().context("utf-8 path")?.to_owned();
        let flags = [
            "--gateway-addr",
            webhook.as_str(),
            "--gateway-token-file",
            &token,
            "--work-api-addr",
            &self.lease_addr,
            "--work-api-url",
            &lease_url,
            "--backlog-capacity",
            &self.backlog_capacity,
        ];
        self.running.push(Operator::start_with(&self.ns, &identity, &flags).await?);
        Ok(())
    }

    async fn leader(&self) -> Option<usize> {
        for (i, op) in self.running.iter().enumerate() {
            if op.readyz().await == Some(200) {
                return Some(i);
            }
        }
        None
    }

    /// Replaces replicas that exited on their own, and notes a new leader's footprint.
    async fn supervise(&mut self) -> anyhow::Result<()> {
        let mut i = 0;
        while i < self.running.len() {
            if let Ok(Some(status)) = self.running[i].child.try_wait() {
                let gone = self.running.remove(i);
                eprintln!("chaos: operator {} exited on its own ({status})", gone.identity);
                self.exits.push((gone.identity.clone(), now_ns()));
                self.start().await?;
            } else {
                i += 1;
            }
        }
        if let Some(i) = self.leader().await {
            let op = &self.running[i];
            if !self.took_over.iter().any(|(id, ..)| *id == op.identity) {
                let (rss, threads) = footprint(op.child.id());
                self.took_over.push((op.identity.clone(), now_ns(), rss, threads));
            }
        }
        Ok(())
    }
}

/// VmRSS (KiB) and Threads of a process, from /proc (0 when gone).
fn footprint(pid: Option<u32>) -> (u64, u64) {
    let text = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok()).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("Threads:"))
}

/// `pid` and all its descendants, from /proc (children first looked up, then signalled, so the
/// tree is known before anything is reparented).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after its closing paren.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.entry(ppid).or_default().push(child);
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        tree.extend(parents.get(&tree[i]).into_iter().flatten().copied());
        i += 1;
    }
    tree
}

async fn sigkill(pids: &[u32]) {
    let args: Vec<String> = std::iter::once("-KILL".to_owned()).chain(pids.iter().map(u32::to_string)).collect();
    // Some may have exited since the scan: kill's complaints about them are expected.
    let _ = tokio::process::Command::new("kill").args(&args).stderr(std::process::Stdio::null()).status().await;
}

/// The testbed script, for `restart`.
fn testbed_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testbed")
}

async fn restart(component: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(testbed_script()).args(["restart", component]).output().await?;
    anyhow::ensure!(out.status.success(), "testbed restart {component}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Retries `op` until it succeeds (the store may be restarting), for at most two minutes.
async fn retried<F, Fut>(what: &str, mut op: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match op().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.context(format!("{what}: gave up after 2 minutes"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// What the uploader did: per key, the upload times of the revisions (unix ns), by pipeline.
#[derive(Debug, Default)]
struct Uploads {
    /// (pipeline, key, kind, unix ns of the first upload)
    objects: Vec<(String, String, ObjectKind, u128)>,
}

async fn put(store: &AmazonS3, key: &str, content: String) -> anyhow::Result<()> {
    let path = Path::parse(key)?;
    retried(key, || {
        let (path, content, store) = (path.clone(), content.clone(), store.clone());
        async move {
            store.put(&path, PutPayload::from(content.into_bytes())).await?;
            Ok(())
        }
    })
    .await
}

/// Uploads for `length` at `rate` objects per second, spread over the pipelines.
async fn upload_all(
    store: AmazonS3,
    seed: u64,
    length: Duration,
    rate: f64,
    uploads: Arc<Mutex<Uploads>>,
) -> anyhow::Result<()> {
    let mut rng = Rng::new(seed ^ 0x05EE_D0B1_EC75);
    let started = Instant::now();
    let total = (length.as_secs_f64() * rate) as usize;
    let mut later = Vec::new();
    for n in 0..total {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let plan = PIPELINES[rng.below(PIPELINES.len() as u64) as usize];
        let kind = schedule::object_kind(&mut rng, plan.hangs);
        let key = schedule::object_key(&format!("{}/", plan.name), n, kind);
        put(&store, &key, schedule::object_content(&key, 1)).await?;
        uploads.lock().unwrap_or_else(PoisonError::into_inner).objects.push((
            plan.name.to_owned(),
            key.clone(),
            kind,
            now_ns(),
        ));
        match kind {
            ObjectKind::Deleted => {
                let path = Path::parse(&key)?;
                retried(&key, || {
                    let (path, store) = (path.clone(), store.clone());
                    async move {
                        match store.delete(&path).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                            Err(e) => Err(e.into()),
                        }
                    }
                })
                .await?;
            }
            ObjectKind::Overwritten => {
                // Overwritten a moment later, often while the first revision is being processed.
                let delay = rng.between(Duration::from_millis(100), Duration::from_secs(4));
                let store = store.clone();
                later.push(tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    put(&store, &key, schedule::object_content(&key, 2)).await
                }));
            }
            _ => {}
        }
    }
    for task in later {
        task.await??;
    }
    Ok(())
}

/// The pipeline's DataPipeline spec additions.
fn pipeline_extra(plan: &PipelinePlan, script: &FsPath, runs: &FsPath) -> anyhow::Result<serde_json::Value> {
    let command = [
        "sh",
        script.to_str().context("utf-8 path")?,
        plan.name,
        runs.to_str().context("utf-8 path")?,
        plan.contract,
        plan.work,
    ];
    Ok(json!({
        "source": {"resyncInterval": plan.resync_interval},
        "sink": {"prefix": format!("out-{}/", plan.name)},
        "transform": {"image": "example.org/t:1", "command": command, "contract": plan.contract,
                      "timeout": format!("{}s", plan.timeout_seconds)},
        "scaling": {"maxReplicas": plan.max_replicas, "targetPerReplica": 2, "concurrencyPerReplica": plan.concurrency,
                    "idleTimeout": "5s", "scaleDownStabilization": "0s"},
        "delivery": {"maxAttempts": plan.max_attempts, "leaseDuration": "15s", "retryBackoff": "1s"}
    }))
}

/// Binds each pipeline's prefix of the source bucket to its webhook target (retried: MinIO
/// refuses while it believes the target offline).
async fn notify(source: &str) -> anyhow::Result<()> {
    let alias = std::env::var("ZF_MC_ALIAS")?;
    let target = format!("{alias}/{source}");
    for plan in PIPELINES {
        let arn = std::env::var(if plan.queued { "ZF_WEBHOOK_ARN" } else { "ZF_WEBHOOK_ARN_NO_QUEUE" })?;
        let prefix = format!("{}/", plan.name);
        eventually("mc event add", TIMEOUT, || async {
            Ok(mc(&["event", "add", &target, &arn, "--event", "put", "--prefix", &prefix]).await.ok())
        })
        .await?;
    }
    Ok(())
}

/// Ledger marker paths of `pipeline` that exist now, as (key, etag).
async fn marker_names(sink: &AmazonS3, ns: &str, pipeline: &str) -> anyhow::Result<Vec<(String, String, Path)>> {
    let root = format!(".zeroflow/ledger/{ns}/{pipeline}/k/");
    let listed: Vec<_> = sink.list(Some(&Path::parse(&root)?)).try_collect().await?;
    Ok(listed
        .into_iter()
        .filter_map(|meta| {
            let name = parse_marker_name(meta.location.as_ref().strip_prefix(&root)?)?;
            Some((name.key, name.etag, meta.location))
        })
        .collect())
}

/// The objects in the source bucket now: (pipeline, key, etag).
async fn existing(source: &AmazonS3) -> anyhow::Result<Vec<(String, String, String)>> {
    let listed: Vec<_> = source.list(None).try_collect().await?;
    Ok(listed
        .into_iter()
        .filter_map(|meta| {
            let key = meta.location.to_string();
            let pipeline = key.split_once('/')?.0.to_owned();
            Some((pipeline, key, meta.e_tag?.trim_matches('"').to_owned()))
        })
        .collect())
}

/// Revisions that exist and have no marker yet.
async fn unfinished(source: &AmazonS3, sink: &AmazonS3, ns: &str) -> anyhow::Result<usize> {
    let mut done = BTreeSet::new();
    for plan in PIPELINES {
        for (key, etag, _) in marker_names(sink, ns, plan.name).await? {
            done.insert((plan.name.to_owned(), key, etag));
        }
    }
    Ok(existing(source).await?.into_iter().filter(|r| !done.contains(r)).count())
}

async fn read(store: &AmazonS3, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    match store.get(&Path::parse(key)?).await {
        Ok(got) => Ok(Some(got.bytes().await?.to_vec())),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn figure(durations: &[Duration]) -> String {
    if durations.is_empty() {
        return "-".into();
    }
    let mut sorted = durations.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    format!("{:.1}s/{:.1}s", median.as_secs_f64(), sorted[sorted.len() - 1].as_secs_f64())
}

/// Runs the chaos schedule and checks the history. Errors only when the run itself cannot go on
/// (the testbed is missing, a restart fails); what the history shows is in the [`Report`].
pub async fn run(config: &ChaosConfig) -> anyhow::Result<Report> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-chaos").await?;
    let buckets = Buckets::create(&client, &ns, "chaos").await?;
    let scratch = std::env::temp_dir().join(format!("zf-chaos-{}", ns.name));
    std::fs::create_dir_all(&scratch)?;
    let script = scratch.join("transform.sh");
    std::fs::write(&script, TRANSFORM)?;
    let runs = scratch.join("runs.log");
    std::fs::write(&runs, "")?;
    let token_file = scratch.join("gateway-token");
    std::fs::write(&token_file, std::env::var("ZF_WEBHOOK_TOKEN")?)?;

    let plan = schedule::faults(config.seed, config.length, config.quiet, &config.rates);
    println!(
        "chaos: seed {} (replay with ZF_CHAOS_SEED={}), {} s of uploads at {}/s",
        config.seed,
        config.seed,
        config.length.as_secs(),
        config.objects_per_second
    );
    for fault in &plan {
        println!("chaos: plan t={:>6.1}s {}", fault.at.as_secs_f64(), fault.kind);
    }

    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    let mut timeouts = HashMap::new();
    for p in &PIPELINES {
        let spec = buckets.pipeline(p.name, &format!("{}/", p.name), pipeline_extra(p, &script, &runs)?)?;
        pipelines.create(&PostParams::default(), &spec).await?;
        timeouts.insert(p.name.to_owned(), Duration::from_secs(p.timeout_seconds));
    }
    let mut replicas = Replicas {
        ns: ns.name.clone(),
        lease_addr: format!("127.0.0.1:{}", free_port()?),
        token_file,
        running: Vec::new(),
        next: 0,
        exits: Vec::new(),
        took_over: Vec::new(),
        backlog_capacity: config.backlog_capacity.to_string(),
        totals: Counters::default(),
    };
    replicas.start().await?;
    replicas.running[0].wait_ready(TIMEOUT).await?;
    replicas.start().await?;
    notify(&buckets.source).await?;
    let workers: Vec<HostWorkers> =
        PIPELINES.iter().map(|p| HostWorkers::start(client.clone(), &ns.name, p.name)).collect::<Result<_, _>>()?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let store = crate::store_config()?;
    let (source, sink) = (bucket_client(&store, &buckets.source)?, bucket_client(&store, &buckets.sink)?);
    replicas.supervise().await?;

    // The run: uploads in the background, faults on schedule, replicas supervised between them.
    let uploads = Arc::new(Mutex::new(Uploads::default()));
    let started = Instant::now();
    let uploader = tokio::spawn(upload_all(
        source.clone(),
        config.seed,
        config.length,
        config.objects_per_second,
        uploads.clone(),
    ));
    let mut injected: Vec<(FaultKind, u128)> = Vec::new();
    let mut interruptions = Vec::new();
    let mut deleted_pods = BTreeSet::new();
    let mut gaps: Vec<(u128, u128)> = Vec::new();
    for fault in &plan {
        while started.elapsed() < fault.at {
            replicas.supervise().await?;
            tokio::time::sleep(Duration::from_millis(500).min(fault.at.saturating_sub(started.elapsed()))).await;
        }
        let t = started.elapsed().as_secs_f64();
        let what = inject(fault, &mut replicas, &workers, &pods, &mut deleted_pods, &mut interruptions).await?;
        // Recovery counts from the end of the fault's action: the kill, or the component back
        // up after a restart (a leader still completes objects while it is being looked up).
        let at = now_ns();
        println!("chaos: t={t:>6.1}s {} {what}", fault.kind);
        if fault.kind == FaultKind::LeaderKill && what.starts_with("killed ") {
            // The gap lasts until a replica leads again.
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                replicas.supervise().await?;
                if replicas.leader().await.is_some() {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "no new leader 90 s after killing the old one");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            gaps.push((at, now_ns()));
        }
        if !what.starts_with("skipped") {
            injected.push((fault.kind, at));
        }
    }
    while !uploader.is_finished() {
        replicas.supervise().await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    uploader.await??;
    println!("chaos: uploads done after {:.0} s; draining", started.elapsed().as_secs_f64());

    // Drain: every revision that exists gets its marker, then every pipeline goes back to zero.
    let drain_started = Instant::now();
    let mut drained = false;
    while drain_started.elapsed() < config.drain_timeout {
        replicas.supervise().await?;
        match unfinished(&source, &sink, &ns.name).await {
            Ok(0) => {
                drained = true;
                break;
            }
            Ok(n) => eprintln!("chaos: {n} revisions without a marker yet"),
            Err(e) => eprintln!("chaos: listing: {e:#}"),
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let zero = eventually("every pipeline back to zero", Duration::from_secs(90), || async {
        let mut at = Vec::new();
        for p in PIPELINES {
            let d = deployments.get(&format!("{}-worker", p.name)).await?;
            at.push((p.name.to_owned(), d.spec.and_then(|s| s.replicas).unwrap_or(-1)));
        }
        Ok(at.iter().all(|(_, r)| *r == 0).then_some(()))
    })
    .await;
    let mut not_at_zero = Vec::new();
    if zero.is_err() {
        for p in PIPELINES {
            let replicas =
                deployments.get(&format!("{}-worker", p.name)).await?.spec.and_then(|s| s.replicas).unwrap_or(-1);
            if replicas != 0 {
                not_at_zero.push((p.name.to_owned(), replicas));
            }
        }
    }

    // The history.
    let mut revisions = Vec::new();
    for (_, key, etag) in existing(&source).await? {
        let pipeline = key.split_once('/').map(|(p, _)| p.to_owned()).unwrap_or_default();
        let content = read(&source, &key).await?.unwrap_or_default();
        revisions.push(FinalRevision { id: (pipeline, key, etag), content });
    }
    let mut markers = Vec::new();
    for plan in PIPELINES {
        for (key, etag, path) in marker_names(&sink, &ns.name, plan.name).await? {
            let bytes = sink.get(&path).await?.bytes().await?;
            let marker: Marker = serde_json::from_slice(&bytes).with_context(|| format!("marker {path}"))?;
            let mut outputs = Vec::new();
            for output in &marker.outputs {
                outputs.push((output.clone(), read(&sink, output).await?));
            }
            let finished_at_ns = u128::try_from(marker.finished_at.timestamp_nanos_opt().unwrap_or(0)).unwrap_or(0);
            markers.push(SeenMarker {
                id: (plan.name.to_owned(), key, etag),
                outcome: marker.outcome,
                finished_at_ns,
                outputs,
            });
        }
    }
    let mut terminations = Vec::new();
    let mut restarts = 0;
    for w in &workers {
        terminations.extend(w.terminations().into_iter().map(|(pod, at)| (pod, unix_ns(at))));
        restarts += w.restarts();
    }
    let inputs = Inputs {
        runs: history::parse_runs(&std::fs::read_to_string(&runs)?)?,
        revisions,
        markers,
        interruptions,
        terminations,
        deleted_pods,
        timeouts,
    };
    let verdict = history::check(&inputs);

    // The figures.
    let completions: Vec<u128> = inputs.markers.iter().map(|m| m.finished_at_ns).collect();
    let recoveries = history::recoveries(&injected, &completions);
    let uploaded = uploads.lock().unwrap_or_else(PoisonError::into_inner).objects.clone();
    let gap_objects = uploaded
        .iter()
        .filter(|(p, ..)| PIPELINES.iter().any(|plan| plan.name == p && !plan.queued))
        .filter(|(.., at)| gaps.iter().any(|(from, to)| at >= from && at <= to))
        .count();
    let mut kinds: BTreeMap<ObjectKind, usize> = BTreeMap::new();
    for (_, _, kind, _) in &uploaded {
        *kinds.entry(*kind).or_default() += 1;
    }
    let mut counts: BTreeMap<FaultKind, usize> = BTreeMap::new();
    for (kind, _) in &injected {
        *counts.entry(*kind).or_default() += 1;
    }
    let leader = replicas.leader().await.map(|i| &replicas.running[i]);
    let mut totals = replicas.totals;
    if let Some(op) = leader {
        totals.add(&op.metrics().await.unwrap_or_default());
    }
    let footprint_line = match leader {
        Some(op) => {
            let (rss, threads) = footprint(op.child.id());
            let metrics = op.metrics().await.unwrap_or_default();
            let series = |name: &str| {
                metrics
                    .lines()
                    .find(|l| l.starts_with(name))
                    .and_then(|l| l.rsplit(' ').next())
                    .unwrap_or("?")
                    .to_owned()
            };
            let before = replicas.took_over.iter().find(|(id, ..)| *id == op.identity);
            format!(
                "leader {} rss {} KiB at takeover -> {rss} KiB after drain, threads {} -> {threads}, open fds {}",
                op.identity,
                before.map_or(0, |b| b.2),
                before.map_or(0, |b| b.3),
                series("process_open_fds")
            )
        }
        None => "no leader at the end".into(),
    };
    let faults_text: Vec<String> =
        FaultKind::ALL.iter().map(|k| format!("{k}={}", counts.get(k).unwrap_or(&0))).collect();
    let recovery_text: Vec<String> = recoveries.iter().map(|(k, d)| format!("{k}={}", figure(d))).collect();
    let summary = format!(
        "chaos summary: seed={} objects={} (plain={} overwritten={} deleted={} fail={} hang={}) revisions_checked={} \
         succeeded={} failed={} transform_runs={} faults: {} notification_gap={} (objects_in_gaps={gap_objects}) \
         backlog_overflow={} (capacity {}; resync_discovered={}) \
         operator_exits={} runner_restarts={restarts} lost={} redone_after_completion={} rerun_after_success={} \
         rerun_excused_by_kill={} busy_stopped_by_scale_down={} bad_outputs={} wrong_outcome={} drained={drained} \
         drain_s={drain_seconds:.0} not_at_zero={not_at_zero:?} recovery_to_next_completion(median/max): {} | {footprint_line}",
        config.seed,
        uploaded.len(),
        kinds.get(&ObjectKind::Plain).unwrap_or(&0),
        kinds.get(&ObjectKind::Overwritten).unwrap_or(&0),
        kinds.get(&ObjectKind::Deleted).unwrap_or(&0),
        kinds.get(&ObjectKind::Fail).unwrap_or(&0),
        kinds.get(&ObjectKind::Hang).unwrap_or(&0),
        verdict.revisions,
        verdict.succeeded,
        verdict.failed,
        verdict.transform_runs,
        faults_text.join(" "),
        gaps.len(),
        totals.overloaded,
        config.backlog_capacity,
        totals.resync_discovered,
        replicas.exits.len(),
        verdict.lost.len(),
        verdict.redone_after_completion.len(),
        verdict.rerun_after_success.len(),
        verdict.rerun_excused,
        verdict.busy_terminated.len(),
        verdict.bad_outputs.len(),
        verdict.wrong_outcome.len(),
        recovery_text.join(" "),
    );
    println!("{summary}");
    for failure in verdict.failures().iter().take(40) {
        println!("chaos: FAILURE {failure}");
    }
    if verdict.failures().is_empty()
        && drained
        && not_at_zero.is_empty()
        && std::env::var_os("ZF_KEEP_NAMESPACES").is_none()
    {
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        println!("chaos: run log and transform kept in {}; operator logs in $ZF_TESTBED_STATE", scratch.display());
    }
    Ok(Report { verdict, summary, injected: counts, not_at_zero, gap_objects, overloaded: totals.overloaded, drained })
}

/// Injects one fault; says what it did (`skipped ...` when there was nothing to hit).
async fn inject(
    fault: &Fault,
    replicas: &mut Replicas,
    workers: &[HostWorkers],
    pods: &Api<Pod>,
    deleted_pods: &mut BTreeSet<String>,
    interruptions: &mut Vec<Interruption>,
) -> anyhow::Result<String> {
    match fault.kind {
        FaultKind::LeaderKill => {
            // After an apiserver restart the leader may have exited (it lost its lease) and the
            // next one not be elected yet: wait for it rather than skip this kill.
            let deadline = Instant::now() + Duration::from_secs(60);
            let i = loop {
                replicas.supervise().await?;
                if let Some(i) = replicas.leader().await {
                    break i;
                }
                if Instant::now() > deadline {
                    return Ok("skipped (no leader for 60 s)".into());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let mut leader = replicas.running.remove(i);
            replicas.totals.add(&leader.metrics().await.unwrap_or_default());
            leader.kill().await?;
            replicas.start().await?;
            Ok(format!("killed {}", leader.identity))
        }
        FaultKind::PodDelete => {
            let listed = pods.list(&ListParams::default().labels("app.kubernetes.io/component=worker")).await?.items;
            let running: Vec<_> = listed
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .collect();
            if running.is_empty() {
                return Ok("skipped (no running worker pod)".into());
            }
            let pod = running[(fault.pick % running.len() as u64) as usize].name_any();
            deleted_pods.insert(pod.clone());
            pods.delete(&pod, &DeleteParams::default()).await?;
            // The runner finishes its runs and reports within the pod's grace period, but KWOK
            // removes the pod object at once (a force delete, see `Interruption::deleted`): a
            // leader that has not cached its token refuses the reports, and a finished run's
            // result dies with the pod, as after a kill. Seen with seed 879455520 (the leader
            // killed at t=45.0 s, the pod deleted at t=47.1 s) and 823225790 (deleted at
            // t=104.9 s, the leader killed at t=105.0 s, a run leased in between).
            interruptions.push(Interruption { pod: Some(pod.clone()), at_ns: now_ns(), deleted: true });
            Ok(format!("deleted {pod}"))
        }
        FaultKind::RunnerKill => {
            let running: Vec<(usize, String)> =
                workers.iter().enumerate().flat_map(|(i, w)| w.running().into_iter().map(move |p| (i, p))).collect();
            if running.is_empty() {
                return Ok("skipped (no runner)".into());
            }
            let (i, pod) = &running[(fault.pick % running.len() as u64) as usize];
            let Some(pid) = workers[*i].pid(pod) else { return Ok("skipped (runner just ended)".into()) };
            let tree = process_tree(pid);
            sigkill(&tree).await;
            interruptions.push(Interruption { pod: Some(pod.clone()), at_ns: now_ns(), deleted: false });
            Ok(format!("killed the runner of {pod} and {} transform process(es)", tree.len() - 1))
        }
        FaultKind::MinioRestart => {
            let started = Instant::now();
            restart("minio").await?;
            Ok(format!("restarted in {:.1} s", started.elapsed().as_secs_f64()))
        }
        FaultKind::ApiserverRestart => {
            let started = Instant::now();
            restart("kube-apiserver").await?;
            Ok(format!("restarted in {:.1} s", started.elapsed().as_secs_f64()))
        }
    }
}
