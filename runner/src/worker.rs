//! One worker loop: lease, prepare a private directory, run, upload, report, clean up. The
//! runner runs `concurrency` of these.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument as _;

use crate::Error;
use crate::api::{Client, Failure, Lease};
use crate::contract::{Contract, contract_env};
use crate::names::{safe_file_name, validate_output_name};
use crate::process::{self, Invocation, Outcome};
use crate::retry;

/// A result is reported for at least this long when the work API does not answer (a restart, a
/// leader change), even if the lease is shorter: a new leader accepts results for leases it did
/// not grant.
const MIN_REPORT_PATIENCE: Duration = Duration::from_secs(60);

/// Shared by all worker loops.
#[derive(Debug)]
pub struct Context {
    pub client: Client,
    pub contract: Contract,
    pub command: Vec<String>,
    pub timeout: Duration,
    pub work_dir: PathBuf,
    /// Prefix of this run's per-object directories: `<pod>-<start ms>-<pid>`, unique across
    /// restarts of the container and across runners sharing a work dir.
    pub tag: String,
    pub sequence: AtomicU64,
}

/// How many SIGTERMs arrived: 1 stops leasing, 2 aborts running objects.
pub type Shutdown = watch::Receiver<u32>;

async fn reached(mut shutdown: Shutdown, count: u32) {
    // A dropped sender means the runner is going away: treat it as reached.
    let _ = shutdown.wait_for(|n| *n >= count).await;
}

/// Leases and processes objects until the first SIGTERM.
pub async fn work(ctx: Arc<Context>, shutdown: Shutdown) {
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() >= 1 {
            return;
        }
        let lease = tokio::select! {
            lease = ctx.client.lease() => lease,
            () = reached(shutdown.clone(), 1) => return,
        };
        match lease {
            Ok(Some(lease)) => {
                failures = 0;
                let span = tracing::info_span!("object", lease = %lease.lease_id, attempt = lease.attempt);
                process_object(&ctx, lease, shutdown.clone()).instrument(span).await
            }
            Ok(None) => failures = 0,
            Err(e) => {
                failures += 1;
                // Backoff with jitter: after a leader change, workers come back spread out.
                let pause = retry::backoff(failures, retry::jitter());
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis(), "lease request failed");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = reached(shutdown.clone(), 1) => return,
                }
            }
        }
    }
}

/// What the work API is told about an object.
#[derive(Debug)]
enum Report {
    Complete(Vec<String>),
    Fail(Failure),
    /// The server said the lease is gone (expired, so the object may be another worker's now):
    /// nothing is reported, the server already decided.
    LeaseLost,
}

async fn process_object(ctx: &Context, lease: Lease, shutdown: Shutdown) {
    let started = std::time::Instant::now();
    tracing::info!(key = %lease.key, "leased");
    let (lost_tx, lost) = watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat(ctx.client.clone(), lease.clone(), lost_tx));
    let sequence = ctx.sequence.fetch_add(1, Ordering::Relaxed);
    let dir = ctx.work_dir.join(format!("{}-{sequence}", ctx.tag));
    let report = match run_object(ctx, &lease, &dir, shutdown, lost).await {
        Ok(report) => report,
        Err(e) => Report::Fail(Failure { retryable: true, stderr_tail: Some(e.to_string()), ..Failure::default() }),
    };
    heartbeat.abort();
    if let Err(e) = tokio::fs::remove_dir_all(&dir).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, dir = %dir.display(), "could not remove the object's directory");
    }
    let result = report_with_retries(ctx, &lease, &report).await;
    let seconds = started.elapsed().as_secs_f64();
    match (result, report) {
        (Ok(()), Report::Complete(outputs)) => {
            tracing::info!(outputs = outputs.len(), seconds, "completed")
        }
        (Ok(()), Report::Fail(f)) => {
            tracing::warn!(exit_code = ?f.exit_code, retryable = f.retryable, seconds, "failed")
        }
        (Ok(()), Report::LeaseLost) => tracing::warn!(seconds, "lease lost: the command was stopped"),
        // The lease expires on the server and the object is retried.
        (Err(e), _) => tracing::warn!(error = %e, "could not report the result"),
    }
}

