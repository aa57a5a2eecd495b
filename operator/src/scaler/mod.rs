//! The scaler: the single writer of each worker Deployment's replicas.
//!
//! Decisions are made by [`decide::decide`] from the backlog's counts once a second, and at once
//! when an object arrives for a pipeline at zero replicas (the event path kicks the scaler, so a
//! cold start waits for one API call, not for a poll). Before a scale-down, pods holding leases
//! are given a higher deletion cost ([`deletion_cost`]) so the ReplicaSet removes idle ones.
//! Every tick also accrues the workers' replica- and CPU-seconds ([`usage`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use prometheus::{CounterVec, Histogram, HistogramOpts, Opts, Registry};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::{DataPipeline, Usage};
use crate::controller::build::PIPELINE_LABEL;
use crate::controller::event_path::Registry as Pipelines;
use crate::controller::replicas::ReplicaBook;
use crate::workapi::WorkApi;
use zeroflow_core::PipelineKey;
use zeroflow_core::admission::{Admission, AdmitReport, Overloaded};
use zeroflow_core::backlog::Counts;
use zeroflow_core::events::StorageEvent;
use zeroflow_core::scaling::decide::{self, ScaleInput, decide};
use zeroflow_core::scaling::{deletion_cost, usage};

/// How often every pipeline's scale is looked at.
const TICK: Duration = Duration::from_secs(1);
/// Pipelines evaluated at once in a tick.
const TICK_CONCURRENCY: usize = 16;
/// Time for new deletion costs to reach the ReplicaSet controller before a scale-down.
const COST_PROPAGATION: Duration = Duration::from_millis(300);

/// A pipeline's scaling settings, from its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleSpec {
    pub deployment: String,
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub target_per_replica: i32,
    pub idle_timeout: Duration,
    pub stabilization: Duration,
    /// CPU cores one worker pod requests, for usage.
    pub cpu_per_replica: f64,
}

struct Tracked {
    spec: ScaleSpec,
    /// The replicas last asked of the Deployment (also in the ReplicaBook, for the controller).
    current: i32,
    /// A scale request for this pipeline is on its way: one at a time, so two never race.
    scaling: bool,
    /// When the first object arrived while at zero replicas (from the event path), until the
    /// scale-up that serves it: event-to-scale and cold starts are measured from here.
    work_since: Option<Instant>,
    idle_since: Option<Instant>,
    /// Recent decisions, for the scale-down stabilization window.
    history: VecDeque<(Instant, i32)>,
    usage: Usage,
    accounted_at: Instant,
}

/// A scale change [`Scaler::plan`] took on; the caller must finish it with [`Scaler::settle`].
struct Change {
    decision: decide::ScaleDecision,
    deployment: String,
    before: i32,
    work_since: Option<Instant>,
}

pub struct Scaler {
    client: Client,
    pipelines: Arc<Pipelines>,
    replicas: Arc<ReplicaBook>,
    workers: Arc<WorkApi>,
    recorder: Recorder,
    event_to_scale: Histogram,
    replica_seconds: CounterVec,
    cpu_core_seconds: CounterVec,
    tracked: Mutex<HashMap<PipelineKey, Tracked>>,
}

