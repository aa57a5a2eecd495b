//! What the operator learned about runner delivery while it runs: whether the apiserver keeps
//! image volumes (asked once with a server-side dry run), and which pipelines' workers could not
//! start with one. The choice itself is pure ([`super::runner::choose`]).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};
use zeroflow_core::PipelineKey;

use super::runner::{self, ImageVolumesKept};

/// After a probe that got no answer (a network error, RBAC), the next reconcile that needs one
/// asks again after this long.
const PROBE_RETRY: Duration = Duration::from_secs(30);

/// The operator's memory of runner delivery, shared by every reconcile.
#[derive(Default)]
pub struct Deliveries {
    probe: tokio::sync::Mutex<Probe>,
    failed: Mutex<HashMap<PipelineKey, String>>,
}

#[derive(Default)]
struct Probe {
    answer: ImageVolumesKept,
    last_try: Option<Instant>,
}

impl Deliveries {
    /// Whether the apiserver keeps `volumes[].image` in pod templates: a dry-run create of a
    /// Deployment in `namespace` (the operator may create Deployments there; nothing is stored)
    /// and a look at what comes back. The first answer is kept: the feature gate changes only
    /// with an apiserver restart, and a restarted operator asks again.
    pub async fn image_volumes_kept(&self, client: &Client, namespace: &str, runner_image: &str) -> ImageVolumesKept {
        let mut probe = self.probe.lock().await;
        if probe.answer.is_some() || probe.last_try.is_some_and(|t| t.elapsed() < PROBE_RETRY) {
            return probe.answer;
        }
        probe.last_try = Some(Instant::now());
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let params = PostParams { dry_run: true, field_manager: Some("zeroflow-operator".into()) };
        match api.create(&params, &runner::probe_deployment(runner_image)).await {
            Ok(created) => {
                let kept = runner::keeps_image_volume(&created);
                info!(kept, namespace, "asked the apiserver whether it keeps image volumes (a dry-run create)");
                probe.answer = Some(kept);
            }
            Err(e) => {
                warn!(error = %e, namespace, "cannot ask the apiserver whether it keeps image volumes; the init container delivers the runner for now")
            }
        }
        probe.answer
    }

    /// Why image volumes failed on this pipeline's workers, once they did.
    pub fn failed(&self, key: &PipelineKey) -> Option<String> {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned()
    }

    /// Records that image volumes failed on this pipeline's workers: from now on its runner
    /// comes by init container.
    pub fn fail(&self, key: &PipelineKey, why: String) {
        self.failed.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone(), why);
    }

    /// Forgets pipelines that are gone, so one created again under the same name starts over.
    pub fn forget(&self, gone: &[PipelineKey]) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        for key in gone {
            failed.remove(key);
        }
    }
}
