//! The few SQS calls the consumer makes, in the JSON protocol current AWS SDKs speak: `POST /`
//! with `Content-Type: application/x-amz-json-1.0` and `X-Amz-Target: AmazonSQS.<Action>`,
//! bodies as in the SQS API reference
//! (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/>), signed with SigV4.
//!
//! Why not the AWS SDK for Rust: three calls do not justify its build (aws-sdk-sqs with
//! aws-config and the smithy runtime, a second HTTP stack next to reqwest). The signature is
//! object_store's public [`AwsAuthorizer`] (already built for the stores), the transport the
//! reqwest client object_store already brings, and the credentials an object_store
//! [`AwsCredentialProvider`], the same interface the store layer's credential chain provides.

use std::time::Duration;

use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::HttpRequestBody;
use reqwest::Url;
use serde::Deserialize;
use serde_json::{Value, json};
use thiserror::Error;

/// A failed SQS call: transport, signing, or an error answer from SQS.
#[derive(Debug, Error)]
pub enum SqsError {
    #[error("{action}: {source}")]
    Transport { action: &'static str, source: reqwest::Error },
    #[error("{action}: credentials: {message}")]
    Credentials { action: &'static str, message: String },
    /// SQS answered with an error: its HTTP status and `__type` (e.g.
    /// `com.amazonaws.sqs#QueueDoesNotExist`).
    #[error("{action}: HTTP {status} {kind}: {message}")]
    Answer { action: &'static str, status: u16, kind: String, message: String },
    #[error("{action}: unexpected answer: {message}")]
    Shape { action: &'static str, message: String },
}

impl SqsError {
    /// SQS's error type (`__type`) when it answered with one, else empty.
    pub fn error_type(&self) -> &str {
        match self {
            SqsError::Answer { kind, .. } => kind,
            _ => "",
        }
    }

    /// A CamelCase reason for status (see `QueueStatus::reason`), by SQS's error types
    /// (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/CommonErrors.html>
    /// and each action's errors).
    pub fn reason(&self) -> &'static str {
        match self {
            SqsError::Transport { .. } | SqsError::Shape { .. } => "Unreachable",
            SqsError::Credentials { .. } => "IdentityFailed",
            SqsError::Answer { status, kind, .. } => {
                let is = |names: &[&str]| names.iter().any(|n| kind.ends_with(n));
                if is(&["QueueDoesNotExist", "NonExistentQueue"]) {
                    "QueueNotFound"
                } else if *status == 403
                    || is(&[
                        "AccessDenied",
                        "AccessDeniedException",
                        "InvalidClientTokenId",
                        "UnrecognizedClientException",
                        "SignatureDoesNotMatch",
                        "IncompleteSignature",
                        "MissingAuthenticationToken",
                        "ExpiredToken",
                        "InvalidSecurity",
                        "KMSAccessDenied",
                    ])
                {
                    "AccessDenied"
                } else {
                    "QueueError"
                }
            }
        }
    }
}

/// One queue, addressed by its URL (`https://sqs.<region>.amazonaws.com/<account>/<name>`, or
/// any SQS-compatible endpoint's URL).
pub struct SqsQueue {
    http: reqwest::Client,
    endpoint: Url,
    queue_url: String,
    region: String,
    credentials: AwsCredentialProvider,
}

/// One received message.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    #[serde(rename = "MessageId")]
    pub message_id: String,
    /// Needed to delete the message; new on every receive.
    #[serde(rename = "ReceiptHandle")]
    pub receipt_handle: String,
    #[serde(rename = "Body")]
    pub body: String,
    /// System attributes asked for: `SentTimestamp` (Unix milliseconds) and
    /// `ApproximateReceiveCount`, as strings.
    #[serde(rename = "Attributes", default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

impl Message {
    /// When SQS accepted the message, in Unix milliseconds.
    pub fn sent_at_millis(&self) -> Option<u64> {
        self.attributes.get("SentTimestamp").and_then(|s| s.parse().ok())
    }

    /// 1 on the first delivery.
    pub fn receive_count(&self) -> Option<u32> {
        self.attributes.get("ApproximateReceiveCount").and_then(|s| s.parse().ok())
    }
}

#[derive(Deserialize)]
struct Received {
    #[serde(rename = "Messages", default)]
    messages: Vec<Message>,
}

#[derive(Deserialize)]
struct DeleteResult {
    #[serde(rename = "Failed", default)]
    failed: Vec<Value>,
}

impl SqsQueue {
    /// A queue at `queue_url`; SQS's endpoint is the URL's origin.
    pub fn new(
        http: reqwest::Client,
        queue_url: &str,
        region: &str,
        credentials: AwsCredentialProvider,
    ) -> Result<Self, String> {
        let mut endpoint = Url::parse(queue_url).map_err(|e| format!("queue URL {queue_url:?}: {e}"))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host().is_none() {
            return Err(format!("queue URL {queue_url:?}: not an http(s) URL"));
        }
        endpoint.set_path("/");
        endpoint.set_query(None);
        Ok(Self { http, endpoint, queue_url: queue_url.to_owned(), region: region.to_owned(), credentials })
    }

    /// Sends requests to `endpoint` (a VPC or FIPS endpoint, an SQS-compatible service)
    /// instead of the queue URL's origin; the queue is still named by its URL.
    pub fn with_endpoint(mut self, endpoint: &str) -> Result<Self, String> {
        let url = Url::parse(endpoint).map_err(|e| format!("endpoint {endpoint:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!("endpoint {endpoint:?}: not an http(s) URL"));
        }
        self.endpoint = url;
        self.endpoint.set_path("/");
        self.endpoint.set_query(None);
        Ok(self)
    }

    pub fn url(&self) -> &str {
        &self.queue_url
    }

    /// Long-polls for up to `max` (1 to 10) messages, waiting up to `wait_seconds` (0 to 20).
    pub async fn receive(&self, max: u32, wait_seconds: u32) -> Result<Vec<Message>, SqsError> {
        let attributes = ["SentTimestamp", "ApproximateReceiveCount"];
        let body = json!({"QueueUrl": self.queue_url, "MaxNumberOfMessages": max, "WaitTimeSeconds": wait_seconds,
                          "MessageSystemAttributeNames": attributes, "AttributeNames": attributes});
        let timeout = Duration::from_secs(u64::from(wait_seconds) + 10);
        let answer = self.call("ReceiveMessage", body, timeout).await?;
        let received: Received = serde_json::from_value(answer)
            .map_err(|e| SqsError::Shape { action: "ReceiveMessage", message: e.to_string() })?;
        Ok(received.messages)
    }

    /// Deletes up to 10 messages by receipt handle; returns how many SQS did not delete (they
    /// reappear after their visibility timeout, and their events are admitted again as
    /// duplicates).
    pub async fn delete(&self, receipt_handles: &[&str]) -> Result<usize, SqsError> {
        let entries: Vec<_> = receipt_handles
            .iter()
            .enumerate()
            .map(|(i, handle)| json!({"Id": i.to_string(), "ReceiptHandle": handle}))
            .collect();
        let body = json!({"QueueUrl": self.queue_url, "Entries": entries});
        let answer = self.call("DeleteMessageBatch", body, Duration::from_secs(10)).await?;
        let result: DeleteResult = serde_json::from_value(answer)
            .map_err(|e| SqsError::Shape { action: "DeleteMessageBatch", message: e.to_string() })?;
        Ok(result.failed.len())
    }

    async fn call(&self, action: &'static str, body: Value, timeout: Duration) -> Result<Value, SqsError> {
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| SqsError::Credentials { action, message: e.to_string() })?;
        let body = body.to_string();
        let target = format!("AmazonSQS.{action}");
        let mut request = axum::http::Request::builder()
            .method("POST")
            .uri(self.endpoint.as_str())
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", &target)
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| SqsError::Shape { action, message: e.to_string() })?;
        AwsAuthorizer::new(&credential, "sqs", &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| SqsError::Credentials { action, message: e.to_string() })?;
        let response = self
            .http
            .post(self.endpoint.clone())
            .headers(request.headers().clone())
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|source| SqsError::Transport { action, source })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|source| SqsError::Transport { action, source })?;
        if status != 200 {
            return Err(error_answer(action, status, &bytes));
        }
        if bytes.is_empty() {
            return Ok(json!({}));
        }
        serde_json::from_slice(&bytes).map_err(|e| SqsError::Shape { action, message: e.to_string() })
    }
}

