//! The scaler: the only writer of each worker Deployment's `spec.replicas` (field manager
//! `zeroflow-scaler`, through the `scale` subresource).
//!
//! Decisions are made by [`decide`] from the backlog's counts once a second, and at once when
//! an object arrives for a pipeline at zero replicas (the gateway kicks the scaler, so a cold
//! start waits for one API call, not for a poll). Before a scale-down, pods holding work leases
//! get a higher deletion cost so the ReplicaSet removes idle ones, and the idle ones are retired
//! (given no object) until the ReplicaSet has chosen which go; a scale-down never goes below the
//! workers holding leases. Every tick also accrues the workers' replica- and CPU-seconds.
//!
//! **Adoption.** When this replica takes a pipeline up (a start, a restart, a leader change) it
//! knows nothing of the workers already running. Before anything else it reads the live replica
//! count and adopts it; nothing is reset. If workers are running, some may be busy with leases
//! the previous leader granted: for one heartbeat interval plus a margin (the recovery window)
//! the pipeline leases nothing and is not scaled below the adopted count, so every busy worker
//! can re-attach its lease ([`crate::workapi`]) before any object could be handed to a second
//! worker. A pipeline at zero workers needs no window and serves at once, and so does one whose
//! worker pods were all created after this replica began leading ([`adoption`]): they can hold no
//! lease but this replica's (a warm pipeline created with `minReplicas: 1`, say, whose first
//! object would otherwise wait out the window).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ListParams, ObjectList, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};
use zeroflow_core::PipelineKey;
use zeroflow_core::scaling::decide::{ScaleDecision, ScaleInput, decide};
use zeroflow_core::scaling::stabilization::RecentMax;
use zeroflow_core::scaling::usage::Usage;
use zeroflow_core::scaling::windows::OpenWindow;
use zeroflow_core::scaling::{deletion_cost, usage};
use zeroflow_core::work::heartbeat_interval_seconds;

use crate::api::DataPipeline;
use crate::controller::build::PIPELINE_LABEL;
use crate::events::EventRecorder;
use crate::runtime::{Kick, Pipeline, Pipelines};
use crate::status_writer::{Concern, StatusWriter};

pub mod adoption;
pub mod warm;

/// Field manager of every replica write.
pub const FIELD_MANAGER: &str = "zeroflow-scaler";
/// How often every pipeline's scale is looked at.
const TICK: Duration = Duration::from_secs(1);
/// Pipelines evaluated at once in a tick.
const TICK_CONCURRENCY: usize = 16;
/// Time for new deletion costs to reach the ReplicaSet controller before a scale-down.
const COST_PROPAGATION: Duration = Duration::from_millis(300);
/// Longest wait for the ReplicaSet to choose the pods a scale-down removes; meanwhile idle
/// workers get no object. It usually takes well under a second.
const REMOVAL_WAIT: Duration = Duration::from_secs(10);
/// How long a retired pod stays retired once its scale-down has removed it. A removed pod's
/// worker has its SIGTERM within moments (then it asks for no more work); until then it may ask
/// although its pod is gone from the API (a force deletion, or a node that is not a kubelet).
pub const RETIRED_MEMORY: Duration = Duration::from_secs(120);
/// How often the worker pods are listed during that wait.
const REMOVAL_POLL: Duration = Duration::from_millis(100);
/// Added to one heartbeat interval for the recovery window: a busy worker whose heartbeat failed
/// while no leader answered retries within this.
const RECOVERY_MARGIN: Duration = Duration::from_secs(5);

/// A pipeline's scaling settings, from its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleSpec {
    pub deployment: String,
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub target_per_replica: i32,
    pub concurrency_per_replica: i32,
    pub idle_timeout: Duration,
    pub stabilization: Duration,
    /// The work lease duration: busy workers renew within a third of it (at most 10 s).
    pub lease_duration: Duration,
    /// CPU cores one worker pod requests, for usage.
    pub cpu_per_replica: f64,
    /// Warm windows: scheduled minimums (`spec.scaling.schedules`).
    pub schedules: Vec<warm::Schedule>,
}

/// The replicas a new worker Deployment is created with: `minReplicas`, so that the apiserver
/// does not default it to 1 and start a worker for nothing.
pub fn initial_replicas(spec: &ScaleSpec) -> i32 {
    spec.min_replicas.max(0)
}

