//! The checks behind each fuzz target. Each function takes the bytes AFL++ generates, parses them
//! the way the operator or the runner parses outside input, and asserts what the parser promises,
//! not only that it does not panic: a broken promise panics, which AFL++ records as a crash.
//!
//! The functions are plain Rust, so `cargo test` runs them over the seeds and every crash found
//! (`seeds/<target>/` and `regressions/<target>/`) without AFL++.

use std::fmt::Debug;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroflow_contract::duration::{format_duration, parse_duration};
use zeroflow_contract::names::{
    MAX_NAME, STDERR_TAIL_LIMIT, output_key, safe_file_name, stderr_tail, stderr_tail_lossy, validate_output_name,
};
use zeroflow_contract::wire::{
    CompleteRequest, ErrorBody, FailRequest, FinishResponse, HeartbeatRequest, HeartbeatResponse, Lease, OutputRequest,
    OutputTarget,
};
use zeroflow_core::events::sns::{self, MessageType, SnsHosts};
use zeroflow_core::events::{self, KeyEncoding, RecordError, StorageEvent, cloudevents, key};
use zeroflow_core::ledger::{MarkerName, MarkerPath, decode_ordered, encode_ordered, marker_path, parse_marker_name};

/// What every parsed event promises: work (content, removal) names a bucket and a key that an
/// S3-compatible store could hold, and etags are bare (the ledger and the backlog compare them
/// unquoted, so a quoted one would make one revision look like two).
pub fn check_events(events: &[StorageEvent]) {
    for event in events {
        if event.kind.is_work() {
            assert!(!event.bucket.is_empty(), "work without a bucket: {event:?}");
            assert_eq!(key::validate_key(event.key.clone()).as_ref(), Ok(&event.key), "work with a bad key: {event:?}");
        }
        if let Some(etag) = &event.etag {
            let bare = !etag.is_empty() && !etag.starts_with('"') && !etag.ends_with('"');
            assert!(bare, "etag not bare: {event:?}");
        }
    }
}

/// `/v1/events/s3` and every JSON document inside SNS and CloudEvents: S3 records of every
/// dialect (MinIO, AWS, Ceph), EventBridge envelopes, test events. The one-pass parser the
/// gateway uses and the `Value` path SNS messages take must agree.
pub fn s3_json(data: &[u8]) {
    let direct = events::parse_json(data);
    if let Ok(events) = &direct {
        check_events(events);
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        assert!(direct.is_err(), "parsed a document that is not JSON: {direct:?}");
        return;
    };
    let by_value = events::parse_json_value(value);
    match (&direct, &by_value) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "one-pass and Value parsing differ"),
        (Err(_), Err(_)) => {}
        // A `Value` keeps the last of a repeated field; the one-pass parser reads every copy in
        // order and refuses the document at the first one it cannot use (a repeat of a field it
        // knows, or an earlier copy of the wrong shape). Refusing a document that says two
        // things is the safer answer, so any refusal of one that repeats a field is allowed.
        (Err(RecordError::Json(_)), Ok(_)) if repeats_a_field(data) => {}
        _ => panic!("one-pass and Value parsing disagree: {direct:?} vs {by_value:?}"),
    }
}

/// True when some JSON object in `data` names a field twice, at any depth (RFC 8259 section 4:
/// names SHOULD be unique, and receivers differ on which copy wins). False for anything that is
/// not JSON.
pub fn repeats_a_field(data: &[u8]) -> bool {
    serde_json::from_slice::<Repeats>(data).is_ok_and(|r| r.0)
}

/// Walks any JSON document and records whether an object repeats a name.
struct Repeats(bool);

impl<'de> serde::Deserialize<'de> for Repeats {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RepeatsVisitor)
    }
}

struct RepeatsVisitor;

