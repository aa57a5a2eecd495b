//! The work API's pure decisions: which caller may act for which pipeline, how long a poll
//! waits, how often workers renew, how lease ids look. No I/O, unit-tested below. Output names
//! and stderr limits are part of the contract with the runner ([`zeroflow_contract::names`]).

use std::time::Duration;

use zeroflow_contract::wire::{DEFAULT_WAIT_SECONDS, MAX_WAIT_SECONDS};
use zeroflow_contract::worker::worker_username;

use crate::PipelineKey;
use crate::etag::canonical_etag;

/// A lease poll never waits longer than this, so proxies and load balancers don't cut it.
pub const MAX_WAIT: Duration = Duration::from_secs(MAX_WAIT_SECONDS);
pub const DEFAULT_WAIT: Duration = Duration::from_secs(DEFAULT_WAIT_SECONDS);
/// Longest interval between heartbeats, whatever the lease duration: after a leader change a
/// runner re-attaches its leases at its next heartbeat, so this bounds how long a new leader
/// waits before it may treat unclaimed work as free (see the operator's recovery window).
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Whether an authenticated caller may act for `pipeline`. Usernames are not secrets, so a plain
/// comparison is fine here; the token itself is never compared by us (TokenReview does that).
pub fn may_act_for(username: &str, pipeline: &PipelineKey) -> bool {
    username == worker_username(&pipeline.namespace, &pipeline.name)
}

/// The poll's wait: the requested seconds (default 20), at most 30.
pub fn wait_duration(requested_seconds: Option<u64>) -> Duration {
    requested_seconds.map_or(DEFAULT_WAIT, Duration::from_secs).min(MAX_WAIT)
}

/// How often a worker should renew: three chances per lease, at least every second and at most
/// every [`MAX_HEARTBEAT_INTERVAL`].
pub fn heartbeat_interval_seconds(lease_duration_ms: u64) -> u64 {
    (lease_duration_ms / 3 / 1000).clamp(1, MAX_HEARTBEAT_INTERVAL.as_secs())
}

/// Whether a failure ends the object's attempts, so that a `failed` marker must be written.
pub fn is_final_failure(retryable: bool, attempt: u32, max_attempts: u32) -> bool {
    !retryable || attempt >= max_attempts
}

/// ETags compare in their canonical form ([`crate::etag::canonical_etag`]): without quotes or a
/// weak marker, an MD5 in hex whether it was reported in hex or base64.
pub fn same_etag(a: &str, b: &str) -> bool {
    canonical_etag(a) == canonical_etag(b)
}

/// Lease ids handed out: this process's random epoch and a counter, so that a replica that
/// restarted never mistakes an old lease for one it granted (the backlog's own ids restart at 0).
pub fn format_lease_id(epoch: u64, sequence: u64) -> String {
    format!("{epoch:016x}-{sequence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_pipelines_worker_account_may_act_for_it() {
        let p = PipelineKey::new("finance", "invoices");
        assert!(may_act_for("system:serviceaccount:finance:invoices-worker", &p));
        assert!(!may_act_for("system:serviceaccount:finance:invoices", &p));
        assert!(!may_act_for("system:serviceaccount:finance:other-worker", &p));
        assert!(!may_act_for("system:serviceaccount:marketing:invoices-worker", &p));
        assert!(!may_act_for("system:serviceaccount:finance:invoices-worker:x", &p));
        assert!(!may_act_for("admin", &p));
        assert!(!may_act_for("", &p));
    }

    #[test]
    fn waits_are_bounded() {
        assert_eq!(wait_duration(None), DEFAULT_WAIT);
        assert_eq!(wait_duration(Some(0)), Duration::ZERO);
        assert_eq!(wait_duration(Some(5)), Duration::from_secs(5));
        assert_eq!(wait_duration(Some(3600)), MAX_WAIT);
        assert_eq!(heartbeat_interval_seconds(120_000), 10, "at most every 10 s");
        assert_eq!(heartbeat_interval_seconds(15_000), 5);
        assert_eq!(heartbeat_interval_seconds(1_000), 1);
    }

    #[test]
    fn final_failures_and_etags() {
        assert!(is_final_failure(false, 1, 3));
        assert!(!is_final_failure(true, 2, 3));
        assert!(is_final_failure(true, 3, 3));
        assert!(same_etag("\"abc\"", "abc"));
        assert!(same_etag("W/\"abc\"", "abc"));
        assert!(!same_etag("abc", "abd"));
        assert_eq!(format_lease_id(0xab, 7), "00000000000000ab-7");
    }
}
