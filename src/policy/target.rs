//! What the pipeline asks the policy about, and why a target can be refused
//! before any rule is consulted.

use std::fmt::Write as _;

use super::Scheme;
use crate::reason::Reason;

/// One request as the policy sees it.
///
/// `host` must come from [`super::normalize_host`] and `path` and
/// `encoded_slash` from [`super::normalize_request_path`]; `port` is explicit
/// even when it is the scheme's default, so a rule never has to guess it.
#[derive(Debug, Clone, Copy)]
pub struct RequestTarget<'a> {
    /// The request method, compared case-insensitively by rules.
    pub method: &'a http::Method,
    /// The scheme the agent asked for (`https` inside an intercepted tunnel).
    pub scheme: Scheme,
    /// The normalised host: lowercase A-labels, or a canonical IP literal.
    pub host: &'a str,
    /// The destination port.
    pub port: u16,
    /// The normalised path, without query or fragment.
    pub path: &'a str,
    /// The path holds an encoded `/` (`%2F`), kept as sent: only an allow
    /// rule with `encoded_slash: keep` allows it.
    pub encoded_slash: bool,
    /// The request asks to switch to WebSocket: only a rule with
    /// `websocket: true` allows it.
    pub websocket: bool,
}

/// Why a host or path cannot be normalised safely.
///
/// Messages describe the problem without repeating the input: a path may
/// carry something secret the agent should not have sent.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetError {
    /// Nothing left once a trailing dot is removed.
    #[error("the host is empty")]
    EmptyHost,
    /// Longer than DNS allows (253 characters, 63 per label).
    #[error("the host is longer than 253 characters or has a label longer than 63")]
    HostTooLong,
    /// A character outside letters, digits, hyphen and dot.
    #[error("the host contains a character other than letters, digits, hyphens and dots")]
    InvalidHostChar,
    /// `a..b`, a leading dot or more than one trailing dot.
    #[error("the host has an empty label")]
    EmptyLabel,
    /// Unicode that IDNA (UTS #46) refuses, or a malformed `xn--` label.
    #[error("the host is not a valid internationalised domain name")]
    InvalidIdn,
    /// Brackets or colons that do not form an IPv6 address.
    #[error("the host is not a valid IP literal")]
    InvalidIpLiteral,
    /// A numeric last label (`127.1`, `0x7f.1`, `2130706433`) that resolvers
    /// would read as an IPv4 address but that is not a plain dotted quad.
    #[error("the host looks like an IPv4 address but is not a plain dotted quad")]
    AmbiguousNumericHost,
    /// The path is empty or does not start with `/`.
    #[error("the path does not start with \"/\"")]
    PathNotAbsolute,
    /// `%2F`: upstreams disagree on whether it separates segments.
    #[error("the path contains an encoded \"/\" (%2F)")]
    EncodedSlash,
    /// `\` or `%5C`: some upstreams treat it as a separator.
    #[error("the path contains a backslash")]
    Backslash,
    /// A raw or encoded NUL byte.
    #[error("the path contains a NUL byte")]
    Nul,
    /// A raw or encoded control character other than NUL.
    #[error("the path contains a control character")]
    ControlChar,
    /// `%` not followed by two hex digits.
    #[error("the path contains an invalid percent-escape")]
    InvalidEscape,
    /// `?` or `#`: the caller must pass the path alone.
    #[error("the path contains \"?\" or \"#\"; only the path may be given")]
    QueryOrFragment,
    /// A `..` segment that would climb above `/`.
    #[error("a \"..\" segment climbs above the root")]
    EscapesRoot,
    /// `..;x` or `.;x`: servlet containers resolve these as dot segments.
    #[error("a dot segment carries parameters (\"..;\")")]
    DotSegmentParams,
    /// `..%2F` or `%2F.`: a dot segment to every upstream that decodes `%2F`.
    #[error("a \".\" or \"..\" stands next to an encoded \"/\" (%2F)")]
    DotBesideEncodedSlash,
}

impl TargetError {
    /// The reason a refused request is recorded under: host problems are a
    /// malformed request, path problems are a deliberate refusal.
    pub fn reason(&self) -> Reason {
        match self {
            TargetError::EmptyHost
            | TargetError::HostTooLong
            | TargetError::InvalidHostChar
            | TargetError::EmptyLabel
            | TargetError::InvalidIdn
            | TargetError::InvalidIpLiteral
            | TargetError::AmbiguousNumericHost => Reason::BadRequest,
            TargetError::PathNotAbsolute
            | TargetError::EncodedSlash
            | TargetError::Backslash
            | TargetError::Nul
            | TargetError::ControlChar
            | TargetError::InvalidEscape
            | TargetError::QueryOrFragment
            | TargetError::EscapesRoot
            | TargetError::DotSegmentParams
            | TargetError::DotBesideEncodedSlash => Reason::PathRejected,
        }
    }
}

/// Longest path shown in a decision message; the record keeps the rest.
const MAX_SHOWN_PATH: usize = 200;

/// Writes `scheme://host[:port]path` for messages: IPv6 in brackets, the
/// default port left out, and never anything from a query or fragment.
pub(crate) fn write_url(out: &mut String, scheme: Scheme, host: &str, port: u16, path: &str) {
    out.push_str(scheme.as_str());
    out.push_str("://");
    write_host(out, host);
    if port != scheme.default_port() {
        let _ = write!(out, ":{port}");
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    if path.len() > MAX_SHOWN_PATH {
        let mut end = MAX_SHOWN_PATH;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        out.push_str(&path[..end]);
        out.push('…');
    } else {
        out.push_str(path);
    }
}

/// Writes a host as it appears in a URL authority: IPv6 in brackets.
pub(crate) fn write_host(out: &mut String, host: &str) {
    if host.contains(':') {
        out.push('[');
        out.push_str(host);
        out.push(']');
    } else {
        out.push_str(host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_errors_are_bad_requests_and_path_errors_are_rejections() {
        assert_eq!(TargetError::InvalidHostChar.reason(), Reason::BadRequest);
        assert_eq!(
            TargetError::AmbiguousNumericHost.reason(),
            Reason::BadRequest
        );
        assert_eq!(TargetError::EncodedSlash.reason(), Reason::PathRejected);
        assert_eq!(TargetError::EscapesRoot.reason(), Reason::PathRejected);
    }

    #[test]
    fn urls_drop_default_port_query_and_bracket_ipv6() {
        let mut s = String::new();
        write_url(
            &mut s,
            Scheme::Https,
            "api.example.com",
            443,
            "/a?token=x#f",
        );
        assert_eq!(s, "https://api.example.com/a");
        s.clear();
        write_url(&mut s, Scheme::Http, "::1", 8080, "/");
        assert_eq!(s, "http://[::1]:8080/");
    }

    #[test]
    fn long_paths_are_cut_on_a_char_boundary() {
        let path = format!("/{}", "é".repeat(300));
        let mut s = String::new();
        write_url(&mut s, Scheme::Https, "h.example", 443, &path);
        assert!(s.ends_with('…'));
        assert!(s.len() < 240);
    }
}
