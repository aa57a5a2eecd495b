//! Whether a pipeline's running workers may hold leases an earlier leader granted, which decides
//! whether adoption holds leasing for the recovery window (see the scaler's module docs).
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
}
