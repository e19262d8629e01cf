//! identify: which task a request belongs to.
//!
//! Runs in the connection layer as soon as a request head is read, before
//! its body: an unauthenticated peer can make credgate buffer nothing.
//!
//! A 407 to a request without any `Proxy-Authorization` is often no
//! refusal but a question: libcurl (git's default `http.proxyAuthMethod`
//! is `anyauth`, `curl --proxy-anyauth`) and Java ask first and send
//! credentials only once the proxy has named its scheme. When the
//! connection stays open, the record of that 407 waits on it
//! ([`refused`]); the next request's identify decides it: a `challenge`
//! when that one authenticated, otherwise the deny it was.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderMap};
use http::Response;

use super::body::ProxyBody;
use super::gateway::Gateway;
use super::pipeline::{Authenticated, ConnContext};
use super::respond::{deny_held, Deny};
use crate::audit::RecordGuard;
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
/// A challenge held for the connection is decided here (see [`refused`]).
pub(crate) fn identify(
    gw: &Gateway,
    conn: &ConnContext,
    headers: &HeaderMap,
) -> Result<Identity, Deny> {
    let found = if gw.audit.healthy() {
        find_task(gw, conn, headers).map_err(|e| Deny::new(e.reason(), auth_message(&e)))
    } else {
        Err(Deny::new(
            Reason::AuditUnavailable,
            "the decision log cannot be written",
        ))
    };
    if let Some(mut held) = conn.take_challenge() {
        // The request after a 407 tells what the 407 was: a question the
        // client answered with credentials, or a refusal. Either way its
        // record goes now, before this request's own.
        if let Ok(who) = &found {
            held.challenged();
            held.task(&who.task.id, &who.task.agent, &who.task.labels);
        }
    }
    found
}

/// The answer to a request that identify refused with `d`, whose record is
/// `rec`. The record is emitted as the deny it is, unless the request had
/// no `Proxy-Authorization` at all and the connection `stays_open`: that
/// 407 is a challenge the client may answer with credentials, so its record
/// is held on the connection until the next request decides it (in
/// [`identify`]), or the connection ends (a deny). Returns whether the
/// record is held. A token that is invalid or whose task ended is refused
/// at once: no retry can make it a question.
pub(crate) fn refused(
    conn: &ConnContext,
    rec: RecordGuard,
    d: Deny,
    stays_open: bool,
) -> (Response<ProxyBody>, bool) {
    let challenge = stays_open && d.reason() == Reason::TaskTokenMissing;
    let (response, mut rec) = deny_held(rec, d);
    if challenge {
        rec.stop_clock();
        let mut slot = conn
            .challenge
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(rec);
    }
    (response, challenge)
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
