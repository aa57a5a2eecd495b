//! Notification queues the leader consumes, next to the gateway's webhooks: S3 notifications
//! from SQS ([`sqs`]) and MinIO/Ceph notifications from Kafka topics ([`kafka`]). Every consumer feeds `Pipelines::admit` like the gateway, and
//! acknowledges a message only once its events are admitted.
//!
//! Configured per operator (flags, chart values): the queue's messages are routed by bucket and
//! key like the gateway's, so one queue can feed every pipeline on the buckets that notify it,
//! and a queue is never polled twice by one operator. SQS queues can also be named per pipeline
//! (`spec.source.events.sqs`, [`sqs::pipelines`]), and then feed only that namespace. Consumers
//! run on the leader only: started when it leads (after its caches synced, so that pipelines are
//! known) and aborted when it stops.

pub mod kafka;
pub mod message;
pub mod metrics;
pub mod sqs;

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AwsCredentialProvider;
use tokio::task::JoinHandle;

use crate::gateway::metrics::GatewayMetrics;
use crate::health::Readiness;
use crate::runtime::Pipelines;
use kafka::{KafkaConsumer, KafkaSettings};
use metrics::SourceMetrics;
use sqs::SqsConsumer;
use sqs::client::SqsQueue;

/// The SQS queues to consume and how.
pub struct SqsSettings {
    /// Queue URLs (`https://sqs.<region>.amazonaws.com/<account>/<name>`).
    pub queue_urls: Vec<String>,
    /// The region requests are signed for.
    pub region: String,
    /// Long-poll wait of one ReceiveMessage, in seconds (1 to 20).
    pub wait_seconds: u32,
    pub credentials: AwsCredentialProvider,
}

/// Starts one consumer per queue; they wait until `readiness` says the caches are synced.
/// Errors name a queue URL that is not a URL.
pub fn spawn_sqs(
    settings: &SqsSettings,
    pipelines: Arc<Pipelines>,
    events: GatewayMetrics,
    metrics: SourceMetrics,
    readiness: Arc<Readiness>,
) -> Result<Vec<JoinHandle<()>>, String> {
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("SQS HTTP client: {e}"))?;
    let mut tasks = Vec::new();
    for url in &settings.queue_urls {
        let queue = SqsQueue::new(http.clone(), url, &settings.region, settings.credentials.clone())?;
        let consumer = SqsConsumer {
            queue,
            admission: pipelines.clone(),
            events: events.clone(),
            metrics: metrics.clone(),
            wait_seconds: settings.wait_seconds,
            namespace: None,
            on_state: None,
        };
        let readiness = readiness.clone();
        tasks.push(tokio::spawn(async move {
            while readiness.blocker().is_some() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            consumer.run().await;
        }));
    }
    Ok(tasks)
}

/// After a Kafka consumer failed (a bad setting, or a fatal error), wait this long before
/// creating a new one, so that the error is logged every so often rather than continuously.
const KAFKA_RESTART: Duration = Duration::from_secs(10);

/// Starts the Kafka consumer; it waits until `readiness` says the caches are synced. A consumer
/// that cannot start or fails fatally logs why, and a new one is created after `KAFKA_RESTART`.
pub fn spawn_kafka(
    settings: &KafkaSettings,
    pipelines: Arc<Pipelines>,
    events: GatewayMetrics,
    metrics: SourceMetrics,
    readiness: Arc<Readiness>,
) -> JoinHandle<()> {
    let settings = settings.clone();
    tokio::spawn(async move {
        while readiness.blocker().is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        loop {
            let consumer = KafkaConsumer {
                settings: settings.clone(),
                admission: pipelines.clone(),
                events: events.clone(),
                metrics: metrics.clone(),
            };
            if let Err(e) = consumer.run().await {
                tracing::error!(error = e, "the Kafka consumer stopped; starting a new one in 10 s");
            }
            tokio::time::sleep(KAFKA_RESTART).await;
        }
    })
}
