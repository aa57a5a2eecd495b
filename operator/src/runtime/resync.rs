//! Level-triggered safety net: each pipeline's source is compared with its ledger when this
//! replica takes it up, every `resyncInterval`, whenever its backlog overflowed and after a
//! re-drive, so objects whose notifications were lost (operator down, store down, sender down)
//! are still processed. One task for every pipeline, outside the reconcile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use zeroflow_core::backlog::Admitted;
use zeroflow_core::resync::{self, Admission, ResyncError};

use super::{Pipeline, Pipelines};

/// How often the task looks for pipelines that are due.
const TICK: Duration = Duration::from_secs(1);
/// After a failed pass, wait this long before trying that pipeline again.
const RETRY_FAILED: Duration = Duration::from_secs(30);

/// When a pipeline's next pass is due; owned by this module.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// The end of the last pass (successful, or failed and counted as done until a retry).
    last_pass: Option<Instant>,
    /// A pass was asked for outside the backlog (a re-drive).
    requested: bool,
}

impl Schedule {
    /// Asks for a pass at the next tick.
    pub fn request(&mut self) {
        self.requested = true;
    }
}

/// Why a pipeline is resynced now, or `None` when it is not due.
pub fn due(last: Option<Instant>, interval: Duration, asked: bool, now: Instant) -> Option<&'static str> {
    match last {
        None => Some("start-up"),
        Some(_) if asked => Some("backlog overflow or re-drive"),
        Some(at) if !interval.is_zero() && now.duration_since(at) >= interval => Some("interval"),
        Some(_) => None,
    }
}

/// Runs resync passes one at a time until the process stops.
pub async fn run(pipelines: Arc<Pipelines>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        for pipeline in pipelines.all() {
            let now = Instant::now();
            let (reason, interval) = {
                let mut state = pipeline.lock();
                // No store access yet (the controller has not resolved it): nothing to list.
                if state.access.is_none() {
                    continue;
                }
                let asked = state.backlog.take_resync_request() || std::mem::take(&mut state.resync.requested);
                let interval = state.settings.resync_interval;
                match due(state.resync.last_pass, interval, asked, now) {
                    Some(reason) => (reason, interval),
                    None => continue,
                }
            };
            let finished_at = match pass(&pipelines, &pipeline).await {
                Ok(()) => Instant::now(),
                Err(e) => {
                    warn!(pipeline = %pipeline.key, reason, error = %e, "resync failed");
                    // Retry sooner than the interval, but not in a hot loop.
                    Instant::now().checked_sub(interval.saturating_sub(RETRY_FAILED)).unwrap_or_else(Instant::now)
                }
            };
            pipeline.lock().resync.last_pass = Some(finished_at);
        }
    }
}

async fn pass(pipelines: &Pipelines, pipeline: &Pipeline) -> Result<(), ResyncError> {
    let (settings, Some(access)) = ({ pipeline.settings() }, pipeline.access()) else { return Ok(()) };
    let key = &pipeline.key;
    // The ledgers other pipelines keep in this bucket are never work.
    let mut filter = settings.source_filter.clone();
    filter.exclude.extend(pipelines.ledgers_in(&filter.bucket));
    let report =
        resync::resync(access.source_store.as_ref(), &filter, &access.ledger, settings.backfill_cutoff, |item| {
            let now = pipelines.now();
            match pipeline.lock().backlog.admit(item, now) {
                Ok(Admitted::New | Admitted::Superseded) => Admission::Queued,
                Ok(Admitted::Duplicate) => Admission::AlreadyQueued,
                Err(_) => Admission::Full,
            }
        })
        .await?;
    pipelines.metrics().resynced(key, report.took, report.discovered);
    if report.discovered > 0 {
        pipeline.notify.notify_waiters();
        pipelines.kick(key);
    }
    info!(
        pipeline = %key,
        listed = report.listed,
        discovered = report.discovered,
        already_done = report.already_done,
        complete = report.complete,
        took_ms = u64::try_from(report.took.as_millis()).unwrap_or(u64::MAX),
        "resync pass"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_is_resynced_when_taken_up() {
        assert_eq!(due(None, Duration::ZERO, false, Instant::now()), Some("start-up"));
    }

    #[test]
    fn the_interval_and_requests_trigger_later_passes() {
        let now = Instant::now();
        let minute_ago = now.checked_sub(Duration::from_secs(60)).expect("clock");
        assert_eq!(due(Some(minute_ago), Duration::from_secs(300), false, now), None);
        assert_eq!(due(Some(minute_ago), Duration::from_secs(30), false, now), Some("interval"));
        assert_eq!(due(Some(minute_ago), Duration::from_secs(300), true, now), Some("backlog overflow or re-drive"));
    }

    #[test]
    fn a_zero_interval_disables_periodic_passes_only() {
        let now = Instant::now();
        let long_ago = now.checked_sub(Duration::from_secs(3600)).expect("clock");
        assert_eq!(due(Some(long_ago), Duration::ZERO, false, now), None);
        assert_eq!(due(Some(long_ago), Duration::ZERO, true, now), Some("backlog overflow or re-drive"));
    }
}
