//! Prometheus metrics, prefix `zeroflow_`. Labels are bounded: never an object key, at most a
//! pipeline's namespace and name plus a small fixed set (`outcome`, `reason`, `result`).
//!
//! Every family labelled by pipeline is registered here, so that [`Metrics::forget_pipeline`]
//! drops all of a deleted pipeline's series in one call and label sets stay bounded by the live
//! pipelines. The gateway's families ([`crate::gateway::metrics`]) have no pipeline label.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use zeroflow_core::PipelineKey;

const PER_PIPELINE: [&str; 2] = ["namespace", "pipeline"];

/// How a work lease ended, as counted by `zeroflow_workapi_completions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Done,
    /// Failed for good: a `failed` record was written.
    Failed,
    /// Failed, back to pending for another attempt.
    Retry,
    /// Reclaimed from a silent worker, attempts remain (one that used the last is `Failed`).
    Expired,
    /// Given back unfinished by a stopping worker; not an attempt.
    HandedBack,
}

impl Ended {
    pub const ALL: [Ended; 5] = [Ended::Done, Ended::Failed, Ended::Retry, Ended::Expired, Ended::HandedBack];

    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Done => "done",
            Ended::Failed => "failed",
            Ended::Retry => "retry",
            Ended::Expired => "expired",
            Ended::HandedBack => "handed_back",
        }
    }
}

/// Why an object (or a notification for one) was not work, as counted by
/// `zeroflow_objects_skipped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Already recorded in the ledger (a duplicate notification after a restart).
    AlreadyDone,
    /// Deleted or overwritten before a worker read it.
    Gone,
    /// A zero-byte "folder" placeholder (key ending in `/`).
    FolderMarker,
    /// A notification about metadata (tags, retention, legal hold), not content.
    MetadataOnly,
}

