//! Pure construction of the objects a DataPipeline owns: no I/O, so every rule here is unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, ImageVolumeSource, ObjectFieldSelector,
    PodSecurityContext, PodSpec, PodTemplateSpec, ProjectedVolumeSource, SeccompProfile, SecurityContext,
    ServiceAccount, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

pub use zeroflow_contract::worker::TOKEN_AUDIENCE;
use zeroflow_contract::{duration::format_duration, env};

use super::runner::Delivery;
use super::validate::ValidSpec;
use crate::api::DataPipeline;

/// Label every object zeroflow manages carries; watches are filtered on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "zeroflow";
/// Label that ties worker objects to their pipeline.
pub const PIPELINE_LABEL: &str = "zeroflow.dev/pipeline";
/// Name of the transform container in worker pods.
pub const TRANSFORM_CONTAINER: &str = "transform";

/// Name of the init container that copies the runner (with [`Delivery::InitContainer`]).
pub const INSTALLER_CONTAINER: &str = "zeroflow-runner-install";
/// Name of the volume holding the runner (an image volume or an emptyDir).
pub const RUNNER_VOLUME: &str = "zeroflow-bin";

const RUNNER_DIR: &str = "/zeroflow/bin";
const WORK_DIR: &str = "/zeroflow/work";
const TOKEN_DIR: &str = "/var/run/secrets/zeroflow";
const TOKEN_EXPIRATION_SECONDS: i64 = 3600;
// Workers always run as this non-root user and group (65532 is distroless' "nonroot"), whatever
// the image's USER says, so the restricted Pod Security profile holds for any image.
const WORKER_UID: i64 = 65532;
// Time given to a worker after its last object's timeout before the kubelet kills it.
const GRACE_MARGIN_SECONDS: i64 = 15;

/// Operator-wide settings that shape worker pods.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Image holding `zeroflow-runner` at `/zeroflow-runner`: mounted as an image volume, or
    /// copied into each worker pod by an init container ([`Delivery`]).
    pub runner_image: String,
    /// URL workers use to reach the work API.
    pub work_api_url: String,
}

/// Names of the objects owned by a pipeline.
pub fn worker_name(pipeline: &DataPipeline) -> String {
    zeroflow_contract::worker::worker_name(&pipeline.name_any())
}

pub fn selector_labels(pipeline: &DataPipeline) -> BTreeMap<String, String> {
    BTreeMap::from([
        (PIPELINE_LABEL.to_owned(), pipeline.name_any()),
        ("app.kubernetes.io/component".to_owned(), "worker".to_owned()),
    ])
}

