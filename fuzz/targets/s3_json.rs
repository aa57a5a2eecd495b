//! AFL++ entry point; the checks are [`zeroflow_fuzz::s3_json`].

fn main() {
    afl::fuzz!(|data: &[u8]| zeroflow_fuzz::s3_json(data));
}
