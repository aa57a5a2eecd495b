//! moto's server (`e2e/testbed up --with moto`): SQS, IAM and STS in one process that verifies
//! SigV4 signatures and IAM policies once its IAM auth is on. moto switches it on after a count
//! of requests (`INITIAL_NO_AUTH_ACTION_COUNT`), which are served whatever their signature, so
//! each test starts a server of its own: its set-up (roles, users, queues) is those first
//! requests, and everything after them is verified.
//!
//! What moto cannot do for us (moto 5.2.5): the web identity exchange as object_store sends it.
//! An unsigned `POST /?Action=AssumeRoleWithWebIdentity&...` (parameters in the query string) is
//! answered as S3's `ListBuckets`, and once auth is on an unsigned STS request fails with 500
//! (`KeyError: 'HTTP_AUTHORIZATION'`).
//!
//! Requests are made with curl (`--aws-sigv4`), which signs them as the AWS SDKs do; moto tells
//! the service from the signature's credential scope.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use crate::{TIMEOUT, eventually, free_port, service_env};

/// A moto server on 127.0.0.1 over HTTPS, with the testbed apiserver's certificate.
pub struct Moto {
    _child: tokio::process::Child,
    /// `https://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The CA that issued its certificate (PEM file).
    pub ca: String,
    dir: PathBuf,
}

/// Access keys to sign with.
#[derive(Debug, Clone)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Moto {
    /// Starts a server whose first `free_requests` requests are served without checking their
    /// signature (and count as moto's own set-up); it is killed when dropped.
    pub async fn start(free_requests: u32) -> anyhow::Result<Self> {
        let server = service_env("moto", "ZF_MOTO_SERVER")?;
        let ca = std::env::var("ZF_KUBE_CA").context("ZF_KUBE_CA unset: eval \"$(e2e/testbed env)\"")?;
        let pki = std::path::Path::new(&ca).parent().context("CA path")?.to_owned();
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("zf-moto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("moto.log"))?;
        let child = tokio::process::Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .arg("-c")
            .arg(pki.join("apiserver.crt"))
            .arg("-k")
            .arg(pki.join("apiserver.key"))
            .env("INITIAL_NO_AUTH_ACTION_COUNT", free_requests.to_string())
            .stdout(std::process::Stdio::from(log.try_clone()?))
            .stderr(std::process::Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting moto_server")?;
        // A TCP connection, not a request: a request would count as one of the free ones.
        eventually("moto listening", TIMEOUT, || async {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop))
        })
        .await?;
        Ok(Self { _child: child, endpoint: format!("https://127.0.0.1:{port}"), ca, dir })
    }

    /// One request to `service` (`sqs`, `iam`, `sts`), signed with `keys` (`None`: unsigned),
    /// with a form body (`form`: IAM's query protocol) or a JSON body with `target` (SQS's JSON
    /// protocol, `AmazonSQS.<Action>`). Returns the HTTP status and the body.
    pub async fn call(
        &self,
        service: &str,
        keys: Option<&Keys>,
        target: Option<&str>,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let out_file = self.dir.join(format!("answer-{}", free_port()?));
        let mut command = tokio::process::Command::new("curl");
        command.args(["-sS", "--cacert", &self.ca, "-X", "POST", "-o"]).arg(&out_file).args(["-w", "%{http_code}"]);
        if let Some(keys) = keys {
            command
                .arg("--aws-sigv4")
                .arg(format!("aws:amz:us-east-1:{service}"))
                .arg("--user")
                .arg(format!("{}:{}", keys.access_key_id, keys.secret_access_key));
        }
        match target {
            Some(target) => command
                .args(["-H", "Content-Type: application/x-amz-json-1.0", "-H"])
                .arg(format!("X-Amz-Target: {target}")),
            None => command.args(["-H", "Content-Type: application/x-www-form-urlencoded"]),
        };
        let out = command.args(["--data-binary", body]).arg(format!("{}/", self.endpoint)).output().await?;
        if !out.status.success() {
            bail!("curl: {}", String::from_utf8_lossy(&out.stderr));
        }
        let answer = std::fs::read_to_string(&out_file).unwrap_or_default();
        let _ = std::fs::remove_file(&out_file);
        Ok((String::from_utf8(out.stdout)?.trim().parse()?, answer))
    }

    /// Like [`Moto::call`], failing unless moto answers 200.
    pub async fn ok(
        &self,
        service: &str,
        keys: Option<&Keys>,
        target: Option<&str>,
        body: &str,
    ) -> anyhow::Result<String> {
        let (status, answer) = self.call(service, keys, target, body).await?;
        anyhow::ensure!(status == 200, "{service} {target:?} {body}: HTTP {status}: {answer}");
        Ok(answer)
    }

    /// moto's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("moto.log")).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The text of the first `<tag>` element of an XML answer.
pub fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim().to_owned())
}

/// A form body for IAM's query protocol.
pub fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}
