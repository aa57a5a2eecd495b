//! The testbed's Azure Blob Storage (Azurite, `e2e/testbed up --with azurite`): object_store
//! clients for its containers, and container creation, which object_store does not offer.

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};

use crate::{http, service_env};

/// The `x-ms-version` of the requests signed here (one Azurite 3.35 serves).
const API_VERSION: &str = "2023-11-03";

/// Azurite's account as `e2e/testbed env` exports it.
pub struct Azurite {
    /// `http://127.0.0.1:<port>/<account>` (path-style: the account is the first path segment).
    pub endpoint: String,
    /// The account name (`devstoreaccount1`).
    pub account: String,
    /// The account key, base64 as Azure shows it.
    pub key: String,
}

impl Azurite {
    /// The account `e2e/testbed env` exports (`ZF_AZURE_*`).
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            endpoint: service_env("azurite", "ZF_AZURE_BLOB_ENDPOINT")?,
            account: service_env("azurite", "ZF_AZURE_ACCOUNT")?,
            key: service_env("azurite", "ZF_AZURE_ACCOUNT_KEY")?,
        })
    }

    /// An object_store client for `container` configured as for any Azure account: endpoint,
    /// account name and account key (shared-key requests, service SAS for signed URLs).
    pub fn store(&self, container: &str) -> anyhow::Result<MicrosoftAzure> {
        Ok(MicrosoftAzureBuilder::new()
            .with_endpoint(self.endpoint.clone())
            .with_account(&self.account)
            .with_access_key(&self.key)
            .with_container_name(container)
            .with_allow_http(true)
            .build()?)
    }

    /// Creates `container` ("Create Container", `PUT ?restype=container`), signed with the
    /// account key.
    pub async fn create_container(&self, container: &str) -> anyhow::Result<()> {
        let url = format!("{}/{container}?restype=container", self.endpoint);
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        let path = url.parse::<http::Uri>()?.path().to_owned();
        let authorization = self.shared_key("PUT", &date, &path, &[("restype", "container")])?;
        let headers =
            [("x-ms-date", date.as_str()), ("x-ms-version", API_VERSION), ("Authorization", authorization.as_str())];
        let (status, body) = http("PUT", &url, &headers, b"").await?;
        anyhow::ensure!(
            status == 201,
            "creating container {container}: HTTP {status} {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    }

    /// The `Authorization: SharedKey` header of a body-less request with only the `x-ms-date`
    /// and `x-ms-version` headers, per "Authorize with Shared Key"
    /// (<https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key>):
    /// eleven empty standard headers (Content-Length is empty when 0), the canonicalized
    /// `x-ms-` headers, then `/<account><path>` and the query parameters sorted by name.
    fn shared_key(&self, method: &str, date: &str, path: &str, query: &[(&str, &str)]) -> anyhow::Result<String> {
        let mut query: Vec<_> = query.iter().map(|(k, v)| format!("\n{}:{v}", k.to_ascii_lowercase())).collect();
        query.sort();
        let string_to_sign = format!(
            "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n/{}{path}{}",
            self.account,
            query.concat()
        );
        let key = BASE64.decode(&self.key).context("the account key is not base64")?;
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &key);
        let signature = aws_lc_rs::hmac::sign(&key, string_to_sign.as_bytes());
        Ok(format!("SharedKey {}:{}", self.account, BASE64.encode(signature.as_ref())))
    }
}