impl Scaler {
    pub fn new(
        client: Client,
        pipelines: Arc<Pipelines>,
        replicas: Arc<ReplicaBook>,
        workers: Arc<WorkApi>,
        recorder: Recorder,
        registry: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let event_to_scale = Histogram::with_opts(
            HistogramOpts::new(
                "zeroflow_event_to_scale_seconds",
                "From admitting an object for a pipeline at zero replicas to the apiserver accepting its scale-up",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
        )?;
        registry.register(Box::new(event_to_scale.clone()))?;
        let replica_seconds = CounterVec::new(
            Opts::new(
                "zeroflow_replica_seconds_total",
                "Worker replicas the scaler asked for, integrated over time (cost attribution)",
            ),
            &["namespace", "pipeline"],
        )?;
        let cpu_core_seconds = CounterVec::new(
            Opts::new(
                "zeroflow_cpu_core_seconds_total",
                "CPU cores requested by the pod template times replicas, integrated over time (cost attribution)",
            ),
            &["namespace", "pipeline"],
        )?;
        registry.register(Box::new(replica_seconds.clone()))?;
        registry.register(Box::new(cpu_core_seconds.clone()))?;
        Ok(Self {
            client,
            pipelines,
            replicas,
            workers,
            recorder,
            event_to_scale,
            replica_seconds,
            cpu_core_seconds,
            tracked: Mutex::new(HashMap::new()),
        })
    }

    fn tracked(&self) -> std::sync::MutexGuard<'_, HashMap<PipelineKey, Tracked>> {
        self.tracked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts or updates tracking a pipeline; `current` is the Deployment's replicas and `usage`
    /// what status recorded so far (the count goes on from there after a restart or failover).
    pub fn track(&self, key: PipelineKey, spec: ScaleSpec, current: i32, usage: &Usage) {
        self.tracked()
            .entry(key)
            .and_modify(|t| {
                t.spec = spec.clone();
                // What the Deployment really has wins over what was last asked (a reconcile may
                // have applied an older count), unless a request is on its way.
                if !t.scaling {
                    t.current = current;
                }
            })
            .or_insert_with(|| Tracked {
                spec,
                current,
                scaling: false,
                work_since: None,
                idle_since: None,
                history: VecDeque::new(),
                usage: usage.clone(),
                accounted_at: Instant::now(),
            });
    }

    pub fn forget(&self, key: &PipelineKey) {
        self.tracked().remove(key);
        let labels = [key.namespace.as_str(), key.name.as_str()];
        let _ = self.replica_seconds.remove_label_values(&labels);
        let _ = self.cpu_core_seconds.remove_label_values(&labels);
    }

    /// The usage accrued so far, for status.
    pub fn usage(&self, key: &PipelineKey) -> Option<Usage> {
        self.tracked().get(key).map(|t| t.usage.clone())
    }

    /// Runs until the process stops: ticks, and immediate scale-ups from zero when kicked. Each
    /// kick is handled in its own task, and ticks in another, so neither a slow tick nor another
    /// pipeline's scale-up ever delays a cold start.
    pub async fn run(self: Arc<Self>, mut kicks: mpsc::UnboundedReceiver<(PipelineKey, Instant)>) {
        // A JoinSet aborts its tasks when dropped, so stopping `run` stops the ticks too.
        let mut ticks = tokio::task::JoinSet::new();
        ticks.spawn(self.clone().tick_forever());
        while let Some((key, at)) = kicks.recv().await {
            let scaler = self.clone();
            tokio::spawn(async move { scaler.scale_up_from_zero(&key, at).await });
        }
    }

    async fn tick_forever(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.accrue_usage(Instant::now());
            let keys: Vec<_> = self.tracked().keys().cloned().collect();
            // Concurrently, so one pipeline's slow scale-down does not hold up the others.
            let scaler = &*self;
            futures::stream::iter(keys)
                .for_each_concurrent(TICK_CONCURRENCY, |key| async move { scaler.evaluate(&key).await })
                .await;
        }
    }

    fn accrue_usage(&self, now: Instant) {
        for (key, t) in self.tracked().iter_mut() {
            self.accrue(key, t, now);
        }
    }

    /// Accounts the time since the last accrual at the current replicas; called before every
    /// change of them, so each scale is accounted to the instant.
    fn accrue(&self, key: &PipelineKey, t: &mut Tracked, now: Instant) {
        let elapsed = now.saturating_duration_since(t.accounted_at);
        t.accounted_at = now;
        let (replica_seconds, core_seconds) = usage::accrue(&mut t.usage, t.current, t.spec.cpu_per_replica, elapsed);
        let labels = [key.namespace.as_str(), key.name.as_str()];
        self.replica_seconds.with_label_values(&labels).inc_by(replica_seconds);
        self.cpu_core_seconds.with_label_values(&labels).inc_by(core_seconds);
    }

    /// The event path's fast lane: only a pipeline at zero replicas is scaled here. The
    /// admission time is kept, so whichever evaluation scales up measures from it.
    async fn scale_up_from_zero(&self, key: &PipelineKey, admitted_at: Instant) {
        let at_zero = match self.tracked().get_mut(key) {
            Some(t) if t.current == 0 => {
                t.work_since = Some(t.work_since.map_or(admitted_at, |since| since.min(admitted_at)));
                true
            }
            _ => false,
        };
        if at_zero {
            self.evaluate(key).await;
        }
    }

