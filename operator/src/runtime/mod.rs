//! The runtime of the pipelines this replica serves as leader: one [`Pipeline`] object per
//! `DataPipeline`, held in one map ([`Pipelines`]).
//!
//! A pipeline's runtime holds everything the event path, the work API, the scaler and the
//! background tasks know about it: its settings from the spec, its store access, backlog, work
//! leases, cold start, scaler state, published progress, resync schedule and source probe. One
//! lock guards it; each part has one owner (named on its field) and the others only read it.
//! Deleting a pipeline is one call ([`Pipelines::remove`]): nothing can be left behind because a
//! cleanup was forgotten, and a re-created pipeline of the same name starts fresh.
//!
//! Lock order: the map, then one pipeline's state; never two pipelines' states at once, never a
//! lock across an `.await`.

pub mod declared;
pub mod failures;
pub mod progress;
pub mod resync;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use object_store::ObjectStore;
use tokio::sync::{Notify, mpsc};
use zeroflow_core::PipelineKey;
use zeroflow_core::admission::{Admission, AdmitReport, Overloaded};
use zeroflow_core::backlog::ObjectId;
use zeroflow_core::backlog::{Admitted, Backlog, BacklogConfig, Millis, WorkItem};
use zeroflow_core::cold_starts::ColdStart;
use zeroflow_core::events::{EventKind, StorageEvent};
use zeroflow_core::leases::LeaseTable;
use zeroflow_core::ledger::Ledger;
use zeroflow_core::lineage::{self, Stage};
use zeroflow_core::resync::SourceFilter;
use zeroflow_core::routing::{RESERVED_PREFIX, Route, RouteTable};
use zeroflow_core::scaling::usage::Usage;

use crate::api::DataPipelineStatus;
use crate::metrics::{Metrics, Skipped};
use crate::scaler::{ScaleSpec, ScaleState};
use crate::status_writer::Written;
use crate::workapi::BucketAccess;

/// A pipeline's settings, derived from its spec by the controller.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub route: Route,
    pub backlog: BacklogConfig,
    pub scale: ScaleSpec,
    /// What resync lists: the source filter without the pipeline's own outputs and ledger.
    pub source_filter: SourceFilter,
    /// `0` disables periodic passes (one still runs when the pipeline is taken up).
    pub resync_interval: Duration,
    /// Objects last modified before this are not work (`backfill: false`).
    pub backfill_cutoff: Option<SystemTime>,
    pub sink_prefix: String,
    /// The bucket outputs and the ledger go to.
    pub sink_bucket: String,
    /// The ledger's prefix in the sink bucket: every other pipeline reading that bucket
    /// excludes it.
    pub ledger_prefix: String,
    /// When the DataPipeline was created: of pipelines that form a cycle, the newest is stopped.
    pub created: Option<SystemTime>,
    /// Set while the `zeroflow.dev/paused` annotation holds the pipeline.
    pub paused: Option<Paused>,
}

/// A pause: nothing is leased, and the workers are held at `replicas` (busy ones still finish).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paused {
    pub replicas: i32,
}

impl Settings {
    /// Settings with `route` and `backlog` and defaults for the rest (no scaling beyond one
    /// worker's worth, no periodic resync): for tests and benchmarks that drive a runtime
    /// without a DataPipeline.
    pub fn new(route: Route, backlog: BacklogConfig) -> Self {
        let lease_duration = Duration::from_millis(backlog.lease_duration_ms);
        Self {
            source_filter: SourceFilter {
                bucket: route.bucket.clone(),
                prefix: route.prefix.clone().unwrap_or_default(),
                suffix: route.suffix.clone(),
                exclude: route.exclude_prefixes.clone(),
            },
            scale: ScaleSpec {
                deployment: zeroflow_contract::worker::worker_name(&route.name),
                min_replicas: 0,
                max_replicas: 1,
                target_per_replica: 1,
                concurrency_per_replica: 1,
                idle_timeout: Duration::from_secs(60),
                stabilization: Duration::ZERO,
                lease_duration,
                cpu_per_replica: 0.0,
                schedules: Vec::new(),
            },
            route,
            backlog,
            resync_interval: Duration::ZERO,
            backfill_cutoff: None,
            sink_prefix: String::new(),
            sink_bucket: String::new(),
            ledger_prefix: String::new(),
            created: None,
            paused: None,
        }
    }

