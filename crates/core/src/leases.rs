//! The work leases one pipeline's workers hold, by the ids they were handed. The backlog knows a
//! lease only by its own number and cannot say which object it covers or which pod holds it;
//! this table keeps what the work API needs to record a result before acknowledging it, and
//! what the scaler needs to spare busy pods. Pure: the caller passes the backlog clock.

use std::collections::HashMap;

use crate::backlog::{ItemId, LeaseId, Millis, WorkItem};
use crate::work::format_lease_id;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub backlog_id: LeaseId,
    pub item: WorkItem,
    pub attempt: u32,
    /// Last known deadline on the backlog clock.
    pub deadline: Millis,
    /// When it was granted (or re-attached), on the backlog clock.
    pub granted_at: Millis,
    /// The pod holding the lease, when its token names one: the scaler protects busy pods.
    pub holder: Option<String>,
}

#[derive(Debug)]
pub struct LeaseTable {
    epoch: u64,
    next: u64,
    granted: HashMap<String, Granted>,
    last_sweep: Option<Millis>,
}

/// Sweeping walks the whole table, so it runs at most this often however busy the polls are.
const SWEEP_EVERY: Millis = 1_000;

impl LeaseTable {
    /// `epoch` distinguishes this process's lease ids from an earlier run's.
    pub fn new(epoch: u64) -> Self {
        Self { epoch, next: 0, granted: HashMap::new(), last_sweep: None }
    }

    /// Stores a lease and returns the id to hand out.
    pub fn insert(&mut self, granted: Granted) -> String {
        let id = format_lease_id(self.epoch, self.next);
        self.next += 1;
        self.granted.insert(id.clone(), granted);
        id
    }

    /// Stores a lease under the id a worker already holds (granted by an earlier leader).
    pub fn insert_as(&mut self, id: &str, granted: Granted) {
        self.granted.insert(id.to_owned(), granted);
    }

    pub fn get(&self, id: &str) -> Option<&Granted> {
        self.granted.get(id)
    }

    pub fn set_deadline(&mut self, id: &str, deadline: Millis) {
        if let Some(g) = self.granted.get_mut(id) {
            g.deadline = deadline;
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<Granted> {
        self.granted.remove(id)
    }

    /// Removes and returns the lease of an item the backlog reclaimed.
    pub fn take_item(&mut self, item: &ItemId) -> Option<Granted> {
        let id = self.granted.iter().find(|(_, g)| &g.item.id() == item).map(|(id, _)| id.clone())?;
        self.granted.remove(&id)
    }

    /// Forgets leases past their deadline by more than `grace`: a worker that answers later goes
    /// through the unknown-lease path (verified against the store) like after a restart.
    pub fn sweep(&mut self, now: Millis, grace: Millis) {
        if self.last_sweep.is_some_and(|last| now < last.saturating_add(SWEEP_EVERY)) {
            return;
        }
        self.last_sweep = Some(now);
        self.granted.retain(|_, g| g.deadline.saturating_add(grace) >= now);
    }

    /// Live leases per holding pod (expired ones no longer make a pod busy), and how many live
    /// leases name no pod.
    pub fn busy_pods(&self, now: Millis) -> (HashMap<String, usize>, usize) {
        let mut busy = HashMap::new();
        let mut anonymous = 0;
        for g in self.granted.values().filter(|g| g.deadline >= now) {
            match &g.holder {
                Some(pod) => *busy.entry(pod.clone()).or_insert(0) += 1,
                None => anonymous += 1,
            }
        }
        (busy, anonymous)
    }

    pub fn len(&self) -> usize {
        self.granted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.granted.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backlog::ObjectId;

    fn granted(key: &str, deadline: Millis) -> Granted {
        Granted {
            backlog_id: LeaseId(0),
            item: WorkItem {
                object: ObjectId { bucket: "b".into(), key: key.into() },
                etag: Some("e".into()),
                version_id: None,
                size: None,
                sequencer: None,
            },
            attempt: 1,
            deadline,
            granted_at: 0,
            holder: None,
        }
    }

    #[test]
    fn ids_are_unique_and_old_leases_are_swept() {
        let mut table = LeaseTable::new(1);
        let a = table.insert(granted("a", 100));
        let b = table.insert(granted("b", 10_000));
        assert_ne!(a, b);
        table.set_deadline(&a, 200);
        table.sweep(250, 60);
        assert!(table.get(&a).is_some(), "within its grace");
        table.sweep(1_000, 60);
        assert!(table.get(&a).is_some(), "swept at most once a second");
        table.sweep(1_250, 60);
        assert_eq!(table.get(&a), None);
        assert!(table.get(&b).is_some());
        table.insert_as("0000000000000007-3", granted("c", 10_000));
        assert!(table.get("0000000000000007-3").is_some(), "a re-attached lease keeps the worker's id");
        let item = granted("b", 0).item.id();
        assert_eq!(table.take_item(&item).map(|g| g.deadline), Some(10_000));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn busy_pods_count_live_leases_per_pod() {
        let held = |key: &str, pod: &str, deadline| Granted { holder: Some(pod.into()), ..granted(key, deadline) };
        let mut table = LeaseTable::new(1);
        table.insert(held("a", "pod-1", 500));
        table.insert(held("b", "pod-1", 900));
        table.insert(held("c", "pod-2", 100));
        table.insert(granted("d", 900));
        assert_eq!(table.busy_pods(50), (HashMap::from([("pod-1".into(), 2), ("pod-2".into(), 1)]), 1));
        assert_eq!(table.busy_pods(600), (HashMap::from([("pod-1".into(), 1)]), 1), "pod-2's lease expired");
    }
}
