use super::*;

fn spec(delivery: RunnerDelivery, path: Option<&str>) -> RunnerSpec {
    RunnerSpec { delivery, path: path.map(str::to_owned) }
}

#[test]
fn auto_uses_an_image_volume_only_when_the_apiserver_keeps_them() {
    let kept = choose(None, OperatorDelivery::Auto, Some(true), None);
    assert_eq!((kept.delivery, kept.fallback, kept.reason), (Delivery::ImageVolume, false, "ImageVolume"));
    let dropped = choose(None, OperatorDelivery::Auto, Some(false), None);
    assert_eq!(
        (dropped.delivery, dropped.fallback, dropped.reason),
        (Delivery::InitContainer, true, "ImageVolumesDisabled")
    );
    assert!(dropped.message.contains("feature gate ImageVolume"), "{}", dropped.message);
    let unknown = choose(Some(&RunnerSpec::default()), OperatorDelivery::Auto, None, None);
    assert_eq!(
        (unknown.delivery, unknown.fallback, unknown.reason),
        (Delivery::InitContainer, true, "ImageVolumesUnknown")
    );
}

#[test]
fn a_failed_image_volume_falls_back_to_the_init_container_and_says_why() {
    let why = "pod p-worker-1: CreateContainerError: failed to mount image volume";
    for operator in [OperatorDelivery::Auto, OperatorDelivery::ImageVolume] {
        let c = choose(None, operator, Some(true), Some(why));
        assert_eq!((c.delivery, c.fallback, c.reason), (Delivery::InitContainer, true, "ImageVolumeFailed"));
        assert!(c.message.ends_with(why), "{}", c.message);
    }
}

#[test]
fn the_operator_setting_applies_to_auto_pipelines_only() {
    let c = choose(None, OperatorDelivery::InitContainer, Some(true), None);
    assert_eq!((c.delivery, c.fallback), (Delivery::InitContainer, false));
    let c = choose(None, OperatorDelivery::ImageVolume, None, None);
    assert_eq!((c.delivery, c.fallback), (Delivery::ImageVolume, false), "forced: no probe needed");
    let asked = spec(RunnerDelivery::ImageVolume, None);
    let c = choose(Some(&asked), OperatorDelivery::InitContainer, Some(false), Some("failed"));
    assert_eq!((c.delivery, c.fallback), (Delivery::ImageVolume, false), "what the pipeline asks for wins");
    let asked = spec(RunnerDelivery::InitContainer, None);
    assert_eq!(choose(Some(&asked), OperatorDelivery::Auto, Some(true), None).delivery, Delivery::InitContainer);
}

#[test]
fn in_image_uses_the_given_path_or_the_default() {
    let c =
        choose(Some(&spec(RunnerDelivery::InImage, Some("/opt/zf/runner"))), OperatorDelivery::Auto, Some(true), None);
    assert_eq!((c.delivery, c.fallback), (Delivery::InImage("/opt/zf/runner".into()), false));
    let c = choose(Some(&spec(RunnerDelivery::InImage, None)), OperatorDelivery::Auto, None, None);
    assert_eq!(c.delivery, Delivery::InImage(DEFAULT_IN_IMAGE_RUNNER_PATH.into()));
    assert_eq!(c.delivery.name(), "InImage");
}

#[test]
fn the_probe_reads_whether_the_volume_survived() {
    let sent = probe_deployment("runner:1");
    assert!(keeps_image_volume(&sent), "the probe has an image volume");
    assert_eq!(sent.spec.as_ref().and_then(|s| s.replicas), Some(0));
    // What the apiserver returns with the feature gate off: the volume and its mount dropped.
    let mut dropped = sent.clone();
    if let Some(pod) = dropped.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.volumes = None;
        pod.containers[0].volume_mounts = None;
    }
    assert!(!keeps_image_volume(&dropped));
}

fn pod(statuses: serde_json::Value) -> Pod {
    serde_json::from_value(
        serde_json::json!({"metadata": {"name": "p-worker-1"}, "status": {"containerStatuses": statuses}}),
    )
    .expect("a pod")
}

