//! Azure Blob Storage: an account key or a SAS token from a Secret, or the operator's workload
//! identity. Workers get a SAS per blob ([`super::azure_sas`]): a service SAS signed with the
//! account key, a user delegation SAS under the workload identity, or the Secret's own SAS
//! token. Uploads must carry `x-ms-blob-type: BlockBlob` ("Put Blob" refuses a PUT without it).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use object_store::azure::{AzureCredential, AzureCredentialProvider, MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::signer::{Method, Url};

use super::azure_sas::{self, BlobSas, DelegationKey};
use super::{Identities, OpenBucket, SecretData, StoreError, client_options, retry_config, secret_text};
use crate::api::AzureStoreSpec;
use crate::workapi::objects::{self, key_path};
use crate::workapi::{BucketAccess, ObjectError, ObjectInfo};

/// Secret keys, as documented on `azure.credentialsSecretRef`.
pub const ACCOUNT_KEY: &str = "accountKey";
pub const SAS_TOKEN: &str = "sasToken";

/// A user delegation key is requested for this long and renewed when less than
/// [`DELEGATION_KEY_MARGIN`] of it is left, which must exceed the longest SAS made with it (a
/// lease's duration: at most an hour, per the CRD).
const DELEGATION_KEY_LIFETIME: Duration = Duration::from_secs(6 * 3600);
const DELEGATION_KEY_MARGIN: Duration = Duration::from_secs(2 * 3600);

/// One storage account.
#[derive(Clone)]
pub struct AzureConfig {
    pub account: String,
    /// The Blob service's URL, `https://<account>.blob.core.windows.net` unless given.
    pub endpoint: Url,
    pub credentials: AzureCredentials,
}

/// How requests and workers' URLs are authorized.
#[derive(Clone)]
pub enum AzureCredentials {
    /// The account key, base64 as the portal shows it.
    AccountKey(String),
    /// A SAS token's query pairs.
    Sas(Vec<(String, String)>),
    /// The operator's workload identity (bearer tokens).
    Identity(AzureCredentialProvider),
}

// Hand-written so that `{:?}` in a log line can never print a secret.
impl fmt::Debug for AzureCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AzureCredentials::AccountKey(_) => "<account key redacted>",
            AzureCredentials::Sas(_) => "<SAS token redacted>",
            AzureCredentials::Identity(_) => "<the operator's Azure workload identity>",
        })
    }
}

impl fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureConfig")
            .field("account", &self.account)
            .field("endpoint", &self.endpoint.as_str())
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// The account a spec names, with credentials from its Secret or the operator's identity.
pub fn config(
    spec: &AzureStoreSpec,
    secret: Option<(&str, &SecretData)>,
    identities: &Identities,
) -> Result<AzureConfig, StoreError> {
    let credentials = match secret {
        Some((name, data)) => credentials_from_secret(name, data)?,
        None => AzureCredentials::Identity(identities.azure.clone().ok_or(StoreError::NoIdentity(
            "Azure workload identity (AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE)",
        ))?),
    };
    let endpoint = match &spec.endpoint {
        Some(endpoint) => endpoint.trim_end_matches('/').to_owned(),
        None => format!("https://{}.blob.core.windows.net", spec.account_name),
    };
    let endpoint = Url::parse(&endpoint).map_err(|e| StoreError::Invalid(format!("endpoint {endpoint:?}: {e}")))?;
    Ok(AzureConfig { account: spec.account_name.clone(), endpoint, credentials })
}

