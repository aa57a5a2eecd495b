//! The I/O half of SNS deliveries: signing certificates fetched (or read) and cached, and
//! subscriptions confirmed by visiting their `SubscribeURL`. What is checked is decided in
//! `zeroflow_core::events::sns`; this module only moves bytes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use thiserror::Error;
use url::Url;
use zeroflow_core::events::sns::{Message, SigningCert, SnsError, SnsHosts};

/// How many signing certificates are kept. SNS rotates its certificate rarely and every
/// region has its own, so a handful covers any deployment; the cache is emptied when full.
const CACHED_CERTIFICATES: usize = 32;

/// Largest certificate document read (a PEM certificate is a few KiB).
const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;

/// Where signing certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// `GET SigningCertURL` (through [`SnsSettings::endpoint`] when set).
    Fetch,
    /// `<dir>/<file name of SigningCertURL>`: for clusters that cannot reach SNS, and tests.
    Directory(PathBuf),
    /// `GET <prefix><file name of SigningCertURL>`: a mirror inside the cluster, and tests.
    UrlPrefix(Url),
}

/// What the gateway needs to know about SNS. `Default` is AWS's public endpoints.
#[derive(Debug, Clone)]
pub struct SnsSettings {
    /// Which hosts `SigningCertURL` and `SubscribeURL` must name.
    pub hosts: SnsHosts,
    pub certificates: CertificateSource,
    /// Where requests for SNS URLs are sent instead of the URL's own scheme, host and port
    /// (the path and query are kept): a proxy, or a local stand-in in tests.
    pub endpoint: Option<Url>,
    /// Visit `SubscribeURL` of verified confirmations; off, the gateway only says what to do.
    pub confirm: bool,
    /// Limit of each certificate fetch and confirmation.
    pub timeout: Duration,
}

impl Default for SnsSettings {
    fn default() -> Self {
        Self {
            hosts: SnsHosts::default(),
            certificates: CertificateSource::Fetch,
            endpoint: None,
            confirm: true,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why a message could not be checked or a subscription not confirmed.
#[derive(Debug, Error)]
pub enum SnsFailure {
    /// The message is not authentic, or not SNS's: refuse it.
    #[error(transparent)]
    Refused(#[from] SnsError),
    /// The certificate could not be had: the sender should retry later.
    #[error("cannot get the SNS signing certificate {url}: {reason}")]
    CertificateUnavailable { url: String, reason: String },
}

/// Certificates and confirmations, shared by all requests.
pub struct Sns {
    settings: SnsSettings,
    client: reqwest::Client,
    certificates: Mutex<HashMap<String, SigningCert>>,
}

impl std::fmt::Debug for Sns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sns").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Sns {
    pub fn new(settings: SnsSettings) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            // A SubscribeURL answers 200 itself; a redirect would lead off the checked host.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { settings, client, certificates: Mutex::new(HashMap::new()) })
    }

    pub fn settings(&self) -> &SnsSettings {
        &self.settings
    }

    /// Verifies a message's signature against its (cached) signing certificate.
    pub async fn verify(&self, message: &Message) -> Result<(), SnsFailure> {
        let certificate = self.certificate(&message.signing_cert_url).await?;
        certificate.verify(message)?;
        Ok(())
    }

    async fn certificate(&self, cert_url: &str) -> Result<SigningCert, SnsFailure> {
        let (url, file_name) = self.settings.hosts.check_cert_url(cert_url)?;
        if let Some(cached) = self.cache().get(cert_url) {
            return Ok(cached.clone());
        }
        let unavailable = |reason: String| SnsFailure::CertificateUnavailable { url: cert_url.to_owned(), reason };
        let pem = match &self.settings.certificates {
            CertificateSource::Directory(dir) => {
                let path = dir.join(&file_name);
                tokio::fs::read(&path).await.map_err(|e| unavailable(format!("{}: {e}", path.display())))?
            }
            CertificateSource::UrlPrefix(prefix) => {
                let mirrored = prefix.join(&file_name).map_err(|e| unavailable(e.to_string()))?;
                self.get(mirrored, MAX_CERTIFICATE_BYTES).await.map_err(unavailable)?
            }
            CertificateSource::Fetch => self.get(self.route(&url), MAX_CERTIFICATE_BYTES).await.map_err(unavailable)?,
        };
        let certificate = SigningCert::from_pem(&pem)?;
        let mut cache = self.cache();
        if cache.len() >= CACHED_CERTIFICATES {
            cache.clear();
        }
        cache.insert(cert_url.to_owned(), certificate.clone());
        Ok(certificate)
    }

    /// Visits a verified confirmation's `SubscribeURL`. `Err` says why it could not be done.
    pub async fn confirm(&self, message: &Message) -> Result<(), String> {
        let subscribe_url = message.subscribe_url.as_deref().unwrap_or_default();
        let url = self.settings.hosts.check("SubscribeURL", subscribe_url).map_err(|e| e.to_string())?;
        // The answer is a small XML document naming the subscription; only its status matters.
        self.get(self.route(&url), MAX_CERTIFICATE_BYTES).await.map(|_| ())
    }

    /// `url` with the configured endpoint's scheme, host and port, if there is one.
    fn route(&self, url: &Url) -> Url {
        let Some(endpoint) = &self.settings.endpoint else { return url.clone() };
        let mut routed = endpoint.clone();
        let base = endpoint.path().trim_end_matches('/');
        routed.set_path(&format!("{base}{}", url.path()));
        routed.set_query(url.query());
        routed
    }

    async fn get(&self, url: Url, limit: usize) -> Result<Vec<u8>, String> {
        let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
        let mut response = self.client.get(url).send().await.map_err(|e| format!("GET {shown}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {shown}: HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("GET {shown}: {e}"))? {
            if body.len() + chunk.len() > limit {
                return Err(format!("GET {shown}: more than {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, SigningCert>> {
        self.certificates.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_replaces_only_scheme_host_and_port() {
        let settings = SnsSettings {
            endpoint: Some(Url::parse("http://127.0.0.1:4567/sns/").expect("url")),
            ..SnsSettings::default()
        };
        let sns = Sns::new(settings).expect("client");
        let url =
            Url::parse("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=a%2Bb").expect("url");
        assert_eq!(sns.route(&url).as_str(), "http://127.0.0.1:4567/sns/?Action=ConfirmSubscription&Token=a%2Bb");
        let cert = Url::parse("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-1.pem").expect("url");
        assert_eq!(sns.route(&cert).as_str(), "http://127.0.0.1:4567/sns/SimpleNotificationService-1.pem");
        let direct = Sns::new(SnsSettings::default()).expect("client");
        assert_eq!(direct.route(&url), url);
    }
}
