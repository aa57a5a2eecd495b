//! A pipeline running end to end on the testbed, as a user sees it: objects uploaded to MinIO,
//! notifications to an operator process, the worker Deployment scaled from zero,
//! `zeroflow-runner` processes (one per worker pod, see [`HostWorkers`]) running the transform,
//! outputs and ledger markers in the sink. Tests that use it bind MinIO's webhook address (hold
//! [`crate::pipelines::WEBHOOK`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use serde_json::json;
use zeroflow_core::ledger::Marker;
use zeroflow_operator::api::{DataPipeline, DataPipelineStatus};
use zeroflow_operator::store::bucket_client;

use crate::pipelines::{Buckets, OperatorExtras, operator_with_gateway_and};
use crate::workers::HostWorkers;
use crate::{Operator, TIMEOUT, TestNamespace, client, eventually, free_port};

/// Everything one test needs: its namespace, buckets, an operator and the host workers.
pub struct LoopBed {
    pub ns: TestNamespace,
    pub buckets: Buckets,
    pub pipelines: Api<DataPipeline>,
    pub deployments: Api<Deployment>,
    pub operator: Operator,
    host_workers: Option<HostWorkers>,
    pub name: String,
    /// Where the operator serves the work API (the worker pods point there).
    pub work_api_addr: String,
    /// What every operator of this bed is started with besides the defaults.
    extras: OperatorExtras,
}

impl LoopBed {
    /// A pipeline `name` from the source bucket to `out/` in the sink, `extra` merged into its
    /// spec, the operator running and the source bucket notifying it.
    pub async fn start(tag: &str, name: &str, extra: serde_json::Value) -> anyhow::Result<Self> {
        Self::start_with(tag, name, extra, true, None).await
    }

    /// Like [`LoopBed::start`], with operators started with `extras` (a queue to consume, say)
    /// and MinIO sending no notification: the test delivers them.
    pub async fn start_fed_by(
        tag: &str,
        name: &str,
        extra: serde_json::Value,
        extras: OperatorExtras,
    ) -> anyhow::Result<Self> {
        Self::start_with(tag, name, extra, true, Some(extras)).await
    }

    /// Like [`LoopBed::start`], with no runner started for the worker pods: the test plays the
    /// workers itself over the work API.
    pub async fn start_without_workers(tag: &str, name: &str, extra: serde_json::Value) -> anyhow::Result<Self> {
        Self::start_with(tag, name, extra, false, None).await
    }

    /// `fed`: operators' extras, and no MinIO notification (`None`: MinIO's webhook).
    async fn start_with(
        tag: &str,
        name: &str,
        extra: serde_json::Value,
        workers: bool,
        fed: Option<OperatorExtras>,
    ) -> anyhow::Result<Self> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, &format!("zf-{tag}")).await?;
        let buckets = Buckets::create(&client, &ns, tag).await?;
        let mut extra = extra;
        extra["sink"] = json!({"prefix": "out/"});
        let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
        pipelines.create(&PostParams::default(), &buckets.pipeline(name, "", extra)?).await?;
        let lease_addr = format!("127.0.0.1:{}", free_port()?);
        let extras = fed.clone().unwrap_or_default();
        let operator = operator_with_gateway_and(&ns, &lease_addr, "solo", &extras).await?;
        operator.wait_ready(TIMEOUT).await?;
        if fed.is_none() {
            buckets.notify_on_put().await?;
        }
        let host_workers = if workers { Some(HostWorkers::start(client.clone(), &ns.name, name)?) } else { None };
        let deployments = Api::namespaced(client.clone(), &ns.name);
        let this = Self {
            ns,
            buckets,
            pipelines,
            deployments,
            operator,
            host_workers,
            name: name.to_owned(),
            work_api_addr: lease_addr,
            extras,
        };
        let idle = eventually("idle at zero", TIMEOUT, || async { Ok((this.replicas().await? == 0).then_some(())) });
        if let Err(e) = idle.await {
            anyhow::bail!("{e:#}\nstatus: {:?}", this.status().await.ok());
        }
        Ok(this)
    }

    /// The runners of the worker pods.
    pub fn workers(&self) -> &HostWorkers {
        self.host_workers.as_ref().expect("started with host workers")
    }

    /// Another operator process for the same namespace and addresses, with its own identity:
    /// a follower until the current leader goes.
    pub async fn standby(&self, identity: &str) -> anyhow::Result<Operator> {
        operator_with_gateway_and(&self.ns, &self.work_api_addr, identity, &self.extras).await
    }

    pub async fn replicas(&self) -> anyhow::Result<i32> {
        let deployment = self.deployments.get(&format!("{}-worker", self.name)).await?;
        Ok(deployment.spec.and_then(|s| s.replicas).unwrap_or(-1))
    }

    pub async fn status(&self) -> anyhow::Result<DataPipelineStatus> {
        Ok(self.pipelines.get(&self.name).await?.status.unwrap_or_default())
    }

    /// Waits until `done` objects have finished (succeeded + failed), nothing is in flight.
    pub async fn wait_finished(&self, succeeded: i64, failed: i64, timeout: Duration) -> anyhow::Result<()> {
        let result = eventually("objects finished", timeout, || async {
            let s = self.status().await?;
            Ok((s.succeeded == succeeded && s.failed == failed && s.in_flight == 0 && s.pending == 0).then_some(()))
        })
        .await;
        if let Err(e) = result {
            let status = self.status().await.ok();
            anyhow::bail!("{e:#}\nstatus: {status:?}\noperator log:\n{}", self.operator.log_tail());
        }
        Ok(())
    }

    pub fn sink(&self) -> anyhow::Result<AmazonS3> {
        Ok(bucket_client(&crate::store_config()?, &self.buckets.sink)?)
    }

    pub async fn read_sink(&self, key: &str) -> anyhow::Result<String> {
        let bytes = self.sink()?.get(&Path::parse(key)?).await?.bytes().await?;
        Ok(String::from_utf8(bytes.to_vec())?)
    }

    /// Every ledger marker of the pipeline, by source key.
    pub async fn markers(&self) -> anyhow::Result<BTreeMap<String, Marker>> {
        let sink = self.sink()?;
        let prefix = Path::parse(format!(".zeroflow/ledger/{}/{}", self.ns.name, self.name))?;
        let listed: Vec<_> = sink.list(Some(&prefix)).try_collect().await?;
        let mut markers = BTreeMap::new();
        for meta in listed {
            let bytes = sink.get(&meta.location).await?.bytes().await?;
            let marker: Marker = serde_json::from_slice(&bytes).with_context(|| format!("marker {}", meta.location))?;
            anyhow::ensure!(markers.insert(marker.source.key.clone(), marker).is_none(), "two markers for one object");
        }
        Ok(markers)
    }

    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let metrics = self.operator.metrics().await?;
        let line = metrics.lines().find(|l| l.starts_with(name)).with_context(|| format!("no metric {name}"))?;
        Ok(line.rsplit(' ').next().unwrap_or_default().parse()?)
    }
}
