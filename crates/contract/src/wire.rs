//! The work API on the wire: paths, and the JSON bodies of its requests and responses.
//!
//! A lease's life, seen by a runner:
//!
//! ```text
//! POST {base}/leases?wait_seconds=20          -> 200 Lease | 204 (nothing within the wait)
//! POST {base}/leases/{id}/heartbeat           -> 200 HeartbeatResponse | 410 (lease gone)
//!      body HeartbeatRequest: the object and attempt, so a new leader can re-attach the lease
//! POST {base}/leases/{id}/outputs             -> 200 OutputTarget (a presigned PUT)
//! POST {base}/leases/{id}/complete            -> 200 FinishResponse
//! POST {base}/leases/{id}/fail                -> 200 FinishResponse
//! ```
//!
//! with `{base}` = `{work API URL}/v1/pipelines/{namespace}/{name}` and the pod's projected token
//! (audience [`crate::worker::TOKEN_AUDIENCE`]) as `Authorization: Bearer`. Errors are
//! [`ErrorBody`] with 400 (bad request), 401 (no or bad token), 403 (not this pipeline's worker),
//! 404 (no such pipeline or lease), 410 (the lease expired or was finished, or the object
//! revision is gone), 503 (try again, after `Retry-After` when it is given: also what a new
//! leader answers for a pipeline it has not loaded yet). Every request that names a lease also names its object
//! ([`ObjectRef`]), so a replica that never granted the lease (after a restart or a leader
//! change) can still match it to its object.

use serde::{Deserialize, Serialize};

/// Largest request body the work API reads; the largest is a failure with its stderr tail.
pub const BODY_LIMIT: usize = 64 * 1024;
/// A lease poll waits this long by default when nothing is pending.
pub const DEFAULT_WAIT_SECONDS: u64 = 20;
/// A lease poll never waits longer, so proxies and load balancers do not cut it.
pub const MAX_WAIT_SECONDS: u64 = 30;

/// Route templates of the work API (axum path syntax).
pub mod routes {
    pub const LEASES: &str = "/v1/pipelines/{namespace}/{name}/leases";
    pub const HEARTBEAT: &str = "/v1/pipelines/{namespace}/{name}/leases/{lease_id}/heartbeat";
    pub const OUTPUTS: &str = "/v1/pipelines/{namespace}/{name}/leases/{lease_id}/outputs";
    pub const COMPLETE: &str = "/v1/pipelines/{namespace}/{name}/leases/{lease_id}/complete";
    pub const FAIL: &str = "/v1/pipelines/{namespace}/{name}/leases/{lease_id}/fail";
}

/// `{api}/v1/pipelines/{namespace}/{name}`: the base of every call a pipeline's runner makes.
pub fn pipeline_base(api: &str, namespace: &str, name: &str) -> String {
    format!("{}/v1/pipelines/{namespace}/{name}", api.trim_end_matches('/'))
}

/// Query of a lease poll.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WaitQuery {
    /// Seconds to wait for an object; at most [`MAX_WAIT_SECONDS`], default [`DEFAULT_WAIT_SECONDS`].
    pub wait_seconds: Option<u64>,
}

/// A granted lease: one object revision for one worker until `deadline_unix_ms`, renewed by
/// heartbeats. Unknown fields are ignored by readers, so the server may add some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub lease_id: String,
    pub bucket: String,
    pub key: String,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    /// Bytes, when the notification or listing said.
    pub size: Option<u64>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Wall-clock milliseconds since the Unix epoch.
    #[serde(default)]
    pub deadline_unix_ms: u64,
    #[serde(default)]
    pub lease_seconds: u64,
    /// How often to send a heartbeat; a lease missed for `lease_seconds` is given to another worker.
    pub heartbeat_interval_seconds: u64,
    /// Presigned GET of the input, valid for one lease duration.
    pub input_url: String,
}

/// The object a request is about, as the lease named it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    #[serde(default)]
    pub bucket: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub etag: Option<String>,
}

impl From<&Lease> for ObjectRef {
    fn from(lease: &Lease) -> Self {
        ObjectRef { bucket: Some(lease.bucket.clone()), key: Some(lease.key.clone()), etag: lease.etag.clone() }
    }
}

/// Renews a lease. The object and attempt let a replica that does not know the lease (a new
/// leader) re-attach it instead of handing the object to another worker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(flatten)]
    pub object: ObjectRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The new deadline, wall-clock milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
}

