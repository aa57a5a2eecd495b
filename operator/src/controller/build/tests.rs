use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Toleration, Volume, VolumeMount};

use super::*;
use crate::api::{DataPipelineSpec, PodTemplateOverlay};
use crate::controller::testing::{minimal_spec, pipeline};
use crate::controller::validate::validate;

fn options() -> WorkerOptions {
    WorkerOptions {
        runner_image: "ghcr.io/zeroflow-dev/zeroflow-runner:test".into(),
        work_api_url: "http://zeroflow.zeroflow-system.svc:8081".into(),
    }
}

fn deployment_for(spec: DataPipelineSpec) -> Deployment {
    deployment_with(spec, &Delivery::InitContainer)
}

fn deployment_with(spec: DataPipelineSpec, delivery: &Delivery) -> Deployment {
    let p = pipeline(spec);
    let valid = validate(&p.spec).expect("valid spec");
    let owner = owner_reference(&p).expect("pipeline has uid");
    worker_deployment(&p, &valid, owner, &options(), delivery)
}

/// With an image volume nothing runs before the transform: the runner image is the volume,
/// mounted read-only where the init container would have copied the runner to.
#[test]
fn an_image_volume_delivers_the_runner_without_an_init_container() {
    let d = deployment_with(minimal_spec(), &Delivery::ImageVolume);
    let pod = pod_spec(&d);
    assert_eq!(pod.init_containers, None, "no init container on the hot path");
    let bin = pod.volumes.iter().flatten().find(|v| v.name == RUNNER_VOLUME).expect("runner volume");
    let image = bin.image.as_ref().expect("an image volume");
    assert_eq!(image.reference.as_deref(), Some("ghcr.io/zeroflow-dev/zeroflow-runner:test"));
    assert_eq!(image.pull_policy, None, "Kubernetes' default pull policy, as for the init container's image");
    assert!(bin.empty_dir.is_none());
    let mounts: Vec<_> = transform(&d).volume_mounts.iter().flatten().filter(|m| m.name == RUNNER_VOLUME).collect();
    assert_eq!(mounts.len(), 1);
    assert_eq!((mounts[0].mount_path.as_str(), mounts[0].read_only), ("/zeroflow/bin", Some(true)));
    assert_eq!(
        transform(&d).command.as_ref().and_then(|c| c.first()).map(String::as_str),
        Some("/zeroflow/bin/zeroflow-runner")
    );
    // The same template otherwise: the work volume, token and /tmp are still there.
    let names: Vec<_> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["zeroflow-bin", "zeroflow-work", "zeroflow-tmp", "zeroflow-token"]);
}

/// An image that holds the runner itself gets no runner volume and no init container; the
/// command starts with the runner's path in that image.
#[test]
fn a_runner_in_the_image_needs_nothing_added() {
    let d = deployment_with(minimal_spec(), &Delivery::InImage("/usr/local/bin/zeroflow-runner".into()));
    let pod = pod_spec(&d);
    assert_eq!(pod.init_containers, None);
    assert!(pod.volumes.iter().flatten().all(|v| v.name != RUNNER_VOLUME));
    assert!(transform(&d).volume_mounts.iter().flatten().all(|m| m.name != RUNNER_VOLUME));
    assert_eq!(
        transform(&d).command.as_deref(),
        Some(&["/usr/local/bin/zeroflow-runner", "run", "--", "transform"].map(String::from)[..])
    );
}

/// The init container (the fallback) copies the runner into an emptyDir it mounts writable;
/// the transform container mounts it read-only.
#[test]
fn the_init_container_fills_an_empty_dir() {
    let d = deployment_for(minimal_spec());
    let pod = pod_spec(&d);
    let init = pod.init_containers.as_ref().expect("init containers");
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].name, INSTALLER_CONTAINER);
    assert_eq!(
        init[0].command.as_deref(),
        Some(&["/zeroflow-runner", "install", "/zeroflow/bin"].map(String::from)[..])
    );
    let bin = pod.volumes.iter().flatten().find(|v| v.name == RUNNER_VOLUME).expect("runner volume");
    assert!(bin.empty_dir.is_some() && bin.image.is_none());
    let mount = transform(&d).volume_mounts.iter().flatten().find(|m| m.name == RUNNER_VOLUME).cloned();
    assert_eq!(mount.and_then(|m| m.read_only), Some(true));
}

