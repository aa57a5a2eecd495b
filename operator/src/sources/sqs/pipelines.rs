//! SQS queues named by pipelines (`spec.source.events.sqs`): the leader runs one consumer per
//! distinct queue, started and stopped as pipelines come, change and go, and shows each
//! pipeline whether its queue is consumed (`status.queue`).
//!
//! - Pipelines of one namespace that name the same queue with the same settings share one
//!   consumer. A consumer admits only into its namespace's pipelines (routed by bucket and key,
//!   like every notification), so a team's queue cannot feed another team's pipelines.
//! - A queue is consumed for one namespace at a time: the first namespace to name it keeps it
//!   until none of its pipelines names it any more; pipelines of other namespaces that name it
//!   are shown `QueueClaimed`. (Two namespaces' consumers on one queue would each receive a
//!   share of the messages and admit it only into their own namespace: the other's objects
//!   would be lost to events and left to resync.)
//! - Every guarantee of the operator-level consumer holds ([`super::SqsConsumer`]): long polls,
//!   deletion after admission, poison and test events deleted, messages held by a consumer that
//!   stops (a leader change, a pipeline edited) return after the queue's visibility timeout.
//!
//! [`plan`] is the pure decision; [`QueueRegistry`] is the task that applies it. The controller
//! tells the registry what each pipeline wants ([`QueueRegistry::want`]), the controller's
//! pruning which pipelines still exist ([`QueueRegistry::retain`]), and the consumers how their
//! polls go; the registry alone starts and stops consumers and writes `status.queue`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::StaticCredentialProvider;
use object_store::aws::{AwsCredential, AwsCredentialProvider};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};
use zeroflow_core::PipelineKey;

use super::client::SqsQueue;
use super::{PollState, SqsConsumer};
use crate::api::QueueStatus;
use crate::gateway::metrics::GatewayMetrics;
use crate::health::Readiness;
use crate::runtime::Pipelines;
use crate::sources::metrics::SourceMetrics;
use crate::status_writer::{Concern, StatusWriter};

/// The region of an AWS queue URL's host when it names none: SQS's own default.
const DEFAULT_REGION: &str = "us-east-1";

/// One queue as a pipeline of `namespace` names it, with its credentials resolved. Pipelines
/// whose wants are equal share a consumer; any difference (a rotated Secret included) is
/// another consumer.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueWant {
    pub namespace: String,
    pub queue_url: String,
    /// Where requests go instead of the queue URL's origin.
    pub endpoint: Option<String>,
    pub region: String,
    pub credentials: QueueCredentials,
}

/// The credentials a queue is read with.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum QueueCredentials {
    /// From the pipeline's Secret.
    Keys { access_key_id: String, secret_access_key: String, session_token: Option<String> },
    /// The operator's own AWS identity (the standard chain).
    Identity,
}

// Hand-written so that `{:?}` in a log line can never print a secret.
impl fmt::Debug for QueueCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueueCredentials::Keys { .. } => "Keys(redacted)",
            QueueCredentials::Identity => "Identity",
        })
    }
}

impl fmt::Debug for QueueWant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = &self.credentials;
        f.debug_struct("QueueWant")
            .field("namespace", &self.namespace)
            .field("queue_url", &self.queue_url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &credentials)
            .finish()
    }
}

/// Why a pipeline's queue cannot even be tried (found before any request to SQS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueProblem {
    pub queue_url: String,
    /// CamelCase, as in `QueueStatus::reason`.
    pub reason: &'static str,
    pub message: String,
}

/// What a pipeline asks for.
pub type Wanted = Result<QueueWant, QueueProblem>;

/// The region of `queue_url` when it is AWS's (`https://sqs.<region>.amazonaws.com/...`, also
/// `.amazonaws.com.cn`), else `us-east-1`.
pub fn region_of(queue_url: &str) -> String {
    let host = queue_url.split_once("://").map_or("", |(_, rest)| rest.split(['/', ':']).next().unwrap_or(""));
    let mut labels = host.split('.');
    match (labels.next(), labels.next(), labels.next()) {
        (Some("sqs"), Some(region), Some("amazonaws")) if !region.is_empty() => region.to_owned(),
        _ => DEFAULT_REGION.to_owned(),
    }
}

/// Consumers to run, each with the pipelines it serves, and the pipelines refused a queue.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub consumers: BTreeMap<QueueWant, BTreeSet<PipelineKey>>,
    /// Pipelines whose queue is consumed for another namespace: (queue URL, that namespace).
    pub claimed: BTreeMap<PipelineKey, (String, String)>,
}

