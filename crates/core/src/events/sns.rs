//! Amazon SNS deliveries to an HTTP(S) endpoint: the envelope, its signature, its handshake.
//!
//! AWS S3 cannot call a webhook; an SNS topic with an HTTPS subscription is one of the two
//! documented ways to reach one (EventBridge API destinations the other). SNS POSTs JSON with
//! `Content-Type: text/plain; charset=UTF-8` and an `x-amz-sns-message-type` header
//! (AWS SNS developer guide, "Parsing message formats"):
//!
//! - `SubscriptionConfirmation` first; nothing is delivered until its `SubscribeURL` is visited;
//! - `Notification`: the publisher's payload as a JSON **string** in `Message` (for S3, the
//!   whole `{"Records": [...]}` document, or its `s3:TestEvent`);
//! - `UnsubscribeConfirmation` after the subscription is deleted.
//!
//! Every message is signed ("Verifying the signatures of Amazon SNS messages"): RSA PKCS#1 v1.5
//! over a canonical string of some of its fields, with SHA-1 (`SignatureVersion` 1) or SHA-256
//! (2), by the certificate at `SigningCertURL`, which must be an `https` URL on an SNS host
//! (`sns.<region>.amazonaws.com`). The certificate is parsed with rustls-webpki (the X.509
//! parser rustls uses) and the signature checked with aws-lc-rs; fetching the certificate is
//! the caller's I/O. With raw message delivery SNS sends the payload itself, unsigned, and
//! `x-amz-sns-rawdelivery: true`; the gateway's own authentication is then all there is.

use base64::Engine as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{AlgorithmIdentifier, CertificateDer, InvalidSignature, SignatureVerificationAlgorithm, alg_id};
use serde::Deserialize;
use thiserror::Error;

use super::{RecordError, StorageEvent, parse_json_value};

/// The `x-amz-sns-message-type` header, which SNS sets on every delivery.
pub const MESSAGE_TYPE_HEADER: &str = "x-amz-sns-message-type";
/// Set to `true` on deliveries of a subscription with raw message delivery (no envelope).
pub const RAW_DELIVERY_HEADER: &str = "x-amz-sns-rawdelivery";

/// What an SNS delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum MessageType {
    SubscriptionConfirmation,
    Notification,
    UnsubscribeConfirmation,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            MessageType::Notification => "Notification",
            MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }

    /// The header's value, if it names one of the three.
    pub fn from_header(value: &str) -> Option<Self> {
        match value.trim() {
            "SubscriptionConfirmation" => Some(MessageType::SubscriptionConfirmation),
            "Notification" => Some(MessageType::Notification),
            "UnsubscribeConfirmation" => Some(MessageType::UnsubscribeConfirmation),
            _ => None,
        }
    }
}

/// One SNS delivery's JSON document (the fields zeroflow reads; SNS adds others, such as
/// `MessageAttributes`, which are not signed and are ignored).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    #[serde(rename = "Type")]
    pub kind: MessageType,
    pub message_id: String,
    pub topic_arn: String,
    /// Only notifications have one, and only when the publisher set it.
    pub subject: Option<String>,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    /// Confirmations only: visiting it confirms the subscription.
    #[serde(rename = "SubscribeURL")]
    pub subscribe_url: Option<String>,
    /// Notifications only.
    #[serde(rename = "UnsubscribeURL")]
    pub unsubscribe_url: Option<String>,
    /// Confirmations only: what `ConfirmSubscription` takes.
    pub token: Option<String>,
}

#[derive(Debug, Error)]
pub enum SnsError {
    #[error("malformed SNS message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("SNS {kind} message without {field}")]
    Missing { kind: &'static str, field: &'static str },
    #[error("x-amz-sns-message-type says {header} but the message is a {body}")]
    TypeMismatch { header: &'static str, body: &'static str },
    #[error("unsupported SNS SignatureVersion {0:?} (1 and 2 are)")]
    SignatureVersion(String),
    #[error("the SNS Signature is not base64")]
    SignatureEncoding,
    #[error("{what} {url:?} is not trusted: {reason}")]
    UntrustedUrl { what: &'static str, url: String, reason: String },
    #[error("SNS signing certificate: {0}")]
    Certificate(String),
    #[error("the SNS message signature does not verify against the signing certificate")]
    BadSignature,
}

impl SnsError {
    /// True when the message is not authentic or its sources are not SNS's: answer 403.
    pub fn is_authenticity(&self) -> bool {
        matches!(
            self,
            SnsError::UntrustedUrl { .. }
                | SnsError::Certificate(_)
                | SnsError::BadSignature
                | SnsError::SignatureEncoding
                | SnsError::SignatureVersion(_)
        )
    }
}

/// Parses an SNS delivery body.
pub fn parse(body: &[u8]) -> Result<Message, SnsError> {
    let message: Message = serde_json::from_slice(body)?;
    let needs = |value: &Option<String>, field: &'static str| match value {
        Some(v) if !v.is_empty() => Ok(()),
        _ => Err(SnsError::Missing { kind: message.kind.as_str(), field }),
    };
    match message.kind {
        MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
            needs(&message.subscribe_url, "SubscribeURL")?;
            needs(&message.token, "Token")?;
        }
        MessageType::Notification => {}
    }
    Ok(message)
}

