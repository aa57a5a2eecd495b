//! Event ingress: storage notifications in, routed backlog admissions out.
//!
//! [`records`] and [`routing`] are pure; [`server`] moves bytes between HTTP and them.

pub mod auth;
pub mod metrics;
pub mod pubsub;
pub mod server;

pub use server::{GatewayConfig, router};
