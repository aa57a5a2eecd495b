//! The work API's behaviour: authorization, long-poll leasing, heartbeats (and re-attaching the
//! leases an earlier leader granted), presigned outputs, completion. The wire is in
//! [`super::http`], the pure decisions in [`zeroflow_core::work`], the state in each pipeline's
//! runtime.
//!
//! A result is recorded in the ledger before the backlog is told, so an acknowledged object
//! always has its record; and a revision already in the ledger is never leased again.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use chrono::Utc;
use object_store::signer::Method;
use zeroflow_contract::names::{output_key, stderr_tail, validate_output_name};
use zeroflow_contract::wire::{
    CompleteRequest, FailRequest, FinishResponse, HeartbeatRequest, HeartbeatResponse, Lease as LeaseResponse,
    ObjectRef, OutputRequest, OutputTarget,
};
use zeroflow_core::PipelineKey;
use zeroflow_core::backlog::{ItemId, Lease, Millis, ObjectId, ReattachError, Retry, WorkItem};
use zeroflow_core::leases::Granted;
use zeroflow_core::ledger::{Marker, normalize_etag};
use zeroflow_core::work::{heartbeat_interval_seconds, is_final_failure, may_act_for, same_etag};

use super::auth::{Identity, TokenVerifier, VerifyError, bearer_token};
use super::http::ApiError;
use super::objects::ObjectError;
use crate::metrics::{Ended, Skipped};
use crate::runtime::declared::Lookup;
use crate::runtime::{Access, Pipeline, Pipelines};

/// A granted lease is remembered this many lease durations past its deadline, so a late answer
/// is still matched to its object without asking the store.
const FORGET_AFTER_LEASES: u64 = 10;
/// When a blocked item hides the next timer, polls look again this often.
const RECHECK: Duration = Duration::from_secs(1);

pub struct WorkApi {
    pipelines: Arc<Pipelines>,
    verifier: Arc<dyn TokenVerifier>,
}

struct Step {
    expired: Vec<(ItemId, Retry)>,
    lease: Option<Lease>,
    next_wakeup: Option<Millis>,
    now: Millis,
    lease_ms: Millis,
    max_attempts: u32,
}

impl WorkApi {
    pub fn new(pipelines: Arc<Pipelines>, verifier: Arc<dyn TokenVerifier>) -> Self {
        Self { pipelines, verifier }
    }

    pub(super) fn refused(&self, reason: &'static str) {
        self.pipelines.metrics().refused(reason);
    }

    fn pipeline(&self, key: &PipelineKey) -> Result<Arc<Pipeline>, ApiError> {
        self.pipelines.get(key).ok_or_else(|| match self.pipelines.declared().lookup(key) {
            Lookup::Loading => ApiError::PipelineLoading,
            Lookup::Missing => ApiError::UnknownPipeline,
        })
    }

