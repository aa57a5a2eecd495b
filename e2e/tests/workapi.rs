//! The work API against the real testbed: real projected-token TokenReview by the apiserver,
//! real presigned GET/PUT against MinIO. The test plays the runner: it leases with a
//! TokenRequest-minted ServiceAccount token, downloads, uploads an output and completes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use zeroflow_e2e::{TestNamespace, client, http, mc, token};
use zeroflow_operator::dispatch::backlog::{ObjectId, WorkItem};
use zeroflow_operator::dispatch::{BacklogConfig, Backlogs};
use zeroflow_operator::gateway::PipelineKey;
use zeroflow_operator::store::bucket_client;
use zeroflow_operator::workapi::{
    CachingVerifier, InMemoryCompletion, Outcome, PipelineAccess, S3Bucket, TokenReviewVerifier, Waiters, WorkApi,
    WorkApiMetrics, router,
};

const OBJECTS: usize = 50;
const WORKERS: usize = 4;

/// A token for `account` minted by the apiserver's TokenRequest API, as the kubelet projects it.
struct Bed {
    _ns: TestNamespace,
    namespace: String,
    addr: SocketAddr,
    api: Arc<WorkApi>,
    backlogs: Arc<Backlogs>,
    completion: Arc<InMemoryCompletion>,
    pipeline: PipelineKey,
    bucket: String,
    s3: AmazonS3,
    worker_token: String,
}

impl Bed {
    /// A namespace with the pipeline's worker ServiceAccount, a bucket, and the work API served
    /// with the real TokenReview verifier.
    async fn start(prefix: &str, backlog: BacklogConfig) -> anyhow::Result<Self> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        let namespace = ns.name.clone();
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
        for name in ["demo-worker", "other-worker"] {
            let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}}))?;
            accounts.create(&PostParams::default(), &sa).await?;
        }
        let worker_token = token(&client, &namespace, "demo-worker", "zeroflow").await?;
        let suffix = namespace.rsplit('-').next().unwrap_or("x");
        let bucket = format!("zf-workapi-{suffix}");
        let alias = std::env::var("ZF_MC_ALIAS")?;
        mc(&["mb", "--ignore-existing", &format!("{alias}/{bucket}")]).await?;
        let config = zeroflow_e2e::store_config()?;
        let s3 = bucket_client(&config, &bucket)?;

        let pipeline = PipelineKey::new(namespace.clone(), "demo");
        let backlogs = Arc::new(Backlogs::new(1));
        backlogs.ensure(pipeline.clone(), backlog);
        let completion = Arc::new(InMemoryCompletion::new());
        let registry = prometheus::Registry::new();
        let api = Arc::new(WorkApi::new(
            backlogs.clone(),
            Arc::new(Waiters::new()),
            Arc::new(CachingVerifier::new(TokenReviewVerifier::new(client.clone()))),
            completion.clone(),
            WorkApiMetrics::register(&registry)?,
        ));
        api.set_pipeline(
            pipeline.clone(),
            PipelineAccess {
                source: Arc::new(S3Bucket::new(&bucket, bucket_client(&config, &bucket)?)),
                sink: Arc::new(S3Bucket::new(&bucket, bucket_client(&config, &bucket)?)),
                sink_prefix: "out/".into(),
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = router(api.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { _ns: ns, namespace, addr, api, backlogs, completion, pipeline, bucket, s3, worker_token })
    }

    /// Uploads an object and admits it, as the gateway would on its notification.
    async fn upload_and_admit(&self, key: &str, content: &str) -> anyhow::Result<()> {
        let put = self.s3.put(&Path::parse(key)?, PutPayload::from(content.as_bytes().to_vec())).await?;
        let item = WorkItem {
            object: ObjectId { bucket: self.bucket.clone(), key: key.to_owned() },
            etag: put.e_tag.map(|e| e.trim_matches('"').to_owned()),
            version_id: None,
            size: Some(content.len() as u64),
            sequencer: None,
        };
        let admitted = self.backlogs.with(&self.pipeline, |b, now| b.admit(item, now)).context("no backlog")?;
        admitted?;
        self.api.notify(&self.pipeline);
        Ok(())
    }

    fn url(&self, rest: &str) -> String {
        format!("http://{}/v1/pipelines/{}/demo/leases{rest}", self.addr, self.namespace)
    }

    async fn call(&self, token: Option<&str>, rest: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        let (status, body) = http("POST", &self.url(rest), &headers, body.to_string().as_bytes()).await?;
        let value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
        Ok((status, value))
    }

    /// The runner's loop: lease, download, transform, upload, complete, until the poll is empty.
    async fn work(&self) -> anyhow::Result<usize> {
        let token = Some(self.worker_token.as_str());
        let mut done = 0;
        loop {
            let (status, lease) = self.call(token, "?wait_seconds=1", json!({})).await?;
            match status {
                204 => return Ok(done),
                200 => {}
                other => bail!("lease: {other} {lease}"),
            }
            let id = lease["lease_id"].as_str().context("lease_id")?;
            let (status, input) = http("GET", lease["input_url"].as_str().context("input_url")?, &[], b"").await?;
            ensure!(status == 200, "presigned GET answered {status}");
            let (status, beat) = self.call(token, &format!("/{id}/heartbeat"), json!({})).await?;
            ensure!(status == 200, "heartbeat: {status} {beat}");
            let (status, output) = self.call(token, &format!("/{id}/outputs"), json!({"name": "upper.txt"})).await?;
            ensure!(status == 200, "outputs: {status} {output}");
            let upper = String::from_utf8(input)?.to_uppercase();
            let (status, _) = http("PUT", output["url"].as_str().context("url")?, &[], upper.as_bytes()).await?;
            ensure!(status == 200, "presigned PUT answered {status}");
            let (status, finish) =
                self.call(token, &format!("/{id}/complete"), json!({"outputs": ["upper.txt"]})).await?;
            ensure!(status == 200 && finish["lease_held"] == true, "complete: {status} {finish}");
            done += 1;
        }
    }
}

