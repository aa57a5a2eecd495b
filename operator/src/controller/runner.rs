//! How `zeroflow-runner` reaches a pipeline's workers: an image volume, an init container, or
//! already in the transform image. Pure decisions; the caller probes the apiserver
//! ([`super::probe`]) and watches the worker pods.
//!
//! Image volumes (KEP-4639, `volumes[].image`) take the init container off the hot path: the
//! kubelet starts the transform container as soon as the sandbox is ready, instead of first
//! running a container that copies the runner and noticing its exit at its next relist (about
//! 1 s here). They need the `ImageVolume` feature gate (beta, off by default in Kubernetes 1.33
//! and 1.34) on the apiserver and the kubelet, and a runtime that mounts them (containerd 2.1+,
//! CRI-O 1.31+). When the gate is off the apiserver silently drops the volume and its mounts, so
//! the operator asks first with a server-side dry run; when a node's runtime cannot mount it, the
//! worker's container cannot be created and the pipeline falls back to the init container.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, ImageVolumeSource, Pod, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;

use crate::api::{DEFAULT_IN_IMAGE_RUNNER_PATH, RunnerDelivery, RunnerSpec};

/// The operator's default for pipelines that leave the choice to it (`--runner-delivery`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OperatorDelivery {
    /// An image volume when the apiserver keeps them (a server-side dry run says), else an init
    /// container.
    #[default]
    Auto,
    /// Always an image volume.
    ImageVolume,
    /// Always an init container.
    InitContainer,
}

/// How the runner gets into one pipeline's worker pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The runner image mounted read-only at the runner directory.
    ImageVolume,
    /// An init container copies the runner into an emptyDir mounted at the runner directory.
    InitContainer,
    /// The transform image holds the runner at this absolute path.
    InImage(String),
}

impl Delivery {
    /// The name `status.runnerDelivery` shows.
    pub fn name(&self) -> &'static str {
        match self {
            Delivery::ImageVolume => "ImageVolume",
            Delivery::InitContainer => "InitContainer",
            Delivery::InImage(_) => "InImage",
        }
    }
}

/// What the apiserver said about image volumes: `Some(true)` when a dry-run create kept them,
/// `Some(false)` when it dropped them, `None` before an answer (or after an error).
pub type ImageVolumesKept = Option<bool>;

/// The delivery chosen for a pipeline, with the `RunnerFallback` condition that explains it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub delivery: Delivery,
    /// True when the operator chose the init container although the pipeline would otherwise
    /// get an image volume.
    pub fallback: bool,
    /// One CamelCase word for the condition.
    pub reason: &'static str,
    pub message: String,
}

/// Chooses the delivery for a pipeline. `failed` is the reason image volumes failed on this
/// pipeline's workers (the cluster's words), once they did: an `Auto` pipeline then uses the
/// init container for as long as this operator runs.
pub fn choose(
    requested: Option<&RunnerSpec>,
    operator: OperatorDelivery,
    kept: ImageVolumesKept,
    failed: Option<&str>,
) -> Choice {
    let spec = requested.cloned().unwrap_or_default();
    let chosen =
        |delivery, reason, message: &str| Choice { delivery, fallback: false, reason, message: message.into() };
    let fallback =
        |reason, message: String| Choice { delivery: Delivery::InitContainer, fallback: true, reason, message };
    match (spec.delivery, operator) {
        (RunnerDelivery::InImage, _) => {
            let path = spec.path.unwrap_or_else(|| DEFAULT_IN_IMAGE_RUNNER_PATH.to_owned());
            chosen(Delivery::InImage(path), "InImage", "spec.transform.runner.delivery: InImage")
        }
        (RunnerDelivery::InitContainer, _) => {
            chosen(Delivery::InitContainer, "InitContainerRequested", "spec.transform.runner.delivery: InitContainer")
        }
        (RunnerDelivery::ImageVolume, _) => {
            chosen(Delivery::ImageVolume, "ImageVolumeRequested", "spec.transform.runner.delivery: ImageVolume")
        }
        (RunnerDelivery::Auto, OperatorDelivery::InitContainer) => chosen(
            Delivery::InitContainer,
            "InitContainerRequested",
            "the operator's --runner-delivery is init-container",
        ),
        (RunnerDelivery::Auto, OperatorDelivery::ImageVolume | OperatorDelivery::Auto) => {
            if let Some(why) = failed {
                return fallback(
                    "ImageVolumeFailed",
                    format!(
                        "a worker could not start with the runner in an image volume, so the init container copies it now (until the operator restarts): {why}"
                    ),
                );
            }
            match (operator, kept) {
                (OperatorDelivery::ImageVolume, _) | (_, Some(true)) => {
                    chosen(Delivery::ImageVolume, "ImageVolume", "the runner image is mounted as an image volume")
                }
                (_, Some(false)) => fallback(
                    "ImageVolumesDisabled",
                    "the apiserver drops image volumes (feature gate ImageVolume off): the runner is copied by an init container, which adds about 1 s to every cold start".into(),
                ),
                (_, None) => fallback(
                    "ImageVolumesUnknown",
                    "the apiserver has not said yet whether it keeps image volumes: the runner is copied by an init container for now".into(),
                ),
            }
        }
    }
}

