//! The request pipeline: one function, read top to bottom as its phases.
//!
//! ```text
//! identify → sanitize → authorize → credential → inject → forward → scrub → record
//! ```
//!
//! The order is a security property:
//! - *identify* first, so nothing is done for an unknown caller;
//! - *sanitize* before *authorize*, so the rule is matched on the request as it
//!   will be forwarded, and before *inject*, so stripping can never remove the
//!   credential credgate adds, and the agent's own `Authorization` can never
//!   survive next to it;
//! - *authorize* before *credential*, so a denied request costs no DNS lookup,
//!   no connection and no credential fetch;
//! - *scrub* on everything that flows back, because an upstream may echo what
//!   it received;
//! - *record* is not a step at the end but a guard created before the first
//!   phase, whose `Drop` writes the record whatever path the request took.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{request, Method, Response, StatusCode, Uri};
use http_body_util::Full;

use super::address::AddressPolicy;
use super::body::ProxyBody;
use super::gateway::{Gateway, Snapshot};
use super::upstream::ConnectError;
use crate::audit::{
    CacheOutcome, CredentialInfo, RecordGuard, UpstreamInfo, Verdict as RecordVerdict,
};
use crate::credential::cache::CacheStatus;
use crate::credential::secret::Secret;
use crate::credential::FetchContext;
use crate::policy::{normalize_host, normalize_path, RequestTarget, Scheme, SecretAction, Verdict};
use crate::reason::Reason;
use crate::sanitize::{Finding, FindingLocation};
use crate::scrub::Scrubber;
use crate::task::{parse_proxy_authorization, AuthError, Task};

/// What a connection knows about itself.
pub(crate) struct ConnContext {
    /// The agent's address.
    pub(crate) peer: SocketAddr,
    /// Set inside an intercepted CONNECT tunnel.
    pub(crate) tunnel: Option<Tunnel>,
    /// The scrubber last built on this connection, reused while the task's
    /// credentials do not change (a keep-alive connection usually serves one task).
    scrubber: Mutex<Option<CachedScrubber>>,
}

struct CachedScrubber {
    task: String,
    generation: u64,
    scrubber: Arc<Scrubber>,
}

/// An intercepted tunnel: the task authenticated on CONNECT and its target.
pub(crate) struct Tunnel {
    /// The task that opened the tunnel.
    pub(crate) task: Arc<Task>,
    /// The task token presented on CONNECT (scrubbed from responses).
    pub(crate) token: Option<Secret>,
    /// Normalised CONNECT host.
    pub(crate) host: String,
    /// CONNECT port.
    pub(crate) port: u16,
}

impl ConnContext {
    /// A plain-proxy connection.
    pub(crate) fn plain(peer: SocketAddr) -> Self {
        ConnContext {
            peer,
            tunnel: None,
            scrubber: Mutex::new(None),
        }
    }

    /// A connection inside an intercepted tunnel.
    pub(crate) fn tunnel(peer: SocketAddr, tunnel: Tunnel) -> Self {
        ConnContext {
            peer,
            tunnel: Some(tunnel),
            scrubber: Mutex::new(None),
        }
    }
}

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

/// The target of a request, after normalisation and agreement checks.
struct Target {
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
    query: Option<String>,
}

/// Runs one request through every phase and returns the response for the
/// agent. Never fails: every failure becomes a denial with a reason, recorded
/// in `rec`, which is written when the response body is done (or dropped).
pub(crate) async fn handle(
    gw: &Gateway,
    conn: &ConnContext,
    mut parts: request::Parts,
    body: Bytes,
    mut rec: RecordGuard,
) -> Response<ProxyBody> {
    let snapshot = gw.snapshot();
    {
        let r = rec.record();
        r.method = Some(parts.method.to_string());
        r.bytes_in = body.len() as u64;
    }
    // A record that cannot be written means the request must not happen.
    if !gw.audit.healthy() {
        return deny(
            rec,
            Deny::new(
                Reason::AuditUnavailable,
                "the decision log cannot be written",
            ),
        );
    }

    // identify
    let (task, token) = match identify(gw, conn, &parts.headers) {
        Ok(found) => found,
        Err(e) => return deny(rec, Deny::new(e.reason(), auth_message(&e))),
    };
    {
        let r = rec.record();
        r.task = Some(task.id.clone());
        r.agent = Some(task.agent.clone());
        r.labels = task.labels.clone();
    }

    let target = match resolve_target(conn, &parts) {
        Ok(t) => t,
        Err(d) => return deny(rec, d),
    };
    {
        let r = rec.record();
        r.scheme = Some(target.scheme.as_str().to_string());
        r.host = Some(target.host.clone());
        r.port = Some(target.port);
        r.path = Some(target.path.clone());
    }

    let response = run_phases(
        gw,
        &snapshot,
        conn,
        &task,
        token.as_ref(),
        target,
        &mut parts,
        body,
        &mut rec,
    )
    .await;
    match response {
        Ok(upstream) => respond_upstream(gw, &snapshot, conn, &task, token.as_ref(), upstream, rec),
        Err(d) => deny(rec, d),
    }
}

