//! Large request bodies through interception: streamed to the upstream as
//! they arrive and scanned as they flow, whatever their size, bounded by
//! `sanitize.max_body`. A body that stops (a secret in it, past the bound,
//! an agent that goes away, broken framing) reaches the upstream as an
//! incomplete request, never a complete one, and its record names the
//! method, host and path.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use credgate::audit::DecisionRecord;
use credgate::reason::Reason;
use credgate::tls::{CertificateAuthority, LeafCache};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const HOST: &str = "upload.test";
const MIB: usize = 1 << 20;

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
struct Seen {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body ended where its framing said; otherwise the request broke off.
    complete: bool,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTPS upstream that reads every request body to its end (or until it
/// breaks off) and notes what it got.
struct Sink {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Sink {
    async fn start(ca: Arc<CertificateAuthority>) -> Sink {
        let tls = http1_only(LeafCache::new(ca).server_config(HOST).await.unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let noted = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let noted = noted.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let noted = noted.clone();
                        async move {
                            let (parts, mut body) = req.into_parts();
                            let mut seen = Seen {
                                headers: parts
                                    .headers
                                    .iter()
                                    .map(|(k, v)| {
                                        (k.to_string(), v.to_str().unwrap_or("").to_string())
                                    })
                                    .collect(),
                                body: Vec::new(),
                                complete: false,
                            };
                            loop {
                                match body.frame().await {
                                    Some(Ok(frame)) => {
                                        if let Ok(data) = frame.into_data() {
                                            seen.body.extend_from_slice(&data);
                                        }
                                    }
                                    Some(Err(_)) => break,
                                    None => {
                                        seen.complete = true;
                                        break;
                                    }
                                }
                            }
                            let answer = format!("stored {} bytes", seen.body.len());
                            noted.lock().unwrap().push(seen);
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from(answer),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Sink {
            port,
            seen,
            _task: task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

struct Setup {
    env: Env,
    sink: Sink,
    auth: String,
    secret: String,
}

/// credgate with a rule for the sink that injects a static credential,
/// blocking secrets (or stripping them with `strip`); `sanitize` is the
/// `sanitize:` section.
async fn setup(strip: bool, sanitize: &str) -> Setup {
    let secret = test_secret();
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let sink = Sink::start(ca.clone()).await;
    let on_secret = if strip { "strip" } else { "block" };
    let config = format!(
        "sanitize: {{ {sanitize} }}\n\
         credentials:\n  up:\n    static: {{ env: UP_TOKEN }}\n\
         scopes:\n  up:\n    - host: {HOST}\n      port: {port}\n      methods: [POST, PUT]\n      credential: up\n      allow_private: true\n      on_secret: {on_secret}\n",
        port = sink.port
    );
    let env = Env::start_trusting(ca, &config, &[("UP_TOKEN", &secret)]).await;
    env.resolver.map(HOST, "127.0.0.1");
    let (id, token) = env.start_task(&["up"]);
    Setup {
        auth: proxy_auth(&id, &token),
        env,
        sink,
        secret,
    }
}

/// A GitHub-token-shaped string, made now.
fn fake_token() -> String {
    format!("ghp_{}", random_hex(20))
}

/// How the agent frames its body.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Length,
    Chunked,
}

/// Sends `body` in `framing` through an intercepted tunnel, in writes of
/// 64 KiB, and reads the response until credgate closes the connection
/// (the request asks it to), or nothing comes for a long while.
/// A write that fails (credgate closed after answering) ends the sending.
async fn upload(s: &Setup, framing: Framing, body: &[u8]) -> String {
    let target = format!("{HOST}:{}", s.sink.port);
    let mut tls = tunnel(&s.env, &s.auth, &target, HOST).await.unwrap();
    let length = match framing {
        Framing::Length => format!("Content-Length: {}\r\n", body.len()),
        Framing::Chunked => "Transfer-Encoding: chunked\r\n".to_string(),
    };
    let head = format!(
        "POST /store/file.bin HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\n{length}\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let body = body.to_vec();
    let send = tokio::spawn(async move {
        for piece in body.chunks(64 * 1024) {
            let framed = match framing {
                Framing::Length => piece.to_vec(),
                Framing::Chunked => {
                    [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat()
                }
            };
            if writer.write_all(&framed).await.is_err() {
                return writer;
            }
        }
        if let Framing::Chunked = framing {
            let _ = writer.write_all(b"0\r\n\r\n").await;
        }
        // A TLS writer may still hold the last records when the socket was
        // full: only a flush sends them.
        let _ = writer.flush().await;
        writer
    });
    let answer = read_until_quiet(&mut reader, Duration::from_secs(60)).await;
    drop(send.await);
    answer
}

/// The record of the one request to the sink.
async fn upload_record(env: &Env) -> DecisionRecord {
    let records = env.records().await;
    let mut uploads: Vec<_> = records
        .into_iter()
        .filter(|r| r.method.as_deref() == Some("POST"))
        .collect();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    let record = uploads.remove(0);
    assert_eq!(record.host.as_deref(), Some(HOST));
    assert_eq!(record.path.as_deref(), Some("/store/file.bin"));
    record
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_body_streams_through_whole_in_either_framing() {
    let body = noise(12 * MIB + 12_345);
    for framing in [Framing::Length, Framing::Chunked] {
        let s = setup(false, "").await;
        let answer = upload(&s, framing, &body).await;
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{framing:?}: {answer} {:?} {:?}",
            s.env.records().await,
            s.sink
                .seen()
                .iter()
                .map(|s| (s.complete, s.body.len()))
                .collect::<Vec<_>>()
        );
        assert!(answer.contains(&format!("stored {} bytes", body.len())));
        let seen = s.sink.seen();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].complete);
        assert!(
            seen[0].body == body,
            "{framing:?}: the body changed on the way"
        );
        assert_eq!(
            seen[0].header("authorization"),
            Some(format!("Bearer {}", s.secret).as_str())
        );
        match framing {
            Framing::Length => {
                assert_eq!(
                    seen[0].header("content-length"),
                    Some(body.len().to_string().as_str())
                )
            }
            Framing::Chunked => assert_eq!(seen[0].header("transfer-encoding"), Some("chunked")),
        }
        let record = upload_record(&s.env).await;
        assert_eq!(record.reason, Some(Reason::Allowed));
        assert_eq!(record.bytes_in, body.len() as u64);
        s.env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_uploads_100_mib_through_interception() {
    let s = setup(false, "").await;
    let file = s.env.dir.path().join("upload.bin");
    let body = noise(100 * MIB);
    std::fs::write(&file, &body).unwrap();
    let (id, token) = s.env.start_task(&["up"]);
    let out = run_cli(curl([
        "--max-time",
        "120",
        "-x",
        &s.env.proxy_url(&id, &token),
        "--cacert",
        s.env.ca_cert.to_str().unwrap(),
        "--data-binary",
        &format!("@{}", file.display()),
        "-H",
        "content-type: application/octet-stream",
        &format!("https://{HOST}:{}/store/file.bin", s.sink.port),
    ]))
    .await;
    out.expect_code(0);
    assert_eq!(out.stdout, format!("stored {} bytes", body.len()));
    let seen = s.sink.seen();
    assert!(
        seen[0].complete && seen[0].body == body,
        "the body changed on the way"
    );
    let record = upload_record(&s.env).await;
    assert_eq!(record.bytes_in, body.len() as u64);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_deep_in_a_body_stops_it_before_the_secret_goes_on() {
    let token = fake_token();
    for framing in [Framing::Length, Framing::Chunked] {
        // Past the first part, and split across the agent's writes.
        for at in [3 * MIB, 3 * MIB - token.len() / 2] {
            let s = setup(false, "").await;
            let mut body = noise(5 * MIB);
            body[at - 1] = b' ';
            body[at..at + token.len()].copy_from_slice(token.as_bytes());
            body[at + token.len()] = b' ';
            let answer = upload(&s, framing, &body).await;
            assert!(answer.starts_with("HTTP/1.1 403"), "{framing:?}: {answer}");
            assert!(answer.contains("secret_in_request") && answer.contains("github_token"));
            for seen in s.sink.seen() {
                assert!(!seen.complete, "the upstream got a complete request");
                assert!(!contains(&seen.body, token.as_bytes()));
            }
            let record = upload_record(&s.env).await;
            assert_eq!(record.reason, Some(Reason::SecretInRequest));
            assert_eq!(record.findings, ["github_token"]);
            assert!(!s.env.log_text().await.contains(&token));
            s.env.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_stripping_rule_a_secret_deep_in_a_body_is_masked() {
    let token = fake_token();
    let s = setup(true, "").await;
    let mut body = noise(5 * MIB);
    let at = 4 * MIB - 7;
    body[at - 1] = b'"';
    body[at..at + token.len()].copy_from_slice(token.as_bytes());
    body[at + token.len()] = b'"';
    let answer = upload(&s, Framing::Length, &body).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = s.sink.seen();
    assert!(seen[0].complete);
    let mut expected = body.clone();
    expected[at..at + token.len()].fill(b'*');
    assert!(seen[0].body == expected, "only the secret is masked");
    let record = upload_record(&s.env).await;
    assert_eq!(record.findings, ["github_token"]);
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_body_is_decided_from_content_length_before_any_byte_and_without_100_continue() {
    let s = setup(false, "max_body: 2MiB").await;
    let target = format!("{HOST}:{}", s.sink.port);
    let mut tls = tunnel(&s.env, &s.auth, &target, HOST).await.unwrap();
    let head = format!(
        "POST /store/file.bin HTTP/1.1\r\nHost: {target}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        3 * MIB
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_quiet(&mut tls, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"));
    assert!(answer.contains("max_body"));
    assert!(s.sink.seen().is_empty(), "nothing reached the upstream");
    let record = upload_record(&s.env).await;
    assert_eq!(record.reason, Some(Reason::BodyTooLarge));
    s.env.stop().await;

    // Without a Content-Length, the body is cut where it passes the bound.
    let s = setup(false, "max_body: 2MiB").await;
    let answer = upload(&s, Framing::Chunked, &noise(3 * MIB)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(s.sink.seen().iter().all(|seen| !seen.complete));
    let record = upload_record(&s.env).await;
    assert_eq!(record.reason, Some(Reason::BodyTooLarge));
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_off_or_breaks_its_framing_reaches_the_upstream_incomplete() {
    // The agent goes away halfway through its Content-Length.
    let s = setup(false, "").await;
    let target = format!("{HOST}:{}", s.sink.port);
    let mut tls = tunnel(&s.env, &s.auth, &target, HOST).await.unwrap();
    let head = format!(
        "POST /store/file.bin HTTP/1.1\r\nHost: {target}\r\nContent-Length: {}\r\n\r\n",
        4 * MIB
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&noise(2 * MIB)).await.unwrap();
    tls.shutdown().await.unwrap();
    let _ = read_until_quiet(&mut tls, Duration::from_secs(2)).await;
    drop(tls);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.sink.seen().iter().all(|seen| !seen.complete));
    let record = upload_record(&s.env).await;
    assert_eq!(record.reason, Some(Reason::ClientDisconnected));
    s.env.stop().await;

    // A chunk-size line that is not one, 2 MiB into the body.
    let s = setup(false, "").await;
    let target = format!("{HOST}:{}", s.sink.port);
    let mut tls = tunnel(&s.env, &s.auth, &target, HOST).await.unwrap();
    let head = format!(
        "POST /store/file.bin HTTP/1.1\r\nHost: {target}\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    for piece in noise(2 * MIB).chunks(64 * 1024) {
        tls.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        tls.write_all(piece).await.unwrap();
        tls.write_all(b"\r\n").await.unwrap();
    }
    tls.write_all(b"not-hex\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("framing_ambiguous"));
    assert!(s.sink.seen().iter().all(|seen| !seen.complete));
    let record = upload_record(&s.env).await;
    assert_eq!(record.reason, Some(Reason::FramingAmbiguous));
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_http2_a_large_body_streams_through_and_a_deep_secret_stops_it() {
    let token = fake_token();
    let body = noise(3 * MIB);
    let mut tainted = body.clone();
    let at = 2 * MIB + 3;
    tainted[at - 1] = b' ';
    tainted[at..at + token.len()].copy_from_slice(token.as_bytes());
    tainted[at + token.len()] = b' ';
    for (sent, status) in [(&body, 200), (&tainted, 403)] {
        let s = setup(false, "").await;
        let target = format!("{HOST}:{}", s.sink.port);
        let tls = tunnel_alpn(&s.env, &s.auth, &target, HOST, &[b"h2"])
            .await
            .unwrap();
        let mut h2 = h2_client(tls).await;
        let request = Request::post(format!("https://{target}/store/file.bin"))
            .body(Full::new(Bytes::from(sent.clone())))
            .unwrap();
        let (parts, answer) = h2_exchange(&mut h2, request).await;
        assert_eq!(parts.status, status, "{}", String::from_utf8_lossy(&answer));
        let seen = s.sink.seen();
        if status == 200 {
            assert!(seen[0].complete && seen[0].body == body);
        } else {
            assert!(seen
                .iter()
                .all(|seen| !seen.complete && !contains(&seen.body, token.as_bytes())));
            assert_eq!(upload_record(&s.env).await.findings, ["github_token"]);
        }
        s.env.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_must_be_held_whole_is_bounded_by_max_buffered_body() {
    // A declared AWS checksum is checked on the whole payload first.
    let s = setup(false, "max_buffered_body: 2MiB").await;
    let target = format!("{HOST}:{}", s.sink.port);
    let mut tls = tunnel(&s.env, &s.auth, &target, HOST).await.unwrap();
    let body = noise(3 * MIB);
    let head = format!(
        "POST /store/file.bin HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\nx-amz-checksum-crc32: AAAAAA==\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let _ = tls.write_all(&body).await;
    let answer = read_until_quiet(&mut tls, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_buffered_body"), "{answer}");
    assert!(s.sink.seen().is_empty(), "nothing reached the upstream");
    assert_eq!(
        upload_record(&s.env).await.reason,
        Some(Reason::BodyTooLarge)
    );
    s.env.stop().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Sends `body` with `Content-Encoding: coding` and returns the answer.
async fn upload_coded(s: &Setup, coding: &str, body: &[u8]) -> String {
    let target = format!("{HOST}:{}", s.sink.port);
    let mut tls = tunnel(&s.env, &s.auth, &target, HOST).await.unwrap();
    let head = format!(
        "POST /store/file.bin HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\nContent-Encoding: {coding}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let _ = tls.write_all(body).await;
    read_until_quiet(&mut tls, Duration::from_secs(20)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_body_is_scanned_decoded_and_sent_as_it_came() {
    let token = fake_token();
    // Small and large (past the first part), clean: forwarded as sent.
    for len in [10_000, 3 * MIB] {
        let s = setup(false, "").await;
        let mut plain = b"{\"note\":\"ok\"}\n".to_vec();
        plain.extend_from_slice(&noise(len));
        let body = gzip(&plain);
        let answer = upload_coded(&s, "gzip", &body).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let seen = s.sink.seen();
        assert!(seen[0].complete && seen[0].body == body);
        assert_eq!(seen[0].header("content-encoding"), Some("gzip"));
        s.env.stop().await;
    }
    // A secret inside, small and large, under a blocking and a stripping rule.
    for (len, strip) in [(10_000, false), (3 * MIB, false), (10_000, true)] {
        let s = setup(strip, "").await;
        let mut plain = noise(len);
        plain.extend_from_slice(format!(" {{\"key\":\"{token}\"}} ").as_bytes());
        let answer = upload_coded(&s, "gzip", &gzip(&plain)).await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        assert!(answer.contains("secret_in_request"), "{answer}");
        assert!(s.sink.seen().is_empty(), "nothing reached the upstream");
        s.env.stop().await;
    }
    // A coding credgate cannot read, a corrupt stream, a bomb.
    let s = setup(false, "max_buffered_body: 8MiB").await;
    let zeros = gzip(&vec![0u8; 64 * MIB]);
    for (coding, body, status) in [
        ("compress", b"anything".to_vec(), "400"),
        ("gzip", b"not gzip at all, just text".to_vec(), "400"),
        ("gzip", zeros, "413"),
    ] {
        let answer = upload_coded(&s, coding, &body).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{coding}: {answer}"
        );
    }
    assert!(s.sink.seen().is_empty(), "nothing reached the upstream");
    s.env.stop().await;
}
