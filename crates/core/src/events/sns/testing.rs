//! A test CA, an SNS signing certificate it issued, and messages signed the way SNS signs them:
//! for tests of this crate and of the operator's gateway (feature `testing`). Keys are made
//! fresh for every [`TestSigner`]; nothing here is a real AWS certificate.

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, RsaKeySize};
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use serde_json::Value;

use super::{Message, SignatureVersion};

/// A CA and an RSA-2048 signing certificate issued by it, like SNS's.
pub struct TestSigner {
    /// The CA's certificate (PEM), for tests that serve the certificate over TLS.
    pub ca_pem: String,
    /// The signing certificate (PEM), what a `SigningCertURL` serves.
    pub cert_pem: String,
    key: rsa::RsaPrivateKey,
}

impl TestSigner {
    /// Generates the CA and the signing certificate. Panics on failure: test setup only.
    pub fn new() -> Self {
        let ca_key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.distinguished_name.push(DnType::CommonName, "zeroflow test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048).expect("signing key");
        let mut params = CertificateParams::new(vec!["sns.amazonaws.com".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, "sns.amazonaws.com");
        let cert = params.signed_by(&key, &ca).expect("signing certificate");
        let rsa_key = rsa::RsaPrivateKey::from_pkcs8_der(&key.serialize_der()).expect("PKCS#8 RSA key");
        Self { ca_pem: ca.pem(), cert_pem: cert.pem(), key: rsa_key }
    }

    /// Sets `SignatureVersion` and `SigningCertURL` of an SNS message document and signs it as
    /// SNS does (over [`Message::string_to_sign`]).
    pub fn sign(&self, document: &mut Value, version: SignatureVersion, cert_url: &str) {
        document["SignatureVersion"] = Value::from(match version {
            SignatureVersion::Sha1 => "1",
            SignatureVersion::Sha256 => "2",
        });
        document["SigningCertURL"] = Value::from(cert_url);
        document["Signature"] = Value::from("");
        let message: Message = serde_json::from_value(document.clone()).expect("an SNS message");
        let to_sign = message.string_to_sign();
        let signature = match version {
            SignatureVersion::Sha1 => SigningKey::<sha1::Sha1>::new(self.key.clone()).sign(to_sign.as_bytes()).to_vec(),
            SignatureVersion::Sha256 => {
                SigningKey::<sha2::Sha256>::new(self.key.clone()).sign(to_sign.as_bytes()).to_vec()
            }
        };
        document["Signature"] = Value::from(base64::engine::general_purpose::STANDARD.encode(signature));
    }
}

impl Default for TestSigner {
    fn default() -> Self {
        Self::new()
    }
}
