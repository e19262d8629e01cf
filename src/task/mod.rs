//! Tasks: the bounded units of agent work every request is attributed to.
//!
//! A [`Task`] is created by the admin API (or, in sidecar mode, from config as
//! the single *ambient* task), lives in the [`TaskStore`], and is identified on
//! each proxy request by the [`TaskToken`] the agent presents in
//! `Proxy-Authorization` (see [`parse_proxy_authorization`] and
//! [`TaskStore::authenticate`]). Tokens are stored only as SHA-256 digests and
//! compared in constant time.
//!
//! The store is deliberately dumb: it never revokes credentials or writes
//! records. Everything with side effects goes through a [`TaskService`], which
//! the running gateway implements and the admin API and the [`run_reaper`]
//! loop drive.

mod auth;
mod model;
mod reaper;
mod service;
mod store;
mod token;

pub use auth::{parse_proxy_authorization, AuthError, ProxyCredential};
pub use model::{EndReason, Task, TaskSpec, TaskState, TaskView, DEFAULT_TASK_TTL};
pub use reaper::run_reaper;
pub use service::{StartedTask, TaskError, TaskService};
pub use store::TaskStore;
pub use token::TaskToken;
