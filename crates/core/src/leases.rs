//! The leases this replica granted, by the ids workers hold. The backlog knows a lease only by
//! its own number and cannot say which object it covers; this table keeps what the work API needs
//! to write a record before acknowledging. Pure: the caller passes the backlog clock.

use std::collections::HashMap;

use crate::PipelineKey;
use crate::backlog::{ItemId, LeaseId, Millis, WorkItem};

use crate::work::format_lease_id;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub backlog_id: LeaseId,
    pub item: WorkItem,
    pub attempt: u32,
    /// Last known deadline on the backlog clock.
    pub deadline: Millis,
    /// When it was granted, on the backlog clock.
    pub granted_at: Millis,
    /// The pod holding the lease, when its token names one: the scaler protects busy pods.
    pub holder: Option<String>,
}

#[derive(Debug)]
pub struct LeaseTable {
    epoch: u64,
    next: u64,
    granted: HashMap<(PipelineKey, String), Granted>,
    last_sweep: Option<Millis>,
}

/// Sweeping walks the whole table, so it runs at most this often however busy the polls are.
const SWEEP_EVERY: Millis = 1_000;

impl LeaseTable {
    pub fn new(epoch: u64) -> Self {
        Self { epoch, next: 0, granted: HashMap::new(), last_sweep: None }
    }

    /// Stores a lease and returns the id to hand out.
    pub fn insert(&mut self, pipeline: &PipelineKey, granted: Granted) -> String {
        let id = format_lease_id(self.epoch, self.next);
        self.next += 1;
        self.granted.insert((pipeline.clone(), id.clone()), granted);
        id
    }

    pub fn get(&self, pipeline: &PipelineKey, id: &str) -> Option<Granted> {
        self.granted.get(&(pipeline.clone(), id.to_owned())).cloned()
    }

    pub fn set_deadline(&mut self, pipeline: &PipelineKey, id: &str, deadline: Millis) {
        if let Some(g) = self.granted.get_mut(&(pipeline.clone(), id.to_owned())) {
            g.deadline = deadline;
        }
    }

    pub fn remove(&mut self, pipeline: &PipelineKey, id: &str) -> Option<Granted> {
        self.granted.remove(&(pipeline.clone(), id.to_owned()))
    }

    /// Removes and returns the lease of an item the backlog reclaimed.
    pub fn take_item(&mut self, pipeline: &PipelineKey, item: &ItemId) -> Option<Granted> {
        let key =
            self.granted.iter().find(|((p, _), g)| p == pipeline && &g.item.id() == item).map(|(k, _)| k.clone())?;
        self.granted.remove(&key)
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

    /// Live leases per holding pod of `pipeline` (expired ones no longer make a pod busy).
    pub fn busy_pods(&self, pipeline: &PipelineKey, now: Millis) -> HashMap<String, usize> {
        let mut busy = HashMap::new();
        for ((p, _), g) in &self.granted {
            if p == pipeline
                && g.deadline >= now
                && let Some(pod) = &g.holder
            {
                *busy.entry(pod.clone()).or_insert(0) += 1;
            }
        }
        busy
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
    fn ids_are_unique_per_pipeline_and_old_leases_are_swept() {
        let p = PipelineKey::new("ns", "p");
        let q = PipelineKey::new("ns", "q");
        let mut table = LeaseTable::new(1);
        let a = table.insert(&p, granted("a", 100));
        let b = table.insert(&p, granted("b", 10_000));
        assert_ne!(a, b);
        assert_eq!(table.get(&q, &a), None, "a lease belongs to its pipeline");
        table.set_deadline(&p, &a, 200);
        table.sweep(250, 60);
        assert!(table.get(&p, &a).is_some(), "within its grace");
        table.sweep(1_000, 60);
        assert!(table.get(&p, &a).is_some(), "swept at most once a second");
        table.sweep(1_250, 60);
        assert!(table.busy_pods(&p, 1_250).is_empty(), "leases without a pod make no pod busy");
        assert_eq!(table.get(&p, &a), None);
        assert!(table.get(&p, &b).is_some());
        let item = granted("b", 0).item.id();
        assert_eq!(table.take_item(&p, &item).map(|g| g.deadline), Some(10_000));
        assert!(table.is_empty());
    }

    #[test]
    fn busy_pods_count_live_leases_per_pod() {
        let p = PipelineKey::new("ns", "p");
        let held = |key: &str, pod: &str, deadline| Granted { holder: Some(pod.into()), ..granted(key, deadline) };
        let mut table = LeaseTable::new(1);
        table.insert(&p, held("a", "pod-1", 500));
        table.insert(&p, held("b", "pod-1", 900));
        table.insert(&p, held("c", "pod-2", 100));
        table.insert(&PipelineKey::new("ns", "q"), held("d", "pod-3", 900));
        assert_eq!(table.busy_pods(&p, 50), HashMap::from([("pod-1".into(), 2), ("pod-2".into(), 1)]));
        assert_eq!(table.busy_pods(&p, 600), HashMap::from([("pod-1".into(), 1)]), "pod-2's lease expired");
    }
}
