//! Work API metrics, registered into a registry the caller owns. Labels: the pipeline at most.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use zeroflow_core::PipelineKey;

/// How a lease ended, as counted by `zeroflow_workapi_completions_total`.
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

#[derive(Debug, Clone)]
pub struct WorkApiMetrics {
    granted: IntCounterVec,
    completions: IntCounterVec,
    wait: HistogramVec,
    refused: IntCounterVec,
    cold_start: HistogramVec,
    processing: HistogramVec,
}

impl WorkApiMetrics {
    /// Creates the metrics and registers them; call once per registry.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let granted = IntCounterVec::new(
            Opts::new("zeroflow_workapi_leases_granted_total", "Leases handed to workers"),
            &["namespace", "pipeline"],
        )?;
        let completions = IntCounterVec::new(
            Opts::new(
                "zeroflow_workapi_completions_total",
                "Leases ended, by outcome: done, failed (for good), retry (failed, attempts remain), expired \
                 (attempts remain), handed_back (by a stopping worker, not an attempt)",
            ),
            &["namespace", "pipeline", "outcome"],
        )?;
        let wait = HistogramVec::new(
            HistogramOpts::new("zeroflow_workapi_lease_wait_seconds", "Time a lease poll waited, by result")
                .buckets(vec![0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0]),
            &["result"],
        )?;
        let refused = IntCounterVec::new(
            Opts::new("zeroflow_workapi_requests_refused_total", "Work API requests refused, by reason"),
            &["reason"],
        )?;
        let cold_start = HistogramVec::new(
            HistogramOpts::new(
                "zeroflow_cold_start_seconds",
                "From the first object that found a pipeline at zero workers to the first lease a worker took",
            )
            .buckets(vec![0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]),
            &["namespace", "pipeline"],
        )?;
        let processing = HistogramVec::new(
            HistogramOpts::new(
                "zeroflow_processing_duration_seconds",
                "From a lease to the worker's completion or failure report, per attempt",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0]),
            &["namespace", "pipeline"],
        )?;
        registry.register(Box::new(granted.clone()))?;
        registry.register(Box::new(cold_start.clone()))?;
        registry.register(Box::new(processing.clone()))?;
        registry.register(Box::new(completions.clone()))?;
        registry.register(Box::new(wait.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        Ok(Self { granted, completions, wait, refused, cold_start, processing })
    }

    pub fn granted(&self, pipeline: &PipelineKey) {
        self.granted.with_label_values(&[&pipeline.namespace, &pipeline.name]).inc();
    }

    pub fn ended(&self, pipeline: &PipelineKey, ended: Ended) {
        self.completions
            .with_label_values(&[pipeline.namespace.as_str(), pipeline.name.as_str(), ended.as_str()])
            .inc();
    }

    /// `leased` is false when the poll ended empty-handed.
    pub fn waited(&self, leased: bool, seconds: f64) {
        self.wait.with_label_values(&[if leased { "leased" } else { "empty" }]).observe(seconds);
    }

    pub fn cold_start(&self, pipeline: &PipelineKey, seconds: f64) {
        self.cold_start.with_label_values(&[&pipeline.namespace, &pipeline.name]).observe(seconds);
    }

    /// One attempt's time from lease to report.
    pub fn processed(&self, pipeline: &PipelineKey, seconds: f64) {
        self.processing.with_label_values(&[&pipeline.namespace, &pipeline.name]).observe(seconds);
    }

    /// Drops a deleted pipeline's series.
    pub fn forget(&self, pipeline: &PipelineKey) {
        let labels = [pipeline.namespace.as_str(), pipeline.name.as_str()];
        let _ = self.granted.remove_label_values(&labels);
        let _ = self.cold_start.remove_label_values(&labels);
        let _ = self.processing.remove_label_values(&labels);
        for ended in [Ended::Done, Ended::Failed, Ended::Retry, Ended::Expired, Ended::HandedBack] {
            let _ = self.completions.remove_label_values(&[labels[0], labels[1], ended.as_str()]);
        }
    }

    pub fn refused(&self, reason: &'static str) {
        self.refused.with_label_values(&[reason]).inc();
    }
}
