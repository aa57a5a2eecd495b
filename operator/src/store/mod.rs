//! Access to the object stores pipelines read and write: S3-compatible stores (AWS S3, MinIO,
//! Ceph RGW), Azure Blob Storage and Google Cloud Storage, all through object_store.
//!
//! A pipeline's store is a [`StoreConfig`]: settings from its spec with credentials from its
//! Secret, or the operator's own identity ([`identity::Identities`]) when it names none.
//! [`open`] turns it into the two views the runtime holds for a bucket: an `ObjectStore` (for
//! probes, resync's listings and the ledger) and a [`BucketAccess`] (signed URLs and HEADs for
//! the work API).
//!
//! Credentials are read from Secrets by the operator only; they are never logged (every config
//! type's `Debug` redacts them), never put in status or Events, and never handed to workers
//! (workers get signed URLs).

pub mod azure;
mod azure_sas;
pub mod gcs;
pub mod identity;
pub mod s3;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::api::{StoreKind, StoreSpec};
use crate::workapi::BucketAccess;
pub use identity::Identities;
pub use s3::{S3Config, S3Credentials, bucket_client};

/// How long a reachability probe may take before the store counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries of one store request: a few, within seconds. object_store's default (10 retries over
/// up to 3 minutes) would hold a worker's completion, or a lease poll, far longer than its
/// caller waits; callers retry at their own level instead.
const RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(10);

/// One store: which kind, where, and with which credentials.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    S3(S3Config),
    Azure(azure::AzureConfig),
    Gcs(gcs::GcsConfig),
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
    #[error("no credentialsSecretRef, and the operator has no {0}")]
    NoIdentity(&'static str),
    #[error("the operator's own identity could not provide credentials; details in the operator log")]
    IdentityFailed,
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
            StoreError::NoIdentity(_) => "NoCredentials",
            StoreError::IdentityFailed => "IdentityFailed",
            StoreError::BucketNotFound(_) => "BucketNotFound",
            StoreError::AccessDenied(_) => "AccessDenied",
            StoreError::Unreachable(_) => "Unreachable",
            StoreError::Invalid(_) => "InvalidStore",
        }
    }

    /// Problems that may clear up without a change to the pipeline (a Secret created later, a
    /// store or a token endpoint coming back), so the source is checked again soon.
    pub fn may_clear_up(&self) -> bool {
        matches!(
            self,
            StoreError::SecretNotFound(_)
                | StoreError::SecretForbidden { .. }
                | StoreError::Unreachable(_)
                | StoreError::BucketNotFound(_)
                | StoreError::IdentityFailed
        )
    }
}

/// What the operator brings to every pipeline's store: the store for pipelines that name none,
/// and its own identities for stores named without a Secret.
#[derive(Clone, Debug, Default)]
pub struct DefaultStore {
    pub store: Option<StoreConfig>,
    pub identities: Identities,
}

/// A Secret's data, by key, as read from the apiserver.
pub type SecretData = BTreeMap<String, ByteString>;

/// A store's settings with the credentials from its Secret (`secret`: its name and data, when
/// the spec names one) or the operator's own identity.
pub fn config_from_spec(
    spec: &StoreSpec,
    secret: Option<(&str, &SecretData)>,
    identities: &Identities,
) -> Result<StoreConfig, StoreError> {
    match spec.kind().map_err(StoreError::Invalid)? {
        StoreKind::S3(s3) => s3::config(&s3, secret, identities).map(StoreConfig::S3),
        StoreKind::Azure(azure) => azure::config(azure, secret, identities).map(StoreConfig::Azure),
        StoreKind::Gcs(gcs) => gcs::config(gcs, secret, identities).map(StoreConfig::Gcs),
    }
}

/// The Secret a store spec names, if any.
pub fn secret_name(spec: &StoreSpec) -> Result<Option<String>, StoreError> {
    let reference = match spec.kind().map_err(StoreError::Invalid)? {
        StoreKind::S3(s3) => s3.credentials_secret_ref.clone(),
        StoreKind::Azure(azure) => azure.credentials_secret_ref.clone(),
        StoreKind::Gcs(gcs) => gcs.credentials_secret_ref.clone(),
    };
    Ok(reference.map(|r| r.name))
}

/// The text of one key of a Secret, trimmed (editors and `echo` add newlines).
pub(crate) fn secret_text(secret: &str, data: &SecretData, key: &'static str) -> Result<Option<String>, StoreError> {
    let Some(value) = data.get(key) else { return Ok(None) };
    String::from_utf8(value.0.clone())
        .map(|v| Some(v.trim().to_owned()))
        .map_err(|_| StoreError::Invalid(format!("Secret {secret:?} key {key:?} is not UTF-8")))
}

/// Like [`secret_text`], for a key that must be there.
pub(crate) fn required_secret_text(secret: &str, data: &SecretData, key: &'static str) -> Result<String, StoreError> {
    secret_text(secret, data, key)?.ok_or_else(|| StoreError::SecretMissingKey { secret: secret.to_owned(), key })
}

/// One bucket of a store, opened: the client for listings and the ledger, and the signed-URL
/// access the work API hands to workers.
pub struct OpenBucket {
    pub store: Arc<dyn ObjectStore>,
    pub access: Arc<dyn BucketAccess>,
}

/// Builds the clients for `bucket` (no request is made).
pub fn open(config: &StoreConfig, bucket: &str) -> Result<OpenBucket, StoreError> {
    match config {
        StoreConfig::S3(s3) => s3::open(s3, bucket),
        StoreConfig::Azure(azure) => azure::open(azure, bucket),
        StoreConfig::Gcs(gcs) => gcs::open(gcs, bucket),
    }
}

