//! Where a request goes: scheme, host, port and normalised path, with every
//! name the request gives for its destination (absolute URI, `Host`,
//! `:authority`, the CONNECT target) required to agree.

use std::borrow::Cow;

use bytes::Bytes;
use http::header;
use http::uri::{self, Uri};
use http::{request, Method};

use super::pipeline::ConnContext;
use super::respond::Deny;
use crate::decimal::Decimal;
use crate::policy::{normalize_host, normalize_request_path, RequestTarget, Scheme};
use crate::reason::Reason;

/// The target of a request, after normalisation and agreement checks.
pub(crate) struct Target {
    /// The scheme the agent used (https inside a tunnel).
    pub(crate) scheme: Scheme,
    /// Normalised host.
    pub(crate) host: String,
    /// Port.
    pub(crate) port: u16,
    /// Normalised path: what is checked and what is forwarded.
    pub(crate) path: String,
    /// The path holds an encoded `/`, kept as sent; the matching rule
    /// decides whether it may pass.
    pub(crate) encoded_slash: bool,
    /// The raw query, if any.
    pub(crate) query: Option<String>,
}

impl Target {
    /// What the policy decides on.
    pub(crate) fn for_policy<'a>(&'a self, method: &'a Method) -> RequestTarget<'a> {
        RequestTarget {
            method,
            scheme: self.scheme,
            host: &self.host,
            port: self.port,
            path: &self.path,
            websocket: false,
            encoded_slash: self.encoded_slash,
        }
    }

    /// Path and query, as forwarded.
    pub(crate) fn path_and_query(&self) -> Cow<'_, str> {
        match &self.query {
            Some(q) => Cow::Owned(format!("{}?{}", self.path, q)),
            None => Cow::Borrowed(&self.path),
        }
    }
}

