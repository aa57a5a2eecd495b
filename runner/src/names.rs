//! Names: the local file name for an untrusted object key, and the stderr tail a failure
//! carries. Both name rules are the contract's ([`zeroflow_contract::names`]). Pure.

// The local file name rules live in the contract crate, beside the output-name rules they
// must agree with, so the fuzz targets check them without building the runner.
pub use zeroflow_contract::names::{
    FALLBACK_NAME, MAX_NAME, NameError, STDERR_TAIL_LIMIT, safe_file_name, validate_output_name,
};

/// The end of `stderr`, at most [`STDERR_TAIL_LIMIT`] bytes, decoded lossily.
pub fn stderr_tail(stderr: &[u8]) -> String {
    zeroflow_contract::names::stderr_tail_lossy(stderr)
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