    async fn evaluate(&self, key: &PipelineKey) {
        // Twice at most: an object that arrived at zero while a scale-down to zero was on its
        // way is served at once rather than at the next tick.
        for _ in 0..2 {
            let Some(counts) = self.pipelines.counts(key) else { return };
            let Some(change) = self.plan(key, &counts, Instant::now()) else { return };
            let scaled = self.apply(key, &change).await;
            if !self.settle(key, &change, scaled) {
                return;
            }
        }
    }

    /// Sends a change to the apiserver; true when it was accepted.
    async fn apply(&self, key: &PipelineKey, change: &Change) -> bool {
        let (before, after) = (change.before, change.decision.replicas);
        if before == 0 {
            self.workers.cold_start_began(key, change.work_since.unwrap_or_else(Instant::now));
        } else if after == 0 {
            self.workers.cold_start_cancelled(key);
        } else if after < before {
            self.protect_busy_pods(key).await;
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = json!({"spec": {"replicas": after}});
        match api.patch_scale(&change.deployment, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                if let Some(since) = change.work_since.filter(|_| before == 0) {
                    let took = since.elapsed();
                    self.event_to_scale.observe(took.as_secs_f64());
                    let ms = took.as_secs_f64() * 1000.0;
                    info!(
                        namespace = key.namespace,
                        name = key.name,
                        event_to_scale_ms = ms,
                        "scaled from zero on an event"
                    );
                }
                let reason = change.decision.reason;
                let note = format!("scaled workers from {before} to {after} ({reason})");
                info!(namespace = key.namespace, name = key.name, note, "scale");
                self.record(key, before, after, reason, &note).await;
                true
            }
            Err(e) => {
                warn!(namespace = key.namespace, name = key.name, error = %e, "scale failed");
                if before == 0 {
                    self.workers.cold_start_cancelled(key);
                }
                false
            }
        }
    }

    /// Ends a change: on failure the replicas go back to what they were (decided again at the
    /// next tick). True when an object arrived at zero meanwhile and needs another look.
    fn settle(&self, key: &PipelineKey, change: &Change, scaled: bool) -> bool {
        let mut tracked = self.tracked();
        let Some(t) = tracked.get_mut(key) else { return false };
        t.scaling = false;
        if !scaled {
            self.accrue(key, t, Instant::now());
            t.current = change.before;
            if change.before == 0 {
                // Kept for the retry, which serves the same objects.
                t.work_since = t.work_since.or(change.work_since);
            }
            self.replicas.set(&key.namespace, &key.name, change.before);
            return false;
        }
        t.current == 0 && t.work_since.is_some()
    }

