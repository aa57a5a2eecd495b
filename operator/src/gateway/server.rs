//! The HTTP face of the gateway (axum). It authenticates, bounds and parses requests, hands
//! content and removals to an [`Admission`] and only then answers 2xx. Everything it decides is
//! delegated to the pure modules (`zeroflow_core::events`), so it is tested over real HTTP with
//! the real in-memory admission.
//!
//! Endpoints, each also at `<path>/t/<token>` for senders that cannot set headers:
//! - `POST /v1/events/s3`: JSON notifications: S3 records (MinIO, AWS, Ceph), EventBridge
//!   events (API destinations), SNS deliveries (by their `x-amz-sns-message-type` header, any
//!   content type), CloudEvents (by `ce-specversion` or a CloudEvents media type); `HEAD` for
//!   MinIO's liveness probe.
//! - `POST /v1/events/cloudevents`: CloudEvents (binary, structured, batch) and EventBridge
//!   events; `OPTIONS` for Azure Event Grid's webhook handshake.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::header::{ALLOW, CONTENT_LENGTH, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use thiserror::Error;

use super::auth::{self, AuthError, BearerToken, NamespaceTokens, SenderScope};
use super::metrics::{EventOutcome, GatewayMetrics, SnsOutcome, Source};
use super::notices::Notices;
use super::sns::{Sns, SnsFailure, SnsSettings};
use zeroflow_core::admission::{Admission, Overloaded};
use zeroflow_core::events::sns::{self as sns_events, Message, MessageType, SnsError};
use zeroflow_core::events::{EventKind, RecordError, StorageEvent, cloudevents, eventbridge, parse_json};

pub const S3_PATH: &str = "/v1/events/s3";
pub const CLOUDEVENTS_PATH: &str = "/v1/events/cloudevents";

/// Default request body limit: MinIO sends one record per request, AWS at most a few.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Seconds a sender is asked to wait when the SNS signing certificate cannot be had.
const CERTIFICATE_RETRY_AFTER_SECONDS: u32 = 30;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `None` turns authentication off (only for trusted networks and tests).
    pub token: Option<BearerToken>,
    /// Namespaces' own sender tokens: a sender presenting one reaches only that namespace's
    /// pipelines. Only consulted when `token` is set.
    pub namespace_tokens: NamespaceTokens,
    pub body_limit: usize,
    /// SNS: trusted hosts, where signing certificates come from, whether to confirm.
    pub sns: SnsSettings,
    /// Where warnings that need a person go besides the log.
    pub notices: Notices,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            token: None,
            namespace_tokens: NamespaceTokens::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            sns: SnsSettings::default(),
            notices: Notices::default(),
        }
    }
}

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error("building the HTTP client for SNS: {0}")]
    Client(#[from] reqwest::Error),
}

struct Gateway<A> {
    token: Option<BearerToken>,
    namespace_tokens: NamespaceTokens,
    body_limit: usize,
    admission: A,
    metrics: GatewayMetrics,
    sns: Sns,
    notices: Notices,
}

/// The gateway's routes, ready to be merged into the operator's server or served alone.
/// `admission` routes the events to pipelines and admits them.
pub fn router<A: Admission>(
    config: GatewayConfig,
    admission: A,
    metrics: GatewayMetrics,
) -> Result<Router, GatewayError> {
    let state = Arc::new(Gateway {
        token: config.token,
        namespace_tokens: config.namespace_tokens,
        body_limit: config.body_limit,
        admission,
        metrics,
        sns: Sns::new(config.sns)?,
        notices: config.notices,
    });
    Ok(Router::new()
        .route(S3_PATH, post(post_s3::<A>).head(probe))
        .route(&format!("{S3_PATH}/t/{{token}}"), post(post_s3_token::<A>).head(probe))
        .route(CLOUDEVENTS_PATH, post(post_cloudevents::<A>).options(webhook_handshake))
        .route(&format!("{CLOUDEVENTS_PATH}/t/{{token}}"), post(post_cloudevents_token::<A>).options(webhook_handshake))
        .with_state(state))
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

/// How a request presented the token.
enum Presented {
    Header,
    Path(Result<String, PathRejection>),
}

// Each handler notes when the request arrived first: its headers are in, its body is neither
// read nor parsed yet. Event-to-scale and cold starts count from it. The request is taken
// whole (not its `HeaderMap`, which axum would clone for the handler).

async fn post_s3<A: Admission>(State(gw): State<Arc<Gateway<A>>>, request: Request) -> Response {
    gw.handle(Source::S3, Instant::now(), Presented::Header, request).await
}

async fn post_s3_token<A: Admission>(
    State(gw): State<Arc<Gateway<A>>>,
    token: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    gw.handle(Source::S3, Instant::now(), Presented::Path(token.map(|Path(t)| t)), request).await
}

async fn post_cloudevents<A: Admission>(State(gw): State<Arc<Gateway<A>>>, request: Request) -> Response {
    gw.handle(Source::CloudEvents, Instant::now(), Presented::Header, request).await
}

async fn post_cloudevents_token<A: Admission>(
    State(gw): State<Arc<Gateway<A>>>,
    token: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    gw.handle(Source::CloudEvents, Instant::now(), Presented::Path(token.map(|Path(t)| t)), request).await
}

/// Why a request was refused; each maps to one status code.
#[derive(Debug, Error)]
enum Refusal {
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Every routed event belongs to pipelines outside the namespace whose token was presented.
    #[error(
        "the sender token of namespace {namespace:?} covers none of the {count} pipeline(s) these events are for; use their namespace's token or the operator-wide one"
    )]
    NotPermitted { namespace: String, count: u64 },
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("could not read the request body")]
    Body,
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    #[error(transparent)]
    Sns(#[from] SnsError),
    #[error("{0}; retry later")]
    Unavailable(String),
    #[error("unknown x-amz-sns-message-type {0:?}")]
    SnsType(String),
    #[error(
        "application/json on {CLOUDEVENTS_PATH} must be an EventBridge event; CloudEvents need a ce-specversion header or a CloudEvents media type, S3 records go to {S3_PATH}"
    )]
    NotCloudEvents,
}

