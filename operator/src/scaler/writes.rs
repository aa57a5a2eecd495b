//! What the scaler writes, against a mocked apiserver ([`crate::fixtures`]): adoption reads the
//! live count and writes nothing; scale changes go through `/scale` under `zeroflow-scaler`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::json;
use zeroflow_core::backlog::{BacklogConfig, ObjectId, WorkItem};
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
    let recorder = Recorder::new(client.clone(), Reporter { controller: "zeroflow-test".into(), instance: None });
    let scaler = Scaler::new(client, pipelines.clone(), recorder, writer);
    Bed { scaler, pipeline, pipelines, api, status }
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

/// At zero, adoption holds nothing back and an object scales the workers up through /scale,
/// under the scaler's field manager, with its Event and its status fields.
#[tokio::test]
async fn at_zero_work_scales_up_through_the_scale_subresource() {
    let mut bed = bed(Duration::from_secs(60));
    let item = WorkItem {
        object: ObjectId { bucket: "raw".into(), key: "a.csv".into() },
        etag: Some("e".into()),
        version_id: None,
        size: None,
        sequencer: None,
    };
    bed.pipelines.admit_item(&bed.pipeline.key, item).expect("served").expect("admitted");
    let evaluate = tokio::spawn({
        let (scaler, pipeline) = (Arc::new(bed.scaler), bed.pipeline.clone());
        async move { scaler.evaluate(&pipeline).await }
    });
    bed.api.expect(Method::GET, SCALE).await.ok(scale(0));
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