/// The Deployment the operator dry-run creates to learn whether the apiserver keeps image
/// volumes ([`keeps_image_volume`]): no replicas, one container and one image volume, both the
/// runner image. Nothing is stored.
pub fn probe_deployment(runner_image: &str) -> Deployment {
    let labels = BTreeMap::from([("zeroflow.dev/probe".to_owned(), "image-volume".to_owned())]);
    Deployment {
        metadata: ObjectMeta { generate_name: Some("zeroflow-image-volume-probe-".into()), ..ObjectMeta::default() },
        spec: Some(DeploymentSpec {
            replicas: Some(0),
            selector: LabelSelector { match_labels: Some(labels.clone()), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "probe".into(),
                        image: Some(runner_image.into()),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "runner".into(),
                            mount_path: "/zeroflow/bin".into(),
                            read_only: Some(true),
                            ..VolumeMount::default()
                        }]),
                        ..Container::default()
                    }],
                    volumes: Some(vec![Volume {
                        name: "runner".into(),
                        image: Some(ImageVolumeSource { reference: Some(runner_image.into()), pull_policy: None }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// Whether the apiserver's answer to [`probe_deployment`] still has the image volume: with the
/// `ImageVolume` feature gate off it drops the volume and its mounts without an error
/// (`dropImageVolumes` in Kubernetes' `pkg/api/pod/util.go`).
pub fn keeps_image_volume(answer: &Deployment) -> bool {
    answer
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.volumes.as_ref())
        .is_some_and(|volumes| volumes.iter().any(|v| v.image.is_some()))
}

/// Container waiting reasons that say the kubelet or the runtime could not set the container up.
/// With an image volume these mean the node cannot mount it: a runtime without image volume
/// support, or a kubelet with the feature gate off.
const SETUP_FAILED: [&str; 3] = ["CreateContainerConfigError", "CreateContainerError", "RunContainerError"];

/// Why the runner's image volume failed on one of these worker pods, in the kubelet's words;
/// `None` when nothing says so. Looks at the transform container: waiting in a setup error, or
/// last terminated with `StartError` (the runtime could not exec the runner: the volume was
/// missing or empty).
pub fn image_volume_failure(pods: &[Pod], transform_container: &str) -> Option<String> {
    pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).find_map(|pod| {
        let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
        let status = statuses.iter().find(|c| c.name == transform_container)?;
        setup_failure(status).map(|why| format!("pod {}: {why}", pod.name_any()))
    })
}

fn setup_failure(status: &ContainerStatus) -> Option<String> {
    let waiting = status.state.as_ref().and_then(|s| s.waiting.as_ref());
    if let Some(waiting) = waiting
        && let Some(reason) = waiting.reason.as_deref().filter(|r| SETUP_FAILED.contains(r))
    {
        return Some(format!("{reason}: {}", waiting.message.clone().unwrap_or_default()));
    }
    let terminated = status
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| status.last_state.as_ref().and_then(|s| s.terminated.as_ref()))?;
    (terminated.reason.as_deref() == Some("StartError"))
        .then(|| format!("StartError: {}", terminated.message.clone().unwrap_or_default()))
}

/// Worker pods the kubelet has not set up yet because their volumes are not mounted: scheduled,
/// without a sandbox (`PodReadyToStartContainers` not True, as the kubelet creates the sandbox
/// only once every volume is mounted). A kubelet without the `ImageVolume` feature gate leaves
/// a pod with an image volume here for good, saying why only in `FailedMount` Events.
pub fn waiting_for_volumes(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
            let is_true =
                |type_: &str| conditions.is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"));
            is_true("PodScheduled") && !is_true("PodReadyToStartContainers")
        })
        .map(ResourceExt::name_any)
        .collect()
}

/// The kubelet's `FailedMount` Event that says it cannot process `volume` (for an image volume
/// on a kubelet without the feature gate: `failed to process volumes=[zeroflow-bin]: failed to
/// get Plugin from volumeSpec ... no volume plugin matched`); its message, with the pod's name.
pub fn mount_failure(events: &[k8s_openapi::api::core::v1::Event], volume: &str) -> Option<String> {
    events.iter().filter(|e| e.reason.as_deref() == Some("FailedMount")).find_map(|e| {
        let message = e.message.as_deref()?;
        let (_, rest) = message.split_once("failed to process volumes=[")?;
        let (names, _) = rest.split_once(']')?;
        names
            .split([' ', ','])
            .any(|n| n == volume)
            .then(|| format!("pod {}: FailedMount: {message}", e.involved_object.name.clone().unwrap_or_default()))
    })
}

#[cfg(test)]
mod tests;
