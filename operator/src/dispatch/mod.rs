//! Every pipeline's backlog, behind the gateway's admission.

pub mod backlogs;

pub use backlogs::Backlogs;
