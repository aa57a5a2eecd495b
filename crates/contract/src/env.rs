//! Environment variables: those the operator sets in worker pods for `zeroflow-runner`, and
//! those the runner sets for each run of the transform. Every name starts with
//! [`RESERVED_PREFIX`]; a pipeline's own `transform.env` may not use it.

/// Names starting with this are zeroflow's; user variables with it are dropped.
pub const RESERVED_PREFIX: &str = "ZEROFLOW_";

// Set by the operator for the runner.
/// Base URL of the operator's work API.
pub const WORK_API: &str = "ZEROFLOW_WORK_API";
/// The pipeline, as `<namespace>/<name>`.
pub const PIPELINE: &str = "ZEROFLOW_PIPELINE";
/// `exec` or `stdio` ([`crate::worker::Contract`]).
pub const CONTRACT: &str = "ZEROFLOW_CONTRACT";
/// The transform's timeout per object, as a duration string ([`crate::duration`]).
pub const TIMEOUT: &str = "ZEROFLOW_TIMEOUT";
/// Objects one runner processes at once.
pub const CONCURRENCY: &str = "ZEROFLOW_CONCURRENCY";
/// Path of the projected ServiceAccount token (audience [`crate::worker::TOKEN_AUDIENCE`]).
pub const TOKEN_FILE: &str = "ZEROFLOW_TOKEN_FILE";
/// Directory for per-object work directories.
pub const WORK_DIR: &str = "ZEROFLOW_WORK_DIR";
/// The pod's termination grace period, in whole seconds.
pub const GRACE_SECONDS: &str = "ZEROFLOW_GRACE_SECONDS";
/// The pod's name (downward API).
pub const POD_NAME: &str = "ZEROFLOW_POD_NAME";
/// Log format of the runner: `plain` or `json`.
pub const LOG_FORMAT: &str = "ZEROFLOW_LOG_FORMAT";

// Set by the runner for each run of the transform.
/// Path of the downloaded object.
pub const INPUT: &str = "ZEROFLOW_INPUT";
/// Directory whose files become outputs (exec contract).
pub const OUTPUT_DIR: &str = "ZEROFLOW_OUTPUT_DIR";
pub const BUCKET: &str = "ZEROFLOW_BUCKET";
/// The object key: untrusted text, never a path.
pub const KEY: &str = "ZEROFLOW_KEY";
pub const ETAG: &str = "ZEROFLOW_ETAG";
/// Size in bytes; empty when unknown.
pub const SIZE: &str = "ZEROFLOW_SIZE";
/// 1 on the first attempt.
pub const ATTEMPT: &str = "ZEROFLOW_ATTEMPT";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_reserved() {
        for name in [
            WORK_API,
            PIPELINE,
            CONTRACT,
            TIMEOUT,
            CONCURRENCY,
            TOKEN_FILE,
            WORK_DIR,
            GRACE_SECONDS,
            POD_NAME,
            LOG_FORMAT,
            INPUT,
            OUTPUT_DIR,
            BUCKET,
            KEY,
            ETAG,
            SIZE,
            ATTEMPT,
        ] {
            assert!(name.starts_with(RESERVED_PREFIX), "{name}");
        }
    }
}
