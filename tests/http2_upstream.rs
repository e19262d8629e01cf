//! HTTP/2 upstreams: when an upstream picks `h2` in ALPN, requests go to
//! it as streams of one shared connection, from HTTP/2 and HTTP/1.1 agents
//! alike. Credentials are injected and scrubbed as over HTTP/1.1, trailers
//! come back scrubbed (to an HTTP/1.1 agent only when it sent
//! `TE: trailers`), a streamed body with a secret deep inside resets the
//! upstream stream, and a rule's `upstream_http` forces either version.

mod support;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use credgate::reason::Reason;
use credgate::tls::{CertificateAuthority, LeafCache};
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const HOST: &str = "h2.test";
const MIB: usize = 1 << 20;

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
struct Seen {
    version: Version,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
    /// The body ended where its framing said; otherwise the stream broke off.
    complete: bool,
}

/// An HTTPS upstream that speaks what its ALPN offers (`h2`, and
/// `http/1.1` when `also_h1`), and answers:
/// - `/echo`: the `authorization` it received, in the body and in an
///   `x-echo` trailer, with `grpc-status: 0` and a `content-length` trailer
///   that must never pass;
/// - `/gzip-echo`: the same, with the body gzip-compressed (although asked
///   for `identity`);
/// - anything else: reads the body to its end and says how much came.
struct H2Upstream {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl H2Upstream {
    async fn start(ca: Arc<CertificateAuthority>, also_h1: bool) -> H2Upstream {
        let mut tls = (*LeafCache::new(ca).server_config(HOST).await.unwrap()).clone();
        tls.alpn_protocols = if also_h1 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"h2".to_vec()]
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let connections: Arc<AtomicUsize> = Arc::default();
        let (noted, counted) = (seen.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let noted = noted.clone();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    // `/bye` asks for this connection to be shut down.
                    let (bye, mut byes) = tokio::sync::mpsc::unbounded_channel();
                    let service = service_fn(move |req: Request<Incoming>| {
                        let noted = noted.clone();
                        if req.uri().path() == "/bye" {
                            let _ = bye.send(());
                        }
                        async move { Ok::<_, hyper::Error>(answer(req, noted).await) }
                    });
                    let io = TokioIo::new(tls);
                    if h2 {
                        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service);
                        tokio::pin!(conn);
                        loop {
                            tokio::select! {
                                _ = conn.as_mut() => break,
                                Some(()) = byes.recv() => conn.as_mut().graceful_shutdown(),
                            }
                        }
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await;
                    }
                });
            }
        });
        H2Upstream {
            port,
            seen,
            connections,
            _task: task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type Answer = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

async fn answer(req: Request<Incoming>, noted: Arc<Mutex<Vec<Seen>>>) -> Response<Answer> {
    if req.uri().path() == "/bidi" {
        // Each piece of the request goes straight back, as it comes.
        return Response::new(req.into_body().boxed());
    }
    let (parts, mut body) = req.into_parts();
    let mut seen = Seen {
        version: parts.version,
        path: parts.uri.path().to_string(),
        authorization: parts
            .headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
        body: Vec::new(),
        complete: false,
    };
    loop {
        match body.frame().await {
            None => {
                seen.complete = true;
                break;
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    seen.body.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => break,
        }
    }
    let echo = seen.authorization.clone().unwrap_or_default();
    let gzip = seen.path == "/gzip-echo";
    let frames = if seen.path == "/echo" || gzip {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("x-echo", HeaderValue::from_str(&echo).unwrap());
        trailers.insert("content-length", HeaderValue::from_static("1"));
        let mut text = vec![
            Bytes::from(format!("version {:?}\n", seen.version)),
            Bytes::from(format!("authorization: {echo}\n")),
        ];
        if gzip {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
            for piece in &text {
                std::io::Write::write_all(&mut encoder, piece).unwrap();
            }
            text = vec![Bytes::from(encoder.finish().unwrap())];
        }
        let mut frames: Vec<Frame<Bytes>> = text.into_iter().map(Frame::data).collect();
        frames.push(Frame::trailers(trailers));
        frames
    } else {
        vec![Frame::data(Bytes::from(format!(
            "stored {} bytes",
            seen.body.len()
        )))]
    };
    noted.lock().unwrap().push(seen);
    let mut response = Response::new(
        Frames(frames.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    if gzip {
        response
            .headers_mut()
            .insert("content-encoding", HeaderValue::from_static("gzip"));
    }
    // HTTP/1.1 servers send only the trailers a response declares.
    response.headers_mut().insert(
        "trailer",
        HeaderValue::from_static("grpc-status, x-echo, content-length"),
    );
    response
}

/// A response body of fixed frames (data, then trailers).
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

struct Setup {
    env: Env,
    auth: String,
    secret: String,
    target: String,
}

/// credgate with a rule for `port` on [`HOST`] injecting a static
/// credential; `extra` adds rule fields (indented for the rule).
async fn setup(ca: Arc<CertificateAuthority>, port: u16, extra: &str) -> Setup {
    let secret = test_secret();
    let config = format!(
        "credentials:\n  up:\n    static: {{ env: UP_TOKEN }}\n\
         scopes:\n  up:\n    - host: {HOST}\n      port: {port}\n      credential: up\n      allow_private: true\n{extra}"
    );
    let env = Env::start_trusting(ca, &config, &[("UP_TOKEN", &secret)]).await;
    env.resolver.map(HOST, "127.0.0.1");
    let (id, token) = env.start_task(&["up"]);
    Setup {
        auth: proxy_auth(&id, &token),
        env,
        secret,
        target: format!("{HOST}:{port}"),
    }
}

async fn h2_agent(s: &Setup) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tls = tunnel_alpn(&s.env, &s.auth, &s.target, HOST, &[b"h2"])
        .await
        .unwrap();
    h2_client(tls).await
}

/// The agent's own `Authorization` is replaced by the injected credential.
fn echo_request(s: &Setup) -> Request<Full<Bytes>> {
    Request::get(format!("https://{}/echo", s.target))
        .header("authorization", "Bearer agent-own-token")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_agent_reaches_an_h2_only_upstream_with_the_credential_and_scrubbed_trailers() {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = H2Upstream::start(ca.clone(), false).await;
    let s = setup(ca, upstream.port, "").await;
    let mut h2 = h2_agent(&s).await;
    let response = h2.send_request(echo_request(&s)).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    let body = String::from_utf8(collected.to_bytes().to_vec()).unwrap();

    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].version, Version::HTTP_2);
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {}", s.secret).as_str())
    );
    assert!(
        body.starts_with("version HTTP/2.0\nauthorization: Bearer "),
        "{body}"
    );
    assert!(!body.contains(&s.secret), "the echoed credential is masked");
    assert_eq!(trailers["grpc-status"], "0");
    let echoed = trailers["x-echo"].to_str().unwrap();
    assert!(
        echoed.starts_with("Bearer ") && !echoed.contains(&s.secret),
        "{echoed}"
    );
    assert!(trailers.get("content-length").is_none(), "{trailers:?}");
    let log = s.env.log_text().await;
    assert!(!log.contains(&s.secret));
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h1_agent_gets_trailers_only_when_it_asks_for_them() {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = H2Upstream::start(ca.clone(), false).await;
    let s = setup(ca, upstream.port, "").await;
    for te in [true, false] {
        let mut tls = tunnel(&s.env, &s.auth, &s.target, HOST).await.unwrap();
        let te_line = if te { "TE: trailers\r\n" } else { "" };
        let head = format!("GET /echo HTTP/1.1\r\nHost: {}\r\n{te_line}\r\n", s.target);
        tls.write_all(head.as_bytes()).await.unwrap();
        let answer = read_response(&mut tls, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        let raw = String::from_utf8_lossy(&answer.raw).into_owned();
        assert!(!raw.contains(&s.secret), "{raw}");
        assert!(raw.contains("version HTTP/2.0"), "{raw}");
        assert_eq!(raw.contains("grpc-status: 0\r\n"), te, "{raw}");
        assert_eq!(raw.contains("x-echo: Bearer "), te, "{raw}");
        assert!(
            !raw.to_ascii_lowercase().contains("content-length: 1\r\n"),
            "{raw}"
        );
        assert!(raw.ends_with("\r\n\r\n"), "{raw}");
    }
    assert!(upstream
        .seen()
        .iter()
        .all(|seen| seen.version == Version::HTTP_2));
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_streams_share_one_upstream_connection() {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = H2Upstream::start(ca.clone(), false).await;
    let s = setup(ca, upstream.port, "").await;
    let mut h2 = h2_agent(&s).await;
    // One exchange first, so the client has credgate's SETTINGS (at most 32
    // streams at once) and queues the rest instead of having them refused.
    let (parts, _) = h2_exchange(&mut h2, echo_request(&s)).await;
    assert_eq!(parts.status, 200);
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let mut h2 = h2.clone();
        let request = echo_request(&s);
        calls.spawn(async move {
            let response = h2.send_request(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(60), calls.join_all())
        .await
        .expect("every stream completes");
    assert_eq!(all.len(), 100);
    for (status, body) in all {
        assert_eq!(status, 200);
        assert!(!String::from_utf8_lossy(&body).contains(&s.secret));
    }
    assert_eq!(upstream.seen().len(), 101);
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
    s.env.stop().await;
}

/// A request body the test writes piece by piece.
struct Pieces(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|piece| piece.map(|p| Ok(Frame::data(p))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_stream_flows_both_ways_without_waiting_for_the_request_to_end() {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = H2Upstream::start(ca.clone(), false).await;
    let s = setup(ca, upstream.port, "").await;
    let tls = tunnel_alpn(&s.env, &s.auth, &s.target, HOST, &[b"h2"])
        .await
        .unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake::<_, _, Pieces>(
        TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let request = Request::post(format!("https://{}/bidi", s.target))
        .header("content-type", "application/grpc")
        .body(Pieces(rx))
        .unwrap();
    tx.send(Bytes::from_static(b"first message."))
        .await
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), h2.send_request(request))
        .await
        .expect("the answer begins while the request is still open")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut echoed = Vec::new();
    for next in [&b"second message."[..], b"third message."] {
        // What was sent comes back before the agent sends more.
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the echo arrives while the request is still open")
            .unwrap()
            .unwrap();
        echoed.extend_from_slice(&frame.into_data().unwrap());
        tx.send(Bytes::from_static(next)).await.unwrap();
    }
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    echoed.extend_from_slice(&rest);
    assert_eq!(echoed, b"first message.second message.third message.");
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_is_replaced() {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = H2Upstream::start(ca.clone(), false).await;
    let s = setup(ca, upstream.port, "").await;
    let mut h2 = h2_agent(&s).await;
    // The upstream answers, then says GOAWAY and closes the connection.
    let bye = Request::get(format!("https://{}/bye", s.target))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, _) = h2_exchange(&mut h2, bye).await;
    assert_eq!(parts.status, 200);
    for _ in 0..3 {
        let (parts, body) = h2_exchange(&mut h2, echo_request(&s)).await;
        assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
    s.env.stop().await;
}

/// `len` bytes that no secret rule fires on.
fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_with_a_deep_secret_resets_the_upstream_stream() {
    let token = format!("ghp_{}", random_hex(20));
    let clean = data(3 * MIB);
    let mut tainted = clean.clone();
    let at = 2 * MIB + 3;
    tainted[at - 1] = b' ';
    tainted[at..at + token.len()].copy_from_slice(token.as_bytes());
    tainted[at + token.len()] = b' ';
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = H2Upstream::start(ca.clone(), false).await;
    let s = setup(ca, upstream.port, "").await;
    let mut h2 = h2_agent(&s).await;
    for (sent, status) in [(&clean, 200), (&tainted, 403)] {
        let request = Request::post(format!("https://{}/store", s.target))
            .body(Full::new(Bytes::from(sent.clone())))
            .unwrap();
        let (parts, answer) = h2_exchange(&mut h2, request).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert_eq!(parts.status, status, "{answer}");
        if status == 403 {
            assert!(answer.contains("secret_in_request"), "{answer}");
        }
    }
    // The upstream may note the reset stream a moment after credgate answered.
    let seen = poll_until(WAIT_LIMIT, || {
        let seen = upstream.seen();
        (seen.len() == 2).then_some(seen)
    })
    .await
    .expect("the upstream saw both requests");
    assert!(seen[0].complete && seen[0].body == clean);
    assert!(!seen[1].complete, "the tainted stream was reset");
    assert!(seen[1].body.len() < at);
    let records = s.env.records().await;
    let record = records
        .iter()
        .find(|r| r.reason == Some(Reason::SecretInRequest))
        .expect("the stopped upload's record");
    assert_eq!(record.findings, ["github_token"]);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_http_http2_refuses_an_http1_only_upstream_with_a_reason() {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let h1_only = Upstream::start_tls(ca.clone(), HOST, ok_handler()).await;
    let s = setup(ca, h1_only.port(), "      upstream_http: http2\n").await;
    let mut tls = tunnel(&s.env, &s.auth, &s.target, HOST).await.unwrap();
    let head = format!("GET /x HTTP/1.1\r\nHost: {}\r\n\r\n", s.target);
    tls.write_all(head.as_bytes()).await.unwrap();
    let answer = read_response(&mut tls, Duration::from_secs(10))
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    assert_eq!(answer.status, 502, "{body}");
    assert_eq!(answer.reason(), Some("upstream_error"));
    assert!(body.contains("did not agree to HTTP/2"), "{body}");
    assert!(body.contains("upstream_http: http2"), "{body}");
    assert!(h1_only.received().is_empty());
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_http_http1_keeps_an_h2_capable_upstream_on_http1() {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = H2Upstream::start(ca.clone(), true).await;
    let s = setup(ca.clone(), upstream.port, "      upstream_http: http1\n").await;
    let mut h2 = h2_agent(&s).await;
    let (parts, body) = h2_exchange(&mut h2, echo_request(&s)).await;
    assert_eq!(parts.status, 200);
    assert!(String::from_utf8_lossy(&body).starts_with("version HTTP/1.1"));
    assert_eq!(upstream.seen()[0].version, Version::HTTP_11);
    s.env.stop().await;

    // Left to ALPN, the same upstream is spoken to in HTTP/2.
    let s = setup(ca, upstream.port, "").await;
    let mut h2 = h2_agent(&s).await;
    let (parts, body) = h2_exchange(&mut h2, echo_request(&s)).await;
    assert_eq!(parts.status, 200);
    assert!(String::from_utf8_lossy(&body).starts_with("version HTTP/2.0"));
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_from_an_http1_upstream_pass_scrubbed() {
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = H2Upstream::start(ca.clone(), true).await;
    let s = setup(ca, upstream.port, "      upstream_http: http1\n").await;
    let mut h2 = h2_agent(&s).await;
    let response = h2.send_request(echo_request(&s)).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(upstream.seen()[0].version, Version::HTTP_11);
    assert_eq!(trailers["grpc-status"], "0");
    let echoed = trailers["x-echo"].to_str().unwrap();
    assert!(
        echoed.starts_with("Bearer ") && !echoed.contains(&s.secret),
        "{echoed}"
    );
    assert!(!s.env.log_text().await.contains(&s.secret));
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_of_a_compressed_response_follow_its_decoded_body_scrubbed() {
    // From an HTTP/2 upstream, and from an HTTP/1.1 one in chunked framing.
    for (also_h1, extra, version) in [
        (false, "", Version::HTTP_2),
        (true, "      upstream_http: http1\n", Version::HTTP_11),
    ] {
        let ca = Arc::new(CertificateAuthority::generate().unwrap());
        let upstream = H2Upstream::start(ca.clone(), also_h1).await;
        let s = setup(ca, upstream.port, extra).await;
        let mut h2 = h2_agent(&s).await;
        let request = Request::get(format!("https://{}/gzip-echo", s.target))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = h2.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("content-encoding").is_none());
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers arrive");
        let body = String::from_utf8(collected.to_bytes().to_vec()).unwrap();
        assert_eq!(upstream.seen()[0].version, version);
        // Decoded, with the echoed credential masked.
        assert!(body.contains("\nauthorization: Bearer "), "{body}");
        assert!(!body.contains(&s.secret), "{body}");
        assert_eq!(trailers["grpc-status"], "0");
        let echoed = trailers["x-echo"].to_str().unwrap();
        assert!(
            echoed.starts_with("Bearer ") && !echoed.contains(&s.secret),
            "{echoed}"
        );
        assert!(trailers.get("content-length").is_none(), "{trailers:?}");
        let log = s.env.log_text().await;
        assert!(!log.contains(&s.secret));
        s.env.stop().await;
    }
}