/// The scaler owns `replicas`: the controller's apply never carries it, only creation does.
#[test]
fn replicas_are_left_to_the_scaler() {
    let d = deployment_for(minimal_spec());
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), None);
    let json = serde_json::to_value(&d).expect("serializes");
    assert!(json["spec"].get("replicas").is_none(), "the apply body has no replicas: {}", json["spec"]);
    let created = with_initial_replicas(d, 2);
    assert_eq!(created.spec.and_then(|s| s.replicas), Some(2));
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).expect("pod spec")
}

fn transform(d: &Deployment) -> &Container {
    pod_spec(d).containers.iter().find(|c| c.name == TRANSFORM_CONTAINER).expect("transform container")
}

#[test]
fn deployment_is_owned_named_and_selected_by_pipeline() {
    let d = deployment_for(minimal_spec());
    assert_eq!(d.metadata.name.as_deref(), Some("invoices-worker"));
    assert_eq!(d.metadata.namespace.as_deref(), Some("finance"));
    let owner = &d.metadata.owner_references.as_ref().expect("owner refs")[0];
    assert_eq!(owner.kind, "DataPipeline");
    assert_eq!(owner.name, "invoices");
    assert_eq!(owner.controller, Some(true));

    let spec = d.spec.as_ref().expect("spec");
    assert_eq!(spec.replicas, None);
    let selector = spec.selector.match_labels.as_ref().expect("selector");
    let pod_labels = spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref()).expect("labels");
    for (k, v) in selector {
        assert_eq!(pod_labels.get(k), Some(v), "pod labels must match selector {k}");
    }
    assert_eq!(d.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str), Some("zeroflow"));
}

#[test]
fn workers_meet_the_restricted_pod_security_standard() {
    let d = deployment_for(minimal_spec());
    let pod = pod_spec(&d);
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(pod.service_account_name.as_deref(), Some("invoices-worker"));
    let psc = pod.security_context.as_ref().expect("pod security context");
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()), Some("RuntimeDefault"));
    let containers = pod.containers.iter().chain(pod.init_containers.iter().flatten());
    for c in containers {
        let sc = c.security_context.as_ref().expect("container security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.capabilities.as_ref().and_then(|c| c.drop.clone()), Some(vec!["ALL".to_string()]));
        assert_ne!(sc.privileged, Some(true));
    }
    assert!(pod.host_network.is_none() && pod.host_pid.is_none());
}

#[test]
fn runner_wraps_the_users_command() {
    let mut spec = minimal_spec();
    spec.transform.command = vec!["python".into(), "/app/t.py".into()];
    spec.transform.args = vec!["--fast".into()];
    let d = deployment_for(spec);
    assert_eq!(
        transform(&d).command.as_deref(),
        Some(&["/zeroflow/bin/zeroflow-runner", "run", "--", "python", "/app/t.py", "--fast"].map(String::from)[..])
    );
    let init = &pod_spec(&d).init_containers.as_ref().expect("init")[0];
    assert_eq!(init.image.as_deref(), Some("ghcr.io/zeroflow-dev/zeroflow-runner:test"));
}

#[test]
fn empty_command_runs_transform_on_path() {
    let d = deployment_for(minimal_spec());
    assert_eq!(transform(&d).command.as_ref().and_then(|c| c.last()).map(String::as_str), Some("transform"));
}

#[test]
fn worker_gets_a_projected_token_for_the_zeroflow_audience() {
    let d = deployment_for(minimal_spec());
    let token = pod_spec(&d)
        .volumes
        .iter()
        .flatten()
        .find_map(|v| v.projected.as_ref())
        .and_then(|p| p.sources.as_ref())
        .and_then(|s| s[0].service_account_token.as_ref())
        .expect("projected token");
    assert_eq!(token.audience.as_deref(), Some("zeroflow"));
    let env = transform(&d).env.clone().expect("env");
    let get = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(get("ZEROFLOW_TOKEN_FILE").as_deref(), Some("/var/run/secrets/zeroflow/token"));
    assert_eq!(get("ZEROFLOW_WORK_API").as_deref(), Some("http://zeroflow.zeroflow-system.svc:8081"));
    assert_eq!(get("ZEROFLOW_PIPELINE").as_deref(), Some("finance/invoices"));
    assert_eq!(get("ZEROFLOW_CONTRACT").as_deref(), Some("exec"));
    assert_eq!(get("ZEROFLOW_TIMEOUT").as_deref(), Some("10m"));
}

