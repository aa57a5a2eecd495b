//! The DataPipeline controller: validate -> build (pure) -> apply (server-side) -> status.

pub mod build;
pub mod event_path;
pub mod replicas;
pub mod resync_loop;
pub mod status;
pub mod validate;

#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::{DeserializeGuard, error_boundary::InvalidObject};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, instrument, warn};

use crate::api::{DataPipeline, DataPipelineStatus, conditions};
use crate::metrics::Metrics;
use crate::scaler::{ScaleSpec, Scaler};
use crate::store::{self, DefaultStore, StoreConfig, StoreError};
use crate::workapi::{LedgerCompletion, PipelineAccess, S3Bucket, WorkApi};
use build::{MANAGED_BY, MANAGED_BY_LABEL, WorkerOptions};
use replicas::ReplicaBook;
use resync_loop::ResyncMetrics;
use status::{Outcome, WorkerObservation};
use zeroflow_core::backlog::Counts;
use zeroflow_core::ledger::Ledger;

/// Field manager of every write the operator makes, so server-side apply sees one owner.
pub const FIELD_MANAGER: &str = "zeroflow-operator";
/// Healthy pipelines are looked at again this often even without a change.
const RESYNC_PERIOD: Duration = Duration::from_secs(300);
/// A pipeline whose source cannot be reached is checked again this often.
const RECHECK_UNREACHABLE_SOURCE: Duration = Duration::from_secs(30);
/// First retry after a transient error.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// Everything a reconcile needs, built once at start-up.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub workers: WorkerOptions,
    pub replicas: Arc<ReplicaBook>,
    pub default_store: DefaultStore,
    /// Reconciles running at once; bounds apiserver load and memory on large fleets.
    pub concurrency: u16,
    /// Routes and backlogs of the event path.
    pub registry: Arc<event_path::Registry>,
    /// Recent source probes, by pipeline uid.
    pub probes: store::ProbeCache,
    /// The work API workers call, and the ledger completions are recorded in.
    pub workapi: Arc<WorkApi>,
    pub completion: Arc<LedgerCompletion>,
    pub resync_metrics: ResyncMetrics,
    /// The single writer of worker replicas.
    pub scaler: Arc<Scaler>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] validate::InvalidSpec),
    #[error("the DataPipeline cannot be read: {0}")]
    Malformed(String),
    #[error("DataPipeline has no namespace")]
    NoNamespace,
    #[error("failed to read {kind}: {source}")]
    Read { kind: &'static str, source: kube::Error },
    #[error("failed to apply {kind}: {source}")]
    Apply { kind: &'static str, source: kube::Error },
    #[error("failed to write status: {0}")]
    Status(#[source] kube::Error),
    #[error("{kind} {name} already exists and is not owned by this DataPipeline; rename one of them")]
    NameConflict { kind: &'static str, name: String },
    #[error("the apiserver refused the {kind} built from this spec: {message}")]
    Rejected { kind: &'static str, message: String },
}

impl Error {
    /// A short, bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Malformed(_) => "malformed",
            Error::NoNamespace => "no_namespace",
            Error::Read { .. } => "read",
            Error::Apply { .. } => "apply",
            Error::Status(_) => "status",
            Error::NameConflict { .. } => "name_conflict",
            Error::Rejected { .. } => "rejected",
        }
    }

    /// Errors the user must fix; retrying without a change cannot help.
    fn needs_user_change(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec(_)
                | Error::Malformed(_)
                | Error::NoNamespace
                | Error::NameConflict { .. }
                | Error::Rejected { .. }
        )
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
    let (pipelines, deployments, accounts) = match &namespace {
        Some(ns) => (
            Api::<DeserializeGuard<DataPipeline>>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<ServiceAccount>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client)),
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
    let controller = Controller::for_stream(pipeline_stream, reader)
        .owns(deployments, owned.clone())
        .owns(accounts, owned)
        .with_config(kube::runtime::controller::Config::default().concurrency(ctx.concurrency))
        .graceful_shutdown_on(shutdown);
    let store = controller.store();
    tokio::spawn({
        let store = store.clone();
        async move {
            if store_synced(&store).await {
                info!("DataPipeline cache synced");
                on_synced();
            }
        }
    });
    tokio::spawn(publish_counts(ctx.clone(), store.clone(), namespace.clone()));
    let resync = tokio::spawn({
        let (ctx, store) = (ctx.clone(), store.clone());
        async move {
            if store_synced(&store).await {
                resync_loop::run(ctx, store).await;
            }
        }
    });
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile stream error");
            }
        })
        .await;
    // No passes after the controller stopped (shutdown or lost leadership).
    resync.abort();
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

