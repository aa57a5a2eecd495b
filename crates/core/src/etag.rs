//! The one form in which an object's etag is compared and recorded (in backlogs, ledger marker
//! names, and the work API's checks), whoever reported it.
//!
//! Senders disagree on how they write the same etag: listings and HEADs quote it (`"abc"`),
//! notifications usually do not, HTTP may mark it weak (`W/"abc"`). GCS reports an object's MD5
//! as base64 in its events (`md5Hash`) but as hex in its XML API's ETag, which is what
//! object_store lists and HEADs (fake-gcs-server lists the base64 form as well). A base64 MD5
//! (24 characters decoding to exactly 16 bytes) is therefore written as lowercase hex, as S3,
//! MinIO and GCS's XML API write MD5 etags; no S3, Azure or GCS etag of another kind has that
//! shape (S3's are hex, Azure's `0x` hex, GCS's JSON etags decode to fewer bytes).

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// Bytes of an MD5 digest.
const MD5_BYTES: usize = 16;

/// `etag` without quotes and weak marker, with a base64 MD5 written as hex (module docs).
pub fn canonical_etag(etag: &str) -> Cow<'_, str> {
    let bare = etag.trim().trim_start_matches("W/").trim_matches('"');
    match md5_from_base64(bare) {
        Some(digest) => Cow::Owned(digest.iter().map(|b| format!("{b:02x}")).collect()),
        None => Cow::Borrowed(bare),
    }
}

fn md5_from_base64(text: &str) -> Option<Vec<u8>> {
    // 16 bytes are 24 base64 characters with two `=` of padding.
    if text.len() != 24 || !text.ends_with("==") {
        return None;
    }
    BASE64.decode(text).ok().filter(|bytes| bytes.len() == MD5_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_weak_markers_go() {
        assert_eq!(canonical_etag("\"abc\""), "abc");
        assert_eq!(canonical_etag("W/\"abc\""), "abc");
        assert_eq!(canonical_etag(" abc-2 "), "abc-2");
        assert_eq!(canonical_etag("\"\""), "");
    }

    #[test]
    fn a_base64_md5_is_written_as_hex() {
        // MD5("hello"): GCS's md5Hash and fake-gcs-server's ETag, and GCS's XML ETag.
        assert_eq!(canonical_etag("XUFAKrxLKna5cZ2REBfFkg=="), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(canonical_etag("\"XUFAKrxLKna5cZ2REBfFkg==\""), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(canonical_etag("\"5d41402abc4b2a76b9719d911017c592\""), "5d41402abc4b2a76b9719d911017c592");
    }

    #[test]
    fn other_etags_are_left_alone() {
        for etag in [
            "0x8DCB4B3C2F5A1B2",                  // Azure
            "d41d8cd98f00b204e9800998ecf8427e-3", // S3 multipart
            "CJ+A8dHq7/0CEAE=",                   // GCS JSON API etag (not an MD5)
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",   // 32 characters: not 16 bytes
        ] {
            assert_eq!(canonical_etag(etag), etag);
        }
    }
}
