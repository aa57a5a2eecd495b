//! The chart README's recipe for an HTTPS store signed by a private CA (`extraVolumes` with the
//! CA, `SSL_CERT_DIR=/etc/ssl/certs:/etc/zeroflow/ca`), against a real MinIO serving TLS on
//! loopback with a certificate from a CA made by the test: the operator cannot list the bucket
//! without the recipe, and can with it. The operator runs on the host with the environment the
//! chart gives its container, and the CA in a directory laid out as the kubelet lays out a
//! ConfigMap volume (`..data` symlinks).

use std::path::Path;
use std::process::Stdio;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::process::Command;
use zeroflow_e2e::chart::{Scratch, run_in, testbed_dir, tool_from_env};
use zeroflow_e2e::{Operator, TIMEOUT, TestNamespace, client, eventually, free_port};
use zeroflow_operator::api::DataPipeline;
use zeroflow_operator::api::conditions::SOURCE_REACHABLE;

async fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    run_in(Some(dir), Path::new("openssl"), args, &[]).await?.success(&format!("openssl {}", args.join(" ")))?;
    Ok(())
}

/// A CA (`ca.crt`) and a server certificate for 127.0.0.1 signed by it (`public.crt`,
/// `private.key`, the names MinIO's `--certs-dir` wants) in `dir`.
async fn make_certificates(dir: &Path) -> anyhow::Result<()> {
    let ca = [
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=zeroflow-test-ca",
        "-days",
        "1",
    ];
    openssl(dir, &ca).await?;
    let csr = [
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "private.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ];
    openssl(dir, &csr).await?;
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")?;
    let sign = [
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "public.crt",
        "-days",
        "1",
        "-extfile",
        "san.ext",
    ];
    openssl(dir, &sign).await
}

/// `ca.crt` as the kubelet projects a ConfigMap key into a volume: the file in a timestamped
/// directory, `..data` pointing at it, and `ca.crt` pointing through `..data`.
fn configmap_layout(ca: &Path, volume: &Path) -> anyhow::Result<()> {
    let stamped = "..2026_11_30_12_00_00.000000001";
    std::fs::create_dir_all(volume.join(stamped))?;
    std::fs::copy(ca, volume.join(stamped).join("ca.crt"))?;
    std::os::unix::fs::symlink(stamped, volume.join("..data"))?;
    std::os::unix::fs::symlink("..data/ca.crt", volume.join("ca.crt"))?;
    Ok(())
}

#[tokio::test]
async fn extra_volume_recipe_makes_the_operator_trust_a_store_signed_by_a_private_ca() -> anyhow::Result<()> {
    let client = client().await?;
    let ns = TestNamespace::create(&client, "zfc-ca").await?;
    let scratch = Scratch::new("chart-ca")?;
    let certs = scratch.path("certs");
    std::fs::create_dir_all(&certs)?;
    make_certificates(&certs).await?;
    let volume = scratch.path("etc-zeroflow-ca");
    configmap_layout(&certs.join("ca.crt"), &volume)?;

    // MinIO serving TLS with the server certificate, on loopback.
    let minio = testbed_dir("minio", "MINIO_VERSION")?.join("minio");
    let (port, console) = (free_port()?, free_port()?);
    let (user, password) = ("zeroflow", "zeroflow-ca-test-password");
    std::fs::create_dir_all(scratch.path("data"))?;
    let log = std::fs::File::create(scratch.path("minio.log"))?;
    let _minio = Command::new(minio)
        .args(["server", &scratch.path("data").display().to_string()])
        .args(["--address", &format!("127.0.0.1:{port}"), "--console-address", &format!("127.0.0.1:{console}")])
        .args(["--certs-dir", &certs.display().to_string(), "--quiet"])
        .envs([("MINIO_ROOT_USER", user), ("MINIO_ROOT_PASSWORD", password), ("MINIO_BROWSER", "off")])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()?;
    let endpoint = format!("https://127.0.0.1:{port}");
    // mc trusts the CA through its own certs directory; the bucket is made once MinIO answers.
    let mc_config = scratch.path("mc");
    std::fs::create_dir_all(mc_config.join("certs/CAs"))?;
    std::fs::copy(certs.join("ca.crt"), mc_config.join("certs/CAs/ca.crt"))?;
    let mc = tool_from_env("MC")?;
    let mc_env = [("MC_CONFIG_DIR", mc_config.to_str().context("utf-8")?)];
    eventually("TLS MinIO answers", TIMEOUT, || async {
        let alias = run_in(None, &mc, &["alias", "set", "tls", &endpoint, user, password], &mc_env).await?;
        Ok(alias.ok.then_some(()))
    })
    .await
    .with_context(|| std::fs::read_to_string(scratch.path("minio.log")).unwrap_or_default())?;
    run_in(None, &mc, &["mb", "tls/invoices"], &mc_env).await?.success("mc mb")?;

    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "store"}, "stringData": {"accessKeyId": user, "secretAccessKey": password}}),
    )?;
    Api::<Secret>::namespaced(client.clone(), &ns.name).create(&PostParams::default(), &secret).await?;
    let pipeline: DataPipeline = serde_json::from_value(json!({
        "apiVersion": "zeroflow.dev/v1alpha1", "kind": "DataPipeline", "metadata": {"name": "tls"},
        "spec": {"source": {"bucket": "invoices", "store": {"endpoint": endpoint, "credentialsSecretRef": {"name": "store"}}},
                 "transform": {"image": "example.org/t:1"}}
    }))?;
    let pipelines: Api<DataPipeline> = Api::namespaced(client.clone(), &ns.name);
    pipelines.create(&PostParams::default(), &pipeline).await?;

    // The SourceReachable condition once its status is `status`; fails with the last one seen.
    let condition_becomes = |status: &'static str| {
        let pipelines = pipelines.clone();
        async move {
            let last = std::sync::Mutex::new(None);
            let found = eventually(&format!("SourceReachable={status}"), TIMEOUT, || async {
                let conditions = pipelines.get("tls").await?.status.unwrap_or_default().conditions;
                let condition = conditions.into_iter().find(|c| c.type_ == SOURCE_REACHABLE);
                let matches = condition.as_ref().is_some_and(|c| c.status == status);
                *last.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = condition.clone();
                Ok(if matches { condition } else { None })
            })
            .await;
            let last = last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            found.with_context(|| format!("last condition: {last:?}"))
        }
    };

    // Without the recipe: the private CA is unknown, the bucket cannot be listed.
    let mut operator = Operator::start(&ns.name, "without-ca").await?;
    operator.wait_ready(TIMEOUT).await?;
    let condition = condition_becomes("False").await.with_context(|| operator.log_tail())?;
    assert_eq!(condition.reason, "Unreachable", "{condition:?}");
    operator.terminate().await?;

    // With it: SSL_CERT_DIR lists the system CAs and the mounted CA's directory.
    let cert_dir = format!("/etc/ssl/certs:{}", volume.display());
    let operator = Operator::start_with_env(&ns.name, "with-ca", &[], &[("SSL_CERT_DIR", cert_dir.as_str())]).await?;
    operator.wait_ready(TIMEOUT).await?;
    let condition = condition_becomes("True").await.with_context(|| operator.log_tail())?;
    assert_eq!(condition.reason, "Listed", "{condition:?}");
    Ok(())
}
