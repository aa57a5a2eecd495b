//! The DataPipeline controller. A reconcile reads as its steps:
//!
//! 1. **validate** ([`validate`]): the spec into typed values, or `InvalidSpec`;
//! 2. **build** ([`build`], [`settings`]): the worker ServiceAccount and Deployment, and the
//!    pipeline's runtime settings, as pure functions of the spec;
//! 3. **apply** ([`apply`]): server-side apply of the workers (never their `replicas`, which
//!    the scaler owns), then the source check that hands the runtime its store access
//!    ([`source`]) and a re-drive when asked ([`redrive`]);
//! 4. **status** ([`status`]): conditions from what was observed, handed to the status writer.
//!
//! The runtime work of a pipeline (counts, resync, scaling) runs in tasks of its own, outside
//! the reconcile ([`crate::runtime`], [`crate::scaler`]).

pub mod apply;
pub mod build;
pub mod delivery;
pub mod observe;
pub mod pause;
pub mod queue;
pub mod redrive;
pub mod runner;
pub mod sender;
pub mod settings;
pub mod source;
pub mod status;
pub mod triggers;
pub mod validate;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod writes;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::core::{DeserializeGuard, error_boundary::InvalidObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};
use zeroflow_core::PipelineKey;

use crate::api::{DataPipeline, DataPipelineStatus, conditions, conditions::Desired};
use crate::metrics::Metrics;
use crate::runtime::{Pipelines, Seed};
use crate::sources::sqs::pipelines::QueueRegistry;
use crate::status_writer::{Concern, StatusWriter};
use crate::store::{DefaultStore, StoreError};
use apply::ApplyError;
use build::{MANAGED_BY, MANAGED_BY_LABEL, WorkerOptions};
use status::{Reconciled, WorkerObservation};
use validate::InvalidSpec;

/// Healthy pipelines are looked at again this often even without a change.
const RESYNC_PERIOD: Duration = Duration::from_secs(300);
/// A pipeline whose source cannot be reached is checked again this often.
const RECHECK_UNREACHABLE_SOURCE: Duration = Duration::from_secs(30);
/// First retry after a transient error.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);
/// How often deleted pipelines are looked for and their runtimes removed.
const PRUNE_PERIOD: Duration = Duration::from_secs(2);
/// A pipeline whose workers cannot run, or that is stopped, is looked at again this often: its
/// conditions follow the cluster (an image pushed, capacity added, a cycle broken elsewhere).
const RECHECK_TROUBLE: Duration = Duration::from_secs(15);

/// Everything a reconcile needs, built once at start-up.
pub struct Context {
    pub client: Client,
    pub recorder: crate::events::EventRecorder,
    pub metrics: Arc<Metrics>,
    pub workers: WorkerOptions,
    /// How worker pods get the runner when their pipeline leaves it to the operator.
    pub runner_delivery: runner::OperatorDelivery,
    /// What the operator learned about runner delivery (the apiserver's answer, fallbacks).
    pub deliveries: delivery::Deliveries,
    pub default_store: DefaultStore,
    /// Reconciles running at once; bounds apiserver load and memory on large fleets.
    pub concurrency: u16,
    /// Most objects pending or leased per pipeline (`--backlog-capacity`).
    pub backlog_capacity: usize,
    /// The runtimes of the pipelines this replica serves.
    pub pipelines: Arc<Pipelines>,
    pub status: StatusWriter,
    /// Runs the consumers of the queues pipelines name (`spec.source.events.sqs`).
    pub queues: QueueRegistry,
}

/// Why a reconcile failed, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the DataPipeline cannot be read: {0}")]
    Malformed(String),
    #[error("DataPipeline has no namespace or uid")]
    Identity,
    #[error("invalid spec: {0}")]
    Validate(#[from] InvalidSpec),
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

impl Error {
    /// A short, bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Malformed(_) => "malformed",
            Error::Identity => "identity",
            Error::Validate(_) => "invalid_spec",
            Error::Apply(e) => e.category(),
        }
    }

    /// Errors the user must fix; retrying without a change cannot help.
    fn needs_user_change(&self) -> bool {
        match self {
            Error::Malformed(_) | Error::Identity | Error::Validate(_) => true,
            Error::Apply(e) => e.needs_user_change(),
        }
    }
}