impl Refusal {
    fn outcome(&self) -> EventOutcome {
        match self {
            Refusal::Auth(_) => EventOutcome::Unauthorized,
            Refusal::NotPermitted { .. } => EventOutcome::NotPermitted,
            Refusal::Sns(e) if e.is_authenticity() => EventOutcome::Unauthorized,
            Refusal::Overloaded(_) | Refusal::Unavailable(_) => EventOutcome::Overloaded,
            _ => EventOutcome::Rejected,
        }
    }

    fn into_response(self) -> Response {
        let status = match &self {
            Refusal::Auth(AuthError::Missing) => StatusCode::UNAUTHORIZED,
            Refusal::Auth(AuthError::Invalid) | Refusal::NotPermitted { .. } => StatusCode::FORBIDDEN,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Body | Refusal::SnsType(_) => StatusCode::BAD_REQUEST,
            Refusal::Record(e) if e.is_media_type() => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::NotCloudEvents => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Record(_) => StatusCode::BAD_REQUEST,
            Refusal::Overloaded(_) | Refusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Sns(e) if e.is_authenticity() => StatusCode::FORBIDDEN,
            Refusal::Sns(_) => StatusCode::BAD_REQUEST,
        };
        let mut message = self.to_string();
        // Parser messages can quote the sender's input; keep the answer short.
        if message.len() > 300 {
            let cut = (0..=300).rev().find(|i| message.is_char_boundary(*i)).unwrap_or(0);
            message.truncate(cut);
        }
        let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
        let headers = response.headers_mut();
        match self {
            Refusal::Auth(AuthError::Missing) => {
                // SNS sends the Basic credentials of its subscription URL only when challenged.
                headers.append(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"zeroflow\""));
                headers.append(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"zeroflow\""));
            }
            Refusal::Overloaded(o) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(o.retry_after_secs));
            }
            Refusal::Unavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(CERTIFICATE_RETRY_AFTER_SECONDS));
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
    /// (pipeline, event) pairs outside the namespace of the sender token presented: not
    /// admitted (the pipeline's resync finds the object), counted.
    not_permitted: u64,
    /// Neither content, removal nor metadata: reads, replication status, content not final
    /// yet, directory and bucket operations, test events, removals whose key is unusable.
    ignored: u64,
    /// Metadata-only changes (tags, ACL, retention, legal hold, storage class, restore).
    metadata: u64,
    /// Routed, but not work (a folder placeholder).
    skipped: u64,
    /// SNS confirmations only: `confirmed`, `unconfirmed` (see the log and the operator's
    /// Warning Events) or `unsubscribed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<&'static str>,
}

