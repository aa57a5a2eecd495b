//! The testbed's Google Cloud Storage (fake-gcs-server, `e2e/testbed up --with gcs`):
//! object_store clients for its buckets, and bucket creation, which object_store does not offer.

use std::sync::Arc;

use anyhow::Context as _;
use object_store::StaticCredentialProvider;
use object_store::gcp::{GcpSigningCredential, GoogleCloudStorage, GoogleCloudStorageBuilder, ServiceAccountKey};
use serde_json::json;

use crate::{http, service_env};

/// fake-gcs-server as `e2e/testbed env` exports it.
pub struct FakeGcs {
    /// `http://127.0.0.1:<port>`: the JSON API under `/storage/v1`, the XML API and signed URLs
    /// path-style (`/<bucket>/<object>`).
    pub endpoint: String,
    /// A service-account key file: a real RSA key, the client email, and object_store's emulator
    /// fields (`gcs_base_url` = the endpoint, `disable_oauth`).
    pub service_account_key: String,
}

impl FakeGcs {
    /// The endpoint and key file `e2e/testbed env` exports (`ZF_GCS_*`).
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            endpoint: service_env("gcs", "ZF_GCS_ENDPOINT")?,
            service_account_key: service_env("gcs", "ZF_GCS_SERVICE_ACCOUNT_KEY")?,
        })
    }

    /// An object_store client for `bucket` from the service-account key file.
    ///
    /// With `disable_oauth` object_store would sign URLs through Google's IAM `signBlob` API,
    /// so the key's private key is given as the signing credential: V4 signed URLs are then
    /// computed locally, as with a real service-account key.
    pub fn store(&self, bucket: &str) -> anyhow::Result<GoogleCloudStorage> {
        let key: serde_json::Value = serde_json::from_slice(&std::fs::read(&self.service_account_key)?)?;
        let pem = key["private_key"].as_str().context("key file without private_key")?;
        let email = key["client_email"].as_str().context("key file without client_email")?;
        let signing = GcpSigningCredential {
            email: email.to_owned(),
            private_key: Some(ServiceAccountKey::from_pem(pem.as_bytes())?),
        };
        Ok(GoogleCloudStorageBuilder::new()
            .with_service_account_path(&self.service_account_key)
            .with_bucket_name(bucket)
            .with_signing_credentials(Arc::new(StaticCredentialProvider::new(signing)))
            .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
            .build()?)
    }

    /// Creates `bucket` through the JSON API (`POST /storage/v1/b`); fake-gcs-server needs no
    /// token.
    pub async fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let url = format!("{}/storage/v1/b?project=zeroflow-testbed", self.endpoint);
        let body = json!({"name": bucket}).to_string();
        let (status, response) = http("POST", &url, &[("Content-Type", "application/json")], body.as_bytes()).await?;
        anyhow::ensure!(
            status == 200,
            "creating bucket {bucket}: HTTP {status} {}",
            String::from_utf8_lossy(&response)
        );
        Ok(())
    }
}
