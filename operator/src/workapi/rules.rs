//! The work API's pure decisions: which output names are safe, which caller may act for which
//! pipeline, how long a poll waits, how lease ids look. No I/O, unit-tested below.

use std::time::Duration;

use thiserror::Error;

use crate::gateway::routing::PipelineKey;

/// Longest output name, in bytes (the usual file-name limit).
pub const MAX_OUTPUT_NAME: usize = 255;
/// How much of a failed transform's stderr is kept.
pub const STDERR_TAIL_LIMIT: usize = 4096;
/// A lease poll never waits longer than this, so proxies and load balancers don't cut it.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);

/// Why an output name is refused. Names become the last segment of an object key and, in the
/// runner, a file name: anything that could climb out of a directory or split a key is out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("output name is empty")]
    Empty,
    #[error("output name is {0} bytes, more than {MAX_OUTPUT_NAME}")]
    TooLong(usize),
    #[error("output name must not contain '/' or '\\'")]
    Separator,
    #[error("output name must not be '.' or contain '..'")]
    Dots,
    #[error("output name must not contain NUL or control characters")]
    Control,
}

pub fn validate_output_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_OUTPUT_NAME {
        return Err(NameError::TooLong(name.len()));
    }
    if name.contains(['/', '\\']) {
        return Err(NameError::Separator);
    }
    if name == "." || name.contains("..") {
        return Err(NameError::Dots);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(())
}

/// Where an output of `input_key` goes in the sink bucket: `<prefix><input key>/<name>`. The
/// input key is whatever the store holds (it was never a path on our side), and the name is
/// validated, so the result stays under the sink prefix.
pub fn output_key(sink_prefix: &str, input_key: &str, name: &str) -> String {
    format!("{sink_prefix}{input_key}/{name}")
}

/// The Kubernetes username of a pipeline's worker pods (the controller names the ServiceAccount
/// `<pipeline>-worker`).
pub fn worker_username(pipeline: &PipelineKey) -> String {
    format!("system:serviceaccount:{}:{}-worker", pipeline.namespace, pipeline.name)
}

/// Whether an authenticated caller may act for `pipeline`. Usernames are not secrets, so a plain
/// comparison is fine here; the token itself is never compared by us (TokenReview does that).
pub fn may_act_for(username: &str, pipeline: &PipelineKey) -> bool {
    username == worker_username(pipeline)
}

/// The poll's wait: the requested seconds (default 20), at most 30.
pub fn wait_duration(requested_seconds: Option<u64>) -> Duration {
    requested_seconds.map_or(DEFAULT_WAIT, Duration::from_secs).min(MAX_WAIT)
}

/// How often a worker should renew: three chances per lease, at least every second.
pub fn heartbeat_interval_seconds(lease_duration_ms: u64) -> u64 {
    (lease_duration_ms / 3 / 1000).max(1)
}

/// The last `STDERR_TAIL_LIMIT` bytes, cut on a character boundary (the end is what explains a
/// crash).
pub fn stderr_tail(stderr: &str) -> &str {
    if stderr.len() <= STDERR_TAIL_LIMIT {
        return stderr;
    }
    let mut start = stderr.len() - STDERR_TAIL_LIMIT;
    while !stderr.is_char_boundary(start) {
        start += 1;
    }
    &stderr[start..]
}

/// Whether a failure ends the object's attempts, so that a `failed` marker must be written.
pub fn is_final_failure(retryable: bool, attempt: u32, max_attempts: u32) -> bool {
    !retryable || attempt >= max_attempts
}

/// ETags compare without the quotes S3 puts around them (notifications usually omit them) and
/// without a weak marker.
pub fn same_etag(a: &str, b: &str) -> bool {
    fn bare(e: &str) -> &str {
        e.trim().trim_start_matches("W/").trim_matches('"')
    }
    bare(a) == bare(b)
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
    fn output_names_that_could_escape_or_split_are_refused() {
        assert_eq!(validate_output_name("out.parquet"), Ok(()));
        assert_eq!(validate_output_name("résumé 2026.csv"), Ok(()));
        assert_eq!(validate_output_name(".hidden"), Ok(()));
        assert_eq!(validate_output_name(""), Err(NameError::Empty));
        assert_eq!(validate_output_name("a/b"), Err(NameError::Separator));
        assert_eq!(validate_output_name("a\\b"), Err(NameError::Separator));
        assert_eq!(validate_output_name(".."), Err(NameError::Dots));
        assert_eq!(validate_output_name("x..y"), Err(NameError::Dots));
        assert_eq!(validate_output_name("."), Err(NameError::Dots));
        assert_eq!(validate_output_name("a\0b"), Err(NameError::Control));
        assert_eq!(validate_output_name("a\nb"), Err(NameError::Control));
        assert_eq!(validate_output_name(&"x".repeat(255)), Ok(()));
        assert_eq!(validate_output_name(&"x".repeat(256)), Err(NameError::TooLong(256)));
        // 128 two-byte characters: 256 bytes although only 128 characters.
        assert_eq!(validate_output_name(&"é".repeat(128)), Err(NameError::TooLong(256)));
    }

    #[test]
    fn outputs_sit_under_the_sink_prefix_and_the_input_key() {
        assert_eq!(output_key("parquet/", "incoming/a.csv", "a.parquet"), "parquet/incoming/a.csv/a.parquet");
        assert_eq!(output_key("", "a.csv", "out"), "a.csv/out");
    }

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
        assert_eq!(heartbeat_interval_seconds(120_000), 40);
        assert_eq!(heartbeat_interval_seconds(1_000), 1);
    }

    #[test]
    fn stderr_keeps_the_end_on_a_char_boundary() {
        assert_eq!(stderr_tail("short"), "short");
        let long = format!("{}{}", "é".repeat(3000), "the end");
        let tail = stderr_tail(&long);
        assert!(tail.len() <= STDERR_TAIL_LIMIT && tail.len() >= STDERR_TAIL_LIMIT - 1);
        assert!(tail.ends_with("the end"));
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
