//! Output names, the runner's local file names and failure text: what the work API accepts and
//! the runner checks before uploading anything, so both refuse the same names.

use thiserror::Error;

/// Longest output name, in bytes (the usual file-name limit).
pub const MAX_OUTPUT_NAME: usize = 255;
/// How much of the end of a failed transform's stderr is reported and kept in the ledger, in bytes.
pub const STDERR_TAIL_LIMIT: usize = 4096;

/// Why an output name is refused. Names become the last segment of an object key and, in the
/// runner, a file name: anything that could climb out of a directory or split a key is out.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("output name is empty")]
    Empty,
    #[error("output name is {0} bytes, more than {MAX_OUTPUT_NAME}")]
    TooLong(usize),
    #[error("output name must not contain '/' or '\\'")]
    Separator,
    #[error("output name must not be '.' or contain '..'")]
    Dots,
    #[error("output name must not contain NUL or control characters")]
    Control,
}

pub fn validate_output_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_OUTPUT_NAME {
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

/// Where an output of `input_key` goes in the sink bucket: `<prefix><input key>/<name>`. The
/// name is validated, so the result stays under the sink prefix.
pub fn output_key(sink_prefix: &str, input_key: &str, name: &str) -> String {
    format!("{sink_prefix}{input_key}/{name}")
}

/// The longest file name, in bytes: the longest output name the work API accepts.
pub const MAX_NAME: usize = MAX_OUTPUT_NAME;
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

/// The last [`STDERR_TAIL_LIMIT`] bytes of `text`, cut forward to a character boundary (the end
/// is what explains a crash).
pub fn stderr_tail(text: &str) -> &str {
    if text.len() <= STDERR_TAIL_LIMIT {
        return text;
    }
    let mut start = text.len() - STDERR_TAIL_LIMIT;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// [`stderr_tail`] of raw bytes, decoded lossily.
pub fn stderr_tail_lossy(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(STDERR_TAIL_LIMIT);
    let text = String::from_utf8_lossy(&bytes[start..]);
    // Replacement characters for a cut multi-byte sequence can make the text longer again.
    stderr_tail(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_that_could_escape_or_split_are_refused() {
        assert_eq!(validate_output_name("out.parquet"), Ok(()));
        assert_eq!(validate_output_name("résumé 2026.csv"), Ok(()));
        assert_eq!(validate_output_name(".hidden"), Ok(()));
        assert_eq!(validate_output_name(""), Err(NameError::Empty));
        assert_eq!(validate_output_name("a/b"), Err(NameError::Separator));
        assert_eq!(validate_output_name("a\\b"), Err(NameError::Separator));
        assert_eq!(validate_output_name(".."), Err(NameError::Dots));
        assert_eq!(validate_output_name("x..y"), Err(NameError::Dots));
        assert_eq!(validate_output_name("."), Err(NameError::Dots));
        assert_eq!(validate_output_name("a\0b"), Err(NameError::Control));
        assert_eq!(validate_output_name("a\nb"), Err(NameError::Control));
        assert_eq!(validate_output_name(&"x".repeat(255)), Ok(()));
        assert_eq!(validate_output_name(&"x".repeat(256)), Err(NameError::TooLong(256)));
        // 128 two-byte characters: 256 bytes although only 128 characters.
        assert_eq!(validate_output_name(&"é".repeat(128)), Err(NameError::TooLong(256)));
    }

    #[test]
    fn outputs_sit_under_the_sink_prefix_and_the_input_key() {
        assert_eq!(output_key("parquet/", "incoming/a.csv", "a.parquet"), "parquet/incoming/a.csv/a.parquet");
        assert_eq!(output_key("", "a.csv", "out"), "a.csv/out");
    }

    #[test]
    fn stderr_keeps_the_end_on_a_char_boundary() {
        assert_eq!(stderr_tail("short"), "short");
        let long = format!("{}{}", "é".repeat(3000), "the end");
        let tail = stderr_tail(&long);
        assert!(tail.len() <= STDERR_TAIL_LIMIT && tail.len() >= STDERR_TAIL_LIMIT - 1);
        assert!(tail.ends_with("the end"));
        let bytes: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let tail = stderr_tail_lossy(&bytes);
        assert_eq!(tail.len(), STDERR_TAIL_LIMIT);
        assert!(bytes.ends_with(tail.as_bytes()));
        let cut = stderr_tail_lossy("é".repeat(3000).as_bytes());
        assert!(cut.len() <= STDERR_TAIL_LIMIT && cut.ends_with('é'));
    }
}