    /// Marks the pipeline's worker pods with deletion costs from the leases they hold, so the
    /// coming scale-down removes idle pods first. Best effort: a failure here is logged and the
    /// scale-down goes on (a removed busy worker still finishes within its grace period).
    async fn protect_busy_pods(&self, key: &PipelineKey) {
        let busy = self.workers.busy_pods(key);
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let selector = format!("{PIPELINE_LABEL}={},app.kubernetes.io/component=worker", key.name);
        let pods = match api.list_metadata(&ListParams::default().labels(&selector)).await {
            Ok(pods) => pods.items,
            Err(e) => return warn!(namespace = key.namespace, name = key.name, error = %e, "cannot list worker pods"),
        };
        let live = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none());
        let current = live.map(|p| {
            (
                p.metadata.name.as_deref().unwrap_or_default(),
                p.annotations().get(deletion_cost::ANNOTATION).map(String::as_str),
            )
        });
        let mut changed = false;
        for (pod, cost) in deletion_cost::changes(current, &busy) {
            let patch = json!({"metadata": {"annotations": {deletion_cost::ANNOTATION: cost}}});
            match api.patch(&pod, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    tracing::debug!(namespace = key.namespace, pod, cost, "deletion cost set");
                    changed = true;
                }
                Err(e) => warn!(namespace = key.namespace, pod, error = %e, "cannot set a pod's deletion cost"),
            }
        }
        if changed {
            // The ReplicaSet controller ranks pods from its own watch cache; give the annotation
            // a moment to reach it ahead of the scale change (a scale-down is not urgent).
            tokio::time::sleep(COST_PROPAGATION).await;
        }
    }

    /// Updates the idle clock and history and decides. A change is taken on at once — the
    /// replicas, the ReplicaBook and the usage account move to it under the lock — and
    /// returned for the caller to send; `None` when nothing changes, the pipeline is not
    /// tracked, or another change is on its way.
    fn plan(&self, key: &PipelineKey, counts: &Counts, now: Instant) -> Option<Change> {
        let mut tracked = self.tracked();
        let t = tracked.get_mut(key)?;
        if t.scaling {
            return None;
        }
        let busy = counts.pending + counts.in_flight > 0;
        t.idle_since = if busy { None } else { Some(t.idle_since.unwrap_or(now)) };
        while t.history.front().is_some_and(|(at, _)| now.duration_since(*at) > t.spec.stabilization) {
            t.history.pop_front();
        }
        let recent_max = t.history.iter().map(|(_, r)| *r).max().unwrap_or(t.current);
        let decision = decide(&ScaleInput {
            current: t.current,
            pending: u64::try_from(counts.pending).unwrap_or(u64::MAX),
            in_flight: u64::try_from(counts.in_flight).unwrap_or(u64::MAX),
            min_replicas: t.spec.min_replicas,
            max_replicas: t.spec.max_replicas,
            target_per_replica: t.spec.target_per_replica,
            idle_for: t.idle_since.map(|since| now.duration_since(since)),
            idle_timeout: t.spec.idle_timeout,
            recent_max,
        });
        // Remember what the work wanted, so stabilization holds against a short lull.
        let wanted_for_work = if busy { decision.wanted } else { 0 };
        t.history.push_back((now, wanted_for_work));
        if decision.replicas == t.current {
            if t.current == 0 && !busy {
                t.work_since = None;
            }
            return None;
        }
        self.accrue(key, t, now);
        let before = t.current;
        t.current = decision.replicas;
        t.scaling = true;
        let work_since = if before == 0 { t.work_since.take() } else { None };
        self.replicas.set(&key.namespace, &key.name, decision.replicas);
        Some(Change { decision, deployment: t.spec.deployment.clone(), before, work_since })
    }

    /// An Event and the last-scale fields of status.
    async fn record(&self, key: &PipelineKey, before: i32, after: i32, reason: &str, note: &str) {
        let reference = ObjectReference {
            api_version: Some(DataPipeline::api_version(&()).into()),
            kind: Some(DataPipeline::kind(&()).into()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            ..ObjectReference::default()
        };
        let event = Event {
            type_: EventType::Normal,
            reason: if after > before { "ScaledUp".into() } else { "ScaledDown".into() },
            note: Some(note.to_owned()),
            // Events with the same action and reason form one series, which keeps its first
            // note: one series per transition, so "from 1 to 4" is not shown as "from 0 to 1".
            action: format!("Scale{before}To{after}"),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            warn!(error = %e, "failed to publish Event");
        }
        let api: Api<DataPipeline> = Api::namespaced(self.client.clone(), &key.namespace);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = json!({"status": {"desiredReplicas": after, "lastScaleTime": now, "lastScaleReason": reason}});
        if let Err(e) = api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            warn!(error = %e, "failed to record the scale in status");
        }
    }
}

/// Wraps the gateway's admission so that objects for a pipeline kick the scaler at once.
pub struct ScalingAdmission<A> {
    inner: A,
    kick: mpsc::UnboundedSender<(PipelineKey, Instant)>,
}

impl<A> ScalingAdmission<A> {
    pub fn new(inner: A, kick: mpsc::UnboundedSender<(PipelineKey, Instant)>) -> Self {
        Self { inner, kick }
    }
}

impl<A: Admission> Admission for ScalingAdmission<A> {
    fn admit(&self, events: Vec<(PipelineKey, StorageEvent)>) -> Result<AdmitReport, Overloaded> {
        let now = Instant::now();
        let mut keys: Vec<PipelineKey> = events.iter().map(|(k, _)| k.clone()).collect();
        keys.dedup();
        let report = self.inner.admit(events)?;
        if report.accepted > 0 {
            for key in keys {
                // A closed channel only means the scaler stopped with the process.
                let _ = self.kick.send((key, now));
            }
        }
        Ok(report)
    }
}
