//! Part of the status step: whether the workers that should run can, in the cluster's own words.
//! A scale-to-zero pipeline meets a broken image, a full cluster or an exhausted quota only when
//! its first object arrives, maybe days after its last change; without this it would say
//! "workers starting" forever while its backlog waits (Knative learnt the same:
//! knative/serving#4192, #3593, #13708). Pure: the caller lists the pods.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// Container waiting reasons that mean the container will not start without a change (or a
/// while): the kubelet's own names.
const STUCK: [&str; 8] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "CrashLoopBackOff",
];

/// A pod the scheduler cannot place may be waiting for capacity a cluster autoscaler is adding
/// (knative/serving#11923): it is reported after this long.
pub const UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(20);

/// Why the workers cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trouble {
    /// One CamelCase word: the kubelet's or scheduler's reason, or `QuotaExceeded` /
    /// `FailedCreate` for pods the ReplicaSet could not create.
    pub reason: String,
    /// The cluster's own message, with the pod and container it is about.
    pub message: String,
}

/// The first reason the workers cannot run: a container stuck (image pull, configuration,
/// crash loop), pods that could not be created (quota), or a pod the scheduler could not place
/// for [`UNSCHEDULABLE_GRACE`]. `None` when nothing stands in the way.
pub fn trouble(deployment: &Deployment, pods: &[Pod], now: Timestamp) -> Option<Trouble> {
    let live = || pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none());
    for pod in live() {
        let status = pod.status.clone().unwrap_or_default();
        let containers =
            status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
        if let Some(found) = containers.filter_map(|c| stuck(&pod.name_any(), c)).next() {
            return Some(found);
        }
    }
    if let Some(failure) = replica_failure(deployment) {
        return Some(failure);
    }
    live().find_map(|pod| {
        let condition = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "PodScheduled")?;
        if condition.status != "False" || condition.reason.as_deref() != Some("Unschedulable") {
            return None;
        }
        let since = condition.last_transition_time.as_ref().map_or(now, |t| t.0);
        let waited = now.duration_since(since).unsigned_abs();
        (waited >= UNSCHEDULABLE_GRACE).then(|| Trouble {
            reason: "Unschedulable".into(),
            message: format!("pod {}: {}", pod.name_any(), condition.message.clone().unwrap_or_default()),
        })
    })
}

fn stuck(pod: &str, container: &ContainerStatus) -> Option<Trouble> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref().filter(|r| STUCK.contains(r))?;
    let message = waiting.message.clone().unwrap_or_default();
    Some(Trouble {
        reason: reason.to_owned(),
        message: format!("pod {pod}: container {} ({}): {reason}: {message}", container.name, container.image),
    })
}

/// The Deployment's `ReplicaFailure` condition: the ReplicaSet could not create pods (a
/// ResourceQuota, a LimitRange, an admission webhook).
fn replica_failure(deployment: &Deployment) -> Option<Trouble> {
    let status = deployment.status.as_ref()?;
    let condition = status.conditions.iter().flatten().find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
    let message = condition.message.clone().unwrap_or_default();
    let reason = if message.contains("quota") { "QuotaExceeded" } else { "FailedCreate" };
    let wanted = deployment.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let created = status.replicas.unwrap_or(0);
    Some(Trouble {
        reason: reason.into(),
        message: format!("{created} of {wanted} wanted workers could be created: {message}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p-worker-abc"}, "status": status}))
            .expect("a pod")
    }

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p-worker"},
            "spec": {"replicas": 4, "selector": {}, "template": {}},
            "status": status,
        }))
        .expect("a deployment")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_reported_with_the_kubelet_s_words() {
        // Case 09, as the kubelet reports it.
        let p = pod(serde_json::json!({"phase": "Pending", "containerStatuses": [{
            "name": "transform", "image": "registry.invalid/zeroflow/does-not-exist:0.0.0", "imageID": "",
            "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"registry.invalid/zeroflow/does-not-exist:0.0.0\""}}}]}));
        let t = trouble(&deployment(serde_json::json!({})), &[p], at("2026-01-01T00:00:00Z")).expect("trouble");
        assert_eq!(t.reason, "ImagePullBackOff");
        assert!(t.message.contains("registry.invalid/zeroflow/does-not-exist:0.0.0"), "{}", t.message);
        assert!(t.message.contains("Back-off pulling image") && t.message.contains("p-worker-abc"), "{}", t.message);
    }

    #[test]
    fn init_containers_and_crash_loops_count_too() {
        let init = pod(serde_json::json!({"initContainerStatuses": [{"name": "zeroflow-runner-install",
            "image": "runner:1", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]}));
        assert_eq!(
            trouble(&deployment(serde_json::json!({})), &[init], at("2026-01-01T00:00:00Z"))
                .map(|t| t.reason)
                .as_deref(),
            Some("ErrImagePull")
        );
        let crash = pod(serde_json::json!({"containerStatuses": [{"name": "transform", "image": "t:1",
            "imageID": "", "ready": false, "restartCount": 5,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s restarting failed container"}}}]}));
        assert_eq!(
            trouble(&deployment(serde_json::json!({})), &[crash], at("2026-01-01T00:00:00Z"))
                .map(|t| t.reason)
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        let starting = pod(serde_json::json!({"containerStatuses": [{"name": "transform", "image": "t:1",
            "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}));
        assert_eq!(
            trouble(&deployment(serde_json::json!({})), &[starting], at("2026-01-01T00:00:00Z")),
            None,
            "starting is fine"
        );
    }

    #[test]
    fn pods_a_quota_forbids_are_reported_with_the_quota_s_name() {
        // Case 11: the ReplicaSet's FailedCreate, surfaced by the Deployment controller.
        let d = deployment(
            serde_json::json!({"replicas": 1, "conditions": [{"type": "ReplicaFailure", "status": "True",
            "reason": "FailedCreate",
            "message": "pods \"p-worker-abc\" is forbidden: exceeded quota: zf-q, requested: pods=1, used: pods=1, limited: pods=1"}]}),
        );
        let t = trouble(&d, &[], at("2026-01-01T00:00:00Z")).expect("trouble");
        assert_eq!(t.reason, "QuotaExceeded");
        assert!(
            t.message.starts_with("1 of 4 wanted workers could be created") && t.message.contains("zf-q"),
            "{}",
            t.message
        );
        let webhook = deployment(serde_json::json!({"conditions": [{"type": "ReplicaFailure", "status": "True",
            "message": "admission webhook \"x\" denied the request"}]}));
        assert_eq!(
            trouble(&webhook, &[], at("2026-01-01T00:00:00Z")).map(|t| t.reason).as_deref(),
            Some("FailedCreate")
        );
    }

    #[test]
    fn unschedulable_pods_are_reported_after_a_grace_for_autoscalers() {
        // Case 10, with the scheduler's message.
        let p = pod(serde_json::json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "lastTransitionTime": "2026-01-01T00:00:00Z",
            "message": "0/2 nodes are available: 2 Insufficient cpu."}]}));
        let d = deployment(serde_json::json!({}));
        assert_eq!(trouble(&d, std::slice::from_ref(&p), at("2026-01-01T00:00:10Z")), None, "within the grace");
        let t = trouble(&d, &[p], at("2026-01-01T00:00:30Z")).expect("trouble");
        assert_eq!(
            (t.reason.as_str(), t.message.as_str()),
            ("Unschedulable", "pod p-worker-abc: 0/2 nodes are available: 2 Insufficient cpu.")
        );
    }
}
