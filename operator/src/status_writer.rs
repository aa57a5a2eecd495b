//! The one writer of `DataPipeline` status.
//!
//! The parts of the operator that report status, each on its own fields, and each is one field
//! manager in server-side apply, so the apiserver itself records who owns what:
//!
//! | concern | field manager | fields |
//! |---|---|---|
//! | [`Concern::Reconcile`] | `zeroflow-controller` | `observedGeneration`, `conditions`, `workerDeployment`, `replicas`, `readyReplicas`, `lastRedrive`, `runnerDelivery` |
//! | [`Concern::Scale`] | `zeroflow-scaler` | `desiredReplicas`, `lastScaleTime`, `lastScaleReason` |
//! | [`Concern::Schedule`] | `zeroflow-schedule` | `activeSchedule` |
//! | [`Concern::Progress`] | `zeroflow-progress` | `pending`, `inFlight`, `succeeded`, `failed`, `usage`, `lastColdStartSeconds`, `lastEventTime` |
//! | [`Concern::Queue`] | `zeroflow-queue` | `queue` |
//!
//! Callers hand their fields to [`StatusWriter::apply`] and go on; the writer task coalesces
//! (only the latest fields of a pipeline's concern are written), skips fields equal to what the
//! status already shows (so an idle fleet causes no writes, also right after a restart: the
//! cache is seeded from the object), and retries failed writes. Callers give only the fields
//! they change, but every apply states all the fields its concern shows, since server-side
//! apply removes a field its manager leaves out; a caller removes a field by setting it to
//! `null`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use zeroflow_core::PipelineKey;

use crate::api::{DataPipeline, DataPipelineStatus};
use crate::runtime::Pipelines;

/// Status writes in flight at once.
const CONCURRENCY: usize = 8;
/// A failed write is tried again after this long (unless newer fields replace it).
const RETRY: Duration = Duration::from_secs(2);

/// Who reports a set of status fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Concern {
    Reconcile,
    Scale,
    Schedule,
    Progress,
    /// The pipeline's own SQS queue ([`crate::sources::sqs::pipelines`]).
    Queue,
}

impl Concern {
    pub const ALL: [Concern; 5] =
        [Concern::Reconcile, Concern::Scale, Concern::Schedule, Concern::Progress, Concern::Queue];

    /// The server-side apply field manager of the concern.
    pub fn field_manager(self) -> &'static str {
        match self {
            Concern::Reconcile => "zeroflow-controller",
            Concern::Scale => "zeroflow-scaler",
            Concern::Schedule => "zeroflow-schedule",
            Concern::Progress => "zeroflow-progress",
            Concern::Queue => "zeroflow-queue",
        }
    }

    /// The status fields (JSON names) the concern owns.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Concern::Reconcile => &[
                "observedGeneration",
                "conditions",
                "workerDeployment",
                "replicas",
                "readyReplicas",
                "lastRedrive",
                "runnerDelivery",
            ],
            Concern::Scale => &["desiredReplicas", "lastScaleTime", "lastScaleReason"],
            Concern::Schedule => &["activeSchedule"],
            Concern::Progress => &[
                "pending",
                "inFlight",
                "succeeded",
                "failed",
                "recentFailures",
                "usage",
                "lastColdStartSeconds",
                "lastEventTime",
            ],
            Concern::Queue => &["queue"],
        }
    }

    /// The concern's fields of `status`, as JSON: what an apply of them would set.
    pub fn project(self, status: &DataPipelineStatus) -> Map<String, Value> {
        let Ok(Value::Object(all)) = serde_json::to_value(status) else { return Map::new() };
        all.into_iter().filter(|(k, _)| self.fields().contains(&k.as_str())).collect()
    }
}

