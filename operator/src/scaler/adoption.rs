//! What adoption concludes from a pipeline's worker pods (see the scaler's module docs): whether
//! running workers may hold leases an earlier leader granted, which decides whether adoption holds
//! leasing for the recovery window, and which pods are on their way out and get no work.
//!
//! A worker talks only to the leader of its time, so a worker whose pod was created after this
//! replica began leading holds no lease but this replica's. Creation times come from the
//! apiserver's clock, to the second, and leadership's start from this replica's: a pod counts as
//! later only when created [`CLOCK_MARGIN`] or more after leadership began.

use std::time::{Duration, SystemTime};

/// Allowed difference between the apiserver's clock and this replica's, plus the second that
/// `creationTimestamp` truncates.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(5);

/// True when any pod was created before `leading_since` + [`CLOCK_MARGIN`], or has no creation
/// time; false for no pods (the Deployment's pods are not created yet, so every one to come is
/// later).
pub fn earlier_leases_possible(
    created: impl IntoIterator<Item = Option<SystemTime>>,
    leading_since: SystemTime,
) -> bool {
    let later_than = leading_since + CLOCK_MARGIN;
    created.into_iter().any(|at| at.is_none_or(|at| at < later_than))
}

/// The pods an adopting leader retires: those on their way out because of an earlier leader's
/// scale-down that this replica did not see through (that leader's retired set died with it).
/// At zero replicas that is every pod still listed (the ReplicaSet may not have marked them all
/// yet); above zero, the pods with a deletion timestamp. Their workers may ask for work until
/// their SIGTERM arrives; a lease granted then would be stopped busy. A busy one keeps its lease:
/// re-attaching and completing are not leasing. Items: (pod name, terminating).
pub fn on_their_way_out<'a>(replicas: i32, pods: impl IntoIterator<Item = (&'a str, bool)>) -> Vec<&'a str> {
    pods.into_iter().filter(|(_, terminating)| replicas == 0 || *terminating).map(|(name, _)| name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Option<SystemTime> {
        Some(SystemTime::UNIX_EPOCH + Duration::from_secs(s))
    }

    #[test]
    fn only_pods_created_well_after_leadership_began_are_known_to_hold_no_earlier_lease() {
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(!earlier_leases_possible([], since), "no pods yet: all are later");
        assert!(!earlier_leases_possible([at(1_005), at(2_000)], since));
        assert!(earlier_leases_possible([at(2_000), at(999)], since), "one earlier pod is enough");
        assert!(earlier_leases_possible([at(1_004)], since), "within the clock margin");
        assert!(earlier_leases_possible([None], since), "no creation time");
    }

    #[test]
    fn pods_on_their_way_out_are_all_listed_at_zero_and_the_terminating_ones_above() {
        let pods = [("w-0", false), ("w-1", true), ("w-2", false)];
        assert_eq!(on_their_way_out(0, pods), ["w-0", "w-1", "w-2"], "at zero every pod goes");
        assert_eq!(on_their_way_out(2, pods), ["w-1"], "above zero only the chosen");
        assert!(on_their_way_out(3, [("w-0", false)]).is_empty());
    }
}
