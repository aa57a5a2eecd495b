//! The gateway's [`Admission`]: every pipeline's [`Backlog`], behind one lock.
//!
//! One mutex is enough: an admission holds it for a few hash-map operations per record, far below
//! the cost of the HTTP request around it. The clock is the only I/O: milliseconds since creation.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use zeroflow_core::PipelineKey;
use zeroflow_core::admission::{Admission, AdmitReport, Overloaded};
use zeroflow_core::backlog::{Admitted, Backlog, BacklogConfig, Millis, WorkItem};
use zeroflow_core::events::StorageEvent;

#[derive(Debug)]
pub struct Backlogs {
    start: Instant,
    /// Seconds a sender should wait after an overload (`Retry-After`).
    retry_after_secs: u32,
    pipelines: Mutex<HashMap<PipelineKey, Backlog>>,
}

impl Backlogs {
    pub fn new(retry_after_secs: u32) -> Self {
        Self { start: Instant::now(), retry_after_secs, pipelines: Mutex::new(HashMap::new()) }
    }

    /// The backlog clock, for callers that lease or expire.
    pub fn now(&self) -> Millis {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Adds a pipeline's backlog (or updates its configuration, keeping its items).
    pub fn ensure(&self, pipeline: PipelineKey, config: BacklogConfig) {
        let mut pipelines = self.lock();
        match pipelines.get_mut(&pipeline) {
            Some(backlog) => backlog.reconfigure(config),
            None => {
                pipelines.insert(pipeline, Backlog::new(config));
            }
        }
    }

    pub fn remove(&self, pipeline: &PipelineKey) -> Option<Backlog> {
        self.lock().remove(pipeline)
    }

    /// Runs `f` on one pipeline's backlog (lease, complete, counts...).
    pub fn with<T>(&self, pipeline: &PipelineKey, f: impl FnOnce(&mut Backlog, Millis) -> T) -> Option<T> {
        let now = self.now();
        self.lock().get_mut(pipeline).map(|b| f(b, now))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PipelineKey, Backlog>> {
        // A panic while holding the lock cannot leave a backlog half-updated in a way later calls
        // trip over (every method re-establishes its indexes before returning), so keep serving.
        self.pipelines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Admission for Backlogs {
    fn admit(&self, events: Vec<(PipelineKey, StorageEvent)>) -> Result<AdmitReport, Overloaded> {
        let now = self.now();
        let mut report = AdmitReport::default();
        let mut overloaded = false;
        let mut pipelines = self.lock();
        // Everything admissible is admitted even when one pipeline is full: the sender retries the
        // whole request on 503 and the retries are duplicates.
        for (pipeline, event) in events {
            let Some(backlog) = pipelines.get_mut(&pipeline) else {
                report.unrouted += 1;
                continue;
            };
            match backlog.admit(WorkItem::from(&event), now) {
                Ok(Admitted::New | Admitted::Superseded) => report.accepted += 1,
                Ok(Admitted::Duplicate) => report.duplicate += 1,
                Err(_) => overloaded = true,
            }
        }
        if overloaded { Err(Overloaded { retry_after_secs: self.retry_after_secs }) } else { Ok(report) }
    }
}