/// What the writer last knows each concern's fields to be, per pipeline (kept in the
/// pipeline's runtime, seeded from the object's status when it is taken up).
///
/// Each field is kept as its compact JSON text rather than as a `Value` tree: the trees (the
/// conditions above all, a map node and a string per key) were the largest per-pipeline cost of
/// the operator, about 8 KB each, 8 MB with 1000 pipelines. `serde_json`'s maps are sorted, so
/// equal values have equal texts.
#[derive(Debug, Clone, Default)]
pub struct Written(HashMap<Concern, BTreeMap<&'static str, Box<str>>>);

impl Written {
    pub fn seeded(status: &DataPipelineStatus) -> Self {
        let mut written = Self::default();
        for concern in Concern::ALL {
            written.record(concern, &concern.project(status));
        }
        written
    }

    /// Whether applying `fields` for `concern` would change nothing.
    pub fn unchanged(&self, concern: Concern, fields: &Map<String, Value>) -> bool {
        let current = self.0.get(&concern);
        fields.iter().all(|(k, v)| shows_text(current.and_then(|c| c.get(k.as_str())).map(|t| &**t), v))
    }

    /// The last known value of one field, read as a `T`.
    pub fn get<T: serde::de::DeserializeOwned>(&self, concern: Concern, field: &str) -> Option<T> {
        let text = self.0.get(&concern)?.get(field)?;
        serde_json::from_str(text).ok()
    }

    /// Every field of `concern` as last known, `null` ones included.
    pub fn fields(&self, concern: Concern) -> Map<String, Value> {
        let Some(known) = self.0.get(&concern) else { return Map::new() };
        known.iter().filter_map(|(k, text)| Some(((*k).to_owned(), serde_json::from_str(text).ok()?))).collect()
    }

    /// Notes `fields` as written; fields the concern does not own are not kept (the writer
    /// never sends them).
    pub fn record(&mut self, concern: Concern, fields: &Map<String, Value>) {
        let current = self.0.entry(concern).or_default();
        for (k, v) in fields {
            let Some(field) = concern.fields().iter().find(|f| **f == k.as_str()) else { continue };
            current.insert(field, v.to_string().into_boxed_str());
        }
    }
}

/// The status of one apply: every field the concern is known to show (`known`), with `fields`
/// over them. Server-side apply removes a field that its manager applied before and leaves out
/// now (Kubernetes documentation, "Server-Side Apply", field management), so an apply of only
/// the changed fields would remove the others: `lastRedrive` went with the next reconcile's
/// write, and the re-drive ran again. A field is removed only by setting it to `null`.
fn apply_body(known: Map<String, Value>, fields: &Map<String, Value>) -> Map<String, Value> {
    let mut body: Map<String, Value> = known.into_iter().filter(|(_, v)| !v.is_null()).collect();
    for (k, v) in fields {
        body.insert(k.clone(), v.clone());
    }
    body
}

/// Whether a field that status shows as `current` already is `wanted`; `null` (a removal) is
/// what an absent field already is.
fn shows(current: Option<&Value>, wanted: &Value) -> bool {
    current.map_or(wanted.is_null(), |c| c == wanted)
}

/// [`shows`] for a field kept as JSON text.
fn shows_text(current: Option<&str>, wanted: &Value) -> bool {
    match current {
        None => wanted.is_null(),
        // Texts compared, not `Value == str` (which compares a JSON string's contents).
        Some(text) => serde_json::to_string(wanted).is_ok_and(|wanted| wanted == text),
    }
}

struct Request {
    key: PipelineKey,
    concern: Concern,
    fields: Map<String, Value>,
    /// What the caller knows status shows (the controller has the object); else the writer's
    /// own record in the pipeline's runtime is the reference.
    current: Option<Map<String, Value>>,
}

/// Hands status fields to the writer task.
#[derive(Clone)]
pub struct StatusWriter {
    tx: mpsc::UnboundedSender<Request>,
}

impl StatusWriter {
    /// Starts the writer task; it ends when every `StatusWriter` is dropped.
    pub fn spawn(client: Client, pipelines: Arc<Pipelines>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, tokio::spawn(run(client, pipelines, rx)))
    }

    /// Asks for `fields` (a JSON object of status fields the concern owns) to be applied.
    pub fn apply(&self, key: &PipelineKey, concern: Concern, fields: Value) {
        self.send(key, concern, fields, None);
    }

    /// Like [`StatusWriter::apply`], compared with `current` (the status the caller's copy of
    /// the object shows) rather than with what this writer last wrote.
    pub fn apply_over(&self, key: &PipelineKey, concern: Concern, fields: Value, current: &DataPipelineStatus) {
        self.send(key, concern, fields, Some(concern.project(current)));
    }

    fn send(&self, key: &PipelineKey, concern: Concern, fields: Value, current: Option<Map<String, Value>>) {
        let Value::Object(mut fields) = fields else { return };
        fields.retain(|k, _| concern.fields().contains(&k.as_str()));
        if fields.is_empty() {
            return;
        }
        // A closed channel only means the process is stopping.
        let _ = self.tx.send(Request { key: key.clone(), concern, fields, current });
    }
}

