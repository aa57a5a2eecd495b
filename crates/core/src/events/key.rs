//! Object keys from notifications are untrusted input. They are kept byte-exact (no path
//! normalization: `a/../b` and `b` are different S3 keys), and only refused when no S3-compatible
//! store could hold them. Protecting the file system from `..` is the runner's job.

use thiserror::Error;

/// S3's documented upper bound for a key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    #[error("object key is empty")]
    Empty,
    #[error("object key is {0} bytes, more than the 1024 allowed")]
    TooLong(usize),
    #[error("object key contains a NUL character")]
    Nul,
    #[error("object key has a malformed percent escape at byte {0}")]
    BadEscape(usize),
    #[error("object key does not decode to UTF-8")]
    NotUtf8,
}

/// How a sender writes object keys into its notifications. Decoding with the wrong one is silently
/// wrong (`a+b.csv` becomes `a b.csv`) or fatal (`100%.csv` is a malformed escape), so each
/// sender's dialect is chosen where its records are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEncoding {
    /// Query escaping (`application/x-www-form-urlencoded`): AWS S3 notifications ("red
    /// flower.jpg" becomes "red+flower.jpg", per AWS's event message structure), MinIO (Go's
    /// `url.QueryEscape`), EventBridge's S3 events (AWS Lambda Powertools decodes their keys
    /// with `unquote_plus`).
    Form,
    /// The key as stored, not escaped at all: Ceph RGW (`rgw_notify.cc` writes the object name
    /// as is), GCS object names, Azure's `subject` paths.
    Raw,
    /// RFC 3986 percent-encoding, where `+` stays `+`: the path of Azure blob URLs.
    Path,
}

/// Decodes and checks a key as `encoding` writes it.
pub fn decode_key(encoding: KeyEncoding, wire: &str) -> Result<String, KeyError> {
    match encoding {
        KeyEncoding::Form => decode_form_key(wire),
        KeyEncoding::Raw => validate_key(wire.to_owned()),
        KeyEncoding::Path => validate_key(decode_path(wire)?),
    }
}

/// Checks a decoded key and hands it back unchanged.
pub fn validate_key(key: String) -> Result<String, KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(key.len()));
    }
    if key.contains('\0') {
        return Err(KeyError::Nul);
    }
    Ok(key)
}

/// Decodes a key the way S3 and MinIO escape it in notification records: query escaping
/// (application/x-www-form-urlencoded), so `+` is a space and `%2B` a plus. Plain percent-decoding
/// would turn `a+b.csv` into a key that does not exist. Malformed escapes are refused rather than
/// passed through, so two different wire forms never decode to the same key by accident.
pub fn decode_form_key(escaped: &str) -> Result<String, KeyError> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(KeyError::BadEscape(i)),
                }
                i += 3;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    let key = String::from_utf8(out).map_err(|_| KeyError::NotUtf8)?;
    validate_key(key)
}

