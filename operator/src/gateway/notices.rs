//! What the gateway must tell a person, beyond its log: an SNS subscription it could not
//! confirm stays "PendingConfirmation" and SNS then delivers nothing, silently; a Warning Event
//! on the operator's pod (and the `zeroflow_sns_subscription_unconfirmed` gauge) makes it seen.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use crate::events::EventRecorder;

/// Somewhere to publish warnings that need a person.
pub trait Notice: Send + Sync + 'static {
    /// `reason` is a short CamelCase word (an Event reason); `note` says what happened and what
    /// to do, in at most 1 KiB.
    fn warn(&self, reason: &'static str, note: String);
}

/// The gateway's notices: none (tests, or no Kubernetes), or a [`Notice`].
#[derive(Clone, Default)]
pub struct Notices(Option<Arc<dyn Notice>>);

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Notices(on)" } else { "Notices(off)" })
    }
}

impl Notices {
    pub fn new(notice: impl Notice) -> Self {
        Self(Some(Arc::new(notice)))
    }

    pub fn warn(&self, reason: &'static str, note: String) {
        if let Some(notice) = &self.0 {
            notice.warn(reason, note);
        }
    }
}

/// Warning Events on the operator's own pod (`POD_NAMESPACE`/`POD_NAME`, set by the chart).
/// Publishing needs `create` on `events.k8s.io` events in the operator's namespace: the chart's
/// cluster-wide role has it; with `watchNamespaces` that leave out the operator's namespace the
/// Event is refused and only the log line and the metric remain.
pub struct PodEvents {
    recorder: EventRecorder,
    pod: ObjectReference,
}

impl PodEvents {
    pub fn new(recorder: EventRecorder, namespace: &str, pod_name: &str) -> Self {
        let pod = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(namespace.to_owned()),
            name: Some(pod_name.to_owned()),
            ..ObjectReference::default()
        };
        Self { recorder, pod }
    }
}

impl Notice for PodEvents {
    fn warn(&self, reason: &'static str, note: String) {
        let (recorder, pod) = (self.recorder.clone(), self.pod.clone());
        // Notices come from request handlers; the sender's answer does not wait for the Event.
        tokio::spawn(async move {
            let event = Event {
                type_: EventType::Warning,
                reason: reason.into(),
                note: Some(note),
                action: reason.into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &pod).await {
                tracing::warn!(error = %e, reason, "cannot publish a Warning Event on the operator's pod");
            }
        });
    }
}
