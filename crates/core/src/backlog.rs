//! One pipeline's in-memory backlog: pending objects, leases, attempts and backoff.
//!
//! Pure: every call takes the current time in milliseconds from a monotonic clock the caller
//! owns; nothing here sleeps or spawns. States of an item:
//!
//! ```text
//! admit -> Pending --lease--> Leased --complete--> Done
//!             ^   \             |  \--fail(permanent) or attempts exhausted--> Failed
//!             |    `-reattach-> |   \--finish_duplicate / drop_gone--> Skipped |
//!             `--fail(retryable)/expire, with backoff, or hand_back            |
//!             `------------------------------- redrive ------------------------'
//! ```
//!
//! After a restart or a leader change the backlog is rebuilt by resync, which knows nothing of
//! the leases workers still hold. So a new leader holds leasing back ([`Backlog::hold_until`])
//! until every busy worker had one heartbeat to re-attach its lease ([`Backlog::reattach`]), and
//! a completion for a lease it never granted removes the queued copy
//! ([`Backlog::complete_unleased`]): finished work is not leased again.
//!
//! Items are keyed by (bucket, key, revision) where the revision is the etag, else the version id.
//! Finished items are remembered only in a bounded recent set, enough to absorb duplicate
//! notifications that arrive shortly after completion; the durable ledger in the store is the real
//! record of what is done, and resync consults it. Two revisions of one key are never leased at
//! once, so an old revision's outputs cannot overwrite a newer one's.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use thiserror::Error;

use crate::events::StorageEvent;

/// Milliseconds on the caller's monotonic clock.
pub type Millis = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogConfig {
    /// Most items pending or leased at once; past it admission is refused and a resync requested.
    pub capacity: usize,
    /// How many finished items are remembered for de-duplication.
    pub finished_capacity: usize,
    /// Leases per item before it is recorded as failed.
    pub max_attempts: u32,
    pub lease_duration_ms: Millis,
    /// Delay before the second attempt; doubles per attempt up to `backoff_max_ms`.
    pub backoff_base_ms: Millis,
    pub backoff_max_ms: Millis,
}

impl Default for BacklogConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            finished_capacity: 100_000,
            max_attempts: 3,
            lease_duration_ms: 120_000,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
        }
    }
}

/// An object in a bucket.
///
/// The names are shared (`Arc<str>`): the backlog keeps one item under several indexes (by
/// object, by revision, among the recently finished), and a clone for each would be an
/// allocation per index on the gateway's admission path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId {
    pub bucket: Arc<str>,
    pub key: Arc<str>,
}

impl ObjectId {
    /// The object `key` in `bucket`; takes `&str`, `String` or `Arc<str>` for either.
    pub fn new(bucket: impl Into<Arc<str>>, key: impl Into<Arc<str>>) -> Self {
        Self { bucket: bucket.into(), key: key.into() }
    }
}

/// One revision of an object: the unit of work and of de-duplication.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId {
    pub object: ObjectId,
    /// The etag, else the version id; `None` when the sender gave neither.
    pub revision: Option<Arc<str>>,
}

/// What is known about an object revision when it is admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkItem {
    pub object: ObjectId,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub size: Option<u64>,
    /// Per-key ordering token, used to refuse a notification older than the one already queued.
    pub sequencer: Option<String>,
}

impl WorkItem {
    pub fn id(&self) -> ItemId {
        ItemId {
            object: self.object.clone(),
            revision: self.etag.as_deref().or(self.version_id.as_deref()).map(Arc::from),
        }
    }
}

