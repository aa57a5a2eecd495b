//! Scaling: how many workers a pipeline should have ([`decide`]), which pods a scale-down should
//! spare ([`deletion_cost`]), what the workers cost ([`usage`]) and which scheduled minimums
//! apply now ([`windows`]). Pure.

pub mod decide;
pub mod deletion_cost;
pub mod usage;
pub mod windows;
