//! The scaling decision, as a pure function of what the backlog and the cluster say.

use std::time::Duration;

/// Everything one decision depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleInput {
    /// Replicas the Deployment has now.
    pub current: i32,
    pub pending: u64,
    pub in_flight: u64,
    pub min_replicas: i32,
    pub max_replicas: i32,
    pub target_per_replica: i32,
    /// How long the backlog has had nothing pending or in flight (`None` while it has work).
    pub idle_for: Option<Duration>,
    pub idle_timeout: Duration,
    /// The highest replica count wanted during the scale-down stabilization window.
    pub recent_max: i32,
    /// Workers that must not be removed now: those holding leases, and, for a while after a
    /// restart or a leader change, every worker the previous leader ran (their leases are not
    /// known yet). A scale-down never goes below it; `maxReplicas` still caps it.
    pub floor: i32,
    /// The replicas to hold while the pipeline is paused (`zeroflow.dev/paused-replicas`, 0 by
    /// default); `None` when it is not paused.
    pub paused: Option<i32>,
}

/// What to do and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleDecision {
    pub replicas: i32,
    pub reason: &'static str,
    /// What the work alone calls for, before stabilization: the caller's history of these is
    /// the next decisions' `recent_max` (remembering `replicas` instead would hold a
    /// stabilized count up forever).
    pub wanted: i32,
}

/// Work-driven replicas: ceil(work / targetPerReplica) within [max(1, min), max].
fn for_work(work: u64, input: &ScaleInput) -> i32 {
    let per = u64::try_from(input.target_per_replica.max(1)).unwrap_or(1);
    let wanted = i32::try_from(work.div_ceil(per)).unwrap_or(i32::MAX);
    wanted.max(input.min_replicas.max(1)).min(input.max_replicas.max(1))
}