impl<'de> serde::de::Visitor<'de> for RepeatsVisitor {
    type Value = Repeats;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }
    fn visit_str<E>(self, _: &str) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }
    fn visit_unit<E>(self) -> Result<Repeats, E> {
        Ok(Repeats(false))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Repeats, A::Error> {
        let mut repeats = false;
        while let Some(Repeats(r)) = seq.next_element()? {
            repeats |= r;
        }
        Ok(Repeats(repeats))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Repeats, A::Error> {
        let mut names = std::collections::HashSet::new();
        let mut repeats = false;
        while let Some(name) = map.next_key::<String>()? {
            let Repeats(r) = map.next_value()?;
            repeats |= r | !names.insert(name);
        }
        Ok(Repeats(repeats))
    }
}

/// SNS deliveries: the envelope, the canonical string its signature covers, the URLs the gateway
/// would fetch a certificate from or visit to confirm (only SNS's own hosts over https, never
/// with credentials), and the storage events inside.
pub fn sns_envelope(data: &[u8]) {
    let Ok(message) = sns::parse(data) else { return };
    if message.kind != MessageType::Notification {
        assert!(message.subscribe_url.as_deref().is_some_and(|u| !u.is_empty()), "confirmation without a URL");
        assert!(message.token.as_deref().is_some_and(|t| !t.is_empty()), "confirmation without a token");
    }
    let signed = message.string_to_sign();
    assert!(signed.starts_with("Message\n"), "{signed:?}");
    assert!(signed.ends_with(&format!("\nType\n{}\n", message.kind.as_str())), "{signed:?}");
    let hosts = SnsHosts::default();
    for url in [Some(&message.signing_cert_url), message.subscribe_url.as_ref(), message.unsubscribe_url.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Ok(parsed) = hosts.check("URL", url) {
            check_sns_url(&parsed);
        }
    }
    if let Ok((parsed, name)) = hosts.check_cert_url(&message.signing_cert_url) {
        check_sns_url(&parsed);
        assert!(parsed.query().is_none() && parsed.fragment().is_none(), "{parsed}");
        let plain = name.ends_with(".pem") && !name.starts_with('.') && !name.contains(['/', '\\']);
        assert!(plain, "certificate file name {name:?} could leave its directory");
    }
    if let Ok(events) = message.storage_events() {
        check_events(&events);
    }
}

fn check_sns_url(url: &url::Url) {
    assert_eq!(url.scheme(), "https", "{url}");
    assert!(url.username().is_empty() && url.password().is_none(), "credentials in {url}");
    let host = url.host_str().unwrap_or_default();
    let aws = host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn");
    assert!(host.starts_with("sns.") && aws, "not an SNS host: {url}");
}

/// `/v1/events/cloudevents`: structured, batch and binary mode. The input is an HTTP head
/// (`name: value` lines), an empty line, then the body; lines that are not valid headers are
/// dropped, as an HTTP server would refuse them before the gateway sees them.
pub fn cloudevents_http(data: &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut headers = HeaderMap::new();
    for line in head.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
        let name = HeaderName::from_bytes(line[..colon].trim_ascii());
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    if let Ok(events) = cloudevents::parse_http(&headers, body) {
        check_events(&events);
        assert!(cloudevents::is_cloudevents_request(&headers), "events from a request that is not CloudEvents");
    }
}

/// Object keys: every sender's key dialect, the runner's local file name for a key, output names
/// and where outputs land, and the ledger's marker names.
pub fn object_key(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for encoding in [KeyEncoding::Form, KeyEncoding::Raw, KeyEncoding::Path] {
        let Ok(decoded) = key::decode_key(encoding, &text) else { continue };
        assert_eq!(key::validate_key(decoded.clone()).as_ref(), Ok(&decoded), "{encoding:?} let a bad key through");
        let wire = match encoding {
            KeyEncoding::Form => escape(&decoded, true),
            KeyEncoding::Raw => {
                assert_eq!(decoded, text, "raw keys are taken as sent");
                decoded.clone()
            }
            KeyEncoding::Path => escape(&decoded, false),
        };
        assert_eq!(
            key::decode_key(encoding, &wire),
            Ok(decoded.clone()),
            "{encoding:?} does not round-trip via {wire:?}"
        );
    }

    let name = safe_file_name(&text);
    let contained = !name.is_empty() && name != "." && !name.contains("..") && !name.contains(['/', '\\']);
    assert!(contained && name.len() <= MAX_NAME, "file name {name:?} of key {text:?} could leave its directory");
    assert_eq!(validate_output_name(&name), Ok(()), "file name {name:?} is not a valid output name");
    if validate_output_name(&text).is_ok() {
        let key = output_key("out/", "in/a.csv", &text);
        assert_eq!(key.strip_prefix("out/in/a.csv/"), Some(&*text), "output {text:?} escaped to {key:?}");
        assert_eq!(safe_file_name(&text), text, "a valid output name is its own file name");
    }

    if let Some(bytes) = decode_ordered(&text) {
        assert_eq!(encode_ordered(&bytes), text, "two marker names decode to one key");
    }
    let (a, b) = data.split_at(data.len() / 2);
    let (ea, eb) = (encode_ordered(a), encode_ordered(b));
    assert_eq!(decode_ordered(&ea).as_deref(), Some(a));
    assert_eq!(a.cmp(b), ea.cmp(&eb), "marker names do not sort like keys");
    if let (Ok(key), Ok(etag)) = (std::str::from_utf8(a), std::str::from_utf8(b))
        && let MarkerPath::Plain(path) = marker_path(".zeroflow/ledger/ns/p", key, etag)
    {
        let name = path.strip_prefix(".zeroflow/ledger/ns/p/k/").unwrap_or_default();
        let expected = MarkerName { key: key.to_owned(), etag: etag.to_owned() };
        assert_eq!(parse_marker_name(name), Some(expected), "marker {path:?} does not decode back");
    }
}

/// Query escaping (`form`: space as `+`) or RFC 3986 percent-encoding of a key, the way senders
/// write them: unreserved bytes as they are, everything else escaped.
fn escape(key: &str, form: bool) -> String {
    let mut out = String::with_capacity(key.len() * 3);
    for byte in key.bytes() {
        match byte {
            b' ' if form => out.push('+'),
            b if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) => out.push(char::from(b)),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Work API bodies (what the operator parses from runners, and the lease the runner parses from
/// the operator): whatever parses survives its own serialization unchanged, so a field is never
/// silently lost between the two binaries. Also the failure text and the duration strings.
pub fn work_api(data: &[u8]) {
    round_trip::<HeartbeatRequest>(data);
    round_trip::<OutputRequest>(data);
    round_trip::<CompleteRequest>(data);
    round_trip::<FailRequest>(data);
    round_trip::<Lease>(data);
    round_trip::<HeartbeatResponse>(data);
    round_trip::<OutputTarget>(data);
    round_trip::<FinishResponse>(data);
    round_trip::<ErrorBody>(data);

    let tail = stderr_tail_lossy(data);
    assert!(tail.len() <= STDERR_TAIL_LIMIT, "stderr tail of {} bytes", tail.len());
    let Ok(text) = std::str::from_utf8(data) else { return };
    let tail = stderr_tail(text);
    assert!(tail.len() <= STDERR_TAIL_LIMIT && text.ends_with(tail), "stderr tail is not the end");
    if let Ok(duration) = parse_duration(text)
        && duration.subsec_nanos() % 1_000_000 == 0
    {
        let formatted = format_duration(duration);
        assert_eq!(parse_duration(&formatted), Ok(duration), "{text:?} formats as {formatted:?}");
    }
}

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else { return };
    let text = serde_json::to_vec(&value).unwrap_or_else(|e| panic!("{value:?} does not serialize: {e}"));
    let again = serde_json::from_slice::<T>(&text);
    assert_eq!(again.ok().as_ref(), Some(&value), "changed by a round trip through {}", String::from_utf8_lossy(&text));
}

/// One target's checks: the bytes AFL++ generates in, a panic on a broken promise.
pub type Check = fn(&[u8]);

/// The fuzz targets by name, for the corpus tests and tools.
pub const TARGETS: &[(&str, Check)] = &[
    ("s3_json", s3_json),
    ("sns_envelope", sns_envelope),
    ("cloudevents_http", cloudevents_http),
    ("object_key", object_key),
    ("work_api", work_api),
];

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Every seed and every saved crash still passes its target's checks.
    #[test]
    fn seeds_and_regressions_pass() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut ran = 0;
        for (name, check) in TARGETS {
            for dir in ["seeds", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else { continue };
                for entry in entries {
                    let path = entry.expect("directory entry").path();
                    let data = std::fs::read(&path).expect("readable input");
                    eprintln!("{name}: {}", path.display());
                    check(&data);
                    ran += 1;
                }
            }
        }
        assert!(ran >= TARGETS.len(), "only {ran} inputs: the seed directories are missing");
    }

    #[test]
    fn a_repeated_field_is_found_at_any_depth() {
        assert!(repeats_a_field(br#"{"a":1,"a":2}"#));
        assert!(repeats_a_field(br#"{"Records":[{"s3":{"object":{"key":{}},"object":{"key":"k"}}}]}"#));
        assert!(!repeats_a_field(br#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#));
        assert!(!repeats_a_field(b"not json"));
    }

    #[test]
    fn escaping_is_what_the_decoders_undo() {
        assert_eq!(escape("a b+c/ü", true), "a+b%2Bc%2F%C3%BC");
        assert_eq!(escape("a b+c", false), "a%20b%2Bc");
    }
}