/// An upstream response, waiting to be scrubbed.
struct Upstream {
    response: Response<hyper::body::Incoming>,
    started: Instant,
}

#[allow(clippy::too_many_arguments)]
async fn run_phases(
    gw: &Gateway,
    snapshot: &Snapshot,
    conn: &ConnContext,
    task: &Arc<Task>,
    token: Option<&Secret>,
    mut target: Target,
    parts: &mut request::Parts,
    mut body: Bytes,
    rec: &mut RecordGuard,
) -> Result<Upstream, Deny> {
    let config = &snapshot.config;

    // sanitize: strip what must never be forwarded, then look for secrets in what is left.
    let stripped = config.sanitizer.strip_headers(&mut parts.headers);
    parts.headers.remove(header::HOST);
    rec.record().stripped = stripped;
    let path_and_query = match &target.query {
        Some(q) => format!("{}?{}", target.path, q),
        None => target.path.clone(),
    };
    let mut findings: Vec<Finding> = config.sanitizer.scan_target(&path_and_query);
    findings.extend(config.sanitizer.scan_headers(&parts.headers));
    findings.extend(config.sanitizer.scan_body(&body));
    if findings.iter().any(|f| f.location == FindingLocation::Url) {
        // The record must not carry the secret the agent put in the URL.
        let redacted = config.sanitizer.redact_target(&target.path);
        rec.record().path = Some(redacted);
    }
    rec.record().findings = finding_ids(&findings);

    // authorize
    let mut decision = config
        .policy
        .decide(&task.scopes, &request_target(&parts.method, &target));
    if !findings.is_empty() {
        let strip = decision.verdict == Verdict::Allow
            && decision
                .rule
                .as_ref()
                .is_some_and(|r| r.on_secret == SecretAction::Strip);
        if !strip {
            return Err(Deny::new(
                Reason::SecretInRequest,
                format!(
                    "the request carries what looks like a secret ({}); credgate injects credentials itself, send none",
                    describe_findings(&findings)
                ),
            ));
        }
        // The rule asked for stripping: remove the secrets and authorise the
        // request that will actually be forwarded.
        let redacted = config.sanitizer.redact_target(&path_and_query);
        let (path, query) = match redacted.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (redacted, None),
        };
        target.path = path;
        target.query = query;
        let removed = config.sanitizer.redact_headers(&mut parts.headers);
        rec.record().stripped.extend(removed);
        let mut owned = body.to_vec();
        config.sanitizer.redact_body(&mut owned);
        body = Bytes::from(owned);
        rec.record().path = Some(target.path.clone());
        decision = config
            .policy
            .decide(&task.scopes, &request_target(&parts.method, &target));
    }
    rec.record().rule = decision.rule.as_ref().map(|r| r.id.to_string());
    if decision.verdict != Verdict::Allow {
        return Err(Deny::new(decision.reason, decision.message));
    }
    let rule = decision.rule.expect("an allow decision names its rule");

    // Where the request may go, and whether a credential may travel over it.
    let upstream_tls = target.scheme == Scheme::Https || rule.upstream_tls;
    let mut address_policy = if rule.allow_private {
        AddressPolicy::AllowPrivate
    } else {
        AddressPolicy::PublicOnly
    };
    if rule.credential.is_some() && !upstream_tls {
        if !rule.allow_private {
            return Err(Deny::new(
                Reason::CleartextInjectionRefused,
                format!(
                    "rule {} would send credential {} over cleartext http; set upstream_tls: true, or allow_private: true for a loopback upstream",
                    rule.id,
                    rule.credential.as_deref().unwrap_or_default()
                ),
            ));
        }
        address_policy = AddressPolicy::LoopbackOnly;
    }

    // credential
    let credential = match &rule.credential {
        None => None,
        Some(name) => {
            let Some(def) = config.credentials.get(name) else {
                return Err(Deny::new(
                    Reason::CredentialUnavailable,
                    format!(
                        "rule {} names credential {name}, which is not configured",
                        rule.id
                    ),
                ));
            };
            let ctx = FetchContext {
                task_id: task.id.clone(),
                agent: task.agent.clone(),
                labels: task.labels.clone(),
                task_expires_at: task.expires_at,
            };
            let narrowing = format!("g{}", snapshot.generation);
            match gw.credentials.get_or_fetch(def, &narrowing, &ctx).await {
                Ok((cred, status)) => {
                    rec.record().credential = Some(CredentialInfo {
                        source: cred.source.to_string(),
                        name: cred.name.clone(),
                        id: cred.id.clone(),
                        fingerprint: cred.fingerprint(),
                        expires_at: cred.expires_at.map(crate::audit::format_timestamp),
                        cache: Some(match status {
                            CacheStatus::Hit => CacheOutcome::Hit,
                            CacheStatus::Miss => CacheOutcome::Miss,
                        }),
                        standing: cred.standing,
                    });
                    Some((def.clone(), cred))
                }
                Err(e) => {
                    return Err(Deny::new(
                        Reason::CredentialUnavailable,
                        format!("credential {name} could not be obtained: {e}"),
                    ))
                }
            }
        }
    };

    // inject
    let upstream_scheme = if upstream_tls { "https" } else { "http" };
    let authority = authority_for(&target.host, target.port, upstream_tls);
    let uri = match &target.query {
        Some(q) => format!("{upstream_scheme}://{authority}{}?{q}", target.path),
        None => format!("{upstream_scheme}://{authority}{}", target.path),
    };
    parts.uri = match uri.parse::<Uri>() {
        Ok(u) => u,
        Err(_) => {
            return Err(Deny::new(
                Reason::BadRequest,
                "the request target cannot be forwarded",
            ))
        }
    };
    parts.version = http::Version::HTTP_11;
    if let Ok(host) = HeaderValue::from_str(&authority) {
        parts.headers.insert(header::HOST, host);
    }
    // Bodies must come back scannable: ask for no content coding.
    parts.headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let Some((def, cred)) = &credential {
        if let Err(e) = def.injection.apply(cred, parts) {
            return Err(Deny::new(
                Reason::CredentialUnavailable,
                format!("credential {} could not be injected: {e}", def.name),
            ));
        }
    }

    // forward
    let request = http::Request::from_parts(parts.clone(), Full::new(body));
    let client = snapshot.upstreams.client(address_policy);
    let started = Instant::now();
    let sent =
        tokio::time::timeout(config.upstream.first_byte_timeout, client.request(request)).await;
    let response = match sent {
        Err(_) => {
            return Err(Deny::new(
                Reason::UpstreamTimeout,
                format!(
                    "{} did not answer within upstream.first_byte_timeout",
                    target.host
                ),
            ))
        }
        Ok(Err(e)) => return Err(classify_upstream_error(&e)),
        Ok(Ok(r)) => r,
    };
    let _ = (conn, token);
    Ok(Upstream { response, started })
}

