//! One pipeline, the way `tests/loop.rs` runs it on MinIO, on the other stores: Azure Blob
//! Storage (Azurite) and Google Cloud Storage (fake-gcs-server). Objects are put in the source,
//! the operator finds them by listing (resync: neither emulator sends notifications), scales
//! the workers from zero, `zeroflow-runner` processes read and write only through the signed
//! URLs the work API hands out, outputs and ledger markers land in the sink, and the workers
//! go back to zero.
//!
//! The GCS pipeline reads from and writes to fake-gcs-server through a relay
//! (`zeroflow_e2e::gcs_relay`): fake-gcs-server refuses object_store's own XML-API uploads,
//! which is how the operator writes ledger markers (fsouza/fake-gcs-server#331), and the relay
//! sends those as fake-gcs-server's equivalent JSON-API upload; everything else, the workers'
//! signed URLs included, passes through unchanged. fake-gcs-server verifies no signature, so
//! there the signed URLs' shape is asserted, not their verification; Azurite does verify SAS
//! signatures and permissions.

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
use zeroflow_e2e::gcs_relay::GcsRelay;
use zeroflow_e2e::workers::HostWorkers;
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually, free_port, http};
use zeroflow_operator::api::{DataPipeline, DataPipelineStatus, StoreSpec};
use zeroflow_operator::store::{self, Identities};

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
        Self::start_with_env(tag, secrets, spec, &[]).await
    }

    /// Like [`Bed::start`], with extra environment variables for the operator.
    async fn start_with_env(
        tag: &str,
        secrets: &[(&str, &[(&str, &str)])],
        spec: serde_json::Value,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
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
        let flags = ["--work-api-addr", work_api.as_str(), "--work-api-url", url.as_str()];
        let operator = Operator::start_with_env(&ns.name, "solo", &flags, env).await?;
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
async fn a_pipeline_on_gcs_scales_from_zero_and_back_with_v4_signed_urls_only() -> anyhow::Result<()> {
    let gcs = FakeGcs::from_env()?;
    // The pipeline's store endpoint is the relay, so the operator's ledger writes reach
    // fake-gcs-server; the test's own clients go to fake-gcs-server directly.
    let relay = GcsRelay::start(&gcs.endpoint).await?;
    let key_file = std::fs::read_to_string(&gcs.service_account_key)?;
    let suffix = format!("{:x}", std::process::id() ^ u32::from(free_port()?));
    let (source, sink) = (format!("zf-gcs-in-{suffix}"), format!("zf-gcs-out-{suffix}"));
    gcs.create_bucket(&source).await?;
    gcs.create_bucket(&sink).await?;
    let store = json!({"gcs": {"endpoint": relay.endpoint, "credentialsSecretRef": {"name": "gcs"}}});
    let mut spec = scaling_and_transform();
    spec["source"] = json!({"bucket": source, "store": store, "resyncInterval": "2s"});
    spec["sink"] = json!({"bucket": sink, "prefix": "out/", "store": store});
    let bed = Bed::start("gcs", &[("gcs", &[("serviceAccountKey", &key_file)])], spec).await?;

    // Objects arrive through signed PUTs, straight to fake-gcs-server.
    let (seen, sampler) = bed.sample_replicas();
    let expected = objects();
    let uploader = gcs.store(&source)?;
    for (key, content) in &expected {
        let url = uploader.signed_url(Method::PUT, &Path::parse(key)?, Duration::from_secs(300)).await?;
        let (status, body) = http("PUT", url.as_str(), &[], content.as_bytes()).await?;
        anyhow::ensure!(status == 200, "upload {key}: HTTP {status} {}", String::from_utf8_lossy(&body));
    }
    // Outputs and markers are read from fake-gcs-server itself, not through the relay.
    let sink_store = gcs.store(&sink)?;
    bed.finish(seen, sampler, &expected, &sink_store, &["gcs"]).await?;
    // The operator's only uploads are its ledger markers, one per object, and only they were
    // rewritten: the workers' outputs went up as signed PUTs, which pass through unchanged.
    assert_eq!(relay.uploads(), OBJECTS, "XML-API uploads rewritten by the relay");

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

/// A MinIO of its own that trusts the testbed apiserver's service-account tokens as an OpenID
/// provider (discovery at `$ZF_APISERVER/.well-known/openid-configuration`, over the testbed
/// CA): `AssumeRoleWithWebIdentity` with a token of audience [`STS_AUDIENCE`] gives temporary
/// credentials of the role it prints (policy `readwrite`), as IRSA does with AWS STS.
struct StsMinio {
    _child: tokio::process::Child,
    endpoint: String,
    role_arn: String,
    dir: std::path::PathBuf,
    /// The testbed CA (PEM file), which issued MinIO's certificate.
    ca: String,
}

const STS_AUDIENCE: &str = "zeroflow-sts";
const STS_ROOT: (&str, &str) = ("stsroot", "stsroot-password");

impl StsMinio {
    async fn start(client: &kube::Client) -> anyhow::Result<Self> {
        // The apiserver serves OIDC discovery to anonymous clients only with this binding (the
        // same one EKS and kind document for IRSA-style setups).
        let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "zeroflow-e2e-oidc-discovery"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:service-account-issuer-discovery"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}]
        }))?;
        match Api::all(client.clone()).create(&PostParams::default(), &binding).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let apiserver = std::env::var("ZF_APISERVER").context("ZF_APISERVER unset: eval \"$(e2e/testbed env)\"")?;
        let ca = std::env::var("ZF_KUBE_CA").context("ZF_KUBE_CA unset")?;
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("zf-sts-minio-{}-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("data"))?;
        // STS must be HTTPS (object_store refuses a plain-HTTP STS endpoint, as the AWS SDKs
        // do): MinIO serves TLS with the testbed apiserver's certificate (valid for 127.0.0.1,
        // issued by the testbed CA), and every client trusts that CA.
        let pki = std::path::Path::new(&ca).parent().context("CA path")?;
        std::fs::create_dir_all(dir.join("certs"))?;
        std::fs::copy(pki.join("apiserver.crt"), dir.join("certs/public.crt"))?;
        std::fs::copy(pki.join("apiserver.key"), dir.join("certs/private.key"))?;
        let log = dir.join("minio.log");
        let log_file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(std::env::var("MINIO").context("MINIO unset")?)
            .args(["server", &dir.join("data").display().to_string(), "--address", &format!("127.0.0.1:{port}")])
            .args(["--console-address", &format!("127.0.0.1:{}", free_port()?)])
            .args(["--certs-dir", &dir.join("certs").display().to_string()])
            .env("MINIO_ROOT_USER", STS_ROOT.0)
            .env("MINIO_ROOT_PASSWORD", STS_ROOT.1)
            .env("MINIO_IDENTITY_OPENID_CONFIG_URL", format!("{apiserver}/.well-known/openid-configuration"))
            .env("MINIO_IDENTITY_OPENID_CLIENT_ID", STS_AUDIENCE)
            .env("MINIO_IDENTITY_OPENID_ROLE_POLICY", "readwrite")
            .env("SSL_CERT_FILE", &ca)
            .stdout(std::process::Stdio::from(log_file.try_clone()?))
            .stderr(std::process::Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()?;
        let endpoint = format!("https://127.0.0.1:{port}");
        let role_arn = eventually("MinIO prints its role ARN", TIMEOUT, || async {
            let text = std::fs::read_to_string(&log)?;
            Ok(text.split_whitespace().find(|w| w.starts_with("arn:minio:iam:::role/")).map(str::to_owned))
        })
        .await;
        let role_arn = match role_arn {
            Ok(arn) => arn,
            Err(e) => {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&dir);
                anyhow::bail!("{e:#}\nMinIO log:\n{text}");
            }
        };
        // mc trusts the CAs in its config dir.
        std::fs::create_dir_all(dir.join("mc/certs/CAs"))?;
        std::fs::copy(&ca, dir.join("mc/certs/CAs/testbed.crt"))?;
        Ok(Self { _child: child, endpoint, role_arn, dir, ca })
    }

    /// Makes buckets with the root user (`mc` with a config dir of its own).
    async fn make_buckets(&self, buckets: &[&str]) -> anyhow::Result<()> {
        let mc = std::env::var("MC").context("MC unset")?;
        let config = self.dir.join("mc");
        let run = |args: Vec<String>| {
            let (mc, config) = (mc.clone(), config.clone());
            async move {
                let out = tokio::process::Command::new(mc).arg("--config-dir").arg(config).args(&args).output().await?;
                anyhow::ensure!(out.status.success(), "mc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                Ok(())
            }
        };
        run(vec![
            "alias".into(),
            "set".into(),
            "sts".into(),
            self.endpoint.clone(),
            STS_ROOT.0.into(),
            STS_ROOT.1.into(),
        ])
        .await?;
        for bucket in buckets {
            run(vec!["mb".into(), format!("sts/{bucket}")]).await?;
        }
        Ok(())
    }

    /// A client for `bucket` with the root user, trusting the testbed CA.
    fn root_client(&self, bucket: &str) -> anyhow::Result<object_store::aws::AmazonS3> {
        let ca = object_store::Certificate::from_pem(&std::fs::read(&self.ca)?)?;
        Ok(object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(STS_ROOT.0)
            .with_secret_access_key(STS_ROOT.1)
            .with_virtual_hosted_style_request(false)
            .with_client_options(object_store::ClientOptions::new().with_root_certificate(ca))
            .build()?)
    }

    /// The HTTP status of a GET of `url` (curl, trusting the testbed CA).
    async fn status_of(&self, url: &str) -> anyhow::Result<(u16, String)> {
        let body = self.dir.join("body");
        let out = tokio::process::Command::new("curl")
            .args(["-sS", "--cacert", &self.ca, "-o", &body.display().to_string(), "-w", "%{http_code}", url])
            .output()
            .await?;
        anyhow::ensure!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        Ok((String::from_utf8(out.stdout)?.trim().parse()?, std::fs::read_to_string(&body).unwrap_or_default()))
    }
}

impl Drop for StsMinio {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A service-account token for the operator, as the IRSA webhook projects one: audience
/// [`STS_AUDIENCE`], written to a file the operator reads through `AWS_WEB_IDENTITY_TOKEN_FILE`.
async fn web_identity_token(client: &kube::Client, namespace: &str, path: &std::path::Path) -> anyhow::Result<()> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "zeroflow-operator"}}))?;
    accounts.create(&PostParams::default(), &account).await?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![STS_AUDIENCE.into()],
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let minted = accounts.create_token_request("zeroflow-operator", &PostParams::default(), &request).await?;
    std::fs::write(path, minted.status.context("TokenRequest without status")?.token)?;
    Ok(())
}