/// Reports a result, trying again while the work API does not answer or asks to retry (a
/// restart or leader change under way), for as long as the lease lasts (at least a minute): a
/// result that is never reported lets the lease expire and the object run a second time.
async fn report_with_retries(ctx: &Context, lease: &Lease, report: &Report) -> Result<(), Error> {
    let give_up = std::time::Instant::now() + report_patience(lease);
    let mut attempt = 0u32;
    loop {
        let result = match report {
            Report::Complete(outputs) => ctx.client.complete(lease, outputs).await,
            Report::Fail(failure) => ctx.client.fail(lease, failure).await,
            Report::LeaseLost => Ok(()),
        };
        match result {
            Err(e) if retry::retryable_report(&e) && std::time::Instant::now() < give_up => {
                attempt += 1;
                let pause = retry::backoff(attempt, retry::jitter());
                tracing::warn!(error = %e, retry_in_ms = pause.as_millis(), "could not report the result; retrying");
                tokio::time::sleep(pause).await;
            }
            other => return other,
        }
    }
}

/// Renews the lease until aborted. A 410 means the lease expired or was finished: `lost` is set
/// so the command stops instead of working on an object that may be someone else's. Other
/// failures are retried soon, with backoff and jitter up to the heartbeat interval, so that a
/// new leader hears from this worker (and re-attaches its lease) within seconds of answering.
async fn heartbeat(client: Client, lease: Lease, lost: watch::Sender<bool>) {
    let every = Duration::from_secs(lease.heartbeat_interval_seconds.max(1));
    let mut failures = 0u32;
    loop {
        let pause = if failures == 0 { every } else { retry::backoff(failures, retry::jitter()).min(every) };
        tokio::time::sleep(pause).await;
        match client.heartbeat(&lease).await {
            Ok(()) => failures = 0,
            Err(Error::Status { status: 410, .. }) => {
                lost.send_replace(true);
                return;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(lease = %lease.lease_id, error = %e, "heartbeat failed");
            }
        }
    }
}

