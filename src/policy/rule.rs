//! One scope rule: compiled from its raw form once per config load, then
//! matched against every request.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use super::glob::{MatchPath, PathGlob, PathMatching};
use super::host::HostPattern;
use super::{Action, EncodedSlash, RawRule, RequestTarget, Scheme, SecretAction, UpstreamHttp};
use crate::approval::{ApprovalSpec, Grant};
use crate::field::FieldError;

/// The longest a rule may hold a request while it waits for an approval.
const MAX_HOLD: Duration = Duration::from_secs(5 * 60);

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct ScopeRule {
    /// `scope[index]`, e.g. `github-read[0]`: how records and messages name it.
    pub id: Arc<str>,
    /// The scope the rule belongs to.
    pub scope: Arc<str>,
    /// Whether a match allows or denies.
    pub action: Action,
    /// The credential to inject when this rule allows a request.
    pub credential: Option<String>,
    /// `CONNECT` to this host is tunnelled blindly: no interception, no
    /// injection. Such a rule never authorises an individual request.
    pub tunnel: bool,
    /// The host may resolve to loopback, private or link-local addresses.
    pub allow_private: bool,
    /// A plain-http request is forwarded to the upstream over TLS.
    pub upstream_tls: bool,
    /// What to do when the agent's request carries a secret.
    pub on_secret: SecretAction,
    /// Which HTTP version the upstream is spoken to in.
    pub upstream_http: UpstreamHttp,
    /// The longest a response body may pause under this rule, when it sets
    /// its own (a long-lived stream that is quiet for long stretches).
    pub idle_timeout: Option<Duration>,
    /// The rule also allows WebSocket upgrades of what it allows (an
    /// upgrade is allowed by no other rule).
    pub websocket: bool,
    /// Whether the rule allows paths holding an encoded `/` (`%2F`).
    pub encoded_slash: EncodedSlash,
    /// The rule's `narrowing:` block, as written; the credential's source
    /// validates it at load and applies it per request.
    pub narrowing: Option<Arc<serde_yaml::Value>>,
    /// A request this rule allows needs a person's approval first.
    pub approval: Option<ApprovalSpec>,
    host: HostPattern,
    port: Option<u16>,
    schemes: Schemes,
    /// `None` means any method except `TRACE` and `CONNECT`.
    methods: Option<Box<[Method]>>,
    /// `false` when the rule did not restrict paths (it then has `/**`).
    paths_given: bool,
    /// Exact for an allow rule, loose for a deny rule (see `glob`).
    paths: Box<[PathGlob]>,
}

/// The schemes a rule accepts, as two flags instead of a list to search.
#[derive(Debug, Clone, Copy, Default)]
struct Schemes {
    http: bool,
    https: bool,
}

impl Schemes {
    fn contains(self, scheme: Scheme) -> bool {
        match scheme {
            Scheme::Http => self.http,
            Scheme::Https => self.https,
        }
    }
}