/// Works out scheme, host, port and path, and checks that every name the
/// request gives for its destination agrees.
pub(crate) fn resolve_target(conn: &ConnContext, parts: &request::Parts) -> Result<Target, Deny> {
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
                // Spelled the same, they agree; only otherwise normalise both.
                if hh != a.as_str() && split_authority(hh, 443) != split_authority(a.as_str(), 443)
                {
                    return Err(Deny::new(
                        Reason::HostMismatch,
                        "request URI and Host disagree",
                    ));
                }
            }
            (Scheme::Https, tunnel.host.clone(), tunnel.port)
        }
        None if uri.scheme().is_none() && conn.captured_port.is_some() => {
            // A captured plain connection: origin-form, to `Host` on the
            // port the agent was connecting to.
            let captured = conn.captured_port.unwrap_or(80);
            let named =
                host_header.ok_or_else(|| Deny::new(Reason::BadRequest, "request without Host"))?;
            let (h, p) = split_authority(named, captured)
                .ok_or_else(|| Deny::new(Reason::BadRequest, "invalid Host"))?;
            if p != captured {
                return Err(Deny::new(
                    Reason::MisdirectedRequest,
                    format!("the connection went to port {captured}; the request names {h}:{p}"),
                ));
            }
            (Scheme::Http, h, p)
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
                // Spelled the same, they agree; only otherwise normalise the Host.
                let agrees = hh == authority.as_str()
                    || split_authority(hh, 80)
                        .is_some_and(|(hh_host, hh_port)| hh_host == h && hh_port == p);
                if !agrees {
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
    let normalised =
        normalize_request_path(raw_path).map_err(|e| Deny::new(e.reason(), e.to_string()))?;
    Ok(Target {
        scheme,
        host,
        port,
        path: normalised.path,
        encoded_slash: normalised.encoded_slash,
        query: uri.query().map(str::to_string),
    })
}

/// `host[:port]` → normalised host and port.
pub(crate) fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
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
pub(crate) fn authority_for(host: &str, port: u16, tls: bool) -> String {
    let mut out = String::with_capacity(host.len() + 8);
    if host.contains(':') {
        out.push('[');
        out.push_str(host);
        out.push(']');
    } else {
        out.push_str(host);
    }
    if !((tls && port == 443) || (!tls && port == 80)) {
        out.push(':');
        out.push_str(Decimal::new(port.into()).as_str());
    }
    out
}

/// The upstream request's absolute URI: scheme, `authority`, and the
/// normalised path and query — the agent's own bytes when normalising left
/// them as they were. `None` when they do not make a valid URI.
pub(crate) fn upstream_uri(
    agent: &Uri,
    target: &Target,
    tls: bool,
    authority: String,
) -> Option<Uri> {
    let mut uri = uri::Parts::default();
    uri.scheme = Some(if tls {
        uri::Scheme::HTTPS
    } else {
        uri::Scheme::HTTP
    });
    uri.authority = Some(uri::Authority::from_maybe_shared(Bytes::from(authority)).ok()?);
    let unchanged = agent.path() == target.path && agent.query() == target.query.as_deref();
    uri.path_and_query = Some(match agent.path_and_query() {
        Some(agent_bytes) if unchanged => agent_bytes.clone(),
        _ => uri::PathAndQuery::try_from(&*target.path_and_query()).ok()?,
    });
    Uri::from_parts(uri).ok()
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
        assert_eq!(authority_for("a.example", 80, true), "a.example:80");
        assert_eq!(authority_for("a.example", 443, false), "a.example:443");
        assert_eq!(authority_for("a.example", 0, false), "a.example:0");
        assert_eq!(authority_for("a.example", 65535, true), "a.example:65535");
        assert_eq!(authority_for("::1", 8443, true), "[::1]:8443");
    }

    #[test]
    fn a_captured_request_goes_to_its_host_on_the_original_port() {
        let mut conn = ConnContext::plain("10.0.0.1:5000".parse().unwrap(), None);
        conn.captured_port = Some(8080);
        let parts = |uri: &str, host: Option<&str>| {
            let mut req = http::Request::builder().uri(uri);
            if let Some(host) = host {
                req = req.header(header::HOST, host);
            }
            req.body(()).unwrap().into_parts().0
        };
        let t = resolve_target(&conn, &parts("/a/./b?q=1", Some("API.example"))).unwrap();
        assert_eq!(
            (t.scheme, t.host.as_str(), t.port),
            (Scheme::Http, "api.example", 8080)
        );
        assert_eq!(t.path, "/a/b");
        let t = resolve_target(&conn, &parts("/", Some("api.example:8080"))).unwrap();
        assert_eq!(t.port, 8080);
        // Another port than the connection went to, or no Host: refused.
        for (uri, host) in [
            ("/", Some("api.example:9090")),
            ("/", None),
            ("/", Some("a b")),
        ] {
            assert!(
                resolve_target(&conn, &parts(uri, host)).is_err(),
                "{host:?}"
            );
        }
        // Without capture, origin-form is not a proxy request.
        conn.captured_port = None;
        assert!(resolve_target(&conn, &parts("/", Some("api.example"))).is_err());
    }

    fn target(path: &str, query: Option<&str>) -> Target {
        Target {
            scheme: Scheme::Http,
            host: "api.example".into(),
            port: 8080,
            path: path.into(),
            encoded_slash: false,
            query: query.map(str::to_string),
        }
    }

    #[test]
    fn the_upstream_uri_carries_the_normalised_target() {
        for (agent, path, query, tls, authority, expected) in [
            (
                "http://API.example:8080/a/./b?x=1",
                "/a/b",
                Some("x=1"),
                false,
                "api.example:8080",
                "http://api.example:8080/a/b?x=1",
            ),
            (
                "/a/b?x=1",
                "/a/b",
                Some("x=1"),
                true,
                "api.example:8080",
                "https://api.example:8080/a/b?x=1",
            ),
            // A query the pipeline redacted is what goes out, not the agent's.
            (
                "http://api.example/a?key=v",
                "/a",
                Some("key=REDACTED"),
                false,
                "api.example",
                "http://api.example/a?key=REDACTED",
            ),
            (
                "http://api.example/a?key=v",
                "/a",
                None,
                false,
                "api.example",
                "http://api.example/a",
            ),
            (
                "http://api.example",
                "/",
                None,
                false,
                "api.example",
                "http://api.example/",
            ),
        ] {
            let agent: Uri = agent.parse().unwrap();
            let uri = upstream_uri(&agent, &target(path, query), tls, authority.into());
            assert_eq!(
                uri.map(|u| u.to_string()).as_deref(),
                Some(expected),
                "{agent}"
            );
        }
        let agent: Uri = "http://api.example".parse().unwrap();
        assert!(upstream_uri(&agent, &target("/", None), false, "bad host".into()).is_none());
    }
}
