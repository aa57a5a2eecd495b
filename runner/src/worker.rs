//! One worker loop: lease, process the object ([`object::process`] with the work API as its
//! [`Transfer`]), report, clean up. The runner runs `concurrency` of these.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument as _;

use crate::Error;
use crate::api::{Client, Lease};
use crate::object::{self, Fetched, Object, Report, Transfer, Transform};
use crate::retry;

/// A result is reported for at least this long when the work API does not answer (a restart, a
/// leader change), even if the lease is shorter: a new leader accepts results for leases it did
/// not grant.
const MIN_REPORT_PATIENCE: Duration = Duration::from_secs(60);

/// Shared by all worker loops.
#[derive(Debug)]
pub struct Context {
    pub client: Client,
    pub transform: Transform,
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

/// The work API as an object's [`Transfer`]: presigned GET and PUTs, and the lease's heartbeat
/// telling whether the object is still ours.
struct LeaseTransfer<'a> {
    client: &'a Client,
    lease: &'a Lease,
    /// Set by the heartbeat when the server says the lease is gone (410).
    lost: watch::Receiver<bool>,
}

impl Transfer for LeaseTransfer<'_> {
    async fn fetch(&self, file: &Path) -> Result<Fetched, Error> {
        match self.client.download(&self.lease.input_url, file).await {
            Ok(_) => Ok(Fetched::Input),
            Err(Error::Status { status: 404 | 412, body }) => Ok(Fetched::Missing(body)),
            Err(e) => Err(e),
        }
    }

    async fn store(&self, name: &str, file: &Path) -> Result<(), Error> {
        let target = self.client.output(self.lease, name).await?;
        self.client.upload(&target, file).await
    }

    fn held(&self) -> bool {
        !*self.lost.borrow()
    }
}

async fn process_object(ctx: &Context, lease: Lease, shutdown: Shutdown) {
    let started = std::time::Instant::now();
    tracing::info!(key = %lease.key, "leased");
    let (lost_tx, lost) = watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat(ctx.client.clone(), lease.clone(), lost_tx));
    let sequence = ctx.sequence.fetch_add(1, Ordering::Relaxed);
    let dir = ctx.work_dir.join(format!("{}-{sequence}", ctx.tag));
    let transfer = LeaseTransfer { client: &ctx.client, lease: &lease, lost: lost.clone() };
    let report =
        object::process(&ctx.transform, &Object::from(&lease), &transfer, &dir, stop_signal(shutdown, lost)).await;
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
            tracing::warn!(exit_code = ?f.exit_code(), retryable = f.retryable(), seconds, "failed")
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
    let patience = Duration::from_secs(lease.lease_seconds).max(MIN_REPORT_PATIENCE);
    let give_up = std::time::Instant::now() + patience;
    let mut attempt = 0u32;
    loop {
        let result = match report {
            Report::Complete(outputs) => ctx.client.complete(lease, outputs).await,
            Report::Fail(failure) => ctx.client.fail(lease, failure).await,
            Report::LeaseLost => Ok(()),
        };
        match result {
            Err(e) if retry::retryable(&e) && std::time::Instant::now() < give_up => {
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
