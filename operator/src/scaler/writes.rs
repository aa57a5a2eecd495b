//! What the scaler writes, against a mocked apiserver ([`crate::fixtures`]): adoption reads the
//! live count and writes nothing; scale changes go through `/scale` under `zeroflow-scaler`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use kube::runtime::events::Reporter;
use serde_json::json;
use zeroflow_core::backlog::{BacklogConfig, ObjectId, WorkItem};
use zeroflow_core::leases::Granted;
use zeroflow_core::routing::Route;

use super::*;
use crate::fixtures::{self, ApiServer};
use crate::metrics::Metrics;
use crate::runtime::{Seed, Settings};

const SCALE: &str = "/apis/apps/v1/namespaces/finance/deployments/invoices-worker/scale";

struct Bed {
    scaler: Scaler,
    pipeline: Arc<Pipeline>,
    pipelines: Arc<Pipelines>,
    api: ApiServer,
    status: ApiServer,
}

fn bed(idle_timeout: Duration) -> Bed {
    let (client, api) = fixtures::client();
    let (status_client, status) = fixtures::client();
    let (kick, _kicks) = tokio::sync::mpsc::unbounded_channel();
    let pipelines = Arc::new(Pipelines::new(1, kick, Arc::new(Metrics::new().expect("metrics"))));
    let route = Route {
        namespace: "finance".into(),
        name: "invoices".into(),
        bucket: "raw".into(),
        prefix: None,
        suffix: None,
        exclude_prefixes: vec![],
    };
    let mut settings = Settings::new(route, BacklogConfig::default());
    settings.scale.max_replicas = 5;
    settings.scale.idle_timeout = idle_timeout;
    let pipeline = pipelines.upsert(&PipelineKey::new("finance", "invoices"), settings, &Seed::default());
    let (writer, _task) = StatusWriter::spawn(status_client, pipelines.clone());
    let recorder = EventRecorder::new(client.clone(), Reporter { controller: "zeroflow-test".into(), instance: None });
    let scaler = Scaler::new(client, pipelines.clone(), recorder, writer);
    Bed { scaler, pipeline, pipelines, api, status }
}

const PODS: &str = "/api/v1/namespaces/finance/pods";

/// Admits one object, `raw/a.csv`, to the bed's pipeline.
fn admit_one(bed: &Bed) {
    let item = WorkItem {
        object: ObjectId { bucket: "raw".into(), key: "a.csv".into() },
        etag: Some("e".into()),
        version_id: None,
        size: None,
        sequencer: None,
    };
    bed.pipelines.admit_item(&bed.pipeline.key, item).expect("served").expect("admitted");
}

/// A metadata list of worker pods created at the given RFC 3339 times.
fn pods(created: &[&str]) -> serde_json::Value {
    let items: Vec<_> = created
        .iter()
        .enumerate()
        .map(|(i, at)| {
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                             "metadata": {"name": format!("invoices-worker-{i}"), "namespace": "finance",
                                          "creationTimestamp": at}})
        })
        .collect();
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items})
}

fn scale(replicas: i32) -> serde_json::Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
           "metadata": {"name": "invoices-worker", "namespace": "finance"},
           "spec": {"replicas": replicas}, "status": {"replicas": replicas}})
}

/// A new leader finds three workers running: it adopts them, holds leasing for the recovery
/// window and does not scale them down, although nothing is pending and idleTimeout is 0.
#[tokio::test]
async fn a_new_leader_adopts_running_workers_and_writes_nothing() {
    let mut bed = bed(Duration::ZERO);
    let evaluate = tokio::spawn({
        let (scaler, pipeline) = (Arc::new(bed.scaler), bed.pipeline.clone());
        async move {
            scaler.evaluate(&pipeline).await;
            scaler.evaluate(&pipeline).await;
            scaler
        }
    });
    bed.api.expect(Method::GET, SCALE).await.ok(scale(3));
    let list = bed.api.expect(Method::GET, PODS).await;
    assert_eq!(
        list.query("labelSelector").as_deref(),
        Some("zeroflow.dev/pipeline=invoices,app.kubernetes.io/component=worker")
    );
    // Two pods from before this leader, one from after: the earlier ones may hold leases.
    list.ok(pods(&["2020-01-01T00:00:00Z", "2100-01-01T00:00:00Z", "2020-01-01T00:00:01Z"]));
    let _scaler = evaluate.await.expect("evaluate");
    bed.api.expect_silence(Duration::from_millis(500)).await;
    let now = bed.pipelines.now();
    {
        let state = bed.pipeline.lock();
        assert_eq!(state.scale.replicas(), Some(3), "adopted, not reset");
        assert!(state.backlog.is_held(now), "no lease before busy workers could re-attach theirs");
        assert!(state.backlog.is_held(now + 14_000) && !state.backlog.is_held(now + 16_000), "10 s heartbeat + 5 s");
    }
    bed.status.expect_silence(Duration::from_millis(200)).await;
}

