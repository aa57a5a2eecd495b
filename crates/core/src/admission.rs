//! The gateway's promise to event senders: a request is answered 2xx only after its events were
//! admitted where the operator will not lose them (the in-memory backlog, backed by resync from
//! the ledger); overload is answered 503 with `Retry-After`, never 2xx-then-drop.

use thiserror::Error;

use crate::PipelineKey;
use crate::events::StorageEvent;

/// Where routed events go. `Ok` means the sender need not resend. On `Err` some events may have
/// been admitted; senders retry the whole request and those come back as duplicates, so partial
/// admission is safe.
pub trait Admission: Send + Sync + 'static {
    fn admit(&self, events: Vec<(PipelineKey, StorageEvent)>) -> Result<AdmitReport, Overloaded>;
}

impl<A: Admission> Admission for std::sync::Arc<A> {
    fn admit(&self, events: Vec<(PipelineKey, StorageEvent)>) -> Result<AdmitReport, Overloaded> {
        A::admit(self, events)
    }
}

/// Counts per (pipeline, event) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdmitReport {
    pub accepted: u64,
    pub duplicate: u64,
    /// Routed to a pipeline whose backlog no longer exists (it was just deleted).
    pub unrouted: u64,
}

/// Some pipeline's backlog is full: the sender should retry after `retry_after_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("overloaded; retry after {retry_after_secs}s")]
pub struct Overloaded {
    pub retry_after_secs: u32,
}
