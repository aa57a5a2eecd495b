//! AFL++ entry point; the checks are [`zeroflow_fuzz::sns_envelope`].

fn main() {
    afl::fuzz!(|data: &[u8]| zeroflow_fuzz::sns_envelope(data));
}
