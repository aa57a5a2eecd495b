//! The testbed's optional services (`e2e/testbed up --with sqs,kafka,azurite,gcs`), each used
//! the way the operator will use it. Every test fails, never skips, when its service is not up.

mod azure;
mod gcs;
mod kafka;
mod sqs;

/// A name no other test run uses (queues, buckets and containers outlive a test).
fn unique(prefix: &str) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}
