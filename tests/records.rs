//! The decision log: exactly one record per request the listener parses,
//! whatever happens to the request (denied, failed, client gone mid-body or
//! mid-response), and every documented field in the line of an allowed one.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use credgate::audit::Verdict;
use credgate::reason::Reason;
use credgate::tls::CertificateAuthority;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How many chunks `/slow` sends, 15 ms apart.
const SLOW_CHUNKS: usize = 200;

fn handler() -> Handler {
    Arc::new(|r: &Received| match r.path_and_query.as_str() {
        "/slow" => Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            chunks: (0..SLOW_CHUNKS)
                .map(|i| format!("chunk {i:04}\n").into_bytes())
                .collect(),
        },
        "/error" => Reply {
            status: 500,
            headers: vec![],
            chunks: vec![b"upstream failed".to_vec()],
        },
        _ => Reply::ok("ok from upstream"),
    })
}

struct Setup {
    env: Env,
    tls: Upstream,
    plain: Upstream,
    /// A port nothing listens on, allowed by a rule.
    down: u16,
    secret: String,
    token: String,
    auth: String,
}

async fn setup() -> Setup {
    let secret = test_secret();
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let tls = Upstream::start_tls(ca.clone(), "api.test", handler()).await;
    let plain = Upstream::start_plain(handler()).await;
    let down = closed_port().await;
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
      paths: ["/v1/**", "/slow", "/error"]
      credential: api
      allow_private: true
    - host: api.test
      port: {tls}
      paths: ["/lenient/**"]
      credential: api
      allow_private: true
      on_secret: strip
    - host: api.test
      port: {plain}
      schemes: [http]
      methods: [GET, POST]
      paths: ["/v1/**", "/slow", "/error"]
      credential: api
      allow_private: true
    - host: api.test
      port: {down}
      schemes: [http, https]
      credential: api
      allow_private: true
"#,
        tls = tls.port(),
        plain = plain.port(),
    );
    let env = Env::start_trusting(ca, &config, &[("API_TOKEN", &secret)]).await;
    env.resolver.map("api.test", "127.0.0.1");
    let (id, token) = env.start_task(&["api"]);
    Setup {
        auth: proxy_auth(&id, &token),
        env,
        tls,
        plain,
        down,
        secret,
        token,
    }
}

impl Setup {
    fn plain_request(&self, method: &str, port: u16, path: &str, headers: &str) -> Vec<u8> {
        format!(
            "{method} http://api.test:{port}{path} HTTP/1.1\r\nHost: api.test:{port}\r\nProxy-Authorization: {}\r\n{headers}\r\n",
            self.auth
        )
        .into_bytes()
    }

    fn inner_request(&self, method: &str, path: &str, headers: &str) -> Vec<u8> {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: api.test:{}\r\n{headers}\r\n",
            self.tls.port()
        )
        .into_bytes()
    }

    async fn open_tunnel(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let target = format!("api.test:{}", self.tls.port());
        tunnel(&self.env, &self.auth, &target, "api.test")
            .await
            .unwrap_or_else(|e| panic!("tunnel refused: {e}"))
    }

    async fn assert_no_secrets(&self) {
        let log = self.env.log_text().await;
        assert!(!log.contains(&self.secret), "credential in the log");
        assert!(!log.contains(&self.token), "task token in the log");
    }
}

/// `head` (a complete request head) followed by the body `hello`.
fn post_hello(mut head: Vec<u8>) -> Vec<u8> {
    head.extend_from_slice(b"hello");
    head
}