#[test]
fn grace_period_lets_an_object_finish() {
    let d = deployment_for(minimal_spec());
    assert_eq!(pod_spec(&d).termination_grace_period_seconds, Some(600 + 15));
}

/// Issue #13.8: `500ms` used to reach the runner as `ZEROFLOW_TIMEOUT_SECONDS=0`, which it refused.
#[test]
fn sub_second_timeouts_reach_the_runner_exactly() {
    for (timeout, wanted, grace) in [("500ms", "500ms", 1 + 15), ("1.5s", "1.5s", 2 + 15), ("90s", "1m30s", 90 + 15)] {
        let mut spec = minimal_spec();
        spec.transform.timeout = timeout.into();
        let d = deployment_for(spec);
        let env = transform(&d).env.clone().expect("env");
        let value = env.iter().find(|e| e.name == "ZEROFLOW_TIMEOUT").and_then(|e| e.value.clone());
        assert_eq!(value.as_deref(), Some(wanted), "{timeout}");
        let parsed = zeroflow_contract::duration::parse_timeout(wanted).expect("the runner accepts it");
        assert_eq!(parsed, zeroflow_contract::duration::parse_duration(timeout).expect("valid"));
        assert_eq!(pod_spec(&d).termination_grace_period_seconds, Some(grace), "{timeout}");
    }
}

#[test]
fn overlay_is_merged_without_breaking_zeroflow_settings() {
    let mut spec = minimal_spec();
    spec.transform.env = vec![
        EnvVar { name: "MODE".into(), value: Some("fast".into()), value_from: None },
        EnvVar { name: "ZEROFLOW_WORK_API".into(), value: Some("http://evil".into()), value_from: None },
    ];
    spec.transform.pod_template = Some(PodTemplateOverlay {
        labels: BTreeMap::from([
            ("team".into(), "finance".into()),
            (crate::controller::build::PIPELINE_LABEL.into(), "hijack".into()),
        ]),
        annotations: BTreeMap::from([("prometheus.io/scrape".into(), "true".into())]),
        node_selector: BTreeMap::from([("disk".into(), "ssd".into())]),
        tolerations: vec![Toleration {
            key: Some("batch".into()),
            operator: Some("Exists".into()),
            ..Default::default()
        }],
        volumes: vec![Volume { name: "models".into(), ..Default::default() }],
        volume_mounts: vec![VolumeMount { name: "models".into(), mount_path: "/models".into(), ..Default::default() }],
        termination_grace_period_seconds: Some(42),
        ..Default::default()
    });
    let d = deployment_for(spec);
    let template = &d.spec.as_ref().expect("spec").template;
    let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref()).expect("labels");
    assert_eq!(labels.get("team").map(String::as_str), Some("finance"));
    assert_eq!(labels.get(PIPELINE_LABEL).map(String::as_str), Some("invoices"), "zeroflow labels win");
    let pod = pod_spec(&d);
    assert_eq!(pod.node_selector.as_ref().and_then(|n| n.get("disk")).map(String::as_str), Some("ssd"));
    assert_eq!(pod.tolerations.as_ref().map(Vec::len), Some(1));
    assert_eq!(pod.termination_grace_period_seconds, Some(42));
    let volumes: Vec<_> = pod.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert!(volumes.contains(&"models") && volumes.contains(&"zeroflow-bin"), "{volumes:?}");
    let c = transform(&d);
    assert!(c.volume_mounts.iter().flatten().any(|m| m.mount_path == "/models"));
    let env = c.env.as_ref().expect("env");
    assert!(env.iter().any(|e| e.name == "MODE"));
    let work_apis: Vec<_> = env.iter().filter(|e| e.name == "ZEROFLOW_WORK_API").collect();
    assert_eq!(work_apis.len(), 1, "users cannot override zeroflow's variables");
    assert_eq!(work_apis[0].value.as_deref(), Some("http://zeroflow.zeroflow-system.svc:8081"));
}

#[test]
fn service_account_has_no_automounted_token() {
    let p = pipeline(minimal_spec());
    let sa = service_account(&p, owner_reference(&p).expect("owner"));
    assert_eq!(sa.automount_service_account_token, Some(false));
    assert_eq!(sa.metadata.name.as_deref(), Some("invoices-worker"));
}
