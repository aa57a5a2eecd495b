//! Where finished work is recorded. The durable ledger plugs in here; [`InMemoryCompletion`]
//! serves tests. The work API writes the record before it acknowledges the lease in the backlog,
//! so an acknowledged object always has its record.

use std::sync::{Mutex, PoisonError};

use futures::future::BoxFuture;
use thiserror::Error;

use zeroflow_core::PipelineKey;
use zeroflow_core::backlog::WorkItem;

/// How an object ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed on attempt `attempts`; `outputs` are the full keys in the sink bucket.
    Done { attempts: u32, outputs: Vec<String> },
    /// No attempt left (or the failure was permanent). `reason` is the end of the transform's
    /// stderr (at most 4 KiB), or why the operator gave up (`lease expired`).
    Failed { attempts: u32, exit_code: Option<i32>, reason: String },
}

impl Outcome {
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("could not record the outcome: {0}")]
pub struct CompletionError(pub String);

/// Durably records an object's outcome. Must be idempotent: the same object can be recorded twice
/// (a worker retrying after a lost answer, a lease that expired while its work finished).
pub trait Completion: Send + Sync + 'static {
    fn record<'a>(
        &'a self,
        pipeline: &'a PipelineKey,
        item: &'a WorkItem,
        outcome: &'a Outcome,
    ) -> BoxFuture<'a, Result<(), CompletionError>>;
}

/// Keeps records in memory; can be told to fail, to test that nothing is acknowledged unrecorded.
#[derive(Debug, Default)]
pub struct InMemoryCompletion {
    records: Mutex<Vec<(PipelineKey, WorkItem, Outcome)>>,
    failing: Mutex<bool>,
}

impl InMemoryCompletion {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn records(&self) -> Vec<(PipelineKey, WorkItem, Outcome)> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// While set, every `record` fails.
    pub fn set_failing(&self, failing: bool) {
        *self.failing.lock().unwrap_or_else(PoisonError::into_inner) = failing;
    }
}

impl Completion for InMemoryCompletion {
    fn record<'a>(
        &'a self,
        pipeline: &'a PipelineKey,
        item: &'a WorkItem,
        outcome: &'a Outcome,
    ) -> BoxFuture<'a, Result<(), CompletionError>> {
        let result = if *self.failing.lock().unwrap_or_else(PoisonError::into_inner) {
            Err(CompletionError("in-memory completion told to fail".into()))
        } else {
            self.records.lock().unwrap_or_else(PoisonError::into_inner).push((
                pipeline.clone(),
                item.clone(),
                outcome.clone(),
            ));
            Ok(())
        };
        Box::pin(async move { result })
    }
}
