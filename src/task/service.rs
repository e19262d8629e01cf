//! What the admin API drives: the gateway's task operations.

use std::sync::Arc;

use super::model::{Task, TaskSpec};
use super::token::TaskToken;

/// The task operations with side effects, implemented by the running gateway.
///
/// The gateway validates scopes against the current config, applies the
/// default TTL and caps it, emits the `task.start`/`task.end` records,
/// revokes the task's credentials and closes its connections. The admin API
/// only translates HTTP to these calls, so it can be tested against any
/// implementation (the tests use one backed by a bare [`super::TaskStore`]).
pub trait TaskService: Send + Sync + 'static {
    /// Starts a task. `spec.ttl == None` asks for the default TTL.
    /// [`TaskError::Invalid`] for an unknown scope or an unacceptable TTL.
    fn start_task(&self, spec: TaskSpec) -> Result<StartedTask, TaskError>;

    /// Ends the task with this id on request and completes once its end work
    /// (revocation, record, closing connections) is done. Ending an already
    /// ended task succeeds and returns it unchanged; an unknown id is
    /// [`TaskError::NotFound`].
    fn end_task(&self, id: &str) -> crate::BoxFuture<'_, Result<Arc<Task>, TaskError>>;

    /// The task with this id, if known (active or recently ended).
    fn get_task(&self, id: &str) -> Option<Arc<Task>>;

    /// Every known task.
    fn list_tasks(&self) -> Vec<Arc<Task>>;

    /// Opens `task`'s own proxy port on `127.0.0.1` and returns its address.
    /// A connection to it runs as the task with no `Proxy-Authorization`
    /// (for clients that cannot send proxy credentials, or send them only
    /// after a 407). With `uid`, only client sockets of that user are the
    /// task's (checked on Linux; elsewhere no connection is); other callers
    /// are unauthenticated. The port closes when the task ends.
    fn open_task_port(
        &self,
        task: &Arc<Task>,
        uid: Option<u32>,
    ) -> crate::BoxFuture<'_, Result<std::net::SocketAddr, TaskError>>;

    /// Base URL agents use, e.g. `http://127.0.0.1:8080`; the admin API puts
    /// `ID:TOKEN@` into it.
    fn proxy_url(&self) -> String;

    /// `Err(why)` when the proxy cannot serve (e.g. the audit log is
    /// unwritable); `why` is shown by `/readyz` and must hold no secret.
    fn ready(&self) -> Result<(), String>;

    /// Every task's approvals.
    fn approvals(&self) -> &crate::approval::Approvals;

    /// Records approval changes (the gateway writes one record each).
    fn record_approvals(&self, changes: Vec<crate::approval::Change>);
}

/// A task just started, with the only copy of its token.
#[derive(Debug)]
pub struct StartedTask {
    /// The new task.
    pub task: Arc<Task>,
    /// Its token, to be handed to the caller once.
    pub token: TaskToken,
}

/// Why a task operation failed. Messages name ids and scopes, never tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// No task has this id.
    #[error("no task {0}")]
    NotFound(String),
    /// The request cannot be honoured as given (unknown scope, bad TTL, …).
    #[error("{0}")]
    Invalid(String),
    /// The gateway cannot start or end tasks right now (e.g. the audit log
    /// is unwritable, so the lifecycle could not be recorded).
    #[error("unavailable: {0}")]
    Unavailable(String),
}