/// Waits for `n` request records, then a little longer to catch extra ones.
async fn settle(env: &Env, n: usize) -> Vec<credgate::audit::DecisionRecord> {
    env.wait_for_records(n, |_| true).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    env.request_records().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_record_per_request_in_a_mixed_sequence() {
    let s = setup().await;
    let (p, down) = (s.plain.port(), s.down);
    let mut error_ids = Vec::new();
    let mut expected = 0;

    // Plain proxy, one connection each.
    let plain_cases: Vec<(Vec<u8>, u16)> = vec![
        (s.plain_request("GET", p, "/v1/items", ""), 200),
        (s.plain_request("GET", p, "/elsewhere", ""), 403),
        (
            format!("GET http://api.test:{p}/v1/items HTTP/1.1\r\nHost: api.test:{p}\r\n\r\n")
                .into_bytes(),
            407,
        ),
        (s.plain_request("TRACE", p, "/v1/items", ""), 405),
        (s.plain_request("GET", down, "/v1/items", ""), 502),
        (
            s.plain_request(
                "POST",
                p,
                "/v1/items",
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            ),
            400,
        ),
        (s.plain_request("GET", p, "/error", ""), 500),
    ];
    for (request, status) in &plain_cases {
        let (_stream, resp) = send_plain(&s.env, request).await;
        assert_eq!(resp.status, *status, "{}", resp.text());
        if resp.reason().is_some() {
            error_ids.push(resp.json()["record"].as_str().unwrap().to_string());
        }
        expected += 1;
    }

    // A refused CONNECT.
    let (_stream, resp) = connect_raw(&s.env, Some(&s.auth), "evil.test:443").await;
    assert_eq!(resp.status, 403);
    error_ids.push(resp.json()["record"].as_str().unwrap().to_string());
    expected += 1;

    // An intercepted tunnel (one record) with four requests inside.
    let mut tls = s.open_tunnel().await;
    expected += 1;
    for (request, status) in [
        (s.inner_request("GET", "/v1/items", ""), 200),
        (s.inner_request("GET", "/elsewhere", ""), 403),
        (
            post_hello(s.inner_request("POST", "/v1/items", "Content-Length: 5\r\n")),
            200,
        ),
        (s.inner_request("GET", "/error", ""), 500),
    ] {
        let resp = exchange(&mut tls, &request).await;
        assert_eq!(resp.status, status, "{}", resp.text());
        if resp.reason().is_some() {
            error_ids.push(resp.json()["record"].as_str().unwrap().to_string());
        }
        expected += 1;
    }
    tls.shutdown().await.unwrap();

    // Three requests on one keep-alive plain connection.
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    for (path, status) in [("/v1/a", 200), ("/nope", 403), ("/v1/b", 200)] {
        let resp = exchange(&mut stream, &s.plain_request("GET", p, path, "")).await;
        assert_eq!(resp.status, status, "{}", resp.text());
        expected += 1;
    }
    drop(stream);

    let records = settle(&s.env, expected).await;
    assert_eq!(records.len(), expected, "{records:#?}");
    let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), records.len(), "record ids repeat");
    for id in &error_ids {
        let n = records.iter().filter(|r| &r.id == id).count();
        assert_eq!(n, 1, "the record {id} named in an error body");
    }
    let allowed = records
        .iter()
        .filter(|r| r.decision == Some(Verdict::Allow))
        .count();
    // Plain 200 + 500, the CONNECT, three inside the tunnel, two keep-alive.
    assert_eq!(allowed, 8, "{records:#?}");
    s.assert_no_secrets().await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_closed_between_requests_adds_no_record() {
    let s = setup().await;
    let mut tls = s.open_tunnel().await;
    let resp = exchange(&mut tls, &s.inner_request("GET", "/v1/items", "")).await;
    assert_eq!(resp.status, 200);
    // Most clients close the TCP connection without a TLS close_notify.
    drop(tls);
    let records = settle(&s.env, 3).await;
    assert_eq!(
        records.len(),
        2,
        "CONNECT and one request only: {records:#?}"
    );
    s.env.stop().await;
}

/// Sends a head announcing 100 body bytes, then 10 of them, then closes.
async fn send_truncated_body<S: tokio::io::AsyncWrite + Unpin>(stream: &mut S, head: Vec<u8>) {
    stream.write_all(&head).await.unwrap();
    stream.write_all(b"0123456789").await.unwrap();
    stream.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_request_body_yields_one_record() {
    let s = setup().await;
    let p = s.plain.port();
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    send_truncated_body(
        &mut stream,
        s.plain_request("POST", p, "/v1/items", "Content-Length: 100\r\n"),
    )
    .await;
    drop(stream);
    let records = settle(&s.env, 1).await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].reason, Some(Reason::ClientDisconnected));
    assert_eq!(records[0].method.as_deref(), Some("POST"));

    // The same inside a tunnel.
    let mut tls = s.open_tunnel().await;
    send_truncated_body(
        &mut tls,
        s.inner_request("POST", "/v1/items", "Content-Length: 100\r\n"),
    )
    .await;
    drop(tls);
    let records = settle(&s.env, 3).await;
    assert_eq!(records.len(), 3, "{records:#?}");
    let gone = records
        .iter()
        .filter(|r| r.reason == Some(Reason::ClientDisconnected))
        .count();
    assert_eq!(gone, 2, "{records:#?}");
    assert!(s.plain.received().is_empty() && s.tls.received().is_empty());
    s.assert_no_secrets().await;
    s.env.stop().await;
}