/// Workers whose pods were all created after this replica began leading (or not created yet)
/// can hold no earlier leader's lease: adoption holds nothing back, so a warm pipeline's first
/// object is leased at once. Pods that cannot be listed are taken as earlier ones.
#[tokio::test]
async fn workers_created_under_this_leader_are_adopted_without_a_recovery_window() {
    for (answer, held) in [(Some(vec!["2100-01-01T00:00:00Z"]), false), (Some(vec![]), false), (None, true)] {
        // Not idle long enough for a scale-down: adoption is all this evaluation does.
        let mut bed = bed(Duration::from_secs(3600));
        let evaluate = tokio::spawn({
            let (scaler, pipeline) = (Arc::new(bed.scaler), bed.pipeline.clone());
            async move { scaler.evaluate(&pipeline).await }
        });
        bed.api.expect(Method::GET, SCALE).await.ok(scale(1));
        let list = bed.api.expect(Method::GET, PODS).await;
        match &answer {
            Some(created) => list.ok(pods(created)),
            None => list.fail(403, "Forbidden", "pods is forbidden"),
        }
        evaluate.await.expect("evaluate");
        let now = bed.pipelines.now();
        let state = bed.pipeline.lock();
        assert_eq!(state.scale.replicas(), Some(1), "adopted");
        assert_eq!(state.backlog.is_held(now), held, "pods {answer:?}");
    }
}

/// At zero, adoption holds nothing back and an object scales the workers up through /scale,
/// under the scaler's field manager, with its Event and its status fields.
#[tokio::test]
async fn at_zero_work_scales_up_through_the_scale_subresource() {
    let mut bed = bed(Duration::from_secs(60));
    admit_one(&bed);
    let evaluate = tokio::spawn({
        let (scaler, pipeline) = (Arc::new(bed.scaler), bed.pipeline.clone());
        async move { scaler.evaluate(&pipeline).await }
    });
    bed.api.expect(Method::GET, SCALE).await.ok(scale(0));
    // At zero, pods still listed are leftovers of an earlier scale-down: none here.
    bed.api.expect(Method::GET, PODS).await.ok(worker_pods(0, &[]));
    let patch = bed.api.expect(Method::PATCH, SCALE).await;
    assert_eq!(patch.query("fieldManager").as_deref(), Some(FIELD_MANAGER));
    assert_eq!(patch.body, json!({"spec": {"replicas": 1}}));
    patch.ok(scale(1));
    let event = bed.api.expect(Method::POST, "/events").await;
    assert_eq!((event.body["reason"].clone(), event.body["action"].clone()), (json!("ScaledUp"), json!("Scale0To1")));
    event.echo();
    evaluate.await.expect("evaluate");
    let status = bed.status.expect(Method::PATCH, "/datapipelines/invoices/status").await;
    assert_eq!(status.query("fieldManager").as_deref(), Some("zeroflow-scaler"));
    assert_eq!(status.body["status"]["desiredReplicas"], 1);
    assert_eq!(status.body["status"]["lastScaleReason"], "objects arrived while scaled to zero");
    status.echo();
    let now = bed.pipelines.now();
    assert!(!bed.pipeline.lock().backlog.is_held(now), "nothing to recover at zero");
}

