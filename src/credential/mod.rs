//! Credentials, their sources and the per-task cache.

pub mod secret;