fn labels(pipeline: &DataPipeline) -> BTreeMap<String, String> {
    let mut labels = selector_labels(pipeline);
    labels.insert("app.kubernetes.io/name".into(), "zeroflow-worker".into());
    labels.insert("app.kubernetes.io/instance".into(), pipeline.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

fn owned_meta(pipeline: &DataPipeline, owner: OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(worker_name(pipeline)),
        namespace: pipeline.namespace(),
        labels: Some(labels(pipeline)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    }
}

/// The workers' ServiceAccount: it has no API permissions and its token is never automounted;
/// workers only get a projected token whose audience is the work API.
pub fn service_account(pipeline: &DataPipeline, owner: OwnerReference) -> ServiceAccount {
    ServiceAccount {
        metadata: owned_meta(pipeline, owner),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// The worker Deployment, without `replicas`: the scaler owns that field (field manager
/// `zeroflow-scaler`), so the controller's applies never touch it. Only the request that
/// creates the Deployment carries a first count ([`with_initial_replicas`]). `delivery` says how
/// the runner gets into its pods ([`super::runner::choose`]).
pub fn worker_deployment(
    pipeline: &DataPipeline,
    spec: &ValidSpec,
    owner: OwnerReference,
    options: &WorkerOptions,
    delivery: &Delivery,
) -> Deployment {
    Deployment {
        metadata: owned_meta(pipeline, owner),
        spec: Some(DeploymentSpec {
            replicas: None,
            revision_history_limit: Some(3),
            selector: LabelSelector { match_labels: Some(selector_labels(pipeline)), ..LabelSelector::default() },
            // Never take a busy worker away for a rollout before its replacement is up.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: pod_template(pipeline, spec, options, delivery),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The Deployment as first created: with `replicas`, or the apiserver would default it to 1 and
/// start a worker for nothing. Sent under the scaler's field manager, which owns the field from
/// then on.
pub fn with_initial_replicas(mut deployment: Deployment, replicas: i32) -> Deployment {
    if let Some(spec) = deployment.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
    deployment
}

fn pod_template(
    pipeline: &DataPipeline,
    spec: &ValidSpec,
    options: &WorkerOptions,
    delivery: &Delivery,
) -> PodTemplateSpec {
    let transform = &pipeline.spec.transform;
    let overlay = transform.pod_template.clone().unwrap_or_default();

    // zeroflow's labels win over the overlay's: the selector depends on them.
    let mut pod_labels = overlay.labels.clone();
    pod_labels.extend(labels(pipeline));

    let mut volumes = runner_volume(delivery, options).into_iter().collect::<Vec<_>>();
    volumes.extend([
        Volume { name: "zeroflow-work".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        Volume { name: "zeroflow-tmp".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() },
        Volume {
            name: "zeroflow-token".into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.into()),
                        expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                        path: "token".into(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]);
    volumes.extend(overlay.volumes.iter().cloned());

    let runner_mount = (!matches!(delivery, Delivery::InImage(_))).then(|| mount(RUNNER_VOLUME, RUNNER_DIR, true));
    let mut mounts: Vec<VolumeMount> = runner_mount.into_iter().collect();
    mounts.extend([
        mount("zeroflow-work", WORK_DIR, false),
        mount("zeroflow-token", TOKEN_DIR, true),
        // The root filesystem is read-only; transforms get a writable /tmp.
        mount("zeroflow-tmp", "/tmp", false),
    ]);
    mounts.extend(overlay.volume_mounts.iter().cloned());

    // Whole seconds, rounded up: a 500ms timeout still gets its full margin.
    let timeout_seconds = spec.timeout.as_secs() + u64::from(spec.timeout.subsec_nanos() > 0);
    let grace = overlay
        .termination_grace_period_seconds
        .unwrap_or_else(|| i64::try_from(timeout_seconds).unwrap_or(i64::MAX).saturating_add(GRACE_MARGIN_SECONDS));

    let installer = (*delivery == Delivery::InitContainer).then(|| Container {
        name: INSTALLER_CONTAINER.into(),
        image: Some(options.runner_image.clone()),
        command: Some(vec!["/zeroflow-runner".into(), "install".into(), RUNNER_DIR.into()]),
        volume_mounts: Some(vec![mount(RUNNER_VOLUME, RUNNER_DIR, false)]),
        security_context: Some(restricted_container()),
        // Namespaces with a ResourceQuota refuse pods whose containers declare nothing.
        resources: Some(installer_resources()),
        ..Container::default()
    });

    let transform_container = Container {
        name: TRANSFORM_CONTAINER.into(),
        image: Some(transform.image.clone()),
        image_pull_policy: transform.image_pull_policy.clone(),
        command: Some(runner_command(pipeline, delivery)),
        env: Some(worker_env(pipeline, spec, options, grace)),
        resources: transform.resources.clone(),
        volume_mounts: Some(mounts),
        security_context: Some(restricted_container()),
        ..Container::default()
    };

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: (!overlay.annotations.is_empty()).then(|| overlay.annotations.clone()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(worker_name(pipeline)),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(grace),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(WORKER_UID),
                run_as_group: Some(WORKER_UID),
                fs_group: Some(WORKER_UID),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
                ..PodSecurityContext::default()
            }),
            init_containers: installer.map(|c| vec![c]),
            containers: vec![transform_container],
            volumes: Some(volumes),
            node_selector: (!overlay.node_selector.is_empty()).then(|| overlay.node_selector.clone()),
            tolerations: (!overlay.tolerations.is_empty()).then(|| overlay.tolerations.clone()),
            affinity: overlay.affinity.clone(),
            priority_class_name: overlay.priority_class_name.clone(),
            image_pull_secrets: (!overlay.image_pull_secrets.is_empty()).then(|| overlay.image_pull_secrets.clone()),
            ..PodSpec::default()
        }),
    }
}

/// The runner's volume: the runner image itself, or an emptyDir the init container fills;
/// none when the transform image holds the runner.
fn runner_volume(delivery: &Delivery, options: &WorkerOptions) -> Option<Volume> {
    match delivery {
        Delivery::ImageVolume => Some(Volume {
            name: RUNNER_VOLUME.into(),
            // No pull policy: Kubernetes' default for the reference (IfNotPresent unless the tag
            // is `latest`), as for the init container's image.
            image: Some(ImageVolumeSource { reference: Some(options.runner_image.clone()), pull_policy: None }),
            ..Volume::default()
        }),
        Delivery::InitContainer => Some(Volume {
            name: RUNNER_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        }),
        Delivery::InImage(_) => None,
    }
}

/// The runner wraps the user's command: `zeroflow-runner run -- <command> <args>`.
fn runner_command(pipeline: &DataPipeline, delivery: &Delivery) -> Vec<String> {
    let transform = &pipeline.spec.transform;
    let runner = match delivery {
        Delivery::InImage(path) => path.clone(),
        Delivery::ImageVolume | Delivery::InitContainer => format!("{RUNNER_DIR}/zeroflow-runner"),
    };
    let mut command = vec![runner, "run".into(), "--".into()];
    if transform.command.is_empty() {
        command.push("transform".into());
    } else {
        command.extend(transform.command.iter().cloned());
    }
    command.extend(transform.args.iter().cloned());
    command
}

fn worker_env(pipeline: &DataPipeline, spec: &ValidSpec, options: &WorkerOptions, grace: i64) -> Vec<EnvVar> {
    let transform = &pipeline.spec.transform;
    let value = |name: &str, value: String| EnvVar { name: name.into(), value: Some(value), value_from: None };
    let mut env = vec![
        value(env::WORK_API, options.work_api_url.clone()),
        value(env::PIPELINE, format!("{}/{}", pipeline.namespace().unwrap_or_default(), pipeline.name_any())),
        value(env::CONTRACT, transform.contract.to_string()),
        // Exactly, not in whole seconds: the runner parses the same grammar.
        value(env::TIMEOUT, format_duration(spec.timeout)),
        value(env::CONCURRENCY, pipeline.spec.scaling.concurrency_per_replica.to_string()),
        value(env::TOKEN_FILE, format!("{TOKEN_DIR}/token")),
        value(env::WORK_DIR, WORK_DIR.into()),
        // The runner hands back what it cannot finish before the kubelet's SIGKILL.
        value(env::GRACE_SECONDS, grace.to_string()),
        value("TMPDIR", "/tmp".into()),
        EnvVar {
            name: env::POD_NAME.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { field_path: "metadata.name".into(), api_version: None }),
                ..EnvVarSource::default()
            }),
        },
    ];
    // User variables come last so they can be read by the command, but never replace ours.
    env.extend(transform.env.iter().filter(|e| !e.name.starts_with(env::RESERVED_PREFIX)).cloned());
    env
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(read_only), ..VolumeMount::default() }
}

fn installer_resources() -> k8s_openapi::api::core::v1::ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let amounts = |cpu: &str, memory: &str| {
        BTreeMap::from([("cpu".to_owned(), Quantity(cpu.into())), ("memory".to_owned(), Quantity(memory.into()))])
    };
    k8s_openapi::api::core::v1::ResourceRequirements {
        requests: Some(amounts("10m", "16Mi")),
        limits: Some(amounts("100m", "32Mi")),
        ..Default::default()
    }
}

/// The container settings the `restricted` Pod Security Standard asks for.
fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
        ..SecurityContext::default()
    }
}

/// CPU cores one worker pod requests: the sum over its containers of `requests.cpu`, or of
/// `limits.cpu` where only a limit is set (Kubernetes then requests the limit). Init containers
/// run before the worker starts and are not counted.
pub fn cpu_request_cores(pod: &PodSpec) -> f64 {
    pod.containers
        .iter()
        .filter_map(|c| {
            let resources = c.resources.as_ref()?;
            let quantity = resources
                .requests
                .as_ref()
                .and_then(|r| r.get("cpu"))
                .or_else(|| resources.limits.as_ref().and_then(|l| l.get("cpu")))?;
            zeroflow_core::scaling::usage::parse_cpu(&quantity.0)
        })
        .sum()
}

/// The owner reference children carry, so deleting a pipeline garbage-collects them.
pub fn owner_reference(pipeline: &DataPipeline) -> Option<OwnerReference> {
    pipeline.controller_owner_ref(&())
}

#[cfg(test)]
mod tests;