/// Worker pods `invoices-worker-<i>`, created under this leader; those in `going` are being
/// deleted (the ReplicaSet chose them).
fn worker_pods(count: usize, going: &[usize]) -> serde_json::Value {
    let items: Vec<_> = (0..count)
        .map(|i| {
            let mut metadata = json!({"name": format!("invoices-worker-{i}"), "namespace": "finance",
                                      "creationTimestamp": "2100-01-01T00:00:00Z"});
            if going.contains(&i) {
                metadata["deletionTimestamp"] = json!("2100-01-01T00:01:00Z");
            }
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata})
        })
        .collect();
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {}, "items": items})
}

/// A scale-down retires every idle worker before it is sent: until the ReplicaSet has chosen
/// which pods go, the work API gives idle workers nothing (an idle worker would otherwise lease
/// an object in the moments before it is stopped, and be stopped busy). Busy pods get their
/// deletion cost first. Once the chosen pods are terminating, the survivors take work again and
/// the terminating pods never do.
#[tokio::test]
async fn a_scale_down_retires_idle_workers_until_the_replicaset_has_chosen() {
    let mut bed = bed(Duration::from_secs(60));
    let worker = |i: usize| Some(format!("invoices-worker-{i}"));
    {
        let mut state = bed.pipeline.lock();
        let mut settings = (*state.settings).clone();
        settings.scale.stabilization = Duration::from_secs(60);
        settings.scale.target_per_replica = 1;
        state.settings = Arc::new(settings);
    }
    admit_one(&bed);
    let scaler = Arc::new(bed.scaler);
    // Adoption of 3 workers made under this leader, and a first look: one object wants one
    // worker, but the scale-down waits for the next decision (stabilization).
    let first = tokio::spawn({
        let (scaler, pipeline) = (scaler.clone(), bed.pipeline.clone());
        async move { scaler.evaluate(&pipeline).await }
    });
    bed.api.expect(Method::GET, SCALE).await.ok(scale(3));
    bed.api.expect(Method::GET, PODS).await.ok(worker_pods(3, &[]));
    first.await.expect("evaluate");
    assert_eq!(bed.pipeline.lock().scale.replicas(), Some(3));
    // Leasing begins once adopted: worker 0 takes the object.
    {
        let now = bed.pipelines.now();
        let mut state = bed.pipeline.lock();
        let lease = state.backlog.lease(now).expect("leased");
        let granted = Granted {
            backlog_id: lease.id,
            item: lease.item,
            attempt: lease.attempt,
            deadline: lease.deadline,
            granted_at: now,
            holder: worker(0),
        };
        state.leases.insert(granted);
    }

    let second = tokio::spawn({
        let (scaler, pipeline) = (scaler.clone(), bed.pipeline.clone());
        async move { scaler.evaluate(&pipeline).await }
    });
    bed.api.expect(Method::GET, PODS).await.ok(worker_pods(3, &[]));
    let cost = bed.api.expect(Method::PATCH, "/pods/invoices-worker-0").await;
    // Retired before the first write (the request above was sent after it).
    {
        let state = bed.pipeline.lock();
        assert!(state.may_lease_to(worker(0).as_deref()), "the busy worker is not retired");
        assert!(!state.may_lease_to(worker(1).as_deref()) && !state.may_lease_to(worker(2).as_deref()));
        assert!(state.may_lease_to(None), "a worker whose token names no pod cannot be told apart");
    }
    assert_eq!(cost.body["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"], "1000");
    cost.echo();
    let patch = bed.api.expect(Method::PATCH, SCALE).await;
    assert_eq!(patch.body, json!({"spec": {"replicas": 1}}));
    patch.ok(scale(1));
    bed.api.expect(Method::POST, "/events").await.echo();
    // The ReplicaSet has not acted yet: idle workers stay retired; then it has.
    bed.api.expect(Method::GET, PODS).await.ok(worker_pods(3, &[]));
    assert!(!bed.pipeline.lock().may_lease_to(worker(1).as_deref()), "retired until the ReplicaSet chose");
    bed.api.expect(Method::GET, PODS).await.ok(worker_pods(3, &[2]));
    // Pod 1 terminating, pod 2 already gone from the API (a force deletion; KWOK's nodes).
    bed.api.expect(Method::GET, PODS).await.ok(worker_pods(2, &[1]));
    second.await.expect("evaluate");
    let state = bed.pipeline.lock();
    assert_eq!(state.scale.replicas(), Some(1));
    assert!(state.may_lease_to(worker(0).as_deref()));
    assert!(!state.may_lease_to(worker(1).as_deref()), "terminating: never again");
    assert!(!state.may_lease_to(worker(2).as_deref()), "gone while its worker may still ask: never again");
}