/// Exactly one of the keys `accountKey` and `sasToken`.
pub fn credentials_from_secret(secret: &str, data: &SecretData) -> Result<AzureCredentials, StoreError> {
    match (secret_text(secret, data, ACCOUNT_KEY)?, secret_text(secret, data, SAS_TOKEN)?) {
        (Some(key), None) => {
            BASE64
                .decode(&key)
                .map_err(|_| StoreError::Invalid(format!("Secret {secret:?} key {ACCOUNT_KEY:?} is not base64")))?;
            Ok(AzureCredentials::AccountKey(key))
        }
        (None, Some(token)) => {
            let pairs = sas_pairs(&token);
            if !pairs.iter().any(|(k, _)| k == "sig") {
                return Err(StoreError::Invalid(format!(
                    "Secret {secret:?} key {SAS_TOKEN:?} is not a SAS token (it has no sig)"
                )));
            }
            Ok(AzureCredentials::Sas(pairs))
        }
        (Some(_), Some(_)) => {
            Err(StoreError::Invalid(format!("Secret {secret:?} has both {ACCOUNT_KEY:?} and {SAS_TOKEN:?}; keep one")))
        }
        (None, None) => Err(StoreError::SecretMissingKey { secret: secret.to_owned(), key: ACCOUNT_KEY }),
    }
}

/// A SAS token's query pairs, decoded; the portal's token may start with `?`.
fn sas_pairs(token: &str) -> Vec<(String, String)> {
    let query = token.trim().trim_start_matches('?');
    Url::parse(&format!("http://sas.invalid/?{query}"))
        .map(|url| url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// A client for one container.
pub fn container_client(config: &AzureConfig, container: &str) -> Result<MicrosoftAzure, StoreError> {
    let builder = MicrosoftAzureBuilder::new()
        .with_account(&config.account)
        .with_container_name(container)
        .with_endpoint(config.endpoint.to_string().trim_end_matches('/').to_owned())
        .with_retry(retry_config())
        .with_client_options(client_options(Some(config.endpoint.as_str())));
    let builder = match &config.credentials {
        AzureCredentials::AccountKey(key) => builder.with_access_key(key),
        AzureCredentials::Sas(pairs) => builder.with_sas_authorization(pairs.clone()),
        AzureCredentials::Identity(provider) => builder.with_credentials(provider.clone()),
    };
    builder.build().map_err(|e| StoreError::Invalid(e.to_string()))
}

pub(super) fn open(config: &AzureConfig, container: &str) -> Result<OpenBucket, StoreError> {
    let client = container_client(config, container)?;
    let signer = match &config.credentials {
        AzureCredentials::AccountKey(key) => Signer::AccountKey(
            BASE64.decode(key).map_err(|_| StoreError::Invalid("the account key is not base64".into()))?,
        ),
        AzureCredentials::Sas(pairs) => Signer::Sas(pairs.clone()),
        AzureCredentials::Identity(provider) => Signer::Delegation(Box::new(Delegation {
            provider: provider.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| StoreError::Invalid(e.to_string()))?,
            key: tokio::sync::Mutex::new(None),
        })),
    };
    let access = AzureContainer {
        account: config.account.clone(),
        endpoint: config.endpoint.clone(),
        container: container.to_owned(),
        signer,
        client: client.clone(),
    };
    Ok(OpenBucket { store: Arc::new(client), access: Arc::new(access) })
}

/// How one container's blob URLs are signed.
enum Signer {
    AccountKey(Vec<u8>),
    Sas(Vec<(String, String)>),
    /// User delegation keys fetched with the workload identity's token, cached.
    Delegation(Box<Delegation>),
}

struct Delegation {
    provider: AzureCredentialProvider,
    http: reqwest::Client,
    key: tokio::sync::Mutex<Option<(DateTime<Utc>, DelegationKey)>>,
}

/// The work API's view of one container.
struct AzureContainer {
    account: String,
    endpoint: Url,
    container: String,
    signer: Signer,
    client: MicrosoftAzure,
}

/// The SAS permission a method needs: read for GET and HEAD, create and write for PUT.
fn permissions(method: &Method) -> Result<&'static str, ObjectError> {
    if *method == Method::GET || *method == Method::HEAD {
        Ok("r")
    } else if *method == Method::PUT {
        Ok("cw")
    } else {
        Err(ObjectError::Store(format!("cannot sign {method} for Azure")))
    }
}