#[tokio::test]
async fn workers_with_projected_tokens_process_every_object_exactly_once() -> anyhow::Result<()> {
    let bed = Arc::new(Bed::start("zf-workapi", BacklogConfig::default()).await?);
    let client = client().await?;

    // Who may call: only the pipeline's worker account, with a token for our audience.
    let other = token(&client, &bed.namespace, "other-worker", "zeroflow").await?;
    let wrong_audience = token(&client, &bed.namespace, "demo-worker", "not-zeroflow").await?;
    assert_eq!(bed.call(Some(&other), "?wait_seconds=0", json!({})).await?.0, 403);
    assert_eq!(bed.call(Some(&wrong_audience), "?wait_seconds=0", json!({})).await?.0, 401);
    assert_eq!(bed.call(None, "?wait_seconds=0", json!({})).await?.0, 401);
    assert_eq!(bed.call(Some("not.a.jwt"), "?wait_seconds=0", json!({})).await?.0, 401);
    assert_eq!(bed.call(Some(&bed.worker_token), "?wait_seconds=0", json!({})).await?.0, 204);

    let mut expected = BTreeMap::new();
    for i in 0..OBJECTS {
        let key = format!("in/batch 1/invoice-{i:03}.csv");
        let content = format!("invoice {i}, amount {}\n", i * 10);
        bed.upload_and_admit(&key, &content).await?;
        expected.insert(key, content);
    }
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let bed = bed.clone();
            tokio::spawn(async move { bed.work().await })
        })
        .collect();
    let mut processed = 0;
    for worker in workers {
        processed += tokio::time::timeout(Duration::from_secs(120), worker).await.context("workers stuck")???;
    }
    assert_eq!(processed, OBJECTS);

    let records = bed.completion.records();
    let keys: Vec<_> = records.iter().map(|(_, item, _)| item.object.key.clone()).collect();
    assert_eq!(keys.len(), OBJECTS, "one record per object");
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), OBJECTS, "no object recorded twice");
    for (_, item, outcome) in &records {
        let output = format!("out/{}/upper.txt", item.object.key);
        assert_eq!(outcome, &Outcome::Done { attempts: 1, outputs: vec![output.clone()] });
        let written = bed.s3.get(&Path::parse(&output)?).await?.bytes().await?;
        let input = expected.get(&item.object.key).context("unexpected object")?;
        assert_eq!(String::from_utf8(written.to_vec())?, input.to_uppercase());
    }
    let counts = bed.backlogs.with(&bed.pipeline, |b, _| b.counts()).context("backlog")?;
    assert_eq!((counts.pending, counts.in_flight, counts.succeeded), (0, 0, OBJECTS as u64));
    Ok(())
}

#[tokio::test]
async fn a_lease_that_stops_heartbeating_is_leased_again_after_it_expires() -> anyhow::Result<()> {
    let config = BacklogConfig { lease_duration_ms: 1_500, ..BacklogConfig::default() };
    let bed = Bed::start("zf-workapi-expiry", config).await?;
    bed.upload_and_admit("in/slow.csv", "slow").await?;
    let token = Some(bed.worker_token.as_str());

    let (status, first) = bed.call(token, "?wait_seconds=0", json!({})).await?;
    assert_eq!(status, 200, "{first}");
    let first_id = first["lease_id"].as_str().context("lease_id")?.to_owned();
    // The worker goes silent; the next poll gets the object once the lease has expired.
    let (status, second) = bed.call(token, "?wait_seconds=10", json!({})).await?;
    assert_eq!(status, 200, "{second}");
    assert_eq!((second["key"].as_str(), second["attempt"].as_u64()), (Some("in/slow.csv"), Some(2)));
    assert_eq!(bed.call(token, &format!("/{first_id}/heartbeat"), json!({})).await?.0, 410);

    let second_id = second["lease_id"].as_str().context("lease_id")?;
    let (status, done) = bed.call(token, &format!("/{second_id}/complete"), json!({"outputs": []})).await?;
    assert_eq!((status, done["lease_held"].clone()), (200, json!(true)));
    assert_eq!(bed.completion.records().len(), 1);
    Ok(())
}
