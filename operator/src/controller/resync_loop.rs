//! Level-triggered safety net: each pipeline's source is compared with its ledger at start-up,
//! every `resyncInterval`, and whenever its backlog overflowed, so objects whose notifications
//! were lost (operator down, store down, sender down) are still processed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kube::ResourceExt;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::Store;
use tracing::{info, warn};

use super::{Context, event_path, resolve_store, validate};
use crate::api::DataPipeline;
use crate::store::{self, StoreError};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use zeroflow_core::backlog::Admitted;
use zeroflow_core::ledger::Ledger;
use zeroflow_core::resync::{self, Admission, ResyncReport, SourceFilter};

/// How often the loop looks for pipelines that are due.
const TICK: Duration = Duration::from_secs(1);
/// After a failed pass, wait this long before trying that pipeline again.
const RETRY_FAILED: Duration = Duration::from_secs(30);

/// Why a pipeline is resynced now, or `None` when it is not due.
pub fn due(last: Option<Instant>, interval: Duration, overflowed: bool, now: Instant) -> Option<&'static str> {
    match last {
        None => Some("start-up"),
        Some(_) if overflowed => Some("backlog overflow"),
        Some(at) if !interval.is_zero() && now.duration_since(at) >= interval => Some("interval"),
        Some(_) => None,
    }
}

/// Runs resync passes one at a time, oldest-due first, until the process stops.
pub async fn run(ctx: Arc<Context>, store: Store<DeserializeGuard<DataPipeline>>) {
    let mut last_pass: HashMap<String, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let pipelines: Vec<_> = store.state().iter().filter_map(|g| g.0.as_ref().ok().cloned()).collect();
        last_pass.retain(|uid, _| pipelines.iter().any(|p| p.metadata.uid.as_deref() == Some(uid.as_str())));
        for pipeline in pipelines {
            let (Some(uid), Ok(spec)) = (pipeline.metadata.uid.clone(), validate::validate(&pipeline.spec)) else {
                continue;
            };
            let key = event_path::pipeline_key(&pipeline);
            let overflowed = ctx.registry.take_resync_request(&key).unwrap_or(false);
            let Some(reason) = due(last_pass.get(&uid).copied(), spec.resync_interval, overflowed, Instant::now())
            else {
                continue;
            };
            if ctx.registry.counts(&key).is_none() {
                continue; // not reconciled yet: no backlog to fill
            }
            match pass(&ctx, &pipeline).await {
                Ok(()) => {
                    last_pass.insert(uid, Instant::now());
                }
                Err(e) => {
                    warn!(namespace = key.namespace, name = key.name, reason, error = %e, "resync failed");
                    // Retry sooner than the interval, but not in a hot loop.
                    let retry_at = Instant::now().checked_sub(spec.resync_interval.saturating_sub(RETRY_FAILED));
                    last_pass.insert(uid, retry_at.unwrap_or_else(Instant::now));
                }
            }
        }
    }
}

async fn pass(ctx: &Context, pipeline: &DataPipeline) -> Result<(), StoreError> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let key = event_path::pipeline_key(pipeline);
    let source = &pipeline.spec.source;
    let source_config = resolve_store(ctx, source.store.as_ref(), &namespace).await?;
    let sink_config = match &pipeline.spec.sink.store {
        Some(spec) => resolve_store(ctx, Some(spec), &namespace).await?,
        None => source_config.clone(),
    };
    let source_client = store::bucket_client(&source_config, &source.bucket)?;
    let sink_client = store::bucket_client(&sink_config, event_path::sink_bucket(pipeline))?;
    let ledger = Ledger::new(Arc::new(sink_client), &event_path::ledger_prefix(pipeline))
        .map_err(|e| StoreError::Invalid(format!("ledger: {e}")))?;
    let exclude = event_path::route(pipeline).map(|r| r.exclude_prefixes).unwrap_or_default();
    let filter = SourceFilter {
        bucket: source.bucket.clone(),
        prefix: source.prefix.clone().unwrap_or_default(),
        suffix: source.suffix.clone(),
        exclude,
    };
    // backfill: false means only objects written after the pipeline was created are work.
    let created = pipeline.metadata.creation_timestamp.as_ref().map(|t| SystemTime::from(t.0));
    let cutoff = if source.backfill { None } else { created };
    let report =
        resync::resync(&source_client, &filter, &ledger, cutoff, |item| match ctx.registry.admit(&key, item) {
            Some(Ok(Admitted::New | Admitted::Superseded)) => Admission::Queued,
            Some(Ok(Admitted::Duplicate)) => Admission::AlreadyQueued,
            Some(Err(_)) | None => Admission::Full,
        })
        .await
        .map_err(|e| StoreError::Unreachable(format!("resync: {e}")))?;
    ctx.resync_metrics.observe(&key.namespace, &key.name, &report);
    if report.discovered > 0 {
        ctx.workapi.notify(&key);
    }
    info!(
        namespace = key.namespace,
        name = key.name,
        listed = report.listed,
        discovered = report.discovered,
        already_done = report.already_done,
        complete = report.complete,
        took_ms = u64::try_from(report.took.as_millis()).unwrap_or(u64::MAX),
        "resync pass"
    );
    Ok(())
}

