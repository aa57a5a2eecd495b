//! The work API's wire: routes, request and response bodies, status codes. Handlers
//! authenticate, parse and delegate to [`WorkApi`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;

use super::rules::wait_duration;
use super::server::WorkApi;
use crate::gateway::routing::PipelineKey;

/// Request bodies are small JSON documents; the largest is a failure with 4 KiB of stderr.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The object a finishing worker names, used only when its lease is unknown here.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ObjectRef {
    pub(super) bucket: Option<String>,
    pub(super) key: Option<String>,
    pub(super) etag: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct OutputRequest {
    pub(super) name: String,
    #[serde(flatten)]
    pub(super) object: ObjectRef,
}

#[derive(Debug, Deserialize)]
pub(super) struct CompleteRequest {
    #[serde(default)]
    pub(super) outputs: Vec<String>,
    /// The lease's attempt, echoed back; used when the lease is unknown here.
    pub(super) attempt: Option<u32>,
    #[serde(flatten)]
    pub(super) object: ObjectRef,
}

#[derive(Debug, Deserialize)]
pub(super) struct FailRequest {
    pub(super) retryable: bool,
    pub(super) exit_code: Option<i32>,
    pub(super) stderr_tail: Option<String>,
    /// The lease's attempt, echoed back; used when the lease is unknown here.
    pub(super) attempt: Option<u32>,
    /// The worker is shutting down and gives the object back unfinished: not a failure of the
    /// object, so it is leased again at once and the attempt does not count.
    #[serde(default)]
    pub(super) handed_back: bool,
    #[serde(flatten)]
    pub(super) object: ObjectRef,
}

#[derive(Debug, Deserialize)]
pub(super) struct WaitQuery {
    pub(super) wait_seconds: Option<u64>,
}

/// A granted lease, as the runner receives it.
#[derive(Debug, Serialize)]
pub struct LeaseResponse {
    pub lease_id: String,
    pub bucket: String,
    pub key: String,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub size: Option<u64>,
    pub attempt: u32,
    pub deadline_unix_ms: u64,
    pub lease_seconds: u64,
    pub heartbeat_interval_seconds: u64,
    /// Presigned GET, valid for one lease duration.
    pub input_url: String,
}

#[derive(Debug, Serialize)]
pub(super) struct HeartbeatResponse {
    pub(super) deadline_unix_ms: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct OutputResponse {
    pub(super) name: String,
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) method: &'static str,
    pub(super) url: String,
    pub(super) expires_in_seconds: u64,
}

#[derive(Debug, Serialize)]
pub(super) struct FinishResponse {
    /// A record (done/failed) was written.
    pub(super) recorded: bool,
    /// The lease was still this replica's; false for late or unknown leases.
    pub(super) lease_held: bool,
}

/// Why a request was refused; each maps to one status code.
#[derive(Debug, Error)]
pub(super) enum ApiError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("token not authenticated")]
    Unauthenticated,
    #[error("this ServiceAccount may not act for this pipeline")]
    Forbidden,
    #[error("no such pipeline")]
    UnknownPipeline,
    #[error("no such lease")]
    UnknownLease,
    #[error("the lease expired or was finished")]
    LeaseGone,
    #[error("the object revision no longer exists")]
    ObjectGone,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(&'static str),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::UnknownPipeline | ApiError::UnknownLease => StatusCode::NOT_FOUND,
            ApiError::LeaseGone | ApiError::ObjectGone => StatusCode::GONE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Low-cardinality reason for the refusal metric.
    fn reason(&self) -> &'static str {
        match self {
            ApiError::MissingToken | ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden => "forbidden",
            ApiError::UnknownPipeline | ApiError::UnknownLease => "not_found",
            ApiError::LeaseGone | ApiError::ObjectGone => "gone",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), axum::Json(json!({ "error": self.to_string() }))).into_response();
        let challenge = match self {
            ApiError::MissingToken => Some("Bearer realm=\"zeroflow\""),
            ApiError::Unauthenticated => Some("Bearer realm=\"zeroflow\", error=\"invalid_token\""),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// The work API's routes, to be served on their own address (`--lease-api-addr`).
pub fn router(api: Arc<WorkApi>) -> Router {
    Router::new()
        .route("/v1/pipelines/{namespace}/{name}/leases", post(post_lease))
        .route("/v1/pipelines/{namespace}/{name}/leases/{lease_id}/heartbeat", post(post_heartbeat))
        .route("/v1/pipelines/{namespace}/{name}/leases/{lease_id}/outputs", post(post_output))
        .route("/v1/pipelines/{namespace}/{name}/leases/{lease_id}/complete", post(post_complete))
        .route("/v1/pipelines/{namespace}/{name}/leases/{lease_id}/fail", post(post_fail))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

fn answer<T: Serialize>(api: &WorkApi, result: Result<T, ApiError>) -> Response {
    match result {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(e) => {
            api.metrics.refused(e.reason());
            e.into_response()
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

type PipelinePath = Path<(String, String)>;
type LeasePath = Path<(String, String, String)>;

async fn post_lease(
    State(api): State<Arc<WorkApi>>,
    Path((namespace, name)): PipelinePath,
    Query(query): Query<WaitQuery>,
    headers: HeaderMap,
) -> Response {
    let pipeline = PipelineKey::new(namespace, name);
    let result = async {
        let identity = api.authorize(&headers, &pipeline).await?;
        api.lease(&pipeline, wait_duration(query.wait_seconds), identity.pod).await
    }
    .await;
    match result {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        other => answer(&api, other),
    }
}

async fn post_heartbeat(
    State(api): State<Arc<WorkApi>>,
    Path((namespace, name, lease)): LeasePath,
    headers: HeaderMap,
) -> Response {
    let pipeline = PipelineKey::new(namespace, name);
    let result = async {
        api.authorize(&headers, &pipeline).await?;
        api.heartbeat(&pipeline, &lease).await
    }
    .await;
    answer(&api, result)
}

async fn post_output(
    State(api): State<Arc<WorkApi>>,
    Path((namespace, name, lease)): LeasePath,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pipeline = PipelineKey::new(namespace, name);
    let result = async {
        api.authorize(&headers, &pipeline).await?;
        api.output(&pipeline, &lease, parse(&body)?).await
    }
    .await;
    answer(&api, result)
}

async fn post_complete(
    State(api): State<Arc<WorkApi>>,
    Path((namespace, name, lease)): LeasePath,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pipeline = PipelineKey::new(namespace, name);
    let result = async {
        api.authorize(&headers, &pipeline).await?;
        api.complete(&pipeline, &lease, parse(&body)?).await
    }
    .await;
    answer(&api, result)
}

async fn post_fail(
    State(api): State<Arc<WorkApi>>,
    Path((namespace, name, lease)): LeasePath,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pipeline = PipelineKey::new(namespace, name);
    let result = async {
        api.authorize(&headers, &pipeline).await?;
        api.fail(&pipeline, &lease, parse(&body)?).await
    }
    .await;
    answer(&api, result)
}