impl<A: Admission> Gateway<A> {
    async fn handle(&self, source: Source, started: Instant, presented: Presented, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let response = match self.accept(source, presented, &parts.headers, body, started).await {
            Ok(summary) => {
                self.metrics.count(source, EventOutcome::Accepted, summary.accepted);
                self.metrics.count(source, EventOutcome::Duplicate, summary.duplicate);
                self.metrics.count(source, EventOutcome::Unrouted, summary.unrouted);
                self.metrics.count(source, EventOutcome::NotPermitted, summary.not_permitted);
                self.metrics.count(source, EventOutcome::Ignored, summary.ignored);
                self.metrics.count(source, EventOutcome::Metadata, summary.metadata);
                self.metrics.count(source, EventOutcome::Skipped, summary.skipped);
                (StatusCode::OK, axum::Json(summary)).into_response()
            }
            Err(refusal) => {
                // Never the path: it may hold the token.
                tracing::debug!(source = source.as_str(), error = %refusal, "notification refused");
                self.metrics.count(source, refusal.outcome(), 1);
                refusal.into_response()
            }
        };
        self.metrics.observe(source, started.elapsed().as_secs_f64());
        response
    }

    /// The operator-wide token reaches every pipeline; a namespace's sender token only that
    /// namespace's.
    fn authenticate(&self, presented: &Presented, headers: &HeaderMap) -> Result<SenderScope, AuthError> {
        if self.token.is_none() {
            return Ok(SenderScope::All);
        }
        let presented = match presented {
            Presented::Header => auth::presented(headers)?,
            Presented::Path(Ok(path_token)) => Cow::Borrowed(path_token.as_bytes()),
            // A path segment that is not even valid percent-encoded text is no token of ours.
            Presented::Path(Err(_)) => return Err(AuthError::Invalid),
        };
        auth::scope_of(self.token.as_ref(), &self.namespace_tokens, &presented)
    }

    async fn accept(
        &self,
        source: Source,
        presented: Presented,
        headers: &HeaderMap,
        body: Body,
        received_at: Instant,
    ) -> Result<Summary, Refusal> {
        let scope = self.authenticate(&presented, headers)?;
        let sns_type =
            headers.get(sns_events::MESSAGE_TYPE_HEADER).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let raw_delivery =
            headers.get(sns_events::RAW_DELIVERY_HEADER).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
        let cloudevents = cloudevents::is_cloudevents_request(headers);
        // SNS posts text/plain; everything else must say it is JSON (CloudEvents are checked by
        // their own rules).
        if sns_type.is_none() && !cloudevents && !cloudevents::has_json_media(headers) {
            return Err(RecordError::MediaType(cloudevents::media_type(headers).unwrap_or_default()).into());
        }
        let body = read_limited(headers, body, self.body_limit).await?;
        let events = match sns_type {
            // With raw message delivery SNS sends the payload itself, unsigned.
            Some(_) if raw_delivery => {
                self.metrics.sns("Notification", SnsOutcome::Raw);
                parse_json(&body)?
            }
            Some(kind) => {
                let kind = MessageType::from_header(&kind).ok_or(Refusal::SnsType(kind))?;
                return self.sns(kind, &body, received_at, &scope).await;
            }
            None if cloudevents => cloudevents::parse_http(headers, &body)?,
            None if source == Source::S3 => parse_json(&body)?,
            None => {
                let value: serde_json::Value = serde_json::from_slice(&body).map_err(RecordError::from)?;
                if !eventbridge::is_envelope(&value) {
                    return Err(Refusal::NotCloudEvents);
                }
                eventbridge::parse_envelope(value)?
            }
        };
        self.admit(events, received_at, &scope)
    }

    /// Content and removals go to admission (a removal withdraws what is pending for its
    /// key); metadata-only and other events are only counted.
    /// A sender limited to one namespace whose events reach none of its pipelines (only other
    /// namespaces' ones)
    /// is refused (403), so a misconfigured sender sees it and a queueing one keeps the events;
    /// when some reach its pipelines, the rest are counted as not permitted.
    fn admit(&self, events: Vec<StorageEvent>, received_at: Instant, scope: &SenderScope) -> Result<Summary, Refusal> {
        let mut summary = Summary::default();
        // The work is kept in place: no second vector per request.
        let mut work = events;
        work.retain(|event| match event.kind {
            EventKind::Created | EventKind::Removed => true,
            EventKind::Metadata(_) => {
                summary.metadata += 1;
                false
            }
            EventKind::Other(_) => {
                summary.ignored += 1;
                false
            }
        });
        if !work.is_empty() {
            let report = self.admission.admit(&work, received_at, scope.namespace())?;
            if let (SenderScope::Namespace(namespace), true) =
                (scope, report.not_permitted > 0 && !report.reached_any())
            {
                return Err(Refusal::NotPermitted { namespace: namespace.clone(), count: report.not_permitted });
            }
            summary.not_permitted = report.not_permitted;
            summary.accepted = report.accepted;
            summary.duplicate = report.duplicate;
            summary.unrouted = report.unrouted;
            summary.skipped = report.skipped;
        }
        Ok(summary)
    }