async fn run(client: Client, pipelines: Arc<Pipelines>, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut pending: HashMap<(PipelineKey, Concern), Pending> = HashMap::new();
    loop {
        if pending.is_empty() {
            let Some(request) = rx.recv().await else { return };
            add(&mut pending, request);
        }
        while let Ok(request) = rx.try_recv() {
            add(&mut pending, request);
        }
        let batch: Vec<_> = pending.drain().collect();
        let failed: Vec<_> = futures::stream::iter(batch)
            .map(|((key, concern), pending)| {
                let (client, pipelines) = (client.clone(), pipelines.clone());
                async move {
                    let ok = write(&client, &pipelines, &key, concern, &pending).await;
                    (!ok).then_some(((key, concern), pending))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await;
        if !failed.is_empty() {
            tokio::time::sleep(RETRY).await;
            for (slot, retry) in failed {
                // Newer fields that arrived meanwhile win over the failed ones.
                pending.entry(slot).or_insert(retry);
            }
        }
    }
}

/// The latest fields of one pipeline's concern, waiting to be written.
#[derive(Default)]
struct Pending {
    fields: Map<String, Value>,
    current: Option<Map<String, Value>>,
}

fn add(pending: &mut HashMap<(PipelineKey, Concern), Pending>, request: Request) {
    let slot = pending.entry((request.key, request.concern)).or_default();
    for (k, v) in request.fields {
        slot.fields.insert(k, v);
    }
    if request.current.is_some() {
        slot.current = request.current;
    }
}

/// Writes one concern's fields; true when done (or nothing to do), false to retry.
async fn write(client: &Client, pipelines: &Pipelines, key: &PipelineKey, concern: Concern, pending: &Pending) -> bool {
    let fields = &pending.fields;
    let pipeline = pipelines.get(key);
    let unchanged = match (&pending.current, &pipeline) {
        (Some(current), _) => fields.iter().all(|(k, v)| shows(current.get(k), v)),
        (None, Some(pipeline)) => pipeline.lock().status.unchanged(concern, fields),
        // A pipeline this replica does not serve, and nothing to compare with: not written for.
        (None, None) => return true,
    };
    if unchanged {
        return true;
    }
    let known = match (&pipeline, &pending.current) {
        (Some(pipeline), _) => pipeline.lock().status.fields(concern),
        (None, Some(current)) => current.clone(),
        (None, None) => Map::new(),
    };
    let api: Api<DataPipeline> = Api::namespaced(client.clone(), &key.namespace);
    let patch = json!({
        "apiVersion": DataPipeline::api_version(&()),
        "kind": DataPipeline::kind(&()),
        "status": apply_body(known, fields),
    });
    let params = PatchParams::apply(concern.field_manager()).force();
    match api.patch_status(&key.name, &params, &Patch::Apply(&patch)).await {
        Ok(_) => {
            debug!(%key, ?concern, "status written");
            if let Some(pipeline) = pipeline {
                pipeline.lock().status.record(concern, fields);
            }
            true
        }
        Err(kube::Error::Api(e)) if e.code == 404 => true,
        Err(e) => {
            warn!(%key, ?concern, error = %e, "failed to write status; retrying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concerns_own_disjoint_fields_that_cover_the_status() {
        let mut all: Vec<&str> = Concern::ALL.iter().flat_map(|c| c.fields().iter().copied()).collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "no field has two owners");
        let status = DataPipelineStatus {
            observed_generation: Some(1),
            worker_deployment: Some("w".into()),
            last_event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            )),
            last_scale_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            )),
            last_scale_reason: Some("idle".into()),
            last_cold_start_seconds: Some(1.0),
            last_redrive: Some("1".into()),
            conditions: vec![],
            ..DataPipelineStatus::default()
        };
        let Ok(Value::Object(serialized)) = serde_json::to_value(&status) else { panic!("an object") };
        for field in serialized.keys() {
            assert!(all.contains(&field.as_str()), "status field {field} has no owner");
        }
    }

    #[test]
    fn every_apply_states_all_the_fields_its_concern_shows() {
        // Server-side apply would remove what an apply leaves out: a reconcile that changes
        // `replicas` must keep the `lastRedrive` an earlier one wrote.
        let status = DataPipelineStatus { replicas: 1, ..DataPipelineStatus::default() };
        let mut written = Written::seeded(&status);
        let Value::Object(redrive) = json!({"lastRedrive": "fix-1", "replicas": 1}) else { unreachable!() };
        written.record(Concern::Reconcile, &redrive);
        let Value::Object(scaled) = json!({"replicas": 0, "conditions": []}) else { unreachable!() };
        let body = apply_body(written.fields(Concern::Reconcile), &scaled);
        assert_eq!(body["lastRedrive"], json!("fix-1"));
        assert_eq!(body["replicas"], json!(0), "the new value wins");
        assert_eq!(body["conditions"], json!([]));
        assert!(!body.contains_key("pending"), "only the concern's own fields");
        // A removal is a null, and a field removed before is not sent again.
        let Value::Object(removed) = json!({"activeSchedule": null}) else { unreachable!() };
        assert_eq!(apply_body(written.fields(Concern::Schedule), &removed)["activeSchedule"], Value::Null);
        written.record(Concern::Schedule, &removed);
        let Value::Object(nothing) = json!({}) else { unreachable!() };
        assert!(apply_body(written.fields(Concern::Schedule), &nothing).is_empty());
    }

    #[test]
    fn only_changed_fields_are_written() {
        let status = DataPipelineStatus { pending: 3, succeeded: 7, ..DataPipelineStatus::default() };
        let mut written = Written::seeded(&status);
        let same = json!({"pending": 3, "succeeded": 7});
        let Value::Object(same) = same else { unreachable!() };
        assert!(written.unchanged(Concern::Progress, &same), "seeded from the object: no write after a restart");
        let Value::Object(more) = json!({"pending": 4}) else { unreachable!() };
        assert!(!written.unchanged(Concern::Progress, &more));
        written.record(Concern::Progress, &more);
        assert!(written.unchanged(Concern::Progress, &more));
        let Value::Object(scale) = json!({"lastScaleReason": "idle"}) else { unreachable!() };
        assert!(!written.unchanged(Concern::Scale, &scale), "a field never written is a change");
        let Value::Object(none) = json!({"activeSchedule": null}) else { unreachable!() };
        assert!(written.unchanged(Concern::Schedule, &none), "removing a field status does not show is no change");
        assert_eq!(written.get::<u64>(Concern::Progress, "pending"), Some(4));
        assert_eq!(written.get::<u64>(Concern::Progress, "failed"), Some(0), "seeded from the object");
        let Value::Object(conditions) = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Idle"}]})
        else {
            unreachable!()
        };
        assert!(!written.unchanged(Concern::Reconcile, &conditions));
        written.record(Concern::Reconcile, &conditions);
        let Value::Object(reordered) = json!({"conditions": [{"reason": "Idle", "status": "True", "type": "Ready"}]})
        else {
            unreachable!()
        };
        assert!(written.unchanged(Concern::Reconcile, &reordered), "the same object, keys in another order");
        let Value::Object(foreign) = json!({"pending": 9}) else { unreachable!() };
        written.record(Concern::Queue, &foreign);
        assert_eq!(written.get::<u64>(Concern::Queue, "pending"), None, "a field the concern does not own is not kept");
    }
}
