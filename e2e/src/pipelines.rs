//! Test pipelines on the testbed's MinIO: buckets with a credentials Secret, DataPipelines over
//! them, uploads, and an operator whose gateway receives MinIO's notifications.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::Mutex;
use zeroflow_operator::api::DataPipeline;

use crate::{Operator, TIMEOUT, TestNamespace, eventually, mc};

/// MinIO notifies one fixed address: tests whose operator binds it take this lock.
pub static WEBHOOK: Mutex<()> = Mutex::const_new(());

/// A source and a sink bucket in the testbed's MinIO, with a Secret `store` holding the
/// credentials in the test namespace.
pub struct Buckets {
    pub source: String,
    pub sink: String,
}

impl Buckets {
    pub async fn create(client: &kube::Client, ns: &TestNamespace, tag: &str) -> anyhow::Result<Self> {
        let suffix = ns.name.rsplit('-').next().unwrap_or("x");
        let buckets = Self { source: format!("zf-{tag}-in-{suffix}"), sink: format!("zf-{tag}-out-{suffix}") };
        let alias = std::env::var("ZF_MC_ALIAS")?;
        for b in [&buckets.source, &buckets.sink] {
            mc(&["mb", &format!("{alias}/{b}")]).await?;
        }
        let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "store"}, "stringData": {
            "accessKeyId": std::env::var("ZF_S3_ACCESS_KEY")?, "secretAccessKey": std::env::var("ZF_S3_SECRET_KEY")?}}))?;
        Api::<Secret>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &secret).await?;
        Ok(buckets)
    }

    /// A pipeline from `source` (under `prefix`) to `sink`; `extra` adds or extends spec sections.
    pub fn pipeline(&self, name: &str, prefix: &str, extra: serde_json::Value) -> anyhow::Result<DataPipeline> {
        let mut spec = json!({
            "source": {"bucket": self.source, "prefix": prefix,
                       "store": {"endpoint": std::env::var("ZF_S3_ENDPOINT")?, "credentialsSecretRef": {"name": "store"}}},
            "sink": {"bucket": self.sink},
            "transform": {"image": "example.org/t:1"}
        });
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                match (spec.get_mut(k), v) {
                    (Some(serde_json::Value::Object(have)), serde_json::Value::Object(add)) => {
                        have.extend(add.clone());
                    }
                    _ => {
                        spec.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        Ok(serde_json::from_value(json!({
            "apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": name}, "spec": spec
        }))?)
    }

    /// Binds the source bucket to the testbed's webhook target (MinIO refuses while it believes
    /// the target offline, so this retries until the operator's gateway answers).
    pub async fn notify_on_put(&self) -> anyhow::Result<()> {
        let alias = std::env::var("ZF_MC_ALIAS")?;
        let arn = std::env::var("ZF_WEBHOOK_ARN")?;
        let target = format!("{alias}/{}", self.source);
        eventually("mc event add", TIMEOUT, || async {
            Ok(mc(&["event", "add", &target, &arn, "--event", "put"]).await.ok())
        })
        .await?;
        Ok(())
    }
}

/// Uploads `content` as `bucket/key` with `mc` (so MinIO sends its notification).
pub async fn upload(bucket: &str, key: &str, content: &str) -> anyhow::Result<()> {
    let alias = std::env::var("ZF_MC_ALIAS")?;
    let file = std::env::temp_dir().join(format!("zf-upload-{}-{}", std::process::id(), crate::free_port()?));
    std::fs::write(&file, content)?;
    let result = mc(&["cp", file.to_str().context("utf-8 path")?, &format!("{alias}/{bucket}/{key}")]).await;
    let _ = std::fs::remove_file(&file);
    result.map(|_| ())
}

/// An operator for the test namespace with its gateway on MinIO's webhook address (the caller
/// holds [`WEBHOOK`]), its work API on `lease_addr` and worker pods pointed there.
pub async fn operator_with_gateway(ns: &TestNamespace, lease_addr: &str) -> anyhow::Result<Operator> {
    let operator = operator_with_gateway_as(ns, lease_addr, "solo").await?;
    operator.wait_ready(TIMEOUT).await?;
    Ok(operator)
}

/// Like [`operator_with_gateway`], with its own leader-election identity, and not waiting until
/// it leads (a second replica stays a follower, not ready, until the leader goes).
pub async fn operator_with_gateway_as(
    ns: &TestNamespace,
    lease_addr: &str,
    identity: &str,
) -> anyhow::Result<Operator> {
    operator_with_gateway_and(ns, lease_addr, identity, &OperatorExtras::default()).await
}

/// More flags and environment for the operators a test starts (e.g. the queues it consumes and
/// their credentials).
#[derive(Debug, Clone, Default)]
pub struct OperatorExtras {
    pub flags: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Like [`operator_with_gateway_as`], with `extras`.
pub async fn operator_with_gateway_and(
    ns: &TestNamespace,
    lease_addr: &str,
    identity: &str,
    extras: &OperatorExtras,
) -> anyhow::Result<Operator> {
    let token_file = std::env::temp_dir().join(format!("zf-gateway-token-{}", ns.name));
    std::fs::write(&token_file, std::env::var("ZF_WEBHOOK_TOKEN")?)?;
    let webhook = std::env::var("ZF_WEBHOOK_ADDR")?;
    let token_path = token_file.to_str().context("utf-8 path")?;
    let lease_url = format!("http://{lease_addr}");
    let mut flags = vec![
        "--gateway-addr",
        &webhook,
        "--gateway-token-file",
        token_path,
        "--work-api-addr",
        lease_addr,
        "--work-api-url",
        &lease_url,
    ];
    flags.extend(extras.flags.iter().map(String::as_str));
    let env: Vec<(&str, &str)> = extras.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Operator::start_with_env(&ns.name, identity, &flags, &env).await
}
