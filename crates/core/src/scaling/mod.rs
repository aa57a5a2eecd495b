//! Scaling: how many workers a pipeline should have ([`decide`]), which pods a scale-down should
//! spare ([`deletion_cost`]), what the workers cost ([`usage`]), which scheduled minimums
//! apply now ([`windows`]) and what the scale-down stabilization window holds
//! ([`stabilization`]). Pure.

pub mod decide;
pub mod deletion_cost;
pub mod stabilization;
pub mod usage;
pub mod windows;