/// A scale-down that keeps an idle worker gives it work again once the ReplicaSet has chosen.
#[tokio::test]
async fn idle_workers_that_survive_a_scale_down_lease_again() {
    let mut bed = bed(Duration::ZERO);
    {
        let mut state = bed.pipeline.lock();
        let mut settings = (*state.settings).clone();
        settings.scale.min_replicas = 1;
        state.settings = Arc::new(settings);
    }
    let evaluate = tokio::spawn({
        let (scaler, pipeline) = (Arc::new(bed.scaler), bed.pipeline.clone());
        async move { scaler.evaluate(&pipeline).await }
    });
    bed.api.expect(Method::GET, SCALE).await.ok(scale(2));
    bed.api.expect(Method::GET, PODS).await.ok(worker_pods(2, &[]));
    // Idle for idleTimeout 0: down to minReplicas 1; both pods are idle, so both are retired.
    bed.api.expect(Method::GET, PODS).await.ok(worker_pods(2, &[]));
    let patch = bed.api.expect(Method::PATCH, SCALE).await;
    assert_eq!(patch.body, json!({"spec": {"replicas": 1}}));
    assert!(!bed.pipeline.lock().may_lease_to(Some("invoices-worker-0")), "retired during the scale-down");
    patch.ok(scale(1));
    bed.api.expect(Method::POST, "/events").await.echo();
    bed.api.expect(Method::GET, PODS).await.ok(worker_pods(2, &[1]));
    evaluate.await.expect("evaluate");
    let state = bed.pipeline.lock();
    assert!(state.may_lease_to(Some("invoices-worker-0")), "the survivor leases again");
    assert!(!state.may_lease_to(Some("invoices-worker-1")));
}

/// A new leader's first look at the bed's pipeline, finding `replicas` on its `/scale` and `pods`
/// listed; returns the pipeline once adopted.
async fn adopt(replicas: i32, pods: serde_json::Value) -> Arc<Pipeline> {
    let mut bed = bed(Duration::from_secs(60));
    let evaluate = tokio::spawn({
        let (scaler, pipeline) = (Arc::new(bed.scaler), bed.pipeline.clone());
        async move { scaler.evaluate(&pipeline).await }
    });
    bed.api.expect(Method::GET, SCALE).await.ok(scale(replicas));
    bed.api.expect(Method::GET, PODS).await.ok(pods);
    evaluate.await.expect("evaluate");
    bed.pipeline
}

/// A new leader that adopts a pipeline at zero while an earlier leader's scale-down to zero is
/// still removing pods gives those pods' workers nothing: they are stopped any moment.
#[tokio::test]
async fn pods_left_over_at_zero_are_given_nothing() {
    let pipeline = adopt(0, worker_pods(2, &[0])).await;
    let state = pipeline.lock();
    assert_eq!(state.scale.replicas(), Some(0));
    assert!(!state.may_lease_to(Some("invoices-worker-0")) && !state.may_lease_to(Some("invoices-worker-1")));
    assert!(state.may_lease_to(Some("invoices-worker-7")), "a pod of a later scale-up leases");
}

/// A new leader that adopts a pipeline above zero while an earlier leader's scale-down is
/// removing some of its pods gives the terminating ones nothing, and the others their work.
#[tokio::test]
async fn terminating_pods_found_at_adoption_are_given_nothing() {
    let pipeline = adopt(2, worker_pods(3, &[1])).await;
    let state = pipeline.lock();
    assert_eq!(state.scale.replicas(), Some(2));
    assert!(!state.may_lease_to(Some("invoices-worker-1")), "chosen by the earlier scale-down");
    assert!(state.may_lease_to(Some("invoices-worker-0")) && state.may_lease_to(Some("invoices-worker-2")));
}