/// The hash of a `SignatureVersion`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// `1`: RSA PKCS#1 v1.5 with SHA-1.
    Sha1,
    /// `2`: RSA PKCS#1 v1.5 with SHA-256.
    Sha256,
}

impl Message {
    /// Checks the header SNS sent against the document.
    pub fn check_header(&self, header: MessageType) -> Result<(), SnsError> {
        if header == self.kind {
            Ok(())
        } else {
            Err(SnsError::TypeMismatch { header: header.as_str(), body: self.kind.as_str() })
        }
    }

    pub fn signature_version(&self) -> Result<SignatureVersion, SnsError> {
        match self.signature_version.as_str() {
            "1" => Ok(SignatureVersion::Sha1),
            "2" => Ok(SignatureVersion::Sha256),
            other => Err(SnsError::SignatureVersion(other.to_owned())),
        }
    }

    /// The canonical string SNS signs: `Name\nvalue\n` for each signed field, in this order
    /// (AWS SNS developer guide, "Verifying the signatures of Amazon SNS messages"):
    /// notifications `Message, MessageId, Subject (only if present), Timestamp, TopicArn, Type`;
    /// confirmations `Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type`.
    pub fn string_to_sign(&self) -> String {
        let mut fields: Vec<(&str, &str)> = vec![("Message", &self.message), ("MessageId", &self.message_id)];
        match self.kind {
            MessageType::Notification => {
                if let Some(subject) = &self.subject {
                    fields.push(("Subject", subject));
                }
                fields.push(("Timestamp", &self.timestamp));
            }
            MessageType::SubscriptionConfirmation | MessageType::UnsubscribeConfirmation => {
                fields.push(("SubscribeURL", self.subscribe_url.as_deref().unwrap_or_default()));
                fields.push(("Timestamp", &self.timestamp));
                fields.push(("Token", self.token.as_deref().unwrap_or_default()));
            }
        }
        fields.push(("TopicArn", &self.topic_arn));
        fields.push(("Type", self.kind.as_str()));
        let mut out = String::new();
        for (name, value) in fields {
            out.push_str(name);
            out.push('\n');
            out.push_str(value);
            out.push('\n');
        }
        out
    }

    /// The storage events of a notification: its `Message` is an S3 notification (or test
    /// event), or an EventBridge event when EventBridge publishes to the topic.
    pub fn storage_events(&self) -> Result<Vec<StorageEvent>, RecordError> {
        parse_json_value(serde_json::from_str(&self.message)?)
    }
}

/// Which hosts may serve SNS certificates and confirmations: `sns.<region>.<suffix>` over
/// https, for each suffix (AWS: `amazonaws.com`, and `amazonaws.com.cn` in China).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsHosts {
    suffixes: Vec<String>,
}

impl Default for SnsHosts {
    fn default() -> Self {
        Self { suffixes: vec!["amazonaws.com".into(), "amazonaws.com.cn".into()] }
    }
}