impl ScopeRule {
    /// Compiles the rule at position `index` of scope `scope`.
    ///
    /// Errors carry field paths relative to the rule (`host`, `methods[0]`,
    /// `paths[1]`); the caller prefixes `scopes.NAME[i]`. Every problem of the
    /// rule is reported, not only the first.
    pub fn compile(scope: &str, index: usize, raw: &RawRule) -> Result<ScopeRule, Vec<FieldError>> {
        let mut errors = Vec::new();
        let host = HostPattern::parse(&raw.host)
            .map_err(|message| errors.push(FieldError::new("host", message)))
            .ok();
        if raw.port == Some(0) {
            errors.push(FieldError::new("port", "0 is not a port a request can use"));
        }
        let schemes = compile_schemes(raw.schemes.as_deref(), &mut errors);
        let methods = raw
            .methods
            .as_deref()
            .map(|list| compile_methods(list, &mut errors));
        // Read before the paths, which a deny rule matches loosely; reported
        // after them, in field order.
        let action = match raw.action.as_deref() {
            None | Some("allow") => Ok(Action::Allow),
            Some("deny") => Ok(Action::Deny),
            Some(other) => Err(FieldError::new(
                "action",
                format!("{other:?} is not an action; use allow or deny"),
            )),
        };
        let matching = match action {
            Ok(Action::Deny) => PathMatching::Loose,
            _ => PathMatching::Exact,
        };
        let paths = compile_paths(raw.paths.as_deref(), matching, &mut errors);
        let action = action.unwrap_or_else(|error| {
            errors.push(error);
            Action::Allow
        });
        let on_secret = match raw.on_secret.as_deref() {
            None | Some("block") => SecretAction::Block,
            Some("strip") => SecretAction::Strip,
            Some(other) => {
                errors.push(FieldError::new(
                    "on_secret",
                    format!("{other:?} is not a secret action; use block or strip"),
                ));
                SecretAction::Block
            }
        };
        let idle_timeout = match raw
            .idle_timeout
            .as_deref()
            .map(crate::units::parse_duration)
        {
            None => None,
            Some(Ok(d)) if d.is_zero() => {
                errors.push(FieldError::new("idle_timeout", "must be longer than zero"));
                None
            }
            Some(Ok(d)) => Some(d),
            Some(Err(message)) => {
                errors.push(FieldError::new("idle_timeout", message));
                None
            }
        };
        let upstream_http = match raw.upstream_http.as_deref() {
            None | Some("auto") => UpstreamHttp::Auto,
            Some("http1") => UpstreamHttp::Http1,
            Some("http2") => UpstreamHttp::Http2,
            Some(other) => {
                errors.push(FieldError::new(
                    "upstream_http",
                    format!("{other:?} is not an upstream HTTP version; use auto, http1 or http2"),
                ));
                UpstreamHttp::Auto
            }
        };
        let encoded_slash = match raw.encoded_slash.as_deref() {
            None | Some("refuse") => EncodedSlash::Refuse,
            Some("keep") => {
                if action == Action::Deny || raw.tunnel {
                    errors.push(FieldError::new(
                        "encoded_slash",
                        "only an allow rule that inspects requests can keep encoded slashes; \
                         remove encoded_slash from a deny or tunnel rule",
                    ));
                }
                EncodedSlash::Keep
            }
            Some(other) => {
                errors.push(FieldError::new(
                    "encoded_slash",
                    format!("{other:?} is not an encoded-slash policy; use refuse or keep"),
                ));
                EncodedSlash::Refuse
            }
        };
        if raw.narrowing.is_some() && raw.credential.is_none() {
            errors.push(FieldError::new(
                "narrowing",
                "narrows a credential, so the rule must name one",
            ));
        }
        if let Some(name) = &raw.credential {
            if name.trim().is_empty() {
                errors.push(FieldError::new("credential", "must name a credential"));
            } else if action == Action::Deny {
                errors.push(FieldError::new(
                    "credential",
                    "a deny rule forwards nothing, so it cannot inject a credential",
                ));
            }
        }
        if idle_timeout.is_some() && (action == Action::Deny || raw.tunnel) {
            errors.push(FieldError::new(
                "idle_timeout",
                "bounds a response credgate forwards, so a deny or tunnel rule cannot set it",
            ));
        }
        let approval = raw
            .approval
            .as_ref()
            .and_then(|value| match compile_approval(value) {
                Ok(spec) => Some(spec),
                Err(error) => {
                    errors.push(error);
                    None
                }
            });
        if approval.is_some() && (action == Action::Deny || raw.tunnel) {
            errors.push(FieldError::new(
                "approval",
                "approves requests credgate forwards, so a deny or tunnel rule cannot ask for it",
            ));
        }
        check_combinations(raw, action, schemes, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let id: Arc<str> = format!("{scope}[{index}]").into();
        Ok(ScopeRule {
            id,
            scope: scope.into(),
            action,
            credential: raw.credential.clone(),
            tunnel: raw.tunnel,
            allow_private: raw.allow_private,
            upstream_tls: raw.upstream_tls,
            on_secret,
            upstream_http,
            idle_timeout,
            websocket: raw.websocket,
            encoded_slash,
            narrowing: raw.narrowing.clone().map(Arc::new),
            approval,
            host: host.expect("no errors means the host compiled"),
            port: raw.port,
            schemes,
            methods,
            paths_given: raw.paths.is_some(),
            paths,
        })
    }

    /// The host pattern, for indexing and for `credgate explain`.
    pub fn host(&self) -> &HostPattern {
        &self.host
    }

    /// `true` when the rule covers every method and every path of its host:
    /// only such a deny rule can refuse a `CONNECT`. A deny rule's paths are
    /// read loosely here too, so `//**` and `/**/` cover every path.
    pub fn is_whole_host(&self) -> bool {
        self.methods.is_none()
            && (!self.paths_given || self.paths.iter().any(PathGlob::is_universal))
    }

    /// `true` when a request to `scheme` on `port` is within the rule. Without
    /// an explicit port, each scheme is only accepted on its default port.
    pub fn accepts_port(&self, scheme: Scheme, port: u16) -> bool {
        self.schemes.contains(scheme) && port == self.port.unwrap_or(scheme.default_port())
    }

    /// Plain words for `credgate check`, e.g. "allow GET, HEAD
    /// https://api.github.com/repos/acme/*/issues/** with credential github".
    pub fn describe(&self) -> String {
        let mut out = String::with_capacity(96);
        if self.tunnel {
            let _ = write!(
                out,
                "tunnel CONNECT {}:{} blindly (no interception, no credential)",
                self.host,
                self.port.unwrap_or(Scheme::Https.default_port())
            );
            self.describe_extras(&mut out);
            return out;
        }
        out.push_str(match self.action {
            Action::Allow => "allow ",
            Action::Deny => "deny ",
        });
        match &self.methods {
            Some(methods) => {
                for (i, method) in methods.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(method.as_str());
                }
            }
            None => out.push_str("any method"),
        }
        out.push(' ');
        out.push_str(match (self.schemes.http, self.schemes.https) {
            (true, true) => "http(s)://",
            (true, false) => "http://",
            _ => "https://",
        });
        let _ = write!(out, "{}", self.host);
        if let Some(port) = self.port {
            let _ = write!(out, ":{port}");
        }
        let count = self.paths.len();
        for (i, glob) in self.paths.iter().enumerate() {
            if i > 0 {
                out.push_str(if i + 1 == count { " and " } else { ", " });
            }
            out.push_str(glob.as_str());
        }
        if let Some(name) = &self.credential {
            let _ = write!(out, " with credential {name}");
        }
        self.describe_extras(&mut out);
        out
    }

