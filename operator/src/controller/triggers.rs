//! Which changes of the objects a pipeline owns call for a reconcile.
//!
//! Every watch event of a worker Deployment or ServiceAccount used to trigger one: the
//! ServiceAccount's creation and apply, the Deployment's creation and apply (all the reconcile's
//! own writes) and each status update of the Deployment controller, so a new pipeline was
//! reconciled four or five times before its workers were even observed. With 1000 pipelines
//! those repeats filled the reconcile slots and most of the time until all were Ready went to
//! them. Now an owned object triggers its pipeline only when something the reconcile reads of it
//! changed ([`deployment_observed`]), and always when it is deleted (so it is created again).
//! Its creation does not: only the reconcile creates these objects (they carry its label and
//! its owner reference), and it has read what it created.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Resource;
use kube::runtime::watcher::{self, Event};

/// The objects of `events` whose `observed` value changed since they were last seen, and the
/// deleted ones. A newly created object is only noted. An object first seen in a (re)list counts
/// as changed unless `observed` is `None` for it (only its deletion matters then): changes missed
/// while the watch was down are caught up. A relist forgets the objects it no longer lists.
pub fn changed<K>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
    observed: impl Fn(&K) -> Option<u64> + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Send + 'static,
{
    let mut last: HashMap<String, Option<u64>> = HashMap::new();
    let mut relisted: Option<HashSet<String>> = None;
    events.filter_map(move |event| {
        let trigger = match event {
            Err(e) => Some(Err(e)),
            Ok(Event::Init) => {
                relisted = Some(HashSet::new());
                None
            }
            Ok(Event::InitDone) => {
                if let Some(seen) = relisted.take() {
                    last.retain(|uid, _| seen.contains(uid));
                }
                None
            }
            Ok(Event::Delete(object)) => {
                if let Some(uid) = object.meta().uid.as_ref() {
                    last.remove(uid);
                }
                Some(Ok(object))
            }
            Ok(Event::Apply(object)) => note(&mut last, relisted.as_mut(), observed(&object), object, false),
            Ok(Event::InitApply(object)) => note(&mut last, relisted.as_mut(), observed(&object), object, true),
        };
        std::future::ready(trigger)
    })
}

/// Records `object`'s observed `value`; the object when it counts as changed (see [`changed`]).
fn note<K: Resource>(
    last: &mut HashMap<String, Option<u64>>,
    relisted: Option<&mut HashSet<String>>,
    value: Option<u64>,
    object: K,
    listed: bool,
) -> Option<Result<K, watcher::Error>> {
    let Some(uid) = object.meta().uid.clone() else { return Some(Ok(object)) };
    if let Some(seen) = relisted {
        seen.insert(uid.clone());
    }
    let changed = match last.insert(uid, value) {
        None => listed && value.is_some(),
        Some(before) => before != value,
    };
    changed.then_some(Ok(object))
}

