//! AFL++ entry point; the checks are [`zeroflow_fuzz::work_api`].

fn main() {
    afl::fuzz!(|data: &[u8]| zeroflow_fuzz::work_api(data));
}
