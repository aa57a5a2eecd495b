//! Connects DataPipelines to the event path: each pipeline's route in the gateway's table and
//! its backlog. The pure parts (what route and backlog settings a spec means) are plain
//! functions; [`Registry`] keeps the shared tables in step with the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use kube::ResourceExt;

use super::validate::ValidSpec;
use crate::api::DataPipeline;
use crate::dispatch::Backlogs;
use crate::gateway::SharedRoutes;
use zeroflow_core::PipelineKey;
use zeroflow_core::backlog::{Admitted, BacklogConfig, Counts, Overloaded, WorkItem};
use zeroflow_core::routing::{Location, RouteError};
use zeroflow_core::routing::{Route, RouteTable};

/// Longest backoff between attempts, whatever the base and attempt count.
const MAX_BACKOFF_MS: u64 = 10 * 60 * 1000;

pub fn pipeline_key(pipeline: &DataPipeline) -> PipelineKey {
    PipelineKey::new(pipeline.namespace().unwrap_or_default(), pipeline.name_any())
}

/// Where the pipeline's ledger lives in the sink bucket.
pub fn ledger_prefix(pipeline: &DataPipeline) -> String {
    pipeline.spec.delivery.ledger_prefix.clone().unwrap_or_else(|| {
        format!(".zeroflow/ledger/{}/{}/", pipeline.namespace().unwrap_or_default(), pipeline.name_any())
    })
}

/// The bucket outputs and the ledger go to.
pub fn sink_bucket(pipeline: &DataPipeline) -> &str {
    pipeline.spec.sink.bucket.as_deref().unwrap_or(&pipeline.spec.source.bucket)
}

/// The gateway route of a pipeline: its source filter minus its own outputs and ledger.
pub fn route(pipeline: &DataPipeline) -> Result<Route, RouteError> {
    let source = &pipeline.spec.source;
    let ledger = ledger_prefix(pipeline);
    Route::for_pipeline(
        &pipeline_key(pipeline),
        Location { bucket: &source.bucket, prefix: source.prefix.as_deref().unwrap_or_default() },
        source.suffix.as_deref(),
        Location { bucket: sink_bucket(pipeline), prefix: &pipeline.spec.sink.prefix },
        Location { bucket: sink_bucket(pipeline), prefix: &ledger },
    )
}

pub fn backlog_config(pipeline: &DataPipeline, spec: &ValidSpec) -> BacklogConfig {
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    BacklogConfig {
        max_attempts: u32::try_from(pipeline.spec.delivery.max_attempts.max(1)).unwrap_or(1),
        lease_duration_ms: millis(spec.lease_duration),
        backoff_base_ms: millis(spec.retry_backoff),
        backoff_max_ms: MAX_BACKOFF_MS.max(millis(spec.retry_backoff)),
        ..BacklogConfig::default()
    }
}

/// The event path's view of every pipeline, shared by the controller and the gateway.
pub struct Registry {
    routes: SharedRoutes,
    backlogs: Arc<Backlogs>,
    known: Mutex<BTreeMap<PipelineKey, Route>>,
    /// Pipelines whose next resync was asked for outside the backlog (a re-drive).
    resync_requested: Mutex<BTreeSet<PipelineKey>>,
}

impl Registry {
    pub fn new(routes: SharedRoutes, backlogs: Arc<Backlogs>) -> Self {
        Self { routes, backlogs, known: Mutex::new(BTreeMap::new()), resync_requested: Mutex::new(BTreeSet::new()) }
    }

    /// Records a pipeline's current route and backlog settings; the gateway sees a new route at once.
    pub fn upsert(&self, route: Route, config: BacklogConfig) {
        let key = route.key();
        self.backlogs.ensure(key.clone(), config);
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if known.get(&key) != Some(&route) {
            known.insert(key, route);
            self.routes.replace(RouteTable::new(known.values().cloned()));
        }
    }

    /// Forgets pipelines of `namespace` (all namespaces with `None`) that are not in `alive`,
    /// with their backlogs; returns the pipelines it forgot.
    pub fn retain(&self, namespace: Option<&str>, alive: &BTreeSet<PipelineKey>) -> Vec<PipelineKey> {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<_> = known
            .keys()
            .filter(|k| namespace.is_none_or(|ns| k.namespace == ns) && !alive.contains(*k))
            .cloned()
            .collect();
        if gone.is_empty() {
            return gone;
        }
        for key in &gone {
            known.remove(key);
            self.backlogs.remove(key);
        }
        self.routes.replace(RouteTable::new(known.values().cloned()));
        gone
    }

