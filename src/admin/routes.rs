//! Request → response for the admin API, independent of the connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE,
};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};

use crate::secret::{constant_time_eq, sha256, Secret};
use crate::task::{TaskError, TaskService};

use super::api::{proxy_url_with_userinfo, CreateTaskRequest, CreatedTaskBody, ErrorBody};

/// Request bodies larger than this are refused with 413.
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// A caller that starts a body must finish it within this time.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request needs: the service and the admin token's digest.
pub(crate) struct AdminState {
    service: Arc<dyn TaskService>,
    /// Comparing digests keeps the comparison constant-time even when the
    /// presented token has a different length than the real one.
    admin_digest: [u8; 32],
}

impl AdminState {
    pub(crate) fn new(service: Arc<dyn TaskService>, admin_token: &Secret) -> AdminState {
        AdminState {
            service,
            admin_digest: sha256(admin_token.expose()),
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(value) = req.headers().get(AUTHORIZATION) else {
            return false;
        };
        let Some((scheme, token)) = value.as_bytes().split_at_checked(7) else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer ")
            && constant_time_eq(&sha256(token.trim_ascii()), &self.admin_digest)
    }
}

pub(super) type Reply = Response<Full<Bytes>>;

/// Answers one admin request. `/healthz` and `/readyz` are open; everything
/// under `/v1` requires `Authorization: Bearer <admin token>`, checked before
/// routing so that unauthenticated callers learn nothing about the routes.
pub(crate) async fn handle<B>(state: &AdminState, req: Request<B>) -> Reply
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/healthz" => only_get(&req).unwrap_or_else(|| text(StatusCode::OK, "ok\n")),
        "/readyz" => only_get(&req).unwrap_or_else(|| match state.service.ready() {
            Ok(()) => text(StatusCode::OK, "ok\n"),
            Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", why),
        }),
        // Public keys only, for identity providers that verify the subject
        // tokens credgate signs; open like a JWKS anywhere else.
        "/v1/jwks" => only_get(&req)
            .unwrap_or_else(|| json(StatusCode::OK, &crate::credential::task_jwt::jwks())),
        p if p == "/v1" || p.starts_with("/v1/") => {
            if !state.authorized(&req) {
                let mut reply = error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong admin token (Authorization: Bearer …)",
                );
                reply.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"credgate-admin\""),
                );
                return reply;
            }
            v1(state, req, &p["/v1".len()..]).await
        }
        _ => not_found(),
    }
}

async fn v1<B>(state: &AdminState, req: Request<B>, rest: &str) -> Reply
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let service = &state.service;
    if let Some(approvals) = rest
        .strip_prefix("/approvals")
        .filter(|r| r.is_empty() || r.starts_with('/'))
    {
        return super::approvals::route(service.as_ref(), req, approvals).await;
    }
    if rest == "/tasks" {
        return match *req.method() {
            Method::GET => {
                let views: Vec<_> = service.list_tasks().iter().map(|t| t.view()).collect();
                json(StatusCode::OK, &views)
            }
            Method::POST => create(state, req).await,
            _ => method_not_allowed("GET, POST"),
        };
    }
    let Some(id) = rest
        .strip_prefix("/tasks/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
    else {
        return not_found();
    };
    match *req.method() {
        Method::GET => match service.get_task(id) {
            Some(task) => json(StatusCode::OK, &task.view()),
            None => task_error(TaskError::NotFound(id.to_owned())),
        },
        Method::DELETE => match service.end_task(id).await {
            Ok(task) => json(StatusCode::OK, &task.view()),
            Err(e) => task_error(e),
        },
        _ => method_not_allowed("GET, DELETE"),
    }
}

async fn create<B>(state: &AdminState, req: Request<B>) -> Reply
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body = match read_body(req).await {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let request: CreateTaskRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}")),
    };
    let task_port = request.task_port.clone();
    let spec = match request.into_spec() {
        Ok(spec) => spec,
        Err(why) => return error(StatusCode::BAD_REQUEST, "invalid_request", why),
    };
    let started = match state.service.start_task(spec) {
        Ok(started) => started,
        Err(e) => return task_error(e),
    };
    let task = &started.task;
    let token = started.token.expose();
    let mut task_port_url = None;
    if let Some(port) = task_port {
        match state.service.open_task_port(task, port.uid).await {
            Ok(addr) => task_port_url = Some(format!("http://{addr}")),
            Err(e) => {
                // All or nothing: no task is left behind without its port.
                let _ = state.service.end_task(&task.id).await;
                return task_error(e);
            }
        }
    }
    let view = task.view();
    let proxy_url = proxy_url_with_userinfo(&state.service.proxy_url(), &task.id, token);
    json(
        StatusCode::CREATED,
        &CreatedTaskBody {
            id: &task.id,
            token,
            expires_at: &view.expires_at,
            proxy_url: &proxy_url,
            task_port_url: task_port_url.as_deref(),
            task: &view,
        },
    )
}

/// Collects at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`].
pub(super) async fn read_body<B>(req: Request<B>) -> Result<Bytes, Reply>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(too_large());
    }
    let collected = tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await;
    match collected {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body could not be read",
        )),
        Ok(Ok(body)) => Ok(body.to_bytes()),
    }
}

fn only_get<B>(req: &Request<B>) -> Option<Reply> {
    match *req.method() {
        Method::GET | Method::HEAD => None,
        _ => Some(method_not_allowed("GET, HEAD")),
    }
}

fn task_error(e: TaskError) -> Reply {
    let (status, code) = match &e {
        TaskError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        TaskError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
        TaskError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    error(status, code, e.to_string())
}

pub(super) fn not_found() -> Reply {
    error(StatusCode::NOT_FOUND, "not_found", "no such resource")
}

pub(super) fn method_not_allowed(allow: &'static str) -> Reply {
    let mut reply = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed: {allow}"),
    );
    reply
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    reply
}

pub(super) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    json(
        status,
        &ErrorBody {
            error: code.to_owned(),
            message: message.into(),
        },
    )
}

pub(super) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Reply {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            reply(status, "application/json", body)
        }
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            &b"{\"error\":\"internal\",\"message\":\"response could not be encoded\"}\n"[..],
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    reply(status, "text/plain; charset=utf-8", body)
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut reply = Response::new(Full::new(body.into()));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The creation response carries a token; no answer of this API belongs in a cache.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}
