//! What the agent gets when credgate says no: a JSON body naming the stable
//! reason, a message a person can act on, and the record id.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::audit::{RecordGuard, Verdict as RecordVerdict};
use crate::reason::Reason;

/// Set on a response after which the connection must close: after a
/// disagreement about where a request goes, nothing later on that
/// connection can be trusted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CloseConnection;

/// A denial: the reason, and words a person can act on.
pub(crate) struct Deny {
    reason: Reason,
    message: String,
}

impl Deny {
    /// A denial for `reason`, explained by `message` (never a secret).
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Deny {
            reason,
            message: message.into(),
        }
    }
}

/// Response headers that describe the upstream hop, not the message.
pub(crate) fn strip_response_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// Finishes the record as a denial and builds the response the agent sees.
pub(crate) fn deny(mut rec: RecordGuard, d: Deny) -> Response<ProxyBody> {
    let id = {
        let r = rec.record();
        r.decision = Some(RecordVerdict::Deny);
        r.reason = Some(d.reason);
        r.message = Some(d.message.clone());
        r.id.clone()
    };
    error_response(d.reason, &d.message, &id)
}

/// A JSON error body naming the reason, the message and the record id.
pub(crate) fn error_response(
    reason: Reason,
    message: &str,
    record_id: &str,
) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": reason.as_str(),
        "message": message,
        "record": record_id,
    });
    let mut response = Response::new(ProxyBody::full(body.to_string() + "\n"));
    *response.status_mut() = reason.status();
    if matches!(
        reason,
        Reason::FramingAmbiguous
            | Reason::HostMismatch
            | Reason::MisdirectedRequest
            | Reason::BadRequest
            | Reason::TaskEnded
    ) {
        response.extensions_mut().insert(CloseConnection);
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        "x-credgate-reason",
        HeaderValue::from_static(reason.as_str()),
    );
    if reason.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        headers.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"credgate\""),
        );
    }
    response
}
