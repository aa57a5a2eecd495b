//! Azure shared access signatures for one blob: a service SAS signed with the account key, or a
//! user delegation SAS signed with a user delegation key. Pure: the caller gives the clock.
//!
//! Written here rather than taken from object_store, whose SAS (0.14) signs the blob's
//! percent-encoded URL path, so any name that needs escaping (`a b.csv`) gets a signature Azure
//! refuses (403); Azure signs the blob name itself ("Create a service SAS",
//! <https://learn.microsoft.com/rest/api/storageservices/create-service-sas>, and "Create a user
//! delegation SAS", <https://learn.microsoft.com/rest/api/storageservices/create-user-delegation-sas>,
//! version 2020-12-06 and later, which define the strings to sign below).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use object_store::signer::Url;

/// The `sv` of the SAS made here.
pub const SAS_VERSION: &str = "2023-11-03";

/// One blob and what the SAS allows on it until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSas<'a> {
    pub account: &'a str,
    pub container: &'a str,
    /// The blob's name, unescaped.
    pub blob: &'a str,
    /// `r` (read), `w` (write), ...
    pub permissions: &'a str,
    pub expiry: DateTime<Utc>,
}

/// A user delegation key, as "Get User Delegation Key" returns it.
#[derive(Clone, PartialEq, Eq)]
pub struct DelegationKey {
    pub signed_oid: String,
    pub signed_tid: String,
    pub signed_start: String,
    pub signed_expiry: String,
    pub signed_service: String,
    pub signed_version: String,
    /// Base64.
    pub value: String,
}

impl std::fmt::Debug for DelegationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationKey").field("signed_expiry", &self.signed_expiry).finish_non_exhaustive()
    }
}

impl BlobSas<'_> {
    fn canonicalized_resource(&self) -> String {
        format!("/blob/{}/{}/{}", self.account, self.container, self.blob)
    }

    fn expiry(&self) -> String {
        self.expiry.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    /// The service SAS's string to sign: no start (valid at once, whatever the clock skew), no
    /// stored policy, IP range, protocol, snapshot, encryption scope or response headers.
    pub fn service_string_to_sign(&self) -> String {
        let fields = [
            self.permissions,
            "",
            &self.expiry(),
            &self.canonicalized_resource(),
            "",
            "",
            "",
            SAS_VERSION,
            "b",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ];
        fields.join("\n")
    }

    /// The user delegation SAS's string to sign.
    pub fn user_delegation_string_to_sign(&self, key: &DelegationKey) -> String {
        let fields = [
            self.permissions,
            "",
            &self.expiry(),
            &self.canonicalized_resource(),
            &key.signed_oid,
            &key.signed_tid,
            &key.signed_start,
            &key.signed_expiry,
            &key.signed_service,
            &key.signed_version,
            "",
            "",
            "",
            "",
            "",
            SAS_VERSION,
            "b",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ];
        fields.join("\n")
    }

    fn common_pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("sv", SAS_VERSION.to_owned()),
            ("sr", "b".to_owned()),
            ("sp", self.permissions.to_owned()),
            ("se", self.expiry()),
        ]
    }

    /// The query of a service SAS signed with the account key (decoded from base64).
    pub fn service_query(&self, account_key: &[u8]) -> Vec<(&'static str, String)> {
        let mut pairs = self.common_pairs();
        pairs.push(("sig", sign(account_key, &self.service_string_to_sign())));
        pairs
    }

    /// The query of a user delegation SAS.
    pub fn user_delegation_query(&self, key: &DelegationKey) -> Result<Vec<(&'static str, String)>, String> {
        let secret = BASE64.decode(&key.value).map_err(|_| "the user delegation key is not base64".to_owned())?;
        let mut pairs = self.common_pairs();
        pairs.extend([
            ("skoid", key.signed_oid.clone()),
            ("sktid", key.signed_tid.clone()),
            ("skt", key.signed_start.clone()),
            ("ske", key.signed_expiry.clone()),
            ("sks", key.signed_service.clone()),
            ("skv", key.signed_version.clone()),
        ]);
        pairs.push(("sig", sign(&secret, &self.user_delegation_string_to_sign(key))));
        Ok(pairs)
    }
}

fn sign(key: &[u8], text: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    BASE64.encode(aws_lc_rs::hmac::sign(&key, text.as_bytes()).as_ref())
}