/// How often backlog counts are copied into status (only for pipelines whose counts changed).
const COUNTS_PERIOD: Duration = Duration::from_secs(2);

/// Keeps the event path in step with the cluster: drops deleted pipelines and writes backlog
/// counts into status at a bounded rate, never once per object.
async fn publish_counts(ctx: Arc<Context>, store: Store<DeserializeGuard<DataPipeline>>, namespace: Option<String>) {
    if !store_synced(&store).await {
        return;
    }
    let mut ticker = tokio::time::interval(COUNTS_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Failures already announced with an Event, per pipeline. Kept here rather than read from
    // status, which a reconcile may already have updated.
    let mut announced_failed: std::collections::HashMap<zeroflow_core::PipelineKey, u64> = Default::default();
    loop {
        ticker.tick().await;
        let pipelines: Vec<_> = store.state().iter().filter_map(|guard| guard.0.as_ref().ok().cloned()).collect();
        announced_failed.retain(|key, _| pipelines.iter().any(|p| &event_path::pipeline_key(p) == key));
        let alive = pipelines.iter().map(event_path::pipeline_key).collect();
        for gone in ctx.registry.retain(namespace.as_deref(), &alive) {
            ctx.replicas.forget(&gone.namespace, &gone.name);
            ctx.metrics.forget_pipeline(&gone.namespace, &gone.name);
            ctx.resync_metrics.forget(&gone.namespace, &gone.name);
            ctx.workapi.remove_pipeline(&gone);
            ctx.scaler.forget(&gone);
            ctx.completion.remove_pipeline(&gone);
        }
        if namespace.is_none() {
            ctx.probes.retain(&pipelines.iter().filter_map(|p| p.metadata.uid.clone()).collect());
        }
        for pipeline in pipelines {
            let Some(counts) = ctx.registry.counts(&event_path::pipeline_key(&pipeline)) else { continue };
            let labels = [pipeline.namespace().unwrap_or_default(), pipeline.name_any()];
            let labels = [labels[0].as_str(), labels[1].as_str()];
            ctx.metrics.pending.with_label_values(&labels).set(i64::try_from(counts.pending).unwrap_or(i64::MAX));
            ctx.metrics.in_flight.with_label_values(&labels).set(i64::try_from(counts.in_flight).unwrap_or(i64::MAX));
            let key = event_path::pipeline_key(&pipeline);
            let announced = announced_failed.entry(key.clone()).or_insert(0);
            let newly_failed = counts.failed.saturating_sub(*announced);
            *announced = counts.failed;
            if newly_failed > 0 {
                let last = ctx.registry.last_failure(&key);
                let note = status::failed_note(newly_failed, &pipeline.name_any(), last.as_ref());
                publish(&ctx, &pipeline, EventType::Warning, "ObjectsFailed", "Process", &note).await;
            }
            let current = current_status(&pipeline);
            let mut progress = progress(&ctx, &key, counts);
            progress.usage = progress.usage.filter(|u| status::usage_due(&current.usage, u, current.replicas));
            if status::with_progress(current.clone(), &progress) == current {
                continue;
            }
            let patch = json!({"status": status::progress_patch(&progress)});
            let api: Api<DataPipeline> = Api::namespaced(ctx.client.clone(), &pipeline.namespace().unwrap_or_default());
            if let Err(e) = api.patch_status(&pipeline.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await
            {
                warn!(name = pipeline.name_any(), error = %e, "failed to write backlog counts");
            }
        }
    }
}

/// Counts, usage and the last cold start of a pipeline the event path serves.
fn progress(ctx: &Context, key: &zeroflow_core::PipelineKey, counts: Counts) -> status::Progress {
    status::Progress { counts, usage: ctx.scaler.usage(key), last_cold_start: ctx.workapi.last_cold_start(key) }
}

#[instrument(skip_all, fields(namespace = guard.namespace(), name = guard.name_any()))]
async fn reconcile(guard: Arc<DeserializeGuard<DataPipeline>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &guard.0 {
        Ok(pipeline) => reconcile_pipeline(pipeline, &ctx).await,
        Err(invalid) => report_malformed(invalid, &ctx).await,
    };
    ctx.metrics.observe_reconcile(started.elapsed(), result.as_ref().err().map(Error::category));
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
    let namespace = pipeline.namespace().ok_or(Error::NoNamespace)?;
    let name = pipeline.name_any();
    let spec = match validate::validate(&pipeline.spec) {
        Ok(spec) => spec,
        Err(invalid) => {
            let message = invalid.to_string();
            publish(ctx, pipeline, EventType::Warning, "InvalidSpec", "Validate", &message).await;
            write_status(ctx, pipeline, DataPipelineStatus::default(), &Outcome::InvalidSpec(message), None).await?;
            return Err(invalid.into());
        }
    };
    let route = match event_path::route(pipeline) {
        Ok(route) => route,
        Err(e) => {
            let invalid = validate::InvalidSpec { field: "spec.sink", reason: e.to_string() };
            let message = invalid.to_string();
            publish(ctx, pipeline, EventType::Warning, "InvalidSpec", "Validate", &message).await;
            write_status(ctx, pipeline, current_status(pipeline), &Outcome::InvalidSpec(message), None).await?;
            return Err(invalid.into());
        }
    };
    ctx.registry.upsert(route, event_path::backlog_config(pipeline, &spec));
    // Checked above: the apiserver always sets uid on stored objects.
    let owner = build::owner_reference(pipeline).ok_or(Error::NoNamespace)?;
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let worker_name = build::worker_name(pipeline);

    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing_account =
        accounts.get_opt(&worker_name).await.map_err(|source| Error::Read { kind: "ServiceAccount", source })?;
    ensure_ours(ctx, pipeline, "ServiceAccount", &worker_name, existing_account.as_ref().map(|a| &a.metadata)).await?;
    let account = build::service_account(pipeline, owner.clone());
    accounts
        .patch(&worker_name, &apply, &Patch::Apply(&account))
        .await
        .map_err(|source| Error::Apply { kind: "ServiceAccount", source })?;

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing =
        deployments.get_opt(&worker_name).await.map_err(|source| Error::Read { kind: "Deployment", source })?;
    ensure_ours(ctx, pipeline, "Deployment", &worker_name, existing.as_ref().map(|d| &d.metadata)).await?;
    let existing_replicas = existing.as_ref().and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas);
    let replicas = ctx.replicas.settle(&namespace, &name, &pipeline.spec.scaling);
    let deployment = build::worker_deployment(pipeline, &spec, owner, &ctx.workers, replicas);
    let applied = match deployments.patch(&worker_name, &apply, &Patch::Apply(&deployment)).await {
        Ok(applied) => applied,
        Err(source) => {
            let error = match source {
                // The apiserver refused what the spec produced (for example a volume name that
                // collides with zeroflow's own): retrying cannot help until the spec changes.
                kube::Error::Api(e) if e.code == 400 || e.code == 422 => {
                    Error::Rejected { kind: "Deployment", message: e.message }
                }
                source => Error::Apply { kind: "Deployment", source },
            };
            publish(ctx, pipeline, EventType::Warning, "ApplyFailed", "ApplyWorkers", &error.to_string()).await;
            let outcome = Outcome::ApplyFailed(error.to_string());
            write_status(ctx, pipeline, current_status(pipeline), &outcome, None).await?;
            return Err(error);
        }
    };
    match existing_replicas {
        None => {
            let note = format!("created Deployment {worker_name} with {replicas} replicas");
            publish(ctx, pipeline, EventType::Normal, "WorkersCreated", "ApplyWorkers", &note).await;
        }
        Some(before) if before != replicas => {
            let note = format!("scaled workers from {before} to {replicas}");
            publish(ctx, pipeline, EventType::Normal, "Scaled", "Scale", &note).await;
        }
        Some(_) => {}
    }

    let uid = pipeline.metadata.uid.clone().unwrap_or_default();
    let source = match ctx.probes.get(&uid, pipeline.metadata.generation) {
        Some(cached) => cached,
        None => {
            let fresh = check_source(ctx, pipeline, &namespace).await;
            ctx.probes.put(&uid, pipeline.metadata.generation, fresh.clone());
            fresh
        }
    };
    if let Err(e) = &source {
        let reachable_before = conditions::is_true(&current_status(pipeline).conditions, conditions::SOURCE_REACHABLE);
        if reachable_before != Some(false) {
            publish(ctx, pipeline, EventType::Warning, e.reason(), "CheckSource", &e.to_string()).await;
        }
    }
    let redriven = redrive_if_asked(ctx, pipeline, &namespace).await;
    let observed = WorkerObservation::from_deployment(&applied);
    let scaling = &pipeline.spec.scaling;
    ctx.scaler.track(
        event_path::pipeline_key(pipeline),
        ScaleSpec {
            deployment: worker_name.clone(),
            min_replicas: scaling.min_replicas,
            max_replicas: scaling.max_replicas,
            target_per_replica: scaling.target_per_replica,
            idle_timeout: spec.idle_timeout,
            stabilization: spec.scale_down_stabilization,
            cpu_per_replica: applied
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .map_or(0.0, crate::controller::build::cpu_request_cores),
        },
        observed.desired,
        &current_status(pipeline).usage,
    );
    ctx.metrics.replicas.with_label_values(&[namespace.as_str(), name.as_str()]).set(i64::from(observed.replicas));
    let mut status = status::with_workers(current_status(pipeline), &worker_name, &observed);
    if let Some(value) = redriven {
        status.last_redrive = Some(value);
    }
    let key = event_path::pipeline_key(pipeline);
    if let Some(counts) = ctx.registry.counts(&key) {
        status = status::with_progress(status, &progress(ctx, &key, counts));
    }
    write_status(ctx, pipeline, status, &Outcome::Applied(observed), Some(&source)).await?;
    // Problems that may clear up by themselves (a Secret created later, a store coming back)
    // are looked at again soon; configuration problems wait for a change.
    let next = match &source {
        Err(StoreError::SecretNotFound(_) | StoreError::Unreachable(_) | StoreError::BucketNotFound(_)) => {
            RECHECK_UNREACHABLE_SOURCE
        }
        _ => RESYNC_PERIOD,
    };
    Ok(Action::requeue(next))
}

/// Lists the source bucket once with the pipeline's credentials and, when it can, hands the
/// work API and the ledger their clients for this pipeline's buckets.
async fn check_source(ctx: &Context, pipeline: &DataPipeline, namespace: &str) -> Result<(), StoreError> {
    let source = &pipeline.spec.source;
    let source_config = resolve_store(ctx, source.store.as_ref(), namespace).await?;
    let source_client = store::bucket_client(&source_config, &source.bucket)?;
    store::probe(&source_client, &source.bucket, source.prefix.as_deref()).await?;

    let sink_config = match &pipeline.spec.sink.store {
        Some(spec) => resolve_store(ctx, Some(spec), namespace).await?,
        None => source_config,
    };
    let sink_bucket = event_path::sink_bucket(pipeline);
    let sink_client = store::bucket_client(&sink_config, sink_bucket)?;
    let ledger = Ledger::new(Arc::new(sink_client.clone()), &event_path::ledger_prefix(pipeline))
        .map_err(|e| StoreError::Invalid(format!("ledger: {e}")))?;
    let key = event_path::pipeline_key(pipeline);
    ctx.completion.set_pipeline(key.clone(), ledger);
    ctx.workapi.set_pipeline(
        key,
        PipelineAccess {
            source: Arc::new(S3Bucket::new(source.bucket.clone(), source_client)),
            sink: Arc::new(S3Bucket::new(sink_bucket, sink_client)),
            sink_prefix: pipeline.spec.sink.prefix.clone(),
        },
    );
    Ok(())
}

/// Acts on a new value of the re-drive annotation: failed objects go back to work, both those
/// this replica remembers and those only the ledger knows (their failure markers are removed and
/// a resync admits them). Returns the value acted on, to record in status.
async fn redrive_if_asked(ctx: &Context, pipeline: &DataPipeline, namespace: &str) -> Option<String> {
    let value = pipeline.annotations().get(crate::api::REDRIVE_ANNOTATION)?;
    if current_status(pipeline).last_redrive.as_ref() == Some(value) {
        return None;
    }
    let key = event_path::pipeline_key(pipeline);
    let in_memory = ctx.registry.redrive_failed(&key);
    let from_ledger = async {
        let sink = match &pipeline.spec.sink.store {
            Some(spec) => resolve_store(ctx, Some(spec), namespace).await?,
            None => resolve_store(ctx, pipeline.spec.source.store.as_ref(), namespace).await?,
        };
        let client = store::bucket_client(&sink, event_path::sink_bucket(pipeline))?;
        let ledger = Ledger::new(Arc::new(client), &event_path::ledger_prefix(pipeline))
            .map_err(|e| StoreError::Invalid(format!("ledger: {e}")))?;
        ledger.remove_failed().await.map_err(|e| StoreError::Unreachable(format!("ledger: {e}")))
    }
    .await;
    let note = match from_ledger {
        Ok(removed) => {
            ctx.registry.request_resync(&key);
            ctx.workapi.notify(&key);
            format!("re-driving failed objects: {in_memory} queued again, {removed} failure markers removed")
        }
        // Try again on the next reconcile: the annotation value is not recorded as handled.
        Err(e) => {
            publish(ctx, pipeline, EventType::Warning, "RedriveFailed", "Redrive", &e.to_string()).await;
            return None;
        }
    };
    publish(ctx, pipeline, EventType::Normal, "Redriven", "Redrive", &note).await;
    Some(value.clone())
}

/// A store's settings with the credentials from its Secret, or the operator's default store.
async fn resolve_store(
    ctx: &Context,
    spec: Option<&crate::api::StoreSpec>,
    namespace: &str,
) -> Result<StoreConfig, StoreError> {
    let Some(spec) = spec else {
        return ctx.default_store.0.clone().ok_or(StoreError::NoStore);
    };
    let secret_name = &spec.credentials_secret_ref.name;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets
        .get_opt(secret_name)
        .await
        .map_err(|e| StoreError::Unreachable(format!("cannot read Secret {secret_name:?}: {e}")))?
        .ok_or_else(|| StoreError::SecretNotFound(secret_name.clone()))?;
    let (access_key_id, secret_access_key) =
        store::credentials_from_secret(secret_name, &secret.data.unwrap_or_default())?;
    Ok(store::config_from_spec(spec, access_key_id, secret_access_key))
}

/// Refuses to take over an object of the same name that this pipeline does not control: applying
/// would change it and make it garbage-collected with the pipeline.
async fn ensure_ours(
    ctx: &Context,
    pipeline: &DataPipeline,
    kind: &'static str,
    name: &str,
    existing: Option<&kube::api::ObjectMeta>,
) -> Result<(), Error> {
    let Some(meta) = existing else { return Ok(()) };
    let ours = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == pipeline.metadata.uid.as_ref());
    if ours {
        return Ok(());
    }
    let error = Error::NameConflict { kind, name: name.to_owned() };
    publish(ctx, pipeline, EventType::Warning, "NameConflict", "ApplyWorkers", &error.to_string()).await;
    write_status(ctx, pipeline, current_status(pipeline), &Outcome::ApplyFailed(error.to_string()), None).await?;
    Err(error)
}

