//! The work API's behaviour: authorization, long-poll leasing, heartbeats, presigned outputs,
//! completion. The wire is in [`super::http`], the decisions in [`super::rules`], the state in
//! the backlogs and [`super::leases`].
//!
//! A lease's life: `POST .../leases` (long poll) -> `.../heartbeat` every
//! `heartbeat_interval_seconds` -> `.../outputs` per output file -> `.../complete` or `.../fail`.
//! Completion is recorded through [`Completion`] before the backlog is told, so an acknowledged
//! object always has its record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use object_store::signer::Method;

use super::auth::{Identity, TokenVerifier, VerifyError, bearer_token};
use super::completion::{Completion, Outcome};
use super::http::{
    ApiError, CompleteRequest, FailRequest, FinishResponse, HeartbeatResponse, LeaseResponse, ObjectRef, OutputRequest,
    OutputResponse,
};
use super::metrics::{Ended, WorkApiMetrics};
use super::objects::{BucketAccess, ObjectError};
use super::waiters::Waiters;
use crate::dispatch::Backlogs;
use zeroflow_contract::names::{output_key, stderr_tail, validate_output_name};
use zeroflow_core::PipelineKey;
use zeroflow_core::backlog::{ItemId, Lease, Millis, ObjectId, Retry, WorkItem};
use zeroflow_core::cold_starts::ColdStarts;
use zeroflow_core::leases::{Granted, LeaseTable};
use zeroflow_core::work::{heartbeat_interval_seconds, is_final_failure, may_act_for, same_etag};

/// A granted lease is remembered this many lease durations past its deadline, so a late answer
/// is still matched to its object without asking the store.
const FORGET_AFTER_LEASES: u64 = 10;
/// When a blocked item hides the next timer, polls look again this often.
const RECHECK: Duration = Duration::from_secs(1);

/// Where a pipeline's objects are read and its outputs written. Set by the controller.
pub struct PipelineAccess {
    pub source: Arc<dyn BucketAccess>,
    pub sink: Arc<dyn BucketAccess>,
    /// Prepended to `<input key>/<output name>`.
    pub sink_prefix: String,
}

pub struct WorkApi {
    backlogs: Arc<Backlogs>,
    waiters: Arc<Waiters>,
    verifier: Arc<dyn TokenVerifier>,
    completion: Arc<dyn Completion>,
    pub(super) metrics: WorkApiMetrics,
    pipelines: RwLock<HashMap<PipelineKey, Arc<PipelineAccess>>>,
    leases: Mutex<LeaseTable>,
    cold_starts: Mutex<ColdStarts>,
}

impl WorkApi {
    pub fn new(
        backlogs: Arc<Backlogs>,
        waiters: Arc<Waiters>,
        verifier: Arc<dyn TokenVerifier>,
        completion: Arc<dyn Completion>,
        metrics: WorkApiMetrics,
    ) -> Self {
        Self {
            backlogs,
            waiters,
            verifier,
            completion,
            metrics,
            pipelines: RwLock::new(HashMap::new()),
            leases: Mutex::new(LeaseTable::new(process_epoch())),
            cold_starts: Mutex::new(ColdStarts::default()),
        }
    }

    /// Makes a pipeline's leases servable (its backlog must also exist in the backlogs).
    pub fn set_pipeline(&self, pipeline: PipelineKey, access: PipelineAccess) {
        self.pipelines.write().unwrap_or_else(PoisonError::into_inner).insert(pipeline.clone(), Arc::new(access));
        self.waiters.notify(&pipeline);
    }

    pub fn remove_pipeline(&self, pipeline: &PipelineKey) {
        self.pipelines.write().unwrap_or_else(PoisonError::into_inner).remove(pipeline);
        self.waiters.remove(pipeline);
        self.cold_starts().forget(pipeline);
        self.metrics.forget(pipeline);
    }

    /// The pods of `pipeline` holding live leases, with how many each holds.
    pub fn busy_pods(&self, pipeline: &PipelineKey) -> HashMap<String, usize> {
        let Some(now) = self.backlogs.with(pipeline, |_, now| now) else { return HashMap::new() };
        self.leases().busy_pods(pipeline, now)
    }

    /// The scaler started workers for a pipeline at zero, for work that arrived at `since`.
    pub fn cold_start_began(&self, pipeline: &PipelineKey, since: Instant) {
        self.cold_starts().begin(pipeline, since);
    }

