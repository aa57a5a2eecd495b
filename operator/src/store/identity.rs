//! The operator's own cloud identities, used for stores that a pipeline names without a
//! credentials Secret. They are read once at start from the environment that the platform gives
//! the operator's pod (the chart's `podIdentity` values arrange it), built into one credential
//! provider per cloud and shared by every pipeline, so tokens are fetched and cached once.
//!
//! - AWS: the standard chain, in the AWS SDKs' order
//!   (<https://docs.aws.amazon.com/sdkref/latest/guide/standardized-credentials.html>): keys in
//!   `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (`AWS_SESSION_TOKEN`); a web identity token
//!   (`AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`, as IRSA sets them; STS at
//!   `AWS_ENDPOINT_URL_STS`, else `https://sts.<AWS_REGION>.amazonaws.com`); container credentials
//!   (`AWS_CONTAINER_CREDENTIALS_FULL_URI` with `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`, as EKS
//!   Pod Identity sets them, or ECS's `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`); then the EC2
//!   instance metadata service (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, default
//!   `http://169.254.169.254`), unless `AWS_EC2_METADATA_DISABLED=true`.
//! - Azure: workload identity only (`AZURE_CLIENT_ID`, `AZURE_TENANT_ID`,
//!   `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST`, as the Azure Workload Identity webhook
//!   sets them); without them there is no Azure identity.
//! - GCP: application default credentials (`GOOGLE_APPLICATION_CREDENTIALS`), else the metadata
//!   server (GKE Workload Identity; `GCE_METADATA_HOST` overrides its address), unless
//!   `ZEROFLOW_GCP_IDENTITY=false`. Signed URLs are signed by the key of an ADC key file, or by
//!   the IAM Credentials API (`signBlob`) for the metadata server's service account.

use std::fmt;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredentialProvider};
use object_store::azure::{AzureCredentialProvider, MicrosoftAzureBuilder};
use object_store::gcp::{GcpCredentialProvider, GcpSigningCredentialProvider, GoogleCloudStorageBuilder};

use super::retry_config;
use super::s3::DEFAULT_REGION;

/// Placeholder bucket and account names: the builders need them, the providers ignore them.
const PLACEHOLDER_BUCKET: &str = "zeroflow-identity";

/// The operator's identity on each cloud, when it has one.
#[derive(Clone, Default)]
pub struct Identities {
    pub aws: Option<AwsCredentialProvider>,
    pub azure: Option<AzureCredentialProvider>,
    pub gcp: Option<GcpIdentity>,
    /// Which source each comes from, for the start-up log.
    pub description: String,
}

/// Tokens for GCS requests and the signer of V4 URLs.
#[derive(Clone)]
pub struct GcpIdentity {
    pub credentials: GcpCredentialProvider,
    pub signing: GcpSigningCredentialProvider,
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities").field("description", &self.description).finish()
    }
}

/// Where the AWS identity comes from: the first step of the standard chain that applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AwsSource {
    Keys { access_key_id: String, secret_access_key: String, session_token: Option<String> },
    WebIdentity { token_file: String, role_arn: String, session_name: Option<String>, sts_endpoint: Option<String> },
    PodIdentity { full_uri: String, token_file: String },
    Container { relative_uri: String },
    InstanceMetadata { endpoint: Option<String> },
    None,
}

impl AwsSource {
    fn name(&self) -> &'static str {
        match self {
            AwsSource::Keys { .. } => "environment keys",
            AwsSource::WebIdentity { .. } => "web identity token (IRSA)",
            AwsSource::PodIdentity { .. } => "EKS Pod Identity",
            AwsSource::Container { .. } => "ECS container credentials",
            AwsSource::InstanceMetadata { .. } => "EC2 instance metadata",
            AwsSource::None => "none",
        }
    }
}

/// The AWS chain's choice for this environment (`env` reads one variable; empty counts as unset).
pub fn aws_source(env: &dyn Fn(&str) -> Option<String>) -> AwsSource {
    let var = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if let (Some(access_key_id), Some(secret_access_key)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        return AwsSource::Keys { access_key_id, secret_access_key, session_token: var("AWS_SESSION_TOKEN") };
    }
    if let (Some(token_file), Some(role_arn)) = (var("AWS_WEB_IDENTITY_TOKEN_FILE"), var("AWS_ROLE_ARN")) {
        return AwsSource::WebIdentity {
            token_file,
            role_arn,
            session_name: var("AWS_ROLE_SESSION_NAME"),
            sts_endpoint: var("AWS_ENDPOINT_URL_STS"),
        };
    }
    if let (Some(full_uri), Some(token_file)) =
        (var("AWS_CONTAINER_CREDENTIALS_FULL_URI"), var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"))
    {
        return AwsSource::PodIdentity { full_uri, token_file };
    }
    if let Some(relative_uri) = var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        return AwsSource::Container { relative_uri };
    }
    if var("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return AwsSource::None;
    }
    AwsSource::InstanceMetadata { endpoint: var("AWS_EC2_METADATA_SERVICE_ENDPOINT") }
}

