//! Scope rules: what a task may do, decided before anything leaves credgate.
//!
//! Configuration is compiled once per load ([`ScopeRule::compile`] for each
//! rule, then [`Policy::new`]); each request is then decided against the
//! task's scopes with [`Policy::decide`], and each `CONNECT` with
//! [`Policy::connect_decision`]. Default is deny, and a matching deny rule
//! beats every allow rule across all of the task's scopes.
//!
//! Rules only ever see canonical hosts and paths ([`normalize_host`],
//! [`normalize_request_path`]); the path an allow rule approved is exactly
//! the path that is forwarded, so allow rules match it exactly. Deny rules
//! match it loosely, ignoring empty segments (`//`), a trailing `/`,
//! `;params` and ASCII case, so that no spelling an upstream reads as a
//! denied path gets past them. An encoded `/` (`%2F`) is a character inside
//! its segment to both, and passes only an allow rule that keeps it
//! (`encoded_slash: keep`). Nothing here does I/O.

mod connect;
mod decide;
#[cfg(test)]
mod encoded_slash_tests;
mod glob;
mod host;
mod path;
mod rule;
mod target;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod websocket_tests;

use std::fmt;

use serde::Deserialize;

pub use decide::{Decision, Policy, Verdict};
pub use host::{normalize_host, HostPattern};
pub use path::{normalize_path, normalize_request_path, RequestPath};
pub use rule::ScopeRule;
pub use target::{RequestTarget, TargetError};

/// One rule as written in the `scopes` section of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// `api.github.com`, `*.example.com` (subdomains only) or an IP literal.
    pub host: String,
    /// Defaults to the default port of the request's scheme.
    #[serde(default)]
    pub port: Option<u16>,
    /// `http` and/or `https`; defaults to `[https]`.
    #[serde(default)]
    pub schemes: Option<Vec<String>>,
    /// Defaults to any method (`TRACE` and `CONNECT` are never matched).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Path globs; defaults to `["/**"]`. Matched exactly by an allow rule,
    /// loosely by a deny rule (see [`ScopeRule::matches`]).
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub action: Option<String>,
    /// Name of the credential to inject when this rule allows.
    #[serde(default)]
    pub credential: Option<String>,
    /// `CONNECT` to this host is tunnelled blindly.
    #[serde(default)]
    pub tunnel: bool,
    /// The host may resolve to loopback, private or link-local addresses.
    #[serde(default)]
    pub allow_private: bool,
    /// Plain-http requests are forwarded to the upstream over TLS.
    #[serde(default)]
    pub upstream_tls: bool,
    /// `block` (default) or `strip` a secret found in the agent's request.
    #[serde(default)]
    pub on_secret: Option<String>,
    /// `auto` (default: the upstream's TLS ALPN decides), `http1` or `http2`.
    #[serde(default)]
    pub upstream_http: Option<String>,
    /// The longest a response body may pause under this rule (a duration
    /// such as `30m`); `upstream.idle_timeout` when absent.
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// The rule also allows WebSocket upgrades of the `GET`s it allows. An
    /// upgrade is allowed only by such a rule.
    #[serde(default)]
    pub websocket: bool,
    /// `refuse` (default) or `keep`: whether the rule allows request paths
    /// holding an encoded `/` (`%2F`), forwarded as sent.
    #[serde(default)]
    pub encoded_slash: Option<String>,
    /// How to narrow the rule's credential for the requests it allows; its
    /// shape belongs to the credential's source, which validates it.
    #[serde(default)]
    pub narrowing: Option<serde_yaml::Value>,
    /// `required`, or `{approvers, hold, grant}`: a request this rule
    /// allows goes only once a person has approved it.
    #[serde(default)]
    pub approval: Option<serde_yaml::Value>,
}

/// The scheme a request uses towards the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Cleartext HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL of this scheme means when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// Parses a scheme name, case-insensitively (RFC 3986); `None` for any
    /// scheme credgate does not proxy.
    pub fn parse(name: &str) -> Option<Scheme> {
        if name.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else if name.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else {
            None
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The request may proceed (unless a deny rule also matches).
    Allow,
    /// The request is refused, whatever else matches.
    Deny,
}

/// What to do when the agent's request carries something secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretAction {
    /// Refuse the request.
    Block,
    /// Remove the secret and go on.
    Strip,
}

/// Which HTTP version a rule's requests use towards the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamHttp {
    /// HTTP/2 when the upstream's TLS ALPN picks `h2`, else HTTP/1.1.
    #[default]
    Auto,
    /// Only HTTP/1.1 is offered.
    Http1,
    /// Only `h2` is offered; an upstream that refuses it is an error.
    Http2,
}

/// Whether a rule allows a path holding an encoded `/` (`%2F` or `%2f`).
///
/// Upstreams disagree on whether `%2F` separates segments, so by default a
/// path holding one is refused. Some APIs need it inside a segment (npm's
/// scoped packages, `/@acme%2fleftpad`): a rule for such an upstream keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncodedSlash {
    /// A path holding `%2F` is refused (`path_rejected`).
    #[default]
    Refuse,
    /// `%2F` is forwarded exactly as sent, and matched as a character inside
    /// its segment, never as a separator.
    Keep,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_names_and_ports() {
        assert_eq!(Scheme::parse("HTTPS"), Some(Scheme::Https));
        assert_eq!(Scheme::parse("http"), Some(Scheme::Http));
        assert_eq!(Scheme::parse("ftp"), None);
        assert_eq!(Scheme::Https.default_port(), 443);
        assert_eq!(Scheme::Http.to_string(), "http");
    }

    #[test]
    fn raw_rule_reads_yaml_and_refuses_unknown_fields() {
        let yaml =
            "host: api.github.com\nmethods: [GET]\npaths: [\"/repos/**\"]\ncredential: github\n";
        let raw: RawRule = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(raw.host, "api.github.com");
        assert_eq!(raw.methods.as_deref(), Some(&["GET".to_string()][..]));
        assert!(!raw.tunnel);
        assert_eq!(raw.port, None);
        let err = serde_yaml::from_str::<RawRule>("host: a.example\nmethod: [GET]\n");
        assert!(err.is_err());
    }
}
