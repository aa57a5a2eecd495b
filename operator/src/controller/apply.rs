//! The apply step: the worker ServiceAccount and Deployment, server-side applied by the
//! controller's field manager. `spec.replicas` is the scaler's: the controller's applies never
//! carry it, and the request that creates the Deployment carries the first count under the
//! scaler's field manager, so the apiserver neither defaults it to 1 nor ever resets it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::with_initial_replicas;
use crate::api::DataPipeline;

/// Field manager of every object and status field the controller writes.
pub const FIELD_MANAGER: &str = "zeroflow-controller";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("failed to read {kind}: {source}")]
    Read { kind: &'static str, source: kube::Error },
    #[error("failed to apply {kind}: {source}")]
    Write { kind: &'static str, source: kube::Error },
    #[error("{kind} {name} already exists and is not owned by this DataPipeline; rename one of them")]
    NameConflict { kind: &'static str, name: String },
    #[error("the apiserver refused the {kind} built from this spec: {message}")]
    Rejected { kind: &'static str, message: String },
}

impl ApplyError {
    pub fn category(&self) -> &'static str {
        match self {
            ApplyError::Read { .. } => "read",
            ApplyError::Write { .. } => "apply",
            ApplyError::NameConflict { .. } => "name_conflict",
            ApplyError::Rejected { .. } => "rejected",
        }
    }

    /// Retrying cannot help until the spec (or the conflicting object) changes.
    pub fn needs_user_change(&self) -> bool {
        matches!(self, ApplyError::NameConflict { .. } | ApplyError::Rejected { .. })
    }

    fn from_write(kind: &'static str, source: kube::Error) -> Self {
        match source {
            // The apiserver refused what the spec produced (for example a volume name that
            // collides with zeroflow's own): retrying cannot help until the spec changes.
            kube::Error::Api(e) if e.code == 400 || e.code == 422 => ApplyError::Rejected { kind, message: e.message },
            source => ApplyError::Write { kind, source },
        }
    }
}

/// The worker Deployment after the apply, and whether this reconcile created it.
pub struct Applied {
    pub deployment: Deployment,
    pub created: bool,
}

/// Applies the ServiceAccount, then the Deployment; creates the Deployment with
/// `initial_replicas` (under `scaler_manager`) when it does not exist yet.
pub async fn workers(
    client: &Client,
    pipeline: &DataPipeline,
    account: &ServiceAccount,
    deployment: &Deployment,
    initial_replicas: i32,
    scaler_manager: &str,
) -> Result<Applied, ApplyError> {
    let namespace = pipeline.namespace().unwrap_or_default();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    apply_owned(&accounts, pipeline, "ServiceAccount", account).await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let name = deployment.name_any();
    let existing =
        deployments.get_opt(&name).await.map_err(|source| ApplyError::Read { kind: "Deployment", source })?;
    ensure_ours(pipeline, "Deployment", &name, existing.as_ref().map(|d| &d.metadata))?;
    let mut created = false;
    if existing.is_none() {
        let first = with_initial_replicas(deployment.clone(), initial_replicas);
        let params = PostParams { field_manager: Some(scaler_manager.to_owned()), ..PostParams::default() };
        match deployments.create(&params, &first).await {
            Ok(_) => created = true,
            // Created by someone else a moment ago: the apply below tells whether it is ours.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => return Err(ApplyError::from_write("Deployment", source)),
        }
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let deployment = deployments
        .patch(&name, &params, &Patch::Apply(deployment))
        .await
        .map_err(|source| ApplyError::from_write("Deployment", source))?;
    ensure_ours(pipeline, "Deployment", &name, Some(&deployment.metadata))?;
    Ok(Applied { deployment, created })
}

async fn apply_owned<K>(api: &Api<K>, pipeline: &DataPipeline, kind: &'static str, object: &K) -> Result<K, ApplyError>
where
    K: kube::Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = object.name_any();
    let existing = api.get_opt(&name).await.map_err(|source| ApplyError::Read { kind, source })?;
    ensure_ours(pipeline, kind, &name, existing.as_ref().map(|o| o.meta()))?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(object)).await.map_err(|source| ApplyError::from_write(kind, source))
}

/// Refuses to take over an object of the same name that this pipeline does not control:
/// applying would change it and make it garbage-collected with the pipeline.
fn ensure_ours(
    pipeline: &DataPipeline,
    kind: &'static str,
    name: &str,
    existing: Option<&ObjectMeta>,
) -> Result<(), ApplyError> {
    let Some(meta) = existing else { return Ok(()) };
    let ours = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == pipeline.metadata.uid.as_ref());
    if ours { Ok(()) } else { Err(ApplyError::NameConflict { kind, name: name.to_owned() }) }
}
