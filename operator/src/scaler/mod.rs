//! The scaler: the single writer of each worker Deployment's replicas.
//!
//! Decisions are made by [`decide::decide`] from the backlog's counts once a second, and at once
//! when an object arrives for a pipeline at zero replicas (the event path kicks the scaler, so a
//! cold start waits for one API call, not for a poll).

pub mod decide;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource};
use prometheus::{Histogram, HistogramOpts, Registry};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::DataPipeline;
use crate::controller::event_path::Registry as Pipelines;
use crate::controller::replicas::ReplicaBook;
use crate::dispatch::backlog::Counts;
use crate::gateway::{Admission, AdmitReport, Overloaded, PipelineKey, StorageEvent};
use decide::{ScaleInput, decide};

/// How often every pipeline's scale is looked at.
const TICK: Duration = Duration::from_secs(1);

/// A pipeline's scaling settings, from its spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleSpec {
    pub deployment: String,
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub target_per_replica: i32,
    pub idle_timeout: Duration,
    pub stabilization: Duration,
}

struct Tracked {
    spec: ScaleSpec,
    current: i32,
    idle_since: Option<Instant>,
    /// Recent decisions, for the scale-down stabilization window.
    history: VecDeque<(Instant, i32)>,
}

pub struct Scaler {
    client: Client,
    pipelines: Arc<Pipelines>,
    replicas: Arc<ReplicaBook>,
    recorder: Recorder,
    event_to_scale: Histogram,
    tracked: Mutex<HashMap<PipelineKey, Tracked>>,
}

impl Scaler {
    pub fn new(
        client: Client,
        pipelines: Arc<Pipelines>,
        replicas: Arc<ReplicaBook>,
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
        Ok(Self { client, pipelines, replicas, recorder, event_to_scale, tracked: Mutex::new(HashMap::new()) })
    }

    /// Starts or updates tracking a pipeline; `current` is the Deployment's replicas.
    pub fn track(&self, key: PipelineKey, spec: ScaleSpec, current: i32) {
        let mut tracked = self.tracked.lock().unwrap_or_else(PoisonError::into_inner);
        tracked.entry(key).and_modify(|t| t.spec = spec.clone()).or_insert_with(|| Tracked {
            spec,
            current,
            idle_since: None,
            history: VecDeque::new(),
        });
    }

    pub fn forget(&self, key: &PipelineKey) {
        self.tracked.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
    }

    /// Runs until the process stops: ticks, and immediate scale-ups from zero when kicked.
    pub async fn run(self: Arc<Self>, mut kicks: mpsc::UnboundedReceiver<(PipelineKey, Instant)>) {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some((key, at)) = kicks.recv() => self.scale_up_from_zero(&key, at).await,
                _ = ticker.tick() => {
                    let keys: Vec<_> = self.tracked.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
                    for key in keys {
                        self.evaluate(&key, None).await;
                    }
                }
            }
        }
    }

    /// The event path's fast lane: only a pipeline at zero replicas is scaled here.
    async fn scale_up_from_zero(&self, key: &PipelineKey, admitted_at: Instant) {
        let at_zero =
            self.tracked.lock().unwrap_or_else(PoisonError::into_inner).get(key).is_some_and(|t| t.current == 0);
        if at_zero {
            self.evaluate(key, Some(admitted_at)).await;
        }
    }

    async fn evaluate(&self, key: &PipelineKey, admitted_at: Option<Instant>) {
        let Some(counts) = self.pipelines.counts(key) else { return };
        let now = Instant::now();
        let Some((decision, spec, before)) = self.plan(key, &counts, now) else { return };
        if decision.replicas == before {
            return;
        }
        self.replicas.set(&key.namespace, &key.name, decision.replicas);
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = json!({"spec": {"replicas": decision.replicas}});
        match api.patch_scale(&spec.deployment, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {
                let event_to_scale = admitted_at.map(|at| at.elapsed());
                if let Some(took) = event_to_scale {
                    self.event_to_scale.observe(took.as_secs_f64());
                    info!(
                        namespace = key.namespace,
                        name = key.name,
                        event_to_scale_ms = took.as_secs_f64() * 1000.0,
                        "scaled from zero on an event"
                    );
                }
                if let Some(t) = self.tracked.lock().unwrap_or_else(PoisonError::into_inner).get_mut(key) {
                    t.current = decision.replicas;
                }
                let note = format!("scaled workers from {before} to {} ({})", decision.replicas, decision.reason);
                info!(namespace = key.namespace, name = key.name, note, "scale");
                self.record(key, before, decision.replicas, decision.reason, &note).await;
            }
            Err(e) => warn!(namespace = key.namespace, name = key.name, error = %e, "scale failed"),
        }
    }

    /// Updates the idle clock and history and returns the decision, the spec and the current
    /// replicas; `None` for an untracked pipeline.
    fn plan(
        &self,
        key: &PipelineKey,
        counts: &Counts,
        now: Instant,
    ) -> Option<(decide::ScaleDecision, ScaleSpec, i32)> {
        let mut tracked = self.tracked.lock().unwrap_or_else(PoisonError::into_inner);
        let t = tracked.get_mut(key)?;
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
        // Remember what was wanted for the work, so stabilization holds against a short lull.
        let wanted_for_work = if busy { decision.replicas } else { 0 };
        t.history.push_back((now, wanted_for_work));
        Some((decision, t.spec.clone(), t.current))
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
            action: "Scale".into(),
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
