//! Interim responses: a `103 Early Hints` from an HTTP/1.1 upstream reaches
//! an HTTP/1.1 agent before the final response, its headers filtered and
//! scrubbed like response headers (the injected credential masked, raw or
//! base64), and the request still has exactly one record. `100` and `102`
//! are consumed; more than eight interim responses are an upstream fault
//! (502). An HTTP/2 agent, which credgate cannot send interim responses to,
//! gets the final response alone.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use credgate::audit::DecisionRecord;
use credgate::reason::Reason;
use credgate::tls::{CertificateAuthority, LeafCache};
use http::Request;
use http_body_util::Full;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Notify;

const HOST: &str = "hints.test";

/// An HTTPS upstream that speaks HTTP/1.1 byte by byte, so it can send
/// interim responses (no HTTP server library does). For each request it
/// reads the head and answers by path:
/// - `/hints`: two `103`s (a `link`, the credential it received raw in one
///   header and base64 in another, a field its `Connection` names), then
///   waits for [`HintsUpstream::go`] before the final `200`;
/// - `/hints-now`: the same without waiting;
/// - `/interim/N`: `N` interim responses (`100`, `102` and `103` in turn),
///   then the final `200`.
struct HintsUpstream {
    port: u16,
    go: Arc<Notify>,
    _task: tokio::task::JoinHandle<()>,
}

