//! Which worker pods a scale-down should spare: the ReplicaSet controller removes the pods with
//! the lowest `controller.kubernetes.io/pod-deletion-cost` first (among equally ready pods), so
//! pods holding leases get a high cost and idle pods a low one before replicas are reduced.

use std::collections::HashMap;

pub const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Cost of a pod holding no lease.
pub const IDLE: i32 = 0;
/// Cost per lease a pod holds: a pod with more objects in progress is spared longer.
pub const PER_LEASE: i32 = 1000;

/// The cost a pod should carry for the leases it holds.
pub fn cost(leases: usize) -> i32 {
    i32::try_from(leases).unwrap_or(i32::MAX).saturating_mul(PER_LEASE).max(IDLE)
}

/// The annotation values to write: `(pod, value)` for each pod whose current value (`None` when
/// unset) differs from what its leases call for. An unset idle pod needs nothing written.
pub fn changes<'a>(
    pods: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    busy: &HashMap<String, usize>,
) -> Vec<(String, String)> {
    pods.into_iter()
        .filter_map(|(pod, current)| {
            let wanted = cost(busy.get(pod).copied().unwrap_or(0));
            let current_cost = current.map_or(Some(IDLE), |v| v.trim().parse::<i32>().ok());
            (current_cost != Some(wanted)).then(|| (pod.to_owned(), wanted.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_pods_cost_more_and_idle_pods_are_reset() {
        let busy = HashMap::from([("a".to_owned(), 2), ("b".to_owned(), 1)]);
        let pods = [("a", None), ("b", Some("1000")), ("c", Some("3000")), ("d", None), ("e", Some("junk"))];
        assert_eq!(
            changes(pods, &busy),
            vec![("a".into(), "2000".into()), ("c".into(), "0".into()), ("e".into(), "0".into())]
        );
    }

    #[test]
    fn costs_never_overflow() {
        assert_eq!(cost(0), IDLE);
        assert_eq!(cost(usize::MAX), i32::MAX);
        assert!(cost(1) > IDLE);
    }
}