#[tokio::test]
async fn without_a_secret_the_operator_uses_its_web_identity_and_workers_get_session_token_urls() -> anyhow::Result<()>
{
    let client = client().await?;
    let minio = StsMinio::start(&client).await?;
    let suffix = format!("{:x}", std::process::id() ^ u32::from(free_port()?));
    let (source, sink) = (format!("zf-irsa-in-{suffix}"), format!("zf-irsa-out-{suffix}"));
    minio.make_buckets(&[&source, &sink]).await?;

    // The namespace is made by the bed; the token is minted in a namespace of its own first,
    // so the operator starts with it.
    let token_ns = TestNamespace::create(&client, "zf-irsa-sa").await?;
    let token_file = minio.dir.join("token");
    web_identity_token(&client, &token_ns.name, &token_file).await?;
    let token_path = token_file.display().to_string();
    let env = [
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.as_str()),
        ("AWS_ROLE_ARN", minio.role_arn.as_str()),
        ("AWS_ENDPOINT_URL_STS", minio.endpoint.as_str()),
        ("AWS_ROLE_SESSION_NAME", "zeroflow-e2e"),
        ("AWS_REGION", "us-east-1"),
        ("SSL_CERT_FILE", minio.ca.as_str()),
    ];
    let store = json!({"s3": {"endpoint": minio.endpoint}});
    let mut spec = scaling_and_transform();
    // The runner trusts the store's CA as any worker of a store with a private CA would.
    spec["transform"]["env"] = json!([{"name": "SSL_CERT_FILE", "value": minio.ca}]);
    spec["source"] = json!({"bucket": source, "store": store, "resyncInterval": "2s"});
    spec["sink"] = json!({"bucket": sink, "prefix": "out/", "store": store});
    let bed = Bed::start_with_env("irsa", &[], spec, &env).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &bed.ns.name);
    assert!(secrets.list(&Default::default()).await?.items.is_empty(), "the pipeline has no Secret to use");

    let (seen, sampler) = bed.sample_replicas();
    let expected = objects();
    let root = minio.root_client(&source)?;
    for (key, content) in &expected {
        root.put(&Path::parse(key)?, PutPayload::from(content.clone().into_bytes())).await?;
    }
    let sink_store = minio.root_client(&sink)?;
    bed.finish(seen, sampler, &expected, &sink_store, &[]).await?;

    // MinIO verifies signatures and session tokens, so the workers' URLs worked as signed. What
    // they look like: the identity the operator reads from this environment is the web
    // identity, and the operator's signing code, given object_store's web identity provider for
    // the same token and role (trusting the testbed CA through client options, as this test
    // process has no SSL_CERT_FILE), signs with the role's temporary key and its session token.
    let lookup: BTreeMap<&str, &str> = env.iter().copied().collect();
    let identities = Identities::from(&|name: &str| lookup.get(name).map(|v| (*v).to_owned()));
    assert!(identities.description.contains("web identity"), "{}", identities.description);
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey as Key};
    let ca = object_store::Certificate::from_pem(&std::fs::read(&minio.ca)?)?;
    let provider = AmazonS3Builder::new()
        .with_bucket_name(&source)
        .with_region("us-east-1")
        .with_config(Key::WebIdentityTokenFile, &token_path)
        .with_config(Key::RoleArn, &minio.role_arn)
        .with_config(Key::StsEndpoint, &minio.endpoint)
        .with_client_options(object_store::ClientOptions::new().with_root_certificate(ca))
        .build()?
        .credentials()
        .clone();
    let config = store::StoreConfig::S3(store::S3Config {
        endpoint: Some(minio.endpoint.clone()),
        region: "us-east-1".into(),
        path_style: true,
        credentials: store::S3Credentials::Identity(provider),
    });
    let bucket = store::open(&config, &source)?;
    let url = bucket.access.presign(Method::GET, "batch/f00.txt", Duration::from_secs(60)).await?;
    let query: BTreeMap<String, String> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert!(query.get("X-Amz-Security-Token").is_some_and(|t| !t.is_empty()), "{url}");
    assert!(query.get("X-Amz-Credential").is_some_and(|c| !c.starts_with(STS_ROOT.0)), "a temporary key: {url}");
    let (status, body) = minio.status_of(url.as_str()).await?;
    assert_eq!((status, body.as_str()), (200, expected["batch/f00.txt"].as_str()));
    // Without its token the URL is refused: the temporary key is nothing without it.
    let mut stripped = url.clone();
    stripped.query_pairs_mut().clear().extend_pairs(query.iter().filter(|(k, _)| *k != "X-Amz-Security-Token"));
    let (status, _) = minio.status_of(stripped.as_str()).await?;
    assert_eq!(status, 403, "{stripped}");
    Ok(())
}

