//! Re-driving failed objects: a new value of the `zeroflow.dev/redrive` annotation puts failed
//! objects back to work once: every one, or those whose key starts with the
//! `zeroflow.dev/redrive-prefix` annotation. Both those the runtime remembers and those only
//! the ledger knows (their failure markers are removed and a resync admits them) go back.

use kube::ResourceExt;

use super::{Context, source};
use crate::api::{DataPipeline, REDRIVE_ANNOTATION, REDRIVE_PREFIX_ANNOTATION};
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
    let prefix = pipeline.annotations().get(REDRIVE_PREFIX_ANNOTATION).map_or("", String::as_str);
    let now = ctx.pipelines.now();
    let in_memory = runtime.lock().backlog.redrive_failed(prefix, now).unwrap_or(0);
    let ledger = match runtime.access() {
        Some(access) => Ok(access.ledger.clone()),
        None => source::ledger(ctx, pipeline).await,
    };
    let removed = match ledger {
        Ok(ledger) => ledger.remove_failed(prefix).await.map_err(|e| StoreError::Unreachable(format!("ledger: {e}"))),
        Err(e) => Err(e),
    };
    Some(removed.map(|removed| {
        {
            let mut state = runtime.lock();
            // Markers of failures the backlog still remembered were counted once already.
            state.progress.failures_redriven(u64::try_from(removed.saturating_sub(in_memory)).unwrap_or(0));
            state.failures.remove_prefix(prefix);
            state.resync.request();
        }
        runtime.notify.notify_waiters();
        Redriven { value: value.clone(), note: note(prefix, in_memory, removed) }
    }))
}

fn note(prefix: &str, in_memory: usize, removed: usize) -> String {
    let which =
        if prefix.is_empty() { "failed objects".to_owned() } else { format!("failed objects under {prefix:?}") };
    format!("re-driving {which}: {in_memory} queued again, {removed} failure markers removed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_names_the_prefix_when_there_is_one() {
        assert_eq!(note("", 2, 3), "re-driving failed objects: 2 queued again, 3 failure markers removed");
        assert_eq!(
            note("in/a.csv", 1, 1),
            "re-driving failed objects under \"in/a.csv\": 1 queued again, 1 failure markers removed"
        );
    }
}
