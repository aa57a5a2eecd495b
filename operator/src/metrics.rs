//! Prometheus metrics, prefix `zeroflow_`. Labels are bounded: never an object key, at most a
//! pipeline's namespace and name.

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    reconcile_errors: IntCounterVec,
    reconcile_duration: Histogram,
    pub leader: IntGauge,
    /// Per pipeline (labels namespace, pipeline): objects waiting, objects being processed,
    /// worker replicas.
    pub pending: IntGaugeVec,
    pub in_flight: IntGaugeVec,
    pub replicas: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("zeroflow_reconciles_total", "DataPipeline reconciles by outcome (ok or error)"),
            &["outcome"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new("zeroflow_reconcile_errors_total", "Failed DataPipeline reconciles by error category"),
            &["category"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new("zeroflow_reconcile_duration_seconds", "Time to reconcile one DataPipeline")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )?;
        let leader = IntGauge::new("zeroflow_leader", "1 when this replica holds the leader lease")?;
        let per_pipeline = ["namespace", "pipeline"];
        let pending =
            IntGaugeVec::new(Opts::new("zeroflow_backlog_pending", "Objects waiting for a worker"), &per_pipeline)?;
        let in_flight = IntGaugeVec::new(Opts::new("zeroflow_inflight", "Objects leased to workers"), &per_pipeline)?;
        let replicas = IntGaugeVec::new(Opts::new("zeroflow_replicas", "Worker pods that exist"), &per_pipeline)?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(replicas.clone()))?;
        Ok(Self { registry, reconciles, reconcile_errors, reconcile_duration, leader, pending, in_flight, replicas })
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

    /// Removes a deleted pipeline's series, so label sets stay bounded by the live pipelines.
    pub fn forget_pipeline(&self, namespace: &str, name: &str) {
        for gauge in [&self.pending, &self.in_flight, &self.replicas] {
            let _ = gauge.remove_label_values(&[namespace, name]);
        }
    }

    /// The text exposition format Prometheus scrapes.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buffer = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buffer)?;
        String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
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
    }

    #[test]
    fn pipeline_series_are_removed_with_the_pipeline() {
        let m = Metrics::new().expect("metrics register");
        m.pending.with_label_values(&["finance", "invoices"]).set(3);
        let text = m.render().expect("render");
        assert!(text.contains("zeroflow_backlog_pending{namespace=\"finance\",pipeline=\"invoices\"} 3"), "{text}");
        m.forget_pipeline("finance", "invoices");
        assert!(!m.render().expect("render").contains("pipeline=\"invoices\""));
    }
}