/// Retries and timeouts shared by every store client.
pub(crate) fn retry_config() -> RetryConfig {
    RetryConfig { max_retries: RETRIES, retry_timeout: RETRY_TIMEOUT, backoff: BackoffConfig::default() }
}

pub(crate) fn client_options(endpoint: Option<&str>) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(endpoint.is_some_and(|e| e.starts_with("http://")))
        .with_timeout(PROBE_TIMEOUT)
        .with_connect_timeout(PROBE_TIMEOUT)
}

/// Checks that the bucket can be listed with these credentials (one request, after the
/// operator's own identity, when used, has provided credentials).
pub async fn probe(
    config: &StoreConfig,
    store: &dyn ObjectStore,
    bucket: &str,
    prefix: Option<&str>,
) -> Result<(), StoreError> {
    check_identity(config).await?;
    let prefix = prefix.filter(|p| !p.is_empty()).map(Path::from);
    match tokio::time::timeout(PROBE_TIMEOUT, store.list_with_delimiter(prefix.as_ref())).await {
        Err(_) => Err(StoreError::Unreachable(format!("no answer within {PROBE_TIMEOUT:?}"))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(classify(&e, bucket)),
    }
}

/// Asks the operator's own identity for credentials, when the store uses it, so that a failing
/// token exchange or metadata server is reported as such rather than as a store error.
async fn check_identity(config: &StoreConfig) -> Result<(), StoreError> {
    let fetch = async {
        match config {
            StoreConfig::S3(S3Config { credentials: S3Credentials::Identity(provider), .. }) => {
                provider.get_credential().await.map(drop)
            }
            StoreConfig::Azure(azure::AzureConfig {
                credentials: azure::AzureCredentials::Identity(provider), ..
            }) => provider.get_credential().await.map(drop),
            StoreConfig::Gcs(gcs::GcsConfig { credentials: gcs::GcsCredentials::Identity(identity), .. }) => {
                identity.credentials.get_credential().await.map(drop)
            }
            _ => Ok(()),
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT * 2, fetch).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            // The error may quote a token endpoint's answer: the operator log only.
            tracing::warn!(error = %e, "the operator's own identity could not provide credentials");
            Err(StoreError::IdentityFailed)
        }
        Err(_) => {
            tracing::warn!("the operator's own identity gave no credentials within {:?}", PROBE_TIMEOUT * 2);
            Err(StoreError::IdentityFailed)
        }
    }
}

/// A store error as a user-facing [`StoreError`], by kind and by the codes S3, Azure and GCS
/// put in their error bodies.
pub fn classify(error: &object_store::Error, bucket: &str) -> StoreError {
    let message = error.to_string();
    // The raw error may quote the response body of whatever answered at the endpoint, so it
    // goes to the operator's debug log only; users see a fixed description.
    tracing::debug!(bucket, error = %message, "store request failed");
    classify_message(error, &message, bucket)
}

fn classify_message(error: &object_store::Error, message: &str, bucket: &str) -> StoreError {
    let mentions = |codes: &[&str]| codes.iter().any(|code| message.contains(code));
    match error {
        object_store::Error::NotFound { .. } => StoreError::BucketNotFound(bucket.to_owned()),
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            StoreError::AccessDenied(bucket.to_owned())
        }
        // Some stores report these as error bodies rather than plain status codes: S3's and
        // MinIO's codes, Azure's, and GCS's XML API's.
        _ if mentions(&["NoSuchBucket", "ContainerNotFound", "The specified bucket does not exist"]) => {
            StoreError::BucketNotFound(bucket.to_owned())
        }
        _ if mentions(&[
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AuthenticationFailed",
            "AuthorizationFailure",
            "AuthorizationPermissionMismatch",
        ]) =>
        {
            StoreError::AccessDenied(bucket.to_owned())
        }
        _ => StoreError::Unreachable(
            "the endpoint did not answer as the store's API; details in the operator log".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(message: &str) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: message.to_owned().into() }
    }

    #[test]
    fn errors_map_to_the_documented_reasons() {
        let not_found = object_store::Error::NotFound { path: "p".into(), source: "x".into() };
        assert_eq!(classify(&not_found, "b").reason(), "BucketNotFound");
        let denied = object_store::Error::PermissionDenied { path: "p".into(), source: "x".into() };
        assert_eq!(classify(&denied, "b").reason(), "AccessDenied");
        for (body, reason) in [
            ("<Code>NoSuchBucket</Code>", "BucketNotFound"),
            ("<Code>ContainerNotFound</Code>", "BucketNotFound"),
            ("<Code>SignatureDoesNotMatch</Code>", "AccessDenied"),
            ("<Code>AuthenticationFailed</Code>", "AccessDenied"),
            ("<Code>AuthorizationPermissionMismatch</Code>", "AccessDenied"),
            ("connection refused", "Unreachable"),
        ] {
            assert_eq!(classify(&generic(body), "b").reason(), reason, "{body}");
        }
        // Messages shown to users never carry the raw error.
        assert!(!classify(&generic("secret-body"), "b").to_string().contains("secret-body"));
    }

    #[test]
    fn transient_problems_are_checked_again_soon() {
        assert!(StoreError::IdentityFailed.may_clear_up());
        assert!(StoreError::SecretForbidden { secret: "s".into(), namespace: "n".into() }.may_clear_up());
        assert!(StoreError::Unreachable("x".into()).may_clear_up());
        assert!(!StoreError::NoIdentity("AWS identity").may_clear_up());
        assert!(!StoreError::AccessDenied("b".into()).may_clear_up());
    }
}