/// How long a new leader holds a pipeline with running workers: one heartbeat interval of its
/// work leases plus a margin.
pub fn recovery_window(lease_duration: Duration) -> Duration {
    let lease_ms = u64::try_from(lease_duration.as_millis()).unwrap_or(u64::MAX);
    Duration::from_secs(heartbeat_interval_seconds(lease_ms)) + RECOVERY_MARGIN
}

/// Workers that must not be removed: pods holding live leases, and a share of the leases whose
/// holder is unknown (tokens that name no pod).
pub fn busy_workers(pods: usize, anonymous_leases: usize, concurrency_per_replica: i32) -> i32 {
    let per = usize::try_from(concurrency_per_replica.max(1)).unwrap_or(1);
    i32::try_from(pods + anonymous_leases.div_ceil(per)).unwrap_or(i32::MAX)
}

/// The scaler's per-pipeline state, in the pipeline's runtime; only this module changes it.
#[derive(Debug)]
pub struct ScaleState {
    /// The Deployment's replicas as last adopted or asked for; `None` until adopted.
    current: Option<i32>,
    /// A scale request is on its way (or the adoption read): one at a time, so two never race.
    busy: bool,
    /// When the first object arrived while at zero replicas (its notification reached the
    /// gateway), until the scale-up that serves it: event-to-scale and cold starts start here.
    work_since: Option<Instant>,
    idle_since: Option<Instant>,
    /// Recent wanted counts, for the scale-down stabilization window.
    history: RecentMax,
    /// No scale below `recovery_floor` until then (see the module docs).
    recovering_until: Option<Instant>,
    recovery_floor: i32,
    usage: Usage,
    accounted_at: Instant,
    /// The warm window open at the last look, and the minimum it calls for (0 when none).
    window: Option<OpenWindow>,
    window_min: i32,
    /// Whether status was told about the windows since this replica took the pipeline up.
    window_reported: bool,
}

impl ScaleState {
    /// `usage` is what status recorded so far: the count goes on after a restart.
    pub fn new(usage: Usage) -> Self {
        Self {
            current: None,
            busy: false,
            work_since: None,
            idle_since: None,
            history: RecentMax::default(),
            recovering_until: None,
            recovery_floor: 0,
            usage,
            accounted_at: Instant::now(),
            window: None,
            window_min: 0,
            window_reported: false,
        }
    }

    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// The replicas asked for, once adopted.
    pub fn replicas(&self) -> Option<i32> {
        self.current
    }

    /// An object was admitted whose notification reached the gateway at `at`. At zero replicas
    /// (or before adoption) event-to-scale and the cold start count from the first of these.
    /// Called under the pipeline's lock with the admission itself, so whichever evaluation
    /// scales up, the gateway's kick or the tick, measures from it. A paused pipeline does not
    /// serve arrivals: its next scale-up is the unpause, not an event.
    pub fn arrived(&mut self, at: Instant, paused: bool) {
        if !paused && self.current.is_none_or(|c| c == 0) {
            self.work_since = Some(self.work_since.map_or(at, |since| since.min(at)));
        }
    }

    /// Whether new work must be told to the scaler at once ([`Pipelines::kick`]): only at zero
    /// replicas or before adoption, the only states its event path acts on; above zero the
    /// tick scales by the backlog. Read under the pipeline's lock with the admission, so a
    /// scale-down to zero planned after it sees the admitted work and does not happen.
    pub fn wants_kick(&self) -> bool {
        self.current.is_none_or(|c| c == 0)
    }
}

/// The label selector of a pipeline's worker pods.
fn worker_selector(key: &PipelineKey) -> String {
    format!("{PIPELINE_LABEL}={},app.kubernetes.io/component=worker", key.name)
}

/// A change [`Scaler::plan`] took on; the caller must finish it with [`Scaler::settle`].
struct Change {
    decision: ScaleDecision,
    deployment: String,
    before: i32,
    work_since: Option<Instant>,
}

pub struct Scaler {
    client: Client,
    pipelines: Arc<Pipelines>,
    recorder: EventRecorder,
    status: StatusWriter,
    /// When this replica began leading (the scaler is made once leadership is won, and a lost
    /// lease ends the process): workers created later can hold no earlier leader's lease.
    leading_since: SystemTime,
}

