//! S3-compatible stores (AWS S3, MinIO, Ceph RGW, ...): static keys from a Secret, or the
//! operator's own AWS identity. Workers get SigV4 presigned URLs; with temporary credentials
//! they carry the session token (`X-Amz-Security-Token`).

use std::fmt;
use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredentialProvider};

use super::{Identities, OpenBucket, SecretData, StoreError, client_options, required_secret_text, retry_config};
use crate::api::S3StoreSpec;
use crate::workapi::SignedBucket;

/// Secret keys of S3 credentials, as documented on `credentialsSecretRef`.
pub const ACCESS_KEY_ID: &str = "accessKeyId";
pub const SECRET_ACCESS_KEY: &str = "secretAccessKey";
/// Optional: the session token of temporary keys.
pub const SESSION_TOKEN: &str = "sessionToken";

/// Region used when none is given.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Everything needed to talk to one S3-compatible store.
#[derive(Clone)]
pub struct S3Config {
    /// `None`: AWS S3 in `region`.
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    pub credentials: S3Credentials,
}

/// Where requests' signing keys come from.
#[derive(Clone)]
pub enum S3Credentials {
    /// Keys from a Secret (or the operator's environment, for its default store).
    Keys { access_key_id: String, secret_access_key: String, session_token: Option<String> },
    /// The operator's own AWS identity ([`super::identity`]), shared by every pipeline.
    Identity(AwsCredentialProvider),
}

impl S3Config {
    /// A store at `endpoint` (path style) with static keys.
    pub fn with_keys(endpoint: &str, region: &str, access_key_id: &str, secret_access_key: &str) -> Self {
        S3Config {
            endpoint: Some(endpoint.trim_end_matches('/').to_owned()),
            region: region.to_owned(),
            path_style: true,
            credentials: S3Credentials::Keys {
                access_key_id: access_key_id.to_owned(),
                secret_access_key: secret_access_key.to_owned(),
                session_token: None,
            },
        }
    }
}

// Hand-written so that `{:?}` in a log line can never print a secret.
impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            S3Credentials::Keys { .. } => "<keys redacted>",
            S3Credentials::Identity(_) => "<the operator's AWS identity>",
        })
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// The store a spec names, with keys from its Secret or the operator's identity.
pub fn config(
    spec: &S3StoreSpec,
    secret: Option<(&str, &SecretData)>,
    identities: &Identities,
) -> Result<S3Config, StoreError> {
    let credentials = match secret {
        Some((name, data)) => keys_from_secret(name, data)?,
        None => S3Credentials::Identity(identities.aws.clone().ok_or(StoreError::NoIdentity(
            "AWS identity (no web identity token, EKS Pod Identity or container credentials, and \
             the instance metadata service is disabled)",
        ))?),
    };
    let endpoint = spec.endpoint.as_deref().map(|e| e.trim_end_matches('/').to_owned());
    Ok(S3Config {
        // Path style is what MinIO and Ceph expect; AWS S3 prefers virtual-hosted style.
        path_style: spec.path_style.unwrap_or(endpoint.is_some()),
        endpoint,
        region: spec.region.clone(),
        credentials,
    })
}

/// Reads the credential keys out of a Secret's data.
pub fn keys_from_secret(secret: &str, data: &SecretData) -> Result<S3Credentials, StoreError> {
    Ok(S3Credentials::Keys {
        access_key_id: required_secret_text(secret, data, ACCESS_KEY_ID)?,
        secret_access_key: required_secret_text(secret, data, SECRET_ACCESS_KEY)?,
        session_token: super::secret_text(secret, data, SESSION_TOKEN)?.filter(|t| !t.is_empty()),
    })
}