/// What a DataPipeline change must reconcile for: its spec (generation) and its annotations (a
/// re-drive). Status changes, which this operator writes every few seconds itself, need none;
/// the worker Deployment's changes arrive through `owns`, and every reconcile requeues itself.
fn spec_or_annotations(guard: &DeserializeGuard<DataPipeline>) -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let meta = guard.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    Some(hasher.finish())
}

/// Runs the controller for one namespace (or all, with `None`) until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    on_synced: impl FnOnce() + Send + 'static,
) {
    let client = ctx.client.clone();
    let (pipelines, deployments, accounts, pods) = match &namespace {
        Some(ns) => (
            Api::<DeserializeGuard<DataPipeline>>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<PartialObjectMeta<ServiceAccount>>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone()), Api::all(client)),
    };
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    // The cache holds every DataPipeline; managedFields are most of each object's size and the
    // operator never reads them, so they are dropped before they are stored.
    let (reader, writer) = reflector::store();
    let pipeline_stream = watcher(pipelines, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|guard: &mut DeserializeGuard<DataPipeline>| match &mut guard.0 {
            Ok(pipeline) => pipeline.metadata.managed_fields = None,
            Err(invalid) => invalid.metadata.managed_fields = None,
        })
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_or_annotations, Default::default());
    // Worker pods belong to ReplicaSets, not to the pipeline: mapped by their pipeline label, so
    // a pod that cannot start (or starts again) updates its pipeline's conditions at once.
    let workers = watcher::Config::default()
        .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY},app.kubernetes.io/component=worker"));
    // Owned objects trigger their pipeline only when something the reconcile reads of them
    // changed, or when they are deleted (see `triggers`). Deployments are watched whole for
    // their status, in small pages so that the first list's transient peak stays small; only a
    // hash per Deployment is kept.
    let deployment_triggers = triggers::changed(
        watcher(deployments, owned.clone().page_size(50)).default_backoff(),
        triggers::deployment_observed,
    );
    let account_triggers = triggers::changed(watcher(accounts, owned).default_backoff(), |_| None);
    let controller = Controller::for_stream(pipeline_stream, reader)
        .owns_stream(deployment_triggers)
        .owns_stream(account_triggers)
        .watches(pods, workers, |pod: Pod| {
            let name = pod.labels().get(build::PIPELINE_LABEL)?.clone();
            Some(ObjectRef::new(&name).within(&pod.namespace()?))
        })
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.concurrency))
        .graceful_shutdown_on(shutdown);
    let store = controller.store();
    let side_tasks = [
        tokio::spawn({
            let store = store.clone();
            async move {
                if store_synced(&store).await {
                    info!("DataPipeline cache synced");
                    on_synced();
                }
            }
        }),
        tokio::spawn(prune(ctx.clone(), store.clone(), namespace.clone())),
    ];
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile stream error");
            }
        })
        .await;
    for task in side_tasks {
        task.abort();
    }
}

/// Waits until the store has its first full list; false if it never will.
///
/// The controller waits on the same store, and kube-runtime's ready signal wakes only one of
/// several concurrent waiters, so poll it again regularly instead of waiting once.
async fn store_synced(store: &Store<DeserializeGuard<DataPipeline>>) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready()).await {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => {
                warn!(error = %e, "DataPipeline cache never synced");
                return false;
            }
            Err(_) => continue,
        }
    }
}

