//! Configuration: raw serde structs, validated into the model the proxy runs on.

pub mod field;
pub mod units;
