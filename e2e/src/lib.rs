//! Shared harness for zeroflow's end-to-end tests.
//!
//! Tests need the testbed: `e2e/testbed up && eval "$(e2e/testbed env)"`. Each test gets its
//! own namespace and, when it needs one, its own operator process watching only that namespace,
//! so tests run in parallel without seeing each other.

pub mod azure;
pub mod chaos;
pub mod chart;
pub mod demo;
pub mod gcs;
pub mod gcs_relay;
pub mod kafka;
pub mod loop_bed;
pub mod moto;
pub mod node;
pub mod pipelines;
pub mod prometheus_server;
pub mod sqs;
pub mod work_api;
pub mod workers;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use tokio::process::{Child, Command};

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A client for the testbed, failing with a clear message when it is not up.
pub async fn client() -> anyhow::Result<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!("KUBECONFIG is not set: start the testbed with `e2e/testbed up && eval \"$(e2e/testbed env)\"`");
    }
    Client::try_default().await.context("connecting to the testbed apiserver")
}

/// A variable that `e2e/testbed env` exports for an optional service (`sqs`, `kafka`, `azurite`,
/// `gcs`), failing with how to start that service when it is not set.
pub fn service_env(service: &str, name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: start the testbed with `e2e/testbed up --with {service}` and eval \"$(e2e/testbed env)\"")
    })
}

/// A namespace that exists for one test and is deleted when dropped.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> anyhow::Result<Self> {
        Self::create_with_labels(client, prefix, &[]).await
    }

    pub async fn create_with_labels(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> anyhow::Result<Self> {
        let api: Api<Namespace> = Api::all(client.clone());
        let mut ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"generateName": format!("{prefix}-")}
        }))?;
        ns.metadata.labels = Some(labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
        let created = api.create(&PostParams::default(), &ns).await.context("creating test namespace")?;
        Ok(Self { name: created.name_any(), client: client.clone() })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("ZF_KEEP_NAMESPACES").is_some() {
            eprintln!("keeping namespace {}", self.name);
            return;
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = self.name.clone();
        // Best effort: the test runtime may be shutting down; the testbed is thrown away anyway.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = api.delete(&name, &DeleteParams::background()).await;
            });
        }
    }
}

/// A free port on loopback for a process the test starts.
///
/// Picked below Linux's ephemeral range (32768-60999): a port the kernel hands out for `:0`
/// can be taken as the source port of some outgoing connection before the process binds it.
pub fn free_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
    let mut state =
        SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ u64::from(nanos) ^ u64::from(std::process::id());
    for _ in 0..200 {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let port = 20_000 + u16::try_from((state >> 33) % 12_000).unwrap_or(0);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port in 20000-32000")
}

/// Path of a binary built from this workspace: next to the running binary, or next to the
/// `deps` directory a test runs from.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(format!("ZF_{}_BIN", name.to_uppercase().replace('-', "_"))) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let own_dir = exe.parent().context("binary has no directory")?;
    if own_dir.join(name).exists() {
        return Ok(own_dir.join(name));
    }
    let dir = own_dir.parent().context("test binary has no target dir")?;
    let path = dir.join(name);
    if !path.exists() {
        // Binaries come from their own packages (zeroflow-operator, zeroflow-runner, and
        // zeroflow-e2e's tools); `cargo test -p zeroflow-e2e` does not rebuild them, which is why
        // e2e/test-all builds the workspace first.
        let package = match name {
            "zeroflow-operator" | "crdgen" => "zeroflow-operator",
            "zeroflow-runner" => "zeroflow-runner",
            _ => "zeroflow-e2e",
        };
        bail!("{} not found: run `cargo build -p {package}` first", path.display());
    }
    Ok(path)
}

/// A `zeroflow-operator` process started by a test; killed when dropped.
pub struct Operator {
    pub child: Child,
    pub metrics_port: u16,
    pub identity: String,
    pub log: PathBuf,
}

impl Operator {
    /// Starts an operator that watches only `namespace` and elects its leader there.
    pub async fn start(namespace: &str, identity: &str) -> anyhow::Result<Self> {
        Self::start_with(namespace, identity, &[]).await
    }

    /// Like [`Operator::start`], with extra command-line flags.
    pub async fn start_with(namespace: &str, identity: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(namespace, identity, extra, &[]).await
    }