/// Reads the response head and the first body bytes, then returns.
async fn read_first_chunk<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) {
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
    assert!(seen.starts_with(b"HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_mid_response_yields_one_record() {
    let s = setup().await;
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    stream
        .write_all(&s.plain_request("GET", s.plain.port(), "/slow", ""))
        .await
        .unwrap();
    read_first_chunk(&mut stream).await;
    drop(stream);
    let records = s
        .env
        .wait_for_record(|r| r.reason == Some(Reason::ClientDisconnected))
        .await;
    let slow: Vec<_> = records
        .iter()
        .filter(|r| r.path.as_deref() == Some("/slow"))
        .collect();
    assert_eq!(slow.len(), 1, "{records:#?}");
    assert_eq!(
        slow[0].reason,
        Some(Reason::ClientDisconnected),
        "{:?}",
        slow[0]
    );
    assert_eq!(slow[0].upstream.and_then(|u| u.status), Some(200));
    assert!(slow[0].bytes_out > 0 && slow[0].bytes_out < (SLOW_CHUNKS * 11) as u64);

    // The same inside a tunnel.
    let mut tls = s.open_tunnel().await;
    tls.write_all(&s.inner_request("GET", "/slow", ""))
        .await
        .unwrap();
    read_first_chunk(&mut tls).await;
    drop(tls);
    let records = s
        .env
        .wait_for_records(2, |r| r.reason == Some(Reason::ClientDisconnected))
        .await;
    let slow: Vec<_> = records
        .iter()
        .filter(|r| r.path.as_deref() == Some("/slow"))
        .collect();
    assert_eq!(slow.len(), 2, "{records:#?}");
    assert!(
        slow.iter()
            .all(|r| r.reason == Some(Reason::ClientDisconnected)),
        "{slow:#?}"
    );
    // Two requests, one CONNECT: nothing else.
    let records = settle(&s.env, 3).await;
    assert_eq!(records.len(), 3, "{records:#?}");
    s.assert_no_secrets().await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_a_502_record() {
    let s = setup().await;
    let (_stream, resp) =
        send_plain(&s.env, &s.plain_request("GET", s.down, "/v1/items", "")).await;
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert_eq!(resp.reason(), Some("upstream_connect_failed"));
    assert_eq!(resp.json()["error"], "upstream_connect_failed");

    let target = format!("api.test:{}", s.down);
    let mut tls = tunnel(&s.env, &s.auth, &target, "api.test").await.unwrap();
    let request = format!("GET /v1/items HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let inner = exchange(&mut tls, request.as_bytes()).await;
    assert_eq!(inner.status, 502, "{}", inner.text());
    assert_eq!(inner.reason(), Some("upstream_connect_failed"));
    tls.shutdown().await.unwrap();

    for text in [resp.text(), inner.text()] {
        assert!(
            !text.contains(&s.secret) && !text.contains(&s.token),
            "{text}"
        );
    }
    let records = settle(&s.env, 3).await;
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r.reason == Some(Reason::UpstreamConnectFailed))
        .collect();
    assert_eq!(failed.len(), 2, "{records:#?}");
    for r in failed {
        assert_eq!(r.decision, Some(Verdict::Deny));
        assert_eq!(r.port, Some(s.down));
        assert!(r.upstream.is_none_or(|u| u.status.is_none()), "{r:?}");
    }
    assert_eq!(records.len(), 3, "{records:#?}");
    s.assert_no_secrets().await;
    s.env.stop().await;
}

/// Every field of the record format.
const FIELDS: [&str; 21] = [
    "ts",
    "id",
    "task",
    "agent",
    "labels",
    "method",
    "scheme",
    "host",
    "port",
    "path",
    "decision",
    "rule",
    "reason",
    "stripped",
    "findings",
    "credential",
    "upstream",
    "bytes_in",
    "bytes_out",
    "scrubbed",
    "duration_ms",
];

/// The raw JSON line of the request record whose path is `path`.
async fn record_line(env: &Env, path: &str) -> serde_json::Map<String, serde_json::Value> {
    env.wait_for_record(|r| r.path.as_deref() == Some(path))
        .await;
    let text = env.log_text().await;
    let lines: Vec<serde_json::Map<String, serde_json::Value>> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Map<String, serde_json::Value>| v["path"] == path)
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    lines.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_record_has_every_field() {
    let s = setup().await;
    // An allowed request that also had a header stripped and a secret
    // removed, so the detail fields (left out when empty) are all there.
    let query_secret = test_secret();
    let mut tls = s.open_tunnel().await;
    let request = post_hello(s.inner_request(
        "POST",
        &format!("/lenient/report?access_token={query_secret}"),
        &format!("Authorization: Bearer {query_secret}\r\nContent-Length: 5\r\n"),
    ));
    let resp = exchange(&mut tls, &request).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    tls.shutdown().await.unwrap();

    let line = record_line(&s.env, "/lenient/report").await;
    for field in FIELDS {
        assert!(line.contains_key(field), "{field} missing from {line:?}");
    }
    let ts = line["ts"].as_str().unwrap();
    assert!(ts.len() == 24 && ts.ends_with('Z'), "{ts}");
    let id = line["id"].as_str().unwrap();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(line["event"], "request");
    assert!(line["task"].as_str().unwrap().starts_with("task-"));
    assert_eq!(line["agent"], "test-agent");
    assert_eq!(line["labels"]["ticket"], "T-1");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["scheme"], "https");
    assert_eq!(line["host"], "api.test");
    assert_eq!(line["port"], s.tls.port());
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["rule"], "api[1]");
    assert_eq!(line["reason"], "allowed");
    assert_eq!(line["stripped"], serde_json::json!(["authorization"]));
    assert_eq!(line["findings"], serde_json::json!(["secret_query_param"]));
    assert_eq!(line["credential"]["name"], "api");
    assert_eq!(line["credential"]["source"], "static");
    assert!(line["credential"]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(line["upstream"]["status"], 200);
    assert_eq!(line["bytes_in"], 5);
    assert_eq!(line["bytes_out"], resp.body.len());
    assert_eq!(line["scrubbed"], 0);
    assert!(line["duration_ms"].is_u64());
    let text = s.env.log_text().await;
    assert!(
        !text.contains(&query_secret),
        "the agent's secret is in the log"
    );

    // A plain allowed request with nothing stripped: every field but the
    // detail ones that are documented as left out when empty.
    let (_stream, resp) = send_plain(
        &s.env,
        &s.plain_request("GET", s.plain.port(), "/v1/plain", ""),
    )
    .await;
    assert_eq!(resp.status, 200);
    let line = record_line(&s.env, "/v1/plain").await;
    for field in FIELDS
        .iter()
        .filter(|f| !matches!(**f, "stripped" | "findings"))
    {
        assert!(line.contains_key(*field), "{field} missing from {line:?}");
    }
    assert_eq!(line["scheme"], "http");
    assert_eq!(line["decision"], "allow");
    s.assert_no_secrets().await;
    s.env.stop().await;
}

// A 407 challenge: libcurl (git, `curl --proxy-anyauth`) and Java send a
// request without Proxy-Authorization first, then retry with credentials.

/// `CONNECT target` as a raw request, with `auth` when given.
fn connect_request(target: &str, auth: Option<&str>) -> Vec<u8> {
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n").into_bytes()
}

/// (method, decision, reason) of each record, in order.
fn outcomes(
    records: &[credgate::audit::DecisionRecord],
) -> Vec<(Option<&str>, Option<Verdict>, Option<Reason>)> {
    records
        .iter()
        .map(|r| (r.method.as_deref(), r.decision, r.reason))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_challenge_answered_on_the_same_connection_is_a_challenge() {
    let s = setup().await;
    let target = format!("api.test:{}", s.tls.port());
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    let resp = exchange(&mut stream, &connect_request(&target, None)).await;
    assert_eq!(resp.status, 407, "{}", resp.text());
    assert_eq!(resp.reason(), Some("task_token_missing"));
    assert_eq!(
        resp.header("proxy-authenticate"),
        Some("Basic realm=\"credgate\"")
    );
    // No body and no `Connection: close`: the retry comes on this socket.
    assert_eq!(resp.header("content-length"), Some("0"));
    assert_eq!(resp.header("connection"), None);

    let resp = exchange(&mut stream, &connect_request(&target, Some(&s.auth))).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let mut tls = tls_over(stream, &s.env.ca_cert, "api.test", &[])
        .await
        .unwrap();
    let resp = exchange(&mut tls, &s.inner_request("GET", "/v1/items", "")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    drop(tls);

    let records = settle(&s.env, 3).await;
    assert_eq!(
        outcomes(&records),
        [
            (
                Some("CONNECT"),
                Some(Verdict::Challenge),
                Some(Reason::TaskTokenMissing)
            ),
            (Some("CONNECT"), Some(Verdict::Allow), Some(Reason::Allowed)),
            (Some("GET"), Some(Verdict::Allow), Some(Reason::Allowed)),
        ],
        "{records:#?}"
    );
    // The challenge says where it went, and which task answered it.
    let challenge = &records[0];
    assert_eq!(challenge.host.as_deref(), Some("api.test"));
    assert_eq!(challenge.port, Some(s.tls.port()));
    assert_eq!(challenge.task, records[1].task);
    assert!(challenge.task.is_some());
    s.assert_no_secrets().await;
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_request_challenge_answered_on_the_same_connection_is_a_challenge() {
    let s = setup().await;
    let p = s.plain.port();
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    let ask = format!("GET http://api.test:{p}/v1/items HTTP/1.1\r\nHost: api.test:{p}\r\n\r\n");
    let resp = exchange(&mut stream, ask.as_bytes()).await;
    assert_eq!(resp.status, 407, "{}", resp.text());
    assert_eq!(resp.json()["error"], "task_token_missing");
    assert_eq!(resp.header("connection"), None);
    let resp = exchange(&mut stream, &s.plain_request("GET", p, "/v1/items", "")).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    drop(stream);

    let records = settle(&s.env, 2).await;
    assert_eq!(
        outcomes(&records),
        [
            (
                Some("GET"),
                Some(Verdict::Challenge),
                Some(Reason::TaskTokenMissing)
            ),
            (Some("GET"), Some(Verdict::Allow), Some(Reason::Allowed)),
        ],
        "{records:#?}"
    );
    assert_eq!(records[0].path.as_deref(), Some("/v1/items"));
    assert_eq!(records[0].host.as_deref(), Some("api.test"));
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_not_followed_by_credentials_stays_a_deny() {
    let s = setup().await;
    let target = format!("api.test:{}", s.tls.port());
    let ask = connect_request(&target, None);

    // Never followed up: the client closes after the 407.
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    assert_eq!(exchange(&mut stream, &ask).await.status, 407);
    drop(stream);
    // Followed by another request without credentials, then a close.
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    assert_eq!(exchange(&mut stream, &ask).await.status, 407);
    assert_eq!(exchange(&mut stream, &ask).await.status, 407);
    drop(stream);
    // Followed by something that is no request at all.
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    assert_eq!(exchange(&mut stream, &ask).await.status, 407);
    let resp = exchange(&mut stream, b"NOT HTTP\r\n\r\n").await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    drop(stream);
    // A token that is not valid is refused at once, and the connection closes.
    let bad = proxy_auth("task-nobody", &test_secret());
    let mut stream = TcpStream::connect(s.env.proxy).await.unwrap();
    let resp = exchange(&mut stream, &connect_request(&target, Some(&bad))).await;
    assert_eq!(resp.status, 407);
    assert_eq!(resp.json()["error"], "task_token_invalid");
    expect_closed(&mut stream, Duration::from_secs(2))
        .await
        .unwrap();

    // The connections end in any order: count, do not line up.
    let records = settle(&s.env, 6).await;
    let all = outcomes(&records);
    let count = |method, reason| {
        all.iter()
            .filter(|o| **o == (method, Some(Verdict::Deny), Some(reason)))
            .count()
    };
    assert_eq!(all.len(), 6, "{records:#?}");
    assert_eq!(
        count(Some("CONNECT"), Reason::TaskTokenMissing),
        4,
        "{records:#?}"
    );
    assert_eq!(count(None, Reason::BadRequest), 1, "{records:#?}");
    assert_eq!(
        count(Some("CONNECT"), Reason::TaskTokenInvalid),
        1,
        "{records:#?}"
    );
    for r in records.iter().filter(|r| r.method.is_some()) {
        assert_eq!(r.host.as_deref(), Some("api.test"), "{r:?}");
    }
    s.env.stop().await;
}