/// scrub: the response goes back with every credential in play masked.
fn respond_upstream(
    gw: &Gateway,
    snapshot: &Snapshot,
    conn: &ConnContext,
    task: &Arc<Task>,
    token: Option<&Secret>,
    upstream: Upstream,
    mut rec: RecordGuard,
) -> Response<ProxyBody> {
    let (mut parts, body) = upstream.response.into_parts();
    {
        let r = rec.record();
        r.upstream = Some(UpstreamInfo {
            status: Some(parts.status.as_u16()),
            ms: Some(upstream.started.elapsed().as_millis() as u64),
        });
    }
    strip_response_hop_by_hop(&mut parts.headers);
    if let Some(coding) = parts.headers.get(header::CONTENT_ENCODING) {
        if !coding.as_bytes().eq_ignore_ascii_case(b"identity") {
            // A compressed body cannot be scanned; passing it would let a
            // credential through.
            return deny(
                rec,
                Deny::new(
                    Reason::ResponseUnscannable,
                    "the upstream answered with a compressed body although credgate asked for identity encoding",
                ),
            );
        }
    }
    let scrubber = scrubber_for(gw, conn, task, token);
    let scrubbed_headers = scrubber.scrub_headers(&mut parts.headers);
    {
        let r = rec.record();
        r.decision = Some(RecordVerdict::Allow);
        r.reason = Some(Reason::Allowed);
        r.scrubbed += scrubbed_headers as u64;
    }
    let remaining = snapshot
        .config
        .upstream
        .total_timeout
        .saturating_sub(upstream.started.elapsed());
    let body = ProxyBody::upstream(body, scrubber.stream(), rec, remaining);
    let mut response = Response::from_parts(parts, body);
    // The connection layer stops streaming when this task ends.
    response.extensions_mut().insert(task.clone());
    response
}

