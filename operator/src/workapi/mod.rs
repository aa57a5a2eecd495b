//! The work API served to runners (DESIGN §3 "Work API").
//!
//! Workers authenticate with their pod's projected ServiceAccount token (audience `zeroflow`),
//! verified by TokenReview ([`auth`]); a worker acts only for the pipeline bound to its
//! ServiceAccount. It leases objects from the in-memory backlogs, receives presigned URLs
//! ([`objects`]) and reports outcomes, which are recorded through [`Completion`] before the
//! backlog is acknowledged ([`LedgerCompletion`] writes the ledger's markers). [`rules`] and
//! [`leases`] are pure; [`server`] does the I/O and [`http`] speaks HTTP.

pub mod auth;
pub mod completion;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod objects;
pub mod server;
pub mod waiters;

pub use auth::{CachingVerifier, Identity, TokenReviewVerifier, TokenVerifier, VerifyError};
pub use completion::{Completion, CompletionError, InMemoryCompletion, Outcome};
pub use http::router;
pub use ledger::LedgerCompletion;
pub use metrics::WorkApiMetrics;
pub use objects::{BucketAccess, ObjectError, ObjectInfo, S3Bucket};
pub use server::{PipelineAccess, WorkApi};
pub use waiters::{NotifyingAdmission, Waiters};