impl Skipped {
    pub const ALL: [Skipped; 4] = [Skipped::AlreadyDone, Skipped::Gone, Skipped::FolderMarker, Skipped::MetadataOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::AlreadyDone => "already_done",
            Skipped::Gone => "gone",
            Skipped::FolderMarker => "folder_marker",
            Skipped::MetadataOnly => "metadata_only",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_duration: Histogram,
    pub leader: IntGauge,
    // Per pipeline.
    pub pending: IntGaugeVec,
    pub in_flight: IntGaugeVec,
    pub replicas: IntGaugeVec,
    pub paused: IntGaugeVec,
    pub oldest_pending_age: prometheus::GaugeVec,
    skipped: IntCounterVec,
    granted: IntCounterVec,
    completions: IntCounterVec,
    cold_start: HistogramVec,
    processing: HistogramVec,
    pub replica_seconds: prometheus::CounterVec,
    pub cpu_core_seconds: prometheus::CounterVec,
    resync_discovered: IntCounterVec,
    // Operator-wide.
    pub event_to_scale: Histogram,
    resync_duration: Histogram,
    lease_wait: HistogramVec,
    refused: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> prometheus::Result<T> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        let build_info = register(
            r,
            IntGaugeVec::new(
                Opts::new("zeroflow_build_info", "The running operator's version (always 1)"),
                &["version"],
            )?,
        )?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // process_* (CPU seconds, resident memory, open fds, start time) of this process.
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Self {
            reconciles: register(
                r,
                IntCounterVec::new(
                    Opts::new("zeroflow_reconciles_total", "DataPipeline reconciles by outcome (ok or error)"),
                    &["outcome"],
                )?,
            )?,
            reconcile_errors: register(
                r,
                IntCounterVec::new(
                    Opts::new("zeroflow_reconcile_errors_total", "Failed DataPipeline reconciles by error category"),
                    &["category"],
                )?,
            )?,
            reconcile_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new("zeroflow_reconcile_duration_seconds", "Time to reconcile one DataPipeline")
                        .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
                )?,
            )?,
            leader: register(r, IntGauge::new("zeroflow_leader", "1 when this replica holds the leader lease")?)?,
            pending: register(
                r,
                IntGaugeVec::new(Opts::new("zeroflow_backlog_pending", "Objects waiting for a worker"), &PER_PIPELINE)?,
            )?,
            in_flight: register(
                r,
                IntGaugeVec::new(Opts::new("zeroflow_inflight", "Objects leased to workers"), &PER_PIPELINE)?,
            )?,
            replicas: register(
                r,
                IntGaugeVec::new(Opts::new("zeroflow_replicas", "Worker pods that exist"), &PER_PIPELINE)?,
            )?,
            paused: register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "zeroflow_paused",
                        "1 while the pipeline is paused (annotation zeroflow.dev/paused), else 0",
                    ),
                    &PER_PIPELINE,
                )?,
            )?,
            oldest_pending_age: register(
                r,
                prometheus::GaugeVec::new(
                    Opts::new(
                        "zeroflow_backlog_oldest_pending_age_seconds",
                        "How long the oldest object waiting for a worker has waited since it was first admitted \
                         (0 when nothing waits)",
                    ),
                    &PER_PIPELINE,
                )?,
            )?,
            skipped: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "zeroflow_objects_skipped_total",
                        "Objects or notifications that were not work, by reason: already_done (in the ledger), \
                         gone (deleted before a worker read it), folder_marker, metadata_only",
                    ),
                    &["namespace", "pipeline", "reason"],
                )?,
            )?,
            granted: register(
                r,
                IntCounterVec::new(
                    Opts::new("zeroflow_workapi_leases_granted_total", "Leases handed to workers"),
                    &PER_PIPELINE,
                )?,
            )?,
            completions: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "zeroflow_workapi_completions_total",
                        "Leases ended, by outcome: done, failed (for good), retry (failed, attempts remain), \
                         expired (attempts remain), handed_back (by a stopping worker, not an attempt)",
                    ),
                    &["namespace", "pipeline", "outcome"],
                )?,
            )?,
            cold_start: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "zeroflow_cold_start_seconds",
                        "From the first object that found a pipeline at zero workers to the first lease a worker took",
                    )
                    .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]),
                    &PER_PIPELINE,
                )?,
            )?,
            processing: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "zeroflow_processing_duration_seconds",
                        "From a lease to the worker's completion or failure report, per attempt",
                    )
                    .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0]),
                    &PER_PIPELINE,
                )?,
            )?,
            replica_seconds: register(
                r,
                prometheus::CounterVec::new(
                    Opts::new(
                        "zeroflow_replica_seconds_total",
                        "Worker replicas the scaler asked for, integrated over time (cost attribution)",
                    ),
                    &PER_PIPELINE,
                )?,
            )?,
            cpu_core_seconds: register(
                r,
                prometheus::CounterVec::new(
                    Opts::new(
                        "zeroflow_cpu_core_seconds_total",
                        "CPU cores requested by the pod template times replicas, integrated over time (cost attribution)",
                    ),
                    &PER_PIPELINE,
                )?,
            )?,
            resync_discovered: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "zeroflow_resync_discovered_total",
                        "Objects a resync found unfinished and unknown to the backlog: missed notifications or backfill",
                    ),
                    &PER_PIPELINE,
                )?,
            )?,
            event_to_scale: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "zeroflow_event_to_scale_seconds",
                        "From the gateway receiving a notification for a pipeline at zero replicas to the apiserver \
                         accepting its scale-up",
                    )
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                )?,
            )?,
            resync_duration: register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "zeroflow_resync_duration_seconds",
                        "Time of one resync pass over a pipeline's source",
                    )
                    .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0]),
                )?,
            )?,
            lease_wait: register(
                r,
                HistogramVec::new(
                    HistogramOpts::new("zeroflow_workapi_lease_wait_seconds", "Time a lease poll waited, by result")
                        .buckets(vec![0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0]),
                    &["result"],
                )?,
            )?,
            refused: register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "zeroflow_workapi_requests_refused_total",
                        "Work API requests refused, by reason (unauthenticated, forbidden, not_found, gone, bad_request, unavailable, loading)",
                    ),
                    &["reason"],
                )?,
            )?,
            registry,
        })
    }

    /// The registry other parts (the gateway) register their metrics in.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn observe_reconcile(&self, took: Duration, error_category: Option<&str>) {
        self.reconcile_duration.observe(took.as_secs_f64());
        match error_category {
            None => self.reconciles.with_label_values(&["ok"]).inc(),
            Some(category) => {
                self.reconciles.with_label_values(&["error"]).inc();
                self.reconcile_errors.with_label_values(&[category]).inc();
            }
        }
    }

    pub fn granted(&self, pipeline: &PipelineKey) {
        self.granted.with_label_values(&labels(pipeline)).inc();
    }

    pub fn ended(&self, pipeline: &PipelineKey, ended: Ended) {
        self.completions.with_label_values(&[&pipeline.namespace, &pipeline.name, ended.as_str()]).inc();
    }

    pub fn skipped(&self, pipeline: &PipelineKey, reason: Skipped, count: u64) {
        if count > 0 {
            self.skipped.with_label_values(&[&pipeline.namespace, &pipeline.name, reason.as_str()]).inc_by(count);
        }
    }

    /// `leased` is false when the poll ended empty-handed.
    pub fn lease_waited(&self, leased: bool, seconds: f64) {
        self.lease_wait.with_label_values(&[if leased { "leased" } else { "empty" }]).observe(seconds);
    }

    pub fn cold_start(&self, pipeline: &PipelineKey, seconds: f64) {
        self.cold_start.with_label_values(&labels(pipeline)).observe(seconds);
    }

    /// One attempt's time from lease to report.
    pub fn processed(&self, pipeline: &PipelineKey, seconds: f64) {
        self.processing.with_label_values(&labels(pipeline)).observe(seconds);
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.with_label_values(&[reason]).inc();
    }

    pub fn resynced(&self, pipeline: &PipelineKey, took: Duration, discovered: u64) {
        self.resync_duration.observe(took.as_secs_f64());
        self.resync_discovered.with_label_values(&labels(pipeline)).inc_by(discovered);
    }

    /// Removes every series of a deleted pipeline, so label sets stay bounded by the live
    /// pipelines.
    pub fn forget_pipeline(&self, pipeline: &PipelineKey) {
        let l = labels(pipeline);
        for gauge in [&self.pending, &self.in_flight, &self.replicas, &self.paused] {
            let _ = gauge.remove_label_values(&l);
        }
        let _ = self.oldest_pending_age.remove_label_values(&l);
        for counter in [&self.granted, &self.resync_discovered] {
            let _ = counter.remove_label_values(&l);
        }
        for counter in [&self.replica_seconds, &self.cpu_core_seconds] {
            let _ = counter.remove_label_values(&l);
        }
        for histogram in [&self.cold_start, &self.processing] {
            let _ = histogram.remove_label_values(&l);
        }
        for ended in Ended::ALL {
            let _ = self.completions.remove_label_values(&[l[0], l[1], ended.as_str()]);
        }
        for reason in Skipped::ALL {
            let _ = self.skipped.remove_label_values(&[l[0], l[1], reason.as_str()]);
        }
    }

    /// The text exposition format Prometheus scrapes.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

