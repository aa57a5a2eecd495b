//! The HTTP face of the gateway (axum). It authenticates, bounds and parses requests, routes the
//! records and hands them to an [`Admission`]; only then does it answer 2xx. Everything it decides
//! is delegated to the pure modules, so it is tested over real HTTP with an in-memory admission.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{ALLOW, CONTENT_LENGTH, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use thiserror::Error;

use super::auth::{AuthError, BearerToken};
use super::metrics::{EventOutcome, GatewayMetrics, Source};
use zeroflow_core::admission::{Admission, Overloaded};
use zeroflow_core::events::{RecordError, cloudevents, s3};

pub const S3_PATH: &str = "/v1/events/s3";
pub const CLOUDEVENTS_PATH: &str = "/v1/events/cloudevents";

/// Default request body limit: MinIO sends one record per request, AWS at most a few.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `None` turns authentication off (only for trusted networks and tests).
    pub token: Option<BearerToken>,
    pub body_limit: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self { token: None, body_limit: DEFAULT_BODY_LIMIT }
    }
}

struct Gateway<A> {
    config: GatewayConfig,
    admission: A,
    metrics: GatewayMetrics,
}

/// The gateway's routes, ready to be merged into the operator's server or served alone.
/// `admission` routes the events to pipelines and admits them.
pub fn router<A: Admission>(config: GatewayConfig, admission: A, metrics: GatewayMetrics) -> Router {
    let state = Arc::new(Gateway { config, admission, metrics });
    Router::new()
        .route(S3_PATH, post(post_s3::<A>).head(probe))
        .route(CLOUDEVENTS_PATH, post(post_cloudevents::<A>).options(webhook_handshake))
        .with_state(state)
}

/// MinIO checks that the endpoint is alive with `HEAD` before sending.
async fn probe() -> StatusCode {
    StatusCode::OK
}

/// Azure Event Grid's CloudEvents handshake: echo the origin to allow it to send. Not
/// authenticated (Event Grid sends no credentials here); it only permits POSTs, which are.
async fn webhook_handshake(headers: HeaderMap) -> Response {
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert(ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    if let Some(origin) = headers.get("webhook-request-origin") {
        h.insert(HeaderName::from_static("webhook-allowed-origin"), origin.clone());
        h.insert(HeaderName::from_static("webhook-allowed-rate"), HeaderValue::from_static("*"));
    }
    response
}

async fn post_s3<A: Admission>(State(gw): State<Arc<Gateway<A>>>, headers: HeaderMap, body: Body) -> Response {
    gw.handle(Source::S3, headers, body).await
}

async fn post_cloudevents<A: Admission>(State(gw): State<Arc<Gateway<A>>>, headers: HeaderMap, body: Body) -> Response {
    gw.handle(Source::CloudEvents, headers, body).await
}

/// Why a request was refused; each maps to one status code.
#[derive(Debug, Error)]
enum Refusal {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("could not read the request body")]
    Body,
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
}

impl Refusal {
    fn outcome(&self) -> EventOutcome {
        match self {
            Refusal::Auth(_) => EventOutcome::Unauthorized,
            Refusal::Overloaded(_) => EventOutcome::Overloaded,
            _ => EventOutcome::Rejected,
        }
    }

    fn into_response(self) -> Response {
        let status = match &self {
            Refusal::Auth(AuthError::Missing) => StatusCode::UNAUTHORIZED,
            Refusal::Auth(AuthError::Invalid) => StatusCode::FORBIDDEN,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Body => StatusCode::BAD_REQUEST,
            Refusal::Record(e) if e.is_media_type() => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Record(_) => StatusCode::BAD_REQUEST,
            Refusal::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut message = self.to_string();
        // Parser messages can quote the sender's input; keep the answer short.
        if message.len() > 300 {
            let cut = (0..=300).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
            message.truncate(cut);
        }
        let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
        match self {
            Refusal::Auth(AuthError::Missing) => {
                response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"zeroflow\""));
            }
            Refusal::Overloaded(o) => {
                response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(o.retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

/// What one successful request did, per record.
#[derive(Debug, Default, Serialize)]
struct Summary {
    accepted: u64,
    duplicate: u64,
    unrouted: u64,
    ignored: u64,
    /// Routed, but not work (a folder placeholder).
    skipped: u64,
}

impl<A: Admission> Gateway<A> {
    async fn handle(&self, source: Source, headers: HeaderMap, body: Body) -> Response {
        let started = Instant::now();
        let response = match self.accept(source, &headers, body, started).await {
            Ok(summary) => {
                self.metrics.count(source, EventOutcome::Accepted, summary.accepted);
                self.metrics.count(source, EventOutcome::Duplicate, summary.duplicate);
                self.metrics.count(source, EventOutcome::Unrouted, summary.unrouted);
                self.metrics.count(source, EventOutcome::Ignored, summary.ignored);
                self.metrics.count(source, EventOutcome::Skipped, summary.skipped);
                (StatusCode::OK, axum::Json(summary)).into_response()
            }
            Err(refusal) => {
                tracing::debug!(source = source.as_str(), error = %refusal, "notification refused");
                self.metrics.count(source, refusal.outcome(), 1);
                refusal.into_response()
            }
        };
        self.metrics.observe(source, started.elapsed().as_secs_f64());
        response
    }

    async fn accept(
        &self,
        source: Source,
        headers: &HeaderMap,
        body: Body,
        received_at: Instant,
    ) -> Result<Summary, Refusal> {
        if let Some(token) = &self.config.token {
            token.check(headers)?;
        }
        if source == Source::S3 {
            let media = cloudevents::media_type(headers).unwrap_or_default();
            if !cloudevents::is_json_media(&media) {
                return Err(RecordError::MediaType(media).into());
            }
        }
        let body = read_limited(headers, body, self.config.body_limit).await?;
        let events = match source {
            Source::S3 => s3::parse_notification(&body)?,
            Source::CloudEvents => cloudevents::parse_http(headers, &body)?,
        };
        let mut summary = Summary::default();
        let (work, ignored): (Vec<_>, Vec<_>) = events.into_iter().partition(|e| e.is_created());
        summary.ignored = ignored.len() as u64;
        if !work.is_empty() {
            let report = self.admission.admit(&work, received_at)?;
            summary.accepted = report.accepted;
            summary.duplicate = report.duplicate;
            summary.unrouted = report.unrouted;
            summary.skipped = report.skipped;
        }
        Ok(summary)
    }
}

/// Reads the body, refusing it as soon as it is known to exceed `limit` (by its declared length
/// before reading anything, or while streaming when there is none).
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Vec<u8>, Refusal> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Refusal::TooLarge(limit));
    }
    let mut out = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| Refusal::Body)?;
        if out.len() + chunk.len() > limit {
            return Err(Refusal::TooLarge(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