    /// The scaler returned a pipeline to zero workers.
    pub fn cold_start_cancelled(&self, pipeline: &PipelineKey) {
        self.cold_starts().cancel(pipeline);
    }

    /// The last cold start's duration, for status.
    pub fn last_cold_start(&self, pipeline: &PipelineKey) -> Option<Duration> {
        self.cold_starts().last(pipeline)
    }

    fn cold_starts(&self) -> MutexGuard<'_, ColdStarts> {
        self.cold_starts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the pipeline's lease polls; call after admitting work outside the gateway (resync,
    /// backfill, redrive). The gateway path is covered by [`super::NotifyingAdmission`].
    pub fn notify(&self, pipeline: &PipelineKey) {
        self.waiters.notify(pipeline);
    }

    fn access(&self, pipeline: &PipelineKey) -> Result<Arc<PipelineAccess>, ApiError> {
        self.pipelines
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pipeline)
            .cloned()
            .ok_or(ApiError::UnknownPipeline)
    }

    fn leases(&self) -> MutexGuard<'_, LeaseTable> {
        // Every table method leaves it consistent, so a panic elsewhere cannot corrupt it.
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) async fn authorize(&self, headers: &HeaderMap, pipeline: &PipelineKey) -> Result<Identity, ApiError> {
        let token = bearer_token(headers).ok_or(ApiError::MissingToken)?;
        match self.verifier.verify(token).await {
            Ok(identity) if may_act_for(&identity.username, pipeline) => Ok(identity),
            Ok(identity) => {
                tracing::debug!(username = %identity.username, %pipeline, "caller is not the pipeline's worker");
                Err(ApiError::Forbidden)
            }
            Err(VerifyError::Unauthenticated) => Err(ApiError::Unauthenticated),
            Err(VerifyError::Unavailable(e)) => {
                tracing::warn!(error = %e, "cannot verify worker tokens");
                Err(ApiError::Unavailable("token review unavailable"))
            }
        }
    }

    /// Waits up to `wait` for a lease for the worker in pod `holder` (when its token names one).
    #[tracing::instrument(skip_all, fields(pipeline = %pipeline))]
    pub(super) async fn lease(
        &self,
        pipeline: &PipelineKey,
        wait: Duration,
        holder: Option<String>,
    ) -> Result<Option<LeaseResponse>, ApiError> {
        let access = self.access(pipeline)?;
        let started = Instant::now();
        let give_up = started + wait;
        let notify = self.waiters.get(pipeline);
        loop {
            // Registered before looking, so an admission between the look and the wait still wakes us.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let mut step = self
                .backlogs
                .with(pipeline, |b, now| Step {
                    expired: b.expire(now),
                    lease: b.lease(now),
                    next_wakeup: b.next_wakeup(),
                    now,
                    lease_ms: b.config().lease_duration_ms,
                    max_attempts: b.config().max_attempts,
                })
                .ok_or(ApiError::UnknownPipeline)?;
            self.leases().sweep(step.now, step.lease_ms.saturating_mul(FORGET_AFTER_LEASES));
            self.reclaim(pipeline, std::mem::take(&mut step.expired)).await;
            if let Some(lease) = step.lease.take() {
                match self.grant(pipeline, &access, lease, &step, holder.clone()).await {
                    Ok(Some(granted)) => {
                        self.metrics.granted(pipeline);
                        self.metrics.waited(true, started.elapsed().as_secs_f64());
                        if let Some(took) = self.cold_starts().leased(pipeline, Instant::now()) {
                            self.metrics.cold_start(pipeline, took.as_secs_f64());
                            tracing::info!(
                                cold_start_ms = took.as_secs_f64() * 1000.0,
                                "first lease after a cold start"
                            );
                        }
                        return Ok(Some(granted));
                    }
                    // That object could not be handed out; look for the next one at once.
                    Ok(None) => continue,
                    Err(e) => return Err(e),
                }
            }
            let now = Instant::now();
            if now >= give_up {
                self.metrics.waited(false, started.elapsed().as_secs_f64());
                return Ok(None);
            }
            let sleep = match step.next_wakeup {
                Some(at) if at > step.now => Duration::from_millis(at - step.now),
                // Something eligible was not leasable (its key has a revision in flight): that
                // changes on a completion (which notifies) or an expiry, hidden behind it.
                Some(_) => RECHECK,
                None => give_up - now,
            };
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(sleep.min(give_up - now)) => {}
            }
        }
    }

    /// Hands out a lease the backlog granted: presigns its input and remembers it.
    async fn grant(
        &self,
        pipeline: &PipelineKey,
        access: &PipelineAccess,
        lease: Lease,
        step: &Step,
        holder: Option<String>,
    ) -> Result<Option<LeaseResponse>, ApiError> {
        let ttl = Duration::from_millis(step.lease_ms);
        let granted = Granted {
            backlog_id: lease.id,
            item: lease.item.clone(),
            attempt: lease.attempt,
            deadline: lease.deadline,
            granted_at: step.now,
            holder,
        };
        let url = match access.source.presign(Method::GET, &lease.item.object.key, ttl).await {
            Ok(url) => url,
            Err(e) => {
                let permanent = matches!(e, ObjectError::UnsupportedKey(_));
                tracing::warn!(error = %e, "cannot presign a leased object");
                self.fail_granted(pipeline, &granted, !permanent, None, &e.to_string(), step.max_attempts).await?;
                return if permanent { Ok(None) } else { Err(ApiError::Unavailable("the store cannot presign")) };
            }
        };
        let lease_id = self.leases().insert(pipeline, granted);
        let item = lease.item;
        Ok(Some(LeaseResponse {
            lease_id,
            bucket: item.object.bucket,
            key: item.object.key,
            etag: item.etag,
            version_id: item.version_id,
            size: item.size,
            attempt: lease.attempt,
            deadline_unix_ms: unix_ms(lease.deadline, step.now),
            lease_seconds: step.lease_ms / 1000,
            heartbeat_interval_seconds: heartbeat_interval_seconds(step.lease_ms),
            input_url: url.to_string(),
        }))
    }

    /// Records leases the backlog reclaimed for good; their workers went silent.
    async fn reclaim(&self, pipeline: &PipelineKey, expired: Vec<(ItemId, Retry)>) {
        for (id, retry) in expired {
            if retry != Retry::Exhausted {
                self.metrics.ended(pipeline, Ended::Expired);
                continue;
            }
            // Its last attempt expired: failed for good, counted with the other final failures.
            self.metrics.ended(pipeline, Ended::Failed);
            let granted = self.leases().take_item(pipeline, &id);
            let (item, attempts) = match granted {
                Some(g) => (g.item, g.attempt),
                None => (item_from_id(id), 0),
            };
            let outcome = Outcome::Failed { attempts, exit_code: None, reason: "lease expired".into() };
            // The backlog has already moved on; a lost record here is found again by resync.
            if let Err(e) = self.completion.record(pipeline, &item, &outcome).await {
                tracing::warn!(error = %e, "cannot record an expired object as failed");
            }
        }
    }

    pub(super) async fn heartbeat(
        &self,
        pipeline: &PipelineKey,
        lease_id: &str,
    ) -> Result<HeartbeatResponse, ApiError> {
        let granted = self.leases().get(pipeline, lease_id).ok_or(ApiError::UnknownLease)?;
        let (result, now) = self
            .backlogs
            .with(pipeline, |b, now| (b.heartbeat(granted.backlog_id, now), now))
            .ok_or(ApiError::UnknownPipeline)?;
        match result {
            Ok(deadline) => {
                self.leases().set_deadline(pipeline, lease_id, deadline);
                Ok(HeartbeatResponse { deadline_unix_ms: unix_ms(deadline, now) })
            }
            Err(_) => {
                self.leases().remove(pipeline, lease_id);
                Err(ApiError::LeaseGone)
            }
        }
    }

    pub(super) async fn output(
        &self,
        pipeline: &PipelineKey,
        lease_id: &str,
        request: OutputRequest,
    ) -> Result<OutputResponse, ApiError> {
        validate_output_name(&request.name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let access = self.access(pipeline)?;
        let (now, lease_ms) = self
            .backlogs
            .with(pipeline, |b, now| (now, b.config().lease_duration_ms))
            .ok_or(ApiError::UnknownPipeline)?;
        let granted = self.leases().get(pipeline, lease_id);
        let input_key = match granted {
            Some(g) if g.deadline < now => return Err(ApiError::LeaseGone),
            Some(g) => g.item.object.key,
            None => self.verify_unknown(&access, &request.object).await?.object.key,
        };
        let key = output_key(&access.sink_prefix, &input_key, &request.name);
        let url =
            access.sink.presign(Method::PUT, &key, Duration::from_millis(lease_ms)).await.map_err(|e| match e {
                ObjectError::UnsupportedKey(_) => ApiError::BadRequest(e.to_string()),
                ObjectError::Store(_) => ApiError::Unavailable("the store cannot presign"),
            })?;
        Ok(OutputResponse {
            name: request.name,
            bucket: access.sink.name().to_owned(),
            key,
            method: "PUT".into(),
            url: url.to_string(),
            expires_in_seconds: lease_ms / 1000,
        })
    }

    pub(super) async fn complete(
        &self,
        pipeline: &PipelineKey,
        lease_id: &str,
        request: CompleteRequest,
    ) -> Result<FinishResponse, ApiError> {
        for name in &request.outputs {
            validate_output_name(name).map_err(|e| ApiError::BadRequest(format!("{name:?}: {e}")))?;
        }
        let access = self.access(pipeline)?;
        let granted = self.leases().get(pipeline, lease_id);
        let item = match &granted {
            Some(g) => g.item.clone(),
            None => self.verify_unknown(&access, &request.object).await?,
        };
        let outputs = request.outputs.iter().map(|n| output_key(&access.sink_prefix, &item.object.key, n)).collect();
        let attempts = granted.as_ref().map_or(request.attempt.unwrap_or(1), |g| g.attempt);
        self.record(pipeline, &item, Outcome::Done { attempts, outputs }).await?;
        let lease_held = match granted {
            Some(g) => {
                let (acked, now) = self
                    .backlogs
                    .with(pipeline, |b, now| (b.complete(g.backlog_id), now))
                    .ok_or(ApiError::UnknownPipeline)?;
                self.observe_processing(pipeline, &g, now);
                self.leases().remove(pipeline, lease_id);
                // The object's next revision, if one waits, can be leased now.
                self.waiters.notify(pipeline);
                acked.is_ok()
            }
            None => false,
        };
        self.metrics.ended(pipeline, Ended::Done);
        Ok(FinishResponse { recorded: true, lease_held })
    }

    pub(super) async fn fail(
        &self,
        pipeline: &PipelineKey,
        lease_id: &str,
        request: FailRequest,
    ) -> Result<FinishResponse, ApiError> {
        let access = self.access(pipeline)?;
        let max_attempts =
            self.backlogs.with(pipeline, |b, _| b.config().max_attempts).ok_or(ApiError::UnknownPipeline)?;
        let tail = stderr_tail(request.stderr_tail.as_deref().unwrap_or_default());
        let granted = self.leases().get(pipeline, lease_id);
        if request.handed_back {
            return self.hand_back(pipeline, lease_id, granted);
        }
        if let Some(granted) = granted {
            if let Some(now) = self.backlogs.with(pipeline, |_, now| now) {
                self.observe_processing(pipeline, &granted, now);
            }
            let ack =
                self.fail_granted(pipeline, &granted, request.retryable, request.exit_code, tail, max_attempts).await?;
            self.leases().remove(pipeline, lease_id);
            return Ok(ack);
        }
        // Unknown here (this replica restarted): only a final failure has something to record.
        let item = self.verify_unknown(&access, &request.object).await?;
        let attempt = request.attempt.unwrap_or(1);
        let recorded = is_final_failure(request.retryable, attempt, max_attempts);
        if recorded {
            let outcome = Outcome::Failed { attempts: attempt, exit_code: request.exit_code, reason: tail.to_owned() };
            self.record(pipeline, &item, outcome).await?;
            self.metrics.ended(pipeline, Ended::Failed);
        }
        Ok(FinishResponse { recorded, lease_held: false })
    }

    /// A lease given back by a worker that is stopping. Unknown here (this replica restarted),
    /// there is nothing to undo: the object is pending again after the resync.
    fn hand_back(
        &self,
        pipeline: &PipelineKey,
        lease_id: &str,
        granted: Option<Granted>,
    ) -> Result<FinishResponse, ApiError> {
        let Some(granted) = granted else { return Ok(FinishResponse { recorded: false, lease_held: false }) };
        let result = self
            .backlogs
            .with(pipeline, |b, now| b.hand_back(granted.backlog_id, now))
            .ok_or(ApiError::UnknownPipeline)?;
        self.leases().remove(pipeline, lease_id);
        self.waiters.notify(pipeline);
        self.metrics.ended(pipeline, Ended::HandedBack);
        Ok(FinishResponse { recorded: false, lease_held: result.is_ok() })
    }

    /// Fails a lease this replica granted: the record first when the failure is final, then the
    /// backlog. `detail` is the stderr tail or the operator's reason.
    async fn fail_granted(
        &self,
        pipeline: &PipelineKey,
        granted: &Granted,
        retryable: bool,
        exit_code: Option<i32>,
        detail: &str,
        max_attempts: u32,
    ) -> Result<FinishResponse, ApiError> {
        let final_failure = is_final_failure(retryable, granted.attempt, max_attempts);
        if final_failure {
            let outcome = Outcome::Failed { attempts: granted.attempt, exit_code, reason: detail.to_owned() };
            self.record(pipeline, &granted.item, outcome).await?;
        }
        // The backlog keeps it as the item's last error, for Events and status.
        let last_error = match exit_code {
            Some(code) => format!("exit code {code}: {detail}"),
            None => detail.to_owned(),
        };
        let result = self
            .backlogs
            .with(pipeline, |b, now| b.fail(granted.backlog_id, retryable, &last_error, now))
            .ok_or(ApiError::UnknownPipeline)?;
        self.waiters.notify(pipeline);
        match result {
            Ok(Retry::At(_)) => {
                self.metrics.ended(pipeline, Ended::Retry);
                Ok(FinishResponse { recorded: final_failure, lease_held: true })
            }
            Ok(Retry::Exhausted) => {
                self.metrics.ended(pipeline, Ended::Failed);
                Ok(FinishResponse { recorded: final_failure, lease_held: true })
            }
            // Expired meanwhile: the failure only counts if it was final and is now recorded.
            Err(_) if final_failure => Ok(FinishResponse { recorded: true, lease_held: false }),
            Err(_) => Err(ApiError::LeaseGone),
        }
    }

    fn observe_processing(&self, pipeline: &PipelineKey, granted: &Granted, now: Millis) {
        let millis = now.saturating_sub(granted.granted_at);
        self.metrics.processed(pipeline, Duration::from_millis(millis).as_secs_f64());
    }

    async fn record(&self, pipeline: &PipelineKey, item: &WorkItem, outcome: Outcome) -> Result<(), ApiError> {
        self.completion.record(pipeline, item, &outcome).await.map_err(|e| {
            tracing::warn!(error = %e, %pipeline, "cannot record an outcome");
            ApiError::Unavailable("cannot record the outcome; retry")
        })
    }

    /// A lease this replica does not know (it restarted, or forgot a long-expired lease): the
    /// answer is accepted only for a real object of the pipeline, at the revision leased, so
    /// finished work is not redone and nothing else can be recorded.
    async fn verify_unknown(&self, access: &PipelineAccess, object: &ObjectRef) -> Result<WorkItem, ApiError> {
        let (Some(bucket), Some(key), Some(etag)) = (&object.bucket, &object.key, &object.etag) else {
            return Err(ApiError::UnknownLease);
        };
        if bucket != access.source.name() {
            return Err(ApiError::UnknownLease);
        }
        match access.source.head(key).await {
            Ok(Some(info)) if info.etag.as_deref().is_some_and(|e| same_etag(e, etag)) => Ok(WorkItem {
                object: ObjectId { bucket: bucket.clone(), key: key.clone() },
                etag: Some(etag.clone()),
                version_id: None,
                size: Some(info.size),
                sequencer: None,
            }),
            Ok(_) | Err(ObjectError::UnsupportedKey(_)) => Err(ApiError::ObjectGone),
            Err(ObjectError::Store(e)) => {
                tracing::warn!(error = %e, "cannot check an object for an unknown lease");
                Err(ApiError::Unavailable("the store is unreachable"))
            }
        }
    }
}

struct Step {
    expired: Vec<(ItemId, Retry)>,
    lease: Option<Lease>,
    next_wakeup: Option<Millis>,
    now: Millis,
    lease_ms: Millis,
    max_attempts: u32,
}

/// Distinguishes this process's lease ids from an earlier run's.
fn process_epoch() -> u64 {
    use std::hash::BuildHasher;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    std::hash::RandomState::new().hash_one(nanos)
}

/// A backlog-clock time as wall-clock milliseconds since the Unix epoch.
fn unix_ms(at: Millis, now: Millis) -> u64 {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    u64::try_from(wall).unwrap_or(u64::MAX).saturating_add(at.saturating_sub(now))
}

/// What the backlog still says about an item whose lease record is gone.
fn item_from_id(id: ItemId) -> WorkItem {
    WorkItem { object: id.object, etag: id.revision, version_id: None, size: None, sequencer: None }
}
