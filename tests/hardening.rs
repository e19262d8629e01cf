//! The proxy's hardening, through the real server: a request is admitted
//! before its body is read; blind tunnels close with their task; responses
//! without a body are recorded as allowed; every `Content-Encoding` line
//! counts; ranges are not forwarded next to a credential; a disagreement
//! about the destination closes the connection; method and URL override
//! headers never reach the upstream; a response cut by the end of its task
//! says so; deny rules match every spelling of their paths; and a request in
//! flight at shutdown still leaves its record.
//!
//! Each case would fail with the change it covers reverted.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use credgate::audit::{DecisionRecord, Verdict};
use credgate::reason::Reason;
use credgate::tls::CertificateAuthority;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// How many chunks `…/slow` sends, 15 ms apart (about three seconds).
const SLOW_CHUNKS: usize = 200;

/// The body of the response whose encoding cannot be scanned.
const UNSCANNABLE_BODY: &str = "pretend-this-is-gzip";

/// Headers that would make an upstream act on another method or path than
/// the one the rule matched.
const OVERRIDE_HEADERS: [(&str, &str); 5] = [
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-HTTP-Method", "DELETE"),
    ("X-Method-Override", "DELETE"),
    ("X-Original-URL", "/admin/delete-everything"),
    ("X-Rewrite-URL", "/admin/delete-everything"),
];

/// The test upstreams answer by the last path segment.
fn handler() -> Handler {
    Arc::new(|r: &Received| {
        let path = r.path_and_query.split('?').next().unwrap_or_default();
        let text = |body: &str| vec![body.as_bytes().to_vec()];
        match path.rsplit('/').next().unwrap_or_default() {
            "slow" => Reply {
                status: 200,
                headers: vec![("content-type".into(), "text/plain".into())],
                chunks: (0..SLOW_CHUNKS)
                    .map(|i| format!("chunk {i:04}\n").into_bytes())
                    .collect(),
            },
            "nocontent" => Reply {
                status: 204,
                headers: vec![("x-upstream".into(), "nocontent".into())],
                chunks: vec![],
            },
            "notmodified" => Reply {
                status: 304,
                headers: vec![("etag".into(), "\"v1\"".into())],
                chunks: vec![],
            },
            "double-encoded" => Reply {
                status: 200,
                // A first "identity" line must not hide the "gzip" after it.
                headers: vec![
                    ("content-encoding".into(), "identity".into()),
                    ("content-encoding".into(), "gzip".into()),
                ],
                chunks: text(UNSCANNABLE_BODY),
            },
            "connection-hides-encoding" => Reply {
                status: 200,
                // A Connection header naming Content-Encoding must not make
                // the encoding disappear before the body is judged.
                headers: vec![
                    ("content-encoding".into(), "gzip".into()),
                    ("connection".into(), "content-encoding".into()),
                ],
                chunks: text(UNSCANNABLE_BODY),
            },
            "identity-encoded" => Reply {
                status: 200,
                headers: vec![("content-encoding".into(), "identity".into())],
                chunks: text("identity body"),
            },
            "echo" => {
                let echoed: String = r
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\n"))
                    .collect();
                Reply::ok(&echoed)
            }
            _ if r.method == "HEAD" => Reply {
                status: 200,
                headers: vec![
                    ("content-type".into(), "text/plain".into()),
                    ("content-length".into(), "16".into()),
                ],
                chunks: vec![],
            },
            _ => Reply::ok("ok from upstream"),
        }
    })
}

/// The rules of scope `api` for one upstream port: `/cred/**` and
/// `/repos/acme/**` with the credential, `/repos/acme/secret/**` denied,
/// and (plain only) `/open/**` without a credential.
fn rules_for(port: u16, plain: bool) -> String {
    let schemes = if plain { "      schemes: [http]\n" } else { "" };
    let mut rules = format!(
        "    - host: api.test\n      port: {port}\n{schemes}      paths: [\"/cred/**\", \"/repos/acme/**\"]\n      credential: api\n      allow_private: true\n\
         \x20   - host: api.test\n      port: {port}\n{schemes}      paths: [\"/repos/acme/secret/**\"]\n      action: deny\n"
    );
    if plain {
        rules.push_str(&format!(
            "    - host: api.test\n      port: {port}\n{schemes}      paths: [\"/open/**\"]\n      allow_private: true\n"
        ));
    }
    rules
}