impl AzureContainer {
    async fn sign(&self, method: Method, key: &str, expires: Duration) -> Result<Url, ObjectError> {
        key_path(key)?;
        let mut url = azure_sas::blob_url(&self.endpoint, &self.container, key).map_err(ObjectError::Store)?;
        let expiry = Utc::now()
            + chrono::Duration::from_std(expires).map_err(|_| ObjectError::Store("expiry out of range".into()))?;
        let sas = BlobSas {
            account: &self.account,
            container: &self.container,
            blob: key,
            permissions: permissions(&method)?,
            expiry,
        };
        let pairs: Vec<(String, String)> = match &self.signer {
            Signer::AccountKey(secret) => {
                sas.service_query(secret).into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            }
            Signer::Sas(pairs) => pairs.clone(),
            Signer::Delegation(_) => {
                let key = self.delegation_key().await?;
                sas.user_delegation_query(&key)
                    .map_err(ObjectError::Store)?
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect()
            }
        };
        url.query_pairs_mut().extend_pairs(pairs);
        Ok(url)
    }

    /// A user delegation key with at least [`DELEGATION_KEY_MARGIN`] left, fetched when needed
    /// ("Get User Delegation Key",
    /// <https://learn.microsoft.com/rest/api/storageservices/get-user-delegation-key>).
    async fn delegation_key(&self) -> Result<DelegationKey, ObjectError> {
        let Signer::Delegation(delegation) = &self.signer else {
            return Err(ObjectError::Store("no workload identity".into()));
        };
        let Delegation { provider, http, key } = delegation.as_ref();
        let mut cached = key.lock().await;
        let now = Utc::now();
        let margin = chrono::Duration::from_std(DELEGATION_KEY_MARGIN).unwrap_or_default();
        if let Some((expiry, key)) = cached.as_ref()
            && *expiry - now > margin
        {
            return Ok(key.clone());
        }
        let token = match provider.get_credential().await.map_err(|e| ObjectError::Store(e.to_string()))?.as_ref() {
            AzureCredential::BearerToken(token) => token.clone(),
            _ => return Err(ObjectError::Store("the workload identity gave no bearer token".into())),
        };
        let lifetime = chrono::Duration::from_std(DELEGATION_KEY_LIFETIME).unwrap_or_default();
        // Started a little in the past, so a clock behind Azure's does not make it not yet valid.
        let start = now - chrono::Duration::minutes(5);
        let expiry = now + lifetime;
        let mut url = self.endpoint.clone();
        url.query_pairs_mut().append_pair("restype", "service").append_pair("comp", "userdelegationkey");
        let response = http
            .post(url)
            .bearer_auth(token)
            .header("x-ms-version", azure_sas::SAS_VERSION)
            .header("x-ms-date", now.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
            .body(azure_sas::delegation_key_request(start, expiry))
            .send()
            .await
            .map_err(|e| ObjectError::Store(format!("user delegation key: {e}")))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| ObjectError::Store(format!("user delegation key: {e}")))?;
        if !status.is_success() {
            // The body names Azure's error code; it carries no secret.
            return Err(ObjectError::Store(format!("user delegation key: HTTP {status}: {body}")));
        }
        let fresh = azure_sas::parse_delegation_key(&body).map_err(ObjectError::Store)?;
        *cached = Some((expiry, fresh.clone()));
        Ok(fresh)
    }
}

impl BucketAccess for AzureContainer {
    fn name(&self) -> &str {
        &self.container
    }

