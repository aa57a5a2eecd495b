//! [`Completion`] backed by the durable ledger ([`zeroflow_core::ledger`]): one marker per
//! finished object revision. The controller registers each pipeline's [`Ledger`] as it does the
//! pipeline's store access.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use chrono::Utc;
use futures::future::BoxFuture;

use super::completion::{Completion, CompletionError, Outcome};
use zeroflow_core::PipelineKey;
use zeroflow_core::backlog::WorkItem;
use zeroflow_core::ledger::{self, FailureDetail, Ledger, Marker, SourceObject};

#[derive(Debug, Default)]
pub struct LedgerCompletion {
    ledgers: RwLock<HashMap<PipelineKey, Ledger>>,
}

impl LedgerCompletion {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_pipeline(&self, pipeline: PipelineKey, ledger: Ledger) {
        self.ledgers.write().unwrap_or_else(PoisonError::into_inner).insert(pipeline, ledger);
    }

    pub fn remove_pipeline(&self, pipeline: &PipelineKey) {
        self.ledgers.write().unwrap_or_else(PoisonError::into_inner).remove(pipeline);
    }

    fn ledger(&self, pipeline: &PipelineKey) -> Option<Ledger> {
        self.ledgers.read().unwrap_or_else(PoisonError::into_inner).get(pipeline).cloned()
    }
}

/// The marker for an outcome. Pure apart from the clock reading passed in.
pub fn marker(item: &WorkItem, outcome: &Outcome, finished_at: chrono::DateTime<Utc>) -> Marker {
    let source = SourceObject {
        bucket: item.object.bucket.clone(),
        key: item.object.key.clone(),
        etag: item.etag.clone(),
        version_id: item.version_id.clone(),
    };
    match outcome {
        Outcome::Done { attempts, outputs } => Marker {
            outcome: ledger::Outcome::Succeeded,
            source,
            outputs: outputs.clone(),
            attempts: *attempts,
            finished_at,
            error: None,
        },
        Outcome::Failed { attempts, exit_code, reason } => Marker {
            outcome: ledger::Outcome::Failed,
            source,
            outputs: Vec::new(),
            attempts: *attempts,
            finished_at,
            error: Some(FailureDetail { exit_code: *exit_code, stderr_tail: reason.clone() }),
        },
    }
}

impl Completion for LedgerCompletion {
    fn record<'a>(
        &'a self,
        pipeline: &'a PipelineKey,
        item: &'a WorkItem,
        outcome: &'a Outcome,
    ) -> BoxFuture<'a, Result<(), CompletionError>> {
        Box::pin(async move {
            let ledger =
                self.ledger(pipeline).ok_or_else(|| CompletionError(format!("no ledger for pipeline {pipeline}")))?;
            ledger.record(&marker(item, outcome, Utc::now())).await.map_err(|e| CompletionError(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use super::*;
    use zeroflow_core::backlog::ObjectId;

    fn item() -> WorkItem {
        WorkItem {
            object: ObjectId { bucket: "raw".into(), key: "in/a.csv".into() },
            etag: Some("e1".into()),
            version_id: None,
            size: Some(3),
            sequencer: None,
        }
    }

    #[tokio::test]
    async fn outcomes_become_markers_of_the_revision() {
        let completion = LedgerCompletion::new();
        let pipeline = PipelineKey::new("ns", "p");
        let outcome = Outcome::Done { attempts: 2, outputs: vec!["out/in/a.csv/a.parquet".into()] };
        assert!(completion.record(&pipeline, &item(), &outcome).await.is_err(), "no ledger registered yet");

        let ledger = Ledger::new(Arc::new(InMemory::new()), ".zeroflow/ledger/ns/p/").expect("ledger");
        completion.set_pipeline(pipeline.clone(), ledger.clone());
        completion.record(&pipeline, &item(), &outcome).await.expect("record");
        let marker = ledger.get("in/a.csv", Some("e1")).await.expect("get").expect("marker");
        assert_eq!((marker.outcome, marker.attempts), (ledger::Outcome::Succeeded, 2));
        assert_eq!(marker.outputs, ["out/in/a.csv/a.parquet"]);

        let failed = Outcome::Failed { attempts: 3, exit_code: Some(1), reason: "boom".into() };
        completion.record(&pipeline, &item(), &failed).await.expect("record");
        let marker = ledger.get("in/a.csv", Some("e1")).await.expect("get").expect("marker");
        assert_eq!(marker.outcome, ledger::Outcome::Failed);
        assert_eq!(marker.error, Some(FailureDetail { exit_code: Some(1), stderr_tail: "boom".into() }));
    }
}
