//! Re-driving failed objects: a new value of the `zeroflow.dev/redrive` annotation puts every
//! failed object back to work once, both those the runtime remembers and those only the ledger
//! knows (their failure markers are removed and a resync admits them).

use kube::ResourceExt;

use super::{Context, source};
use crate::api::{DataPipeline, REDRIVE_ANNOTATION};
use crate::runtime::Pipeline;
use crate::store::StoreError;

/// What a re-drive did, for status and an Event.
pub struct Redriven {
    /// The annotation value acted on (recorded as `status.lastRedrive`).
    pub value: String,
    pub note: String,
}

/// Acts on a new annotation value; `None` when there is none (or it was handled before).
/// `Err` when the ledger could not be reached: the value is not recorded, so the next reconcile
/// tries again.
pub async fn if_asked(
    ctx: &Context,
    pipeline: &DataPipeline,
    runtime: &Pipeline,
) -> Option<Result<Redriven, StoreError>> {
    let value = pipeline.annotations().get(REDRIVE_ANNOTATION)?;
    let status = pipeline.status.clone().unwrap_or_default();
    if status.last_redrive.as_ref() == Some(value) {
        return None;
    }
    let now = ctx.pipelines.now();
    let in_memory = runtime.lock().backlog.redrive_failed(now).unwrap_or(0);
    let ledger = match runtime.access() {
        Some(access) => Ok(access.ledger.clone()),
        None => source::ledger(ctx, pipeline).await,
    };
    let removed = match ledger {
        Ok(ledger) => ledger.remove_failed().await.map_err(|e| StoreError::Unreachable(format!("ledger: {e}"))),
        Err(e) => Err(e),
    };
    Some(removed.map(|removed| {
        {
            let mut state = runtime.lock();
            // Markers of failures the backlog still remembered were counted once already.
            state.progress.failures_redriven(u64::try_from(removed.saturating_sub(in_memory)).unwrap_or(0));
            state.resync.request();
        }
        runtime.notify.notify_waiters();
        Redriven {
            value: value.clone(),
            note: format!("re-driving failed objects: {in_memory} queued again, {removed} failure markers removed"),
        }
    }))
}