/// Decides the consumers from every pipeline's want. `claims` (queue URL -> namespace) carries
/// which namespace holds each queue from one plan to the next: a claim is released when no
/// pipeline of its namespace names the queue any more, and a queue is claimed by the first
/// namespace that names it while it is free (in pipeline order within one plan).
pub fn plan(wants: &BTreeMap<PipelineKey, Wanted>, claims: &mut BTreeMap<String, String>) -> Plan {
    let named: BTreeSet<(&str, &str)> =
        wants.values().filter_map(|w| w.as_ref().ok()).map(|w| (w.queue_url.as_str(), w.namespace.as_str())).collect();
    claims.retain(|url, namespace| named.contains(&(url.as_str(), namespace.as_str())));
    let mut plan = Plan::default();
    for (key, want) in wants {
        let Ok(want) = want else { continue };
        let holder = claims.entry(want.queue_url.clone()).or_insert_with(|| want.namespace.clone());
        if *holder == want.namespace {
            plan.consumers.entry(want.clone()).or_default().insert(key.clone());
        } else {
            plan.claimed.insert(key.clone(), (want.queue_url.clone(), holder.clone()));
        }
    }
    plan
}

/// `status.queue` for a consumer's state.
pub fn status_of(queue_url: &str, state: Option<&PollState>) -> QueueStatus {
    let (consuming, reason, message) = match state {
        None => (false, "Starting", "waiting for the first answer from SQS".to_owned()),
        Some(PollState::Consuming) => (true, "Consuming", "long-polling the queue".to_owned()),
        Some(PollState::Failing { reason, error_type }) => {
            let why = match *reason {
                "QueueNotFound" => "SQS says the queue does not exist",
                "AccessDenied" => {
                    "SQS refused the request: check the credentials and that they allow sqs:ReceiveMessage and sqs:DeleteMessage on the queue"
                }
                "IdentityFailed" => {
                    "the operator's own AWS identity could not provide credentials; details in the operator log"
                }
                "Unreachable" => "SQS did not answer (or not as SQS); details in the operator log",
                _ => "SQS answered with an error; details in the operator log",
            };
            let message =
                if error_type.is_empty() { why.to_owned() } else { format!("{why} (SQS error type {error_type})") };
            (false, *reason, message)
        }
    };
    QueueStatus { queue_url: queue_url.to_owned(), consuming, reason: reason.to_owned(), message }
}

/// What every consumer the registry starts is made of.
pub struct ConsumerParts {
    pub pipelines: Arc<Pipelines>,
    pub status: StatusWriter,
    pub events: GatewayMetrics,
    pub metrics: SourceMetrics,
    pub readiness: Arc<Readiness>,
    /// The operator's own AWS identity, for queues named without a Secret.
    pub identity: Option<AwsCredentialProvider>,
    /// ReceiveMessage's `WaitTimeSeconds` (1 to 20).
    pub wait_seconds: u32,
}

enum Command {
    Want(PipelineKey, Option<Wanted>),
    Retain(Option<String>, BTreeSet<PipelineKey>),
    State(QueueWant, PollState),
}

/// Hands the registry task what pipelines want; cheap to clone.
#[derive(Clone)]
pub struct QueueRegistry {
    tx: mpsc::UnboundedSender<Command>,
}

impl QueueRegistry {
    /// Starts the registry task. Its consumers stop when the task is aborted (this replica
    /// stops leading) or every handle is dropped.
    pub fn spawn(parts: ConsumerParts) -> Result<(Self, JoinHandle<()>), String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("SQS HTTP client: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let registry = Registry {
            parts,
            http,
            tx: tx.downgrade(),
            wants: BTreeMap::new(),
            claims: BTreeMap::new(),
            running: BTreeMap::new(),
        };
        Ok((Self { tx }, tokio::spawn(registry.run(rx))))
    }

    /// A registry that does nothing (for tests of other parts).
    pub fn disabled() -> Self {
        let (tx, _) = mpsc::unbounded_channel();
        Self { tx }
    }

    /// What `pipeline` wants now: a queue, a problem with it, or none (`None`).
    pub fn want(&self, pipeline: &PipelineKey, wanted: Option<Wanted>) {
        // A closed channel only means the process is stopping, or the registry is disabled.
        let _ = self.tx.send(Command::Want(pipeline.clone(), wanted));
    }

    /// Forgets the pipelines of `namespace` (every namespace with `None`) not in `alive`.
    pub fn retain(&self, namespace: Option<&str>, alive: &BTreeSet<PipelineKey>) {
        let _ = self.tx.send(Command::Retain(namespace.map(str::to_owned), alive.clone()));
    }
}

