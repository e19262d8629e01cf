//! Where a request goes: scheme, host, port and normalised path, with every
//! name the request gives for its destination (absolute URI, `Host`,
//! `:authority`, the CONNECT target) required to agree.

use http::header;
use http::{request, Method};

use super::pipeline::ConnContext;
use super::respond::Deny;
use crate::policy::{normalize_host, normalize_path, RequestTarget, Scheme};
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
        }
    }

    /// Path and query, as forwarded.
    pub(crate) fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
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
