//! The single owner of each worker Deployment's `replicas`.
//!
//! Every write of `replicas` (the controller's applies now, the scaler's decisions later) goes
//! through this book, so no two writers ever disagree about the value.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::ScalingSpec;

#[derive(Default)]
pub struct ReplicaBook {
    wanted: Mutex<HashMap<(String, String), i32>>,
}

impl ReplicaBook {
    /// The replicas to apply for a pipeline: the scaler's last decision, else `minReplicas`;
    /// always within `[minReplicas, maxReplicas]`. Only decisions are remembered, so lowering
    /// `minReplicas` lets an idle pipeline go back down.
    pub fn settle(&self, namespace: &str, name: &str, scaling: &ScalingSpec) -> i32 {
        let current = self.get(namespace, name).unwrap_or(scaling.min_replicas);
        bounded(current, scaling.min_replicas, scaling.max_replicas)
    }

    /// Forgets pipelines that no longer exist, so a new pipeline of the same name starts fresh.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut wanted = self.wanted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        wanted.remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// Records a scaling decision; the next apply uses it.
    pub fn set(&self, namespace: &str, name: &str, replicas: i32) {
        let mut wanted = self.wanted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        wanted.insert((namespace.to_owned(), name.to_owned()), replicas);
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<i32> {
        let wanted = self.wanted.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        wanted.get(&(namespace.to_owned(), name.to_owned())).copied()
    }
}

// Not `i32::clamp`: that panics when min > max, and a spec is only validated elsewhere.
fn bounded(value: i32, min: i32, max: i32) -> i32 {
    value.max(min).min(max.max(min))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaling(min: i32, max: i32) -> ScalingSpec {
        ScalingSpec { min_replicas: min, max_replicas: max, ..ScalingSpec::default() }
    }

    #[test]
    fn a_new_pipeline_starts_at_min_replicas() {
        let book = ReplicaBook::default();
        assert_eq!(book.settle("ns", "a", &scaling(0, 5)), 0);
        assert_eq!(book.settle("ns", "b", &scaling(2, 5)), 2);
    }

    #[test]
    fn lowering_min_replicas_lets_an_idle_pipeline_scale_down() {
        let book = ReplicaBook::default();
        assert_eq!(book.settle("ns", "a", &scaling(3, 5)), 3);
        assert_eq!(book.get("ns", "a"), None, "a minimum is not a decision");
        assert_eq!(book.settle("ns", "a", &scaling(0, 5)), 0);
    }

    #[test]
    fn decisions_win_over_the_cluster_and_stay_within_bounds() {
        let book = ReplicaBook::default();
        book.set("ns", "a", 4);
        assert_eq!(book.settle("ns", "a", &scaling(0, 5)), 4);
        assert_eq!(book.settle("ns", "a", &scaling(0, 2)), 2, "maxReplicas lowered");
        assert_eq!(book.settle("ns", "a", &scaling(6, 8)), 6, "minReplicas raised");
        assert_eq!(book.settle("ns", "a", &scaling(6, 2)), 6, "never panics on min > max");
        book.forget("ns", "a");
        assert_eq!(book.settle("ns", "a", &scaling(0, 5)), 0, "a recreated pipeline starts fresh");
    }
}