    /// Admits an item found by resync; `None` when the pipeline has no backlog.
    pub fn admit(&self, key: &PipelineKey, item: WorkItem) -> Option<Result<Admitted, Overloaded>> {
        self.backlogs.with(key, |backlog, now| backlog.admit(item, now))
    }

    /// Whether the pipeline needs a resync: its backlog overflowed, or one was requested, since
    /// the last call.
    pub fn take_resync_request(&self, key: &PipelineKey) -> Option<bool> {
        let requested = self.resync_requested.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
        self.backlogs.with(key, |backlog, _| backlog.take_resync_request() || requested)
    }

    pub fn request_resync(&self, key: &PipelineKey) {
        self.resync_requested.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone());
    }

    /// Puts the failed objects this replica remembers back to pending; returns how many.
    pub fn redrive_failed(&self, key: &PipelineKey) -> usize {
        self.backlogs.with(key, |backlog, now| backlog.redrive_failed(now).unwrap_or(0)).unwrap_or(0)
    }

    pub fn counts(&self, key: &PipelineKey) -> Option<Counts> {
        self.backlogs.with(key, |backlog, _| backlog.counts())
    }

    /// The key and error of the pipeline's latest object that failed for good.
    pub fn last_failure(&self, key: &PipelineKey) -> Option<(String, String)> {
        self.backlogs.with(key, |backlog, _| backlog.last_failure().cloned()).flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{minimal_spec, pipeline};
    use crate::controller::validate::validate;
    use zeroflow_core::events::{EventKind, StorageEvent};

    fn created(bucket: &str, key: &str) -> StorageEvent {
        StorageEvent {
            kind: EventKind::Created,
            bucket: bucket.into(),
            key: key.into(),
            etag: Some("e1".into()),
            version_id: None,
            size: Some(1),
            sequencer: None,
            time: None,
        }
    }

    #[test]
    fn a_pipeline_never_routes_its_own_outputs_or_ledger() {
        let p = pipeline(minimal_spec());
        let route = route(&p).expect("route");
        assert!(route.matches("raw-invoices", "incoming/a.csv"));
        assert!(!route.matches("raw-invoices", "zeroflow-output/incoming/a.csv/a.json"));
        assert!(!route.matches("raw-invoices", ".zeroflow/ledger/finance/invoices/x"));
        assert!(!route.matches("other-bucket", "a.csv"));
    }

    #[test]
    fn sink_in_another_bucket_excludes_nothing_from_the_source() {
        let mut spec = minimal_spec();
        spec.sink.bucket = Some("curated".into());
        spec.source.prefix = Some("in/".into());
        spec.source.suffix = Some(".csv".into());
        let route = route(&pipeline(spec)).expect("route");
        assert!(route.matches("raw-invoices", "in/zeroflow-output/a.csv"));
        assert!(!route.matches("raw-invoices", "in/a.json"));
        assert!(!route.matches("raw-invoices", "out/a.csv"));
    }

    #[test]
    fn an_empty_ledger_prefix_in_the_source_bucket_is_refused() {
        let mut spec = minimal_spec();
        spec.delivery.ledger_prefix = Some(String::new());
        assert!(route(&pipeline(spec)).is_err());
    }

    #[test]
    fn backlog_settings_follow_the_spec() {
        let mut spec = minimal_spec();
        spec.delivery.max_attempts = 5;
        spec.delivery.lease_duration = "30s".into();
        spec.delivery.retry_backoff = "2s".into();
        let p = pipeline(spec);
        let config = backlog_config(&p, &validate(&p.spec).expect("valid"));
        assert_eq!((config.max_attempts, config.lease_duration_ms, config.backoff_base_ms), (5, 30_000, 2_000));
    }

    #[test]
    fn registry_routes_events_and_forgets_deleted_pipelines() {
        let routes = SharedRoutes::new(RouteTable::default());
        let registry = Registry::new(routes.clone(), Arc::new(Backlogs::new(1)));
        let p = pipeline(minimal_spec());
        registry.upsert(route(&p).expect("route"), BacklogConfig::default());
        let key = pipeline_key(&p);
        assert_eq!(routes.current().routes_for(&created("raw-invoices", "a.csv")), vec![key.clone()]);
        assert_eq!(registry.counts(&key).map(|c| c.pending), Some(0));

        registry.retain(Some("elsewhere"), &BTreeSet::new());
        assert_eq!(registry.counts(&key).map(|c| c.pending), Some(0), "other namespaces are untouched");
        registry.retain(Some("finance"), &BTreeSet::new());
        assert!(routes.current().routes_for(&created("raw-invoices", "a.csv")).is_empty());
        assert_eq!(registry.counts(&key), None);
    }
}
