//! Event ingress: storage notifications in, routed backlog admissions out.
//!
//! The parsing and every decision about a notification are pure (`zeroflow_core::events`);
//! [`server`] moves bytes between HTTP and them, [`sns`] fetches SNS's certificates and
//! confirms subscriptions, [`notices`] tells people what they must act on.

pub mod auth;
pub mod config;
pub mod metrics;
pub mod notices;
pub mod pubsub;
pub mod server;
pub mod sns;

pub use config::GatewayArgs;
pub use server::{GatewayConfig, GatewayError, router};
