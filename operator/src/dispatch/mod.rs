//! Work distribution: per-pipeline backlogs with leases. Free of Kubernetes types.

pub mod backlog;
pub mod backlogs;
pub mod ledger;
pub mod resync;

pub use backlog::{Backlog, BacklogConfig, Counts, Lease, LeaseId, Millis};
pub use backlogs::Backlogs;
