//! zeroflow's operator: the DataPipeline API and the controller that runs its workers.

pub mod api;
pub mod cli;
pub mod controller;
pub mod dispatch;
pub mod gateway;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod scaler;
pub mod store;
pub mod telemetry;
pub mod workapi;