    fn presign<'a>(
        &'a self,
        method: Method,
        key: &'a str,
        expires: Duration,
    ) -> BoxFuture<'a, Result<Url, ObjectError>> {
        Box::pin(self.sign(method, key, expires))
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>, ObjectError>> {
        Box::pin(objects::head(&self.client, key))
    }

    fn upload_headers(&self) -> Vec<(String, String)> {
        vec![("x-ms-blob-type".to_owned(), "BlockBlob".to_owned())]
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn data(pairs: &[(&str, &str)]) -> SecretData {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec()))).collect()
    }

    fn spec(endpoint: Option<&str>) -> AzureStoreSpec {
        AzureStoreSpec {
            account_name: "acct".into(),
            endpoint: endpoint.map(str::to_owned),
            credentials_secret_ref: None,
        }
    }

    #[test]
    fn the_secret_holds_exactly_one_of_key_and_sas() {
        let key = credentials_from_secret("s", &data(&[(ACCOUNT_KEY, "a2V5\n")]));
        assert!(matches!(key, Ok(AzureCredentials::AccountKey(k)) if k == "a2V5"));
        let sas = credentials_from_secret("s", &data(&[(SAS_TOKEN, "?sv=2023-11-03&sp=rwdl&sig=a%2Bb")]));
        match sas {
            Ok(AzureCredentials::Sas(pairs)) => assert!(pairs.contains(&("sig".into(), "a+b".into())), "{pairs:?}"),
            _ => panic!("a SAS expected"),
        }
        let both = credentials_from_secret("s", &data(&[(ACCOUNT_KEY, "a2V5"), (SAS_TOKEN, "sig=x")]));
        assert_eq!(both.err().map(|e| e.reason()), Some("InvalidStore"));
        let none = credentials_from_secret("s", &data(&[])).expect_err("refused");
        assert_eq!(none.reason(), "SecretMissingKey");
        assert!(credentials_from_secret("s", &data(&[(ACCOUNT_KEY, "not base64!")])).is_err());
        assert!(credentials_from_secret("s", &data(&[(SAS_TOKEN, "sv=1")])).is_err(), "a SAS has a signature");
    }

    #[test]
    fn the_endpoint_defaults_to_the_public_cloud_and_identity_is_needed_without_a_secret() {
        let secret = data(&[(ACCOUNT_KEY, "a2V5")]);
        let cloud = config(&spec(None), Some(("s", &secret)), &Identities::default()).expect("config");
        assert_eq!(cloud.endpoint.as_str(), "https://acct.blob.core.windows.net/");
        let azurite = config(&spec(Some("http://127.0.0.1:10000/acct/")), Some(("s", &secret)), &Identities::default());
        assert_eq!(azurite.expect("config").endpoint.as_str(), "http://127.0.0.1:10000/acct");
        let none = config(&spec(None), None, &Identities::default()).expect_err("no identity");
        assert_eq!(none.reason(), "NoCredentials");
        let printed = format!("{cloud:?}");
        assert!(!printed.contains("a2V5"), "{printed}");
    }

    #[tokio::test]
    async fn workers_get_a_service_sas_per_blob_and_the_upload_header() {
        let secret = data(&[(ACCOUNT_KEY, "a2V5")]);
        let config = config(&spec(Some("http://127.0.0.1:10000/acct")), Some(("s", &secret)), &Identities::default());
        let open = open(&config.expect("config"), "landing").expect("open");
        let url = open.access.presign(Method::PUT, "out/a b.csv", Duration::from_secs(60)).await.expect("signed");
        assert_eq!(url.path(), "/acct/landing/out/a%20b.csv");
        let query: Vec<_> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        assert_eq!(query, ["sv", "sr", "sp", "se", "sig"]);
        assert!(url.query_pairs().any(|(k, v)| k == "sp" && v == "cw"));
        assert_eq!(open.access.upload_headers(), [("x-ms-blob-type".to_owned(), "BlockBlob".to_owned())]);
        assert!(open.access.presign(Method::DELETE, "a", Duration::from_secs(60)).await.is_err());
        assert!(matches!(
            open.access.presign(Method::GET, "/a", Duration::from_secs(60)).await,
            Err(ObjectError::UnsupportedKey(_))
        ));
    }
}