/// The Azure workload identity's settings, when all three are there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureWorkload {
    pub client_id: String,
    pub tenant_id: String,
    pub token_file: String,
    pub authority_host: Option<String>,
}

pub fn azure_workload(env: &dyn Fn(&str) -> Option<String>) -> Option<AzureWorkload> {
    let var = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    Some(AzureWorkload {
        client_id: var("AZURE_CLIENT_ID")?,
        tenant_id: var("AZURE_TENANT_ID")?,
        token_file: var("AZURE_FEDERATED_TOKEN_FILE")?,
        authority_host: var("AZURE_AUTHORITY_HOST"),
    })
}

impl Identities {
    /// The identities the process environment describes. Building makes no request: tokens are
    /// fetched when a store first needs them.
    pub fn from_env() -> Self {
        let env = |name: &str| std::env::var(name).ok();
        Self::from(&env)
    }

    /// Like [`Identities::from_env`], from any variable lookup.
    pub fn from(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let region = env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| DEFAULT_REGION.into());
        let source = aws_source(env);
        let aws = aws_provider(&source, &region);
        let azure = azure_workload(env).and_then(|w| azure_provider(&w));
        let gcp_enabled = env("ZEROFLOW_GCP_IDENTITY").is_none_or(|v| !v.trim().eq_ignore_ascii_case("false"));
        let gcp = if gcp_enabled {
            gcp_identity(env("GOOGLE_APPLICATION_CREDENTIALS").filter(|p| !p.is_empty()))
        } else {
            None
        };
        let description = format!(
            "AWS: {}; Azure: {}; GCP: {}",
            if aws.is_some() { source.name() } else { "none" },
            if azure.is_some() { "workload identity" } else { "none" },
            if gcp.is_some() { "application default credentials or metadata server" } else { "none" },
        );
        Identities { aws, azure, gcp, description }
    }

    /// Identities with a fixed AWS key, for unit tests that need one to be present.
    #[cfg(test)]
    pub fn for_tests_with_aws() -> Self {
        let source = AwsSource::Keys { access_key_id: "a".into(), secret_access_key: "b".into(), session_token: None };
        Identities { aws: aws_provider(&source, DEFAULT_REGION), ..Default::default() }
    }
}

fn aws_provider(source: &AwsSource, region: &str) -> Option<AwsCredentialProvider> {
    use AmazonS3ConfigKey as Key;
    let builder =
        AmazonS3Builder::new().with_bucket_name(PLACEHOLDER_BUCKET).with_region(region).with_retry(retry_config());
    let builder = match source {
        AwsSource::None => return None,
        AwsSource::Keys { access_key_id, secret_access_key, session_token } => {
            let builder = builder.with_access_key_id(access_key_id).with_secret_access_key(secret_access_key);
            match session_token {
                Some(token) => builder.with_token(token),
                None => builder,
            }
        }
        AwsSource::WebIdentity { token_file, role_arn, session_name, sts_endpoint } => {
            let mut builder =
                builder.with_config(Key::WebIdentityTokenFile, token_file).with_config(Key::RoleArn, role_arn);
            if let Some(name) = session_name {
                builder = builder.with_config(Key::RoleSessionName, name);
            }
            if let Some(endpoint) = sts_endpoint {
                builder = builder.with_config(Key::StsEndpoint, endpoint);
            }
            builder
        }
        AwsSource::PodIdentity { full_uri, token_file } => builder
            .with_config(Key::ContainerCredentialsFullUri, full_uri)
            .with_config(Key::ContainerAuthorizationTokenFile, token_file),
        AwsSource::Container { relative_uri } => {
            builder.with_config(Key::ContainerCredentialsRelativeUri, relative_uri)
        }
        AwsSource::InstanceMetadata { endpoint } => match endpoint {
            Some(endpoint) => builder.with_config(Key::MetadataEndpoint, endpoint),
            None => builder,
        },
    };
    match builder.build() {
        Ok(client) => Some(client.credentials().clone()),
        Err(e) => {
            tracing::warn!(error = %e, source = source.name(), "the AWS identity cannot be used");
            None
        }
    }
}