    /// An SNS delivery: verified first, whatever its type.
    async fn sns(
        &self,
        header: MessageType,
        body: &[u8],
        received_at: Instant,
        scope: &SenderScope,
    ) -> Result<Summary, Refusal> {
        let kind = header.as_str();
        let message = sns_events::parse(body).inspect_err(|_| self.metrics.sns(kind, SnsOutcome::Refused))?;
        message.check_header(header).inspect_err(|_| self.metrics.sns(kind, SnsOutcome::Refused))?;
        match self.sns.verify(&message).await {
            Ok(()) => {}
            Err(SnsFailure::Refused(e)) => {
                tracing::warn!(topic = message.topic_arn, r#type = kind, error = %e, "SNS message refused");
                self.metrics.sns(kind, SnsOutcome::Refused);
                return Err(e.into());
            }
            Err(unavailable @ SnsFailure::CertificateUnavailable { .. }) => {
                self.metrics.sns(kind, SnsOutcome::CertificateUnavailable);
                let what = unavailable.to_string();
                tracing::warn!(topic = message.topic_arn, r#type = kind, "{what}");
                if header == MessageType::SubscriptionConfirmation {
                    self.cannot_confirm(&message, &what);
                }
                return Err(Refusal::Unavailable(what));
            }
        }
        self.metrics.sns(kind, SnsOutcome::Verified);
        match message.kind {
            MessageType::Notification => self.admit(message.storage_events()?, received_at, scope),
            MessageType::SubscriptionConfirmation => {
                Ok(Summary { subscription: Some(self.confirm(&message).await), ..Summary::default() })
            }
            MessageType::UnsubscribeConfirmation => {
                tracing::info!(
                    topic = message.topic_arn,
                    "SNS unsubscribed this endpoint; to subscribe again, create the subscription anew"
                );
                self.metrics.sns_unconfirmed(&message.topic_arn, false);
                Ok(Summary { subscription: Some("unsubscribed"), ..Summary::default() })
            }
        }
    }

    async fn confirm(&self, message: &Message) -> &'static str {
        if !self.sns.settings().confirm {
            self.cannot_confirm(message, "automatic confirmation is off (--sns-confirm-subscriptions=false)");
            return "unconfirmed";
        }
        match self.sns.confirm(message).await {
            Ok(()) => {
                tracing::info!(topic = message.topic_arn, "confirmed the SNS subscription");
                self.metrics.sns("SubscriptionConfirmation", SnsOutcome::Confirmed);
                self.metrics.sns_unconfirmed(&message.topic_arn, false);
                "confirmed"
            }
            Err(why) => {
                self.cannot_confirm(message, &why);
                "unconfirmed"
            }
        }
    }

    /// A subscription that stays pending delivers nothing, and says so nowhere: say it here,
    /// with what to do.
    fn cannot_confirm(&self, message: &Message, why: &str) {
        let note = format!(
            "SNS subscription to {} is not confirmed ({why}); SNS delivers nothing until it is. Confirm it \
             where AWS is reachable: aws sns confirm-subscription --topic-arn {} --token {}",
            message.topic_arn,
            message.topic_arn,
            message.token.as_deref().unwrap_or_default(),
        );
        tracing::warn!(topic = message.topic_arn, "{note}");
        self.metrics.sns("SubscriptionConfirmation", SnsOutcome::Unconfirmed);
        self.metrics.sns_unconfirmed(&message.topic_arn, true);
        let mut short = note;
        if short.len() > 1000 {
            let cut = (0..=1000).rev().find(|i| short.is_char_boundary(*i)).unwrap_or(0);
            short.truncate(cut);
        }
        self.notices.warn("SnsSubscriptionUnconfirmed", short);
    }
}

/// Reads the body, refusing it as soon as it is known to exceed `limit` (by its declared length
/// before reading anything, or while streaming when there is none). A body that arrives in one
/// chunk, as small ones do, is kept as it came, without a copy.
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Refusal> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Refusal::TooLarge(limit));
    }
    // The first chunk, until a second one arrives; then everything, joined.
    let mut first = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| Refusal::Body)?;
        let read = joined.as_ref().map_or(first.len(), Vec::len);
        if read + chunk.len() > limit {
            return Err(Refusal::TooLarge(limit));
        }
        match &mut joined {
            Some(out) => out.extend_from_slice(&chunk),
            None if first.is_empty() => first = chunk,
            None => {
                let mut out = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize).max(read + chunk.len()));
                out.extend_from_slice(&first);
                out.extend_from_slice(&chunk);
                joined = Some(out);
            }
        }
    }
    Ok(joined.map_or(first, Bytes::from))
}
