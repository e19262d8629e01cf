//! The small, stable vocabulary of outcomes.
//!
//! Every deny and every failure maps to one [`Reason`]. The same value is the
//! HTTP status the agent sees, the `reason` field of the decision record and
//! (later) the metric label, so a reviewer can go from any of them to the
//! others without guessing.

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// Why a request ended the way it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// A rule allowed the request and it was forwarded.
    Allowed,
    /// No `Proxy-Authorization` and no ambient task.
    TaskTokenMissing,
    /// The presented task token matches no task.
    TaskTokenInvalid,
    /// The task existed but has ended or expired.
    TaskEnded,
    /// Conflicting or ambiguous message framing (CL+TE, duplicate CL, obs-fold, bad chunking).
    FramingAmbiguous,
    /// A request that is not valid HTTP or not acceptable to a proxy.
    BadRequest,
    /// The path could not be normalised safely (encoded `/`, `\`, NUL, escaping `..`).
    PathRejected,
    /// Absolute URI, `Host`, SNI and CONNECT target disagree.
    HostMismatch,
    /// A request inside an intercepted tunnel named another origin.
    MisdirectedRequest,
    /// The agent tried to send something that looks like a secret.
    SecretInRequest,
    /// A body larger than the configured bound that must be inspected.
    BodyTooLarge,
    /// A request body whose declared framing (aws-chunked) is broken.
    PayloadMalformed,
    /// A checksum the agent declared does not match the payload.
    PayloadChecksumMismatch,
    /// A body framing, coding or integrity header credgate cannot carry faithfully.
    PayloadUnsupported,
    /// No rule of the task's scopes matches.
    NoMatchingRule,
    /// An explicit `deny` rule matched.
    DeniedByRule,
    /// A method that credgate never forwards (`TRACE`, `CONNECT` inside a tunnel).
    MethodRefused,
    /// The task names a scope the current configuration does not have.
    ScopeUnknown,
    /// The rule needs a person's approval, which has not been given (yet):
    /// the answer names the pending approval.
    ApprovalRequired,
    /// An approver denied an identical request of the task.
    ApprovalDenied,
    /// The destination resolved to a loopback, private, link-local or metadata address.
    DestinationRefused,
    /// A credential would have been sent over cleartext to a non-loopback upstream.
    CleartextInjectionRefused,
    /// Bytes after CONNECT that are not a TLS handshake, and no `tunnel` rule.
    TunnelRefused,
    /// The credential source failed; nothing was forwarded.
    CredentialUnavailable,
    /// The upstream could not be reached.
    UpstreamConnectFailed,
    /// The upstream's TLS certificate did not verify.
    UpstreamTlsFailed,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream broke the exchange.
    UpstreamError,
    /// The response could not be scanned for credentials: a content coding
    /// credgate cannot decode, or a compressed body that is corrupt or truncated.
    ResponseUnscannable,
    /// A compressed response decoded to more than `upstream.max_decoded_body`,
    /// or by more than `upstream.max_decode_ratio` (a decompression bomb).
    ResponseTooLarge,
    /// The decision log cannot be written; requests fail closed.
    AuditUnavailable,
    /// The agent went away before the exchange finished.
    ClientDisconnected,
    /// The agent's TLS in a tunnel failed: it refused credgate's
    /// certificate during the handshake (an alert) or right after it (it
    /// closed before any request), usually because it does not trust the
    /// credgate CA.
    AgentTlsFailed,
    /// A bug or resource failure inside credgate.
    Internal,
}

impl Reason {
    /// The status code the agent receives for this reason.
    pub fn status(self) -> StatusCode {
        match self {
            Reason::Allowed => StatusCode::OK,
            Reason::TaskTokenMissing | Reason::TaskTokenInvalid | Reason::TaskEnded => {
                StatusCode::PROXY_AUTHENTICATION_REQUIRED
            }
            Reason::FramingAmbiguous
            | Reason::BadRequest
            | Reason::PathRejected
            | Reason::HostMismatch
            | Reason::TunnelRefused
            | Reason::PayloadMalformed
            | Reason::PayloadChecksumMismatch
            | Reason::PayloadUnsupported => StatusCode::BAD_REQUEST,
            Reason::MisdirectedRequest => StatusCode::MISDIRECTED_REQUEST,
            Reason::SecretInRequest
            | Reason::NoMatchingRule
            | Reason::DeniedByRule
            | Reason::ScopeUnknown
            | Reason::DestinationRefused
            | Reason::ApprovalRequired
            | Reason::ApprovalDenied
            | Reason::CleartextInjectionRefused => StatusCode::FORBIDDEN,
            Reason::MethodRefused => StatusCode::METHOD_NOT_ALLOWED,
            Reason::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Reason::CredentialUnavailable | Reason::AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Reason::UpstreamConnectFailed
            | Reason::UpstreamTlsFailed
            | Reason::UpstreamError
            | Reason::ResponseUnscannable
            | Reason::ResponseTooLarge => StatusCode::BAD_GATEWAY,
            Reason::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            // Nobody is left to read it; the record carries the reason.
            Reason::ClientDisconnected | Reason::AgentTlsFailed => StatusCode::BAD_REQUEST,
            Reason::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable snake_case name used in records, bodies and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::TaskTokenMissing => "task_token_missing",
            Reason::TaskTokenInvalid => "task_token_invalid",
            Reason::TaskEnded => "task_ended",
            Reason::FramingAmbiguous => "framing_ambiguous",
            Reason::BadRequest => "bad_request",
            Reason::PathRejected => "path_rejected",
            Reason::HostMismatch => "host_mismatch",
            Reason::MisdirectedRequest => "misdirected_request",
            Reason::SecretInRequest => "secret_in_request",
            Reason::BodyTooLarge => "body_too_large",
            Reason::PayloadMalformed => "payload_malformed",
            Reason::PayloadChecksumMismatch => "payload_checksum_mismatch",
            Reason::PayloadUnsupported => "payload_unsupported",
            Reason::NoMatchingRule => "no_matching_rule",
            Reason::DeniedByRule => "denied_by_rule",
            Reason::MethodRefused => "method_refused",
            Reason::ScopeUnknown => "scope_unknown",
            Reason::ApprovalRequired => "approval_required",
            Reason::ApprovalDenied => "approval_denied",
            Reason::DestinationRefused => "destination_refused",
            Reason::CleartextInjectionRefused => "cleartext_injection_refused",
            Reason::TunnelRefused => "tunnel_refused",
            Reason::CredentialUnavailable => "credential_unavailable",
            Reason::UpstreamConnectFailed => "upstream_connect_failed",
            Reason::UpstreamTlsFailed => "upstream_tls_failed",
            Reason::UpstreamTimeout => "upstream_timeout",
            Reason::UpstreamError => "upstream_error",
            Reason::ResponseUnscannable => "response_unscannable",
            Reason::ResponseTooLarge => "response_too_large",
            Reason::AuditUnavailable => "audit_unavailable",
            Reason::ClientDisconnected => "client_disconnected",
            Reason::AgentTlsFailed => "agent_tls_failed",
            Reason::Internal => "internal",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_name_matches_as_str() {
        for r in [
            Reason::Allowed,
            Reason::SecretInRequest,
            Reason::UpstreamTlsFailed,
            Reason::ResponseTooLarge,
            Reason::AgentTlsFailed,
        ] {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
    }

    #[test]
    fn auth_failures_are_407() {
        assert_eq!(Reason::TaskEnded.status().as_u16(), 407);
        assert_eq!(Reason::TaskTokenInvalid.status().as_u16(), 407);
    }
}
