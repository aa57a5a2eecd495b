//! What a reconcile writes, against a mocked apiserver ([`crate::fixtures`]): the order of
//! reads and writes, their field managers, and that `replicas` is only ever the scaler's.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use kube::core::DeserializeGuard;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

use super::testing::{minimal_spec, pipeline};
use super::*;
use crate::fixtures::{self, ApiServer};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/finance/deployments";
const ACCOUNTS: &str = "/api/v1/namespaces/finance/serviceaccounts";

struct Bed {
    ctx: Arc<Context>,
    /// Requests of the reconcile itself (and its Events).
    api: ApiServer,
    /// Requests of the status writer.
    status: ApiServer,
    kicks: tokio::sync::mpsc::UnboundedReceiver<crate::runtime::Kick>,
}

fn bed() -> Bed {
    let (client, api) = fixtures::client();
    let (status_client, status) = fixtures::client();
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let (kick, kicks) = tokio::sync::mpsc::unbounded_channel();
    let pipelines = Arc::new(Pipelines::new(1, kick, metrics.clone()));
    let (writer, _task) = StatusWriter::spawn(status_client, pipelines.clone());
    let recorder = crate::events::EventRecorder::new(
        client.clone(),
        Reporter { controller: "zeroflow-test".into(), instance: None },
    );
    let ctx = Arc::new(Context {
        client,
        recorder,
        metrics,
        workers: WorkerOptions { runner_image: "runner:test".into(), work_api_url: "http://workapi".into() },
        // No dry-run probe in these request-by-request tests: the runner's delivery is fixed.
        runner_delivery: crate::controller::runner::OperatorDelivery::InitContainer,
        deliveries: Default::default(),
        default_store: DefaultStore::default(),
        concurrency: 1,
        backlog_capacity: 100_000,
        pipelines,
        status: writer,
        queues: crate::sources::sqs::pipelines::QueueRegistry::disabled(),
    });
    Bed { ctx, api, status, kicks }
}

/// A Deployment as the apiserver returns it: what was applied, owned by the pipeline.
fn owned(mut applied: Value) -> Value {
    applied["metadata"]["uid"] = json!("d-1");
    applied
}

#[tokio::test]
async fn a_new_pipeline_creates_its_deployment_with_min_replicas_then_applies_without_them() {
    let mut bed = bed();
    let mut spec = minimal_spec();
    spec.scaling.min_replicas = 2;
    let object = pipeline(spec);
    let task = tokio::spawn({
        let (ctx, object) = (bed.ctx.clone(), object.clone());
        async move { reconcile(Arc::new(DeserializeGuard(Ok(object))), ctx).await }
    });
    let api = &mut bed.api;
    api.expect(Method::GET, &format!("{ACCOUNTS}/invoices-worker")).await.fail(404, "NotFound", "not found");
    let account = api.expect(Method::PATCH, &format!("{ACCOUNTS}/invoices-worker")).await;
    assert_eq!(account.query("fieldManager").as_deref(), Some("zeroflow-controller"));
    assert_eq!(account.query("force").as_deref(), Some("true"));
    account.echo();
    api.expect(Method::GET, &format!("{DEPLOYMENTS}/invoices-worker")).await.fail(404, "NotFound", "not found");
    // Created with the first replica count, in the scaler's name: never defaulted to 1.
    let create = api.expect(Method::POST, DEPLOYMENTS).await;
    assert_eq!(create.query("fieldManager").as_deref(), Some("zeroflow-scaler"));
    assert_eq!(create.body["spec"]["replicas"], json!(2));
    let created = owned(create.body.clone());
    create.ok(created);
    // Every apply of the controller leaves replicas alone.
    let apply = api.expect(Method::PATCH, &format!("{DEPLOYMENTS}/invoices-worker")).await;
    assert_eq!(apply.query("fieldManager").as_deref(), Some("zeroflow-controller"));
    assert!(apply.body["spec"].get("replicas").is_none(), "{}", apply.body["spec"]);
    let applied = owned(apply.body.clone());
    apply.ok(applied);
    let created_event = api.expect(Method::POST, "/events").await;
    assert_eq!(created_event.body["reason"], "WorkersCreated");
    created_event.echo();
    let no_store = api.expect(Method::POST, "/events").await;
    assert_eq!(no_store.body["reason"], "NoStore");
    no_store.echo();
    let action = task.await.expect("reconcile").expect("reconciled");
    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    // The scaler is told to adopt the new Deployment at once.
    assert_eq!(bed.kicks.recv().await.map(|k| k.pipeline), Some(PipelineKey::new("finance", "invoices")));

    // Status: the controller's fields only, with its own field manager.
    let status = bed.status.expect(Method::PATCH, "/datapipelines/invoices/status").await;
    assert_eq!(status.query("fieldManager").as_deref(), Some("zeroflow-controller"));
    let fields = status.body["status"].as_object().expect("status fields").clone();
    let mut names: Vec<_> = fields.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        ["conditions", "observedGeneration", "readyReplicas", "replicas", "runnerDelivery", "workerDeployment"]
    );
    let reasons: Vec<_> =
        fields["conditions"].as_array().expect("conditions").iter().map(|c| c["type"].clone()).collect();
    assert_eq!(
        reasons,
        [
            json!("Active"),
            json!("Degraded"),
            json!("Paused"),
            json!("Ready"),
            json!("RunnerFallback"),
            json!("SourceReachable")
        ]
    );
    // The bed's operator is set to init-container: asked for, not a fallback.
    assert_eq!(fields["runnerDelivery"], "InitContainer");
    let runner = fields["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "RunnerFallback"));
    assert_eq!(
        runner.map(|c| (c["status"].clone(), c["reason"].clone())),
        Some((json!("False"), json!("InitContainerRequested")))
    );
    status.echo();
}

