//! Who a worker is and how it treats each object: naming, authentication, the input/output
//! contract, defaults.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Audience of the projected ServiceAccount token workers present to the work API.
pub const TOKEN_AUDIENCE: &str = "zeroflow";

/// Default per-object timeout of a transform (`transform.timeout`).
pub const DEFAULT_TIMEOUT: &str = "10m";

/// Name of a pipeline's worker Deployment and ServiceAccount: `<pipeline>-worker`.
pub fn worker_name(pipeline: &str) -> String {
    format!("{pipeline}-worker")
}

/// The Kubernetes username of a pipeline's worker pods, as TokenReview reports it.
pub fn worker_username(namespace: &str, pipeline: &str) -> String {
    format!("system:serviceaccount:{namespace}:{}", worker_name(pipeline))
}

/// How each object is handed to the transform.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum Contract {
    /// The object is a file: its path is in `ZEROFLOW_INPUT`; every file the command writes to
    /// `ZEROFLOW_OUTPUT_DIR` becomes an output.
    #[default]
    #[serde(rename = "exec")]
    Exec,
    /// The object is piped to the command's stdin; its stdout is the single output.
    #[serde(rename = "stdio")]
    Stdio,
}

impl Contract {
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::Exec => "exec",
            Contract::Stdio => "stdio",
        }
    }
}

impl fmt::Display for Contract {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown contract {0:?}: expected exec or stdio")]
pub struct UnknownContract(String);

impl FromStr for Contract {
    type Err = UnknownContract;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "exec" => Ok(Contract::Exec),
            "stdio" => Ok(Contract::Stdio),
            other => Err(UnknownContract(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_named_after_their_pipeline() {
        assert_eq!(worker_name("invoices"), "invoices-worker");
        assert_eq!(worker_username("finance", "invoices"), "system:serviceaccount:finance:invoices-worker");
    }

    #[test]
    fn contracts_round_trip_as_text_and_json() {
        for c in [Contract::Exec, Contract::Stdio] {
            assert_eq!(c.as_str().parse::<Contract>(), Ok(c));
            let json = serde_json::to_string(&c).expect("serializes");
            assert_eq!(json, format!("\"{c}\""));
        }
        assert!("Exec".parse::<Contract>().is_err());
    }
}