    fn access(pipeline: &Pipeline) -> Result<Arc<Access>, ApiError> {
        pipeline.access().ok_or(ApiError::Unavailable("the pipeline's store is not reachable yet"))
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
    #[tracing::instrument(skip_all, fields(pipeline = %key))]
    pub(super) async fn lease(
        &self,
        key: &PipelineKey,
        wait: Duration,
        holder: Option<String>,
    ) -> Result<Option<LeaseResponse>, ApiError> {
        let pipeline = self.pipeline(key)?;
        let metrics = self.pipelines.metrics();
        let started = Instant::now();
        let give_up = started + wait;
        loop {
            // Registered before looking, so an admission between the look and the wait still wakes us.
            let notified = pipeline.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let access = pipeline.access();
            let mut step = {
                let now = self.pipelines.now();
                let mut state = pipeline.lock();
                let config = state.backlog.config().clone();
                let expired = state.backlog.expire(now);
                // Without store access nothing can be handed out; the lease waits for it. A
                // stopped (a cycle) or paused pipeline hands out nothing either, nor does a
                // scale-down to a worker it may remove.
                let may = access.is_some() && state.may_lease_to(holder.as_deref());
                let lease = if may { state.backlog.lease(now) } else { None };
                state.leases.sweep(now, config.lease_duration_ms.saturating_mul(FORGET_AFTER_LEASES));
                Step {
                    expired,
                    lease,
                    next_wakeup: state.backlog.next_wakeup(),
                    now,
                    lease_ms: config.lease_duration_ms,
                    max_attempts: config.max_attempts,
                }
            };
            self.reclaim(&pipeline, access.as_deref(), std::mem::take(&mut step.expired)).await;
            if let (Some(lease), Some(access)) = (step.lease.take(), access.as_ref()) {
                match self.grant(&pipeline, access, lease, &step, holder.clone()).await? {
                    Some(granted) => {
                        metrics.granted(key);
                        metrics.lease_waited(true, started.elapsed().as_secs_f64());
                        let cold = pipeline.lock().cold_start.leased(Instant::now());
                        if let Some(took) = cold {
                            metrics.cold_start(key, took.as_secs_f64());
                            tracing::info!(
                                cold_start_ms = took.as_secs_f64() * 1000.0,
                                "first lease after a cold start"
                            );
                        }
                        return Ok(Some(granted));
                    }
                    // That object was not work after all; look for the next one at once.
                    None => continue,
                }
            }
            // Removed (deleted, or this replica stopped leading) while waiting.
            if !self.pipelines.get(key).is_some_and(|p| Arc::ptr_eq(&p, &pipeline)) {
                return Err(ApiError::UnknownPipeline);
            }
            let now = Instant::now();
            if now >= give_up {
                metrics.lease_waited(false, started.elapsed().as_secs_f64());
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

    /// Hands out a lease the backlog granted: skips a revision the ledger already has, presigns
    /// the input and remembers the lease. `None` when the object was not work after all.
    async fn grant(
        &self,
        pipeline: &Pipeline,
        access: &Access,
        lease: Lease,
        step: &Step,
        holder: Option<String>,
    ) -> Result<Option<LeaseResponse>, ApiError> {
        let key = &pipeline.key;
        let item = &lease.item;
        match access.ledger.contains(&item.object.key, item.etag.as_deref()).await {
            Ok(true) => {
                // A duplicate notification after the backlog forgot the revision (a restart, a
                // long time): done already, not run again.
                let _ = pipeline.lock().backlog.finish_duplicate(lease.id);
                self.pipelines.metrics().skipped(key, Skipped::AlreadyDone, 1);
                tracing::info!(key = %item.object.key, "already in the ledger: not leased again");
                return Ok(None);
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the ledger; giving the object back");
                let now = self.pipelines.now();
                let _ = pipeline.lock().backlog.hand_back(lease.id, now);
                return Err(ApiError::Unavailable("the ledger cannot be read"));
            }
        }
        let ttl = Duration::from_millis(step.lease_ms);
        let url = match access.source.presign(Method::GET, &item.object.key, ttl).await {
            Ok(url) => url,
            Err(e @ ObjectError::UnsupportedKey(_)) => {
                // No worker could ever read it: a failure for good, recorded.
                let granted = self.granted(lease.clone(), step.now, holder);
                self.fail_granted(pipeline, access, &granted, false, None, &e.to_string(), step.max_attempts).await?;
                return Ok(None);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot presign a leased object; giving it back");
                let now = self.pipelines.now();
                let _ = pipeline.lock().backlog.hand_back(lease.id, now);
                return Err(ApiError::Unavailable("the store cannot presign"));
            }
        };
        let lease_id = {
            let mut state = pipeline.lock();
            // A scale-down that began while the ledger was read may remove this worker: the
            // object goes back (the attempt not counted) rather than to a worker about to stop.
            if !state.may_lease_to(holder.as_deref()) {
                let _ = state.backlog.hand_back(lease.id, self.pipelines.now());
                drop(state);
                pipeline.notify.notify_waiters();
                return Ok(None);
            }
            state.leases.insert(self.granted(lease.clone(), step.now, holder))
        };
        let item = lease.item;
        Ok(Some(LeaseResponse {
            lease_id,
            bucket: item.object.bucket.to_string(),
            key: item.object.key.to_string(),
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

    fn granted(&self, lease: Lease, now: Millis, holder: Option<String>) -> Granted {
        Granted {
            backlog_id: lease.id,
            item: lease.item,
            attempt: lease.attempt,
            deadline: lease.deadline,
            granted_at: now,
            holder,
        }
    }

    /// Records leases the backlog reclaimed for good; their workers went silent.
    async fn reclaim(&self, pipeline: &Pipeline, access: Option<&Access>, expired: Vec<(ItemId, Retry)>) {
        let key = &pipeline.key;
        for (id, retry) in expired {
            let metrics = self.pipelines.metrics();
            // Attempts remain, or another revision of the key is queued instead (then this one
            // is not failed: no record, see `Retry::Superseded`).
            if retry != Retry::Exhausted {
                metrics.ended(key, Ended::Expired);
                continue;
            }
            // Its last attempt expired: failed for good, counted with the other final failures.
            metrics.ended(key, Ended::Failed);
            let granted = pipeline.lock().leases.take_item(&id);
            let (item, attempts) = match granted {
                Some(g) => (g.item, g.attempt),
                None => (item_from_id(id), 0),
            };
            let marker = Marker::failed(&item, attempts, None, "lease expired".into(), Utc::now());
            pipeline.lock().failures.push(&marker);
            // The backlog has already moved on; a lost record here is found again by resync.
            if let Some(access) = access
                && let Err(e) = access.ledger.record(&marker).await
            {
                tracing::warn!(error = %e, "cannot record an expired object as failed");
            }
        }
    }

    /// Renews a lease. A lease this replica does not hold (granted by an earlier leader, or
    /// expired here while its worker went on) is re-attached when its worker is the only one
    /// working on the revision and nobody finished it.
    pub(super) async fn heartbeat(
        &self,
        key: &PipelineKey,
        lease_id: &str,
        request: HeartbeatRequest,
        holder: Option<String>,
    ) -> Result<HeartbeatResponse, ApiError> {
        let pipeline = self.pipeline(key)?;
        let now = self.pipelines.now();
        let lapsed = {
            let mut state = pipeline.lock();
            match state.leases.get(lease_id).cloned() {
                Some(granted) => match state.backlog.heartbeat(granted.backlog_id, now) {
                    Ok(deadline) => {
                        state.leases.set_deadline(lease_id, deadline);
                        return Ok(HeartbeatResponse { deadline_unix_ms: unix_ms(deadline, now) });
                    }
                    Err(_) => {
                        state.leases.remove(lease_id);
                        true
                    }
                },
                None => false,
            }
        };
        match self.reattach(&pipeline, lease_id, &request, holder).await {
            // A lease this replica granted and lost, from a worker that does not say what it
            // holds: gone, so the worker stops.
            Err(ApiError::UnknownLease) if lapsed => Err(ApiError::LeaseGone),
            other => other,
        }
    }

    async fn reattach(
        &self,
        pipeline: &Pipeline,
        lease_id: &str,
        request: &HeartbeatRequest,
        holder: Option<String>,
    ) -> Result<HeartbeatResponse, ApiError> {
        let access = Self::access(pipeline)?;
        let item = self.verify_unknown(pipeline, &access, &request.object).await?;
        match access.ledger.contains(&item.object.key, item.etag.as_deref()).await {
            // Finished by someone else while this worker's lease had lapsed.
            Ok(true) => return Err(ApiError::LeaseGone),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the ledger to re-attach a lease");
                return Err(ApiError::Unavailable("the ledger cannot be read"));
            }
        }
        let now = self.pipelines.now();
        let mut state = pipeline.lock();
        let lease = match state.backlog.reattach(item, request.attempt.unwrap_or(1), now) {
            Ok(lease) => lease,
            Err(ReattachError::Finished | ReattachError::LeasedElsewhere) => return Err(ApiError::LeaseGone),
            Err(ReattachError::Overloaded(_)) => return Err(ApiError::Unavailable("the backlog is full")),
        };
        let deadline = lease.deadline;
        tracing::info!(pipeline = %pipeline.key, key = %lease.item.object.key, attempt = lease.attempt, "re-attached a lease granted before");
        state.leases.insert_as(lease_id, self.granted(lease, now, holder));
        Ok(HeartbeatResponse { deadline_unix_ms: unix_ms(deadline, now) })
    }

    pub(super) async fn output(
        &self,
        key: &PipelineKey,
        lease_id: &str,
        request: OutputRequest,
    ) -> Result<OutputTarget, ApiError> {
        validate_output_name(&request.name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let pipeline = self.pipeline(key)?;
        let access = Self::access(&pipeline)?;
        let (granted, lease_ms, sink_prefix) = {
            let state = pipeline.lock();
            (
                state.leases.get(lease_id).cloned(),
                state.backlog.config().lease_duration_ms,
                state.settings.sink_prefix.clone(),
            )
        };
        let input_key = match granted {
            Some(g) => g.item.object.key,
            None => self.verify_unknown(&pipeline, &access, &request.object).await?.object.key,
        };
        let output = output_key(&sink_prefix, &input_key, &request.name);
        let url =
            access.sink.presign(Method::PUT, &output, Duration::from_millis(lease_ms)).await.map_err(|e| match e {
                ObjectError::UnsupportedKey(_) => ApiError::BadRequest(e.to_string()),
                ObjectError::Store(_) => ApiError::Unavailable("the store cannot presign"),
            })?;
        Ok(OutputTarget {
            name: request.name,
            bucket: access.sink.name().to_owned(),
            key: output,
            method: "PUT".into(),
            url: url.to_string(),
            expires_in_seconds: lease_ms / 1000,
            headers: access.sink.upload_headers(),
        })
    }

    pub(super) async fn complete(
        &self,
        key: &PipelineKey,
        lease_id: &str,
        request: CompleteRequest,
    ) -> Result<FinishResponse, ApiError> {
        for name in &request.outputs {
            validate_output_name(name).map_err(|e| ApiError::BadRequest(format!("{name:?}: {e}")))?;
        }
        let pipeline = self.pipeline(key)?;
        let access = Self::access(&pipeline)?;
        let (granted, sink_prefix) = {
            let state = pipeline.lock();
            (state.leases.get(lease_id).cloned(), state.settings.sink_prefix.clone())
        };
        let item = match &granted {
            Some(g) => g.item.clone(),
            None => self.verify_unknown(&pipeline, &access, &request.object).await?,
        };
        let outputs = request.outputs.iter().map(|n| output_key(&sink_prefix, &item.object.key, n)).collect();
        let attempts = granted.as_ref().map_or(request.attempt.unwrap_or(1), |g| g.attempt);
        self.record(&access, &Marker::succeeded(&item, attempts, outputs, Utc::now())).await?;
        let now = self.pipelines.now();
        let lease_held = {
            let mut state = pipeline.lock();
            match granted {
                Some(g) => {
                    state.leases.remove(lease_id);
                    if state.backlog.complete(g.backlog_id).is_ok() {
                        self.observe_processing(key, &g, now);
                        true
                    } else {
                        // Expired meanwhile: the queued copy must not run again.
                        state.backlog.complete_unleased(item, now);
                        false
                    }
                }
                None => {
                    // Granted before a restart: a resync may have queued it again meanwhile.
                    state.backlog.complete_unleased(item, now);
                    false
                }
            }
        };
        // The object's next revision, if one waits, can be leased now.
        pipeline.notify.notify_waiters();
        self.pipelines.metrics().ended(key, Ended::Done);
        Ok(FinishResponse { recorded: true, lease_held })
    }

    pub(super) async fn fail(
        &self,
        key: &PipelineKey,
        lease_id: &str,
        request: FailRequest,
    ) -> Result<FinishResponse, ApiError> {
        let pipeline = self.pipeline(key)?;
        let access = Self::access(&pipeline)?;
        let (granted, max_attempts) = {
            let state = pipeline.lock();
            (state.leases.get(lease_id).cloned(), state.backlog.config().max_attempts)
        };
        if request.handed_back {
            return Ok(self.hand_back(&pipeline, lease_id, granted));
        }
        if request.input_missing
            && let Some(answer) = self.input_gone(&pipeline, &access, lease_id, granted.as_ref(), &request).await?
        {
            return Ok(answer);
        }
        let tail = stderr_tail(request.stderr_tail.as_deref().unwrap_or_default());
        if let Some(granted) = granted {
            self.observe_processing(key, &granted, self.pipelines.now());
            let ack = self
                .fail_granted(&pipeline, &access, &granted, request.retryable, request.exit_code, tail, max_attempts)
                .await?;
            pipeline.lock().leases.remove(lease_id);
            return Ok(ack);
        }
        // Unknown here (this replica restarted): only a final failure has something to record.
        let item = self.verify_unknown(&pipeline, &access, &request.object).await?;
        let attempt = request.attempt.unwrap_or(1);
        let recorded = is_final_failure(request.retryable, attempt, max_attempts);
        if recorded {
            let marker = Marker::failed(&item, attempt, request.exit_code, tail.to_owned(), Utc::now());
            self.record(&access, &marker).await?;
            pipeline.lock().failures.push(&marker);
            self.pipelines.metrics().ended(key, Ended::Failed);
        }
        Ok(FinishResponse { recorded, lease_held: false })
    }

    /// The worker found no input (404/412): when the store confirms the revision is gone, the
    /// object is dropped without using an attempt. `None` when it still exists (an ordinary
    /// failure, then).
    async fn input_gone(
        &self,
        pipeline: &Pipeline,
        access: &Access,
        lease_id: &str,
        granted: Option<&Granted>,
        request: &FailRequest,
    ) -> Result<Option<FinishResponse>, ApiError> {
        let (key, etag) = match granted {
            Some(g) => (g.item.object.key.to_string(), g.item.etag.clone()),
            // Only keys of this pipeline's route: the answer must not tell a worker whether
            // objects it could never lease exist.
            None => match (&request.object.key, &request.object.etag) {
                (Some(k), e) if pipeline.settings().route.matches(access.source.name(), k) => (k.clone(), e.clone()),
                _ => return Err(ApiError::UnknownLease),
            },
        };
        let still_there = match access.source.head(&key).await {
            Ok(Some(info)) => match (&info.etag, &etag) {
                (Some(now), Some(leased)) => same_etag(now, leased),
                _ => true,
            },
            Ok(None) | Err(ObjectError::UnsupportedKey(_)) => false,
            Err(ObjectError::Store(e)) => {
                tracing::warn!(error = %e, "cannot check whether an input is gone");
                return Err(ApiError::Unavailable("the store is unreachable"));
            }
        };
        if still_there {
            return Ok(None);
        }
        tracing::info!(pipeline = %pipeline.key, key, "the input is gone: skipped");
        let lease_held = {
            let mut state = pipeline.lock();
            state.leases.remove(lease_id);
            granted.is_some_and(|g| state.backlog.drop_gone(g.backlog_id).is_ok())
        };
        pipeline.notify.notify_waiters();
        self.pipelines.metrics().skipped(&pipeline.key, Skipped::Gone, 1);
        Ok(Some(FinishResponse { recorded: false, lease_held }))
    }

    /// A lease given back by a worker that is stopping. Unknown here (this replica restarted),
    /// there is nothing to undo: the object is pending again after the resync.
    fn hand_back(&self, pipeline: &Pipeline, lease_id: &str, granted: Option<Granted>) -> FinishResponse {
        let Some(granted) = granted else { return FinishResponse { recorded: false, lease_held: false } };
        let now = self.pipelines.now();
        let held = {
            let mut state = pipeline.lock();
            state.leases.remove(lease_id);
            state.backlog.hand_back(granted.backlog_id, now).is_ok()
        };
        pipeline.notify.notify_waiters();
        self.pipelines.metrics().ended(&pipeline.key, Ended::HandedBack);
        FinishResponse { recorded: false, lease_held: held }
    }

    /// Fails a lease this replica granted: the record first when the failure is final, then the
    /// backlog. `detail` is the stderr tail or the operator's reason.
    #[allow(clippy::too_many_arguments)] // each is one fact about the failure, named at the call
    async fn fail_granted(
        &self,
        pipeline: &Pipeline,
        access: &Access,
        granted: &Granted,
        retryable: bool,
        exit_code: Option<i32>,
        detail: &str,
        max_attempts: u32,
    ) -> Result<FinishResponse, ApiError> {
        let final_failure = is_final_failure(retryable, granted.attempt, max_attempts);
        if final_failure {
            let marker = Marker::failed(&granted.item, granted.attempt, exit_code, detail.to_owned(), Utc::now());
            self.record(access, &marker).await?;
            pipeline.lock().failures.push(&marker);
        }
        // The backlog keeps it as the item's last error, for Events and status.
        let last_error = match exit_code {
            Some(code) => format!("exit code {code}: {detail}"),
            None => detail.to_owned(),
        };
        let now = self.pipelines.now();
        let result = pipeline.lock().backlog.fail(granted.backlog_id, retryable, &last_error, now);
        pipeline.notify.notify_waiters();
        let metrics = self.pipelines.metrics();
        match result {
            // Superseded: the key goes on with its other queued revision.
            Ok(Retry::At(_) | Retry::Superseded) => {
                metrics.ended(&pipeline.key, Ended::Retry);
                Ok(FinishResponse { recorded: final_failure, lease_held: true })
            }
            Ok(Retry::Exhausted) => {
                metrics.ended(&pipeline.key, Ended::Failed);
                Ok(FinishResponse { recorded: final_failure, lease_held: true })
            }
            // Expired meanwhile: the failure only counts if it was final and is now recorded.
            Err(_) if final_failure => Ok(FinishResponse { recorded: true, lease_held: false }),
            Err(_) => Err(ApiError::LeaseGone),
        }
    }

    fn observe_processing(&self, key: &PipelineKey, granted: &Granted, now: Millis) {
        let millis = now.saturating_sub(granted.granted_at);
        self.pipelines.metrics().processed(key, Duration::from_millis(millis).as_secs_f64());
    }

    async fn record(&self, access: &Access, marker: &Marker) -> Result<(), ApiError> {
        access.ledger.record(marker).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot record an outcome");
            ApiError::Unavailable("cannot record the outcome; retry")
        })
    }

    /// A lease this replica does not know (it restarted, or forgot a long-expired lease): the
    /// answer is accepted only for a real object of the pipeline, at the revision leased, so
    /// finished work is not redone and nothing else can be recorded. "Of the pipeline" is its
    /// route, not only its bucket: two pipelines may share a bucket, and a worker must not
    /// record, or get an upload URL for, an object that only the other one could have leased.
    async fn verify_unknown(
        &self,
        pipeline: &Pipeline,
        access: &Access,
        object: &ObjectRef,
    ) -> Result<WorkItem, ApiError> {
        let (Some(bucket), Some(key), Some(etag)) = (&object.bucket, &object.key, &object.etag) else {
            return Err(ApiError::UnknownLease);
        };
        if bucket != access.source.name() || !pipeline.settings().route.matches(bucket, key) {
            return Err(ApiError::UnknownLease);
        }
        match access.source.head(key).await {
            Ok(Some(info)) if info.etag.as_deref().is_some_and(|e| same_etag(e, etag)) => Ok(WorkItem {
                object: ObjectId::new(bucket.as_str(), key.as_str()),
                etag: Some(normalize_etag(Some(etag)).into_owned()),
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

/// A backlog-clock time as wall-clock milliseconds since the Unix epoch.
fn unix_ms(at: Millis, now: Millis) -> u64 {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    u64::try_from(wall).unwrap_or(u64::MAX).saturating_add(at.saturating_sub(now))
}

/// What the backlog still says about an item whose lease record is gone.
fn item_from_id(id: ItemId) -> WorkItem {
    WorkItem {
        object: id.object,
        etag: id.revision.map(|r| r.to_string()),
        version_id: None,
        size: None,
        sequencer: None,
    }
}