/// Removes the runtimes, queue consumers and runner-delivery fallbacks of deleted pipelines (the
/// controller is not called for a deletion), and tells the work API which pipelines exist (so a
/// worker of one not loaded yet is told to retry).
async fn prune(ctx: Arc<Context>, store: Store<DeserializeGuard<DataPipeline>>, namespace: Option<String>) {
    if !store_synced(&store).await {
        return;
    }
    let mut ticker = tokio::time::interval(PRUNE_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let alive: BTreeSet<PipelineKey> =
            store.state().iter().filter_map(|guard| guard.0.as_ref().ok().map(settings::pipeline_key)).collect();
        ctx.queues.retain(namespace.as_deref(), &alive);
        let gone = ctx.pipelines.retain(namespace.as_deref(), &alive);
        for key in &gone {
            info!(pipeline = %key, "DataPipeline deleted: its runtime is gone");
        }
        ctx.deliveries.forget(&gone);
        ctx.pipelines.declared().declare(namespace.as_deref(), alive);
    }
}

#[instrument(skip_all, fields(namespace = guard.namespace(), name = guard.name_any()))]
async fn reconcile(guard: Arc<DeserializeGuard<DataPipeline>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &guard.0 {
        Ok(pipeline) => reconcile_pipeline(pipeline, &ctx).await,
        Err(invalid) => report_malformed(invalid, &ctx).await,
    };
    ctx.metrics.observe_reconcile(started.elapsed(), result.as_ref().err().map(Error::category));
    if let (Err(e), Ok(pipeline)) = (&result, &guard.0) {
        report_failure(&ctx, pipeline, e).await;
    }
    result
}

fn error_policy(guard: Arc<DeserializeGuard<DataPipeline>>, error: &Error, _ctx: Arc<Context>) -> Action {
    if error.needs_user_change() {
        warn!(name = guard.name_any(), error = %error, "waiting for the DataPipeline to change");
        Action::await_change()
    } else {
        warn!(name = guard.name_any(), error = %error, "reconcile failed, retrying");
        Action::requeue(RETRY_AFTER_ERROR + jitter(&guard.name_any()))
    }
}

/// Spreads retries of many failing pipelines over a few seconds, deterministically per name.
fn jitter(name: &str) -> Duration {
    let hash = name.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Duration::from_millis(hash % 5000)
}

