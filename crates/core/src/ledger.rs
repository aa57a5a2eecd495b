//! The ledger: one marker object per finished source object revision, in the sink bucket under
//! the pipeline's ledger prefix. It is the durable record of what is done, so any replica can
//! rebuild the backlog by listing the source and the ledger side by side (see `resync`).
//!
//! # Marker names
//!
//! ```text
//! <prefix>/k/<enc(key)>!<enc(etag)>          plain: sorts like the source key
//! <prefix>/h/<sha256(key)>/<sha256(etag)>    hashed: when the plain name would exceed 1024 bytes
//! ```
//!
//! `enc` is base64 over the alphabet `-0-9A-Z_a-z`, which is in ASCII order, without padding.
//! Because the alphabet is sorted and every input bit keeps its position in the output, byte order
//! of keys is preserved: `a < b` (as bytes) exactly when `enc(a) < enc(b)`; a key that is a proper
//! prefix of another encodes to a strictly smaller string. The separator `!` sorts below every
//! alphabet character, so `enc(a)!...` sorts before `enc(b)!...` whenever `a < b`, whatever the
//! etags: a sorted listing of plain markers is in source-key order, then etag order. The name is
//! reversible, and it is safe for any key: the alphabet has no `/`, `.`, `%`, space or control
//! character, so `..`, a leading `/`, `%2F` or unicode in a key never shape the marker's path.
//!
//! The etag is in the name, so a listing alone tells which revision is done: resync needs no GET
//! per marker. The cost is 4/3 expansion: keys longer than about `(1024 - prefix - 50) * 3 / 4`
//! bytes (some 700 with the default prefix) get a hashed name instead. Those markers are not in
//! the sorted `k/` listing, so resync cannot merge-join them: it asks for each such object with
//! one HEAD request, and [`Ledger::list`] does not yield them.

use std::borrow::Cow;
use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::backlog::WorkItem;
use crate::etag::canonical_etag;

/// Longest object key S3 accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// The order-preserving base64 alphabet: sorted in ASCII, safe in any S3 key and object_store path.
const ALPHABET: &[u8; 64] = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// Between the encoded key and the encoded etag; below every alphabet character (see module docs).
const SEPARATOR: char = '!';

/// Longest hashed name after the prefix: `/h/` + 64 hex + `/` + 64 hex.
const HASHED_SUFFIX_LEN: usize = 3 + 64 + 1 + 64;

/// Encodes bytes so that byte order (with shorter-prefix-first) is string order.
pub fn encode_ordered(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    let mut push = |index: u32| out.push(char::from(ALPHABET[(index & 0x3f) as usize]));
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // 1 byte -> 2 chars, 2 -> 3, 3 -> 4: exactly the characters that hold input bits.
        for i in 0..=chunk.len() {
            push(n >> (18 - 6 * i));
        }
    }
    out
}

/// Inverse of [`encode_ordered`]; `None` for anything it cannot have produced.
pub fn decode_ordered(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u32> = text.bytes().map(digit).collect::<Option<_>>()?;
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, d)| n | (d << (18 - 6 * i)));
        let bytes = chunk.len() - 1;
        // Unused low bits must be zero, or two names would decode to one key.
        let unused_bits = 24 - 8 * bytes;
        if n & ((1 << unused_bits) - 1) != 0 {
            return None;
        }
        out.extend(n.to_be_bytes()[1..=bytes].iter());
    }
    Some(out)
}

fn digit(c: u8) -> Option<u32> {
    let d = match c {
        b'-' => 0,
        b'0'..=b'9' => c - b'0' + 1,
        b'A'..=b'Z' => c - b'A' + 11,
        b'_' => 37,
        b'a'..=b'z' => c - b'a' + 38,
        _ => return None,
    };
    Some(u32::from(d))
}

/// The etag as markers name it ([`crate::etag::canonical_etag`]); empty when there is none.
pub fn normalize_etag(etag: Option<&str>) -> Cow<'_, str> {
    etag.map(canonical_etag).unwrap_or_default()
}

/// Where the marker of one revision lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerPath {
    /// In the sorted `k/` listing.
    Plain(String),
    /// Outside it; found only by name.
    Hashed(String),
}

impl MarkerPath {
    pub fn as_str(&self) -> &str {
        match self {
            MarkerPath::Plain(p) | MarkerPath::Hashed(p) => p,
        }
    }
}

