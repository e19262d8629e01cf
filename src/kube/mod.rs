//! Kubernetes: the pod's egress lock-down (`credgate init`).
//!
//! Pure: configuration in, ruleset text out. Installing it is
//! [`crate::cli::init`]'s job.

pub mod lockdown;
