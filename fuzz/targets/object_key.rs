//! AFL++ entry point; the checks are [`zeroflow_fuzz::object_key`].

fn main() {
    afl::fuzz!(|data: &[u8]| zeroflow_fuzz::object_key(data));
}