fn hex_sha256(data: &[u8]) -> String {
    digest(&SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The marker path of `(key, etag)` under `root` (a ledger prefix without trailing `/`).
pub fn marker_path(root: &str, key: &str, etag: &str) -> MarkerPath {
    let plain = format!("{root}/k/{}{SEPARATOR}{}", encode_ordered(key.as_bytes()), encode_ordered(etag.as_bytes()));
    if plain.len() <= MAX_KEY_BYTES {
        MarkerPath::Plain(plain)
    } else {
        MarkerPath::Hashed(format!("{root}/h/{}/{}", hex_sha256(key.as_bytes()), hex_sha256(etag.as_bytes())))
    }
}

/// A plain marker's name, decoded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MarkerName {
    pub key: String,
    /// Normalized (unquoted); empty when the object had no etag.
    pub etag: String,
}

/// Decodes the part of a plain marker path after `<root>/k/`.
pub fn parse_marker_name(name: &str) -> Option<MarkerName> {
    let (key, etag) = name.split_once(SEPARATOR)?;
    Some(MarkerName {
        key: String::from_utf8(decode_ordered(key)?).ok()?,
        etag: String::from_utf8(decode_ordered(etag)?).ok()?,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// The source object revision a marker is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceObject {
    pub bucket: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// Why the last attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The end of the transform's stderr, as the runner reported it.
    #[serde(default)]
    pub stderr_tail: String,
}

/// The content of a marker object (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Marker {
    pub outcome: Outcome,
    pub source: SourceObject,
    /// Keys written to the sink bucket.
    #[serde(default)]
    pub outputs: Vec<String>,
    pub attempts: u32,
    pub finished_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FailureDetail>,
}

impl Marker {
    /// The marker of a revision processed on attempt `attempts`; `outputs` are full sink keys.
    pub fn succeeded(item: &WorkItem, attempts: u32, outputs: Vec<String>, finished_at: DateTime<Utc>) -> Self {
        Self { outcome: Outcome::Succeeded, source: item.into(), outputs, attempts, finished_at, error: None }
    }

    /// The marker of a revision that failed for good. `stderr_tail` is the end of the
    /// transform's stderr, or why the operator gave up (`lease expired`).
    pub fn failed(
        item: &WorkItem,
        attempts: u32,
        exit_code: Option<i32>,
        stderr_tail: String,
        finished_at: DateTime<Utc>,
    ) -> Self {
        Self {
            outcome: Outcome::Failed,
            source: item.into(),
            outputs: Vec::new(),
            attempts,
            finished_at,
            error: Some(FailureDetail { exit_code, stderr_tail }),
        }
    }
}

impl From<&WorkItem> for SourceObject {
    fn from(item: &WorkItem) -> Self {
        SourceObject {
            bucket: item.object.bucket.to_string(),
            key: item.object.key.to_string(),
            etag: item.etag.clone(),
            version_id: item.version_id.clone(),
        }
    }
}

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("invalid ledger prefix {0:?}: it must be a non-empty S3 key prefix without empty, `.` or `..` segments")]
    InvalidPrefix(String),
    #[error("ledger prefix {0:?} is too long to leave room for marker names")]
    PrefixTooLong(String),
    #[error("ledger store request failed")]
    Store(#[from] object_store::Error),
    #[error("marker {path} is not a valid marker")]
    Corrupt { path: String, source: serde_json::Error },
    #[error("could not serialize the marker")]
    Serialize(#[source] serde_json::Error),
}

/// The ledger of one pipeline.
#[derive(Debug, Clone)]
pub struct Ledger {
    store: Arc<dyn ObjectStore>,
    /// The prefix without its trailing `/`.
    root: String,
    /// `<root>/k`: where the plain markers are.
    plain_dir: Path,
}

impl Ledger {
    /// `store` is a client for the sink bucket; `prefix` is the pipeline's ledger prefix.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<Self, LedgerError> {
        let root = prefix.trim_end_matches('/');
        let parsed = Path::parse(root).map_err(|_| LedgerError::InvalidPrefix(prefix.to_owned()))?;
        // A leading `/` would be dropped by object_store: refuse it rather than write elsewhere.
        if parsed.is_root() || parsed.as_ref() != root {
            return Err(LedgerError::InvalidPrefix(prefix.to_owned()));
        }
        if root.len() + HASHED_SUFFIX_LEN > MAX_KEY_BYTES {
            return Err(LedgerError::PrefixTooLong(prefix.to_owned()));
        }
        let plain_dir = Path::parse(format!("{root}/k")).map_err(|_| LedgerError::InvalidPrefix(prefix.to_owned()))?;
        Ok(Self { store, root: root.to_owned(), plain_dir })
    }

    /// The ledger prefix, with a trailing `/`: to exclude from a listing of the same bucket.
    pub fn prefix(&self) -> String {
        format!("{}/", self.root)
    }

    pub fn path_of(&self, key: &str, etag: Option<&str>) -> MarkerPath {
        marker_path(&self.root, key, &normalize_etag(etag))
    }

    /// Writes (or overwrites) the marker of `marker.source`'s revision.
    pub async fn record(&self, marker: &Marker) -> Result<(), LedgerError> {
        let path = self.path_of(&marker.source.key, marker.source.etag.as_deref());
        let body = serde_json::to_vec(marker).map_err(LedgerError::Serialize)?;
        self.store.put(&object_path(&path)?, PutPayload::from(body)).await?;
        Ok(())
    }

    /// The marker of one revision, if it was recorded.
    pub async fn get(&self, key: &str, etag: Option<&str>) -> Result<Option<Marker>, LedgerError> {
        let path = self.path_of(key, etag);
        let bytes = match self.store.get(&object_path(&path)?).await {
            Ok(result) => result.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let marker: Marker = serde_json::from_slice(&bytes)
            .map_err(|source| LedgerError::Corrupt { path: path.as_str().to_owned(), source })?;
        Ok(Some(marker))
    }

    /// Whether a marker of this revision exists (one HEAD request).
    pub async fn contains(&self, key: &str, etag: Option<&str>) -> Result<bool, LedgerError> {
        match self.store.head(&object_path(&self.path_of(key, etag))?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the markers of failed objects whose key starts with `key_prefix` (every failed
    /// object for `""`), so the next resync treats them as work again: a user's re-drive. Reads
    /// each candidate marker once (a rare, user-triggered pass): the plain markers from
    /// `key_prefix` on, and every hashed one (long keys; their names do not sort by key).
    /// Returns how many were removed.
    pub async fn remove_failed(&self, key_prefix: &str) -> Result<usize, LedgerError> {
        let mut removed = 0;
        let mut names = self.list_from(key_prefix);
        while let Some(name) = names.next().await {
            let name = name?;
            // The listing starts a little before `key_prefix` (see `list_from`) and runs in key order.
            if name.key.as_str() < key_prefix {
                continue;
            }
            if !name.key.starts_with(key_prefix) {
                break;
            }
            let etag = (!name.etag.is_empty()).then_some(name.etag.as_str());
            let path = object_path(&self.path_of(&name.key, etag))?;
            removed += usize::from(self.remove_if_failed(&path, key_prefix).await?);
        }
        let hashed_dir =
            Path::parse(format!("{}/h", self.root)).map_err(|_| LedgerError::InvalidPrefix(self.root.clone()))?;
        let mut hashed = self.store.list(Some(&hashed_dir));
        while let Some(meta) = hashed.next().await {
            removed += usize::from(self.remove_if_failed(&meta?.location, key_prefix).await?);
        }
        Ok(removed)
    }

    /// Deletes the marker at `path` when it records a failure of a key under `key_prefix`.
    async fn remove_if_failed(&self, path: &Path, key_prefix: &str) -> Result<bool, LedgerError> {
        let bytes = match self.store.get(path).await {
            Ok(result) => result.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        let Ok(marker) = serde_json::from_slice::<Marker>(&bytes) else {
            tracing::warn!(path = path.as_ref(), "ignoring an object in the ledger that is not a marker");
            return Ok(false);
        };
        if marker.outcome != Outcome::Failed || !marker.source.key.starts_with(key_prefix) {
            return Ok(false);
        }
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Every plain marker, in source-key order, then etag order. Streams page by page.
    pub fn list(&self) -> BoxStream<'static, Result<MarkerName, LedgerError>> {
        self.list_from("")
    }

    /// The plain markers of keys `>= key_prefix`, in order; a caller that only wants keys starting
    /// with `key_prefix` stops at the first that does not.
    pub fn list_from(&self, key_prefix: &str) -> BoxStream<'static, Result<MarkerName, LedgerError>> {
        let dir = &self.plain_dir;
        let names_start = format!("{}/k/", self.root);
        // Only whole characters of enc(prefix) are shared by every key that starts with it; any
        // name starting with them is longer, so strictly after this offset.
        let encoded = encode_ordered(key_prefix.as_bytes());
        let whole = key_prefix.len() / 3 * 4;
        let listing = match Path::parse(format!("{names_start}{}", &encoded[..whole])) {
            Ok(offset) if whole > 0 => crate::listing::list_after(self.store.as_ref(), Some(dir), &offset),
            _ => self.store.list(Some(dir)),
        };
        listing
            .filter_map(move |entry| {
                let item = match entry {
                    Err(e) => Some(Err(LedgerError::Store(e))),
                    Ok(meta) => {
                        let location = meta.location.as_ref();
                        let name = location.strip_prefix(names_start.as_str()).and_then(parse_marker_name);
                        if name.is_none() {
                            // Not written by us; it cannot stand for a done object, so skipping is safe.
                            tracing::warn!(path = location, "ignoring an object in the ledger that is not a marker");
                        }
                        name.map(Ok)
                    }
                };
                std::future::ready(item)
            })
            .boxed()
    }
}

fn object_path(path: &MarkerPath) -> Result<Path, LedgerError> {
    // Marker paths consist of the validated root and alphabet characters, so this only fails if
    // that reasoning is wrong; report it instead of writing somewhere unexpected.
    Path::parse(path.as_str()).map_err(|_| LedgerError::InvalidPrefix(path.as_str().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn markers_describe_the_revision_and_its_outcome() {
        let item = WorkItem {
            object: crate::backlog::ObjectId { bucket: "raw".into(), key: "in/a.csv".into() },
            etag: Some("e1".into()),
            version_id: Some("v1".into()),
            size: Some(3),
            sequencer: None,
        };
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let done = Marker::succeeded(&item, 2, vec!["out/in/a.csv/a.json".into()], at);
        assert_eq!((done.outcome, done.attempts, done.error.clone()), (Outcome::Succeeded, 2, None));
        assert_eq!(
            done.source,
            SourceObject {
                bucket: "raw".into(),
                key: "in/a.csv".into(),
                etag: Some("e1".into()),
                version_id: Some("v1".into())
            }
        );
        let failed = Marker::failed(&item, 3, Some(1), "boom".into(), at);
        assert_eq!((failed.outcome, failed.outputs.len()), (Outcome::Failed, 0));
        assert_eq!(failed.error, Some(FailureDetail { exit_code: Some(1), stderr_tail: "boom".into() }));
        let json = serde_json::to_value(&failed).expect("serializes");
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["error"]["exitCode"], 1);
    }

    #[test]
    fn alphabet_is_sorted_and_digits_match_it() {
        assert!(ALPHABET.windows(2).all(|w| w[0] < w[1]));
        for (i, c) in ALPHABET.iter().enumerate() {
            assert_eq!(digit(*c), Some(i as u32));
        }
        assert!(char::from(ALPHABET[0]) > SEPARATOR);
    }

    #[test]
    fn hostile_keys_make_plain_safe_names() {
        for key in ["../x", "/leading", "a//b", "%2F", "with space", "ünï/çødé", "./", "\u{0}\n", "~!*'()"] {
            let path = marker_path(".zeroflow/ledger/ns/p", key, "etag");
            let MarkerPath::Plain(name) = &path else { panic!("{key:?} should fit") };
            assert!(Path::parse(name).is_ok_and(|p| p.as_ref() == name), "{name}");
            let tail = name.strip_prefix(".zeroflow/ledger/ns/p/k/").expect("under k/");
            assert!(!tail.contains('/') && !tail.contains('.'), "{tail}");
            assert_eq!(parse_marker_name(tail), Some(MarkerName { key: key.into(), etag: "etag".into() }));
        }
    }

    #[test]
    fn long_keys_fall_back_to_hashed_names_within_the_key_limit() {
        let key = "k".repeat(1000);
        let path = marker_path(".zeroflow/ledger/ns/p", &key, "0123456789abcdef0123456789abcdef-12");
        let MarkerPath::Hashed(name) = &path else { panic!("1000 bytes cannot fit once encoded") };
        assert!(name.len() <= MAX_KEY_BYTES && name.starts_with(".zeroflow/ledger/ns/p/h/"));
        assert_ne!(path, marker_path(".zeroflow/ledger/ns/p", &key, "other"), "the etag is part of the name");
        let short = marker_path(".zeroflow/ledger/ns/p", &"k".repeat(700), "0123456789abcdef0123456789abcdef");
        assert!(matches!(short, MarkerPath::Plain(_)), "700 bytes still fit with the default prefix");
    }

    #[test]
    fn non_canonical_or_foreign_names_are_refused() {
        assert_eq!(decode_ordered("0"), None, "one character holds no whole byte");
        assert_eq!(decode_ordered("01"), None, "unused bits set");
        assert_eq!(decode_ordered("a.b"), None);
        assert_eq!(parse_marker_name("no-separator"), None);
        assert_eq!(normalize_etag(Some("\"abc\"")), "abc");
        assert_eq!(normalize_etag(None), "");
    }

    #[test]
    fn markers_serialize_as_documented() {
        let marker = Marker {
            outcome: Outcome::Failed,
            source: SourceObject { bucket: "b".into(), key: "k".into(), etag: Some("e".into()), version_id: None },
            outputs: vec![],
            attempts: 3,
            finished_at: DateTime::<Utc>::from_timestamp(1_800_000_000, 0).expect("valid"),
            error: Some(FailureDetail { exit_code: Some(2), stderr_tail: "boom".into() }),
        };
        let json = serde_json::to_value(&marker).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"outcome": "failed", "source": {"bucket": "b", "key": "k", "etag": "e"},
                "outputs": [], "attempts": 3, "finishedAt": "2027-01-15T08:00:00Z",
                "error": {"exitCode": 2, "stderrTail": "boom"}})
        );
        assert_eq!(serde_json::from_value::<Marker>(json).expect("parses"), marker);
    }

    #[test]
    fn invalid_prefixes_are_refused() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        for prefix in ["", "/", "/abs/", "a//b/", "../x/", &"p".repeat(900)] {
            assert!(Ledger::new(store.clone(), prefix).is_err(), "{prefix:?}");
        }
        assert_eq!(Ledger::new(store, ".zeroflow/ledger/ns/p/").expect("valid").prefix(), ".zeroflow/ledger/ns/p/");
    }

    #[tokio::test]
    async fn a_redrive_removes_only_failures_under_its_prefix_long_keys_included() {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let ledger = Ledger::new(store, ".zeroflow/ledger/ns/p/").expect("valid");
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let item = |key: &str| WorkItem {
            object: crate::backlog::ObjectId { bucket: "raw".into(), key: key.into() },
            etag: Some("e1".into()),
            version_id: None,
            size: None,
            sequencer: None,
        };
        let long = format!("bad/{}", "x".repeat(900));
        for key in ["bad/1.csv", "bad/2.csv", "good/3.csv", long.as_str()] {
            ledger.record(&Marker::failed(&item(key), 3, Some(1), "boom".into(), at)).await.expect("recorded");
        }
        ledger.record(&Marker::succeeded(&item("bad/0.csv"), 1, vec![], at)).await.expect("recorded");
        assert!(matches!(ledger.path_of(&long, Some("e1")), MarkerPath::Hashed(_)));

        assert_eq!(ledger.remove_failed("bad/1").await.expect("removed"), 1);
        assert!(!ledger.contains("bad/1.csv", Some("e1")).await.expect("read"));
        assert!(ledger.contains("bad/2.csv", Some("e1")).await.expect("read"));

        assert_eq!(ledger.remove_failed("bad/").await.expect("removed"), 2, "bad/2.csv and the long key");
        assert!(!ledger.contains(&long, Some("e1")).await.expect("read"));
        assert!(ledger.contains("bad/0.csv", Some("e1")).await.expect("read"), "successes stay");
        assert!(ledger.contains("good/3.csv", Some("e1")).await.expect("read"), "outside the prefix");
        assert_eq!(ledger.remove_failed("").await.expect("removed"), 1);
    }

    fn any_key() -> impl Strategy<Value = String> {
        // Short strings over a small alphabet make shared prefixes (the hard case) common.
        prop_oneof![".{0,40}", "[a/%.\\x00\\x7F\\x{E9}\\x{10FFFF}]{0,12}"]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn encoding_preserves_byte_order(a in proptest::collection::vec(any::<u8>(), 0..20),
                                         b in proptest::collection::vec(any::<u8>(), 0..20)) {
            prop_assert_eq!(encode_ordered(&a).cmp(&encode_ordered(&b)), a.cmp(&b));
            prop_assert_eq!(decode_ordered(&encode_ordered(&a)), Some(a));
        }

        #[test]
        fn marker_names_sort_like_key_then_etag(ka in any_key(), ea in any_key(), kb in any_key(), eb in any_key()) {
            let (MarkerPath::Plain(a), MarkerPath::Plain(b)) =
                (marker_path("l", &ka, &ea), marker_path("l", &kb, &eb)) else { unreachable!("short keys fit") };
            let expected = (ka.as_bytes(), ea.as_bytes()).cmp(&(kb.as_bytes(), eb.as_bytes()));
            prop_assert_eq!(a.cmp(&b), expected);
            let name = parse_marker_name(a.strip_prefix("l/k/").expect("plain"));
            prop_assert_eq!(name, Some(MarkerName { key: ka, etag: ea }));
        }
    }
}