struct Setup {
    env: Env,
    /// HTTPS upstream for `api.test`.
    tls: Upstream,
    /// Plain-HTTP upstream for `api.test` on another port.
    plain: Upstream,
    /// The credential credgate injects.
    secret: String,
    id: String,
    token: String,
    /// `Proxy-Authorization` value for the task.
    auth: String,
}

/// credgate with a static credential `api`, scope `api` ([`rules_for`] both
/// upstreams) and `extra` (more top-level YAML).
async fn setup_with(extra: &str) -> Setup {
    let secret = test_secret();
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let tls = Upstream::start_tls(ca.clone(), "api.test", handler()).await;
    let plain = Upstream::start_plain(handler()).await;
    let config = format!(
        "credentials:\n  api:\n    static: {{ env: API_TOKEN }}\nscopes:\n  api:\n{}{}{extra}\n",
        rules_for(tls.port(), false),
        rules_for(plain.port(), true),
    );
    let env = Env::start_trusting(ca, &config, &[("API_TOKEN", &secret)]).await;
    env.resolver.map("api.test", "127.0.0.1");
    let (id, token) = env.start_task(&["api"]);
    Setup {
        auth: proxy_auth(&id, &token),
        env,
        tls,
        plain,
        secret,
        id,
        token,
    }
}

async fn setup() -> Setup {
    setup_with("").await
}

impl Setup {
    fn plain_authority(&self) -> String {
        format!("api.test:{}", self.plain.port())
    }

    fn tls_authority(&self) -> String {
        format!("api.test:{}", self.tls.port())
    }

    /// An authenticated absolute-form request for the plain upstream;
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

    fn assert_upstreams_untouched(&self) {
        let mut got = self.tls.received();
        got.extend(self.plain.received());
        assert!(got.is_empty(), "an upstream received {got:?}");
    }

    /// Neither the credential nor the task token in `text` or the log.
    async fn assert_no_secrets(&self, text: &str) {
        let log = self.env.log_text().await;
        for (what, value) in [
            ("the credential", &self.secret),
            ("the task token", &self.token),
        ] {
            assert!(!text.contains(value.as_str()), "{what} reached the agent");
            assert!(!log.contains(value.as_str()), "{what} is in the log");
        }
    }
}

/// A credgate denial: status, `x-credgate-reason` and the JSON `error`.
fn assert_refused(resp: &RawResponse, status: u16, reason: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(resp.reason(), Some(reason), "{}", resp.text());
    assert_eq!(resp.json()["error"], reason, "{}", resp.text());
}

/// The request records whose path is `path`, once there are `n` of them
/// (or about two seconds have passed), plus a moment to catch extra ones.
async fn records_for(env: &Env, path: &str, n: usize) -> Vec<DecisionRecord> {
    env.wait_for_records(n, |r| r.path.as_deref() == Some(path))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    env.request_records()
        .await
        .into_iter()
        .filter(|r| r.path.as_deref() == Some(path))
        .collect()
}

/// The request records once there are `n` (or about two seconds have
/// passed), plus a moment to catch extra ones.
async fn settled_records(env: &Env, n: usize) -> Vec<DecisionRecord> {
    env.wait_for_records(n, |_| true).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    env.request_records().await
}

/// The one request record whose path is `path`.
async fn only_record_for(env: &Env, path: &str) -> DecisionRecord {
    let mut found = records_for(env, path, 1).await;
    assert_eq!(found.len(), 1, "records for {path}: {found:#?}");
    found.remove(0)
}

/// Reads a response head only (the answer to HEAD, a 204, a 304: whatever
/// it announces, no body follows), at most `wait`.
async fn read_head_only<S: AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> RawResponse {
    let deadline = tokio::time::Instant::now() + wait;
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut byte)).await {
            Ok(Ok(1)) => data.push(byte[0]),
            other => panic!(
                "no complete head ({other:?}): {:?}",
                String::from_utf8_lossy(&data)
            ),
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    parsed.parse(&data).expect("a valid response head");
    RawResponse {
        status: parsed.code.unwrap_or_default(),
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
        raw: data,
    }
}

/// Reads the response head and the first body bytes of a streaming 200.
async fn read_first_chunk<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let has_body = |seen: &[u8]| {
        seen.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .is_some_and(|end| seen.len() > end + 4)
    };
    while !has_body(&seen) {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no body in time: {}", String::from_utf8_lossy(&seen)))
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
}

