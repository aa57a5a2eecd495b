//! Google Cloud Storage: a service account's JSON key from a Secret, or the operator's own GCP
//! identity. Workers get V4 signed URLs: signed locally with the key's private key, or by the
//! IAM Credentials API (`signBlob`) for the operator's identity.

use std::fmt;
use std::sync::Arc;

use object_store::StaticCredentialProvider;
use object_store::gcp::{
    GcpSigningCredential, GcpSigningCredentialProvider, GoogleCloudStorage, GoogleCloudStorageBuilder,
    ServiceAccountKey,
};

use super::identity::GcpIdentity;
use super::{Identities, OpenBucket, SecretData, StoreError, client_options, required_secret_text, retry_config};
use crate::api::GcsStoreSpec;
use crate::workapi::SignedBucket;

/// Secret key, as documented on `gcs.credentialsSecretRef`.
pub const SERVICE_ACCOUNT_KEY: &str = "serviceAccountKey";

/// One GCS project's buckets.
#[derive(Clone)]
pub struct GcsConfig {
    /// `None`: `https://storage.googleapis.com`.
    pub endpoint: Option<String>,
    pub credentials: GcsCredentials,
}

#[derive(Clone)]
pub enum GcsCredentials {
    /// A service account's JSON key file (of `email`), and what signs URLs: its private key.
    Key { json: String, email: String, signing: GcpSigningCredentialProvider },
    /// The operator's own identity.
    Identity(GcpIdentity),
}

// Hand-written so that `{:?}` in a log line can never print a secret.
impl fmt::Debug for GcsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GcsCredentials::Key { email, .. } => write!(f, "<key of {email} redacted>"),
            GcsCredentials::Identity(_) => f.write_str("<the operator's GCP identity>"),
        }
    }
}

impl fmt::Debug for GcsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsConfig").field("endpoint", &self.endpoint).field("credentials", &self.credentials).finish()
    }
}

/// The store a spec names, with the key from its Secret or the operator's identity.
pub fn config(
    spec: &GcsStoreSpec,
    secret: Option<(&str, &SecretData)>,
    identities: &Identities,
) -> Result<GcsConfig, StoreError> {
    let credentials = match secret {
        Some((name, data)) => key_from_secret(name, data)?,
        None => GcsCredentials::Identity(
            identities
                .gcp
                .clone()
                .ok_or(StoreError::NoIdentity("GCP identity (it is switched off with ZEROFLOW_GCP_IDENTITY=false)"))?,
        ),
    };
    Ok(GcsConfig { endpoint: spec.endpoint.as_deref().map(|e| e.trim_end_matches('/').to_owned()), credentials })
}

/// Reads and checks the key file: JSON with `client_email` and a PEM `private_key`.
pub fn key_from_secret(secret: &str, data: &SecretData) -> Result<GcsCredentials, StoreError> {
    let json = required_secret_text(secret, data, SERVICE_ACCOUNT_KEY)?;
    let invalid = |what: &str| StoreError::Invalid(format!("Secret {secret:?} key {SERVICE_ACCOUNT_KEY:?}: {what}"));
    let key: serde_json::Value = serde_json::from_str(&json).map_err(|_| invalid("not a JSON key file"))?;
    let email = key["client_email"].as_str().ok_or_else(|| invalid("no client_email"))?;
    let pem = key["private_key"].as_str().ok_or_else(|| invalid("no private_key"))?;
    let private_key =
        ServiceAccountKey::from_pem(pem.as_bytes()).map_err(|_| invalid("private_key is not an RSA key"))?;
    let signing = GcpSigningCredential { email: email.to_owned(), private_key: Some(private_key) };
    Ok(GcsCredentials::Key { signing: Arc::new(StaticCredentialProvider::new(signing)), email: email.to_owned(), json })
}

/// A client for one bucket.
pub fn bucket_client(config: &GcsConfig, bucket: &str) -> Result<GoogleCloudStorage, StoreError> {
    let mut builder = GoogleCloudStorageBuilder::new()
        .with_bucket_name(bucket)
        .with_retry(retry_config())
        .with_client_options(client_options(config.endpoint.as_deref()));
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_base_url(endpoint);
    }
    builder = match &config.credentials {
        // The signing key is given explicitly: object_store would otherwise not sign with a key
        // file marked for an emulator (`disable_oauth`), and it is the same key either way.
        GcsCredentials::Key { json, signing, .. } => {
            builder.with_service_account_key(json).with_signing_credentials(signing.clone())
        }
        GcsCredentials::Identity(identity) => {
            builder.with_credentials(identity.credentials.clone()).with_signing_credentials(identity.signing.clone())
        }
    };
    builder.build().map_err(|e| StoreError::Invalid(e.to_string()))
}

pub(super) fn open(config: &GcsConfig, bucket: &str) -> Result<OpenBucket, StoreError> {
    let client = bucket_client(config, bucket)?;
    Ok(OpenBucket { access: Arc::new(SignedBucket::new(bucket, client.clone())), store: Arc::new(client) })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn data(pairs: &[(&str, &str)]) -> SecretData {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn the_key_file_is_checked_and_never_printed() {
        let missing = key_from_secret("gcs", &data(&[])).expect_err("refused");
        assert_eq!(missing.to_string(), "Secret \"gcs\" has no key \"serviceAccountKey\"");
        let not_json = key_from_secret("gcs", &data(&[(SERVICE_ACCOUNT_KEY, "{")])).expect_err("refused");
        assert_eq!(not_json.reason(), "InvalidStore");
        let bad_pem = r#"{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----\nsecretstuff\n-----END PRIVATE KEY-----\n"}"#;
        let refused = key_from_secret("gcs", &data(&[(SERVICE_ACCOUNT_KEY, bad_pem)])).expect_err("refused");
        assert!(!refused.to_string().contains("secretstuff"), "{refused}");
    }

    #[test]
    fn without_a_secret_the_operators_identity_is_needed() {
        let spec = GcsStoreSpec::default();
        assert_eq!(config(&spec, None, &Identities::default()).err().map(|e| e.reason()), Some("NoCredentials"));
    }
}