    fn describe_extras(&self, out: &mut String) {
        if self.allow_private {
            out.push_str("; may reach private addresses");
        }
        if self.upstream_tls {
            out.push_str("; plain-http requests go upstream over TLS");
        }
        if self.on_secret == SecretAction::Strip {
            out.push_str("; secrets the agent sends are stripped");
        }
        match self.upstream_http {
            UpstreamHttp::Auto => {}
            UpstreamHttp::Http1 => out.push_str("; upstream spoken to in HTTP/1.1 only"),
            UpstreamHttp::Http2 => out.push_str("; upstream spoken to in HTTP/2 only"),
        }
        if let Some(idle) = self.idle_timeout {
            let _ = write!(
                out,
                "; a response may pause {}",
                humantime::format_duration(idle)
            );
        }
        if self.websocket {
            out.push_str("; WebSocket upgrades too");
        }
        if self.encoded_slash == EncodedSlash::Keep {
            out.push_str("; encoded slashes (%2F) kept as sent");
        }
        if let Some(approval) = self.approval {
            let who = match approval.approvers {
                1 => "a person".to_owned(),
                n => format!("{n} different people"),
            };
            let _ = write!(
                out,
                "; only once {who} approved it (grant: {}",
                approval.grant
            );
            if !approval.hold.is_zero() {
                let _ = write!(
                    out,
                    ", held up to {}",
                    humantime::format_duration(approval.hold)
                );
            }
            out.push(')');
        }
    }

    /// `true` when this rule covers the request. A `tunnel` rule never does:
    /// it only answers a `CONNECT` (see [`ScopeRule::matches_connect`]).
    ///
    /// An allow rule's paths match exactly; a deny rule's match loosely,
    /// ignoring empty segments, a trailing `/`, `;params` and ASCII case, so
    /// no spelling an upstream reads as the denied path slips past it.
    pub fn matches(&self, target: &RequestTarget<'_>) -> bool {
        self.matches_prepared(target, &MatchPath::new(target.path))
    }

