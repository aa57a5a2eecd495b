//! Names: the local file name for an untrusted object key, the output names the server accepts,
//! and the stderr tail a failure carries. Pure functions, no I/O.

use thiserror::Error;

/// The longest file or output name, in bytes (a common file system limit and the server's).
pub const MAX_NAME: usize = 255;
/// How much of the end of stderr a failure report carries.
pub const STDERR_TAIL_LIMIT: usize = 4096;
/// The file name used when nothing usable is left of a key.
pub const FALLBACK_NAME: &str = "input";

/// A local file name for the object `key` that can never leave its directory: only the last
/// path segment, separators and control characters replaced, no `..`, at most [`MAX_NAME`]
/// bytes, never empty. Keys come from whoever writes to the bucket, so nothing is trusted.
pub fn safe_file_name(key: &str) -> String {
    let last = key.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut name: String =
        last.chars().map(|c| if c.is_control() || c == '/' || c == '\\' { '_' } else { c }).collect();
    // Replacing ".." with one character shortens the name, so this ends.
    while name.contains("..") {
        name = name.replace("..", "_");
    }
    let name = truncate_to_boundary(&name, MAX_NAME);
    // A prefix of a name without ".." has no ".." either; "." alone would be the directory itself.
    if name.is_empty() || name == "." { FALLBACK_NAME.to_owned() } else { name.to_owned() }
}

fn truncate_to_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Why an output file's name is not uploaded; the same rules as the work API's.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("empty name")]
    Empty,
    #[error("name is {0} bytes, more than {MAX_NAME}")]
    TooLong(usize),
    #[error("name contains a path separator")]
    Separator,
    #[error("name is '.' or contains '..'")]
    Dots,
    #[error("name contains a control character")]
    Control,
    #[error("name is not UTF-8")]
    NotUtf8,
}

/// Checks an output name as the work API does, so a name it would refuse is reported before
/// anything is uploaded.
pub fn validate_output_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong(name.len()));
    }
    if name.contains(['/', '\\']) {
        return Err(NameError::Separator);
    }
    if name == "." || name.contains("..") {
        return Err(NameError::Dots);
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::Control);
    }
    Ok(())
}

/// The end of `stderr`, at most [`STDERR_TAIL_LIMIT`] bytes, decoded lossily; the cut is moved
/// forward to a character boundary.
pub fn stderr_tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL_LIMIT);
    let text = String::from_utf8_lossy(&stderr[start..]);
    // Lossy decoding of a cut multi-byte character may add replacement characters that grow the
    // text past the limit; keep the end.
    let mut cut = text.len().saturating_sub(STDERR_TAIL_LIMIT);
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_owned()
}

/// Keeps the last [`STDERR_TAIL_LIMIT`] bytes of a stream as it is read.
#[derive(Debug, Default)]
pub struct TailBuffer {
    bytes: Vec<u8>,
}

impl TailBuffer {
    pub fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * STDERR_TAIL_LIMIT {
            let excess = self.bytes.len() - STDERR_TAIL_LIMIT;
            self.bytes.drain(..excess);
        }
    }

    pub fn tail(&self) -> String {
        stderr_tail(&self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hostile_keys_become_plain_names() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name("/etc/passwd"), "passwd");
        assert_eq!(safe_file_name("dir/"), FALLBACK_NAME);
        assert_eq!(safe_file_name(".."), "_");
        assert_eq!(safe_file_name("."), FALLBACK_NAME);
        assert_eq!(safe_file_name(""), FALLBACK_NAME);
        assert_eq!(safe_file_name("a\\..\\b"), "b");
        assert_eq!(safe_file_name("x\ny.csv"), "x_y.csv");
        assert_eq!(safe_file_name("a/b/data.tar.gz"), "data.tar.gz");
        assert_eq!(safe_file_name("...."), "__");
        assert_eq!(safe_file_name(&"é".repeat(200)).len(), 254);
    }

    #[test]
    fn output_names_follow_the_server_rules() {
        assert_eq!(validate_output_name("result.json"), Ok(()));
        assert_eq!(validate_output_name(""), Err(NameError::Empty));
        assert_eq!(validate_output_name("a/b"), Err(NameError::Separator));
        assert_eq!(validate_output_name("a\\b"), Err(NameError::Separator));
        assert_eq!(validate_output_name("."), Err(NameError::Dots));
        assert_eq!(validate_output_name("a..b"), Err(NameError::Dots));
        assert_eq!(validate_output_name("a\tb"), Err(NameError::Control));
        assert_eq!(validate_output_name(&"x".repeat(256)), Err(NameError::TooLong(256)));
        assert_eq!(validate_output_name(&"x".repeat(255)), Ok(()));
    }

    #[test]
    fn stderr_keeps_the_end() {
        assert_eq!(stderr_tail(b"short"), "short");
        let long: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let tail = stderr_tail(&long);
        assert_eq!(tail.len(), STDERR_TAIL_LIMIT);
        assert!(long.ends_with(tail.as_bytes()));
        // A multi-byte character cut at the start of the window.
        let text = "é".repeat(3000);
        let tail = stderr_tail(text.as_bytes());
        assert!(tail.len() <= STDERR_TAIL_LIMIT);
        assert!(tail.ends_with('é'));
        let mut buffer = TailBuffer::default();
        for _ in 0..100 {
            buffer.push(&long[..1000]);
        }
        buffer.push(b"the end");
        let tail = buffer.tail();
        assert_eq!(tail.len(), STDERR_TAIL_LIMIT);
        assert!(tail.ends_with("the end"));
    }

    proptest! {
        #[test]
        fn any_key_gives_a_name_that_stays_put(key in "\\PC*|[./\\\\a-zé\\x01\\n]{0,400}") {
            let name = safe_file_name(&key);
            prop_assert!(!name.is_empty());
            prop_assert!(!name.contains('/'));
            prop_assert!(!name.contains(".."));
            prop_assert!(name != ".");
            prop_assert!(name.len() <= MAX_NAME);
            prop_assert_eq!(validate_output_name(&name), Ok(()));
        }
    }
}
