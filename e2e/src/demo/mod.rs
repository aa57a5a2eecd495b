//! `e2e/demo`'s job (the binary `zeroflow-demo`): the example pipeline on the testbed, with the
//! operator and the workers already running (on the real node, or on the host in the fake
//! node's place), watched and timed from the upload to the return to zero.

pub mod example;
pub mod observe;
pub mod run;
pub mod timeline;