impl Scaler {
    /// To be made once this replica leads: the time it is made is taken as the start of its
    /// leadership ([`adoption`]).
    pub fn new(client: Client, pipelines: Arc<Pipelines>, recorder: EventRecorder, status: StatusWriter) -> Self {
        Self { client, pipelines, recorder, status, leading_since: SystemTime::now() }
    }

    /// Runs until the process stops: ticks, and immediate scale-ups from zero when kicked. Each
    /// kick is handled in its own task, and ticks in another, so neither a slow tick nor another
    /// pipeline's scale-up ever delays a cold start.
    pub async fn run(self: Arc<Self>, mut kicks: mpsc::UnboundedReceiver<Kick>) {
        // A JoinSet aborts its tasks when dropped, so stopping `run` stops the ticks too.
        let mut ticks = tokio::task::JoinSet::new();
        ticks.spawn(self.clone().tick_forever());
        while let Some(kick) = kicks.recv().await {
            let scaler = self.clone();
            tokio::spawn(async move { scaler.scale_up_from_zero(&kick).await });
        }
    }

    async fn tick_forever(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let pipelines = self.pipelines.all();
            for pipeline in &pipelines {
                self.accrue(pipeline, Instant::now());
            }
            // Concurrently, so one pipeline's slow scale-down does not hold up the others.
            let scaler = &*self;
            futures::stream::iter(pipelines)
                .for_each_concurrent(TICK_CONCURRENCY, |p| async move { scaler.evaluate(&p).await })
                .await;
        }
    }

    /// Accounts the time since the last accrual at the current replicas; called every tick and
    /// before every change of them, so each scale is accounted to the instant.
    fn accrue(&self, pipeline: &Pipeline, now: Instant) {
        let mut guard = pipeline.lock();
        let state = &mut *guard;
        let cpu = state.settings.scale.cpu_per_replica;
        let s = &mut state.scale;
        let elapsed = now.saturating_duration_since(s.accounted_at);
        s.accounted_at = now;
        let Some(current) = s.current else { return };
        let (replica_seconds, core_seconds) = usage::accrue(&mut s.usage, current, cpu, elapsed);
        // A pipeline's usage series appear with its first worker: created at zero for every idle
        // pipeline, they were two of its seven series, in memory and in every scrape.
        let labels = [pipeline.key.namespace.as_str(), pipeline.key.name.as_str()];
        let metrics = self.pipelines.metrics();
        if replica_seconds > 0.0 {
            metrics.replica_seconds.with_label_values(&labels).inc_by(replica_seconds);
        }
        if core_seconds > 0.0 {
            metrics.cpu_core_seconds.with_label_values(&labels).inc_by(core_seconds);
        }
    }

    /// The event path's fast lane: a pipeline at zero replicas (or not adopted yet) is
    /// evaluated at once. The arrival time was noted at admission ([`ScaleState::arrived`]).
    async fn scale_up_from_zero(&self, kick: &Kick) {
        let Some(pipeline) = self.pipelines.get(&kick.pipeline) else { return };
        let at_zero = pipeline.lock().scale.wants_kick();
        if at_zero {
            self.evaluate(&pipeline).await;
        }
    }

    async fn evaluate(&self, pipeline: &Pipeline) {
        if !self.adopt(pipeline).await {
            return;
        }
        self.follow_windows(pipeline);
        // Twice at most: an object that arrived at zero while a scale-down to zero was on its
        // way is served at once rather than at the next tick.
        for _ in 0..2 {
            let Some(change) = self.plan(pipeline, Instant::now()) else { return };
            let scaled = self.apply(pipeline, &change).await;
            if !self.settle(pipeline, &change, scaled) {
                return;
            }
        }
    }

    /// Reads the live replica count once, when the pipeline is taken up; true once adopted.
    async fn adopt(&self, pipeline: &Pipeline) -> bool {
        let deployment = {
            let mut state = pipeline.lock();
            if state.scale.current.is_some() {
                return true;
            }
            if state.scale.busy {
                return false;
            }
            state.scale.busy = true;
            state.settings.scale.deployment.clone()
        };
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &pipeline.key.namespace);
        let live = match api.get_scale(&deployment).await {
            Ok(scale) => Some(scale.spec.and_then(|s| s.replicas).unwrap_or(0)),
            // Not created yet: the controller kicks the scaler once it is.
            Err(kube::Error::Api(e)) if e.code == 404 => None,
            Err(e) => {
                warn!(pipeline = %pipeline.key, error = %e, "cannot read the worker Deployment's scale");
                None
            }
        };
        let earlier_leases = match live {
            Some(live) => self.look_at_pods(pipeline, live).await,
            None => false,
        };
        let now = Instant::now();
        let now_ms = self.pipelines.millis_at(now);
        let mut guard = pipeline.lock();
        let state = &mut *guard;
        state.scale.busy = false;
        let Some(live) = live else { return false };
        let lease_duration = state.settings.scale.lease_duration;
        let s = &mut state.scale;
        s.current = Some(live);
        s.accounted_at = now;
        if earlier_leases {
            let window = recovery_window(lease_duration);
            s.recovering_until = Some(now + window);
            s.recovery_floor = live;
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            state.backlog.hold_until(now_ms.saturating_add(window_ms));
            info!(pipeline = %pipeline.key, replicas = live, window_s = window.as_secs(), "adopted running workers; leasing resumes after their leases had a chance to re-attach");
        } else {
            state.backlog.hold_until(0);
            if live > 0 {
                info!(pipeline = %pipeline.key, replicas = live, "adopted workers created while this replica leads: no lease to re-attach, leasing at once");
            } else {
                info!(pipeline = %pipeline.key, "adopted at zero workers");
            }
        }
        drop(guard);
        pipeline.notify.notify_waiters();
        true
    }

    /// Lists the pipeline's worker pods once, at adoption of `live` replicas: retires the pods on
    /// their way out ([`adoption::on_their_way_out`]) and says whether running workers may hold
    /// leases an earlier leader granted ([`adoption::earlier_leases_possible`]). When the pods
    /// cannot be listed nothing is retired, and above zero the recovery window is held.
    async fn look_at_pods(&self, pipeline: &Pipeline, live: i32) -> bool {
        let pods = match self.list_workers(&pipeline.key).await {
            Ok(pods) => pods.items,
            Err(e) => {
                warn!(pipeline = %pipeline.key, error = %e, "cannot list worker pods; holding leasing for the recovery window");
                return live > 0;
            }
        };
        let facts = pods
            .iter()
            .map(|p| (p.metadata.name.as_deref().unwrap_or_default(), p.metadata.deletion_timestamp.is_some()));
        let going = adoption::on_their_way_out(live, facts);
        if !going.is_empty() {
            let now = Instant::now();
            let mut state = pipeline.lock();
            for name in &going {
                state.retiring.insert((*name).to_owned(), now);
            }
            info!(pipeline = %pipeline.key, replicas = live, pods = going.len(), "adopted with worker pods on their way out: they are given nothing");
        }
        live > 0
            && adoption::earlier_leases_possible(
                pods.iter().map(|p| p.metadata.creation_timestamp.as_ref().map(|t| SystemTime::from(t.0))),
                self.leading_since,
            )
    }

    /// Looks at the pipeline's warm windows: the open one's minimum goes into the decisions that
    /// follow; a window opening or closing is shown in status and an Event. Nothing here waits
    /// for the apiserver: it runs before every decision, also on the event path.
    fn follow_windows(&self, pipeline: &Pipeline) {
        let (schedules, before, after) = {
            let mut guard = pipeline.lock();
            let state = &mut *guard;
            let schedules = &state.settings.scale.schedules;
            let s = &mut state.scale;
            if schedules.is_empty() && s.window.is_none() && s.window_reported {
                return;
            }
            let windows = warm::state(schedules, chrono::Utc::now());
            s.window_min = windows.min_replicas;
            let before = std::mem::replace(&mut s.window, windows.open);
            let changed = warm::changed(before.as_ref(), s.window.as_ref());
            if !changed && s.window_reported {
                return;
            }
            s.window_reported = true;
            // Status is written for the first look too (the writer skips what status shows), so
            // a window left in status by an earlier run is cleared; an Event only on a change.
            let after = s.window.clone();
            (schedules.clone(), changed.then_some(before), after)
        };
        let key = &pipeline.key;
        self.status.apply(key, Concern::Schedule, warm::status_fields(&schedules, after.as_ref()));
        let Some(before) = before else { return };
        let (reason, note) = warm::event(&schedules, before.as_ref(), after.as_ref());
        info!(pipeline = %key, note, "warm window");
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        // Off the scale path: an object arriving as a window opens is not held up by the Event.
        let (recorder, reference) = (self.recorder.clone(), reference(key));
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                warn!(error = %e, "failed to publish Event");
            }
        });
    }

    /// Updates the idle clock and history and decides. A change is taken on at once — the
    /// replicas and the usage account move to it under the lock — and returned for the caller
    /// to send; `None` when nothing changes or another change is on its way.
    fn plan(&self, pipeline: &Pipeline, now: Instant) -> Option<Change> {
        let now_ms = self.pipelines.millis_at(now);
        let mut guard = pipeline.lock();
        let state = &mut *guard;
        let mut counts = state.backlog.counts();
        if state.stop.is_some() {
            // A stopped pipeline leases nothing: what waits is no reason for workers.
            counts.pending = 0;
        }
        let (pods, anonymous) = state.leases.busy_pods(now_ms);
        let spec = state.settings.scale.clone();
        let paused = state.settings.paused.map(|p| p.replicas);
        let cpu = spec.cpu_per_replica;
        let t = &mut state.scale;
        let current = t.current?;
        if t.busy {
            return None;
        }
        if current > 0 {
            // Arrivals noted before adoption found workers running: no cold start to measure.
            t.work_since = None;
        }
        let has_work = counts.pending + counts.in_flight > 0;
        t.idle_since = if has_work { None } else { Some(t.idle_since.unwrap_or(now)) };
        t.history.expire(now, spec.stabilization);
        let recent_max = t.history.max().unwrap_or(current);
        if t.recovering_until.is_some_and(|until| now >= until) {
            t.recovering_until = None;
        }
        let recovering = if t.recovering_until.is_some() { t.recovery_floor } else { 0 };
        let busy = busy_workers(pods.len(), anonymous, spec.concurrency_per_replica);
        // An open warm window raises the minimum (never above maxReplicas).
        let min_replicas = spec.min_replicas.max(t.window_min.min(spec.max_replicas));
        let mut decision = decide(&ScaleInput {
            current,
            pending: u64::try_from(counts.pending).unwrap_or(u64::MAX),
            in_flight: u64::try_from(counts.in_flight).unwrap_or(u64::MAX),
            min_replicas,
            max_replicas: spec.max_replicas,
            target_per_replica: spec.target_per_replica,
            idle_for: t.idle_since.map(|since| now.duration_since(since)),
            idle_timeout: spec.idle_timeout,
            recent_max,
            floor: busy.max(recovering),
            paused,
        });
        if !has_work && paused.is_none() && min_replicas > spec.min_replicas && decision.replicas == min_replicas {
            decision.reason = "warm window";
        }
        // Remember what the work wanted, so stabilization holds against a short lull.
        t.history.record(now, if has_work { decision.wanted } else { 0 });
        if paused.is_some() {
            t.work_since = None;
        }
        if decision.replicas == current {
            if current == 0 && !has_work {
                t.work_since = None;
            }
            return None;
        }
        // Account the old count up to now, then move.
        let elapsed = now.saturating_duration_since(t.accounted_at);
        t.accounted_at = now;
        usage::accrue(&mut t.usage, current, cpu, elapsed);
        t.current = Some(decision.replicas);
        t.busy = true;
        let work_since = if current == 0 { t.work_since.take() } else { None };
        if paused.is_some() {
            // Workers held while paused take nothing: no cold start to measure.
            state.cold_start.cancel();
        } else if current == 0 {
            state.cold_start.begin(work_since.unwrap_or(now));
        } else if decision.replicas == 0 {
            state.cold_start.cancel();
        }
        Some(Change { decision, deployment: spec.deployment, before: current, work_since })
    }

    /// Sends a change to the apiserver; true when it was accepted. A scale-down first retires
    /// the idle workers (see [`Self::retire_idle_pods`]) and ends once the ReplicaSet has chosen
    /// which pods go.
    async fn apply(&self, pipeline: &Pipeline, change: &Change) -> bool {
        let (before, after) = (change.before, change.decision.replicas);
        if after >= before {
            return self.send(pipeline, change).await;
        }
        let retired = self.retire_idle_pods(pipeline, after > 0).await;
        let scaled = self.send(pipeline, change).await;
        let staying = if scaled { self.await_removal(pipeline, after).await } else { None };
        {
            // The survivors take work again (all retired pods when the scale-down failed or the
            // survivors are unknown); pods on their way out, or gone, never do.
            let mut state = pipeline.lock();
            for pod in staying.as_ref().unwrap_or(&retired) {
                state.retiring.remove(pod);
            }
        }
        pipeline.notify.notify_waiters();
        scaled
    }

    async fn send(&self, pipeline: &Pipeline, change: &Change) -> bool {
        let key = &pipeline.key;
        let (before, after) = (change.before, change.decision.replicas);
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = json!({"spec": {"replicas": after}});
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        let sent = Instant::now();
        match api.patch_scale(&change.deployment, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                if let Some(since) = change.work_since.filter(|_| before == 0) {
                    let took = since.elapsed();
                    self.pipelines.metrics().event_to_scale.observe(took.as_secs_f64());
                    // Where the time went: before the PATCH was sent (gateway, admission, the
                    // kick, the decision) and in the PATCH itself.
                    let before_patch_ms = sent.saturating_duration_since(since).as_secs_f64() * 1000.0;
                    let patch_ms = sent.elapsed().as_secs_f64() * 1000.0;
                    info!(
                        pipeline = %key,
                        event_to_scale_ms = took.as_secs_f64() * 1000.0,
                        before_patch_ms,
                        patch_ms,
                        "scaled from zero on an event"
                    );
                }
                let reason = change.decision.reason;
                let note = format!("scaled workers from {before} to {after} ({reason})");
                info!(pipeline = %key, note, "scale");
                self.record(key, before, after, reason, &note).await;
                true
            }
            Err(e) => {
                warn!(pipeline = %key, error = %e, "scale failed");
                false
            }
        }
    }

    /// Ends a change: on failure the replicas go back to what they were (decided again at the
    /// next tick). True when an object arrived at zero meanwhile and needs another look.
    fn settle(&self, pipeline: &Pipeline, change: &Change, scaled: bool) -> bool {
        let mut guard = pipeline.lock();
        let state = &mut *guard;
        let t = &mut state.scale;
        t.busy = false;
        if !scaled {
            t.current = Some(change.before);
            if change.before == 0 {
                // Kept for the retry, which serves the same objects.
                t.work_since = t.work_since.or(change.work_since);
                state.cold_start.cancel();
            }
            return false;
        }
        t.current == Some(0) && t.work_since.is_some()
    }

    /// Before a scale-down: every worker pod holding no lease now is retired (the work API gives
    /// it nothing until the scale-down has ended), and, when some workers stay (`set_costs`),
    /// busy pods get a higher deletion cost so the ReplicaSet removes idle ones. Retiring first
    /// and reading the leases under the same lock means no pod can become busy unseen between
    /// the two: an idle worker would otherwise lease an object in the moments before the
    /// ReplicaSet stops it. Best effort: when the pods cannot be listed the scale-down goes on
    /// unprotected (a removed busy worker still finishes within its grace period). Returns the
    /// pods retired now.
    async fn retire_idle_pods(&self, pipeline: &Pipeline, set_costs: bool) -> Vec<String> {
        let key = &pipeline.key;
        let pods = match self.list_workers(key).await {
            Ok(pods) => pods.items,
            Err(e) => {
                warn!(pipeline = %key, error = %e, "cannot list worker pods");
                return Vec::new();
            }
        };
        let (busy, retired) = {
            let mut state = pipeline.lock();
            let busy = state.leases.busy_pods(self.pipelines.now()).0;
            let now = Instant::now();
            state.retiring.retain(|_, at| now.duration_since(*at) < RETIRED_MEMORY);
            let idle: Vec<String> =
                pods.iter().filter_map(|p| p.metadata.name.clone()).filter(|n| !busy.contains_key(n)).collect();
            for pod in &idle {
                state.retiring.insert(pod.clone(), now);
            }
            (busy, idle)
        };
        if !set_costs {
            return retired;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let live = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none());
        let current = live.map(|p| {
            (
                p.metadata.name.as_deref().unwrap_or_default(),
                p.annotations().get(deletion_cost::ANNOTATION).map(String::as_str),
            )
        });
        let mut changed = false;
        let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
        for (pod, cost) in deletion_cost::changes(current, &busy) {
            let patch = json!({"metadata": {"annotations": {deletion_cost::ANNOTATION: cost}}});
            match api.patch(&pod, &params, &Patch::Merge(&patch)).await {
                Ok(_) => {
                    tracing::debug!(pipeline = %key, pod, cost, "deletion cost set");
                    changed = true;
                }
                Err(e) => warn!(pipeline = %key, pod, error = %e, "cannot set a pod's deletion cost"),
            }
        }
        if changed {
            // The ReplicaSet controller ranks pods from its own watch cache; give the annotation
            // a moment to reach it ahead of the scale change (a scale-down is not urgent).
            tokio::time::sleep(COST_PROPAGATION).await;
        }
        retired
    }

    /// The pipeline's worker pods, metadata only.
    async fn list_workers(&self, key: &PipelineKey) -> kube::Result<ObjectList<PartialObjectMeta<Pod>>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        api.list_metadata(&ListParams::default().labels(&worker_selector(key))).await
    }

    /// After a scale-down was accepted: waits until no more than `replicas` worker pods are left
    /// without a deletion timestamp (the ReplicaSet has chosen which go), up to
    /// [`REMOVAL_WAIT`]. Returns the pods that stay; `None` when they cannot be listed.
    async fn await_removal(&self, pipeline: &Pipeline, replicas: i32) -> Option<Vec<String>> {
        let key = &pipeline.key;
        let replicas = usize::try_from(replicas).unwrap_or(0);
        let give_up = Instant::now() + REMOVAL_WAIT;
        loop {
            match self.list_workers(key).await {
                Ok(pods) => {
                    let staying: Vec<String> = pods
                        .items
                        .into_iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter_map(|p| p.metadata.name)
                        .collect();
                    if staying.len() <= replicas || Instant::now() >= give_up {
                        if staying.len() > replicas {
                            warn!(pipeline = %key, left = staying.len(), replicas, "the ReplicaSet has not removed workers yet; leasing to them again");
                        }
                        return Some(staying);
                    }
                }
                Err(e) => {
                    warn!(pipeline = %key, error = %e, "cannot list worker pods after a scale-down");
                    if Instant::now() >= give_up {
                        return None;
                    }
                }
            }
            tokio::time::sleep(REMOVAL_POLL).await;
        }
    }

    /// An Event and the scale fields of status.
    async fn record(&self, key: &PipelineKey, before: i32, after: i32, reason: &str, note: &str) {
        let reference = reference(key);
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
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        self.status.apply(
            key,
            Concern::Scale,
            json!({"desiredReplicas": after, "lastScaleTime": now, "lastScaleReason": reason}),
        );
    }
}