async fn reconcile_pipeline(pipeline: &DataPipeline, ctx: &Context) -> Result<Action, Error> {
    let key = settings::pipeline_key(pipeline);
    let current = pipeline.status.clone().unwrap_or_default();

    // 1. validate
    let spec = validate::validate(&pipeline.spec)?;
    let mut settings = settings::settings(pipeline, &spec)?;
    settings.backlog.capacity = ctx.backlog_capacity;

    // 2. build
    let owner = build::owner_reference(pipeline).ok_or(Error::Identity)?;
    let account = build::service_account(pipeline, owner.clone());
    let runner = runner_choice(ctx, pipeline, &key).await;
    let deployment = build::worker_deployment(pipeline, &spec, owner, &ctx.workers, &runner.delivery);
    let settings = settings::with_cpu(settings, &deployment);
    let initial = crate::scaler::initial_replicas(&settings.scale);
    let paused = settings.paused;
    let was_paused = ctx.pipelines.get(&key).map(|p| p.lock().settings.paused);
    let runtime = ctx.pipelines.upsert(&key, settings, &Seed { status: current.clone() });
    if was_paused.is_some_and(|was| was != paused) {
        // Paused, resumed or a new held count: the scaler acts now, not at its next tick.
        info!(pipeline = %key, paused = ?paused, "pause changed");
        ctx.pipelines.kick(&key);
    }

    // 3. apply
    let applied =
        apply::workers(&ctx.client, pipeline, &account, &deployment, initial, crate::scaler::FIELD_MANAGER).await?;
    if applied.created {
        let note = format!("created Deployment {} with {initial} replicas", deployment.name_any());
        publish(ctx, pipeline, EventType::Normal, "WorkersCreated", "ApplyWorkers", &note).await;
        // The scaler adopts the new Deployment at once rather than at its next tick.
        ctx.pipelines.kick(&key);
    }
    let source = source::check(ctx, pipeline, &runtime).await;
    if let Err(e) = &source
        && conditions::is_true(&current.conditions, conditions::SOURCE_REACHABLE) != Some(false)
    {
        publish(ctx, pipeline, EventType::Warning, e.reason(), "CheckSource", &e.to_string()).await;
    }
    let queue_recheck = queue::hand_over(ctx, pipeline).await;
    let redriven = match redrive::if_asked(ctx, pipeline, &runtime).await {
        Some(Ok(redriven)) => {
            publish(ctx, pipeline, EventType::Normal, "Redriven", "Redrive", &redriven.note).await;
            Some(redriven.value)
        }
        Some(Err(e)) => {
            publish(ctx, pipeline, EventType::Warning, "RedriveFailed", "Redrive", &e.to_string()).await;
            None
        }
        None => None,
    };

    // 4. status
    let mut observed = WorkerObservation::from_deployment(&applied.deployment);
    observed.paused = paused.map(|p| p.replicas);
    let stop = runtime.lock().stop.clone();
    let pods = worker_pods(ctx, pipeline, &applied.deployment).await;
    let fell_back = image_volume_fallback(ctx, pipeline, &key, &runner, &pods).await;
    observed.trouble = match stop {
        Some(stop) => Some(observe::Trouble { reason: stop.reason.into(), message: stop.message }),
        // The next reconcile, at once, builds the pods with the init container.
        None if fell_back => None,
        None => observe::trouble(&applied.deployment, &pods, k8s_openapi::jiff::Timestamp::now()),
    };
    let labels = [key.namespace.as_str(), key.name.as_str()];
    ctx.metrics.replicas.with_label_values(&labels).set(i64::from(observed.replicas));
    let mut fields = conditions_fields(pipeline, &Reconciled::Applied(observed.clone()), Some(&source));
    let runner_condition = Desired::new(conditions::RUNNER_FALLBACK, runner.fallback, runner.reason, runner.message);
    let merged: Vec<Condition> = serde_json::from_value(fields["conditions"].take()).unwrap_or_default();
    fields["conditions"] = json!(conditions::merge(
        &merged,
        &[runner_condition],
        pipeline.metadata.generation,
        &Time(k8s_openapi::jiff::Timestamp::now())
    ));
    fields["runnerDelivery"] = json!(runner.delivery.name());
    fields["workerDeployment"] = json!(deployment.name_any());
    fields["replicas"] = json!(observed.replicas);
    fields["readyReplicas"] = json!(observed.ready);
    if let Some(value) = redriven {
        fields["lastRedrive"] = json!(value);
    }
    ctx.status.apply_over(&key, Concern::Reconcile, fields, &current);
    // Problems that may clear up by themselves (a Secret created later, a store coming back)
    // are looked at again soon; configuration problems wait for a change.
    let starting = observed.ready < observed.desired;
    let next = match &source {
        _ if fell_back => Duration::ZERO,
        // Workers that cannot run, or have not started yet (a pod the scheduler cannot place is
        // reported after a grace): look again soon.
        _ if observed.trouble.is_some() || starting => RECHECK_TROUBLE,
        Err(e) if e.may_clear_up() => RECHECK_UNREACHABLE_SOURCE,
        _ if queue_recheck => RECHECK_UNREACHABLE_SOURCE,
        _ => RESYNC_PERIOD,
    };
    Ok(Action::requeue(next))
}

/// The pipeline's worker pods, to tell why they cannot run; none when no worker is wanted or
/// exists (or the pods cannot be listed, which the next reconcile retries).
async fn worker_pods(ctx: &Context, pipeline: &DataPipeline, deployment: &Deployment) -> Vec<Pod> {
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let has_pods = deployment.status.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0;
    if wanted == 0 && !has_pods {
        return Vec::new();
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &pipeline.namespace().unwrap_or_default());
    let selector = format!("{}={},app.kubernetes.io/component=worker", build::PIPELINE_LABEL, pipeline.name_any());
    match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list.items,
        Err(e) => {
            warn!(error = %e, "cannot list the worker pods");
            Vec::new()
        }
    }
}