    /// This pipeline as lineage sees it.
    fn stage(&self, key: &PipelineKey) -> Stage {
        Stage {
            key: key.clone(),
            created: self.created,
            source_bucket: self.route.bucket.clone(),
            source_prefix: self.route.prefix.clone().unwrap_or_default(),
            source_excludes: self.route.exclude_prefixes.clone(),
            sink_bucket: self.sink_bucket.clone(),
            sink_prefix: self.sink_prefix.clone(),
        }
    }
}

/// Why a pipeline runs no work: set by the runtime, not by its spec, and reported in its
/// conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    /// One CamelCase word for conditions and Events (`PipelineCycle`).
    pub reason: &'static str,
    pub message: String,
}

/// How the pipeline reaches its store: set by the controller once the store's credentials
/// resolved and the source could be listed.
pub struct Access {
    /// Presigned GETs and HEADs of inputs.
    pub source: Arc<dyn BucketAccess>,
    /// Presigned PUTs of outputs.
    pub sink: Arc<dyn BucketAccess>,
    /// The same source bucket, for resync's listings.
    pub source_store: Arc<dyn ObjectStore>,
    pub ledger: Ledger,
}

/// What a runtime starts from when this replica takes a pipeline up: the status the object
/// already shows, so counts and usage go on across restarts and leader changes, and fields that
/// did not change are not written again.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seed {
    pub status: DataPipelineStatus,
}

impl Seed {
    pub fn usage(&self) -> Usage {
        self.status.usage.clone()
    }
}

/// One pipeline's state. Owners: `settings`, `access`, `probe` the controller; `backlog` shared
/// by the gateway (admit), the work API (lease, finish) and resync (admit), each through the
/// backlog's own methods; `leases` and `cold_start` the work API (the scaler opens cold starts);
/// `scale` and `retiring` the scaler; `progress` the progress publisher; `resync` the resync task; `status`
/// the status writer; `stop` the map itself (lineage over every pipeline); `failures` the work
/// API (adds) and the re-drive (takes out), through its methods.
pub struct State {
    pub settings: Arc<Settings>,
    pub access: Option<Arc<Access>>,
    pub probe: Option<crate::controller::source::Probe>,
    pub backlog: Backlog,
    pub leases: LeaseTable,
    pub cold_start: ColdStart,
    pub scale: ScaleState,
    pub progress: progress::Published,
    pub resync: resync::Schedule,
    pub status: Written,
    /// While set, nothing is leased and the workers scale to zero (once idle).
    pub stop: Option<Stop>,
    pub failures: failures::RecentFailures,
    /// Worker pods a scale-down may remove or has removed, with when they were retired: every
    /// pod that held no lease when it began, until it has ended (then the survivors leave the
    /// set); the removed ones stay for [`crate::scaler::RETIRED_MEMORY`], since a worker may
    /// still ask for work after its pod is gone from the API (a force deletion) and before its
    /// SIGTERM arrives. They are given no object, so none is busy when stopped.
    pub retiring: HashMap<String, Instant>,
}

impl State {
    /// Whether workers may be given objects: not while the pipeline is stopped or paused.
    pub fn may_lease(&self) -> bool {
        self.stop.is_none() && self.settings.paused.is_none()
    }

    /// Whether the worker in pod `holder` may be given an object now: [`Self::may_lease`], and
    /// the pod is not one a scale-down under way may remove. A worker whose token names no pod
    /// cannot be told apart and is not held back.
    pub fn may_lease_to(&self, holder: Option<&str>) -> bool {
        self.may_lease() && holder.is_none_or(|pod| !self.retiring.contains_key(pod))
    }
}

/// One pipeline's runtime.
pub struct Pipeline {
    pub key: PipelineKey,
    /// Wakes the pipeline's waiting lease polls when work may be leasable.
    pub notify: Notify,
    state: Mutex<State>,
}

impl Pipeline {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // Every method that mutates the state leaves it consistent before returning, so a panic
        // elsewhere cannot leave it half-updated: keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store access, when the controller has set it.
    pub fn access(&self) -> Option<Arc<Access>> {
        self.lock().access.clone()
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.lock().settings.clone()
    }
}

