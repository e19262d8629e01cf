//! The admin API: a separate HTTP/1.1 listener (default `127.0.0.1:8081`)
//! through which operators and `credgate task`/`credgate run` start, list
//! and end tasks.
//!
//! | route | auth | answer |
//! | --- | --- | --- |
//! | `GET /healthz` | none | `200 ok` while the process serves |
//! | `GET /readyz` | none | `200 ok`, or `503` with the reason from [`TaskService::ready`](crate::task::TaskService::ready) |
//! | `GET /v1/jwks` | none | `200` with the public key set of the subject tokens credgate signs ([`task_jwt`](crate::credential::task_jwt)) |
//! | `POST /v1/tasks` | admin token | `201` with id, token, expiry, proxy URL and the task view |
//! | `GET /v1/tasks` | admin token | `200` with every task's view |
//! | `GET /v1/tasks/{id}` | admin token | `200` view, or `404` |
//! | `DELETE /v1/tasks/{id}` | admin token | `200` view of the ended task, or `404` |
//! | `GET /v1/approvals?state=…&task=…` | admin token | `200` with the approvals' views |
//! | `GET /v1/approvals/{id}` | admin token | `200` view, or `404` |
//! | `POST /v1/approvals/{id}/approve` | admin token | `{approver, reason?, grant?}`: `200` view; `400` no approver, the same approver again, a grant wider than the rule's; `404`; `409` already decided or expired |
//! | `POST /v1/approvals/{id}/deny` | admin token | `{approver, reason}`: as approve |
//!
//! The admin token travels as `Authorization: Bearer …` and is compared in
//! constant time. A task token appears in exactly one answer, the `201` of
//! its creation; views never contain it. Errors are
//! `{"error": "<code>", "message": "…"}` with a fitting status.

mod api;
mod approvals;
mod client;
mod routes;
mod server;

pub use api::{
    proxy_url_with_userinfo, CreateTaskRequest, CreatedTaskBody, ErrorBody, TaskPortRequest,
};
pub use approvals::{AnswerView, ApprovalView, ApproveRequest, DenyRequest};
pub use client::{AdminClient, AdminClientError, CreatedTask};
pub use server::serve;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
