//! `credgate explain`: what would happen to one request, without sending it.

use std::path::PathBuf;

use http::Method;

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::policy::{normalize_host, normalize_request_path, RequestTarget, Scheme, Verdict};
use crate::provider::ProcessEnv;

/// Arguments of `credgate explain`.
#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// A scope the task would hold (repeatable).
    #[arg(long = "scope", required = true)]
    pub scopes: Vec<String>,
    /// The request method, e.g. GET.
    pub method: String,
    /// The full URL, e.g. https://api.github.com/repos/acme/app/issues;
    /// wss:// or ws:// for the WebSocket upgrade of a GET.
    pub url: String,
}

/// Prints the decision; exit code 0 when allowed, 3 when denied, 1 on bad input.
pub fn run(args: &ExplainArgs) -> i32 {
    let config = match Config::load(&args.config, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return 1;
        }
    };
    match explain(&config, &args.scopes, &args.method, &args.url) {
        Ok((allowed, text)) => {
            print!("{text}");
            if allowed {
                0
            } else {
                3
            }
        }
        Err(e) => {
            eprintln!("credgate explain: {e}");
            1
        }
    }
}

/// The decision for `method url` under `scopes`, in words; `true` when allowed.
pub fn explain(
    config: &Config,
    scopes: &[String],
    method: &str,
    url: &str,
) -> Result<(bool, String), String> {
    for s in scopes {
        if !config.policy.has_scope(s) {
            return Err(format!("no scope named {s:?} in the configuration"));
        }
    }
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("{method:?} is not an HTTP method"))?;
    let uri: http::Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    // ws:// and wss:// ask about the WebSocket upgrade of that URL.
    let (scheme, websocket) = match uri.scheme_str() {
        Some("https") => (Scheme::Https, false),
        Some("http") => (Scheme::Http, false),
        Some("wss") => (Scheme::Https, true),
        Some("ws") => (Scheme::Http, true),
        _ => return Err("the URL must start with http://, https://, ws:// or wss://".into()),
    };
    if websocket && method != Method::GET {
        return Err("a WebSocket upgrade is a GET".into());
    }
    let host = uri.host().ok_or("the URL has no host")?;
    let host = normalize_host(host.trim_start_matches('[').trim_end_matches(']'))
        .map_err(|e| e.to_string())?;
    let port = uri.port_u16().unwrap_or(scheme.default_port());
    let normalised = normalize_request_path(uri.path())
        .map_err(|e| format!("the path would be refused: {e}"))?;
    let path = normalised.path;
    let mut out = String::new();
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let findings = config.sanitizer.scan_target(&path_and_query);
    if !findings.is_empty() {
        let ids: Vec<&str> = findings.iter().map(|f| f.rule).collect();
        out.push_str(&format!(
            "secret: the URL looks like it carries a secret ({}); refused unless the rule says on_secret: strip\n",
            ids.join(", ")
        ));
    }
    if scheme == Scheme::Https {
        let connect = config.policy.connect_decision(scopes, &host, port);
        out.push_str(&format!(
            "CONNECT {host}:{port}: {}\n",
            if connect.verdict == Verdict::Allow {
                "allowed"
            } else {
                "denied"
            }
        ));
    }
    let target = RequestTarget {
        method: &method,
        scheme,
        host: &host,
        port,
        path: &path,
        websocket,
        encoded_slash: normalised.encoded_slash,
    };
    let decision = config.policy.decide(scopes, &target);
    let allowed = decision.verdict == Verdict::Allow && findings.is_empty();
    out.push_str(&format!(
        "decision: {}\nreason: {}\n",
        if decision.verdict == Verdict::Allow {
            "allow"
        } else {
            "deny"
        },
        decision.reason
    ));
    let why = decision.why(&target);
    if !why.is_empty() {
        out.push_str(&format!("why: {why}\n"));
    }
    if let Some(rule) = &decision.rule {
        out.push_str(&format!("rule: {} ({})\n", rule.id, rule.describe()));
        match rule
            .credential
            .as_ref()
            .and_then(|c| config.credentials.get(c))
        {
            Some(def) => out.push_str(&format!(
                "credential: {} from the {} source, injected as {}\n",
                def.name,
                def.source.kind(),
                def.injection.describe()
            )),
            None => out.push_str("credential: none\n"),
        }
        if rule.allow_private {
            out.push_str("destination: private and loopback addresses allowed by this rule\n");
        }
    }
    out.push_str("nothing was sent.\n");
    Ok((allowed, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ws_url_asks_about_the_upgrade() {
        let text = "scopes:\n  chat:\n    - host: rt.example\n      methods: [GET]\n      websocket: true\n  \
                    plain:\n    - host: rt.example\n";
        let config = Config::parse(text, &std::collections::BTreeMap::new()).unwrap();
        let scopes = |name: &str| vec![name.to_string()];
        let (allowed, text) =
            explain(&config, &scopes("chat"), "GET", "wss://rt.example/s").unwrap();
        assert!(allowed, "{text}");
        assert!(text.contains("WebSocket upgrades too"), "{text}");
        let (allowed, text) =
            explain(&config, &scopes("plain"), "GET", "wss://rt.example/s").unwrap();
        assert!(!allowed, "{text}");
        assert!(text.contains("websocket: true"), "{text}");
        let (allowed, _) =
            explain(&config, &scopes("plain"), "GET", "https://rt.example/s").unwrap();
        assert!(allowed);
        assert!(explain(&config, &scopes("chat"), "POST", "wss://rt.example/s").is_err());
    }
}