/// The pipelines this replica serves, and the route index the gateway reads.
pub struct Pipelines {
    /// The backlogs' monotonic clock starts here.
    start: Instant,
    /// Distinguishes this process's work lease ids from an earlier run's.
    epoch: u64,
    retry_after_secs: u32,
    map: RwLock<HashMap<PipelineKey, Arc<Pipeline>>>,
    /// Derived from every pipeline's route; rebuilt when one changes.
    routes: RwLock<Arc<RouteTable>>,
    /// Pipelines at zero workers (or not adopted yet) that got new work, for the scaler:
    /// scale-ups from zero happen from here.
    kicks: mpsc::UnboundedSender<Kick>,
    metrics: Arc<Metrics>,
    /// What the DataPipeline caches list: a pipeline without a runtime yet is either loading
    /// or missing.
    declared: declared::Declared,
}

/// New work for a pipeline (its arrival time is noted in the scaler's state at admission).
#[derive(Debug, Clone)]
pub struct Kick {
    pub pipeline: PipelineKey,
}

impl Pipelines {
    /// `retry_after_secs` is what overloaded senders are told to wait.
    pub fn new(retry_after_secs: u32, kicks: mpsc::UnboundedSender<Kick>, metrics: Arc<Metrics>) -> Self {
        Self {
            start: Instant::now(),
            epoch: process_epoch(),
            retry_after_secs,
            map: RwLock::new(HashMap::new()),
            routes: RwLock::new(Arc::new(RouteTable::default())),
            kicks,
            metrics,
            declared: declared::Declared::default(),
        }
    }

    /// The pipelines the DataPipeline caches list (written by the controllers).
    pub fn declared(&self) -> &declared::Declared {
        &self.declared
    }

    /// The backlog clock: milliseconds since this replica started.
    pub fn now(&self) -> Millis {
        self.millis_at(Instant::now())
    }

    pub fn millis_at(&self, at: Instant) -> Millis {
        u64::try_from(at.saturating_duration_since(self.start).as_millis()).unwrap_or(u64::MAX)
    }