/// How this pipeline's workers get the runner now ([`runner::choose`]); the apiserver is asked
/// about image volumes only when the answer matters.
async fn runner_choice(ctx: &Context, pipeline: &DataPipeline, key: &PipelineKey) -> runner::Choice {
    let requested = pipeline.spec.transform.runner.as_ref();
    let automatic = requested.is_none_or(|r| r.delivery == crate::api::RunnerDelivery::Auto)
        && ctx.runner_delivery == runner::OperatorDelivery::Auto;
    let kept = if automatic {
        let namespace = pipeline.namespace().unwrap_or_default();
        ctx.deliveries.image_volumes_kept(&ctx.client, &namespace, &ctx.workers.runner_image).await
    } else {
        None
    };
    runner::choose(requested, ctx.runner_delivery, kept, ctx.deliveries.failed(key).as_deref())
}

/// The kubelet's word that it cannot mount the runner's volume, for worker pods still waiting
/// for their volumes: a `FailedMount` Event naming it (read only for such pods).
async fn runner_mount_failure(ctx: &Context, pipeline: &DataPipeline, pods: &[Pod]) -> Option<String> {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(ctx.client.clone(), &pipeline.namespace().unwrap_or_default());
    for pod in runner::waiting_for_volumes(pods) {
        let selector = format!("involvedObject.kind=Pod,involvedObject.name={pod},reason=FailedMount");
        match events.list(&ListParams::default().fields(&selector)).await {
            Ok(list) => {
                if let Some(why) = runner::mount_failure(&list.items, build::RUNNER_VOLUME) {
                    return Some(why);
                }
            }
            Err(e) => warn!(error = %e, pod, "cannot list the worker pod's Events"),
        }
    }
    None
}

/// When the operator chose an image volume for this pipeline and a worker could not start with
/// it (the node's runtime or kubelet cannot mount it), records the fallback to the init container
/// and says so in a Warning Event; true when it did. A pipeline that asked for `ImageVolume`
/// itself keeps it: its trouble is reported like any other.
async fn image_volume_fallback(
    ctx: &Context,
    pipeline: &DataPipeline,
    key: &PipelineKey,
    choice: &runner::Choice,
    pods: &[Pod],
) -> bool {
    let automatic =
        pipeline.spec.transform.runner.as_ref().is_none_or(|r| r.delivery == crate::api::RunnerDelivery::Auto);
    if !automatic || choice.delivery != runner::Delivery::ImageVolume {
        return false;
    }
    let why = match runner::image_volume_failure(pods, build::TRANSFORM_CONTAINER) {
        Some(why) => Some(why),
        None => runner_mount_failure(ctx, pipeline, pods).await,
    };
    let Some(why) = why else {
        return false;
    };
    let note = format!("the runner's image volume failed, falling back to the init container: {why}");
    warn!(pipeline = %key, why, "image volume failed; the init container delivers the runner from now on");
    ctx.deliveries.fail(key, why);
    publish(ctx, pipeline, EventType::Warning, "RunnerFallback", "DeliverRunner", &note).await;
    true
}

/// `observedGeneration` and the conditions for an outcome, merged so that a condition's
/// `lastTransitionTime` moves only when its status does.
fn conditions_fields(
    pipeline: &DataPipeline,
    outcome: &Reconciled,
    source: Option<&Result<(), StoreError>>,
) -> serde_json::Value {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let current = pipeline.status.clone().unwrap_or_default();
    let generation = pipeline.metadata.generation;
    let merged = conditions::merge(&current.conditions, &status::conditions(outcome, source), generation, &now);
    json!({"observedGeneration": generation, "conditions": merged})
}