    /// [`ScopeRule::matches`] with the path already prepared, so a decision
    /// decodes it (and computes its loose form) once for all rules.
    pub(crate) fn matches_prepared(
        &self,
        target: &RequestTarget<'_>,
        path: &MatchPath<'_>,
    ) -> bool {
        !self.tunnel
            && self.host.matches(target.host)
            && self.accepts_port(target.scheme, target.port)
            && self.accepts_method(target.method)
            // A deny rule refuses an upgrade like any request; only an
            // allow rule that says so lets one switch protocols.
            && (!target.websocket || self.websocket || self.action == Action::Deny)
            // Likewise an encoded `/`: a deny rule refuses such a path like
            // any other, and only an allow rule that keeps it lets it pass.
            && (!target.encoded_slash
                || self.encoded_slash == EncodedSlash::Keep
                || self.action == Action::Deny)
            && (self.paths.iter().any(|glob| glob.matches(path))
                || self.action == Action::Deny
                    && target.encoded_slash
                    && self.denies_with_slashes_decoded(target.path))
    }

    /// Whether this rule's paths match `path` with every encoded `/` read as
    /// a separator. An upstream behind a `keep` rule may decode `%2F`, so to
    /// a deny rule `/@acme%2Fsecret` is also `/@acme/secret`: it denies the
    /// path under either reading (a dot segment next to `%2F` was refused
    /// before, so the decoded reading holds none).
    fn denies_with_slashes_decoded(&self, path: &str) -> bool {
        let decoded = path.replace("%2F", "/").replace("%2f", "/");
        let decoded = MatchPath::new(&decoded);
        self.paths.iter().any(|glob| glob.matches(&decoded))
    }

    /// `true` when some `https` request to `host:port` could fall under this
    /// rule, whatever its method and path: what a `CONNECT` is checked against.
    pub fn matches_connect(&self, host: &str, port: u16) -> bool {
        self.host.matches(host) && self.accepts_port(Scheme::Https, port)
    }

    /// Methods compare case-insensitively: some upstreams treat `delete` as
    /// `DELETE`, and a deny rule must not be sidestepped by spelling.
    fn accepts_method(&self, method: &Method) -> bool {
        if is_never_forwarded(method) {
            return false;
        }
        match &self.methods {
            None => true,
            Some(methods) => methods
                .iter()
                .any(|m| m.as_str().eq_ignore_ascii_case(method.as_str())),
        }
    }
}

/// `TRACE` reflects the request (and so any injected credential) back to the
/// agent; `CONNECT` inside a tunnel would open a channel no rule inspects.
pub(crate) fn is_never_forwarded(method: &Method) -> bool {
    let name = method.as_str();
    name.eq_ignore_ascii_case("TRACE") || name.eq_ignore_ascii_case("CONNECT")
}

/// `approval: required`, or `approval: {approvers: 1|2, hold: DURATION,
/// grant: request|DURATION|task}` (each optional: one approver, no hold,
/// the request alone).
fn compile_approval(value: &serde_yaml::Value) -> Result<ApprovalSpec, FieldError> {
    use serde_yaml::Value;
    let bad = |at: &str, message: String| {
        let field = if at.is_empty() {
            "approval".to_owned()
        } else {
            format!("approval.{at}")
        };
        FieldError::new(field, message)
    };
    let map = match value {
        Value::String(word) if word == "required" => return Ok(ApprovalSpec::default()),
        Value::Mapping(map) => map,
        _ => {
            return Err(bad(
                "",
                "use required, or a mapping of approvers, hold and grant".into(),
            ))
        }
    };
    let mut spec = ApprovalSpec::default();
    for (key, value) in map {
        match key.as_str() {
            Some("approvers") => match value.as_u64() {
                Some(n @ (1 | 2)) => spec.approvers = n as u8,
                _ => return Err(bad("approvers", "must be 1 or 2".into())),
            },
            Some("hold") => {
                let hold = value
                    .as_str()
                    .ok_or_else(|| bad("hold", "must be a duration such as 30s".into()))
                    .and_then(|text| {
                        crate::units::parse_duration(text).map_err(|e| bad("hold", e))
                    })?;
                if hold > MAX_HOLD {
                    return Err(bad(
                        "hold",
                        "may be at most 5m: the agent's request waits that long".into(),
                    ));
                }
                spec.hold = hold;
            }
            Some("grant") => {
                spec.grant = value
                    .as_str()
                    .ok_or_else(|| bad("grant", "must be request, task or a duration".into()))
                    .and_then(|text| Grant::parse(text).map_err(|e| bad("grant", e)))?;
            }
            _ => {
                return Err(bad(
                    "",
                    format!(
                        "unknown field {}; use approvers, hold and grant",
                        serde_yaml::to_string(key).unwrap_or_default().trim()
                    ),
                ))
            }
        }
    }
    Ok(spec)
}

