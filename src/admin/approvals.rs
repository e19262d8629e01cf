//! `/v1/approvals`: what waits for a person, and their answers.
//!
//! Served on the admin listener only, behind the admin token: a task token
//! is never an admin token, so an agent cannot approve its own request,
//! whichever tasks' tokens it holds.

use std::time::SystemTime;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::Body;
use serde::{Deserialize, Serialize};

use crate::approval::{AnswerError, Approval, Grant, State};
use crate::task::TaskService;

use super::routes::{error, json, method_not_allowed, not_found, read_body, Reply};

/// One approval as the API shows it: nothing in it is a credential or a
/// task token.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApprovalView {
    pub id: String,
    pub state: String,
    pub task: String,
    pub agent: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub purpose: Option<String>,
    pub rule: String,
    pub method: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    /// The request's headers after credgate's sanitizing.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub body_size: Option<u64>,
    /// How many approvers it needs, and who approved so far.
    pub approvers_needed: u8,
    #[serde(default)]
    pub approvals: Vec<AnswerView>,
    #[serde(default)]
    pub denial: Option<AnswerView>,
    /// The widest grant the rule allows, and the grant given.
    pub grant_allowed: String,
    #[serde(default)]
    pub grant: Option<String>,
    #[serde(default)]
    pub grant_until: Option<String>,
    pub first_asked: String,
    pub last_asked: String,
    pub asks: u32,
    #[serde(default)]
    pub decided_at: Option<String>,
}

/// One approver's answer.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AnswerView {
    pub approver: String,
    #[serde(default)]
    pub reason: Option<String>,
    pub at: String,
}

impl ApprovalView {
    fn of(a: &Approval) -> ApprovalView {
        let wall = |t: tokio::time::Instant| {
            let ago = tokio::time::Instant::now().saturating_duration_since(t);
            crate::audit::format_timestamp(SystemTime::now() - ago)
        };
        let answer = |a: &crate::approval::Answer| AnswerView {
            approver: a.approver.clone(),
            reason: a.reason.clone(),
            at: wall(a.at),
        };
        ApprovalView {
            id: a.id.clone(),
            state: a.state.as_str().to_owned(),
            task: a.asked.task.to_string(),
            agent: a.context.agent.clone(),
            labels: a.context.labels.iter().cloned().collect(),
            purpose: a.context.purpose.clone(),
            rule: a.asked.rule.to_string(),
            method: a.asked.method.clone(),
            host: a.context.host.clone(),
            port: a.context.port,
            path: a.asked.path.clone(),
            headers: a.context.headers.clone(),
            body_size: a.context.body_size,
            approvers_needed: a.spec.approvers,
            approvals: a.approvals.iter().map(answer).collect(),
            denial: a.denial.as_ref().map(answer),
            grant_allowed: a.spec.grant.to_string(),
            grant: a.grant.map(|g| g.to_string()),
            grant_until: a.grant_until().map(wall_future),
            first_asked: wall(a.first_asked),
            last_asked: wall(a.last_asked),
            asks: a.asks,
            decided_at: a.decided_at.map(wall),
        }
    }
}

/// `t`, which may lie ahead, as wall-clock time.
fn wall_future(t: tokio::time::Instant) -> String {
    let now = tokio::time::Instant::now();
    let wall = if t >= now {
        SystemTime::now() + (t - now)
    } else {
        SystemTime::now() - (now - t)
    };
    crate::audit::format_timestamp(wall)
}

/// `POST /v1/approvals/{id}/approve`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    pub approver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Narrower than the rule's: `request`, a duration, or `task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
}

/// `POST /v1/approvals/{id}/deny`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRequest {
    pub approver: String,
    pub reason: String,
}

/// Answers `/v1/approvals…`; `rest` is what follows `/v1/approvals`.
pub(super) async fn route<B>(service: &dyn TaskService, req: Request<B>, rest: &str) -> Reply
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let approvals = service.approvals();
    let now = tokio::time::Instant::now();
    service.record_approvals(approvals.expire(now));
    if rest.is_empty() {
        if req.method() != Method::GET {
            return method_not_allowed("GET");
        }
        let mut state = None;
        let mut task = None;
        for (key, value) in form_pairs(req.uri().query().unwrap_or("")) {
            match key.as_str() {
                "state" => match State::parse(&value) {
                    Some(s) => state = Some(s),
                    None => {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            format!("state {value:?}: use pending, granted, denied or expired"),
                        )
                    }
                },
                "task" => task = Some(value),
                other => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("unknown query parameter {other:?}: use state and task"),
                    )
                }
            }
        }
        let list: Vec<ApprovalView> = approvals
            .list(state, task.as_deref())
            .iter()
            .map(ApprovalView::of)
            .collect();
        return json(StatusCode::OK, &list);
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return not_found();
    };
    let (id, action) = match rest.split_once('/') {
        Some((id, action)) => (id, Some(action)),
        None => (rest, None),
    };
    if id.is_empty() {
        return not_found();
    }
    match (action, req.method().clone()) {
        (None, Method::GET) => match approvals.get(id) {
            Some(a) => json(StatusCode::OK, &ApprovalView::of(&a)),
            None => answer_error(&AnswerError::NotFound(id.to_owned())),
        },
        (None, _) => method_not_allowed("GET"),
        (Some("approve" | "deny"), m) if m != Method::POST => method_not_allowed("POST"),
        (Some("approve"), _) => {
            let body: ApproveRequest = match body_of(req).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let grant = match body.grant.as_deref().map(Grant::parse).transpose() {
                Ok(grant) => grant,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("grant: {e}"),
                    )
                }
            };
            let answered =
                approvals.approve(id, &body.approver, body.reason.as_deref(), grant, now);
            answered_reply(service, id, answered)
        }
        (Some("deny"), _) => {
            let body: DenyRequest = match body_of(req).await {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let answered = approvals.deny(id, &body.approver, &body.reason, now);
            answered_reply(service, id, answered)
        }
        (Some(_), _) => not_found(),
    }
}

fn answered_reply(
    service: &dyn TaskService,
    id: &str,
    answered: Result<crate::approval::Change, AnswerError>,
) -> Reply {
    match answered {
        Ok(change) => {
            service.record_approvals(vec![change]);
            match service.approvals().get(id) {
                Some(a) => json(StatusCode::OK, &ApprovalView::of(&a)),
                None => answer_error(&AnswerError::NotFound(id.to_owned())),
            }
        }
        Err(e) => answer_error(&e),
    }
}

async fn body_of<T, B>(req: Request<B>) -> Result<T, Reply>
where
    T: serde::de::DeserializeOwned,
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body = read_body(req).await?;
    serde_json::from_slice(&body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}")))
}

fn answer_error(e: &AnswerError) -> Reply {
    let (status, code) = match e {
        AnswerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        AnswerError::Decided { .. } => (StatusCode::CONFLICT, "already_decided"),
        AnswerError::NoApprover
        | AnswerError::NoReason
        | AnswerError::SameApprover { .. }
        | AnswerError::WiderGrant { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
    };
    error(status, code, e.to_string())
}

/// `a=1&b=x%20y` as decoded pairs.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}
