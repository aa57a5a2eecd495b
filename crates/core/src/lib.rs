//! zeroflow's domain core: everything the operator decides that needs no Kubernetes.
//!
//! - [`events`]: storage notifications of every sender, decoded into [`events::StorageEvent`]s.
//! - [`routing`]: which pipelines an event feeds ([`routing::RouteTable`]).
//! - [`admission`]: the gateway's promise: an event is answered 2xx only once admitted.
//! - [`backlog`]: one pipeline's pending objects, work leases, attempts and backoff.
//! - [`leases`]: the work leases handed to workers, by the ids they hold.
//! - [`ledger`]: the durable record of finished objects in the store, and its marker names.
//! - [`lineage`]: which pipelines feed which, and the cycles that must not run.
//! - [`listing`]: listings after a key that are correct on stores that ignore the offset.
//! - [`resync`]: the listing merge that finds work notifications missed.
//! - [`scaling`]: the replica decision, deletion costs, usage accounting.
//! - [`etag`]: the one form etags are compared and recorded in.
//! - [`cold_starts`], [`work`]: smaller decisions of the work API.
//!
//! Pure where it can be (the caller passes the clock); the ledger and resync do I/O through
//! `object_store` traits, so tests run them against an in-memory store.

pub mod admission;
pub mod backlog;
pub mod cold_starts;
pub mod etag;
pub mod events;
pub mod leases;
pub mod ledger;
pub mod lineage;
pub mod listing;
pub mod pipeline;
pub mod resync;
pub mod routing;
pub mod scaling;
pub mod work;

pub use pipeline::PipelineKey;
