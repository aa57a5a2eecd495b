//! Kubernetes Events (`events.k8s.io/v1`), published through kube-runtime's [`Recorder`], whose
//! repeat cache is emptied every [`RENEWAL`].
//!
//! The `Recorder` keeps every Event it publishes, whole, to turn a repeat within 6 minutes into
//! a PATCH of the first one's `series` instead of a new Event. It drops old entries only when it
//! publishes again, and its map never gives back the room it grew to. With 1,000 pipelines that
//! is 2,000 Events kept (each new pipeline publishes two) for as long as nothing else is
//! published: about 6 MB of a quiet operator's heap (`e2e/README.md`, "Operator memory"). So the
//! recorder is replaced by a new, empty one every [`RENEWAL`]; what it costs is that an Event
//! repeated across a renewal starts a new Event object instead of counting on in the old one.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};

/// How long a recorder is used: kube-runtime's own repeat window (6 minutes), so within it
/// repeats count as one Event as they would without renewals.
pub const RENEWAL: Duration = Duration::from_secs(6 * 60);

/// Publishes Events for every part of the operator. Cheap to clone; clones share one recorder.
#[derive(Clone)]
pub struct EventRecorder {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    reporter: Reporter,
    current: Mutex<Recorder>,
}

impl EventRecorder {
    /// A recorder reporting as `reporter` (`reportingController` / `reportingInstance`).
    pub fn new(client: Client, reporter: Reporter) -> Self {
        let current = Mutex::new(Recorder::new(client.clone(), reporter.clone()));
        Self { inner: Arc::new(Inner { client, reporter, current }) }
    }

    /// Publishes `event` about `reference` (created in its namespace).
    ///
    /// # Errors
    /// The apiserver's refusal (for example no RBAC `create`/`patch` on `events.k8s.io` events).
    pub async fn publish(&self, event: &Event, reference: &ObjectReference) -> Result<(), kube::Error> {
        // A clone shares the recorder's cache; the lock is not held while publishing.
        let recorder = self.inner.current.lock().unwrap_or_else(PoisonError::into_inner).clone();
        recorder.publish(event, reference).await
    }

    /// Starts over with an empty repeat cache. The old cache is freed once publishes in flight
    /// with it end.
    pub fn renew(&self) {
        let fresh = Recorder::new(self.inner.client.clone(), self.inner.reporter.clone());
        *self.inner.current.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
    }

    /// Renews the recorder every [`RENEWAL`], for as long as the task runs.
    pub async fn renew_periodically(self) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RENEWAL, RENEWAL);
        loop {
            tick.tick().await;
            self.renew();
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;
    use kube::runtime::events::EventType;
    use serde_json::json;

    use super::*;
    use crate::fixtures;

    const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/finance/events";

    fn event() -> Event {
        Event {
            type_: EventType::Normal,
            reason: "WorkersCreated".into(),
            note: Some("created".into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    fn pipeline() -> ObjectReference {
        ObjectReference {
            api_version: Some("zeroflow.dev/v1alpha1".into()),
            kind: Some("DataPipeline".into()),
            namespace: Some("finance".into()),
            name: Some("invoices".into()),
            ..ObjectReference::default()
        }
    }

    /// A repeat counts on in the first Event (a PATCH of its series) until the recorder is
    /// renewed; after that the same Event is created anew, so nothing of the old cache is used.
    #[tokio::test]
    async fn a_renewed_recorder_forgets_what_it_published() {
        let (client, mut api) = fixtures::client();
        let recorder = EventRecorder::new(client, Reporter { controller: "zeroflow-test".into(), instance: None });
        let publishes = tokio::spawn({
            let recorder = recorder.clone();
            async move {
                recorder.publish(&event(), &pipeline()).await.expect("created");
                recorder.publish(&event(), &pipeline()).await.expect("patched");
                recorder.renew();
                recorder.publish(&event(), &pipeline()).await.expect("created again");
            }
        });
        let created = api.expect(Method::POST, EVENTS).await;
        let name = created.body["metadata"]["name"].as_str().expect("a name").to_owned();
        created.echo();
        let patched = api.expect(Method::PATCH, &format!("{EVENTS}/{name}")).await;
        assert_eq!(patched.body["series"]["count"], json!(2), "a repeat counts on");
        patched.echo();
        let again = api.expect(Method::POST, EVENTS).await;
        assert!(again.body.get("series").is_none_or(serde_json::Value::is_null), "a new Event, not a repeat");
        again.echo();
        publishes.await.expect("publishes");
    }
}
