//! credgate: a task-scoped egress proxy for autonomous AI agents.
//!
//! The agent never holds an upstream credential. Its HTTP(S) traffic goes
//! through credgate, which identifies the task, strips what the agent sent,
//! authorises the request against the task's scope rules, injects a
//! just-in-time credential, scrubs that credential from everything flowing
//! back, and writes one decision record per request.
//!
//! The request pipeline lives in [`proxy::pipeline`]; everything it calls is
//! one module per phase.

pub mod admin;
pub mod agent_env;
pub mod approval;
pub mod audit;
pub mod cli;
pub mod config;
pub mod credential;
mod decimal;
pub mod decode;
pub mod field;
mod hex;
pub mod inject;
pub mod kube;
pub mod policy;
pub mod provider;
pub mod proxy;
pub mod reason;
pub mod sanitize;
pub mod scrub;
pub mod secret;
pub mod sigv4;
mod stream;
pub mod task;
pub mod tls;
pub mod units;

/// A boxed, sendable future: what object-safe async trait methods return.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
