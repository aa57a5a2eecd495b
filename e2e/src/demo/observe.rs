//! Watching a running pipeline for `e2e/demo`: its worker Deployment and pods through watches
//! (so a scale from zero is timed to the event, not to a poll), its status and the sink's
//! outputs polled a few times a second.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::stream::BoxStream;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt as _, watcher};
use object_store::ObjectStore;
use object_store::path::Path;

use super::timeline::Snapshot;

/// How often the status and the sink are polled.
const POLL: Duration = Duration::from_millis(250);

/// A pipeline's workers, status and outputs, as one [`Snapshot`] stream.
pub struct Observer {
    deployments: BoxStream<'static, Result<watcher::Event<Deployment>, watcher::Error>>,
    pod_events: BoxStream<'static, Result<watcher::Event<Pod>, watcher::Error>>,
    pods: BTreeMap<String, Pod>,
    /// Pods of a list in progress.
    relist: Option<BTreeMap<String, Pod>>,
    replicas: i32,
    pipelines: Api<DynamicObject>,
    name: String,
    sink: Option<(Arc<dyn ObjectStore>, Path, BTreeSet<String>)>,
    outputs: usize,
    failed: i64,
    succeeded: i64,
    /// Whether each watch has listed its objects once.
    listed: (bool, bool),
    tick: tokio::time::Interval,
}

impl Observer {
    /// Watches pipeline `name` (its `<name>-worker` Deployment and pods labelled
    /// `zeroflow.dev/pipeline=<name>`); with `sink`, counts which of the `expected` keys exist.
    pub fn new(
        client: &kube::Client,
        pipelines: Api<DynamicObject>,
        namespace: &str,
        name: &str,
        sink: Option<(Arc<dyn ObjectStore>, Path, BTreeSet<String>)>,
    ) -> Self {
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let by_name = watcher::Config::default().fields(&format!("metadata.name={name}-worker"));
        let by_label = watcher::Config::default().labels(&format!("zeroflow.dev/pipeline={name}"));
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            deployments: watcher(deployments, by_name).default_backoff().boxed(),
            pod_events: watcher(pods, by_label).default_backoff().boxed(),
            pods: BTreeMap::new(),
            relist: None,
            replicas: 0,
            pipelines,
            name: name.to_owned(),
            sink,
            outputs: 0,
            failed: 0,
            succeeded: 0,
            listed: (false, false),
            tick,
        }
    }

    /// Waits until both watches have listed their objects and the status was read once, so
    /// that what follows is timed from events, not from the start of a watch.
    pub async fn prime(&mut self) -> anyhow::Result<Snapshot> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.listed != (true, true) {
            tokio::time::timeout_at(deadline, self.next()).await.context("the watches did not start within 30 s")??;
        }
        self.poll().await?;
        Ok(self.snapshot())
    }

    /// Waits for the next change (or poll) and returns the pipeline as it is now.
    pub async fn next(&mut self) -> anyhow::Result<Snapshot> {
        tokio::select! {
            event = self.deployments.next() => {
                match event.context("the Deployment watch ended")? {
                    Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => {
                        self.replicas = d.spec.and_then(|s| s.replicas).unwrap_or(0);
                    }
                    Ok(watcher::Event::Delete(_)) => self.replicas = 0,
                    Ok(watcher::Event::InitDone) => self.listed.0 = true,
                    Ok(watcher::Event::Init) => {}
                    // The watcher backs off and resumes by itself.
                    Err(e) => eprintln!("  (watch of the worker Deployment: {e}; resuming)"),
                }
            }
            event = self.pod_events.next() => {
                match event.context("the pod watch ended")? {
                    // A (re)list is buffered and swapped in whole, so it never looks like the pods went away.
                    Ok(watcher::Event::Init) => self.relist = Some(BTreeMap::new()),
                    Ok(watcher::Event::InitApply(p)) => {
                        self.relist.get_or_insert_default().insert(p.metadata.name.clone().unwrap_or_default(), p);
                    }
                    Ok(watcher::Event::InitDone) => {
                        self.pods = self.relist.take().unwrap_or_default();
                        self.listed.1 = true;
                    }
                    Ok(watcher::Event::Apply(p)) => {
                        self.pods.insert(p.metadata.name.clone().unwrap_or_default(), p);
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        self.pods.remove(p.metadata.name.as_deref().unwrap_or_default());
                    }
                    Err(e) => eprintln!("  (watch of the worker pods: {e}; resuming)"),
                }
            }
            _ = self.tick.tick() => self.poll().await?,
        }
        Ok(self.snapshot())
    }

    async fn poll(&mut self) -> anyhow::Result<()> {
        let pipeline = self.pipelines.get(&self.name).await.context("reading the DataPipeline")?;
        let status = &pipeline.data["status"];
        self.failed = status["failed"].as_i64().unwrap_or(0);
        self.succeeded = status["succeeded"].as_i64().unwrap_or(0);
        if let Some((store, prefix, expected)) = &self.sink {
            let listed: Vec<_> = store.list(Some(prefix)).try_collect().await.context("listing the sink bucket")?;
            self.outputs = listed.iter().filter(|o| expected.contains(o.location.as_ref())).count();
        }
        Ok(())
    }

    /// The pipeline as last seen.
    pub fn snapshot(&self) -> Snapshot {
        let running: Vec<&Pod> = self.pods.values().filter(|p| is_running(p)).collect();
        Snapshot {
            replicas: self.replicas,
            running: running.len(),
            pods: self.pods.len(),
            node: running.first().and_then(|p| p.spec.as_ref()?.node_name.clone()),
            outputs: self.outputs,
            failed: self.failed,
        }
    }

    /// `status.succeeded` at the last poll.
    pub fn succeeded(&self) -> i64 {
        self.succeeded
    }

    /// Why a worker pod cannot run, if one of them cannot (image missing, crash loop, ...).
    pub fn pod_problem(&self) -> Option<String> {
        self.pods.iter().find_map(|(name, pod)| pod_problem(pod).map(|why| format!("worker pod {name}: {why}")))
    }
}

fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Waiting reasons that mean a pod will not run without someone changing something.
const STUCK: &[&str] = &[
    "ErrImageNeverPull",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
];

/// The reason and message of a container of `pod` that is stuck waiting, if any.
pub fn pod_problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let containers = status.init_container_statuses.iter().flatten().chain(status.container_statuses.iter().flatten());
    containers.into_iter().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        STUCK.contains(&reason).then(|| {
            format!("container {} is {reason}: {}", c.name, waiting.message.as_deref().unwrap_or("(no message)"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_that_cannot_pull_its_image_is_a_problem_and_a_starting_one_is_not() {
        let pod = |reason: &str| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "w"},
                "status": {"phase": "Pending", "containerStatuses": [{
                    "name": "transform", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": "image not present"}}}]}
            }))
            .unwrap()
        };
        assert_eq!(
            pod_problem(&pod("ErrImageNeverPull")).as_deref(),
            Some("container transform is ErrImageNeverPull: image not present")
        );
        assert_eq!(pod_problem(&pod("ContainerCreating")), None);
        assert_eq!(pod_problem(&Pod::default()), None);
    }
}