    /// A backlog-clock time as an `Instant`.
    pub fn instant_at(&self, at: Millis) -> Instant {
        self.start + Duration::from_millis(at)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn get(&self, key: &PipelineKey) -> Option<Arc<Pipeline>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner).get(key).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Pipeline>> {
        self.map.read().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Takes a pipeline up with `settings`, or applies new settings to the one already served
    /// (its backlog and leases stay). A new runtime leases nothing until the scaler has adopted
    /// the pipeline's live workers (see [`crate::scaler`]).
    pub fn upsert(&self, key: &PipelineKey, settings: Settings, seed: &Seed) -> Arc<Pipeline> {
        let settings = Arc::new(settings);
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let (pipeline, changed) = match map.get(key) {
            Some(existing) => {
                let mut state = existing.lock();
                let changed = state.settings != settings;
                if changed {
                    state.backlog.reconfigure(settings.backlog.clone());
                    state.settings = settings;
                }
                drop(state);
                (existing.clone(), changed)
            }
            None => {
                let mut backlog = Backlog::new(settings.backlog.clone());
                backlog.hold_until(Millis::MAX);
                let state = State {
                    access: None,
                    probe: None,
                    backlog,
                    leases: LeaseTable::new(self.epoch),
                    cold_start: ColdStart::default(),
                    scale: ScaleState::new(seed.usage()),
                    progress: progress::Published::new(&seed.status),
                    resync: resync::Schedule::default(),
                    status: Written::seeded(&seed.status),
                    stop: None,
                    failures: failures::RecentFailures::seeded(&seed.status.recent_failures),
                    retiring: HashMap::new(),
                    settings,
                };
                let pipeline = Arc::new(Pipeline { key: key.clone(), notify: Notify::new(), state: Mutex::new(state) });
                map.insert(key.clone(), pipeline.clone());
                (pipeline, true)
            }
        };
        if changed {
            self.rebuild_routes(&map);
            // A pause lifted (or any setting changed) may make waiting work leasable.
            pipeline.notify.notify_waiters();
        }
        pipeline
    }

    /// The stop of a pipeline, when lineage or something else holds it.
    pub fn stop(&self, key: &PipelineKey) -> Option<Stop> {
        self.get(key).and_then(|p| p.lock().stop.clone())
    }

    /// Stops serving a pipeline: its runtime, route and metric series go at once; waiting lease
    /// polls wake up and find it gone.
    pub fn remove(&self, key: &PipelineKey) -> bool {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let Some(pipeline) = map.remove(key) else { return false };
        self.rebuild_routes(&map);
        drop(map);
        self.metrics.forget_pipeline(key);
        pipeline.notify.notify_waiters();
        true
    }

    /// Removes the pipelines of `namespace` (all namespaces with `None`) that are not in
    /// `alive`; returns them.
    pub fn retain(&self, namespace: Option<&str>, alive: &BTreeSet<PipelineKey>) -> Vec<PipelineKey> {
        let gone: Vec<PipelineKey> = {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            map.keys()
                .filter(|k| namespace.is_none_or(|ns| k.namespace == ns) && !alive.contains(*k))
                .cloned()
                .collect()
        };
        for key in &gone {
            self.remove(key);
        }
        gone
    }

    /// Rebuilds what is derived from every pipeline's settings: the route index (each route
    /// also excludes the ledgers other pipelines keep in its bucket) and the lineage stops.
    fn rebuild_routes(&self, map: &HashMap<PipelineKey, Arc<Pipeline>>) {
        let settings: Vec<(PipelineKey, Arc<Settings>)> =
            map.values().map(|p| (p.key.clone(), p.lock().settings.clone())).collect();
        let routes = settings.iter().map(|(_, s)| {
            let mut route = s.route.clone();
            // Ledgers in their default place, under the reserved prefix, are excluded by every
            // route already; listed here as well they were one string per pipeline of the bucket
            // in every route of it (1.6 MB with 1000 pipelines over 50 buckets).
            let ledgers = ledgers_in(&settings, &route.bucket).into_iter();
            route.exclude_prefixes.extend(ledgers.filter(|p| !p.starts_with(RESERVED_PREFIX)));
            route
        });
        let table = RouteTable::new(routes);
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);

        let stages: Vec<Stage> = settings.iter().map(|(key, s)| s.stage(key)).collect();
        let cycles = lineage::cycles(&stages);
        for pipeline in map.values() {
            let stop = cycles.iter().find(|c| c.stopped == pipeline.key).map(|cycle| Stop {
                reason: "PipelineCycle",
                message: format!(
                    "stopped: its outputs come back to its own source through {} (every hop would write new \
                     objects, forever); change a sink or a source filter to break the cycle",
                    cycle.describe()
                ),
            });
            let mut state = pipeline.lock();
            if state.stop != stop {
                if let Some(stop) = &stop {
                    tracing::warn!(pipeline = %pipeline.key, message = stop.message, "pipeline cycle");
                }
                state.stop = stop;
                drop(state);
                pipeline.notify.notify_waiters();
            }
        }
    }

    /// The ledger prefixes kept in `bucket` by every pipeline: resync skips them all.
    pub fn ledgers_in(&self, bucket: &str) -> Vec<String> {
        let settings: Vec<(PipelineKey, Arc<Settings>)> = {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            map.values().map(|p| (p.key.clone(), p.lock().settings.clone())).collect()
        };
        ledgers_in(&settings, bucket)
    }

    /// Admits one object revision found outside the gateway (resync, re-drive) and wakes the
    /// pipeline's polls; `None` when the pipeline is not served.
    pub fn admit_item(
        &self,
        key: &PipelineKey,
        item: WorkItem,
    ) -> Option<Result<Admitted, zeroflow_core::backlog::Overloaded>> {
        let pipeline = self.get(key)?;
        let now = self.now();
        let result = pipeline.lock().backlog.admit(item, now);
        Some(result)
    }

    /// Tells the scaler about new work of a pipeline.
    pub fn kick(&self, pipeline: &PipelineKey) {
        // A closed channel only means the scaler stopped with the process.
        let _ = self.kicks.send(Kick { pipeline: pipeline.clone() });
    }
}

