//! `POST /v1/events/pubsub`: Cloud Storage notifications pushed by a Pub/Sub push subscription,
//! so that GCS buckets reach zeroflow without Eventarc.
//!
//! Authentication: the gateway token as a bearer token, or (what a push subscription can send)
//! in the push endpoint's URL as `?token=<token>`, compared in constant time like the header.
//! A push subscription's own OIDC authentication sends a Google-signed JWT instead, which is
//! not the gateway token: leave it off (docs/sources/gcs-pubsub.md).
//!
//! Answers: 2xx once the message's event is admitted (or when there is nothing to admit); 503
//! with `Retry-After` when a backlog is full (Pub/Sub retries with its backoff); 4xx only for a
//! request that is not a push envelope. Pub/Sub redelivers every message not answered 2xx until
//! it expires, so a push whose message is not a usable Cloud Storage notification is answered
//! 200 and counted as `rejected` (see [`zeroflow_core::events::pubsub`]).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::{CONTENT_LENGTH, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroflow_core::admission::Admission;
use zeroflow_core::events::pubsub::{Parsed, parse_push};
use zeroflow_core::events::{EventKind, cloudevents};

use super::auth::{self, AuthError, BearerToken, NamespaceTokens, SenderScope};
use super::metrics::{EventOutcome, GatewayMetrics};
use super::server::GatewayConfig;

pub const PUBSUB_PATH: &str = "/v1/events/pubsub";

/// The `source` label of this endpoint's metrics.
const SOURCE: &str = "pubsub";

struct PubSub<A> {
    token: Option<BearerToken>,
    namespace_tokens: NamespaceTokens,
    body_limit: usize,
    admission: A,
    metrics: GatewayMetrics,
}

