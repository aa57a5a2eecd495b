//! zeroflow-runner: turns any container into a zeroflow worker. No Kubernetes client: it talks
//! to the operator's work API with the pod's projected token and to the store through presigned
//! URLs.

pub mod api;
pub mod contract;
pub mod install;
pub mod local;
pub mod names;
pub mod object;
pub mod process;
pub mod retry;
pub mod worker;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
}