fn current_status(pipeline: &DataPipeline) -> DataPipelineStatus {
    pipeline.status.clone().unwrap_or_default()
}

/// Writes status only when it changed, so an idle fleet of pipelines causes no writes.
async fn write_status(
    ctx: &Context,
    pipeline: &DataPipeline,
    mut status: DataPipelineStatus,
    outcome: &Outcome,
    source: Option<&Result<(), StoreError>>,
) -> Result<(), Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let previous = current_status(pipeline);
    let generation = pipeline.metadata.generation;
    status.conditions = conditions::merge(&previous.conditions, &status::conditions(outcome, source), generation, &now);
    status.observed_generation = generation;
    // The scaler owns the last-scale fields and writes them itself; applying them from this
    // (possibly older) copy would overwrite a newer scale with a stale one.
    status.last_scale_time = None;
    status.last_scale_reason = None;
    let mut unchanged = previous;
    unchanged.last_scale_time = None;
    unchanged.last_scale_reason = None;
    if pipeline.status.is_some() && unchanged == status {
        return Ok(());
    }
    let api: Api<DataPipeline> = Api::namespaced(ctx.client.clone(), &pipeline.namespace().ok_or(Error::NoNamespace)?);
    let patch = json!({
        "apiVersion": DataPipeline::api_version(&()),
        "kind": DataPipeline::kind(&()),
        "status": status,
    });
    api.patch_status(&pipeline.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(Error::Status)?;
    Ok(())
}

/// A DataPipeline whose stored form does not match the API types (for example written under
/// an older CRD) is reported on the object itself and skipped; the others keep going.
async fn report_malformed(invalid: &InvalidObject, ctx: &Context) -> Result<Action, Error> {
    let message = format!("the DataPipeline cannot be read: {}", invalid.error);
    let (Some(namespace), Some(name)) = (&invalid.metadata.namespace, &invalid.metadata.name) else {
        return Err(Error::NoNamespace);
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
        &status::conditions(&Outcome::InvalidSpec(message.clone()), None),
        invalid.metadata.generation,
        &now,
    );
    let api: Api<DataPipeline> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({"status": {"conditions": conds}});
    // A merge patch touches only conditions, which is all we can say about an unreadable object.
    // The apiserver may refuse it (it re-validates the whole object against today's schema);
    // the Event above already told the user, so that is not worth a retry loop.
    if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        warn!(namespace, name, error = %e, "cannot record conditions on the malformed DataPipeline");
    }
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
