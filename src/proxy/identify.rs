//! identify: which task a request belongs to.
//!
//! Runs in the connection layer as soon as a request head is read, before
//! its body: an unauthenticated peer can make credgate buffer nothing.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap};

use super::gateway::Gateway;
use super::pipeline::{Authenticated, ConnContext};
use super::respond::Deny;
use crate::reason::Reason;
use crate::secret::Secret;
use crate::task::{parse_proxy_authorization, AuthError, ProxyCredential, Task};

/// The task a request runs under, and the token it presented (scrubbed from
/// responses; `None` for the ambient task).
pub(crate) struct Identity {
    /// The task.
    pub(crate) task: Arc<Task>,
    /// The task token as presented.
    pub(crate) token: Option<Arc<Secret>>,
}

/// identify: the decision log must be writable (a request or tunnel that
/// could not be recorded must not happen), and the caller must be a live
/// task. Runs for every way in: a request's head (before its body is read),
/// a `CONNECT`, each request inside a tunnel (whose task is the tunnel's).
pub(crate) fn identify(
    gw: &Gateway,
    conn: &ConnContext,
    headers: &HeaderMap,
) -> Result<Identity, Deny> {
    if !gw.audit.healthy() {
        return Err(Deny::new(
            Reason::AuditUnavailable,
            "the decision log cannot be written",
        ));
    }
    find_task(gw, conn, headers).map_err(|e| Deny::new(e.reason(), auth_message(&e)))
}

/// Finds the task: the tunnel's, the one named by `Proxy-Authorization`, the
/// one whose own port the connection came in on, or the ambient task for a
/// loopback client.
fn find_task(gw: &Gateway, conn: &ConnContext, headers: &HeaderMap) -> Result<Identity, AuthError> {
    let now = SystemTime::now();
    if let Some(tunnel) = &conn.tunnel {
        if !tunnel.task.is_active(now) {
            return Err(AuthError::Ended);
        }
        return Ok(Identity {
            task: tunnel.task.clone(),
            token: tunnel.token.clone(),
        });
    }
    let presented = headers.get(header::PROXY_AUTHORIZATION);
    if let Some(value) = presented {
        let mut last = conn
            .authenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(known) = last.as_ref() {
            // The same header as last time on this connection: the same
            // task, whose state is still checked on every request.
            if known.header.ct_eq(value.as_bytes()) {
                if !known.task.is_active(now) {
                    return Err(AuthError::Ended);
                }
                return Ok(Identity {
                    task: known.task.clone(),
                    token: Some(known.token.clone()),
                });
            }
            *last = None;
        }
    }
    let who = authenticate(gw, conn, headers, now)?;
    if let (Some(value), Some(token)) = (presented, &who.token) {
        *conn
            .authenticated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Authenticated {
            header: Secret::new(value.as_bytes()),
            task: who.task.clone(),
            token: token.clone(),
        });
    }
    Ok(who)
}

/// Authenticates a request outside any tunnel (also the CONNECT itself).
fn authenticate(
    gw: &Gateway,
    conn: &ConnContext,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Identity, AuthError> {
    match headers.get(header::PROXY_AUTHORIZATION) {
        Some(value) => {
            let credential = parse_proxy_authorization(value)?;
            let task = gw.tasks.authenticate(&credential, now)?;
            let token = match credential {
                ProxyCredential::Basic { password, .. } => password,
                ProxyCredential::Bearer(token) => token,
            };
            Ok(Identity {
                task,
                token: Some(Arc::new(token)),
            })
        }
        None => {
            // A task's own port is that task; otherwise the ambient task
            // serves only the pod itself.
            let implied = conn
                .port_task
                .clone()
                .or_else(|| gw.tasks.ambient().filter(|_| conn.peer.ip().is_loopback()));
            match implied {
                Some(task) if task.is_active(now) => Ok(Identity { task, token: None }),
                Some(_) => Err(AuthError::Ended),
                None => Err(AuthError::Missing),
            }
        }
    }
}

/// Words for a 407.
fn auth_message(e: &AuthError) -> String {
    match e {
        AuthError::Missing => {
            "no task token: send Proxy-Authorization (use the proxy URL from `credgate task start`)"
                .into()
        }
        AuthError::Ended => "the task has ended; start a new task".into(),
        _ => "the task token is not valid".into(),
    }
}
