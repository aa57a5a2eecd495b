//! A small client for the testbed's SQS (ElasticMQ, `e2e/testbed up --with sqs`), speaking the
//! JSON protocol that AWS SDKs use today: `POST /` with `Content-Type: application/x-amz-json-1.0`
//! and `X-Amz-Target: AmazonSQS.<Action>`, request and response bodies as in the SQS API
//! reference (<https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/>).
//!
//! Requests are not signed: ElasticMQ checks no signature, so this proves the protocol and the
//! queue semantics, not SigV4.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::{http, service_env};

/// The testbed's SQS endpoint.
pub struct Sqs {
    /// `http://127.0.0.1:<port>`, from `ZF_SQS_ENDPOINT`.
    pub endpoint: String,
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Message {
    /// SQS's id of the message, the same on every delivery.
    pub message_id: String,
    /// Needed to delete the message or change its visibility; new on every receive.
    pub receipt_handle: String,
    /// The message body as sent.
    pub body: String,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    pub receive_count: u32,
}

impl Sqs {
    /// The endpoint `e2e/testbed env` exports.
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self { endpoint: service_env("sqs", "ZF_SQS_ENDPOINT")? })
    }

    /// Calls `action` with a JSON `body`; an error carries the HTTP status and the SQS error
    /// type (`__type`, e.g. `com.amazonaws.sqs#QueueDoesNotExist`).
    pub async fn call(&self, action: &str, body: Value) -> anyhow::Result<Value> {
        let target = format!("AmazonSQS.{action}");
        let headers = [("Content-Type", "application/x-amz-json-1.0"), ("X-Amz-Target", target.as_str())];
        let (status, response) =
            http("POST", &format!("{}/", self.endpoint), &headers, body.to_string().as_bytes()).await?;
        let response: Value = if response.is_empty() { json!({}) } else { serde_json::from_slice(&response)? };
        if status != 200 {
            bail!(
                "{action}: HTTP {status} {} {}",
                response["__type"],
                response["message"].as_str().or(response["Message"].as_str()).unwrap_or("")
            );
        }
        Ok(response)
    }

    /// Creates a queue with SQS attributes (e.g. `{"VisibilityTimeout": "2"}`; values are
    /// strings); returns its URL.
    pub async fn create_queue(&self, name: &str, attributes: Value) -> anyhow::Result<String> {
        let created = self.call("CreateQueue", json!({"QueueName": name, "Attributes": attributes})).await?;
        Ok(created["QueueUrl"].as_str().context("CreateQueue without QueueUrl")?.to_owned())
    }

    /// The queue's ARN (`arn:aws:sqs:<region>:<account>:<name>`), as a redrive policy names it.
    pub async fn queue_arn(&self, queue_url: &str) -> anyhow::Result<String> {
        let attributes =
            self.call("GetQueueAttributes", json!({"QueueUrl": queue_url, "AttributeNames": ["QueueArn"]})).await?;
        Ok(attributes["Attributes"]["QueueArn"].as_str().context("no QueueArn")?.to_owned())
    }

    /// Sends `body`; returns the message id.
    pub async fn send(&self, queue_url: &str, body: &str) -> anyhow::Result<String> {
        let sent = self.call("SendMessage", json!({"QueueUrl": queue_url, "MessageBody": body})).await?;
        Ok(sent["MessageId"].as_str().context("SendMessage without MessageId")?.to_owned())
    }

    /// Receives up to `max` messages, long-polling up to `wait_seconds` (0: return at once).
    pub async fn receive(&self, queue_url: &str, max: u32, wait_seconds: u32) -> anyhow::Result<Vec<Message>> {
        let received = self
            .call(
                "ReceiveMessage",
                json!({"QueueUrl": queue_url, "MaxNumberOfMessages": max, "WaitTimeSeconds": wait_seconds,
                       "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
                       "AttributeNames": ["ApproximateReceiveCount"]}),
            )
            .await?;
        let Some(messages) = received["Messages"].as_array() else { return Ok(Vec::new()) };
        messages
            .iter()
            .map(|m| {
                let field =
                    |name: &str| m[name].as_str().map(str::to_owned).with_context(|| format!("message without {name}"));
                Ok(Message {
                    message_id: field("MessageId")?,
                    receipt_handle: field("ReceiptHandle")?,
                    body: field("Body")?,
                    receive_count: m["Attributes"]["ApproximateReceiveCount"]
                        .as_str()
                        .and_then(|c| c.parse().ok())
                        .context("message without ApproximateReceiveCount")?,
                })
            })
            .collect()
    }

    /// Deletes a received message by its receipt handle.
    pub async fn delete(&self, queue_url: &str, receipt_handle: &str) -> anyhow::Result<()> {
        self.call("DeleteMessage", json!({"QueueUrl": queue_url, "ReceiptHandle": receipt_handle})).await.map(drop)
    }

    /// Makes a received message visible again after `seconds` (0: at once).
    pub async fn change_visibility(&self, queue_url: &str, receipt_handle: &str, seconds: u32) -> anyhow::Result<()> {
        self.call(
            "ChangeMessageVisibility",
            json!({"QueueUrl": queue_url, "ReceiptHandle": receipt_handle, "VisibilityTimeout": seconds}),
        )
        .await
        .map(drop)
    }
}
