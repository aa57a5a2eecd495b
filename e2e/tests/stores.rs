//! One pipeline, the way `tests/loop.rs` runs it on MinIO, on the other stores: Azure Blob
//! Storage (Azurite) and Google Cloud Storage (fake-gcs-server). Objects are put in the source,
//! the operator finds them by listing (resync: neither emulator sends notifications), scales
//! the workers from zero, `zeroflow-runner` processes read and write only through the signed
//! URLs the work API hands out, outputs and ledger markers land in the sink, and the workers
//! go back to zero.
//!
//! fake-gcs-server refuses object_store's own uploads (e2e/README.md), so the operator cannot
//! write ledger markers to it: the GCS pipeline reads from GCS and writes to MinIO. It also
//! verifies no signature, so there the signed URLs' shape is asserted, not their verification;
//! Azurite does verify SAS signatures and permissions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use http::Method;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use object_store::path::Path;
use object_store::signer::Signer as _;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use serde_json::json;
use zeroflow_core::ledger::{Marker, Outcome};
use zeroflow_e2e::azure::Azurite;
use zeroflow_e2e::gcs::FakeGcs;
use zeroflow_e2e::workers::HostWorkers;
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually, free_port, http, mc};
use zeroflow_operator::api::{DataPipeline, DataPipelineStatus, StoreSpec};
use zeroflow_operator::store::{self, Identities, bucket_client};

const OBJECTS: usize = 8;
const TRANSFORM: &str = r#"sleep 0.3; tr a-z A-Z < "$ZEROFLOW_INPUT" > "$ZEROFLOW_OUTPUT_DIR/upper.txt""#;

/// A namespace, an operator watching it (gateway and work API on free ports), and the pipeline.
struct Bed {
    ns: TestNamespace,
    pipelines: Api<DataPipeline>,
    deployments: Api<Deployment>,
    operator: Operator,
    workers: Option<HostWorkers>,
    name: String,
}