impl HintsUpstream {
    async fn start(ca: Arc<CertificateAuthority>) -> HintsUpstream {
        let tls = LeafCache::new(ca).server_config(HOST).await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(http1_only(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let go = Arc::new(Notify::new());
        let released = go.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let released = released.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    while let Some(head) = read_head(&mut tls).await {
                        if answer(&mut tls, &head, &released).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HintsUpstream {
            port,
            go,
            _task: task,
        }
    }

    /// Lets a waiting `/hints` send its final response.
    fn go(&self) {
        self.go.notify_one();
    }
}

/// A request head, up to its blank line (the test requests have no body).
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Answers the request `head` on `stream`: interim heads, then the final
/// response.
async fn answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    head: &str,
    go: &Notify,
) -> std::io::Result<()> {
    let path = head.split(' ').nth(1).unwrap_or_default().to_string();
    let authorization = head
        .lines()
        .find_map(|l| l.strip_prefix("authorization: "))
        .unwrap_or_default();
    let token = authorization.strip_prefix("Bearer ").unwrap_or_default();
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".as_slice();
    let mut out = Vec::new();
    if path == "/hints" || path == "/hints-now" {
        let b64 = base64::engine::general_purpose::STANDARD.encode(token);
        let hints = format!(
            "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\nx-echo: {authorization}\r\n\r\n\
             HTTP/1.1 103 Early Hints\r\nlink: </app.js>; rel=preload; as=script\r\nx-echo-b64: {b64}\r\nconnection: x-hop\r\nx-hop: 1\r\n\r\n"
        );
        out.extend_from_slice(hints.as_bytes());
        if path == "/hints" {
            stream.write_all(&out).await?;
            stream.flush().await?;
            out.clear();
            let _ = tokio::time::timeout(Duration::from_secs(10), go.notified()).await;
        }
        out.extend_from_slice(ok);
    } else if let Some(n) = path.strip_prefix("/interim/") {
        let n: usize = n.parse().unwrap();
        for i in 0..n {
            out.extend_from_slice(match i % 3 {
                0 => b"HTTP/1.1 100 Continue\r\n\r\n".as_slice(),
                1 => b"HTTP/1.1 102 Processing\r\n\r\n".as_slice(),
                _ => b"HTTP/1.1 103 Early Hints\r\nlink: </a.js>; rel=preload\r\n\r\n".as_slice(),
            });
        }
        out.extend_from_slice(ok);
    } else {
        out.extend_from_slice(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
    }
    stream.write_all(&out).await?;
    stream.flush().await
}

struct Setup {
    env: Env,
    upstream: HintsUpstream,
    id: String,
    token: String,
    auth: String,
    secret: String,
    target: String,
}

async fn setup() -> Setup {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = HintsUpstream::start(ca.clone()).await;
    let secret = test_secret();
    let port = upstream.port;
    let config = format!(
        "credentials:\n  up:\n    static: {{ env: UP_TOKEN }}\n\
         scopes:\n  up:\n    - host: {HOST}\n      port: {port}\n      credential: up\n      allow_private: true\n"
    );
    let env = Env::start_trusting(ca, &config, &[("UP_TOKEN", &secret)]).await;
    env.resolver.map(HOST, "127.0.0.1");
    let (id, token) = env.start_task(&["up"]);
    Setup {
        auth: proxy_auth(&id, &token),
        env,
        upstream,
        id,
        token,
        secret,
        target: format!("{HOST}:{port}"),
    }
}

/// Reads from `stream` until `done` holds for what has arrived (at most
/// five seconds); returns all of it.
async fn read_until<S: AsyncRead + Unpin>(
    stream: &mut S,
    data: &mut Vec<u8>,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(data).into_owned();
        if done(&text) {
            return text;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
            other => panic!("stopped waiting ({other:?}) with {text:?}"),
        }
    }
}

/// The header blocks of every response in `text`, in order.
fn heads(text: &str) -> Vec<&str> {
    text.split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.split("\r\n\r\n").next().unwrap())
        .collect()
}

/// The request records for `path` (the CONNECT has its own).
async fn records_for(env: &Env, path: &str) -> Vec<DecisionRecord> {
    env.wait_for_record(|r| r.path.as_deref() == Some(path))
        .await
        .into_iter()
        .filter(|r| r.path.as_deref() == Some(path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_hints_reach_an_h1_agent_before_the_final_response_scrubbed() {
    let s = setup().await;
    let mut tls = tunnel(&s.env, &s.auth, &s.target, HOST).await.unwrap();
    let request = format!("GET /hints HTTP/1.1\r\nHost: {}\r\n\r\n", s.target);
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut data = Vec::new();
    // Both hints arrive while the upstream still holds its final response.
    let hints = read_until(&mut tls, &mut data, |t| {
        heads(t).len() == 2 && t.ends_with("\r\n\r\n")
    })
    .await;
    assert!(!hints.contains("HTTP/1.1 200"), "{hints}");
    s.upstream.go();
    let all = read_until(&mut tls, &mut data, |t| t.ends_with("\r\n\r\nok")).await;
    assert!(!all.contains(&s.secret), "{all}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(&s.secret);
    assert!(!all.contains(&b64), "the base64 form is masked too: {all}");

    let heads = heads(&all);
    assert_eq!(heads.len(), 3, "{all}");
    assert!(heads[0].starts_with("103 Early Hints\r\n"), "{all}");
    assert!(heads[0].contains("\r\nlink: </style.css>; rel=preload; as=style"));
    let echo = heads[0]
        .lines()
        .find_map(|l| l.strip_prefix("x-echo: "))
        .unwrap();
    assert!(
        echo.starts_with("Bearer ") && echo.len() > "Bearer ".len(),
        "{echo}"
    );
    assert!(heads[1].starts_with("103 Early Hints\r\n"), "{all}");
    assert!(heads[1].contains("\r\nlink: </app.js>; rel=preload; as=script"));
    assert!(heads[1].contains("\r\nx-echo-b64: "), "{all}");
    // Hop-by-hop fields, and what `Connection` names, stay with the upstream.
    assert!(
        !heads[1].contains("x-hop") && !heads[1].contains("connection"),
        "{all}"
    );
    assert!(heads[2].starts_with("200 OK\r\n"), "{all}");

    let records = records_for(&s.env, "/hints").await;
    assert_eq!(
        records.len(),
        1,
        "one record, for the final response: {records:?}"
    );
    assert_eq!(
        records[0].upstream.as_ref().and_then(|u| u.status),
        Some(200)
    );
    assert!(!s.env.log_text().await.contains(&s.secret));

    // The connection carries the next request as usual.
    data.clear();
    let request = format!("GET /interim/0 HTTP/1.1\r\nHost: {}\r\n\r\n", s.target);
    tls.write_all(request.as_bytes()).await.unwrap();
    let next = read_until(&mut tls, &mut data, |t| t.ends_with("\r\n\r\nok")).await;
    assert!(next.starts_with("HTTP/1.1 200 OK\r\n"), "{next}");
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_early_hints_before_the_final_response() {
    let s = setup().await;
    let url = format!("https://{}/hints-now", s.target);
    let proxy = s.env.proxy_url(&s.id, &s.token);
    let mut cmd = curl_via(&proxy, &s.env.ca_cert, &url);
    cmd.args(["--http1.1", "-v"]);
    let out = run_cli(cmd).await;
    out.expect_code(0);
    assert_eq!(curl_status(&out), (200, "ok".to_string()));
    let log = &out.stderr;
    let hints = log
        .find("< HTTP/1.1 103 Early Hints")
        .unwrap_or_else(|| panic!("{log}"));
    let done = log
        .find("< HTTP/1.1 200 OK")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(hints < done, "{log}");
    assert!(
        log.contains("< link: </style.css>; rel=preload; as=style"),
        "{log}"
    );
    assert!(!out.all().contains(&s.secret), "{log}");
    assert_eq!(records_for(&s.env, "/hints-now").await.len(), 1);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_interim_responses_are_consumed_and_more_than_eight_are_refused() {
    let s = setup().await;
    let mut tls = tunnel(&s.env, &s.auth, &s.target, HOST).await.unwrap();
    // Eight: `100` and `102` consumed, the `103`s passed, then the answer.
    let request = format!("GET /interim/8 HTTP/1.1\r\nHost: {}\r\n\r\n", s.target);
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut data = Vec::new();
    let all = read_until(&mut tls, &mut data, |t| t.ends_with("\r\n\r\nok")).await;
    let statuses: Vec<&str> = heads(&all).iter().map(|h| &h[..3]).collect();
    assert_eq!(statuses, ["103", "103", "200"], "{all}");
    assert_eq!(records_for(&s.env, "/interim/8").await.len(), 1);

    // Nine: an upstream fault, answered with a 502 that says so.
    let mut tls = tunnel(&s.env, &s.auth, &s.target, HOST).await.unwrap();
    let request = format!("GET /interim/9 HTTP/1.1\r\nHost: {}\r\n\r\n", s.target);
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut data = Vec::new();
    let all = read_until(&mut tls, &mut data, |t| {
        t.contains("HTTP/1.1 502") && t.ends_with("}\n")
    })
    .await;
    let statuses: Vec<&str> = heads(&all).iter().map(|h| &h[..3]).collect();
    assert_eq!(statuses.last(), Some(&"502"), "{all}");
    assert!(
        statuses[..statuses.len() - 1].iter().all(|s| *s == "103"),
        "{all}"
    );
    assert!(all.contains("interim (1xx) responses"), "{all}");
    let records = records_for(&s.env, "/interim/9").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].reason, Some(Reason::UpstreamError));
    let message = records[0].message.as_deref().unwrap_or_default();
    assert!(
        message.contains("more than 8 interim (1xx) responses"),
        "{message}"
    );
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_agent_gets_the_final_response_alone() {
    let s = setup().await;
    let tls = tunnel_alpn(&s.env, &s.auth, &s.target, HOST, &[b"h2"])
        .await
        .unwrap();
    let mut h2 = h2_client(tls).await;
    let request = Request::get(format!("https://{}/hints-now", s.target))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = h2_exchange(&mut h2, request).await;
    assert_eq!(parts.status, 200);
    assert_eq!(body, b"ok");
    assert_eq!(records_for(&s.env, "/hints-now").await.len(), 1);
    s.env.stop().await;
}