impl From<&StorageEvent> for WorkItem {
    fn from(event: &StorageEvent) -> Self {
        Self {
            object: ObjectId::new(event.bucket.as_str(), event.key.as_str()),
            etag: event.etag.clone(),
            version_id: event.version_id.clone(),
            size: event.size,
            sequencer: event.sequencer.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// A new item is pending.
    New,
    /// A new revision replaced a pending revision of the same key (a resync is requested when
    /// the replaced one is not known to be older, see [`Backlog::needs_resync`]).
    Superseded,
    /// Already pending, leased or recently finished (or older than what is queued): nothing done.
    Duplicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("backlog is full ({capacity} items); a resync will pick the object up")]
pub struct Overloaded {
    pub capacity: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

/// Work handed to one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: LeaseId,
    pub item: WorkItem,
    /// 1 for the first try.
    pub attempt: u32,
    pub deadline: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LeaseError {
    /// Completed, failed, expired or never granted. A worker that sees this must drop its result.
    #[error("lease {0:?} is not held")]
    NotHeld(LeaseId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Back to pending, eligible again at this time.
    At(Millis),
    /// Attempts exhausted or the failure was permanent: recorded as failed.
    Exhausted,
    /// Another revision of the key is queued, so this one is dropped without a record: it is
    /// not failed, it is no longer (or may no longer be) the object's content. When the queued
    /// revision is not known to be the newer (see [`Backlog::needs_resync`]), a resync is
    /// requested, and the store's listing queues this one again if it is still current.
    Superseded,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RedriveError {
    #[error("item is not among the recently failed; re-drive it from the ledger")]
    NotFailed,
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
}

/// For status: pending and in-flight now; succeeded, failed and skipped since this backlog was
/// created (a re-driven item stops counting as failed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: usize,
    pub in_flight: usize,
    pub succeeded: u64,
    pub failed: u64,
    /// Leased but not work after all: already in the ledger, or gone from the store.
    pub skipped: u64,
}

/// Why a worker's lease cannot be re-attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ReattachError {
    #[error("the object revision is already finished")]
    Finished,
    #[error("the object is leased to another worker")]
    LeasedElsewhere,
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending { ready_at: Millis },
    Leased { lease: LeaseId, deadline: Millis },
}

#[derive(Debug, Clone)]
struct Entry {
    item: WorkItem,
    id: ItemId,
    /// When it was first admitted: the age of the oldest pending item is the queue's health.
    admitted_at: Millis,
    /// Leases granted so far.
    attempts: u32,
    state: State,
    last_error: Option<String>,
}

/// The active entries of one object: at most one pending revision and one leased revision.
#[derive(Debug, Clone, Copy, Default)]
struct Slots {
    pending: Option<u64>,
    leased: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Done,
    Failed,
    /// Leased, then found already recorded in the ledger: not run again.
    Duplicate,
}

#[derive(Debug, Clone)]
struct FinishedEntry {
    outcome: Finished,
    item: WorkItem,
    last_error: Option<String>,
    /// Matches the eviction queue's record, so a stale queue record never evicts a newer finish.
    generation: u64,
}

#[derive(Debug, Clone)]
pub struct Backlog {
    config: BacklogConfig,
    next_seq: u64,
    next_lease: u64,
    entries: HashMap<u64, Entry>,
    by_item: HashMap<ItemId, u64>,
    objects: HashMap<ObjectId, Slots>,
    /// Pending entries by (eligible time, admission order): the lease order.
    pending: BTreeSet<(Millis, u64)>,
    deadlines: BTreeSet<(Millis, u64)>,
    leases: HashMap<LeaseId, u64>,
    finished: HashMap<ItemId, FinishedEntry>,
    finished_order: VecDeque<(ItemId, u64)>,
    succeeded: u64,
    failed: u64,
    skipped: u64,
    /// No lease is granted before this time (see [`Backlog::hold_until`]).
    leasable_from: Millis,
    needs_resync: bool,
    /// Key and last error of the latest object that failed for good.
    last_failure: Option<(String, String)>,
}

impl Backlog {
    pub fn new(config: BacklogConfig) -> Self {
        Self {
            config,
            next_seq: 0,
            next_lease: 0,
            entries: HashMap::new(),
            by_item: HashMap::new(),
            objects: HashMap::new(),
            pending: BTreeSet::new(),
            deadlines: BTreeSet::new(),
            leases: HashMap::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            succeeded: 0,
            failed: 0,
            skipped: 0,
            leasable_from: 0,
            needs_resync: false,
            last_failure: None,
        }
    }

    pub fn config(&self) -> &BacklogConfig {
        &self.config
    }

    /// Applies a changed spec. Items stay; a lower capacity only stops admission until the
    /// backlog drains below it, and new limits apply from the next lease or failure.
    pub fn reconfigure(&mut self, config: BacklogConfig) {
        self.config = config;
    }

    pub fn counts(&self) -> Counts {
        Counts {
            pending: self.pending.len(),
            in_flight: self.leases.len(),
            succeeded: self.succeeded,
            failed: self.failed,
            skipped: self.skipped,
        }
    }

    /// Grants no lease before `at`. A new leader calls it (with `Millis::MAX` until it knows
    /// better) so that objects a resync re-queued are not handed to a second worker while the
    /// first, still busy, has not re-attached its lease yet.
    pub fn hold_until(&mut self, at: Millis) {
        self.leasable_from = at;
    }

    /// Whether leasing is held back at `now`.
    pub fn is_held(&self, now: Millis) -> bool {
        now < self.leasable_from
    }

    /// How long the oldest pending item has waited since it was first admitted.
    pub fn oldest_pending_age(&self, now: Millis) -> Option<Millis> {
        self.pending
            .iter()
            .filter_map(|(_, seq)| self.entries.get(seq).map(|e| e.admitted_at))
            .min()
            .map(|admitted| now.saturating_sub(admitted))
    }

    /// Nothing pending and nothing in flight: the scaler may count idle time from here.
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty()
    }

    /// Set when an admission was refused for capacity (notifications were lost) or when a
    /// revision was dropped for another of the same key not known to be newer (the store's
    /// listing says which is current): list the bucket.
    pub fn needs_resync(&self) -> bool {
        self.needs_resync
    }

    /// Reads and clears the resync request (the resync about to run covers it).
    pub fn take_resync_request(&mut self) -> bool {
        std::mem::take(&mut self.needs_resync)
    }

    /// The earliest time something changes without a call: a backoff ends or a lease expires.
    pub fn next_wakeup(&self) -> Option<Millis> {
        let ready = self.pending.first().map(|(t, _)| (*t).max(self.leasable_from));
        let deadline = self.deadlines.first().map(|(t, _)| *t);
        match (ready, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// How a finished item ended, while it is still remembered.
    pub fn finished(&self, id: &ItemId) -> Option<Finished> {
        self.finished.get(id).map(|f| f.outcome)
    }

    /// Queues an object revision unless it is already known.
    pub fn admit(&mut self, item: WorkItem, now: Millis) -> Result<Admitted, Overloaded> {
        let id = item.id();
        if self.by_item.contains_key(&id) || self.finished.contains_key(&id) {
            return Ok(Admitted::Duplicate);
        }
        let slots = self.objects.get(&item.object).copied().unwrap_or_default();
        // A notification older than the queued or running revision is stale, not new work.
        for seq in [slots.pending, slots.leased].into_iter().flatten() {
            if let Some(entry) = self.entries.get(&seq)
                && is_older(item.sequencer.as_deref(), entry.item.sequencer.as_deref())
            {
                return Ok(Admitted::Duplicate);
            }
        }
        if let Some(older) = slots.pending {
            self.request_resync_unless_newer(older, item.sequencer.as_deref());
            self.remove_entry(older);
            self.insert_pending(item, id, now);
            return Ok(Admitted::Superseded);
        }
        if self.entries.len() >= self.config.capacity {
            self.needs_resync = true;
            return Err(Overloaded { capacity: self.config.capacity });
        }
        self.insert_pending(item, id, now);
        Ok(Admitted::New)
    }

    /// Leases the pending item that has been eligible longest, skipping keys that already have a
    /// revision in flight.
    pub fn lease(&mut self, now: Millis) -> Option<Lease> {
        if self.is_held(now) {
            return None;
        }
        let seq =
            self.pending.iter().take_while(|(ready_at, _)| *ready_at <= now).map(|(_, seq)| *seq).find(|seq| {
                self.entries
                    .get(seq)
                    .and_then(|e| self.objects.get(&e.item.object))
                    .is_some_and(|slots| slots.leased.is_none())
            })?;
        let lease = LeaseId(self.next_lease);
        self.next_lease += 1;
        let deadline = now.saturating_add(self.config.lease_duration_ms);
        let entry = self.entries.get_mut(&seq)?;
        let State::Pending { ready_at } = entry.state else { return None };
        self.pending.remove(&(ready_at, seq));
        entry.state = State::Leased { lease, deadline };
        entry.attempts += 1;
        let granted = Lease { id: lease, item: entry.item.clone(), attempt: entry.attempts, deadline };
        let slots = self.objects.entry(entry.item.object.clone()).or_default();
        slots.pending = None;
        slots.leased = Some(seq);
        self.deadlines.insert((deadline, seq));
        self.leases.insert(lease, seq);
        Some(granted)
    }

    /// Extends a held lease to `now + lease_duration` and returns the new deadline. A lease stays
    /// held until it is finished or [`Backlog::expire`] reclaims it.
    pub fn heartbeat(&mut self, lease: LeaseId, now: Millis) -> Result<Millis, LeaseError> {
        let seq = *self.leases.get(&lease).ok_or(LeaseError::NotHeld(lease))?;
        let entry = self.entries.get_mut(&seq).ok_or(LeaseError::NotHeld(lease))?;
        let State::Leased { deadline, .. } = entry.state else { return Err(LeaseError::NotHeld(lease)) };
        let extended = now.saturating_add(self.config.lease_duration_ms).max(deadline);
        entry.state = State::Leased { lease, deadline: extended };
        self.deadlines.remove(&(deadline, seq));
        self.deadlines.insert((extended, seq));
        Ok(extended)
    }

    pub fn complete(&mut self, lease: LeaseId) -> Result<(), LeaseError> {
        let seq = self.release(lease)?;
        if let Some(entry) = self.remove_entry(seq) {
            self.succeeded += 1;
            self.remember(entry, Finished::Done);
        }
        Ok(())
    }

    /// A worker finished `item` under a lease this backlog never granted (granted before a
    /// restart or a leader change, and already recorded in the ledger by the caller). A queued
    /// copy of the revision (a resync found it unfinished meanwhile) is removed, and a lease
    /// another worker holds on it is taken back (its next heartbeat is refused), so finished
    /// work is never leased again. Returns false when the revision was already finished here.
    pub fn complete_unleased(&mut self, item: WorkItem, now: Millis) -> bool {
        let id = item.id();
        if self.finished.get(&id).is_some_and(|f| f.outcome == Finished::Done) {
            return false;
        }
        let entry = match self.by_item.get(&id).copied() {
            Some(seq) => {
                if let Some(State::Leased { lease, .. }) = self.entries.get(&seq).map(|e| e.state) {
                    let _ = self.release(lease);
                }
                self.remove_entry(seq)
            }
            None => None,
        };
        let entry = entry.unwrap_or(Entry {
            item,
            id,
            admitted_at: now,
            attempts: 0,
            state: State::Pending { ready_at: now },
            last_error: None,
        });
        self.succeeded += 1;
        self.remember(entry, Finished::Done);
        true
    }

    /// Re-attaches a lease a worker still holds but this backlog never granted: the worker
    /// heartbeats with its object and attempt. The revision becomes leased for `attempt`
    /// attempts (taken out of pending when a resync queued it). Refused when the revision is
    /// finished here or already leased, or when another revision of the key is leased.
    pub fn reattach(&mut self, item: WorkItem, attempt: u32, now: Millis) -> Result<Lease, ReattachError> {
        let id = item.id();
        if self.finished.contains_key(&id) {
            return Err(ReattachError::Finished);
        }
        let slots = self.objects.get(&item.object).copied().unwrap_or_default();
        if slots.leased.is_some() {
            return Err(ReattachError::LeasedElsewhere);
        }
        let seq = match self.by_item.get(&id).copied() {
            Some(seq) => {
                if let Some(Entry { state: State::Pending { ready_at }, .. }) = self.entries.get(&seq) {
                    self.pending.remove(&(*ready_at, seq));
                }
                if self.objects.get(&item.object).is_some_and(|s| s.pending == Some(seq)) {
                    self.objects.entry(item.object.clone()).or_default().pending = None;
                }
                seq
            }
            None => {
                if self.entries.len() >= self.config.capacity {
                    self.needs_resync = true;
                    return Err(Overloaded { capacity: self.config.capacity }.into());
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                self.by_item.insert(id.clone(), seq);
                let entry = Entry {
                    item,
                    id,
                    admitted_at: now,
                    attempts: 0,
                    state: State::Pending { ready_at: now },
                    last_error: None,
                };
                self.entries.insert(seq, entry);
                seq
            }
        };
        let lease = LeaseId(self.next_lease);
        self.next_lease += 1;
        let deadline = now.saturating_add(self.config.lease_duration_ms);
        let Some(entry) = self.entries.get_mut(&seq) else { return Err(ReattachError::Finished) };
        entry.state = State::Leased { lease, deadline };
        entry.attempts = entry.attempts.max(attempt).clamp(1, self.config.max_attempts.max(1));
        let granted = Lease { id: lease, item: entry.item.clone(), attempt: entry.attempts, deadline };
        self.objects.entry(entry.item.object.clone()).or_default().leased = Some(seq);
        self.deadlines.insert((deadline, seq));
        self.leases.insert(lease, seq);
        Ok(granted)
    }

    /// A removal notification for `object`: its pending revision is withdrawn when the removal
    /// is known to come after it (a greater sequencer) or to remove that very revision (the same
    /// version id). Without either, nothing can be said (a delete and a re-upload may arrive in
    /// any order) and the revision stays; a worker that finds it gone skips it. A leased
    /// revision stays too. Returns whether one was withdrawn (counted as skipped).
    pub fn withdraw(&mut self, object: &ObjectId, sequencer: Option<&str>, version_id: Option<&str>) -> bool {
        let Some(seq) = self.objects.get(object).and_then(|s| s.pending) else { return false };
        let Some(entry) = self.entries.get(&seq) else { return false };
        let removes_it = is_older(entry.item.sequencer.as_deref(), sequencer)
            || version_id.is_some_and(|v| entry.item.version_id.as_deref() == Some(v));
        if !removes_it {
            return false;
        }
        self.remove_entry(seq);
        self.skipped += 1;
        true
    }

    /// A leased revision turned out to be recorded in the ledger already (a duplicate
    /// notification after the finished set forgot it, a restart): finished without running,
    /// remembered as done, counted as skipped.
    pub fn finish_duplicate(&mut self, lease: LeaseId) -> Result<(), LeaseError> {
        let seq = self.release(lease)?;
        if let Some(entry) = self.remove_entry(seq) {
            self.skipped += 1;
            self.remember(entry, Finished::Duplicate);
        }
        Ok(())
    }

    /// A leased revision no longer exists in the store (deleted or overwritten before a worker
    /// got to it): dropped without using an attempt, counted as skipped, and not remembered, so
    /// the same content uploaded again later is new work.
    pub fn drop_gone(&mut self, lease: LeaseId) -> Result<(), LeaseError> {
        let seq = self.release(lease)?;
        if self.remove_entry(seq).is_some() {
            self.skipped += 1;
        }
        Ok(())
    }

    /// Records a failed attempt. Retryable failures go back to pending after a backoff until
    /// `max_attempts` leases were granted.
    pub fn fail(&mut self, lease: LeaseId, retryable: bool, reason: &str, now: Millis) -> Result<Retry, LeaseError> {
        let seq = self.release(lease)?;
        if let Some(entry) = self.entries.get_mut(&seq) {
            entry.last_error = Some(reason.to_owned());
        }
        Ok(self.retry_or_fail(seq, retryable, now))
    }

    /// A worker gives a lease back unfinished because it is shutting down: the item is pending
    /// again at once, and the attempt does not count (nothing about the object went wrong).
    pub fn hand_back(&mut self, lease: LeaseId, now: Millis) -> Result<(), LeaseError> {
        let seq = self.release(lease)?;
        let Some(entry) = self.entries.get_mut(&seq) else { return Ok(()) };
        entry.attempts = entry.attempts.saturating_sub(1);
        let object = entry.item.object.clone();
        if let Some(queued) = self.objects.get(&object).and_then(|s| s.pending) {
            self.supersede(seq, queued);
            return Ok(());
        }
        entry.state = State::Pending { ready_at: now };
        self.pending.insert((now, seq));
        self.objects.entry(object).or_default().pending = Some(seq);
        Ok(())
    }

    /// Returns every lease whose deadline has passed to pending (or to failed when its attempts
    /// are used up). Returns the affected items.
    pub fn expire(&mut self, now: Millis) -> Vec<(ItemId, Retry)> {
        let mut expired = Vec::new();
        while let Some(&(deadline, seq)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let Some(State::Leased { lease, .. }) = self.entries.get(&seq).map(|e| e.state) else {
                self.deadlines.remove(&(deadline, seq));
                continue;
            };
            if self.release(lease).is_err() {
                self.deadlines.remove(&(deadline, seq));
                continue;
            }
            if let Some(entry) = self.entries.get_mut(&seq) {
                entry.last_error = Some("lease expired".into());
            }
            let id = self.entries.get(&seq).map(|e| e.id.clone());
            let retry = self.retry_or_fail(seq, true, now);
            expired.extend(id.map(|id| (id, retry)));
        }
        expired
    }

    /// Puts a recently failed item back to pending with fresh attempts.
    pub fn redrive(&mut self, id: &ItemId, now: Millis) -> Result<(), RedriveError> {
        match self.finished.get(id) {
            Some(f) if f.outcome == Finished::Failed => {}
            _ => return Err(RedriveError::NotFailed),
        }
        if self.entries.len() >= self.config.capacity {
            self.needs_resync = true;
            return Err(Overloaded { capacity: self.config.capacity }.into());
        }
        let Some(finished) = self.finished.remove(id) else { return Err(RedriveError::NotFailed) };
        self.failed = self.failed.saturating_sub(1);
        match self.admit(finished.item, now) {
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Re-drives every remembered failure whose key starts with `key_prefix` (all for `""`);
    /// returns how many went back to pending.
    pub fn redrive_failed(&mut self, key_prefix: &str, now: Millis) -> Result<usize, Overloaded> {
        let failed: Vec<ItemId> = self
            .finished
            .iter()
            .filter(|(id, f)| f.outcome == Finished::Failed && id.object.key.starts_with(key_prefix))
            .map(|(id, _)| id.clone())
            .collect();
        let mut count = 0;
        for id in failed {
            match self.redrive(&id, now) {
                Ok(()) => count += 1,
                Err(RedriveError::Overloaded(e)) => return Err(e),
                Err(RedriveError::NotFailed) => {}
            }
        }
        Ok(count)
    }

    /// The key and last error of the most recent object that failed for good, for Events.
    pub fn last_failure(&self) -> Option<&(String, String)> {
        self.last_failure.as_ref()
    }

    /// The last error of a remembered failure, for Events and status.
    pub fn last_error(&self, id: &ItemId) -> Option<&str> {
        self.finished.get(id).and_then(|f| f.last_error.as_deref())
    }

    fn insert_pending(&mut self, item: WorkItem, id: ItemId, now: Millis) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.objects.entry(item.object.clone()).or_default().pending = Some(seq);
        self.by_item.insert(id.clone(), seq);
        self.pending.insert((now, seq));
        let entry = Entry {
            item,
            id,
            admitted_at: now,
            attempts: 0,
            state: State::Pending { ready_at: now },
            last_error: None,
        };
        self.entries.insert(seq, entry);
    }

    /// Drops a lease's bookkeeping and returns its entry's sequence number; the entry stays.
    fn release(&mut self, lease: LeaseId) -> Result<u64, LeaseError> {
        let seq = self.leases.remove(&lease).ok_or(LeaseError::NotHeld(lease))?;
        if let Some(entry) = self.entries.get(&seq)
            && let State::Leased { deadline, .. } = entry.state
        {
            self.deadlines.remove(&(deadline, seq));
            if let Some(slots) = self.objects.get_mut(&entry.item.object)
                && slots.leased == Some(seq)
            {
                slots.leased = None;
            }
        }
        Ok(seq)
    }

    /// After a released lease: back to pending with backoff, or to failed.
    fn retry_or_fail(&mut self, seq: u64, retryable: bool, now: Millis) -> Retry {
        let Some(entry) = self.entries.get(&seq) else { return Retry::Exhausted };
        let object = entry.item.object.clone();
        let queued = self.objects.get(&object).and_then(|s| s.pending);
        if !retryable || entry.attempts >= self.config.max_attempts {
            if let Some(entry) = self.remove_entry(seq) {
                self.failed += 1;
                self.remember(entry, Finished::Failed);
            }
            return Retry::Exhausted;
        }
        if let Some(queued) = queued {
            self.supersede(seq, queued);
            return Retry::Superseded;
        }
        let ready_at = now.saturating_add(self.backoff(entry.attempts));
        if let Some(entry) = self.entries.get_mut(&seq) {
            entry.state = State::Pending { ready_at };
        }
        self.pending.insert((ready_at, seq));
        self.objects.entry(object).or_default().pending = Some(seq);
        Retry::At(ready_at)
    }

    /// Drops entry `seq` because revision `queued` of the same key waits. Which revision is the
    /// newer is known only from sequencers; an item found by a listing or re-driven has none,
    /// and a sender may deliver an old notification late (MinIO replays what it queued while
    /// the gateway was down). So unless `queued` is known to come later, the store decides: a
    /// resync lists the key's current revision and queues it again when it is the one dropped
    /// (it is not remembered as finished, and has no record in the ledger).
    fn supersede(&mut self, seq: u64, queued: u64) {
        let kept = self.entries.get(&queued).and_then(|e| e.item.sequencer.clone());
        self.request_resync_unless_newer(seq, kept.as_deref());
        self.remove_entry(seq);
    }

    /// Asks for a resync unless the revision kept (its `kept_sequencer`) is known to be newer
    /// than entry `dropped` (see [`Backlog::supersede`]).
    fn request_resync_unless_newer(&mut self, dropped: u64, kept_sequencer: Option<&str>) {
        let known_newer =
            self.entries.get(&dropped).is_some_and(|e| is_older(e.item.sequencer.as_deref(), kept_sequencer));
        if !known_newer {
            self.needs_resync = true;
        }
    }

    /// `base * 2^(attempts-1)`, capped.
    fn backoff(&self, attempts: u32) -> Millis {
        let doublings = attempts.saturating_sub(1).min(32);
        self.config.backoff_base_ms.saturating_mul(1u64 << doublings).min(self.config.backoff_max_ms)
    }

    /// Removes an entry from every index (its lease must already be released).
    fn remove_entry(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        if let State::Pending { ready_at } = entry.state {
            self.pending.remove(&(ready_at, seq));
        }
        self.by_item.remove(&entry.id);
        if let Some(slots) = self.objects.get_mut(&entry.item.object) {
            if slots.pending == Some(seq) {
                slots.pending = None;
            }
            if slots.leased == Some(seq) {
                slots.leased = None;
            }
            if slots.pending.is_none() && slots.leased.is_none() {
                self.objects.remove(&entry.item.object);
            }
        }
        Some(entry)
    }

    fn remember(&mut self, entry: Entry, outcome: Finished) {
        if outcome == Finished::Failed {
            let error = entry.last_error.clone().unwrap_or_default();
            self.last_failure = Some((entry.item.object.key.to_string(), error));
        }
        if self.config.finished_capacity == 0 {
            return;
        }
        let generation = self.next_seq;
        self.next_seq += 1;
        self.finished.insert(
            entry.id.clone(),
            FinishedEntry { outcome, item: entry.item, last_error: entry.last_error, generation },
        );
        self.finished_order.push_back((entry.id, generation));
        while self.finished_order.len() > self.config.finished_capacity {
            let Some((id, generation)) = self.finished_order.pop_front() else { break };
            if self.finished.get(&id).is_some_and(|f| f.generation == generation) {
                self.finished.remove(&id);
            }
        }
    }

    /// Every internal index agrees with the others. For tests.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        let mut pending = 0;
        let mut leased = 0;
        for (seq, entry) in &self.entries {
            if self.by_item.get(&entry.id) != Some(seq) {
                return Err(format!("entry {seq} missing from by_item"));
            }
            let slots = self.objects.get(&entry.item.object).ok_or(format!("entry {seq} has no slots"))?;
            match entry.state {
                State::Pending { ready_at } => {
                    pending += 1;
                    if !self.pending.contains(&(ready_at, *seq)) || slots.pending != Some(*seq) {
                        return Err(format!("pending entry {seq} not indexed"));
                    }
                    if self.deadlines.iter().any(|(_, s)| s == seq) || self.leases.values().any(|s| s == seq) {
                        return Err(format!("entry {seq} both pending and leased"));
                    }
                }
                State::Leased { lease, deadline } => {
                    leased += 1;
                    if self.leases.get(&lease) != Some(seq)
                        || !self.deadlines.contains(&(deadline, *seq))
                        || slots.leased != Some(*seq)
                    {
                        return Err(format!("leased entry {seq} not indexed"));
                    }
                    if self.pending.iter().any(|(_, s)| s == seq) {
                        return Err(format!("entry {seq} both pending and leased"));
                    }
                    if entry.attempts == 0 || entry.attempts > self.config.max_attempts {
                        return Err(format!("entry {seq} leased with {} attempts", entry.attempts));
                    }
                }
            }
        }
        let counts = self.counts();
        if counts.pending != pending || counts.in_flight != leased || self.deadlines.len() != leased {
            return Err(format!("counts {counts:?} vs {pending} pending, {leased} leased"));
        }
        if self.by_item.len() != self.entries.len() || self.leases.len() > self.entries.len() {
            return Err("index sizes disagree".into());
        }
        if self.entries.len() > self.config.capacity {
            return Err("over capacity".into());
        }
        if self.finished.len() > self.config.finished_capacity {
            return Err("finished set unbounded".into());
        }
        if self.by_item.keys().any(|id| self.finished.contains_key(id)) {
            return Err("an item is both active and finished".into());
        }
        Ok(())
    }
}

/// Whether sequencer `a` is older than `b`. S3 sequencers are hex strings of varying length that
/// compare after left-padding with zeros; without both, nothing can be said.
fn is_older(a: Option<&str>, b: Option<&str>) -> bool {
    let (Some(a), Some(b)) = (a, b) else { return false };
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    match a.len().cmp(&b.len()) {
        Ordering::Equal => a.to_ascii_uppercase() < b.to_ascii_uppercase(),
        shorter_or_longer => shorter_or_longer == Ordering::Less,
    }
}

#[cfg(test)]
mod tests;