/// A failed reconcile's Event and conditions, so the user sees why.
async fn report_failure(ctx: &Context, pipeline: &DataPipeline, error: &Error) {
    let (reason, action, outcome) = match error {
        Error::Validate(e) => ("InvalidSpec", "Validate", Reconciled::InvalidSpec(e.to_string())),
        Error::Apply(ApplyError::NameConflict { .. }) => {
            ("NameConflict", "ApplyWorkers", Reconciled::ApplyFailed(error.to_string()))
        }
        Error::Apply(_) => ("ApplyFailed", "ApplyWorkers", Reconciled::ApplyFailed(error.to_string())),
        Error::Malformed(_) | Error::Identity => return,
    };
    publish(ctx, pipeline, EventType::Warning, reason, action, &error.to_string()).await;
    let current = pipeline.status.clone().unwrap_or_default();
    let fields = conditions_fields(pipeline, &outcome, None);
    ctx.status.apply_over(&settings::pipeline_key(pipeline), Concern::Reconcile, fields, &current);
}

/// A DataPipeline whose stored form does not match the API types (for example written under
/// an older CRD) is reported on the object itself and skipped; the others keep going.
async fn report_malformed(invalid: &InvalidObject, ctx: &Context) -> Result<Action, Error> {
    let message = format!("the DataPipeline cannot be read: {}", invalid.error);
    let (Some(namespace), Some(name)) = (&invalid.metadata.namespace, &invalid.metadata.name) else {
        return Err(Error::Identity);
    };
    warn!(namespace, name, error = %invalid.error, "malformed DataPipeline");
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(DataPipeline::api_version(&()).into()),
        kind: Some(DataPipeline::kind(&()).into()),
        namespace: Some(namespace.clone()),
        name: Some(name.clone()),
        uid: invalid.metadata.uid.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "Malformed".into(),
        note: Some(truncate(&message, 1000)),
        action: "Read".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        warn!(error = %e, "failed to publish Event");
    }
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let conds = conditions::merge(
        &[],
        &status::conditions(&Reconciled::InvalidSpec(message.clone()), None),
        invalid.metadata.generation,
        &now,
    );
    // Only conditions, which is all we can say about an unreadable object. The apiserver may
    // refuse the write (it re-validates the whole object against today's schema); the Event
    // above already told the user.
    let key = PipelineKey::new(namespace.clone(), name.clone());
    ctx.status.apply_over(&key, Concern::Reconcile, json!({"conditions": conds}), &DataPipelineStatus::default());
    Err(Error::Malformed(invalid.error.clone()))
}

async fn publish(ctx: &Context, pipeline: &DataPipeline, type_: EventType, reason: &str, action: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: None,
    };
    match ctx.recorder.publish(&event, &pipeline.object_ref(&())).await {
        Ok(()) => info!(reason, note, "event"),
        Err(e) => warn!(error = %e, reason, "failed to publish Event"),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{minimal_spec, pipeline};

    #[test]
    fn only_spec_and_annotation_changes_call_for_a_reconcile() {
        let guard = |p: DataPipeline| DeserializeGuard(Ok(p));
        let base = pipeline(minimal_spec());
        let hash = |p: &DataPipeline| spec_or_annotations(&guard(p.clone()));
        let mut status_only = base.clone();
        status_only.status = Some(DataPipelineStatus { pending: 7, ..DataPipelineStatus::default() });
        status_only.metadata.resource_version = Some("42".into());
        assert_eq!(hash(&status_only), hash(&base), "status is written by the operator itself");
        let mut edited = base.clone();
        edited.metadata.generation = Some(2);
        assert_ne!(hash(&edited), hash(&base));
        let mut redriven = base.clone();
        redriven.metadata.annotations = Some([(crate::api::REDRIVE_ANNOTATION.to_owned(), "1".to_owned())].into());
        assert_ne!(hash(&redriven), hash(&base));
    }
}