fn labels(pipeline: &PipelineKey) -> [&str; 2] {
    [pipeline.namespace.as_str(), pipeline.name.as_str()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconcile_outcomes_are_counted_by_category() {
        let m = Metrics::new().expect("metrics register");
        m.observe_reconcile(Duration::from_millis(3), None);
        m.observe_reconcile(Duration::from_millis(30), Some("apply"));
        let text = m.render().expect("render");
        assert!(text.contains("zeroflow_reconciles_total{outcome=\"ok\"} 1"), "{text}");
        assert!(text.contains("zeroflow_reconciles_total{outcome=\"error\"} 1"), "{text}");
        assert!(text.contains("zeroflow_reconcile_errors_total{category=\"apply\"} 1"), "{text}");
        assert!(text.contains("zeroflow_reconcile_duration_seconds_count 2"), "{text}");
        assert!(text.contains(&format!("zeroflow_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    #[test]
    fn every_series_of_a_pipeline_is_removed_with_the_pipeline() {
        let m = Metrics::new().expect("metrics register");
        let p = PipelineKey::new("finance", "invoices");
        let other = PipelineKey::new("finance", "other");
        m.pending.with_label_values(&labels(&p)).set(3);
        m.oldest_pending_age.with_label_values(&labels(&p)).set(4.0);
        m.granted(&p);
        m.ended(&p, Ended::Done);
        m.ended(&p, Ended::HandedBack);
        m.skipped(&p, Skipped::Gone, 2);
        m.cold_start(&p, 0.5);
        m.processed(&p, 0.5);
        m.replica_seconds.with_label_values(&labels(&p)).inc_by(1.0);
        m.cpu_core_seconds.with_label_values(&labels(&p)).inc_by(1.0);
        m.resynced(&p, Duration::from_millis(1), 1);
        m.granted(&other);
        let text = m.render().expect("render");
        assert!(text.contains("zeroflow_backlog_pending{namespace=\"finance\",pipeline=\"invoices\"} 3"), "{text}");
        m.forget_pipeline(&p);
        let text = m.render().expect("render");
        assert!(!text.contains("pipeline=\"invoices\""), "{text}");
        assert!(text.contains("pipeline=\"other\""), "other pipelines keep their series");
    }
}