    /// Like [`Operator::start_with`], with extra environment variables.
    pub async fn start_with_env(
        namespace: &str,
        identity: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let metrics_port = free_port()?;
        let log_dir = std::env::var("ZF_TESTBED_STATE").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
        let log = log_dir.join(format!("operator-{namespace}-{identity}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new(workspace_binary("zeroflow-operator")?);
        for flag in ["--gateway-addr", "--work-api-addr"] {
            if !extra.contains(&flag) {
                command.args([flag, &format!("127.0.0.1:{}", free_port()?)]);
            }
        }
        let child = command
            .args(["--namespaces", namespace, "--leader-election-namespace", namespace])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--identity", identity, "--leader-election-lease-seconds", "6"])
            .args(extra)
            .env("RUST_LOG", "info,zeroflow_operator=debug")
            // The operator's own cloud identities must never reach for a real metadata service
            // or token endpoint (the EC2 IMDS, GCE's metadata server): switched off here, and a
            // test that proves an identity sets its loopback endpoints in `env`.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("ZEROFLOW_GCP_IDENTITY", "false")
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .envs(env.iter().copied())
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .context("starting zeroflow-operator")?;
        Ok(Self { child, metrics_port, identity: identity.to_owned(), log })
    }

    /// The HTTP status of `/readyz`, or `None` while nothing answers.
    pub async fn readyz(&self) -> Option<u16> {
        http_get(self.metrics_port, "/readyz").await.ok().map(|(status, _)| status)
    }

    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(http_get(self.metrics_port, "/metrics").await?.1)
    }

    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.readyz().await != Some(200) {
            if Instant::now() > deadline {
                bail!("operator {} not ready after {timeout:?}; log: {}", self.identity, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// SIGTERM, as the kubelet sends on pod deletion; returns the exit status.
    pub async fn terminate(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("operator already exited")?;
        let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        Ok(tokio::time::timeout(TIMEOUT, self.child.wait()).await.context("operator ignored SIGTERM")??)
    }

    /// SIGKILL, as a crashed node or OOM kill would.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// The start and the end of the operator's log (an early error is followed by a backtrace).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        let head = lines.len().min(10);
        let tail = lines.len().saturating_sub(30).max(head);
        format!("{}\n...\n{}", lines[..head].join("\n"), lines[tail..].join("\n"))
    }
}

/// A plain HTTP/1.0 GET to loopback, without pulling an HTTP client into the test build.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("malformed HTTP response")?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Polls `check` until it returns `Some`, failing with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() > deadline {
            match last_error {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the testbed's kubectl, returning stdout; fails with stderr.
pub async fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let kubectl = std::env::var("KUBECTL").context("KUBECTL is not set (eval \"$(e2e/testbed env)\")")?;
    let out = Command::new(kubectl).args(args).output().await?;
    if !out.status.success() {
        bail!("kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A token for a ServiceAccount from the TokenRequest API, as the kubelet projects into pods.
pub async fn token(client: &kube::Client, namespace: &str, account: &str, audience: &str) -> anyhow::Result<String> {
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request = k8s_openapi::api::authentication::v1::TokenRequest {
        spec: k8s_openapi::api::authentication::v1::TokenRequestSpec {
            audiences: vec![audience.to_owned()],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let minted = accounts.create_token_request(account, &PostParams::default(), &request).await?;
    Ok(minted.status.context("TokenRequest without status")?.token)
}

/// One HTTP/1.0 exchange on loopback (the presigned URLs and the API are all plain HTTP there).
pub async fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let uri: http::Uri = url.parse()?;
    let host = uri.host().context("url without host")?;
    anyhow::ensure!(host == "127.0.0.1", "only loopback: {url}");
    let port = uri.port_u16().unwrap_or(80);
    let target = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".to_owned());
    let mut head = format!("{method} {target} HTTP/1.0\r\nHost: {host}:{port}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let status_line = String::from_utf8_lossy(&response[..split]).lines().next().unwrap_or_default().to_owned();
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("bad status line")?;
    Ok((status, response[split + 4..].to_vec()))
}

/// Runs the testbed's `mc`, returning stdout; fails with stderr.
pub async fn mc(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(std::env::var("MC").context("MC is not set (eval \"$(e2e/testbed env)\")")?)
        .args(args)
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "mc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// The testbed MinIO as an operator store configuration.
pub fn store_config() -> anyhow::Result<zeroflow_operator::store::S3Config> {
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} unset: eval \"$(e2e/testbed env)\""));
    Ok(zeroflow_operator::store::S3Config::with_keys(
        &var("ZF_S3_ENDPOINT")?,
        &var("ZF_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
        &var("ZF_S3_ACCESS_KEY")?,
        &var("ZF_S3_SECRET_KEY")?,
    ))
}