/// The pipeline, as the object its Events are about.
fn reference(key: &PipelineKey) -> ObjectReference {
    ObjectReference {
        api_version: Some(DataPipeline::api_version(&()).into()),
        kind: Some(DataPipeline::kind(&()).into()),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod writes;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_deployments_start_at_min_replicas() {
        let spec = ScaleSpec {
            deployment: "p-worker".into(),
            min_replicas: 2,
            max_replicas: 5,
            target_per_replica: 4,
            concurrency_per_replica: 1,
            idle_timeout: Duration::from_secs(60),
            stabilization: Duration::from_secs(30),
            lease_duration: Duration::from_secs(120),
            cpu_per_replica: 0.0,
            schedules: Vec::new(),
        };
        assert_eq!(initial_replicas(&spec), 2);
        assert_eq!(initial_replicas(&ScaleSpec { min_replicas: 0, ..spec }), 0);
    }

    #[test]
    fn the_recovery_window_is_one_heartbeat_plus_a_margin() {
        assert_eq!(recovery_window(Duration::from_secs(120)), Duration::from_secs(10 + 5));
        assert_eq!(recovery_window(Duration::from_secs(15)), Duration::from_secs(5 + 5));
        assert_eq!(recovery_window(Duration::from_secs(5)), Duration::from_secs(1 + 5));
    }

    #[test]
    fn busy_workers_count_pods_and_unattributed_leases() {
        assert_eq!(busy_workers(3, 0, 1), 3);
        assert_eq!(busy_workers(1, 5, 2), 1 + 3);
        assert_eq!(busy_workers(0, 0, 4), 0);
        assert_eq!(busy_workers(0, 1, 0), 1, "a nonsense concurrency counts as 1");
    }
}