/// A client for one bucket.
pub fn bucket_client(config: &S3Config, bucket: &str) -> Result<AmazonS3, StoreError> {
    let mut builder = AmazonS3Builder::new()
        .with_region(&config.region)
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(!config.path_style)
        .with_retry(retry_config())
        .with_client_options(client_options(config.endpoint.as_deref()));
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    builder = match &config.credentials {
        S3Credentials::Keys { access_key_id, secret_access_key, session_token } => {
            let builder = builder.with_access_key_id(access_key_id).with_secret_access_key(secret_access_key);
            match session_token {
                Some(token) => builder.with_token(token),
                None => builder,
            }
        }
        S3Credentials::Identity(provider) => builder.with_credentials(provider.clone()),
    };
    builder.build().map_err(|e| StoreError::Invalid(e.to_string()))
}

pub(super) fn open(config: &S3Config, bucket: &str) -> Result<OpenBucket, StoreError> {
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

    fn spec(endpoint: Option<&str>) -> S3StoreSpec {
        S3StoreSpec {
            endpoint: endpoint.map(str::to_owned),
            region: "eu-west-1".into(),
            credentials_secret_ref: None,
            path_style: None,
        }
    }

    #[test]
    fn reads_the_credential_keys() {
        let creds = keys_from_secret("s", &data(&[(ACCESS_KEY_ID, "AK\n"), (SECRET_ACCESS_KEY, "SK")]));
        match creds {
            Ok(S3Credentials::Keys { access_key_id, secret_access_key, session_token }) => {
                assert_eq!((access_key_id.as_str(), secret_access_key.as_str(), session_token), ("AK", "SK", None));
            }
            _ => panic!("keys expected"),
        }
        let with_token =
            keys_from_secret("s", &data(&[(ACCESS_KEY_ID, "AK"), (SECRET_ACCESS_KEY, "SK"), (SESSION_TOKEN, "T")]));
        assert!(matches!(with_token, Ok(S3Credentials::Keys { session_token: Some(t), .. }) if t == "T"));
    }

    #[test]
    fn names_the_missing_key() {
        let err = keys_from_secret("store-creds", &data(&[(ACCESS_KEY_ID, "AK")])).expect_err("refused");
        assert_eq!(err.to_string(), "Secret \"store-creds\" has no key \"secretAccessKey\"");
        assert_eq!(err.reason(), "SecretMissingKey");
    }

    #[test]
    fn without_a_secret_the_operators_identity_is_used_or_its_absence_reported() {
        let none = config(&spec(None), None, &Identities::default()).expect_err("no identity");
        assert_eq!(none.reason(), "NoCredentials");
        let identities = Identities::for_tests_with_aws();
        let config = config(&spec(None), None, &identities).expect("identity");
        assert!(matches!(config.credentials, S3Credentials::Identity(_)));
        assert!(!config.path_style, "AWS S3 is addressed virtual-hosted style");
        assert!(bucket_client(&config, "bucket").is_ok());
    }

    #[test]
    fn path_style_follows_the_endpoint_unless_set() {
        let secret = data(&[(ACCESS_KEY_ID, "a"), (SECRET_ACCESS_KEY, "b")]);
        let minio = config(&spec(Some("http://minio:9000/")), Some(("s", &secret)), &Identities::default());
        let minio = minio.expect("config");
        assert_eq!(minio.endpoint.as_deref(), Some("http://minio:9000"));
        assert!(minio.path_style);
        let mut explicit = spec(Some("http://minio:9000"));
        explicit.path_style = Some(false);
        assert!(!config(&explicit, Some(("s", &secret)), &Identities::default()).expect("config").path_style);
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let config = S3Config::with_keys("http://minio:9000", "us-east-1", "AKIAEXAMPLE", "very-secret");
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret") && !printed.contains("AKIAEXAMPLE"), "{printed}");
        assert!(printed.contains("http://minio:9000"));
    }

    #[test]
    fn builds_clients_for_http_and_https_endpoints() {
        for endpoint in ["http://127.0.0.1:9000", "https://s3.eu-west-1.amazonaws.com"] {
            let config = S3Config::with_keys(endpoint, "eu-west-1", "a", "b");
            assert!(bucket_client(&config, "bucket").is_ok(), "{endpoint}");
        }
    }
}