impl Bed {
    async fn start(tag: &str, secrets: &[(&str, &[(&str, &str)])], spec: serde_json::Value) -> anyhow::Result<Self> {
        let client = client().await?;
        let ns = TestNamespace::create(&client, &format!("zf-{tag}")).await?;
        let secret_api = Api::<Secret>::namespaced(client.clone(), &ns.name);
        for (name, data) in secrets {
            let data: BTreeMap<String, ByteString> =
                data.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect();
            let secret = Secret {
                metadata: kube::api::ObjectMeta { name: Some((*name).to_owned()), ..Default::default() },
                data: Some(data),
                ..Default::default()
            };
            secret_api.create(&PostParams::default(), &secret).await?;
        }
        let name = "upper".to_owned();
        let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
        let pipeline: DataPipeline = serde_json::from_value(json!({
            "apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": name}, "spec": spec
        }))?;
        pipelines.create(&PostParams::default(), &pipeline).await?;
        let work_api = format!("127.0.0.1:{}", free_port()?);
        let url = format!("http://{work_api}");
        let operator =
            Operator::start_with(&ns.name, "solo", &["--work-api-addr", &work_api, "--work-api-url", &url]).await?;
        operator.wait_ready(TIMEOUT).await?;
        let workers = Some(HostWorkers::start(client.clone(), &ns.name, &name)?);
        let deployments = Api::namespaced(client, &ns.name);
        let bed = Self { ns, pipelines, deployments, operator, workers, name };
        let idle = eventually("idle at zero", TIMEOUT, || async { Ok((bed.replicas().await? == 0).then_some(())) });
        if let Err(e) = idle.await {
            anyhow::bail!("{e:#}\nstatus: {:?}\noperator log:\n{}", bed.status().await.ok(), bed.operator.log_tail());
        }
        Ok(bed)
    }

    fn workers(&self) -> &HostWorkers {
        self.workers.as_ref().expect("host workers")
    }

    async fn replicas(&self) -> anyhow::Result<i32> {
        let deployment = self.deployments.get(&format!("{}-worker", self.name)).await?;
        Ok(deployment.spec.and_then(|s| s.replicas).unwrap_or(-1))
    }

    async fn status(&self) -> anyhow::Result<DataPipelineStatus> {
        Ok(self.pipelines.get(&self.name).await?.status.unwrap_or_default())
    }

    /// Samples the worker Deployment's replica count until the returned task is aborted.
    fn sample_replicas(&self) -> (Arc<std::sync::Mutex<BTreeSet<i32>>>, tokio::task::JoinHandle<()>) {
        let seen = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
        let (deployments, name, samples) = (self.deployments.clone(), format!("{}-worker", self.name), seen.clone());
        let task = tokio::spawn(async move {
            loop {
                if let Ok(d) = deployments.get(&name).await {
                    let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(0);
                    samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(replicas);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        (seen, task)
    }

    /// Waits for every object to succeed, then checks outputs and markers in `sink`, the way
    /// back to zero, the runners' exits, and that the worker pods carry no store credentials.
    async fn finish(
        &self,
        seen: Arc<std::sync::Mutex<BTreeSet<i32>>>,
        sampler: tokio::task::JoinHandle<()>,
        expected: &BTreeMap<String, String>,
        sink: &dyn ObjectStore,
        secrets: &[&str],
    ) -> anyhow::Result<()> {
        let done = eventually("objects finished", Duration::from_secs(120), || async {
            let s = self.status().await?;
            Ok((s.succeeded == OBJECTS as i64 && s.in_flight == 0 && s.pending == 0).then_some(()))
        })
        .await;
        if let Err(e) = done {
            anyhow::bail!("{e:#}\nstatus: {:?}\noperator log:\n{}", self.status().await.ok(), self.operator.log_tail());
        }
        for (key, content) in expected {
            let output = sink.get(&Path::parse(format!("out/{key}/upper.txt"))?).await?.bytes().await?;
            assert_eq!(String::from_utf8(output.to_vec())?, content.to_uppercase(), "{key}");
        }
        let prefix = Path::parse(format!(".zeroflow/ledger/{}/{}", self.ns.name, self.name))?;
        let listed: Vec<_> = sink.list(Some(&prefix)).try_collect().await?;
        let mut markers = BTreeMap::new();
        for meta in listed {
            let bytes = sink.get(&meta.location).await?.bytes().await?;
            let marker: Marker = serde_json::from_slice(&bytes).with_context(|| format!("marker {}", meta.location))?;
            markers.insert(marker.source.key.clone(), marker);
        }
        assert_eq!(markers.keys().collect::<Vec<_>>(), expected.keys().collect::<Vec<_>>());
        for (key, marker) in &markers {
            assert_eq!(marker.outcome, Outcome::Succeeded, "{key}");
            assert_eq!(marker.outputs, vec![format!("out/{key}/upper.txt")], "{key}");
        }

        eventually("scaled back to zero", TIMEOUT, || async { Ok((self.replicas().await? == 0).then_some(())) })
            .await?;
        sampler.abort();
        let seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        assert!(seen.iter().any(|r| *r >= 1), "the workers scaled up from zero: {seen:?}");
        assert!(seen.iter().all(|r| *r <= 3), "never beyond maxReplicas: {seen:?}");
        eventually("runners of deleted pods exit", TIMEOUT, || async {
            Ok(self.workers().running().is_empty().then_some(()))
        })
        .await?;
        let exits = self.workers().exits();
        assert!(!exits.is_empty() && exits.iter().all(|(_, code)| *code == Some(0)), "{exits:?}");

        // The worker pods never see the store's credentials: no Secret of the store is mounted
        // or referenced, so every object went through a signed URL.
        let template = serde_json::to_string(&self.deployments.get(&format!("{}-worker", self.name)).await?.spec)?;
        for secret in secrets {
            assert!(!template.contains(&format!("\"{secret}\"")), "worker pods reference Secret {secret}: {template}");
        }
        eprintln!("replica counts seen: {seen:?}; runners: {}", exits.len());
        Ok(())
    }
}

/// The objects put in the source; one name needs escaping in a URL (Azure signs the unescaped
/// name, which object_store's own SAS gets wrong).
fn objects() -> BTreeMap<String, String> {
    let name =
        |i: usize| if i + 1 == OBJECTS { "batch/last one ü.txt".to_owned() } else { format!("batch/f{i:02}.txt") };
    (0..OBJECTS).map(|i| (name(i), format!("line {i}: the quick brown fox\n"))).collect()
}

fn scaling_and_transform() -> serde_json::Value {
    json!({
        "scaling": {"maxReplicas": 3, "targetPerReplica": 2, "concurrencyPerReplica": 2,
                    "idleTimeout": "3s", "scaleDownStabilization": "1s"},
        "transform": {"image": "example.org/t:1", "command": ["sh", "-c", TRANSFORM], "contract": "exec"}
    })
}

#[tokio::test]
async fn a_pipeline_on_azure_blob_storage_scales_from_zero_and_back_with_sas_urls_only() -> anyhow::Result<()> {
    let azurite = Azurite::from_env()?;
    let suffix = format!("{:x}", std::process::id() ^ u32::from(free_port()?));
    let (source, sink) = (format!("zf-az-in-{suffix}"), format!("zf-az-out-{suffix}"));
    azurite.create_container(&source).await?;
    azurite.create_container(&sink).await?;
    let store = json!({"azure": {"accountName": azurite.account, "endpoint": azurite.endpoint,
                                 "credentialsSecretRef": {"name": "azure"}}});
    let mut spec = scaling_and_transform();
    spec["source"] = json!({"bucket": source, "store": store, "resyncInterval": "2s"});
    spec["sink"] = json!({"bucket": sink, "prefix": "out/", "store": store});
    let bed = Bed::start("az", &[("azure", &[("accountKey", &azurite.key)])], spec).await?;

    let (seen, sampler) = bed.sample_replicas();
    let expected = objects();
    let source_store = azurite.store(&source)?;
    for (key, content) in &expected {
        source_store.put(&Path::parse(key)?, PutPayload::from(content.clone().into_bytes())).await?;
    }
    let sink_store = azurite.store(&sink)?;
    bed.finish(seen, sampler, &expected, &sink_store, &["azure"]).await?;

    // The containers are private: without a SAS, Azurite refuses the blobs the workers read
    // and wrote, so they can only have used the signed URLs (Azurite verifies SAS signatures).
    for key in ["batch/f00.txt"] {
        let (status, _) = http("GET", &format!("{}/{source}/{key}", azurite.endpoint), &[], b"").await?;
        assert!(matches!(status, 403 | 404), "anonymous read of a private container: HTTP {status}");
    }
    let (status, _) =
        http("GET", &format!("{}/{sink}/out/batch/f00.txt/upper.txt", azurite.endpoint), &[], b"").await?;
    assert!(matches!(status, 403 | 404), "anonymous read of a private container: HTTP {status}");
    Ok(())
}

#[tokio::test]
async fn a_pipeline_reading_gcs_scales_from_zero_and_back_with_v4_signed_urls_only() -> anyhow::Result<()> {
    let gcs = FakeGcs::from_env()?;
    let key_file = std::fs::read_to_string(&gcs.service_account_key)?;
    let suffix = format!("{:x}", std::process::id() ^ u32::from(free_port()?));
    let (source, sink) = (format!("zf-gcs-in-{suffix}"), format!("zf-gcs-out-{suffix}"));
    gcs.create_bucket(&source).await?;
    mc(&["mb", &format!("{}/{sink}", std::env::var("ZF_MC_ALIAS")?)]).await?;
    let (access_key, secret_key) = (std::env::var("ZF_S3_ACCESS_KEY")?, std::env::var("ZF_S3_SECRET_KEY")?);
    let gcs_store = json!({"gcs": {"endpoint": gcs.endpoint, "credentialsSecretRef": {"name": "gcs"}}});
    let mut spec = scaling_and_transform();
    spec["source"] = json!({"bucket": source, "store": gcs_store, "resyncInterval": "2s"});
    spec["sink"] = json!({"bucket": sink, "prefix": "out/", "store": {"s3": {
        "endpoint": std::env::var("ZF_S3_ENDPOINT")?, "credentialsSecretRef": {"name": "minio"}}}});
    let secrets: [(&str, &[(&str, &str)]); 2] = [
        ("gcs", &[("serviceAccountKey", &key_file)]),
        ("minio", &[("accessKeyId", &access_key), ("secretAccessKey", &secret_key)]),
    ];
    let bed = Bed::start("gcs", &secrets, spec).await?;

    // Objects arrive through signed PUTs (fake-gcs-server refuses object_store's own).
    let (seen, sampler) = bed.sample_replicas();
    let expected = objects();
    let uploader = gcs.store(&source)?;
    for (key, content) in &expected {
        let url = uploader.signed_url(Method::PUT, &Path::parse(key)?, Duration::from_secs(300)).await?;
        let (status, body) = http("PUT", url.as_str(), &[], content.as_bytes()).await?;
        anyhow::ensure!(status == 200, "upload {key}: HTTP {status} {}", String::from_utf8_lossy(&body));
    }
    let sink_store = bucket_client(&zeroflow_e2e::store_config()?, &sink)?;
    bed.finish(seen, sampler, &expected, &sink_store, &["gcs", "minio"]).await?;

    // fake-gcs-server checks no signature, so what the workers got is checked here: the
    // operator's own store code, given this pipeline's spec and Secret, hands out V4 signed
    // URLs (GOOG4-RSA-SHA256, signed by the key's service account) that read the object.
    let pipeline = bed.pipelines.get(&bed.name).await?;
    let spec: &StoreSpec = pipeline.spec.source.store.as_ref().context("source store")?;
    let data = [("serviceAccountKey".to_owned(), ByteString(key_file.clone().into_bytes()))].into();
    let config = store::config_from_spec(spec, Some(("gcs", &data)), &Identities::default())?;
    let bucket = store::open(&config, &source)?;
    let url = bucket.access.presign(Method::GET, "batch/f00.txt", Duration::from_secs(60)).await?;
    let query: BTreeMap<String, String> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert_eq!(query.get("X-Goog-Algorithm").map(String::as_str), Some("GOOG4-RSA-SHA256"), "{url}");
    let email: serde_json::Value = serde_json::from_str(&key_file)?;
    let email = email["client_email"].as_str().context("client_email")?;
    assert!(query.get("X-Goog-Credential").is_some_and(|c| c.starts_with(email)), "{url}");
    assert!(query.get("X-Goog-Signature").is_some_and(|s| s.len() == 512), "an RSA-2048 signature in hex: {url}");
    let (status, body) = http("GET", url.as_str(), &[], b"").await?;
    assert_eq!((status, body.as_slice()), (200, expected["batch/f00.txt"].as_bytes()));
    Ok(())
}
