//! Wakes lease polls when work arrives: one `Notify` per pipeline, and an [`Admission`] wrapper
//! that notifies after every admission so a waiting worker gets the object in milliseconds.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use zeroflow_core::PipelineKey;
use zeroflow_core::admission::{Admission, AdmitReport, Overloaded};
use zeroflow_core::events::StorageEvent;

#[derive(Debug, Default)]
pub struct Waiters {
    pipelines: Mutex<HashMap<PipelineKey, Arc<Notify>>>,
}

impl Waiters {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pipeline's `Notify`, created on first use.
    pub fn get(&self, pipeline: &PipelineKey) -> Arc<Notify> {
        self.lock().entry(pipeline.clone()).or_default().clone()
    }

    /// Wakes every poll waiting on `pipeline` (they look at the backlog again).
    pub fn notify(&self, pipeline: &PipelineKey) {
        if let Some(notify) = self.lock().get(pipeline) {
            notify.notify_waiters();
        }
    }

    /// Forgets a deleted pipeline; its waiters are woken and find it gone.
    pub fn remove(&self, pipeline: &PipelineKey) {
        if let Some(notify) = self.lock().remove(pipeline) {
            notify.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PipelineKey, Arc<Notify>>> {
        self.pipelines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wraps the gateway's admission (the backlogs) and wakes the pipelines' lease polls afterwards,
/// also on overload since some records may have been admitted.
pub struct NotifyingAdmission<A> {
    inner: A,
    waiters: Arc<Waiters>,
}

impl<A> NotifyingAdmission<A> {
    pub fn new(inner: A, waiters: Arc<Waiters>) -> Self {
        Self { inner, waiters }
    }
}

impl<A: Admission> Admission for NotifyingAdmission<A> {
    fn admit(&self, events: Vec<(PipelineKey, StorageEvent)>) -> Result<AdmitReport, Overloaded> {
        let pipelines: BTreeSet<PipelineKey> = events.iter().map(|(p, _)| p.clone()).collect();
        let result = self.inner.admit(events);
        for pipeline in &pipelines {
            self.waiters.notify(pipeline);
        }
        result
    }
}