/// An error answer: JSON (`__type`, `message`) as SQS's JSON protocol sends it, or XML
/// (`<Code>`, `<Message>`) as IAM and STS errors in front of it may come; anything else keeps
/// only the status.
fn error_answer(action: &'static str, status: u16, body: &[u8]) -> SqsError {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    if let Ok(answer) = serde_json::from_slice::<Value>(body) {
        let message = if answer["message"].is_string() { &answer["message"] } else { &answer["Message"] };
        return SqsError::Answer { action, status, kind: text(&answer["__type"]), message: text(message) };
    }
    let body = String::from_utf8_lossy(body);
    let element = |tag: &str| {
        let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
        let end = body[start..].find(&format!("</{tag}>"))? + start;
        Some(body[start..end].trim().to_owned())
    };
    SqsError::Answer {
        action,
        status,
        kind: element("Code").unwrap_or_default(),
        message: element("Message").unwrap_or_default(),
    }
}

impl SqsQueue {
    #[cfg(test)]
    fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, kind: &str) -> SqsError {
        SqsError::Answer { action: "ReceiveMessage", status, kind: kind.into(), message: String::new() }
    }

    #[test]
    fn errors_have_the_documented_reasons() {
        assert_eq!(answer(400, "com.amazonaws.sqs#QueueDoesNotExist").reason(), "QueueNotFound");
        assert_eq!(answer(400, "AWS.SimpleQueueService.NonExistentQueue").reason(), "QueueNotFound");
        assert_eq!(answer(403, "").reason(), "AccessDenied");
        assert_eq!(answer(400, "com.amazon.coral.service#AccessDeniedException").reason(), "AccessDenied");
        assert_eq!(answer(400, "com.amazon.coral.service#InvalidClientTokenId").reason(), "AccessDenied");
        assert_eq!(answer(400, "com.amazonaws.sqs#InvalidAttributeName").reason(), "QueueError");
        let shape = SqsError::Shape { action: "ReceiveMessage", message: "x".into() };
        assert_eq!(shape.reason(), "Unreachable");
    }

    #[test]
    fn error_answers_keep_their_status_and_type_in_json_or_xml() {
        let json = error_answer(
            "ReceiveMessage",
            400,
            br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"gone"}"#,
        );
        assert_eq!(json.reason(), "QueueNotFound");
        let xml = error_answer(
            "DeleteMessageBatch",
            403,
            b"<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>no</Message></Error></Errors></ErrorResponse>",
        );
        assert_eq!((xml.reason(), xml.error_type()), ("AccessDenied", "AccessDenied"));
        let html = error_answer("ReceiveMessage", 502, b"<html>bad gateway</html>");
        assert_eq!((html.reason(), html.error_type()), ("QueueError", ""));
    }

    #[test]
    fn an_endpoint_replaces_the_origin_but_not_the_queue_url() {
        let url = "https://sqs.eu-west-1.amazonaws.com/123456789012/q";
        let credentials: AwsCredentialProvider =
            std::sync::Arc::new(object_store::StaticCredentialProvider::new(object_store::aws::AwsCredential {
                key_id: "a".into(),
                secret_key: "b".into(),
                token: None,
            }));
        let queue = SqsQueue::new(reqwest::Client::new(), url, "eu-west-1", credentials).expect("queue");
        assert_eq!(queue.endpoint(), "https://sqs.eu-west-1.amazonaws.com/");
        let queue = queue.with_endpoint("http://127.0.0.1:9324/x?y").expect("endpoint");
        assert_eq!((queue.endpoint(), queue.url()), ("http://127.0.0.1:9324/", url));
        assert!(queue.with_endpoint("ftp://h").is_err());
    }
}