/// The gateway's admission: each event goes to the backlog of every pipeline whose route
/// matches it; everything admissible is admitted even when one pipeline is full (the sender
/// retries the whole request on 503 and the retries are duplicates).
impl Admission for Pipelines {
    fn admit(
        &self,
        events: &[StorageEvent],
        received_at: Instant,
        namespace: Option<&str>,
    ) -> Result<AdmitReport, Overloaded> {
        let routes = self.routes();
        let now = self.millis_at(received_at);
        let mut report = AdmitReport::default();
        let mut overloaded = false;
        // Pipelines that got new work: whether their lease polls could lease it, and whether the
        // scaler must hear of it.
        let mut woken: Vec<(Arc<Pipeline>, bool, bool)> = Vec::new();
        let arrived_at = SystemTime::now();
        for event in events {
            let mut routed = false;
            for key in routes.matching(event) {
                routed = true;
                if namespace.is_some_and(|ns| key.namespace != ns) {
                    report.not_permitted += 1;
                    continue;
                }
                let Some(pipeline) = self.get(key) else {
                    report.unrouted += 1;
                    continue;
                };
                // One look under the pipeline's lock per event.
                let mut guard = pipeline.lock();
                let state = &mut *guard;
                // Any notification routed here counts as the pipeline's last event, whatever it
                // turns out to be (new, duplicate, skipped).
                state.progress.event_admitted(arrived_at);
                if event.kind == EventKind::Removed {
                    let object = ObjectId::new(event.bucket.as_str(), event.key.as_str());
                    let withdrawn =
                        state.backlog.withdraw(&object, event.sequencer.as_deref(), event.version_id.as_deref());
                    drop(guard);
                    if withdrawn {
                        self.metrics.skipped(key, Skipped::Gone, 1);
                        report.withdrawn += 1;
                    }
                    continue;
                }
                if event.is_folder_marker() {
                    drop(guard);
                    self.metrics.skipped(key, Skipped::FolderMarker, 1);
                    report.skipped += 1;
                    continue;
                }
                match state.backlog.admit(WorkItem::from(event), now) {
                    Ok(Admitted::New | Admitted::Superseded) => {
                        report.accepted += 1;
                        let paused = state.settings.paused.is_some();
                        state.scale.arrived(received_at, paused);
                        // The scaler's event path acts only on a pipeline at zero workers (or not
                        // adopted yet); above zero its tick scales by the backlog.
                        let kick = state.scale.wants_kick();
                        // A poll can lease only with store access, and not while the pipeline
                        // is stopped or paused: waking it otherwise only makes it look and wait
                        // again. Setting access, lifting a pause or a stop wakes the polls.
                        let wake = state.access.is_some() && state.may_lease();
                        drop(guard);
                        match woken.iter_mut().find(|(p, ..)| Arc::ptr_eq(p, &pipeline)) {
                            Some((_, woke, kicked)) => {
                                *woke |= wake;
                                *kicked |= kick;
                            }
                            None => woken.push((pipeline, wake, kick)),
                        }
                    }
                    Ok(Admitted::Duplicate) => report.duplicate += 1,
                    Err(_) => {
                        // The backlog asks for a resync, which finds the object later.
                        overloaded = true;
                    }
                }
            }
            if !routed {
                report.unrouted += 1;
            }
        }
        for (pipeline, wake, kick) in woken {
            if wake {
                pipeline.notify.notify_waiters();
            }
            if kick {
                self.kick(&pipeline.key);
            }
        }
        if overloaded { Err(Overloaded { retry_after_secs: self.retry_after_secs }) } else { Ok(report) }
    }
}

/// The ledger prefixes the pipelines in `settings` keep in `bucket`.
fn ledgers_in(settings: &[(PipelineKey, Arc<Settings>)], bucket: &str) -> Vec<String> {
    settings
        .iter()
        .filter(|(_, s)| s.sink_bucket == bucket && !s.ledger_prefix.is_empty())
        .map(|(_, s)| s.ledger_prefix.clone())
        .collect()
}

/// Distinguishes this process's lease ids from an earlier run's.
fn process_epoch() -> u64 {
    use std::hash::BuildHasher;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    std::hash::RandomState::new().hash_one(nanos)
}

#[cfg(test)]
mod tests;