fn compile_schemes(list: Option<&[String]>, errors: &mut Vec<FieldError>) -> Schemes {
    let Some(list) = list else {
        return Schemes {
            http: false,
            https: true,
        };
    };
    if list.is_empty() {
        errors.push(FieldError::new(
            "schemes",
            "must list at least one scheme (omit it for https only)",
        ));
    }
    let mut schemes = Schemes::default();
    for (i, name) in list.iter().enumerate() {
        match Scheme::parse(name) {
            Some(Scheme::Http) => schemes.http = true,
            Some(Scheme::Https) => schemes.https = true,
            None => errors.push(FieldError::new(
                format!("schemes[{i}]"),
                format!("{name:?} is not a scheme; use http or https"),
            )),
        }
    }
    schemes
}

fn compile_methods(list: &[String], errors: &mut Vec<FieldError>) -> Box<[Method]> {
    if list.is_empty() {
        errors.push(FieldError::new(
            "methods",
            "must list at least one method (omit it to allow any method)",
        ));
    }
    let mut methods: Vec<Method> = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        let upper = name.trim().to_ascii_uppercase();
        let path = format!("methods[{i}]");
        if upper.is_empty() || !upper.bytes().all(is_tchar) {
            errors.push(FieldError::new(
                path,
                format!("{name:?} is not an HTTP method"),
            ));
            continue;
        }
        let Ok(method) = Method::from_bytes(upper.as_bytes()) else {
            errors.push(FieldError::new(
                path,
                format!("{name:?} is not an HTTP method"),
            ));
            continue;
        };
        if is_never_forwarded(&method) {
            errors.push(FieldError::new(
                path,
                format!("{upper} is never forwarded, so no rule can name it"),
            ));
            continue;
        }
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    methods.into()
}

/// RFC 9110 `tchar`: what a method token may contain.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn compile_paths(
    list: Option<&[String]>,
    matching: PathMatching,
    errors: &mut Vec<FieldError>,
) -> Box<[PathGlob]> {
    let Some(list) = list else {
        let universal = PathGlob::compile("/**", matching).expect("the universal pattern compiles");
        return vec![universal].into();
    };
    if list.is_empty() {
        errors.push(FieldError::new(
            "paths",
            "must list at least one pattern (omit it to allow every path)",
        ));
    }
    let mut globs = Vec::with_capacity(list.len());
    for (i, pattern) in list.iter().enumerate() {
        match PathGlob::compile(pattern, matching) {
            Ok(glob) => globs.push(glob),
            Err(message) => errors.push(FieldError::new(format!("paths[{i}]"), message)),
        }
    }
    globs.into()
}