fn azure_provider(workload: &AzureWorkload) -> Option<AzureCredentialProvider> {
    let mut builder = MicrosoftAzureBuilder::new()
        .with_account("zeroflowidentity")
        .with_container_name(PLACEHOLDER_BUCKET)
        .with_client_id(&workload.client_id)
        .with_tenant_id(&workload.tenant_id)
        .with_federated_token_file(&workload.token_file)
        .with_retry(retry_config());
    if let Some(host) = &workload.authority_host {
        builder = builder.with_authority_host(host);
    }
    match builder.build() {
        Ok(client) => Some(client.credentials().clone()),
        Err(e) => {
            tracing::warn!(error = %e, "the Azure workload identity cannot be used");
            None
        }
    }
}

fn gcp_identity(application_credentials: Option<String>) -> Option<GcpIdentity> {
    // Without a credentials file (or gcloud's in $HOME) the providers ask the metadata server,
    // on first use.
    let mut builder = GoogleCloudStorageBuilder::new().with_bucket_name(PLACEHOLDER_BUCKET).with_retry(retry_config());
    if let Some(path) = application_credentials {
        builder = builder.with_application_credentials(path);
    }
    match builder.build() {
        Ok(client) => Some(GcpIdentity {
            credentials: client.credentials().clone(),
            signing: client.signing_credentials().clone(),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "the GCP identity cannot be used");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_aws_chain_takes_the_first_source_present() {
        let all = [
            ("AWS_ACCESS_KEY_ID", "AK"),
            ("AWS_SECRET_ACCESS_KEY", "SK"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials"),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/var/run/pod-identity/token"),
            ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x"),
        ];
        assert!(matches!(aws_source(&env(&all)), AwsSource::Keys { .. }));
        assert!(matches!(aws_source(&env(&all[2..])), AwsSource::WebIdentity { .. }));
        assert_eq!(
            aws_source(&env(&all[4..])),
            AwsSource::PodIdentity {
                full_uri: "http://169.254.170.23/v1/credentials".into(),
                token_file: "/var/run/pod-identity/token".into()
            }
        );
        assert!(matches!(aws_source(&env(&all[6..])), AwsSource::Container { .. }));
        assert_eq!(aws_source(&env(&[])), AwsSource::InstanceMetadata { endpoint: None });
        assert_eq!(aws_source(&env(&[("AWS_EC2_METADATA_DISABLED", "TRUE")])), AwsSource::None);
        // A role without its token file is not a web identity; empty values count as unset.
        assert_eq!(
            aws_source(&env(&[
                ("AWS_ROLE_ARN", "arn"),
                ("AWS_ACCESS_KEY_ID", ""),
                ("AWS_EC2_METADATA_DISABLED", "true")
            ])),
            AwsSource::None
        );
    }

    #[test]
    fn web_identity_takes_its_sts_endpoint_and_session_name() {
        let source = aws_source(&env(&[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
            ("AWS_ROLE_ARN", "arn:minio:iam:::role/x"),
            ("AWS_ENDPOINT_URL_STS", "https://minio:9000"),
            ("AWS_ROLE_SESSION_NAME", "zeroflow"),
        ]));
        assert_eq!(
            source,
            AwsSource::WebIdentity {
                token_file: "/t".into(),
                role_arn: "arn:minio:iam:::role/x".into(),
                session_name: Some("zeroflow".into()),
                sts_endpoint: Some("https://minio:9000".into()),
            }
        );
        assert!(aws_provider(&source, "us-east-1").is_some());
    }

    #[test]
    fn azure_needs_all_three_workload_identity_settings() {
        let full = [("AZURE_CLIENT_ID", "c"), ("AZURE_TENANT_ID", "t"), ("AZURE_FEDERATED_TOKEN_FILE", "/f")];
        let workload = azure_workload(&env(&full)).expect("complete");
        assert_eq!(workload.authority_host, None);
        assert!(azure_provider(&workload).is_some());
        assert_eq!(azure_workload(&env(&full[..2])), None);
    }

    #[test]
    fn identities_say_what_they_use_and_can_be_switched_off() {
        let identities =
            Identities::from(&env(&[("AWS_EC2_METADATA_DISABLED", "true"), ("ZEROFLOW_GCP_IDENTITY", "false")]));
        assert!(identities.aws.is_none() && identities.azure.is_none() && identities.gcp.is_none());
        assert_eq!(identities.description, "AWS: none; Azure: none; GCP: none");
    }
}
