//! Access to S3-compatible object stores (AWS S3, MinIO, Ceph RGW, ...).
//!
//! Credentials are read from Secrets by the operator only; they are never logged, never put in
//! status or Events, and never handed to workers (workers get presigned URLs).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::ByteString;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::api::StoreSpec;

/// Secret keys holding the credentials, as documented on `credentialsSecretRef`.
pub const ACCESS_KEY_ID: &str = "accessKeyId";
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";

/// How long a reachability probe may take before the store counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries of one store request: a few, within seconds. object_store's default (10 retries over
/// up to 3 minutes) would hold a worker's completion, or a lease poll, far longer than its
/// caller waits; callers retry at their own level instead.
const RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to talk to one store.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub endpoint: String,
    pub region: String,
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
}

// Hand-written so that `{:?}` in a log line can never print the secret.
impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &"<redacted>")
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Why a store cannot be used. Messages are safe to show users: they never contain credentials.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("spec.source.store is not set and the operator has no default store (--default-store-endpoint)")]
    NoStore,
    #[error("Secret {0:?} not found")]
    SecretNotFound(String),
    /// The operator's ServiceAccount may not read Secrets in the pipeline's namespace: a
    /// least-privilege install grants Secrets only in the namespaces it lists.
    #[error(
        "the operator may not read Secret {secret:?} in namespace {namespace:?}: with the chart's rbac.restrictSecretAccess, add the namespace to rbac.secretNamespaces"
    )]
    SecretForbidden { secret: String, namespace: String },
    #[error("Secret {secret:?} has no key {key:?}")]
    SecretMissingKey { secret: String, key: &'static str },
    #[error("bucket {0:?} does not exist")]
    BucketNotFound(String),
    #[error("access to bucket {0:?} denied: check the credentials and the bucket policy")]
    AccessDenied(String),
    #[error("store unreachable: {0}")]
    Unreachable(String),
    #[error("invalid store settings: {0}")]
    Invalid(String),
}

impl StoreError {
    /// CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::NoStore => "NoStore",
            StoreError::SecretNotFound(_) => "SecretNotFound",
            StoreError::SecretForbidden { .. } => "SecretForbidden",
            StoreError::SecretMissingKey { .. } => "SecretMissingKey",
            StoreError::BucketNotFound(_) => "BucketNotFound",
            StoreError::AccessDenied(_) => "AccessDenied",
            StoreError::Unreachable(_) => "Unreachable",
            StoreError::Invalid(_) => "InvalidStore",
        }
    }
}

/// The operator-wide default store, used by pipelines that name none.
#[derive(Clone, Debug, Default)]
pub struct DefaultStore(pub Option<StoreConfig>);

/// Reads the two credential keys out of a Secret's data.
pub fn credentials_from_secret(
    secret_name: &str,
    data: &BTreeMap<String, ByteString>,
) -> Result<(String, String), StoreError> {
    let read = |key: &'static str| {
        let value =
            data.get(key).ok_or_else(|| StoreError::SecretMissingKey { secret: secret_name.to_owned(), key })?;
        String::from_utf8(value.0.clone())
            .map(|v| v.trim().to_owned())
            .map_err(|_| StoreError::Invalid(format!("Secret {secret_name:?} key {key:?} is not UTF-8")))
    };
    Ok((read(ACCESS_KEY_ID)?, read(SECRET_ACCESS_KEY)?))
}

/// Combines a pipeline's store settings with the credentials from its Secret.
pub fn config_from_spec(spec: &StoreSpec, access_key_id: String, secret_access_key: String) -> StoreConfig {
    StoreConfig {
        endpoint: spec.endpoint.trim_end_matches('/').to_owned(),
        region: spec.region.clone(),
        path_style: spec.path_style,
        access_key_id,
        secret_access_key,
    }
}

/// A client for one bucket.
pub fn bucket_client(config: &StoreConfig, bucket: &str) -> Result<AmazonS3, StoreError> {
    AmazonS3Builder::new()
        .with_endpoint(&config.endpoint)
        .with_region(&config.region)
        .with_bucket_name(bucket)
        .with_access_key_id(&config.access_key_id)
        .with_secret_access_key(&config.secret_access_key)
        .with_virtual_hosted_style_request(!config.path_style)
        .with_retry(RetryConfig {
            max_retries: RETRIES,
            retry_timeout: RETRY_TIMEOUT,
            backoff: BackoffConfig::default(),
        })
        .with_client_options(
            ClientOptions::new()
                .with_allow_http(config.endpoint.starts_with("http://"))
                .with_timeout(PROBE_TIMEOUT)
                .with_connect_timeout(PROBE_TIMEOUT),
        )
        .build()
        .map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Checks that the bucket can be listed with these credentials (one request).
pub async fn probe(client: &AmazonS3, bucket: &str, prefix: Option<&str>) -> Result<(), StoreError> {
    let prefix = prefix.filter(|p| !p.is_empty()).map(Path::from);
    match tokio::time::timeout(PROBE_TIMEOUT, client.list_with_delimiter(prefix.as_ref())).await {
        Err(_) => Err(StoreError::Unreachable(format!("no answer within {PROBE_TIMEOUT:?}"))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(classify(e, bucket)),
    }
}

fn classify(error: object_store::Error, bucket: &str) -> StoreError {
    let message = error.to_string();
    // The raw error may quote the response body of whatever answered at the endpoint, so it
    // goes to the operator's debug log only; users see a fixed description.
    tracing::debug!(bucket, error = %message, "store probe failed");
    match error {
        object_store::Error::NotFound { .. } => StoreError::BucketNotFound(bucket.to_owned()),
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            StoreError::AccessDenied(bucket.to_owned())
        }
        // Some stores report these as error bodies rather than plain status codes.
        _ if message.contains("NoSuchBucket") => StoreError::BucketNotFound(bucket.to_owned()),
        _ if ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"].iter().any(|m| message.contains(m)) => {
            StoreError::AccessDenied(bucket.to_owned())
        }
        _ => StoreError::Unreachable("the endpoint did not answer as an S3 API; details in the operator log".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    #[test]
    fn reads_both_credential_keys() {
        let creds = credentials_from_secret("s", &data(&[(ACCESS_KEY_ID, "AK\n"), (SECRET_ACCESS_KEY, "SK")]));
        assert_eq!(creds, Ok(("AK".into(), "SK".into())));
    }

    #[test]
    fn names_the_missing_key() {
        let err = credentials_from_secret("store-creds", &data(&[(ACCESS_KEY_ID, "AK")])).unwrap_err();
        assert_eq!(err.to_string(), "Secret \"store-creds\" has no key \"secretAccessKey\"");
        assert_eq!(err.reason(), "SecretMissingKey");
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let config = StoreConfig {
            endpoint: "http://minio:9000".into(),
            region: "us-east-1".into(),
            path_style: true,
            access_key_id: "AKIAEXAMPLE".into(),
            secret_access_key: "very-secret".into(),
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret") && !printed.contains("AKIAEXAMPLE"), "{printed}");
        assert!(printed.contains("http://minio:9000"));
    }

    #[test]
    fn builds_clients_for_http_and_https_endpoints() {
        for endpoint in ["http://127.0.0.1:9000", "https://s3.eu-west-1.amazonaws.com"] {
            let config = StoreConfig {
                endpoint: endpoint.into(),
                region: "eu-west-1".into(),
                path_style: true,
                access_key_id: "a".into(),
                secret_access_key: "b".into(),
            };
            assert!(bucket_client(&config, "bucket").is_ok(), "{endpoint}");
        }
    }
}
