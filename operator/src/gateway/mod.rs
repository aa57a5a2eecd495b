//! Event ingress: storage notifications in, routed backlog admissions out.
//!
//! [`records`] and [`routing`] are pure; [`server`] moves bytes between HTTP and them.

pub mod auth;
pub mod metrics;
pub mod records;
pub mod routing;
pub mod server;

pub use records::{EventKind, RecordError, StorageEvent};
pub use routing::{PipelineKey, Route, RouteTable};
pub use server::{Admission, AdmitReport, GatewayConfig, Overloaded, SharedRoutes, router};