/// The replicas a pipeline should have now.
///
/// - Work waiting or running: enough workers for it (never fewer than one).
/// - Idle for less than `idleTimeout`: keep what runs (a worker may be about to get more work).
/// - Idle for `idleTimeout`: `minReplicas` (zero by default).
///
/// Scale-down never goes below the highest count wanted within the stabilization window, so a
/// short lull does not remove workers that are needed again a moment later, nor below `floor`,
/// so it never removes a busy worker.
pub fn decide(input: &ScaleInput) -> ScaleDecision {
    if let Some(held) = input.paused {
        // Nothing is leased while paused, so the backlog calls for no one; workers still busy
        // with a lease finish it. Immediate, like KEDA's paused-replicas: the user asked.
        let held = held.clamp(0, input.max_replicas.max(1));
        let busy = input.floor.min(input.current);
        return ScaleDecision { replicas: held.max(busy), reason: "paused", wanted: held };
    }
    let work = input.pending + input.in_flight;
    let (wanted, reason) = if work > 0 {
        (for_work(work, input), if input.current == 0 { "objects arrived while scaled to zero" } else { "backlog" })
    } else {
        match input.idle_for {
            Some(idle) if idle >= input.idle_timeout => (input.min_replicas.max(0), "idle"),
            _ => (input.current.max(input.min_replicas).min(input.max_replicas.max(1)), "waiting for idleTimeout"),
        }
    };
    if wanted < input.current {
        // Stabilize, but an idle pipeline may always return to minReplicas.
        let stabilized = if work == 0 && reason == "idle" { wanted } else { input.recent_max.min(input.current) };
        let busy = input.floor.min(input.current);
        // maxReplicas is a hard cap, stabilization or not.
        let replicas = wanted.max(stabilized).max(busy).min(input.max_replicas.max(1));
        let reason = if replicas == wanted {
            reason
        } else if replicas == busy && busy > stabilized {
            "keeping busy workers"
        } else {
            "stabilizing scale-down"
        };
        return ScaleDecision { replicas, reason, wanted };
    }
    ScaleDecision { replicas: wanted, reason, wanted }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> ScaleInput {
        ScaleInput {
            current: 0,
            pending: 0,
            in_flight: 0,
            min_replicas: 0,
            max_replicas: 10,
            target_per_replica: 4,
            idle_for: None,
            idle_timeout: Duration::from_secs(60),
            recent_max: 0,
            floor: 0,
            paused: None,
        }
    }

    #[test]
    fn the_first_object_at_zero_starts_one_worker() {
        let d = decide(&ScaleInput { pending: 1, ..input() });
        assert_eq!(d, ScaleDecision { replicas: 1, reason: "objects arrived while scaled to zero", wanted: 1 });
    }

    #[test]
    fn work_is_spread_by_target_per_replica_within_bounds() {
        assert_eq!(decide(&ScaleInput { current: 1, pending: 9, ..input() }).replicas, 3);
        assert_eq!(decide(&ScaleInput { current: 1, pending: 7, in_flight: 1, ..input() }).replicas, 2);
        assert_eq!(decide(&ScaleInput { current: 1, pending: 1000, ..input() }).replicas, 10);
        assert_eq!(decide(&ScaleInput { current: 1, pending: 1, min_replicas: 3, ..input() }).replicas, 3);
    }

    #[test]
    fn idle_workers_stay_until_idle_timeout_then_go_to_min() {
        let waiting =
            decide(&ScaleInput { current: 3, idle_for: Some(Duration::from_secs(10)), recent_max: 3, ..input() });
        assert_eq!(waiting.replicas, 3);
        let idle =
            decide(&ScaleInput { current: 3, idle_for: Some(Duration::from_secs(60)), recent_max: 3, ..input() });
        assert_eq!(idle, ScaleDecision { replicas: 0, reason: "idle", wanted: 0 });
        let warm = ScaleInput { current: 3, min_replicas: 1, idle_for: Some(Duration::from_secs(60)), ..input() };
        assert_eq!(decide(&warm).replicas, 1);
    }

    #[test]
    fn scale_down_with_work_left_is_stabilized() {
        let d = decide(&ScaleInput { current: 5, pending: 4, recent_max: 5, ..input() });
        assert_eq!(d, ScaleDecision { replicas: 5, reason: "stabilizing scale-down", wanted: 1 });
        let d = decide(&ScaleInput { current: 5, pending: 4, recent_max: 1, ..input() });
        assert_eq!(d.replicas, 1);
    }

    #[test]
    fn busy_workers_are_never_scaled_away() {
        // 4 objects in flight on 4 workers with 2 per replica: the work alone wants 2.
        let busy = ScaleInput { current: 4, in_flight: 4, target_per_replica: 2, floor: 4, ..input() };
        assert_eq!(decide(&busy), ScaleDecision { replicas: 4, reason: "keeping busy workers", wanted: 2 });
        // Idle for long, but workers of the previous leader may still be busy.
        let adopted = ScaleInput { current: 3, idle_for: Some(Duration::from_secs(600)), floor: 3, ..input() };
        assert_eq!(decide(&adopted).replicas, 3);
        // The floor never raises a pipeline, it only holds it.
        assert_eq!(decide(&ScaleInput { current: 1, floor: 5, pending: 1, ..input() }).replicas, 1);
        assert_eq!(decide(&ScaleInput { current: 6, floor: 6, max_replicas: 4, ..input() }).replicas, 4);
    }

    #[test]
    fn a_paused_pipeline_holds_its_paused_replicas_and_keeps_busy_workers() {
        let waiting = ScaleInput { current: 3, pending: 40, recent_max: 3, paused: Some(0), ..input() };
        assert_eq!(decide(&waiting), ScaleDecision { replicas: 0, reason: "paused", wanted: 0 });
        assert_eq!(decide(&ScaleInput { current: 0, pending: 5, paused: Some(0), ..input() }).replicas, 0);
        assert_eq!(decide(&ScaleInput { current: 0, paused: Some(2), ..input() }).replicas, 2);
        assert_eq!(decide(&ScaleInput { current: 5, paused: Some(2), ..input() }).replicas, 2);
        // Two workers still hold leases: they finish before going.
        let busy = ScaleInput { current: 3, in_flight: 2, floor: 2, paused: Some(0), ..input() };
        assert_eq!(decide(&busy).replicas, 2);
        // Unpaused, the backlog is served at once.
        assert_eq!(decide(&ScaleInput { current: 0, pending: 5, ..input() }).replicas, 2);
    }

    #[test]
    fn never_outside_bounds_whatever_the_input() {
        for current in [0, 1, 7, 50] {
            for work in [0u64, 1, 3, 40, u64::MAX / 2] {
                for idle in [None, Some(Duration::ZERO), Some(Duration::from_secs(3600))] {
                    let i = ScaleInput { current, pending: work, idle_for: idle, recent_max: current, ..input() };
                    let d = decide(&i);
                    assert!((0..=10).contains(&d.replicas), "{i:?} -> {d:?}");
                    if work > 0 {
                        assert!(d.replicas >= 1, "work never waits with zero workers: {i:?}");
                    }
                }
            }
        }
    }
}
