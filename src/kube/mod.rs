//! Kubernetes: the pod's egress lock-down (`credgate init`) and adding
//! credgate to workloads (`credgate inject`, `credgate webhook`).
//!
//! Pure: configuration or YAML in, ruleset text or YAML out. Installing,
//! reading files and serving are [`crate::cli`]'s job.

pub mod inject;
pub mod lockdown;
pub mod review;