/// A running consumer; aborted when dropped.
struct Running {
    task: JoinHandle<()>,
    state: Option<PollState>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Registry {
    parts: ConsumerParts,
    http: reqwest::Client,
    /// For consumers' reports; weak, so the registry ends when every handle is gone.
    tx: mpsc::WeakUnboundedSender<Command>,
    wants: BTreeMap<PipelineKey, Wanted>,
    claims: BTreeMap<String, String>,
    running: BTreeMap<QueueWant, Running>,
}

impl Registry {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(command) = rx.recv().await {
            let mut forgotten = Vec::new();
            match command {
                Command::Want(key, Some(wanted)) => {
                    self.wants.insert(key, wanted);
                }
                Command::Want(key, None) => {
                    if self.wants.remove(&key).is_some() {
                        forgotten.push(key);
                    }
                }
                Command::Retain(namespace, alive) => {
                    self.wants.retain(|key, _| {
                        namespace.as_ref().is_some_and(|ns| *ns != key.namespace) || alive.contains(key)
                    });
                }
                Command::State(want, state) => {
                    if let Some(running) = self.running.get_mut(&want) {
                        running.state = Some(state);
                    }
                }
            }
            self.apply(&forgotten);
        }
    }

    /// Starts and stops consumers to match the plan, and shows every pipeline its queue.
    fn apply(&mut self, forgotten: &[PipelineKey]) {
        let plan = plan(&self.wants, &mut self.claims);
        self.running.retain(|want, _| {
            let keep = plan.consumers.contains_key(want);
            if !keep {
                info!(
                    queue = want.queue_url,
                    namespace = want.namespace,
                    "no pipeline names the queue: stopping its consumer"
                );
            }
            keep
        });
        for want in plan.consumers.keys() {
            if !self.running.contains_key(want) {
                match self.start(want) {
                    Ok(running) => {
                        self.running.insert(want.clone(), running);
                    }
                    Err(e) => warn!(queue = want.queue_url, error = e, "cannot start the SQS consumer"),
                }
            }
        }
        for (key, wanted) in &self.wants {
            let status = match wanted {
                Err(problem) => QueueStatus {
                    queue_url: problem.queue_url.clone(),
                    consuming: false,
                    reason: problem.reason.to_owned(),
                    message: problem.message.clone(),
                },
                Ok(want) => match plan.claimed.get(key) {
                    Some((url, holder)) => QueueStatus {
                        queue_url: url.clone(),
                        consuming: false,
                        reason: "QueueClaimed".into(),
                        message: format!(
                            "the queue is consumed for namespace {holder:?}: a queue feeds the pipelines of one namespace"
                        ),
                    },
                    None => match self.running.get(want) {
                        Some(running) => status_of(&want.queue_url, running.state.as_ref()),
                        None => QueueStatus {
                            queue_url: want.queue_url.clone(),
                            consuming: false,
                            reason: "InvalidQueue".into(),
                            message: "the queue URL or endpoint cannot be used; details in the operator log".into(),
                        },
                    },
                },
            };
            self.parts.status.apply(key, Concern::Queue, json!({"queue": status}));
        }
        for key in forgotten {
            self.parts.status.apply(key, Concern::Queue, json!({"queue": null}));
        }
    }