/// Decodes a URL path segment sequence (RFC 3986 percent-encoding, where `+` stays `+`), as in
/// Azure's blob URLs.
pub fn decode_path(escaped: &str) -> Result<String, KeyError> {
    let bytes = escaped.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(KeyError::BadEscape(i)),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| KeyError::NotUtf8)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Go's `url.QueryEscape`, which MinIO uses: everything but unreserved characters is escaped,
    /// space becomes `+`.
    fn go_query_escape(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    /// AWS leaves `/` and some punctuation raw but escapes the rest like a form.
    fn aws_style_escape(s: &str) -> String {
        let mut out = String::new();
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'/' => out.push(b as char),
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02x}")),
            }
        }
        out
    }

    #[test]
    fn plus_is_space_and_escaped_plus_is_plus() {
        assert_eq!(decode_form_key("a+b%2Bc.csv").as_deref(), Ok("a b+c.csv"));
    }

    #[test]
    fn escaped_slash_and_dots_are_kept_exactly() {
        assert_eq!(decode_form_key("..%2F..%2Fetc%2Fpasswd").as_deref(), Ok("../../etc/passwd"));
        assert_eq!(decode_form_key("/leading//double/").as_deref(), Ok("/leading//double/"));
    }

    #[test]
    fn unicode_is_decoded_from_utf8_escapes() {
        assert_eq!(decode_form_key("r%C3%A9sum%C3%A9+%E2%9C%93.txt").as_deref(), Ok("résumé ✓.txt"));
    }

    #[test]
    fn refuses_bad_keys() {
        assert_eq!(decode_form_key(""), Err(KeyError::Empty));
        assert_eq!(decode_form_key("a%00b"), Err(KeyError::Nul));
        assert_eq!(decode_form_key("a%zz"), Err(KeyError::BadEscape(1)));
        assert_eq!(decode_form_key("a%2"), Err(KeyError::BadEscape(1)));
        assert_eq!(decode_form_key("%FF%FE"), Err(KeyError::NotUtf8));
        assert_eq!(decode_form_key(&"k".repeat(1025)), Err(KeyError::TooLong(1025)));
        assert_eq!(decode_form_key(&"k".repeat(1024)).map(|k| k.len()), Ok(1024));
    }

    #[test]
    fn path_decoding_keeps_plus() {
        assert_eq!(decode_path("a+b%20c").as_deref(), Ok("a+b c"));
    }

    #[test]
    fn each_dialect_decodes_its_own_escaping() {
        assert_eq!(decode_key(KeyEncoding::Form, "a+b%2B.csv").as_deref(), Ok("a b+.csv"));
        assert_eq!(decode_key(KeyEncoding::Raw, "a+b%2B.csv").as_deref(), Ok("a+b%2B.csv"));
        assert_eq!(decode_key(KeyEncoding::Raw, "incoming/100%.csv").as_deref(), Ok("incoming/100%.csv"));
        assert_eq!(decode_key(KeyEncoding::Path, "a+b%20c").as_deref(), Ok("a+b c"));
        assert_eq!(decode_key(KeyEncoding::Raw, ""), Err(KeyError::Empty));
        assert_eq!(decode_key(KeyEncoding::Path, "a%00"), Err(KeyError::Nul));
    }

    fn legal_key() -> impl Strategy<Value = String> {
        // Arbitrary unicode plus the characters that matter to escaping.
        let interesting = prop_oneof![
            Just('+'),
            Just('%'),
            Just('/'),
            Just(' '),
            Just('.'),
            Just('&'),
            Just('='),
            any::<char>().prop_filter("no NUL", |c| *c != '\0'),
        ];
        prop::collection::vec(interesting, 1..200)
            .prop_map(|cs| cs.into_iter().collect::<String>())
            .prop_filter("fits S3's limit", |s| s.len() <= MAX_KEY_BYTES)
    }

    proptest! {
        #[test]
        fn form_round_trip(key in legal_key()) {
            let by_form: String = form_urlencoded::byte_serialize(key.as_bytes()).collect();
            prop_assert_eq!(decode_form_key(&by_form), Ok(key.clone()));
            prop_assert_eq!(decode_form_key(&go_query_escape(&key)), Ok(key.clone()));
            prop_assert_eq!(decode_form_key(&aws_style_escape(&key)), Ok(key));
        }

        #[test]
        fn decoding_never_panics(s in any::<String>()) {
            let _ = decode_form_key(&s);
            let _ = decode_path(&s);
            for encoding in [KeyEncoding::Form, KeyEncoding::Raw, KeyEncoding::Path] {
                let _ = decode_key(encoding, &s);
            }
        }

        #[test]
        fn raw_keys_round_trip_byte_exact(key in legal_key()) {
            prop_assert_eq!(decode_key(KeyEncoding::Raw, &key), Ok(key.clone()));
        }

        #[test]
        fn path_round_trip(key in legal_key()) {
            let escaped: String = key.bytes().map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b'+' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            }).collect();
            prop_assert_eq!(decode_key(KeyEncoding::Path, &escaped), Ok(key));
        }

        #[test]
        fn distinct_keys_stay_distinct(a in legal_key(), b in legal_key()) {
            let ea: String = form_urlencoded::byte_serialize(a.as_bytes()).collect();
            let eb: String = form_urlencoded::byte_serialize(b.as_bytes()).collect();
            prop_assert_eq!(decode_form_key(&ea) == decode_form_key(&eb), a == b);
        }
    }
}
