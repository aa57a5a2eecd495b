//! zeroflow's operator: the DataPipeline API, the controller that runs its workers, the event
//! gateway, the work API and the scaler. The kube-free parts live in `zeroflow-core` (domain)
//! and `zeroflow-contract` (what the runner agrees to); `ARCHITECTURE.md` says who owns what.

pub mod api;
pub mod cli;
pub mod controller;
pub mod events;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod gateway;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod runtime;
pub mod scaler;
pub mod sources;
pub mod status_writer;
pub mod store;
pub mod telemetry;
pub mod workapi;