/// What a reconcile reads of its worker Deployment, hashed: the wanted replicas and the
/// Deployment controller's counts ([`super::status::WorkerObservation::from_deployment`]), the
/// spec's generation (an edit by someone else is put right), the `ReplicaFailure` condition
/// ([`super::observe::trouble`]) and whether it is being deleted. Keep it in step with them.
pub fn deployment_observed(deployment: &Deployment) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    deployment.metadata.generation.hash(&mut hasher);
    deployment.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    deployment.spec.as_ref().and_then(|s| s.replicas).hash(&mut hasher);
    if let Some(status) = &deployment.status {
        status.observed_generation.hash(&mut hasher);
        status.replicas.hash(&mut hasher);
        status.ready_replicas.hash(&mut hasher);
        status.updated_replicas.hash(&mut hasher);
        for condition in status.conditions.iter().flatten().filter(|c| c.type_ == "ReplicaFailure") {
            (&condition.status, &condition.reason, &condition.message).hash(&mut hasher);
        }
    }
    Some(hasher.finish())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::ServiceAccount;
    use kube::api::ObjectMeta;

    use super::*;

    fn deployment(uid: &str, generation: i64, replicas: i32, status: Option<DeploymentStatus>) -> Deployment {
        Deployment {
            metadata: ObjectMeta { uid: Some(uid.into()), generation: Some(generation), ..ObjectMeta::default() },
            spec: Some(DeploymentSpec { replicas: Some(replicas), ..DeploymentSpec::default() }),
            status,
        }
    }

    fn account(uid: &str) -> ServiceAccount {
        ServiceAccount {
            metadata: ObjectMeta { uid: Some(uid.into()), ..ObjectMeta::default() },
            ..ServiceAccount::default()
        }
    }

    /// The uids of the objects that come out of `changed` for `events`.
    async fn triggered<K: Resource + Send + 'static>(
        events: Vec<Event<K>>,
        observed: impl Fn(&K) -> Option<u64> + Send + 'static,
    ) -> Vec<String> {
        let stream = changed(futures::stream::iter(events.into_iter().map(Ok)), observed);
        stream
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|r| r.map(|o| o.meta().uid.clone().unwrap_or_default()).unwrap_or_else(|e| e.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn deployments_trigger_on_what_the_reconcile_reads_and_on_deletion() {
        let observed_once = DeploymentStatus { observed_generation: Some(1), ..DeploymentStatus::default() };
        let progressing = DeploymentStatus {
            observed_generation: Some(1),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: Some("NewReplicaSetAvailable".into()),
                ..DeploymentCondition::default()
            }]),
            ..DeploymentStatus::default()
        };
        let mut failing = progressing.clone();
        failing.conditions.get_or_insert_default().push(DeploymentCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            message: Some("exceeded quota".into()),
            ..DeploymentCondition::default()
        });
        let events = vec![
            Event::Apply(deployment("a", 1, 0, None)), // created by the reconcile
            Event::Apply(deployment("a", 1, 0, None)), // applied, unchanged
            Event::Apply(deployment("a", 1, 0, Some(observed_once.clone()))), // observed: triggers
            Event::Apply(deployment("a", 1, 0, Some(progressing.clone()))), // a condition not read
            Event::Apply(deployment("a", 1, 0, Some(failing))), // ReplicaFailure: triggers
            Event::Apply(deployment("a", 2, 0, Some(progressing.clone()))), // spec edited: triggers
            Event::Apply(deployment("a", 2, 1, Some(progressing.clone()))), // scaled: triggers
            Event::Delete(deployment("a", 2, 1, Some(progressing))), // deleted: triggers
            Event::Apply(deployment("a", 1, 0, None)), // created again
            Event::Apply(deployment("a", 1, 0, Some(observed_once))), // observed: triggers
        ];
        assert_eq!(triggered(events, deployment_observed).await, ["a"; 6]);
    }

    #[tokio::test]
    async fn service_accounts_trigger_only_when_deleted() {
        let events = vec![
            Event::Init,
            Event::InitApply(account("s")),
            Event::InitDone,
            Event::Apply(account("s")),
            Event::Delete(account("s")),
            Event::Apply(account("t")),
        ];
        assert_eq!(triggered(events, |_| None).await, ["s"]);
    }

    #[tokio::test]
    async fn a_relist_forgets_objects_it_no_longer_lists() {
        let events = vec![
            Event::Init,
            Event::InitApply(deployment("a", 1, 0, None)), // the first list: each once
            Event::InitApply(deployment("b", 1, 0, None)),
            Event::InitDone,
            Event::Init,
            Event::InitApply(deployment("a", 1, 0, None)), // unchanged across the relist
            Event::InitDone,
            // b was deleted while the watch was down: listed again, it counts as changed.
            Event::Init,
            Event::InitApply(deployment("b", 1, 0, None)),
            Event::InitDone,
        ];
        assert_eq!(triggered(events, deployment_observed).await, ["a", "b", "b"]);
    }
}
