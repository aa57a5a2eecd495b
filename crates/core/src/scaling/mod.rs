//! Scaling: how many workers a pipeline should have ([`decide`]), which pods a scale-down should
//! spare ([`deletion_cost`]), and what the workers cost ([`usage`]). Pure.

pub mod decide;
pub mod deletion_cost;
pub mod usage;