/// The Pub/Sub push route, to be merged into the gateway's router.
pub fn router<A: Admission>(config: GatewayConfig, admission: A, metrics: GatewayMetrics) -> Router {
    let state = Arc::new(PubSub {
        token: config.token,
        namespace_tokens: config.namespace_tokens,
        body_limit: config.body_limit,
        admission,
        metrics,
    });
    Router::new().route(PUBSUB_PATH, post(post_push::<A>)).with_state(state)
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// What one push did (the same fields as the gateway's other endpoints answer, plus
/// `rejected` for an acknowledged message that was not a usable notification).
#[derive(Debug, Default, Serialize)]
struct Summary {
    accepted: u64,
    duplicate: u64,
    unrouted: u64,
    /// Metadata-only changes (`OBJECT_METADATA_UPDATE`): never work.
    metadata: u64,
    ignored: u64,
    skipped: u64,
    /// Removals that withdrew a pending revision.
    withdrawn: u64,
    /// Routes to pipelines of namespaces the sender's token does not cover.
    not_permitted: u64,
    rejected: u64,
}

async fn post_push<A: Admission>(
    State(ps): State<Arc<PubSub<A>>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let presented = query.token;
    let response = match ps.accept(presented.as_deref(), &headers, body, started).await {
        Ok(summary) => {
            for (outcome, n) in [
                (EventOutcome::Accepted, summary.accepted),
                (EventOutcome::Duplicate, summary.duplicate),
                (EventOutcome::Unrouted, summary.unrouted),
                (EventOutcome::NotPermitted, summary.not_permitted),
                (EventOutcome::Metadata, summary.metadata),
                (EventOutcome::Ignored, summary.ignored),
                (EventOutcome::Skipped, summary.skipped),
                (EventOutcome::Rejected, summary.rejected),
            ] {
                ps.metrics.count_as(SOURCE, outcome, n);
            }
            (StatusCode::OK, axum::Json(summary)).into_response()
        }
        Err(refusal) => {
            tracing::debug!(source = SOURCE, status = %refusal.status, error = refusal.message, "push refused");
            ps.metrics.count_as(SOURCE, refusal.outcome, 1);
            refusal.into_response()
        }
    };
    ps.metrics.observe_as(SOURCE, started.elapsed().as_secs_f64());
    response
}

/// A refused request: its status, metric outcome and message.
struct Refusal {
    status: StatusCode,
    outcome: EventOutcome,
    message: String,
    retry_after_secs: Option<u32>,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, outcome: EventOutcome::Rejected, message: message.into(), retry_after_secs: None }
    }

    fn auth(error: AuthError) -> Self {
        let status = match error {
            AuthError::Missing => StatusCode::UNAUTHORIZED,
            AuthError::Invalid => StatusCode::FORBIDDEN,
        };
        Self { outcome: EventOutcome::Unauthorized, ..Self::new(status, error.to_string()) }
    }

    fn into_response(self) -> Response {
        let mut message = self.message;
        // Parser messages can quote the sender's input; keep the answer short.
        if message.len() > 300 {
            let cut = (0..=300).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
            message.truncate(cut);
        }
        let mut response = (self.status, axum::Json(json!({ "error": message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"zeroflow\""));
        }
        if let Some(seconds) = self.retry_after_secs {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl<A: Admission> PubSub<A> {
    async fn accept(
        &self,
        presented: Option<&str>,
        headers: &HeaderMap,
        body: Body,
        received_at: Instant,
    ) -> Result<Summary, Refusal> {
        // The query's token when there is one (what a push subscription sends), else the
        // header. Never logged: the gateway logs no request URLs.
        let scope = match (&self.token, presented) {
            (None, _) => SenderScope::All,
            (Some(_), Some(presented)) => self.scope_of(presented.as_bytes())?,
            (Some(_), None) => self.scope_of(&auth::presented(headers).map_err(Refusal::auth)?)?,
        };
        let media = cloudevents::media_type(headers).unwrap_or_default();
        if !cloudevents::is_json_media(&media) {
            return Err(Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("unsupported media type {media:?}")));
        }
        let body = self.read(headers, body).await?;
        let push = parse_push(&body).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        let mut summary = Summary::default();
        let event = match push.parsed {
            Parsed::Storage(event) => event,
            Parsed::Unusable(why) => {
                tracing::warn!(
                    message_id = push.message_id.as_deref().unwrap_or(""),
                    subscription = push.subscription.as_deref().unwrap_or(""),
                    reason = why,
                    "acknowledged a Pub/Sub message that is not a usable Cloud Storage notification"
                );
                summary.rejected = 1;
                return Ok(summary);
            }
        };
        match event.kind {
            EventKind::Created | EventKind::Removed => {}
            EventKind::Metadata(_) => {
                summary.metadata = 1;
                return Ok(summary);
            }
            EventKind::Other(_) => {
                summary.ignored = 1;
                return Ok(summary);
            }
        }
        let report =
            self.admission.admit(std::slice::from_ref(&event), received_at, scope.namespace()).map_err(|o| {
                Refusal {
                    outcome: EventOutcome::Overloaded,
                    retry_after_secs: Some(o.retry_after_secs),
                    ..Refusal::new(StatusCode::SERVICE_UNAVAILABLE, o.to_string())
                }
            })?;
        // A namespace's sender token whose event reaches only other namespaces' pipelines is
        // refused (403), as on the other endpoints, so a misconfigured subscription shows it
        // and Pub/Sub keeps the message.
        if let SenderScope::Namespace(namespace) = &scope
            && report.not_permitted > 0
            && !report.reached_any()
        {
            return Err(Refusal {
                outcome: EventOutcome::NotPermitted,
                ..Refusal::new(
                    StatusCode::FORBIDDEN,
                    format!("the sender token of namespace {namespace:?} reaches no pipeline this event is for"),
                )
            });
        }
        summary.not_permitted = report.not_permitted;
        summary.accepted = report.accepted;
        summary.duplicate = report.duplicate;
        summary.unrouted = report.unrouted;
        summary.skipped = report.skipped;
        summary.withdrawn = report.withdrawn;
        Ok(summary)
    }

    fn scope_of(&self, presented: &[u8]) -> Result<SenderScope, Refusal> {
        auth::scope_of(self.token.as_ref(), &self.namespace_tokens, presented).map_err(Refusal::auth)
    }

    async fn read(&self, headers: &HeaderMap, body: Body) -> Result<axum::body::Bytes, Refusal> {
        let too_large =
            || Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body exceeds {} bytes", self.body_limit));
        let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.body_limit as u64) {
            return Err(too_large());
        }
        // Fails past the limit (or when the connection breaks): either way nothing to parse.
        axum::body::to_bytes(body, self.body_limit).await.map_err(|_| too_large())
    }
}
