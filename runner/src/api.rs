//! The work API client: lease, heartbeat, output URLs, complete, fail; and the presigned
//! transfers. The token is read from its file on every request because the kubelet rotates it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use zeroflow_contract::wire::{CompleteRequest, FailRequest, HeartbeatRequest, OutputRequest, pipeline_base};
pub use zeroflow_contract::wire::{Lease, OutputTarget};

use crate::Error;
use crate::object::Failure;

/// How long the server may hold a lease request open (it caps this at 30 s).
pub const LEASE_WAIT_SECONDS: u64 = zeroflow_contract::wire::DEFAULT_WAIT_SECONDS;
/// Slack on top of the long poll before a lease request is given up.
const LEASE_SLACK: Duration = Duration::from_secs(15);
/// Any other API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP client trusting the image's CA certificates, or, in images that have none (scratch,
/// distroless static, busybox), the Mozilla roots built into the runner: the transform's image
/// must not need a CA bundle for the runner to reach an HTTPS store.
fn http_client() -> Result<reqwest::Client, Error> {
    let builder = || reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    match builder().build() {
        Ok(client) => Ok(client),
        Err(e) => {
            tracing::info!(error = %e, "no usable CA certificates in the image: using the runner's built-in roots");
            let roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS
                .iter()
                .filter_map(|der| reqwest::Certificate::from_der(der).ok());
            Ok(builder().tls_certs_only(roots).build()?)
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `{api}/v1/pipelines/{ns}/{name}`
    base: String,
    token_file: PathBuf,
}

impl Client {
    pub fn new(api: &str, pipeline: &str, token_file: PathBuf) -> Result<Self, Error> {
        let (namespace, name) = pipeline
            .split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
            .ok_or_else(|| Error::Config(format!("pipeline {pipeline:?} is not <namespace>/<name>")))?;
        let http = http_client()?;
        let base = pipeline_base(api, namespace, name);
        Ok(Client { http, base, token_file })
    }

    async fn token(&self) -> Result<String, Error> {
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|source| Error::Io { what: "reading the token file", source })?;
        Ok(token.trim().to_owned())
    }

    async fn post<B: Serialize>(&self, path: &str, body: &B, timeout: Duration) -> Result<reqwest::Response, Error> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(AUTHORIZATION, format!("Bearer {}", self.token().await?))
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body)?)
            .timeout(timeout)
            .send()
            .await?;
        checked(response).await
    }

    /// Waits up to [`LEASE_WAIT_SECONDS`] for an object; `None` when there is none.
    pub async fn lease(&self) -> Result<Option<Lease>, Error> {
        let path = format!("/leases?wait_seconds={LEASE_WAIT_SECONDS}");
        let response =
            self.post(&path, &serde_json::json!({}), Duration::from_secs(LEASE_WAIT_SECONDS) + LEASE_SLACK).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Ok(Some(json(response).await?))
    }

    pub async fn heartbeat(&self, lease: &Lease) -> Result<(), Error> {
        let path = format!("/leases/{}/heartbeat", lease.lease_id);
        let body = HeartbeatRequest { attempt: Some(lease.attempt), object: lease.into() };
        self.post(&path, &body, CALL_TIMEOUT).await.map(drop)
    }

    pub async fn output(&self, lease: &Lease, name: &str) -> Result<OutputTarget, Error> {
        let path = format!("/leases/{}/outputs", lease.lease_id);
        let body = OutputRequest { name: name.to_owned(), object: lease.into() };
        json(self.post(&path, &body, CALL_TIMEOUT).await?).await
    }

    pub async fn complete(&self, lease: &Lease, outputs: &[String]) -> Result<(), Error> {
        let path = format!("/leases/{}/complete", lease.lease_id);
        let body = CompleteRequest { outputs: outputs.to_vec(), attempt: Some(lease.attempt), object: lease.into() };
        self.post(&path, &body, CALL_TIMEOUT).await.map(drop)
    }

    pub async fn fail(&self, lease: &Lease, failure: &Failure) -> Result<(), Error> {
        let path = format!("/leases/{}/fail", lease.lease_id);
        let body = FailRequest {
            retryable: failure.retryable(),
            exit_code: failure.exit_code(),
            stderr_tail: Some(failure.stderr_tail.clone()),
            attempt: Some(lease.attempt),
            handed_back: failure.handed_back(),
            input_missing: failure.input_missing(),
            object: lease.into(),
        };
        self.post(&path, &body, CALL_TIMEOUT).await.map(drop)
    }

    /// Streams the presigned GET into `file` (created new, so nothing is overwritten).
    pub async fn download(&self, url: &str, file: &Path) -> Result<u64, Error> {
        let mut response = checked(self.http.get(url).send().await?).await?;
        let io = |source| Error::Io { what: "writing the input", source };
        let mut out = tokio::fs::OpenOptions::new().write(true).create_new(true).open(file).await.map_err(io)?;
        let mut written = 0u64;
        while let Some(chunk) = response.chunk().await? {
            out.write_all(&chunk).await.map_err(io)?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(io)?;
        Ok(written)
    }

    /// Streams `file` to a presigned URL with an explicit length: S3 refuses chunked PUTs.
    pub async fn upload(&self, target: &OutputTarget, file: &Path) -> Result<(), Error> {
        let io = |source| Error::Io { what: "reading an output", source };
        let handle = tokio::fs::File::open(file).await.map_err(io)?;
        let len = handle.metadata().await.map_err(io)?.len();
        let method = reqwest::Method::from_bytes(target.method.as_bytes())
            .map_err(|_| Error::Config(format!("unsupported upload method {:?}", target.method)))?;
        let response = self.http.request(method, &target.url).header(CONTENT_LENGTH, len).body(handle).send().await?;
        checked(response).await.map(drop)
    }
}

async fn checked(response: reqwest::Response) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(512).collect();
    Err(Error::Status { status: status.as_u16(), body })
}

/// The body as JSON; reqwest's own `json` feature is not enabled to keep its features as the
/// operator builds them.
async fn json<T: for<'de> Deserialize<'de>>(response: reqwest::Response) -> Result<T, Error> {
    Ok(serde_json::from_slice(&response.bytes().await?)?)
}