/// Resync metrics, registered into a registry the caller owns.
#[derive(Debug, Clone)]
pub struct ResyncMetrics {
    duration: Histogram,
    discovered: IntCounterVec,
}

impl ResyncMetrics {
    /// Creates the metrics and registers them; call once per registry.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = Histogram::with_opts(
            HistogramOpts::new("zeroflow_resync_duration_seconds", "Time of one resync pass over a pipeline's source")
                .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0]),
        )?;
        let discovered = IntCounterVec::new(
            Opts::new(
                "zeroflow_resync_discovered_total",
                "Objects a resync found unfinished and unknown to the backlog: missed notifications or backfill",
            ),
            &["namespace", "pipeline"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(discovered.clone()))?;
        Ok(Self { duration, discovered })
    }

    pub fn observe(&self, namespace: &str, pipeline: &str, report: &ResyncReport) {
        self.duration.observe(report.took.as_secs_f64());
        self.discovered.with_label_values(&[namespace, pipeline]).inc_by(report.discovered);
    }

    /// Drops a deleted pipeline's series.
    pub fn forget(&self, namespace: &str, pipeline: &str) {
        let _ = self.discovered.remove_label_values(&[namespace, pipeline]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_count_discoveries_per_pipeline() {
        let registry = Registry::new();
        let metrics = ResyncMetrics::register(&registry).expect("register");
        metrics.observe(
            "ns",
            "p",
            &ResyncReport { discovered: 3, took: Duration::from_millis(5), ..Default::default() },
        );
        let families = registry.gather();
        let discovered = families.iter().find(|f| f.name() == "zeroflow_resync_discovered_total").expect("counter");
        assert_eq!(discovered.get_metric()[0].get_counter().get_value(), 3.0);
        assert!(families.iter().any(|f| f.name() == "zeroflow_resync_duration_seconds"));
        assert!(ResyncMetrics::register(&registry).is_err(), "registering twice is refused");
        metrics.forget("ns", "p");
        let families = registry.gather();
        assert!(
            !families.iter().any(|f| f.name() == "zeroflow_resync_discovered_total"),
            "a deleted pipeline's series are gone"
        );
    }

    #[test]
    fn every_pipeline_is_resynced_at_start_up() {
        assert_eq!(due(None, Duration::ZERO, false, Instant::now()), Some("start-up"));
    }

    #[test]
    fn the_interval_and_overflows_trigger_later_passes() {
        let now = Instant::now();
        let minute_ago = now.checked_sub(Duration::from_secs(60)).expect("clock");
        assert_eq!(due(Some(minute_ago), Duration::from_secs(300), false, now), None);
        assert_eq!(due(Some(minute_ago), Duration::from_secs(30), false, now), Some("interval"));
        assert_eq!(due(Some(minute_ago), Duration::from_secs(300), true, now), Some("backlog overflow"));
    }

    #[test]
    fn a_zero_interval_disables_periodic_passes_only() {
        let now = Instant::now();
        let long_ago = now.checked_sub(Duration::from_secs(3600)).expect("clock");
        assert_eq!(due(Some(long_ago), Duration::ZERO, false, now), None);
        assert_eq!(due(Some(long_ago), Duration::ZERO, true, now), Some("backlog overflow"));
    }
}