/// Asks for a presigned PUT for one output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRequest {
    /// The output's name ([`crate::names::validate_output_name`]).
    pub name: String,
    #[serde(flatten)]
    pub object: ObjectRef,
}

/// Where to upload one output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTarget {
    pub name: String,
    pub bucket: String,
    /// The full key in the sink bucket ([`crate::names::output_key`]).
    pub key: String,
    /// HTTP method of the upload, `PUT`.
    pub method: String,
    pub url: String,
    pub expires_in_seconds: u64,
    /// Headers the upload must carry besides `Content-Length`, as `(name, value)` pairs: what
    /// the store needs and the signature covers, for example `x-ms-blob-type: BlockBlob` on
    /// Azure Blob Storage, which refuses a PUT without it. Empty for S3 and GCS. An older
    /// server sends none, which reads as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// The object was processed; `outputs` are the names uploaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteRequest {
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The lease's attempt, echoed back; used when the lease is unknown here.
    #[serde(default)]
    pub attempt: Option<u32>,
    #[serde(flatten)]
    pub object: ObjectRef,
}

/// The attempt failed, or the object is given back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailRequest {
    /// Whether another attempt could succeed (a crash, a timeout) or not (an output name the
    /// server refuses).
    pub retryable: bool,
    pub exit_code: Option<i32>,
    /// The end of the transform's stderr (at most [`crate::names::STDERR_TAIL_LIMIT`] bytes).
    pub stderr_tail: Option<String>,
    /// The lease's attempt, echoed back; used when the lease is unknown here.
    #[serde(default)]
    pub attempt: Option<u32>,
    /// The worker is shutting down and gives the object back unfinished: not a failure of the
    /// object, so it is leased again at once and the attempt does not count.
    #[serde(default)]
    pub handed_back: bool,
    /// The input could not be downloaded because it no longer exists (the presigned GET
    /// answered 404 or 412). The server checks the store and, when the revision is really gone,
    /// records the object as skipped without using an attempt.
    #[serde(default)]
    pub input_missing: bool,
    #[serde(flatten)]
    pub object: ObjectRef,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishResponse {
    /// A record (done or failed) was written to the ledger.
    pub recorded: bool,
    /// The lease was still held; false for late or unknown leases.
    pub lease_held: bool,
}

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_their_object_flat() {
        let lease = Lease {
            lease_id: "1-2".into(),
            bucket: "in".into(),
            key: "a b.csv".into(),
            etag: Some("e".into()),
            version_id: None,
            size: Some(3),
            attempt: 2,
            deadline_unix_ms: 0,
            lease_seconds: 120,
            heartbeat_interval_seconds: 10,
            input_url: "http://x".into(),
        };
        let body = HeartbeatRequest { attempt: Some(2), object: (&lease).into() };
        let json = serde_json::to_value(&body).expect("serializes");
        assert_eq!(json, serde_json::json!({"attempt": 2, "bucket": "in", "key": "a b.csv", "etag": "e"}));
        let back: HeartbeatRequest = serde_json::from_value(json).expect("parses");
        assert_eq!(back, body);
        // An old runner's empty body still parses.
        let empty: HeartbeatRequest = serde_json::from_str("{}").expect("parses");
        assert_eq!(empty, HeartbeatRequest::default());
        let fail: FailRequest = serde_json::from_str(r#"{"retryable": true}"#).expect("parses");
        assert!(!fail.handed_back && !fail.input_missing);
    }

    #[test]
    fn output_targets_carry_upload_headers_and_old_ones_still_parse() {
        let target = OutputTarget {
            name: "a.json".into(),
            bucket: "out".into(),
            key: "p/a.json".into(),
            method: "PUT".into(),
            url: "http://x".into(),
            expires_in_seconds: 60,
            headers: vec![("x-ms-blob-type".into(), "BlockBlob".into())],
        };
        let json = serde_json::to_value(&target).expect("serializes");
        assert_eq!(json["headers"], serde_json::json!([["x-ms-blob-type", "BlockBlob"]]));
        let old = r#"{"name": "a", "bucket": "b", "key": "k", "method": "PUT", "url": "u", "expires_in_seconds": 1}"#;
        let parsed: OutputTarget = serde_json::from_str(old).expect("parses");
        assert!(parsed.headers.is_empty());
    }

    #[test]
    fn base_paths_match_the_routes() {
        assert_eq!(pipeline_base("http://op:8081/", "ns", "p"), "http://op:8081/v1/pipelines/ns/p");
        assert!(routes::LEASES.starts_with("/v1/pipelines/{namespace}/{name}"));
    }
}
