//! The gateway's promise to event senders: a request is answered 2xx only after its events were
//! admitted where the operator will not lose them (the in-memory backlog, backed by resync from
//! the ledger); overload is answered 503 with `Retry-After`, never 2xx-then-drop.

use std::time::Instant;

use thiserror::Error;

use crate::events::StorageEvent;

/// Where the gateway's events go: each new-content event is routed to every pipeline whose
/// filter matches it and admitted into their backlogs; a removal withdraws a pending revision
/// it comes after. `Ok` means the sender need not resend.
/// On `Err` some events may have been admitted; senders retry the whole request and those come
/// back as duplicates, so partial admission is safe. `received_at` is when the request reached
/// the gateway: event-to-scale is measured from it.
///
/// `namespace` is what the sender's credentials cover: `None` (the operator-wide token) reaches
/// every pipeline; `Some(ns)` (a namespace's own sender token) only the pipelines of `ns`, and
/// each route to a pipeline elsewhere is counted in [`AdmitReport::not_permitted`] instead.
pub trait Admission: Send + Sync + 'static {
    fn admit(
        &self,
        events: &[StorageEvent],
        received_at: Instant,
        namespace: Option<&str>,
    ) -> Result<AdmitReport, Overloaded>;
}

impl<A: Admission> Admission for std::sync::Arc<A> {
    fn admit(
        &self,
        events: &[StorageEvent],
        received_at: Instant,
        namespace: Option<&str>,
    ) -> Result<AdmitReport, Overloaded> {
        A::admit(self, events, received_at, namespace)
    }
}

/// What an admission did: `accepted`, `duplicate` and `skipped` per (pipeline, event) pair,
/// `unrouted` per event no pipeline takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AdmitReport {
    pub accepted: u64,
    pub duplicate: u64,
    pub unrouted: u64,
    /// Routed, but not work: a folder placeholder (a key ending in `/`).
    pub skipped: u64,
    /// Removals that withdrew a pending revision (deleted before any worker got to it).
    pub withdrawn: u64,
    /// (pipeline, event) pairs not admitted because the sender's credentials do not cover the
    /// pipeline's namespace.
    pub not_permitted: u64,
}

impl AdmitReport {
    /// Whether any pipeline the credentials cover took (or already had) an event.
    pub fn reached_any(&self) -> bool {
        self.accepted + self.duplicate + self.skipped + self.withdrawn > 0
    }
}

/// Some pipeline's backlog is full: the sender should retry after `retry_after_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("overloaded; retry after {retry_after_secs}s")]
pub struct Overloaded {
    pub retry_after_secs: u32,
}