impl SnsHosts {
    /// Hosts `sns.<region>.<suffix>` for each of `suffixes` (lower-cased, without dots around).
    pub fn new(suffixes: impl IntoIterator<Item = String>) -> Self {
        let suffixes = suffixes
            .into_iter()
            .map(|s| s.trim().trim_matches('.').to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        Self { suffixes }
    }

    /// Parses `url` and checks it is an https URL on an SNS host, with no credentials. `what`
    /// names the field in the error.
    pub fn check(&self, what: &'static str, url: &str) -> Result<url::Url, SnsError> {
        let untrusted = |reason: &str| SnsError::UntrustedUrl { what, url: url.to_owned(), reason: reason.to_owned() };
        let parsed = url::Url::parse(url).map_err(|e| untrusted(&e.to_string()))?;
        if parsed.scheme() != "https" {
            return Err(untrusted("not https"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(untrusted("carries credentials"));
        }
        let host = match parsed.host() {
            Some(url::Host::Domain(host)) => host.to_ascii_lowercase(),
            _ => return Err(untrusted("no host name")),
        };
        let region_ok = |region: &str| {
            !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        let trusted = self.suffixes.iter().any(|suffix| {
            host.strip_prefix("sns.")
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(region_ok)
        });
        if !trusted {
            let expected: Vec<_> = self.suffixes.iter().map(|s| format!("sns.<region>.{s}")).collect();
            return Err(untrusted(&format!("host is not {}", expected.join(" or "))));
        }
        Ok(parsed)
    }

    /// Checks a `SigningCertURL` and returns the certificate's file name (its last path
    /// segment, `SimpleNotificationService-<hex>.pem`), which names it in a certificate
    /// directory.
    pub fn check_cert_url(&self, url: &str) -> Result<(url::Url, String), SnsError> {
        let parsed = self.check("SigningCertURL", url)?;
        let untrusted = |reason: &str| SnsError::UntrustedUrl {
            what: "SigningCertURL",
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(untrusted("has a query or fragment"));
        }
        let name = parsed.path_segments().and_then(|mut s| s.next_back()).unwrap_or_default().to_owned();
        let safe = !name.starts_with('.')
            && name.ends_with(".pem")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !safe {
            return Err(untrusted("does not name a .pem file"));
        }
        Ok((parsed, name))
    }
}

/// A parsed SNS signing certificate.
#[derive(Debug, Clone)]
pub struct SigningCert {
    der: CertificateDer<'static>,
}

impl SigningCert {
    /// Reads the first certificate of a PEM document (what `SigningCertURL` serves) and checks
    /// that it parses as an X.509 certificate.
    pub fn from_pem(pem: &[u8]) -> Result<Self, SnsError> {
        let der = CertificateDer::from_pem_slice(pem).map_err(|e| SnsError::Certificate(e.to_string()))?;
        webpki::EndEntityCert::try_from(&der).map_err(|e| SnsError::Certificate(e.to_string()))?;
        Ok(Self { der })
    }

    /// Verifies `message`'s signature with this certificate's RSA key.
    pub fn verify(&self, message: &Message) -> Result<(), SnsError> {
        let algorithm: &dyn SignatureVerificationAlgorithm = match message.signature_version()? {
            SignatureVersion::Sha1 => &RSA_PKCS1_SHA1,
            SignatureVersion::Sha256 => &RSA_PKCS1_SHA256,
        };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(message.signature.trim())
            .map_err(|_| SnsError::SignatureEncoding)?;
        let cert = webpki::EndEntityCert::try_from(&self.der).map_err(|e| SnsError::Certificate(e.to_string()))?;
        cert.verify_signature(algorithm, message.string_to_sign().as_bytes(), &signature)
            .map_err(|_| SnsError::BadSignature)
    }
}

/// RSA PKCS#1 v1.5 signature checks with aws-lc-rs, shaped for webpki, which hands over the
/// certificate's public key. webpki ships no SHA-1 variant (it is for certificates, where SHA-1
/// is long gone), and SNS still signs with SHA-1 under `SignatureVersion` 1.
#[derive(Debug)]
struct RsaPkcs1 {
    parameters: &'static aws_lc_rs::signature::RsaParameters,
    signature_alg_id: AlgorithmIdentifier,
}

/// `sha1WithRSAEncryption` (1.2.840.113549.1.1.5) with NULL parameters, as a DER
/// AlgorithmIdentifier's contents.
const SHA1_WITH_RSA: AlgorithmIdentifier =
    AlgorithmIdentifier::from_slice(&[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00]);

static RSA_PKCS1_SHA1: RsaPkcs1 = RsaPkcs1 {
    parameters: &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
    signature_alg_id: SHA1_WITH_RSA,
};

static RSA_PKCS1_SHA256: RsaPkcs1 = RsaPkcs1 {
    parameters: &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
    signature_alg_id: alg_id::RSA_PKCS1_SHA256,
};

impl SignatureVerificationAlgorithm for RsaPkcs1 {
    fn verify_signature(&self, public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), InvalidSignature> {
        aws_lc_rs::signature::UnparsedPublicKey::new(self.parameters, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        self.signature_alg_id
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;
