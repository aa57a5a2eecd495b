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
use zeroflow_core::backlog::BacklogConfig;
use zeroflow_core::backlog::{ObjectId, WorkItem};
use zeroflow_operator::dispatch::Backlogs;
use zeroflow_operator::store::bucket_client;
use zeroflow_operator::workapi::{
    CachingVerifier, InMemoryCompletion, PipelineAccess, S3Bucket, TokenReviewVerifier, Waiters, WorkApi,
    WorkApiMetrics, router,
};

use crate::{TestNamespace, client, http, mc, token};

/// The work API served in-process for one pipeline `demo` over one bucket, with the real
/// TokenReview verifier: tests play the runner (or run the real one) against it.
pub struct WorkApiBed {
    pub _ns: TestNamespace,
    pub namespace: String,
    pub addr: SocketAddr,
    pub api: Arc<WorkApi>,
    pub backlogs: Arc<Backlogs>,
    pub completion: Arc<InMemoryCompletion>,
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
    pub async fn upload_and_admit(&self, key: &str, content: &str) -> anyhow::Result<()> {
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