// Admission before the body.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_request_is_refused_before_its_body() {
    let s = setup().await;
    let a = s.plain_authority();
    let cases = [
        ("no token", String::new(), "task_token_missing"),
        (
            "a made-up token",
            format!(
                "Proxy-Authorization: {}\r\n",
                proxy_auth(&s.id, &test_secret())
            ),
            "task_token_invalid",
        ),
    ];
    for (what, auth, reason) in &cases {
        // A body of a megabyte is announced and never sent: the answer must
        // come at once, not after the body (or its timeout).
        let head = format!(
            "POST http://{a}/cred/upload HTTP/1.1\r\nHost: {a}\r\n{auth}Content-Length: 1000000\r\n\r\n"
        );
        let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let resp = read_response(&mut stream, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_refused(&resp, 407, reason);
        assert_eq!(resp.header("connection"), Some("close"), "{what}");
        expect_closed(&mut stream, Duration::from_secs(2))
            .await
            .unwrap_or_else(|e| panic!("{what}: the connection stays open: {e}"));
        s.assert_no_secrets(&resp.text()).await;
    }
    let records = settled_records(&s.env, cases.len()).await;
    assert_eq!(records.len(), cases.len(), "{records:#?}");
    for r in &records {
        assert_eq!(r.decision, Some(Verdict::Deny), "{r:?}");
        assert_eq!(r.method.as_deref(), Some("POST"), "{r:?}");
        assert_eq!(r.bytes_in, 0, "{r:?}");
    }
    let reasons: Vec<_> = records.iter().map(|r| r.reason).collect();
    assert!(
        reasons.contains(&Some(Reason::TaskTokenMissing)),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&Some(Reason::TaskTokenInvalid)),
        "{reasons:?}"
    );
    s.assert_upstreams_untouched();
    assert_eq!(s.env.resolver.count(), 0);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_is_answered_only_for_a_live_task() {
    let s = setup().await;
    let a = s.plain_authority();
    // Without a token: the first bytes are the 407, never a 100 Continue.
    let head = format!(
        "POST http://{a}/cred/upload HTTP/1.1\r\nHost: {a}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    );
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let resp = read_response(&mut stream, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(resp.raw.starts_with(b"HTTP/1.1 407 "), "{}", resp.text());
    assert_refused(&resp, 407, "task_token_missing");
    expect_closed(&mut stream, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("the connection stays open: {e}"));

    // With a token the agent is told to go ahead, and its body is forwarded.
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    stream
        .write_all(&s.plain_request(
            "POST",
            "/cred/upload",
            "Expect: 100-continue\r\nContent-Length: 5\r\n",
        ))
        .await
        .unwrap();
    let go_ahead = read_response(&mut stream, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(go_ahead.status, 100, "{}", go_ahead.text());
    let resp = exchange(&mut stream, b"hello").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let got = s.plain.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body, b"hello");
    let records = settled_records(&s.env, 2).await;
    assert_eq!(records.len(), 2, "{records:#?}");
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;
}

// Blind tunnels end with their task.

/// A TCP echo server on 127.0.0.1: its port, and how many of its
/// connections the other side has closed.
async fn echo_server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let closed = Arc::new(AtomicUsize::new(0));
    let count = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (port, closed)
}

/// Opens a blind tunnel to the echo server on `port` and sends `ping`
/// through it; returns the agent's side once the echo came back.
async fn ping_through_blind_tunnel(env: &Env, auth: &str, port: u16) -> TcpStream {
    let (mut stream, reply) = connect_raw(env, Some(auth), &format!("echo.test:{port}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut echoed))
        .await
        .expect("the echo in time")
        .unwrap();
    assert_eq!(&echoed, b"ping");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_tunnel_closes_when_its_task_ends() {
    let (port, closed) = echo_server().await;
    let config = format!(
        "scopes:\n  raw:\n    - host: echo.test\n      port: {port}\n      tunnel: true\n      allow_private: true\n"
    );
    let env = Env::start(&config, &[]).await;
    env.resolver.map("echo.test", "127.0.0.1");
    let (id, token) = env.start_task(&["raw"]);
    // Bytes that are no TLS handshake pass: the tunnel is blind.
    let mut stream = ping_through_blind_tunnel(&env, &proxy_auth(&id, &token), port).await;
    env.end_task(&id).await;
    expect_closed(&mut stream, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("the ended task's blind tunnel is still open: {e}"));
    let upstream_side = poll_until(Duration::from_secs(2), || {
        (closed.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    assert!(upstream_side.is_some(), "the upstream side stays open");

    let records = env.wait_for_record(|r| r.tunnel).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert!(r.tunnel, "{r:?}");
    assert_eq!(r.method.as_deref(), Some("CONNECT"));
    assert_eq!(r.host.as_deref(), Some("echo.test"));
    assert_eq!(r.port, Some(port));
    assert_eq!(r.decision, Some(Verdict::Allow), "{r:?}");
    assert!(r.credential.is_none(), "{r:?}");
    let log = env.log_text().await;
    assert!(!log.contains(&token), "the task token is in the log");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blind_tunnel_cut_by_task_end_records_its_bytes() {
    let (port, _closed) = echo_server().await;
    let config = format!(
        "scopes:\n  raw:\n    - host: echo.test\n      port: {port}\n      tunnel: true\n      allow_private: true\n"
    );
    let env = Env::start(&config, &[]).await;
    env.resolver.map("echo.test", "127.0.0.1");
    let (id, token) = env.start_task(&["raw"]);
    let auth = proxy_auth(&id, &token);
    // Closed by the agent: the record counts what moved.
    let stream = ping_through_blind_tunnel(&env, &auth, port).await;
    drop(stream);
    let records = env.wait_for_record(|r| r.tunnel).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(
        (records[0].bytes_in, records[0].bytes_out),
        (4, 4),
        "{records:#?}"
    );
    // Cut by the end of the task: the record must count it just the same.
    let mut stream = ping_through_blind_tunnel(&env, &auth, port).await;
    env.end_task(&id).await;
    expect_closed(&mut stream, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("the ended task's blind tunnel is still open: {e}"));
    let records = env.wait_for_records(2, |r| r.tunnel).await;
    assert_eq!(records.len(), 2, "{records:#?}");
    let cut = &records[1];
    assert_eq!((cut.bytes_in, cut.bytes_out), (4, 4), "{cut:?}");
    assert_eq!(cut.reason, Some(Reason::TaskEnded), "{cut:?}");
    env.stop().await;
}

// Responses without a body.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_responses_are_recorded_as_allowed() {
    let s = setup().await;
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    // One keep-alive connection: after each bodiless response the next
    // request must still be understood.
    for (method, path, status) in [
        ("HEAD", "/cred/head", 200),
        ("GET", "/cred/nocontent", 204),
        ("GET", "/cred/notmodified", 304),
        ("HEAD", "/open/head", 200),
    ] {
        let headers = if path.ends_with("notmodified") {
            "If-None-Match: \"v1\"\r\n"
        } else {
            ""
        };
        stream
            .write_all(&s.plain_request(method, path, headers))
            .await
            .unwrap();
        let resp = read_head_only(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(resp.status, status, "{path}: {}", resp.text());
        assert!(resp.reason().is_none(), "{path}: {}", resp.text());
        let r = only_record_for(&s.env, path).await;
        assert_eq!(r.decision, Some(Verdict::Allow), "{path}: {r:?}");
        assert_eq!(r.reason, Some(Reason::Allowed), "{path}: {r:?}");
        assert_eq!(
            r.upstream.and_then(|u| u.status),
            Some(status),
            "{path}: {r:?}"
        );
        assert_eq!(r.bytes_out, 0, "{path}: {r:?}");
        s.assert_no_secrets(&resp.text()).await;
    }
    let resp = exchange(&mut stream, &s.plain_request("GET", "/cred/after", "")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, b"ok from upstream");

    // The same inside an intercepted tunnel.
    let mut tls = s.open_tunnel().await;
    tls.write_all(&s.inner_request("HEAD", "/cred/tunnel-head", ""))
        .await
        .unwrap();
    let resp = read_head_only(&mut tls, Duration::from_secs(5)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let r = only_record_for(&s.env, "/cred/tunnel-head").await;
    assert_eq!(r.reason, Some(Reason::Allowed), "{r:?}");
    assert_eq!(r.upstream.and_then(|u| u.status), Some(200), "{r:?}");
    let resp = exchange(&mut tls, &s.inner_request("GET", "/cred/nocontent", "")).await;
    assert_eq!(resp.status, 204, "{}", resp.text());
    let records = records_for(&s.env, "/cred/nocontent", 2).await;
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(
        records.iter().all(|r| r.reason == Some(Reason::Allowed)),
        "{records:#?}"
    );
    s.env.stop().await;
}

// Every Content-Encoding line counts.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_content_encoding_line_makes_the_response_unscannable() {
    let s = setup().await;
    let (_stream, resp) =
        send_plain(&s.env, &s.plain_request("GET", "/cred/double-encoded", "")).await;
    assert_refused(&resp, 502, "response_unscannable");
    assert!(!resp.text().contains(UNSCANNABLE_BODY), "{}", resp.text());
    let r = only_record_for(&s.env, "/cred/double-encoded").await;
    assert_eq!(r.decision, Some(Verdict::Deny), "{r:?}");
    assert_eq!(r.reason, Some(Reason::ResponseUnscannable), "{r:?}");

    let (_stream, resp) = send_plain(
        &s.env,
        &s.plain_request("GET", "/cred/connection-hides-encoding", ""),
    )
    .await;
    assert_refused(&resp, 502, "response_unscannable");
    assert!(!resp.text().contains(UNSCANNABLE_BODY), "{}", resp.text());

    let mut tls = s.open_tunnel().await;
    let resp = exchange(
        &mut tls,
        &s.inner_request("GET", "/cred/double-encoded", ""),
    )
    .await;
    assert_refused(&resp, 502, "response_unscannable");
    assert!(!resp.text().contains(UNSCANNABLE_BODY), "{}", resp.text());

    // "identity" alone is no encoding at all.
    let resp = exchange(
        &mut tls,
        &s.inner_request("GET", "/cred/identity-encoded", ""),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.body, b"identity body");
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;
}

// Range requests next to a credential.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_headers_are_dropped_only_when_a_credential_is_injected() {
    let s = setup().await;
    let range = "Range: bytes=0-3\r\nIf-Range: \"v1\"\r\n";
    let (_stream, resp) = send_plain(&s.env, &s.plain_request("GET", "/cred/echo", range)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let (_stream, resp_open) =
        send_plain(&s.env, &s.plain_request("GET", "/open/echo", range)).await;
    assert_eq!(resp_open.status, 200, "{}", resp_open.text());
    let mut tls = s.open_tunnel().await;
    let resp_tls = exchange(&mut tls, &s.inner_request("GET", "/cred/echo", range)).await;
    assert_eq!(resp_tls.status, 200, "{}", resp_tls.text());

    let mut got = s.plain.received();
    got.extend(s.tls.received());
    assert_eq!(got.len(), 3, "{got:?}");
    for r in &got {
        let credential = r.path_and_query.starts_with("/cred/");
        assert_eq!(!r.header("authorization").is_empty(), credential, "{r:?}");
        if credential {
            assert!(r.header("range").is_empty(), "{r:?}");
            assert!(r.header("if-range").is_empty(), "{r:?}");
        } else {
            assert_eq!(r.header("range"), vec!["bytes=0-3"], "{r:?}");
            assert_eq!(r.header("if-range"), vec!["\"v1\""], "{r:?}");
        }
    }
    s.assert_no_secrets(&format!(
        "{}{}{}",
        resp.text(),
        resp_open.text(),
        resp_tls.text()
    ))
    .await;
    s.env.stop().await;
}

// A disagreement about the destination closes the connection.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_mismatch_closes_a_keep_alive_connection() {
    let s = setup().await;
    let a = s.plain_authority();
    // The refused request, and right behind it on the same connection one
    // that would be allowed.
    let mut pipelined = format!(
        "GET http://{a}/open/first HTTP/1.1\r\nHost: evil.test\r\nProxy-Authorization: {}\r\nConnection: keep-alive\r\n\r\n",
        s.auth
    )
    .into_bytes();
    pipelined.extend(s.plain_request("GET", "/open/second", "Connection: keep-alive\r\n"));
    let (mut stream, resp) = send_plain(&s.env, &pipelined).await;
    assert_refused(&resp, 400, "host_mismatch");
    expect_closed(&mut stream, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("the connection outlived a host mismatch: {e}"));
    s.assert_upstreams_untouched();
    let records = settled_records(&s.env, 1).await;
    assert_eq!(
        records.len(),
        1,
        "the second request was read: {records:#?}"
    );
    assert_eq!(records[0].reason, Some(Reason::HostMismatch));

    // A policy denial is no disagreement: the connection carries on.
    let (mut stream, resp) = send_plain(&s.env, &s.plain_request("GET", "/elsewhere", "")).await;
    assert_refused(&resp, 403, "no_matching_rule");
    let next = exchange(&mut stream, &s.plain_request("GET", "/open/third", "")).await;
    assert_eq!(next.status, 200, "{}", next.text());
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misdirected_request_closes_a_keep_alive_tunnel() {
    let s = setup().await;
    let port = s.tls.port();
    let mut pipelined = format!(
        "GET /cred/first HTTP/1.1\r\nHost: evil.test:{port}\r\nConnection: keep-alive\r\n\r\n"
    )
    .into_bytes();
    pipelined.extend(s.inner_request("GET", "/cred/second", "Connection: keep-alive\r\n"));
    let mut tls = s.open_tunnel().await;
    let resp = exchange(&mut tls, &pipelined).await;
    assert_refused(&resp, 421, "misdirected_request");
    expect_closed(&mut tls, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("the tunnel outlived a misdirected request: {e}"));
    s.assert_upstreams_untouched();
    assert_eq!(s.env.resolver.count(), 0);
    // The CONNECT and the misdirected request only.
    let records = settled_records(&s.env, 2).await;
    assert_eq!(
        records.len(),
        2,
        "the second request was read: {records:#?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r.reason == Some(Reason::MisdirectedRequest)),
        "{records:#?}"
    );
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;
}

// Method and URL override headers.

/// The override headers as request header lines.
fn override_lines() -> String {
    OVERRIDE_HEADERS
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect()
}

/// The upstream got none of the override headers, and the record of `path`
/// names every one of them as stripped.
async fn assert_overrides_stripped(env: &Env, got: &[Received], path: &str) {
    let r = got
        .iter()
        .find(|r| r.path_and_query == path)
        .unwrap_or_else(|| panic!("{path} not forwarded: {got:?}"));
    assert_eq!(r.method, "GET", "{r:?}");
    for (name, value) in OVERRIDE_HEADERS {
        assert!(r.header(name).is_empty(), "{name} forwarded: {r:?}");
        assert!(
            !r.headers
                .iter()
                .any(|(_, v)| v == value && v.starts_with('/')),
            "{r:?}"
        );
    }
    let rec = only_record_for(env, path).await;
    assert_eq!(rec.decision, Some(Verdict::Allow), "{rec:?}");
    for (name, _) in OVERRIDE_HEADERS {
        let name = name.to_ascii_lowercase();
        assert!(rec.stripped.contains(&name), "{name} not in {rec:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_and_url_override_headers_never_reach_the_upstream() {
    let s = setup().await;
    let (_stream, resp) = send_plain(
        &s.env,
        &s.plain_request("GET", "/open/echo", &override_lines()),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_overrides_stripped(&s.env, &s.plain.received(), "/open/echo").await;

    let mut tls = s.open_tunnel().await;
    let resp = exchange(
        &mut tls,
        &s.inner_request("GET", "/cred/echo", &override_lines()),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_overrides_stripped(&s.env, &s.tls.received(), "/cred/echo").await;
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;

    // Also when the configured strip list replaces the default one.
    let s = setup_with("sanitize:\n  strip_headers: [cookie]\n").await;
    let (_stream, resp) = send_plain(
        &s.env,
        &s.plain_request("GET", "/open/echo", &override_lines()),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_overrides_stripped(&s.env, &s.plain.received(), "/open/echo").await;
    s.env.stop().await;
}

// A response cut by the end of its task.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_response_cut_by_task_end_is_recorded_as_task_ended() {
    let s = setup().await;
    let mut plain = TcpStream::connect(s.env.proxy).await.unwrap();
    plain
        .write_all(&s.plain_request("GET", "/cred/slow", ""))
        .await
        .unwrap();
    read_first_chunk(&mut plain).await;
    let mut tls = s.open_tunnel().await;
    tls.write_all(&s.inner_request("GET", "/cred/slow", ""))
        .await
        .unwrap();
    read_first_chunk(&mut tls).await;

    s.env.end_task(&s.id).await;
    // Whatever was already in flight may still arrive; then the close.
    for (what, result) in [
        (
            "plain",
            closes_within(&mut plain, Duration::from_secs(2)).await,
        ),
        (
            "tunnel",
            closes_within(&mut tls, Duration::from_secs(2)).await,
        ),
    ] {
        let more = result.unwrap_or_else(|e| panic!("{what}: the response kept streaming: {e}"));
        assert!(
            more < SLOW_CHUNKS * 11 / 10,
            "{what}: {more} bytes after the end"
        );
    }
    let records = records_for(&s.env, "/cred/slow", 2).await;
    assert_eq!(records.len(), 2, "{records:#?}");
    for r in &records {
        assert_eq!(r.reason, Some(Reason::TaskEnded), "{r:?}");
        assert_eq!(r.upstream.and_then(|u| u.status), Some(200), "{r:?}");
        assert!(
            r.bytes_out > 0 && r.bytes_out < (SLOW_CHUNKS * 11) as u64,
            "{r:?}"
        );
    }
    s.assert_no_secrets("").await;
    s.env.stop().await;
}

/// Reads until the peer closes, at most `wait`: the number of bytes that
/// still arrived, or what happened instead.
async fn closes_within<S: AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> Result<usize, String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(format!("still open after {wait:?} ({total} bytes more)")),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(total),
            Ok(Ok(n)) => total += n,
        }
    }
}

// Deny rules match every spelling of their paths.

/// Refused by the deny rule.
fn assert_denied(resp: &RawResponse, what: &str) {
    assert_eq!(resp.status, 403, "{what}: {}", resp.text());
    assert_eq!(
        resp.reason(),
        Some("denied_by_rule"),
        "{what}: {}",
        resp.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_rules_match_equivalent_path_spellings() {
    let s = setup().await;
    let spellings = [
        "/repos/acme/secret/x",
        "/repos/acme//secret/x",
        "/repos/acme/secret;x/x",
        "/repos/acme/Secret/x",
        "/repos/acme/SECRET/x",
        "/repos/acme/%73ecret/x",
        "/repos/acme/./secret/x",
    ];
    for path in spellings {
        let (_stream, resp) = send_plain(&s.env, &s.plain_request("GET", path, "")).await;
        assert_denied(&resp, &format!("plain {path}"));
        let mut tls = s.open_tunnel().await;
        let resp = exchange(&mut tls, &s.inner_request("GET", path, "")).await;
        assert_denied(&resp, &format!("tunnel {path}"));
    }
    s.assert_upstreams_untouched();
    assert_eq!(s.env.resolver.count(), 0, "a denied request was resolved");
    let records = s.env.request_records().await;
    let denied = records
        .iter()
        .filter(|r| r.method.as_deref() == Some("GET"))
        .collect::<Vec<_>>();
    assert_eq!(denied.len(), spellings.len() * 2, "{records:#?}");
    assert!(
        denied
            .iter()
            .all(|r| r.decision == Some(Verdict::Deny) && r.reason == Some(Reason::DeniedByRule)),
        "{denied:#?}"
    );

    // The allow rule itself works: a sibling path goes through.
    let (_stream, resp) =
        send_plain(&s.env, &s.plain_request("GET", "/repos/acme/public/x", "")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(s.plain.received().len(), 1);
    s.assert_no_secrets(&resp.text()).await;
    s.env.stop().await;
}

// A request in flight when its task ends or credgate stops.

/// A plain upstream that reads a request head and then holds the exchange
/// open without answering (at most ten seconds); counts the heads it read.
async fn stalling_upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(AtomicUsize::new(0));
    let count = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                let hold = async {
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                seen.extend_from_slice(&buf[..n]);
                                if seen.windows(4).any(|w| w == b"\r\n\r\n") {
                                    seen.clear();
                                    count.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(10), hold).await;
            });
        }
    });
    (port, heads)
}

/// Request records for `path` in the log file at `audit`, read as it is.
fn logged_records(audit: &std::path::Path, path: &str) -> Vec<DecisionRecord> {
    std::fs::read_to_string(audit)
        .expect("the decision log is there")
        .lines()
        .map(|l| serde_json::from_str::<DecisionRecord>(l).unwrap())
        .filter(|r| r.path.as_deref() == Some(path))
        .collect()
}

/// credgate with a rule for [`stalling_upstream`], a task, and a plain
/// request to it (path `/waiting`) that the upstream has received and will
/// not answer; returns the task id and the agent's connection.
async fn request_waiting_upstream() -> (Env, String, TcpStream) {
    let (port, heads) = stalling_upstream().await;
    let config = format!(
        "scopes:\n  api:\n    - host: api.test\n      port: {port}\n      schemes: [http]\n      allow_private: true\n"
    );
    let env = Env::start(&config, &[]).await;
    env.resolver.map("api.test", "127.0.0.1");
    let (id, token) = env.start_task(&["api"]);
    let mut stream = TcpStream::connect(env.proxy).await.unwrap();
    let a = format!("api.test:{port}");
    let request = format!(
        "GET http://{a}/waiting HTTP/1.1\r\nHost: {a}\r\nProxy-Authorization: {}\r\n\r\n",
        proxy_auth(&id, &token)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let arrived = poll_until(Duration::from_secs(2), || {
        (heads.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    assert!(arrived.is_some(), "the request never reached the upstream");
    (env, id, stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_waiting_upstream_is_cut_when_its_task_ends() {
    let (env, id, mut stream) = request_waiting_upstream().await;
    env.end_task(&id).await;
    // The agent is told why (407 task_ended), then the connection closes.
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        read_until_quiet(&mut stream, Duration::from_millis(500)),
    )
    .await
    .unwrap_or_else(|_| panic!("the ended task's request is still waiting"));
    assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
    assert!(answer.contains("task_ended"), "{answer}");
    let more = closes_within(&mut stream, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("the connection stays open after the task ended: {e}"));
    assert_eq!(more, 0, "more bytes after the task-ended answer");
    let records = records_for(&env, "/waiting", 1).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].reason, Some(Reason::TaskEnded), "{records:#?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_one_record_for_a_request_waiting_upstream() {
    let (env, id, mut stream) = request_waiting_upstream().await;
    let audit = env.audit.clone();
    let _files = tokio::time::timeout(Duration::from_secs(10), env.stop_keeping_files())
        .await
        .expect("shutdown in time");
    let records = logged_records(&audit, "/waiting");
    assert_eq!(
        records.len(),
        1,
        "records right after shutdown: {records:#?}"
    );
    assert_eq!(records[0].task.as_deref(), Some(id.as_str()));
    // The agent is not left hanging either.
    closes_within(&mut stream, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("the agent's connection: {e}"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(logged_records(&audit, "/waiting").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_one_record_for_a_streaming_response() {
    let s = setup().await;
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    stream
        .write_all(&s.plain_request("GET", "/open/slow", ""))
        .await
        .unwrap();
    read_first_chunk(&mut stream).await;
    let audit = s.env.audit.clone();
    let _files = tokio::time::timeout(Duration::from_secs(10), s.env.stop_keeping_files())
        .await
        .expect("shutdown in time");
    let records = logged_records(&audit, "/open/slow");
    assert_eq!(
        records.len(),
        1,
        "records right after shutdown: {records:#?}"
    );
    assert_eq!(records[0].upstream.and_then(|u| u.status), Some(200));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(logged_records(&audit, "/open/slow").len(), 1);
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(!log.contains(&s.secret) && !log.contains(&s.token));
}

// A keep-alive connection is authenticated per request, not once.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_on_a_keep_alive_connection_is_authenticated_anew() {
    let s = setup().await;
    let (other_id, other_token) = s.env.start_task(&["api"]);
    let other_auth = proxy_auth(&other_id, &other_token);
    let wrong_auth = proxy_auth(&s.id, &test_secret());
    let a = s.plain_authority();
    let request = |path: &str, auth: &str| {
        format!("GET http://{a}{path} HTTP/1.1\r\nHost: {a}\r\nProxy-Authorization: {auth}\r\n\r\n")
            .into_bytes()
    };
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();

    let resp = exchange(&mut stream, &request("/open/first", &s.auth)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // Another task's token on the same connection is that task.
    let resp = exchange(&mut stream, &request("/open/other", &other_auth)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    // A wrong token for the first task's id is refused, whatever came before.
    let resp = exchange(&mut stream, &request("/open/wrong", &wrong_auth)).await;
    assert_refused(&resp, 407, "task_token_invalid");
    let first = only_record_for(&s.env, "/open/first").await;
    let other = only_record_for(&s.env, "/open/other").await;
    assert_eq!(first.task.as_deref(), Some(s.id.as_str()), "{first:?}");
    assert_eq!(other.task.as_deref(), Some(other_id.as_str()), "{other:?}");

    // The first task again, then it ends: the same header, on a connection
    // where it was accepted, is refused from then on.
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    let resp = exchange(&mut stream, &request("/open/before-end", &s.auth)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    s.env.end_task(&s.id).await;
    let resp = exchange(&mut stream, &request("/open/after-end", &s.auth)).await;
    assert_refused(&resp, 407, "task_ended");
    s.env.stop().await;
}