/// `<endpoint>/<container>/<blob>`, each path segment percent-encoded (the endpoint may have a
/// path of its own, as Azurite's `/<account>`).
pub fn blob_url(endpoint: &Url, container: &str, blob: &str) -> Result<Url, String> {
    let mut url = endpoint.clone();
    {
        let mut segments = url.path_segments_mut().map_err(|_| format!("{endpoint} cannot hold a path"))?;
        segments.pop_if_empty().push(container);
        segments.extend(blob.split('/'));
    }
    url.set_query(None);
    Ok(url)
}

/// The body of a "Get User Delegation Key" request for keys valid from `start` to `expiry`.
pub fn delegation_key_request(start: DateTime<Utc>, expiry: DateTime<Utc>) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><KeyInfo><Start>{}</Start><Expiry>{}</Expiry></KeyInfo>",
        start.to_rfc3339_opts(SecondsFormat::Secs, true),
        expiry.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// Parses the answer to "Get User Delegation Key". Its values are GUIDs, timestamps, a
/// letter, a version and base64, none of which XML would escape, so the elements are read as
/// plain text.
pub fn parse_delegation_key(xml: &str) -> Result<DelegationKey, String> {
    let field = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = xml.find(&open).ok_or_else(|| format!("no {name} in the user delegation key"))? + open.len();
        let end = xml[start..].find(&close).ok_or_else(|| format!("{name} is not closed"))? + start;
        Ok::<_, String>(xml[start..end].trim().to_owned())
    };
    Ok(DelegationKey {
        signed_oid: field("SignedOid")?,
        signed_tid: field("SignedTid")?,
        signed_start: field("SignedStart")?,
        signed_expiry: field("SignedExpiry")?,
        signed_service: field("SignedService")?,
        signed_version: field("SignedVersion")?,
        value: field("Value")?,
    })
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn sas(blob: &str) -> BlobSas<'_> {
        BlobSas {
            account: "acct",
            container: "landing",
            blob,
            permissions: "r",
            expiry: Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).single().expect("valid time"),
        }
    }

    #[test]
    fn the_blob_name_is_signed_unescaped_and_the_url_escaped() {
        let text = sas("dir/a b+ü.csv").service_string_to_sign();
        assert_eq!(
            text,
            "r\n\n2026-11-30T12:00:00Z\n/blob/acct/landing/dir/a b+ü.csv\n\n\n\n2023-11-03\nb\n\n\n\n\n\n\n"
        );
        let endpoint = Url::parse("http://127.0.0.1:10000/devstoreaccount1").expect("url");
        let url = blob_url(&endpoint, "landing", "dir/a b+ü.csv").expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:10000/devstoreaccount1/landing/dir/a%20b+%C3%BC.csv");
        let cloud = Url::parse("https://acct.blob.core.windows.net").expect("url");
        assert_eq!(blob_url(&cloud, "c", "x/y").expect("url").as_str(), "https://acct.blob.core.windows.net/c/x/y");
    }

    #[test]
    fn service_sas_carries_version_resource_permissions_expiry_and_signature() {
        let query = sas("a.csv").service_query(b"key");
        let names: Vec<_> = query.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["sv", "sr", "sp", "se", "sig"]);
        assert_eq!(query[4].1, sign(b"key", &sas("a.csv").service_string_to_sign()));
        assert_ne!(sas("a.csv").service_query(b"key")[4], sas("b.csv").service_query(b"key")[4]);
    }

    #[test]
    fn user_delegation_keys_parse_and_sign() {
        let xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><UserDelegationKey><SignedOid>oid</SignedOid>\
                   <SignedTid>tid</SignedTid><SignedStart>2026-11-30T00:00:00Z</SignedStart>\
                   <SignedExpiry>2026-12-01T00:00:00Z</SignedExpiry><SignedService>b</SignedService>\
                   <SignedVersion>2023-11-03</SignedVersion><Value>a2V5</Value></UserDelegationKey>";
        let key = parse_delegation_key(xml).expect("parses");
        assert_eq!((key.signed_oid.as_str(), key.value.as_str()), ("oid", "a2V5"));
        let text = sas("a.csv").user_delegation_string_to_sign(&key);
        assert_eq!(text.split('\n').count(), 24, "{text}");
        assert!(text.starts_with("r\n\n2026-11-30T12:00:00Z\n/blob/acct/landing/a.csv\noid\ntid\n"), "{text}");
        let query = sas("a.csv").user_delegation_query(&key).expect("signs");
        assert_eq!(query.last().map(|(k, v)| (*k, v.clone())), Some(("sig", sign(b"key", &text))));
        assert!(format!("{key:?}").find("a2V5").is_none(), "Debug never prints the key");
        assert!(parse_delegation_key("<UserDelegationKey></UserDelegationKey>").is_err());
    }
}