/// Rules whose fields are each valid but contradict one another.
fn check_combinations(
    raw: &RawRule,
    action: Action,
    schemes: Schemes,
    errors: &mut Vec<FieldError>,
) {
    if raw.upstream_tls && !schemes.http {
        errors.push(FieldError::new(
            "upstream_tls",
            "only applies to plain-http requests; add http to schemes",
        ));
    }
    if raw.websocket {
        let mut refuse = |message: &str| errors.push(FieldError::new("websocket", message));
        if action == Action::Deny {
            refuse("a deny rule refuses upgrades anyway; remove websocket from it");
        }
        if raw.tunnel {
            refuse("a blind tunnel is not inspected, so it cannot allow upgrades; remove one");
        }
        let get = raw
            .methods
            .as_ref()
            .is_none_or(|list| list.iter().any(|m| m.trim().eq_ignore_ascii_case("GET")));
        if !get {
            refuse("a WebSocket upgrade is a GET; add GET to methods");
        }
    }
    // HTTP/2 is negotiated in TLS (ALPN); credgate speaks no cleartext h2c.
    if raw.upstream_http.as_deref() == Some("http2") && schemes.http && !raw.upstream_tls {
        errors.push(FieldError::new(
            "upstream_http",
            "http2 is negotiated over TLS only; remove http from schemes or set upstream_tls: true",
        ));
    }
    if !raw.tunnel {
        return;
    }
    let mut refuse = |message: &str| errors.push(FieldError::new("tunnel", message));
    if action == Action::Deny {
        refuse("a tunnel can only be allowed; remove tunnel from a deny rule");
    }
    if raw.credential.is_some() {
        refuse("a blind tunnel cannot inject a credential; remove credential or tunnel");
    }
    if raw.methods.is_some() || raw.paths.is_some() {
        refuse("a blind tunnel cannot see methods or paths; remove methods and paths");
    }
    if raw.upstream_tls {
        refuse("a blind tunnel carries the agent's own TLS; remove upstream_tls");
    }
    if raw.upstream_http.is_some() {
        refuse("a blind tunnel carries the agent's own protocol; remove upstream_http");
    }
    if !schemes.https {
        refuse("a tunnel answers CONNECT, which carries https; add https to schemes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::normalize_path;

    fn raw(yaml: &str) -> RawRule {
        serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    fn rule(yaml: &str) -> ScopeRule {
        ScopeRule::compile("s", 0, &raw(yaml)).unwrap_or_else(|e| panic!("{yaml}: {e:?}"))
    }

    fn error_paths(yaml: &str) -> Vec<String> {
        match ScopeRule::compile("s", 0, &raw(yaml)) {
            Ok(_) => panic!("{yaml} compiled"),
            Err(errors) => errors.into_iter().map(|e| e.path).collect(),
        }
    }

    fn hits(
        rule: &ScopeRule,
        method: &str,
        scheme: Scheme,
        host: &str,
        port: u16,
        path: &str,
    ) -> bool {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        rule.matches(&RequestTarget {
            method: &method,
            scheme,
            host,
            port,
            path,
            websocket: false,
            encoded_slash: false,
        })
    }

    fn get(rule: &ScopeRule, host: &str, path: &str) -> bool {
        hits(rule, "GET", Scheme::Https, host, 443, path)
    }

    #[test]
    fn defaults_are_https_any_method_every_path() {
        let r = rule("host: API.GitHub.com");
        assert_eq!(&*r.id, "s[0]");
        assert_eq!(r.action, Action::Allow);
        assert_eq!(r.on_secret, SecretAction::Block);
        assert!(r.is_whole_host());
        assert!(get(&r, "api.github.com", "/"));
        assert!(get(&r, "api.github.com", "/anything/at/all"));
        assert!(!hits(&r, "GET", Scheme::Http, "api.github.com", 80, "/"));
        assert!(!hits(&r, "GET", Scheme::Https, "api.github.com", 8443, "/"));
        assert_eq!(r.describe(), "allow any method https://api.github.com/**");
    }

    #[test]
    fn describe_reads_as_plain_words() {
        let r = rule(
            "host: api.github.com\nmethods: [get, HEAD]\npaths: [\"/repos/acme/*/issues/**\"]\ncredential: github",
        );
        assert_eq!(
            r.describe(),
            "allow GET, HEAD https://api.github.com/repos/acme/*/issues/** with credential github"
        );
        let r = rule("host: '*.internal.example'\nschemes: [http, https]\nport: 8080\naction: deny\npaths: [/a, /b, /c]");
        assert_eq!(
            r.describe(),
            "deny any method http(s)://*.internal.example:8080/a, /b and /c"
        );
        let r = rule("host: '[::1]'\ntunnel: true\nallow_private: true");
        assert_eq!(
            r.describe(),
            "tunnel CONNECT [::1]:443 blindly (no interception, no credential); may reach private addresses"
        );
        let r = rule("host: a.example\nmethods: [POST]\napproval: required");
        assert_eq!(
            r.describe(),
            "allow POST https://a.example/**; only once a person approved it (grant: request)"
        );
        let r = rule("host: a.example\napproval: { approvers: 2, hold: 30s, grant: 10m }");
        assert_eq!(
            r.approval,
            Some(ApprovalSpec {
                approvers: 2,
                hold: std::time::Duration::from_secs(30),
                grant: Grant::For(std::time::Duration::from_secs(600)),
            })
        );
        assert!(
            r.describe().ends_with(
                "; only once 2 different people approved it (grant: 10m, held up to 30s)"
            ),
            "{}",
            r.describe()
        );
        let r = rule("host: a.example\nschemes: [http]\nupstream_tls: true\non_secret: strip\nidle_timeout: 30m");
        assert_eq!(r.idle_timeout, Some(std::time::Duration::from_secs(1800)));
        assert_eq!(
            r.describe(),
            "allow any method http://a.example/**; plain-http requests go upstream over TLS; \
             secrets the agent sends are stripped; a response may pause 30m"
        );
    }

    #[test]
    fn every_problem_of_a_rule_is_reported() {
        let paths = error_paths(
            "host: 'a..b'\nport: 0\nschemes: [https, ftp]\nmethods: [GET, 'BAD METHOD', TRACE, connect]\n\
             paths: [/ok, 'no-slash', '/a**b', '/x/../y']\naction: permit\non_secret: ignore\ncredential: ''\nidle_timeout: soon",
        );
        assert_eq!(
            paths,
            [
                "host",
                "port",
                "schemes[1]",
                "methods[1]",
                "methods[2]",
                "methods[3]",
                "paths[1]",
                "paths[2]",
                "paths[3]",
                "action",
                "on_secret",
                "idle_timeout",
                "credential"
            ]
        );
    }

    #[test]
    fn upstream_http_is_auto_unless_a_rule_says_otherwise() {
        assert_eq!(rule("host: a.example").upstream_http, UpstreamHttp::Auto);
        let r = rule("host: a.example\nupstream_http: http2");
        assert_eq!(r.upstream_http, UpstreamHttp::Http2);
        assert!(r.describe().ends_with("HTTP/2 only"), "{}", r.describe());
        let r = rule("host: a.example\nupstream_http: http1");
        assert_eq!(r.upstream_http, UpstreamHttp::Http1);
        assert_eq!(
            error_paths("host: a.example\nupstream_http: h2c"),
            ["upstream_http"]
        );
        // No cleartext HTTP/2, and nothing to choose in a blind tunnel.
        assert_eq!(
            error_paths("host: a.example\nschemes: [http]\nupstream_http: http2"),
            ["upstream_http"]
        );
        rule("host: a.example\nschemes: [http]\nupstream_tls: true\nupstream_http: http2");
        assert_eq!(
            error_paths("host: a.example\ntunnel: true\nupstream_http: http1"),
            ["tunnel"]
        );
    }

    #[test]
    fn empty_lists_are_errors_not_match_nothing() {
        assert_eq!(error_paths("host: a.example\nmethods: []"), ["methods"]);
        assert_eq!(error_paths("host: a.example\npaths: []"), ["paths"]);
        assert_eq!(error_paths("host: a.example\nschemes: []"), ["schemes"]);
    }

    #[test]
    fn contradictory_fields_are_errors() {
        assert_eq!(
            error_paths("host: a.example\naction: deny\nidle_timeout: 1h"),
            ["idle_timeout"]
        );
        assert_eq!(
            error_paths("host: a.example\nidle_timeout: 0s"),
            ["idle_timeout"]
        );
        assert_eq!(
            error_paths("host: a.example\naction: deny\ncredential: github"),
            ["credential"]
        );
        assert_eq!(
            error_paths("host: a.example\nupstream_tls: true"),
            ["upstream_tls"]
        );
        assert_eq!(
            error_paths("host: a.example\ntunnel: true\naction: deny"),
            ["tunnel"]
        );
        assert_eq!(
            error_paths("host: a.example\ntunnel: true\ncredential: github"),
            ["tunnel"]
        );
        assert_eq!(
            error_paths("host: a.example\ntunnel: true\nmethods: [GET]"),
            ["tunnel"]
        );
        assert_eq!(
            error_paths("host: a.example\ntunnel: true\npaths: ['/**']"),
            ["tunnel"]
        );
        assert_eq!(
            error_paths("host: a.example\ntunnel: true\nschemes: [http]"),
            ["tunnel"]
        );
    }

    #[test]
    fn ports_follow_each_scheme_unless_given() {
        let both = rule("host: a.example\nschemes: [http, https]");
        assert!(hits(&both, "GET", Scheme::Http, "a.example", 80, "/"));
        assert!(hits(&both, "GET", Scheme::Https, "a.example", 443, "/"));
        assert!(!hits(&both, "GET", Scheme::Http, "a.example", 443, "/"));
        assert!(!hits(&both, "GET", Scheme::Https, "a.example", 80, "/"));
        let custom = rule("host: a.example\nport: 8443");
        assert!(hits(&custom, "GET", Scheme::Https, "a.example", 8443, "/"));
        assert!(!hits(&custom, "GET", Scheme::Https, "a.example", 443, "/"));
    }

    #[test]
    fn methods_match_case_insensitively_and_trace_never() {
        let r = rule("host: a.example\nmethods: [DELETE]");
        assert!(hits(&r, "DELETE", Scheme::Https, "a.example", 443, "/"));
        assert!(hits(&r, "delete", Scheme::Https, "a.example", 443, "/"));
        assert!(!hits(&r, "GET", Scheme::Https, "a.example", 443, "/"));
        let any = rule("host: a.example");
        assert!(hits(&any, "PROPFIND", Scheme::Https, "a.example", 443, "/"));
        for refused in ["TRACE", "trace", "CONNECT", "Connect"] {
            assert!(
                !hits(&any, refused, Scheme::Https, "a.example", 443, "/"),
                "{refused}"
            );
        }
    }

    #[test]
    fn traversal_is_resolved_before_matching() {
        let r = rule("host: a.example\npaths: ['/v1/repos/acme/**']");
        let path = normalize_path("/v1/repos/acme/../evil").unwrap();
        assert_eq!(path, "/v1/repos/evil");
        assert!(!get(&r, "a.example", &path));
        let path = normalize_path("/v1/repos/acme/%2e%2e/evil").unwrap();
        assert!(!get(&r, "a.example", &path));
        assert!(get(&r, "a.example", "/v1/repos/acme/x"));
    }

    #[test]
    fn deny_rules_match_loosely_and_allow_rules_exactly() {
        let deny =
            rule("host: a.example\naction: deny\npaths: ['/repos/acme/secret/**', '/admin']");
        let allow = rule("host: a.example\npaths: ['/repos/acme/secret/**', '/admin']");
        for path in [
            "/repos/acme//secret/x",
            "/repos/acme/secret;x/x",
            "/repos/acme/Secret/x",
            "/admin/",
            "/Admin;x//",
        ] {
            assert!(get(&deny, "a.example", path), "{path:?}");
            assert!(!get(&allow, "a.example", path), "{path:?}");
        }
        for path in ["/repos/acme/secrets", "/admin/x", "/admins"] {
            assert!(!get(&deny, "a.example", path), "{path:?}");
        }
        assert!(!deny.is_whole_host());
        assert!(rule("host: a.example\naction: deny\npaths: ['//**']").is_whole_host());
        assert!(!rule("host: a.example\npaths: ['//**']").is_whole_host());
        assert_eq!(
            rule("host: a.example\naction: deny\npaths: ['/Admin//']").describe(),
            "deny any method https://a.example/Admin//"
        );
    }

    #[test]
    fn any_listed_path_may_match() {
        let r =
            rule("host: a.example\npaths: ['/repos/acme/*/issues/**', '/repos/acme/*/pulls/**']");
        assert!(!r.is_whole_host());
        assert!(get(&r, "a.example", "/repos/acme/x/pulls/3"));
        assert!(get(&r, "a.example", "/repos/acme/x/issues"));
        assert!(!get(&r, "a.example", "/repos/acme/x/commits"));
        assert!(rule("host: a.example\npaths: ['/x', '/**']").is_whole_host());
        assert!(!rule("host: a.example\nmethods: [GET]").is_whole_host());
    }

    #[test]
    fn tunnel_rules_answer_connect_only() {
        let r = rule("host: pinned.example\ntunnel: true");
        assert!(!get(&r, "pinned.example", "/"));
        assert!(r.matches_connect("pinned.example", 443));
        assert!(!r.matches_connect("pinned.example", 8443));
        let http_only = rule("host: a.example\nschemes: [http]");
        assert!(!http_only.matches_connect("a.example", 80));
        assert!(!http_only.matches_connect("a.example", 443));
    }

    #[test]
    fn wildcard_rule_hosts() {
        let r = rule("host: '*.example.com'");
        assert!(get(&r, "evil.com.example.com", "/"));
        assert!(!get(&r, "example.com", "/"));
        assert!(!get(&r, "example.com.evil.com", "/"));
    }
}