/// The scrubber for this task's credentials and token, reused on the
/// connection until the task is issued another credential.
fn scrubber_for(
    gw: &Gateway,
    conn: &ConnContext,
    task: &Task,
    token: Option<&Secret>,
) -> Arc<Scrubber> {
    let generation = gw.credentials.generation(&task.id);
    let mut cached = conn.scrubber.lock().expect("scrubber cache poisoned");
    if let Some(c) = cached.as_ref() {
        if c.task == task.id && c.generation == generation {
            return c.scrubber.clone();
        }
    }
    let credentials = gw.credentials.issued_for_task(&task.id);
    let mut secrets: Vec<&[u8]> = credentials.iter().flat_map(|c| c.secret_values()).collect();
    if let Some(t) = token {
        secrets.push(t.expose());
    }
    let scrubber = Arc::new(Scrubber::new(secrets));
    *cached = Some(CachedScrubber {
        task: task.id.clone(),
        generation,
        scrubber: scrubber.clone(),
    });
    scrubber
}

/// Finds the task: the tunnel's, the one named by `Proxy-Authorization`, or
/// the ambient task for a loopback client.
pub(crate) fn identify(
    gw: &Gateway,
    conn: &ConnContext,
    headers: &HeaderMap,
) -> Result<(Arc<Task>, Option<Secret>), AuthError> {
    let now = SystemTime::now();
    if let Some(tunnel) = &conn.tunnel {
        if !tunnel.task.is_active(now) {
            return Err(AuthError::Ended);
        }
        return Ok((tunnel.task.clone(), tunnel.token.clone()));
    }
    authenticate(gw, conn.peer, headers, now)
}

