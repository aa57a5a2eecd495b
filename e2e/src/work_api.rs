//! The work API served in-process against the testbed (real TokenReview, real MinIO), for the
//! tests that exercise it directly or through the runner binary.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use zeroflow_core::PipelineKey;
use zeroflow_core::backlog::{BacklogConfig, Counts, ObjectId, WorkItem};
use zeroflow_core::ledger::{Ledger, Marker};
use zeroflow_core::routing::Route;
use zeroflow_operator::metrics::Metrics;
use zeroflow_operator::runtime::{Access, Pipeline, Pipelines, Seed, Settings};
use zeroflow_operator::store::bucket_client;
use zeroflow_operator::workapi::{CachingVerifier, S3Bucket, TokenReviewVerifier, WorkApi, router};

use crate::{TestNamespace, client, http, mc, token};

/// The work API served in-process for one pipeline `demo` over one bucket, with the real
/// TokenReview verifier: tests play the runner (or run the real one) against it.
pub struct WorkApiBed {
    pub _ns: TestNamespace,
    pub namespace: String,
    pub addr: SocketAddr,
    pub pipelines: Arc<Pipelines>,
    pub runtime: Arc<Pipeline>,
    /// The pipeline's real ledger, in the bucket.
    pub ledger: Ledger,
    pub pipeline: PipelineKey,
    pub bucket: String,
    pub s3: AmazonS3,
    pub worker_token: String,
}

impl WorkApiBed {
    /// A namespace with the pipeline's worker ServiceAccount, a bucket, and the work API served
    /// with the real TokenReview verifier.
    pub async fn start(prefix: &str, backlog: BacklogConfig) -> anyhow::Result<Self> {
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
        let config = crate::store_config()?;
        let s3 = bucket_client(&config, &bucket)?;

        let pipeline = PipelineKey::new(namespace.clone(), "demo");
        let metrics = Arc::new(Metrics::new()?);
        // No scaler runs here: its kicks go nowhere.
        let (kick, _kicks) = tokio::sync::mpsc::unbounded_channel();
        let pipelines = Arc::new(Pipelines::new(1, kick, metrics));
        let route = Route {
            namespace: namespace.clone(),
            name: "demo".into(),
            bucket: bucket.clone(),
            prefix: Some("in/".into()),
            suffix: None,
            exclude_prefixes: vec![],
        };
        let mut settings = Settings::new(route, backlog);
        settings.sink_prefix = "out/".into();
        let runtime = pipelines.upsert(&pipeline, settings, &Seed::default());
        let ledger =
            Ledger::new(Arc::new(bucket_client(&config, &bucket)?), &format!(".zeroflow/ledger/{namespace}/demo/"))?;
        runtime.lock().access = Some(Arc::new(Access {
            source: Arc::new(S3Bucket::new(&bucket, bucket_client(&config, &bucket)?)),
            sink: Arc::new(S3Bucket::new(&bucket, bucket_client(&config, &bucket)?)),
            source_store: Arc::new(bucket_client(&config, &bucket)?),
            ledger: ledger.clone(),
        }));
        // Leasing starts when the scaler adopts a pipeline: at once here.
        runtime.lock().backlog.hold_until(0);
        let api = Arc::new(WorkApi::new(
            pipelines.clone(),
            Arc::new(CachingVerifier::new(TokenReviewVerifier::new(client.clone()))),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = router(api);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self { _ns: ns, namespace, addr, pipelines, runtime, ledger, pipeline, bucket, s3, worker_token })
    }

    /// Uploads an object and admits it, as the gateway would on its notification.
    pub async fn upload_and_admit(&self, key: &str, content: &str) -> anyhow::Result<()> {
        let put = self.s3.put(&Path::parse(key)?, PutPayload::from(content.as_bytes().to_vec())).await?;
        let item = WorkItem {
            object: ObjectId::new(self.bucket.as_str(), key),
            etag: put.e_tag.map(|e| e.trim_matches('"').to_owned()),
            version_id: None,
            size: Some(content.len() as u64),
            sequencer: None,
        };
        self.pipelines.admit_item(&self.pipeline, item).context("no runtime")??;
        self.runtime.notify.notify_waiters();
        Ok(())
    }

    pub fn counts(&self) -> Counts {
        self.runtime.lock().backlog.counts()
    }

    /// Every marker in the pipeline's ledger, in key order.
    pub async fn records(&self) -> anyhow::Result<Vec<Marker>> {
        use futures::StreamExt as _;
        let names: Vec<_> = self.ledger.list().collect().await;
        let mut markers = Vec::new();
        for name in names {
            let name = name?;
            let etag = (!name.etag.is_empty()).then_some(name.etag.as_str());
            markers.extend(self.ledger.get(&name.key, etag).await?);
        }
        Ok(markers)
    }

    pub fn url(&self, rest: &str) -> String {
        format!("http://{}/v1/pipelines/{}/demo/leases{rest}", self.addr, self.namespace)
    }

    pub async fn call(&self, token: Option<&str>, rest: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        let (status, body) = http("POST", &self.url(rest), &headers, body.to_string().as_bytes()).await?;
        let value = if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
        Ok((status, value))
    }
}