/// Resolves on a second SIGTERM or when the lease is lost.
async fn stop_signal(shutdown: Shutdown, mut lost: watch::Receiver<bool>) {
    let lease_lost = async move {
        // The sender is dropped only after setting `true` or when the object is over.
        if lost.wait_for(|lost| *lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = reached(shutdown, 2) => {}
        () = lease_lost => {}
    }
}

async fn run_object(
    ctx: &Context,
    lease: &Lease,
    dir: &Path,
    shutdown: Shutdown,
    lost: watch::Receiver<bool>,
) -> Result<Report, Error> {
    let input_dir = dir.join("in");
    let output_dir = dir.join("out");
    for d in [dir, &input_dir, &output_dir] {
        private_dir(d).await?;
    }
    let name = safe_file_name(&lease.key);
    let input = input_dir.join(&name);
    match ctx.client.download(&lease.input_url, &input).await {
        Ok(_) => {}
        // The object (revision) is gone: deleted, overwritten, or never written. Not the
        // transform's failure; the work API checks the store and skips it.
        Err(Error::Status { status: 404 | 412, body }) => {
            tracing::info!(key = %lease.key, "the input no longer exists");
            let tail = format!("[zeroflow-runner] the input no longer exists: {body}");
            return Ok(Report::Fail(Failure {
                retryable: true,
                stderr_tail: Some(tail),
                input_missing: true,
                ..Failure::default()
            }));
        }
        Err(e) => return Err(e),
    }

    let stdout = dir.join("stdout");
    let invocation = Invocation {
        argv: &ctx.command,
        env: contract_env(lease, &input, &output_dir),
        cwd: dir,
        stdin: (ctx.contract == Contract::Stdio).then_some(input.as_path()),
        stdout: (ctx.contract == Contract::Stdio).then_some(stdout.as_path()),
        timeout: ctx.timeout,
    };
    let failure = |exit_code, stderr_tail: String| {
        Report::Fail(Failure { retryable: true, exit_code, stderr_tail: Some(stderr_tail), ..Failure::default() })
    };
    let outcome = process::run(invocation, stop_signal(shutdown, lost.clone())).await?;
    if *lost.borrow() {
        return Ok(Report::LeaseLost);
    }
    match outcome {
        Outcome::Exited { code: Some(0), .. } => {}
        Outcome::Exited { code, stderr_tail } => return Ok(failure(code, stderr_tail)),
        Outcome::TimedOut { stderr_tail } => {
            let timeout = zeroflow_contract::duration::format_duration(ctx.timeout);
            let note = format!("\n[zeroflow-runner] killed after the {timeout} timeout");
            return Ok(failure(None, tail_with(stderr_tail, &note)));
        }
        Outcome::Aborted { stderr_tail } => {
            let tail = tail_with(stderr_tail, "\n[zeroflow-runner] stopped and handed back: the runner is stopping");
            return Ok(Report::Fail(Failure {
                retryable: true,
                stderr_tail: Some(tail),
                handed_back: true,
                ..Failure::default()
            }));
        }
    }

    let files = match ctx.contract {
        Contract::Stdio => vec![(name, stdout)],
        Contract::Exec => match output_files(&output_dir).await? {
            Ok(files) => files,
            // The transform wrote a name the server refuses: a retry would do the same.
            Err(message) => {
                return Ok(Report::Fail(Failure {
                    retryable: false,
                    exit_code: Some(0),
                    stderr_tail: Some(message),
                    ..Failure::default()
                }));
            }
        },
    };
    let mut names = Vec::with_capacity(files.len());
    for (name, path) in files {
        if !upload_with_retries(ctx, lease, &name, &path, &lost).await? {
            return Ok(Report::LeaseLost);
        }
        names.push(name);
    }
    Ok(Report::Complete(names))
}

/// Asks for an output's upload URL and uploads it, trying again while the work API or the
/// store does not answer or asks to retry (a leader change, a store restart), as results are
/// retried: the transform succeeded, and a transient error must not make it run again. Returns
/// `false` when the lease was lost meanwhile (the object may be someone else's now).
async fn upload_with_retries(
    ctx: &Context,
    lease: &Lease,
    name: &str,
    path: &Path,
    lost: &watch::Receiver<bool>,
) -> Result<bool, Error> {
    let give_up = std::time::Instant::now() + report_patience(lease);
    let mut attempt = 0u32;
    loop {
        if *lost.borrow() {
            return Ok(false);
        }
        let result = match ctx.client.output(lease, name).await {
            Ok(target) => ctx.client.upload(&target, path).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => return Ok(true),
            Err(e) if retry::retryable_report(&e) && std::time::Instant::now() < give_up => {
                attempt += 1;
                let pause = retry::backoff(attempt, retry::jitter());
                tracing::warn!(output = name, error = %e, retry_in_ms = pause.as_millis(), "could not upload an output; retrying");
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How long results and outputs are retried: as long as the lease lasts, at least a minute.
fn report_patience(lease: &Lease) -> Duration {
    Duration::from_secs(lease.lease_seconds).max(MIN_REPORT_PATIENCE)
}

fn tail_with(mut tail: String, note: &str) -> String {
    tail.push_str(note);
    crate::names::stderr_tail(tail.as_bytes())
}

async fn private_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = dir.to_owned();
    // create (not create_all): a leftover of the same name is an error, never reused.
    tokio::task::spawn_blocking(move || std::fs::DirBuilder::new().mode(0o700).create(&dir))
        .await
        .map_err(|e| Error::Io { what: "creating a work directory", source: std::io::Error::other(e) })?
        .map_err(|source| Error::Io { what: "creating a work directory", source })
}

/// The regular files at the top of the output directory, by name; `Err` names the first file
/// whose name the server would refuse. Symlinks and directories are not outputs.
async fn output_files(dir: &Path) -> Result<Result<Vec<(String, PathBuf)>, String>, Error> {
    let io = |source| Error::Io { what: "listing the outputs", source };
    let mut entries = tokio::fs::read_dir(dir).await.map_err(io)?;
    let mut files = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(io)? {
        if !entry.file_type().await.map_err(io)?.is_file() {
            continue;
        }
        let raw = entry.file_name();
        let Some(name) = raw.to_str() else {
            return Ok(Err(format!("output file name {raw:?} is not UTF-8")));
        };
        if let Err(e) = validate_output_name(name) {
            return Ok(Err(format!("output file {name:?}: {e}")));
        }
        files.push((name.to_owned(), entry.path()));
    }
    files.sort();
    Ok(Ok(files))
}

/// Removes the directories `<owner>-…` in `work_dir` (an earlier run's objects); returns how
/// many. Synchronous: it runs once, before any object.
pub fn remove_leftovers(work_dir: &Path, owner: &str) -> Result<usize, Error> {
    let io = |source| Error::Io { what: "removing leftover directories", source };
    let prefix = format!("{owner}-");
    let mut removed = 0;
    for entry in std::fs::read_dir(work_dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let ours = entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix));
        if ours && entry.file_type().map_err(io)?.is_dir() {
            std::fs::remove_dir_all(entry.path()).map_err(io)?;
            removed += 1;
        }
    }
    Ok(removed)
}