/// Authenticates a request outside any tunnel (also the CONNECT itself).
pub(crate) fn authenticate(
    gw: &Gateway,
    peer: SocketAddr,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<(Arc<Task>, Option<Secret>), AuthError> {
    match headers.get(header::PROXY_AUTHORIZATION) {
        Some(value) => {
            let credential = parse_proxy_authorization(value)?;
            let task = gw.tasks.authenticate(&credential, now)?;
            let token = match credential {
                crate::task::ProxyCredential::Basic { password, .. } => password,
                crate::task::ProxyCredential::Bearer(token) => token,
            };
            Ok((task, Some(token)))
        }
        None => {
            // The ambient task serves only the pod itself.
            let ambient = gw.tasks.ambient().filter(|_| peer.ip().is_loopback());
            match ambient {
                Some(task) if task.is_active(now) => Ok((task, None)),
                Some(_) => Err(AuthError::Ended),
                None => Err(AuthError::Missing),
            }
        }
    }
}

/// Words for a 407.
pub(crate) fn auth_message(e: &AuthError) -> String {
    match e {
        AuthError::Missing => {
            "no task token: send Proxy-Authorization (use the proxy URL from `credgate task start`)"
                .into()
        }
        AuthError::Ended => "the task has ended; start a new task".into(),
        _ => "the task token is not valid".into(),
    }
}

fn request_target<'a>(method: &'a Method, target: &'a Target) -> RequestTarget<'a> {
    RequestTarget {
        method,
        scheme: target.scheme,
        host: &target.host,
        port: target.port,
        path: &target.path,
    }
}

/// Works out scheme, host, port and path, and checks that every name the
/// request gives for its destination agrees.
fn resolve_target(conn: &ConnContext, parts: &request::Parts) -> Result<Target, Deny> {
    let uri = &parts.uri;
    let host_header = parts
        .headers
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{0}"));
    let (scheme, host, port) = match &conn.tunnel {
        Some(tunnel) => {
            // Inside a tunnel the origin is fixed by CONNECT; the request may
            // only repeat it (absolute-form, Host, :authority).
            let named = uri
                .authority()
                .map(|a| a.as_str())
                .or(host_header)
                .ok_or_else(|| Deny::new(Reason::BadRequest, "request without Host"))?;
            let (h, p) = split_authority(named, 443)
                .ok_or_else(|| Deny::new(Reason::BadRequest, "invalid Host"))?;
            if h != tunnel.host || p != tunnel.port {
                return Err(Deny::new(
                    Reason::MisdirectedRequest,
                    format!(
                        "this tunnel was opened for {}:{}; the request names {h}:{p}",
                        tunnel.host, tunnel.port
                    ),
                ));
            }
            if let (Some(a), Some(hh)) = (uri.authority(), host_header) {
                if split_authority(hh, 443) != split_authority(a.as_str(), 443) {
                    return Err(Deny::new(
                        Reason::HostMismatch,
                        "request URI and Host disagree",
                    ));
                }
            }
            (Scheme::Https, tunnel.host.clone(), tunnel.port)
        }
        None => {
            let scheme =
                match uri.scheme_str() {
                    Some("http") => Scheme::Http,
                    Some(_) => {
                        return Err(Deny::new(
                            Reason::BadRequest,
                            "only http:// URLs are proxied directly; https goes through CONNECT",
                        ))
                    }
                    None => return Err(Deny::new(
                        Reason::BadRequest,
                        "credgate is a forward proxy: send absolute-form requests (set HTTP_PROXY)",
                    )),
                };
            let authority = uri
                .authority()
                .ok_or_else(|| Deny::new(Reason::BadRequest, "request URI without host"))?;
            if authority.as_str().contains('@') {
                return Err(Deny::new(
                    Reason::BadRequest,
                    "userinfo in the request URI is refused",
                ));
            }
            let (h, p) = split_authority(authority.as_str(), 80)
                .ok_or_else(|| Deny::new(Reason::BadRequest, "invalid host in the request URI"))?;
            if let Some(hh) = host_header {
                if split_authority(hh, 80) != Some((h.clone(), p)) {
                    return Err(Deny::new(
                        Reason::HostMismatch,
                        format!("the request URI names {h}:{p} but Host names another origin"),
                    ));
                }
            }
            (scheme, h, p)
        }
    };
    let raw_path = uri.path();
    let path = normalize_path(raw_path).map_err(|e| Deny::new(e.reason(), e.to_string()))?;
    Ok(Target {
        scheme,
        host,
        port,
        path,
        query: uri.query().map(str::to_string),
    })
}

/// `host[:port]` → normalised host and port.
fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after {
            "" => default_port,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        (h, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, default_port),
        }
    };
    Some((normalize_host(host).ok()?, port))
}

/// `host:port` for the upstream URI and Host header, leaving out a default port.
fn authority_for(host: &str, port: u16, tls: bool) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if (tls && port == 443) || (!tls && port == 80) {
        host
    } else {
        format!("{host}:{port}")
    }
}

fn classify_upstream_error(e: &hyper_util::client::legacy::Error) -> Deny {
    if let Some(connect) = ConnectError::find(e) {
        return Deny::new(connect.reason(), connect.to_string());
    }
    Deny::new(Reason::UpstreamError, "the upstream broke the exchange")
}

fn finding_ids(findings: &[Finding]) -> Vec<String> {
    let mut ids: Vec<String> = findings.iter().map(|f| f.rule.to_string()).collect();
    ids.sort();
    ids.dedup();
    ids
}

fn describe_findings(findings: &[Finding]) -> String {
    let mut parts: Vec<String> = findings
        .iter()
        .map(|f| match &f.location {
            FindingLocation::Url => format!("{} in the URL", f.rule),
            FindingLocation::Header(name) => format!("{} in header {name}", f.rule),
            FindingLocation::Body => format!("{} in the body", f.rule),
            #[allow(unreachable_patterns)]
            _ => f.rule.to_string(),
        })
        .collect();
    parts.sort();
    parts.dedup();
    parts.join(", ")
}

/// Response headers that describe the upstream hop, not the message.
fn strip_response_hop_by_hop(headers: &mut HeaderMap) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_split_and_normalise() {
        assert_eq!(
            split_authority("API.Example.com.:8443", 443),
            Some(("api.example.com".into(), 8443))
        );
        assert_eq!(split_authority("[::1]:9", 443), Some(("::1".into(), 9)));
        assert_eq!(split_authority("[::1]", 443), Some(("::1".into(), 443)));
        assert_eq!(split_authority("a.example:x", 443), None);
        assert_eq!(authority_for("::1", 443, true), "[::1]");
        assert_eq!(authority_for("a.example", 8080, false), "a.example:8080");
    }
}