    fn start(&self, want: &QueueWant) -> Result<Running, String> {
        let credentials: AwsCredentialProvider = match &want.credentials {
            QueueCredentials::Keys { access_key_id, secret_access_key, session_token } => {
                Arc::new(StaticCredentialProvider::new(AwsCredential {
                    key_id: access_key_id.clone(),
                    secret_key: secret_access_key.clone(),
                    token: session_token.clone(),
                }))
            }
            QueueCredentials::Identity => self.parts.identity.clone().ok_or("the operator has no AWS identity")?,
        };
        let mut queue = SqsQueue::new(self.http.clone(), &want.queue_url, &want.region, credentials)?;
        if let Some(endpoint) = &want.endpoint {
            queue = queue.with_endpoint(endpoint)?;
        }
        let tx = self.tx.clone();
        let reported = want.clone();
        let consumer = SqsConsumer {
            queue,
            admission: self.parts.pipelines.clone(),
            events: self.parts.events.clone(),
            metrics: self.parts.metrics.clone(),
            wait_seconds: self.parts.wait_seconds,
            namespace: Some(want.namespace.clone()),
            on_state: Some(Box::new(move |state| {
                if let Some(tx) = tx.upgrade() {
                    let _ = tx.send(Command::State(reported.clone(), state));
                }
            })),
        };
        let readiness = self.parts.readiness.clone();
        let task = tokio::spawn(async move {
            // Pipelines must be known before their events are admitted.
            while readiness.blocker().is_some() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            consumer.run().await;
        });
        Ok(Running { task, state: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, name: &str) -> PipelineKey {
        PipelineKey::new(namespace, name)
    }

    fn want(namespace: &str, url: &str) -> QueueWant {
        QueueWant {
            namespace: namespace.into(),
            queue_url: url.into(),
            endpoint: None,
            region: "eu-west-1".into(),
            credentials: QueueCredentials::Identity,
        }
    }

    #[test]
    fn regions_come_from_aws_queue_urls() {
        assert_eq!(region_of("https://sqs.eu-west-1.amazonaws.com/123456789012/q"), "eu-west-1");
        assert_eq!(region_of("https://sqs.cn-north-1.amazonaws.com.cn/1/q"), "cn-north-1");
        assert_eq!(region_of("http://127.0.0.1:9324/000000000000/q"), "us-east-1");
        assert_eq!(region_of("https://queue.amazonaws.com/1/q"), "us-east-1");
        assert_eq!(region_of("not a url"), "us-east-1");
    }

    #[test]
    fn pipelines_of_one_namespace_share_a_consumer_and_another_namespace_is_refused() {
        let mut claims = BTreeMap::new();
        let mut wants: BTreeMap<PipelineKey, Wanted> = BTreeMap::new();
        wants.insert(key("b", "p1"), Ok(want("b", "q1")));
        wants.insert(key("b", "p2"), Ok(want("b", "q1")));
        let first = plan(&wants, &mut claims);
        assert_eq!(first.consumers.len(), 1);
        assert_eq!(first.consumers[&want("b", "q1")], [key("b", "p1"), key("b", "p2")].into());
        // Namespace a sorts first, but b holds the queue: a is refused, b keeps consuming.
        wants.insert(key("a", "p"), Ok(want("a", "q1")));
        let second = plan(&wants, &mut claims);
        assert_eq!(second.consumers.len(), 1);
        assert_eq!(second.claimed[&key("a", "p")], ("q1".to_owned(), "b".to_owned()));
        // Once b no longer names it, a gets it.
        wants.remove(&key("b", "p1"));
        wants.insert(
            key("b", "p2"),
            Err(QueueProblem { queue_url: "q1".into(), reason: "SecretNotFound", message: String::new() }),
        );
        let third = plan(&wants, &mut claims);
        assert_eq!(third.consumers.keys().cloned().collect::<Vec<_>>(), vec![want("a", "q1")]);
        assert!(third.claimed.is_empty());
    }

    #[test]
    fn different_settings_for_one_queue_in_one_namespace_are_two_consumers() {
        let mut claims = BTreeMap::new();
        let mut other = want("b", "q1");
        other.credentials =
            QueueCredentials::Keys { access_key_id: "AK".into(), secret_access_key: "SK".into(), session_token: None };
        let wants: BTreeMap<PipelineKey, Wanted> =
            [(key("b", "p1"), Ok(want("b", "q1"))), (key("b", "p2"), Ok(other.clone()))].into();
        let planned = plan(&wants, &mut claims);
        assert_eq!(planned.consumers.len(), 2);
        assert!(!format!("{other:?}").contains("SK"), "keys never reach logs");
    }

    #[test]
    fn status_says_why_a_queue_is_not_consumed() {
        assert_eq!(status_of("q", None).reason, "Starting");
        let consuming = status_of("q", Some(&PollState::Consuming));
        assert!(consuming.consuming);
        let missing = status_of(
            "q",
            Some(&PollState::Failing {
                reason: "QueueNotFound",
                error_type: "com.amazonaws.sqs#QueueDoesNotExist".into(),
            }),
        );
        assert_eq!((missing.consuming, missing.reason.as_str()), (false, "QueueNotFound"));
        assert!(missing.message.contains("QueueDoesNotExist"), "{}", missing.message);
    }
}