/// The CRD's rules on stores, as the real apiserver applies them (dry-run creates).
#[tokio::test]
async fn the_apiserver_takes_exactly_one_store_kind_and_keeps_the_older_s3_form() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zf-store-cel").await?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client, &ns.name);
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    let create = |bucket: &str, store: serde_json::Value| {
        let pipeline = serde_json::from_value::<DataPipeline>(json!({
            "apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": "p"},
            "spec": {"source": {"bucket": bucket, "store": store}, "transform": {"image": "example.org/t:1"}}
        }));
        let (pipelines, dry_run) = (pipelines.clone(), dry_run.clone());
        async move { pipelines.create(&dry_run, &pipeline?).await.map(drop).map_err(anyhow::Error::from) }
    };
    let secret = json!({"name": "s"});
    for (bucket, store) in [
        ("landing", json!({"endpoint": "http://minio:9000", "credentialsSecretRef": secret})),
        ("landing", json!({"s3": {"endpoint": "http://minio:9000", "credentialsSecretRef": secret}})),
        ("landing", json!({"s3": {"region": "eu-west-1"}})),
        ("landing", json!({"azure": {"accountName": "acct1"}})),
        ("my_bucket", json!({"gcs": {}})),
    ] {
        create(bucket, store.clone()).await.with_context(|| format!("{bucket} {store} is valid"))?;
    }
    for (bucket, store, message) in [
        ("landing", json!({}), "store must set exactly one of s3, azure or gcs"),
        ("landing", json!({"s3": {}, "gcs": {}}), "store must set exactly one of s3, azure or gcs"),
        ("landing", json!({"s3": {}, "region": "x"}), "belong to its older S3 form"),
        ("my_bucket", json!({"s3": {}}), "underscores only on GCS"),
        ("my.bucket", json!({"azure": {"accountName": "acct1"}}), "an Azure container name has"),
        ("landing", json!({"azure": {"accountName": "Acct"}}), "accountName must be 3-24 lowercase"),
    ] {
        let refused = create(bucket, store.clone()).await.err().with_context(|| format!("{bucket} {store} refused"))?;
        assert!(format!("{refused:#}").contains(message), "{bucket} {store}: {refused:#}");
    }
    Ok(())
}
