//! The work API served to runners (DESIGN §3 "Work API"; the wire contract is
//! [`zeroflow_contract::wire`]).
//!
//! Workers authenticate with their pod's projected ServiceAccount token (audience `zeroflow`),
//! verified by TokenReview ([`auth`]); a worker acts only for the pipeline bound to its
//! ServiceAccount. It leases objects from its pipeline's backlog, receives presigned URLs
//! ([`objects`]) and reports outcomes, which are recorded in the pipeline's ledger before the
//! backlog is acknowledged. [`server`] holds the behaviour and [`http`] speaks HTTP.

pub mod auth;
pub mod http;
pub mod objects;
pub mod server;

pub use auth::{CachingVerifier, Identity, TokenReviewVerifier, TokenVerifier, VerifyError};
pub use http::router;
pub use objects::{BucketAccess, ObjectError, ObjectInfo, S3Bucket, SignedBucket};
pub use server::WorkApi;
