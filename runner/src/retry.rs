//! Retrying calls to the work API: exponential backoff with jitter, so that after a leader
//! change every worker does not reconnect in the same instant, bounded by a deadline. Pure apart
//! from the jitter source.

use std::time::Duration;

use crate::Error;

/// First pause after a failure.
pub const FIRST: Duration = Duration::from_millis(250);
/// Longest pause between two tries.
pub const MAX: Duration = Duration::from_secs(5);

/// Whether a failed call may succeed if made again: no answer (a connection refused or reset,
/// a timeout: the operator is restarting or a leader change is under way), or an answer that
/// says to try again (408, 429, 5xx). Other answers are final.
pub fn retryable(error: &Error) -> bool {
    match error {
        Error::Http(_) => true,
        Error::Status { status, .. } => matches!(status, 408 | 429) || *status >= 500,
        _ => false,
    }
}

/// Whether an output request or a result report may succeed if made again: as [`retryable`],
/// and also a 404. A new leader answers 503 for a pipeline it has not loaded yet, but an
/// operator of an older release answered 404, and dropping a finished run's result would run
/// the object again. A pipeline that is really gone answers 404 until the caller's patience
/// (the lease, at least a minute) runs out, and its worker pods go with it.
pub fn retryable_report(error: &Error) -> bool {
    retryable(error) || matches!(error, Error::Status { status: 404, .. })
}

/// The pause before try `attempt` (1 for the first retry): `FIRST * 2^(attempt-1)`, capped at
/// [`MAX`], scaled by `jitter` in `[0.5, 1.0]` ("equal jitter").
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    let base = FIRST.saturating_mul(1u32 << doublings).min(MAX);
    base.mul_f64(jitter.clamp(0.5, 1.0))
}

/// A factor in `[0.5, 1.0)`, different on every call and in every process.
pub fn jitter() -> f64 {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let random = std::hash::RandomState::new().hash_one(nanos);
    0.5 + (random % 1_000) as f64 / 2_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap_and_jitter_only_shortens() {
        assert_eq!(backoff(1, 1.0), Duration::from_millis(250));
        assert_eq!(backoff(2, 1.0), Duration::from_millis(500));
        assert_eq!(backoff(5, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(6, 1.0), MAX);
        assert_eq!(backoff(60, 1.0), MAX);
        assert_eq!(backoff(1, 0.5), Duration::from_millis(125));
        assert_eq!(backoff(1, 7.0), Duration::from_millis(250), "jitter is clamped");
        for _ in 0..100 {
            let j = jitter();
            assert!((0.5..1.0).contains(&j), "{j}");
        }
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let status = |status| Error::Status { status, body: String::new() };
        assert!(retryable(&status(503)) && retryable(&status(500)) && retryable(&status(429)));
        assert!(!retryable(&status(410)) && !retryable(&status(404)) && !retryable(&status(400)));
        assert!(!retryable(&Error::Config("x".into())));
    }

    #[test]
    fn reports_are_also_retried_on_404_but_not_on_other_refusals() {
        let status = |status| Error::Status { status, body: String::new() };
        assert!(retryable_report(&status(404)) && retryable_report(&status(503)));
        assert!(!retryable_report(&status(410)) && !retryable_report(&status(400)) && !retryable_report(&status(403)));
    }
}
