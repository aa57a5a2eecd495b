//! The work API's wire: routes, request and response bodies, status codes. Handlers
//! authenticate, parse and delegate to [`WorkApi`].

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;

use super::server::WorkApi;
use zeroflow_core::PipelineKey;
use zeroflow_core::work::wait_duration;

use zeroflow_contract::wire::{BODY_LIMIT, WaitQuery, routes};

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
    /// The pipeline exists but this leader has not loaded it yet (it just took over): retry.
    #[error("this leader has not loaded the pipeline yet; retry")]
    PipelineLoading,
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
            ApiError::Unavailable(_) | ApiError::PipelineLoading => StatusCode::SERVICE_UNAVAILABLE,
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
            ApiError::PipelineLoading => "loading",
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
        if matches!(self, ApiError::PipelineLoading) {
            // A pipeline is loaded within a reconcile (well under a second per pipeline).
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1));
        }
        response
    }
}

/// The work API's routes, to be served on their own address (`--work-api-addr`).
pub fn router(api: Arc<WorkApi>) -> Router {
    Router::new()
        .route(routes::LEASES, post(post_lease))
        .route(routes::HEARTBEAT, post(post_heartbeat))
        .route(routes::OUTPUTS, post(post_output))
        .route(routes::COMPLETE, post(post_complete))
        .route(routes::FAIL, post(post_fail))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(api)
}

fn answer<T: Serialize>(api: &WorkApi, result: Result<T, ApiError>) -> Response {
    match result {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(e) => {
            api.refused(e.reason());
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

/// `_body` carries nothing a lease needs (the wait is in the query), but it is read before the
/// answer: a response sent while the request's body is still on its way leaves hyper unable to
/// tell where the next request starts, and it closes the kept-alive connection under the
/// client's next request.
async fn post_lease(
    State(api): State<Arc<WorkApi>>,
    Path((namespace, name)): PipelinePath,
    Query(query): Query<WaitQuery>,
    headers: HeaderMap,
    _body: Bytes,
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
    body: Bytes,
) -> Response {
    let pipeline = PipelineKey::new(namespace, name);
    let result = async {
        let identity = api.authorize(&headers, &pipeline).await?;
        api.heartbeat(&pipeline, &lease, parse(&body)?, identity.pod).await
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
