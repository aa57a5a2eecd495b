//! AFL++ entry point; the checks are [`zeroflow_fuzz::cloudevents_http`].

fn main() {
    afl::fuzz!(|data: &[u8]| zeroflow_fuzz::cloudevents_http(data));
}
