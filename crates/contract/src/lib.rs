//! What zeroflow's operator and `zeroflow-runner` agree on, in one place both depend on, so a
//! change on one side that the other does not follow is a compile error rather than an e2e
//! failure.
//!
//! - [`wire`]: the work API's paths and its request and response bodies (JSON).
//! - [`names`]: which output names are accepted, and how much stderr a failure carries.
//! - [`duration`]: the duration grammar of the `DataPipeline` API and the limits the runtime
//!   can honour (the CRD's CEL rules are generated from the same constants).
//! - [`env`]: the environment variables the operator sets for the runner and the runner sets for
//!   the transform.
//! - [`worker`]: how workers are named and authenticated, and the input/output [`worker::Contract`].
//!
//! No Kubernetes, no I/O, no async runtime: both binaries can depend on it cheaply.

pub mod duration;
pub mod env;
pub mod names;
pub mod wire;
pub mod worker;