#[test]
fn setup_errors_of_the_transform_container_are_image_volume_failures() {
    let waiting = pod(serde_json::json!([{"name": "transform", "image": "t:1", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"waiting": {"reason": "CreateContainerError", "message": "failed to mount image volume"}}}]));
    assert_eq!(
        image_volume_failure(&[waiting], "transform").as_deref(),
        Some("pod p-worker-1: CreateContainerError: failed to mount image volume")
    );
    let start_error = pod(serde_json::json!([{"name": "transform", "image": "t:1", "imageID": "", "ready": false,
        "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
        "lastState": {"terminated": {"exitCode": 128, "reason": "StartError",
            "message": "exec: \"/zeroflow/bin/zeroflow-runner\": stat /zeroflow/bin/zeroflow-runner: no such file or directory"}}}]));
    let why = image_volume_failure(&[start_error], "transform").expect("a failure");
    assert!(why.starts_with("pod p-worker-1: StartError: exec:"), "{why}");
}

#[test]
fn other_troubles_are_not_image_volume_failures() {
    let pulling = pod(serde_json::json!([{"name": "transform", "image": "t:1", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff", "message": "back-off"}}}]));
    let crashing = pod(serde_json::json!([{"name": "transform", "image": "t:1", "imageID": "", "ready": false,
        "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]));
    let starting = pod(serde_json::json!([{"name": "transform", "image": "t:1", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]));
    assert_eq!(image_volume_failure(&[pulling, crashing, starting], "transform"), None);
}

/// What a kubelet without the ImageVolume feature gate does with an image volume, as seen on the
/// testbed's real node (`ZF_NODE_IMAGE_VOLUME=false e2e/testbed node up`): the pod stays
/// scheduled without a sandbox, and only its FailedMount Events say why.
#[test]
fn a_kubelet_that_cannot_mount_the_runner_is_read_from_its_failed_mount_events() {
    let stuck: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p-worker-1"}, "status": {
        "phase": "Pending",
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "False"},
            {"type": "Initialized", "status": "True"},
            {"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": "transform", "image": "t:1", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}}))
    .expect("a pod");
    let running: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p-worker-2"}, "status": {
        "conditions": [{"type": "PodReadyToStartContainers", "status": "True"}, {"type": "PodScheduled", "status": "True"}]}}))
    .expect("a pod");
    let unscheduled: Pod = serde_json::from_value(serde_json::json!({"metadata": {"name": "p-worker-3"}, "status": {
        "conditions": [{"type": "PodScheduled", "status": "False"}]}}))
    .expect("a pod");
    assert_eq!(waiting_for_volumes(&[stuck, running, unscheduled]), ["p-worker-1"]);

    let event = |message: &str| -> k8s_openapi::api::core::v1::Event {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p-worker-1"},
            "reason": "FailedMount", "message": message}),
        )
        .expect("an event")
    };
    let kubelet = event(
        "Unable to attach or mount volumes: unmounted volumes=[zeroflow-bin], unattached volumes=[], failed to process volumes=[zeroflow-bin]: failed to get Plugin from volumeSpec for volume \"zeroflow-bin\" err=no volume plugin matched",
    );
    let why = mount_failure(std::slice::from_ref(&kubelet), "zeroflow-bin").expect("the runner's volume");
    assert!(why.starts_with("pod p-worker-1: FailedMount: Unable to attach or mount volumes"), "{why}");
    // A user's volume that cannot be mounted (a Secret not created yet) is not the runner's.
    let secret = event(
        "MountVolume.SetUp failed for volume \"models\" : secret \"models\" not found; unmounted volumes=[models], failed to process volumes=[models]",
    );
    assert_eq!(mount_failure(&[secret], "zeroflow-bin"), None);
    assert_eq!(mount_failure(&[kubelet], "zeroflow-bin-2"), None, "whole names only");
}