#[tokio::test]
async fn a_deployment_of_the_same_name_that_is_not_ours_is_never_written() {
    let mut bed = bed();
    let object = pipeline(minimal_spec());
    let task = tokio::spawn({
        let (ctx, object) = (bed.ctx.clone(), object.clone());
        async move { reconcile(Arc::new(DeserializeGuard(Ok(object))), ctx).await }
    });
    let api = &mut bed.api;
    api.expect(Method::GET, &format!("{ACCOUNTS}/invoices-worker")).await.fail(404, "NotFound", "not found");
    api.expect(Method::PATCH, &format!("{ACCOUNTS}/invoices-worker")).await.echo();
    let foreign = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "invoices-worker", "namespace": "finance", "uid": "x"},
        "spec": {"selector": {}, "template": {}}});
    api.expect(Method::GET, &format!("{DEPLOYMENTS}/invoices-worker")).await.ok(foreign);
    let event = api.expect(Method::POST, "/events").await;
    assert_eq!(event.body["reason"], "NameConflict");
    event.echo();
    let error = task.await.expect("reconcile").expect_err("refused");
    assert!(matches!(error, Error::Apply(ApplyError::NameConflict { kind: "Deployment", .. })), "{error}");
    assert!(error.needs_user_change(), "waits for a change instead of retrying");
    let status = bed.status.expect(Method::PATCH, "/datapipelines/invoices/status").await;
    let ready = status.body["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned();
    assert_eq!(ready.map(|c| (c["status"].clone(), c["reason"].clone())), Some((json!("False"), json!("ApplyFailed"))));
    status.echo();
    bed.api.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_deployment_the_apiserver_refuses_waits_for_a_spec_change() {
    let mut bed = bed();
    let task = tokio::spawn({
        let ctx = bed.ctx.clone();
        async move { reconcile(Arc::new(DeserializeGuard(Ok(pipeline(minimal_spec())))), ctx).await }
    });
    let api = &mut bed.api;
    api.expect(Method::GET, &format!("{ACCOUNTS}/invoices-worker")).await.fail(404, "NotFound", "not found");
    api.expect(Method::PATCH, &format!("{ACCOUNTS}/invoices-worker")).await.echo();
    api.expect(Method::GET, &format!("{DEPLOYMENTS}/invoices-worker")).await.fail(404, "NotFound", "not found");
    let message = "Deployment.apps \"invoices-worker\" is invalid: spec.template.spec.volumes[4].name: Duplicate value";
    api.expect(Method::POST, DEPLOYMENTS).await.fail(422, "Invalid", message);
    let event = api.expect(Method::POST, "/events").await;
    assert_eq!(event.body["reason"], "ApplyFailed");
    assert!(event.body["note"].as_str().is_some_and(|n| n.contains("Duplicate value")), "{}", event.body);
    event.echo();
    let error = task.await.expect("reconcile").expect_err("refused");
    assert!(matches!(&error, Error::Apply(ApplyError::Rejected { .. })), "{error}");
    assert!(error.needs_user_change());
    let status = bed.status.expect(Method::PATCH, "/datapipelines/invoices/status").await;
    assert!(status.body.to_string().contains("Duplicate value"), "the apiserver's words reach the conditions");
    status.echo();
}

#[tokio::test]
async fn status_that_already_shows_the_fields_is_not_written_again() {
    let bed = bed();
    let mut status_api = bed.status;
    let key = PipelineKey::new("finance", "invoices");
    let current = DataPipelineStatus { observed_generation: Some(3), replicas: 2, ..DataPipelineStatus::default() };
    bed.ctx.status.apply_over(&key, Concern::Reconcile, json!({"observedGeneration": 3, "replicas": 2}), &current);
    status_api.expect_silence(Duration::from_millis(500)).await;
    // A change is written, with the concern's field manager, and with the concern's other
    // fields as status shows them (server-side apply would remove what the apply leaves out).
    let current = DataPipelineStatus { last_redrive: Some("fix-1".into()), ..current };
    bed.ctx.status.apply_over(&key, Concern::Reconcile, json!({"observedGeneration": 4}), &current);
    let write = status_api.expect(Method::PATCH, "/datapipelines/invoices/status").await;
    let written = write.body["status"].as_object().expect("status fields");
    assert_eq!((&written["observedGeneration"], &written["replicas"]), (&json!(4), &json!(2)));
    assert_eq!(written["lastRedrive"], json!("fix-1"), "kept");
    assert!(written.keys().all(|k| Concern::Reconcile.fields().contains(&k.as_str())), "{written:?}");
    write.echo();
}
