//! What the agent gets when credgate says no: a JSON body naming the stable
//! reason, a message a person can act on, and the record id.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;
use crate::audit::RecordGuard;
use crate::reason::Reason;

/// Set on a response after which the connection must close: after a
/// disagreement about where a request goes, nothing later on that
/// connection can be trusted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CloseConnection;

/// A denial: the reason, and words a person can act on.
#[derive(Debug)]
pub struct Deny {
    reason: Reason,
    message: String,
    /// The approval the agent's user is to give, or gave a denial in.
    approval: Option<String>,
}

impl Deny {
    /// A denial for `reason`, explained by `message` (never a secret).
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Deny {
            reason,
            message: message.into(),
            approval: None,
        }
    }

    /// The denial names the approval `id`: in the body and in a
    /// `Credgate-Approval` header, so the agent can tell its user what to
    /// approve.
    pub(crate) fn with_approval(mut self, id: &str) -> Self {
        self.approval = Some(id.to_owned());
        self
    }

    /// The stable reason of the denial.
    pub(crate) fn reason(&self) -> Reason {
        self.reason
    }

    /// The reason and the message, for a refusal that has no HTTP response
    /// to carry them (a captured connection closed before it speaks HTTP).
    pub(crate) fn into_parts(self) -> (Reason, String) {
        (self.reason, self.message)
    }
}

/// Response headers that describe the upstream hop, not the message.
const RESPONSE_HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers of a response, and every header its
/// `Connection` header names.
pub(crate) fn strip_response_hop_by_hop(headers: &mut HeaderMap) {
    // Which hop-by-hop names are present, found in one pass without a copy.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = RESPONSE_HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // Usually `Connection` lists only hop-by-hop names (`keep-alive`), which
    // go anyway; any other name it lists goes too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|option| {
            !RESPONSE_HOP_BY_HOP
                .iter()
                .any(|hop| option.eq_ignore_ascii_case(hop.as_str().as_bytes()))
        })
        .filter_map(|option| HeaderName::from_bytes(option).ok())
        .collect();
    for (i, hop) in RESPONSE_HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(hop);
        }
    }
    for name in named {
        headers.remove(&name);
    }
}

/// Finishes the record as a denial and builds the response the agent sees.
pub(crate) fn deny(rec: RecordGuard, d: Deny) -> Response<ProxyBody> {
    deny_held(rec, d).0
}

/// Like [`deny`], but hands the record back instead of emitting it.
pub(crate) fn deny_held(mut rec: RecordGuard, d: Deny) -> (Response<ProxyBody>, RecordGuard) {
    rec.deny(d.reason, d.message.clone());
    let id = rec.id();
    let response = error_response(d.reason, &d.message, &id, d.approval.as_deref());
    (response, rec)
}

/// A JSON error body naming the reason, the message, the record id and,
/// for an approval refusal, the approval (also in `Credgate-Approval`).
pub(crate) fn error_response(
    reason: Reason,
    message: &str,
    record_id: &str,
    approval: Option<&str>,
) -> Response<ProxyBody> {
    let mut body = serde_json::json!({
        "error": reason.as_str(),
        "message": message,
        "record": record_id,
    });
    if let Some(approval) = approval {
        body["approval"] = approval.into();
    }
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
    if let Some(value) = approval.and_then(|a| HeaderValue::from_str(a).ok()) {
        headers.insert("credgate-approval", value);
    }
    if reason.status() == StatusCode::PROXY_AUTHENTICATION_REQUIRED {
        headers.insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"credgate\""),
        );
    }
    response
}

#[cfg(test)]
mod hop_tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_response_headers_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Upstream-Hop, Upgrade"),
            ("keep-alive", "timeout=5"),
            ("x-upstream-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("trailer", "x-t"),
            ("upgrade", "h2c"),
            ("proxy-authenticate", "Basic"),
            ("content-type", "text/plain"),
            ("x-kept", "2"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_response_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn a_response_without_hop_by_hop_headers_is_left_alone() {
        let mut headers = HeaderMap::new();
        headers.append("content-type", HeaderValue::from_static("text/plain"));
        headers.append("x-upstream-hop", HeaderValue::from_static("1"));
        strip_response_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 2);
    }
}
