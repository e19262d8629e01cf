//! Streamed responses through interception: server-sent events arrive as
//! they are sent, a credential split across writes far apart is still
//! masked, and a stream lives as long as it flows (bounded by
//! `upstream.idle_timeout`, not by a total).

mod support;

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use credgate::reason::Reason;
use credgate::tls::{CertificateAuthority, LeafCache};
use http::{Request, Response};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const HOST: &str = "stream.test";

/// One write of the upstream: the bytes, sent after `after` of quiet.
struct Write {
    after: Duration,
    bytes: Vec<u8>,
}

/// A response body fed from a channel, one frame per write.
struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// An HTTPS upstream that answers every request with an event stream made
/// of `writes`, and notes when each write left it.
struct EventSource {
    port: u16,
    sent: Arc<Mutex<Vec<Instant>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl EventSource {
    async fn start(
        ca: Arc<CertificateAuthority>,
        writes: fn(&str) -> Vec<Write>,
        secret: String,
    ) -> Self {
        let tls = http1_only(LeafCache::new(ca).server_config(HOST).await.unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let noted = sent.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let noted = noted.clone();
                let secret = secret.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |_req: Request<Incoming>| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        let plan: VecDeque<Write> = writes(&secret).into();
                        let noted = noted.clone();
                        tokio::spawn(async move {
                            for write in plan {
                                tokio::time::sleep(write.after).await;
                                noted.lock().unwrap().push(Instant::now());
                                if tx.send(Bytes::from(write.bytes)).is_err() {
                                    return;
                                }
                            }
                        });
                        let response = Response::builder()
                            .header("content-type", "text/event-stream")
                            .header("cache-control", "no-cache")
                            .body(ChannelBody(rx))
                            .unwrap();
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        EventSource {
            port,
            sent,
            _task: task,
        }
    }

    fn sent(&self) -> Vec<Instant> {
        self.sent.lock().unwrap().clone()
    }
}

struct Setup {
    env: Env,
    source: EventSource,
    secret: String,
    auth: String,
}

async fn setup(writes: fn(&str) -> Vec<Write>, idle_timeout: Option<&str>) -> Setup {
    setup_with(writes, idle_timeout, None).await
}

/// [`setup`], with the rule's own `idle_timeout` when `rule_idle` is given.
async fn setup_with(
    writes: fn(&str) -> Vec<Write>,
    idle_timeout: Option<&str>,
    rule_idle: Option<&str>,
) -> Setup {
    let secret = test_secret();
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let source = EventSource::start(ca.clone(), writes, secret.clone()).await;
    let config = format!(
        "credentials:\n  api:\n    static: {{ env: API_TOKEN }}\n\
         scopes:\n  api:\n    - host: {HOST}\n      port: {port}\n      credential: api\n      allow_private: true\n{rule_idle}",
        port = source.port,
        rule_idle = rule_idle
            .map(|idle| format!("      idle_timeout: {idle}\n"))
            .unwrap_or_default(),
    );
    let env = Env::start_trusting(ca, &config, &[("API_TOKEN", &secret)]).await;
    if let Some(idle) = idle_timeout {
        let text = std::fs::read_to_string(&env.config_path).unwrap();
        let text = text.replace(
            "first_byte_timeout: 10s }",
            &format!("first_byte_timeout: 10s, idle_timeout: {idle} }}"),
        );
        assert!(text.contains("idle_timeout"), "{text}");
        let provider: std::collections::BTreeMap<String, String> =
            [("API_TOKEN".to_string(), secret.clone())].into();
        let config = credgate::config::Config::parse(&text, &provider).unwrap();
        env.gateway().reload(config, &provider).await.unwrap();
    }
    env.resolver.map(HOST, "127.0.0.1");
    let (id, token) = env.start_task(&["api"]);
    Setup {
        auth: proxy_auth(&id, &token),
        env,
        source,
        secret,
    }
}

/// What the agent read, and when each read completed.
struct Received {
    reads: Vec<(Instant, Vec<u8>)>,
}

impl Received {
    fn all(&self) -> Vec<u8> {
        self.reads.iter().flat_map(|(_, b)| b.clone()).collect()
    }

    /// When `needle` was first complete in the body that had arrived.
    fn arrival(&self, needle: &[u8]) -> Option<Instant> {
        let mut seen = Vec::new();
        for (at, bytes) in &self.reads {
            seen.extend_from_slice(bytes);
            if dechunk(&seen).windows(needle.len()).any(|w| w == needle) {
                return Some(*at);
            }
        }
        None
    }

    /// The body, as far as it has arrived.
    fn body(&self) -> Vec<u8> {
        dechunk(&self.all())
    }
}

/// The data of the complete chunks of a chunked response in `raw` (head
/// included), as far as they go.
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Vec::new();
    };
    let mut rest = &raw[head_end + 4..];
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..line_end])
            .ok()
            .and_then(|line| usize::from_str_radix(line.split(';').next()?.trim(), 16).ok());
        let Some(size) = size else { break };
        let data = &rest[line_end + 2..];
        if size == 0 || data.len() < size + 2 {
            break;
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
    body
}

/// GETs the stream through an intercepted tunnel and reads until the
/// response ends (the terminal chunk) or the connection closes, within `limit`.
async fn read_stream(s: &Setup, limit: Duration) -> Received {
    read_stream_after(s, limit, Duration::ZERO).await
}

/// Like [`read_stream`], with the agent waiting `pause` after the first
/// read before it reads on.
async fn read_stream_after(s: &Setup, limit: Duration, pause: Duration) -> Received {
    let target = format!("{HOST}:{}", s.source.port);
    let mut tls = tunnel(&s.env, &s.auth, &target, HOST).await.unwrap();
    tls.write_all(
        format!("GET /events HTTP/1.1\r\nHost: {target}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + limit;
    let mut reads = Vec::new();
    let mut all = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::time::timeout_at(deadline, tls.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => {
                all.extend_from_slice(&buf[..n]);
                reads.push((Instant::now(), buf[..n].to_vec()));
                if reads.len() == 1 {
                    tokio::time::sleep(pause).await;
                }
                if all.ends_with(b"\r\n0\r\n\r\n") {
                    break;
                }
            }
            Ok(_) => break,
            Err(_) => panic!("the stream did not end within {limit:?}"),
        }
    }
    Received { reads }
}

/// Six events 400 ms apart, then one whose credential is split across two
/// writes 500 ms apart, then the end.
fn events(secret: &str) -> Vec<Write> {
    let mut writes: Vec<Write> = (0..6)
        .map(|i| Write {
            after: Duration::from_millis(400),
            bytes: format!("id: {i}\ndata: {{\"delta\":\"token {i}\"}}\n\n").into_bytes(),
        })
        .collect();
    let (head, tail) = secret.split_at(secret.len() / 2);
    writes.push(Write {
        after: Duration::from_millis(400),
        bytes: format!("data: {{\"echo\":\"{head}").into_bytes(),
    });
    writes.push(Write {
        after: Duration::from_millis(500),
        bytes: format!("{tail}\"}}\n\n").into_bytes(),
    });
    writes.push(Write {
        after: Duration::from_millis(50),
        bytes: b"data: [DONE]\n\n".to_vec(),
    });
    writes
}

#[tokio::test]
async fn events_arrive_as_they_are_sent_and_a_split_credential_is_masked() {
    let s = setup(events, None).await;
    let got = read_stream(&s, Duration::from_secs(20)).await;
    let sent = s.source.sent();
    assert_eq!(sent.len(), 9, "the upstream sent every write");
    for (i, sent_at) in sent.iter().enumerate().take(6) {
        let needle = format!("data: {{\"delta\":\"token {i}\"}}\n\n");
        let arrived = got
            .arrival(needle.as_bytes())
            .unwrap_or_else(|| panic!("event {i} never arrived"));
        let late = arrived.saturating_duration_since(*sent_at);
        assert!(
            late < Duration::from_millis(100),
            "event {i} arrived {late:?} after it was sent"
        );
    }
    // The credential, split across writes 0.5 s apart, never shows; its
    // event arrives, masked, as soon as its second half is sent.
    let all = got.all();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("transfer-encoding: chunked"),
        "{text}"
    );
    let (head, tail) = s.secret.split_at(s.secret.len() / 2);
    assert!(!text.contains(&s.secret), "{text}");
    assert!(
        !text.contains(head),
        "the first half reached the agent: {text}"
    );
    assert!(
        !text.contains(tail),
        "the second half reached the agent: {text}"
    );
    let masked = format!("data: {{\"echo\":\"{}\"}}\n\n", "*".repeat(s.secret.len()));
    let arrived = got
        .arrival(masked.as_bytes())
        .expect("the masked event arrived");
    let late = arrived.saturating_duration_since(sent[7]);
    assert!(
        late < Duration::from_millis(100),
        "the masked event came {late:?} late"
    );
    let body = String::from_utf8_lossy(&got.body()).into_owned();
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");

    let records = s
        .env
        .wait_for_record(|r| r.path.as_deref() == Some("/events") && r.scrubbed > 0)
        .await;
    let record = records
        .iter()
        .find(|r| r.path.as_deref() == Some("/events"))
        .expect("a record of the stream");
    assert_eq!(record.scrubbed, 1, "{record:?}");
    assert_eq!(record.reason, Some(Reason::Allowed), "{record:?}");
    s.env.stop().await;
}

/// Twelve writes 100 ms apart: 1.2 s of a stream that never pauses long.
fn steady(_secret: &str) -> Vec<Write> {
    (0..12)
        .map(|i| Write {
            after: Duration::from_millis(100),
            bytes: format!("data: tick {i}\n\n").into_bytes(),
        })
        .collect()
}

/// One event, then a pause far longer than the idle limit.
fn stalls(_secret: &str) -> Vec<Write> {
    vec![
        Write {
            after: Duration::ZERO,
            bytes: b"data: first\n\n".to_vec(),
        },
        Write {
            after: Duration::from_secs(5),
            bytes: b"data: too late\n\n".to_vec(),
        },
    ]
}

#[tokio::test]
async fn a_flowing_stream_outlives_the_idle_limit_and_a_stalled_one_is_cut() {
    let s = setup(steady, Some("400ms")).await;
    let got = read_stream(&s, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got.all()).into_owned();
    assert!(text.contains("data: tick 11\n\n"), "{text}");
    assert!(
        text.ends_with("\r\n0\r\n\r\n"),
        "the stream ended cleanly: {text}"
    );
    s.env.stop().await;

    let s = setup(stalls, Some("400ms")).await;
    let started = Instant::now();
    let got = read_stream(&s, Duration::from_secs(10)).await;
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&got.all()).into_owned();
    assert!(text.contains("data: first"), "{text}");
    assert!(!text.contains("too late"), "{text}");
    // Cut mid-body: the chunked body never ends cleanly.
    assert!(!text.ends_with("\r\n0\r\n\r\n"), "{text}");
    assert!(took < Duration::from_secs(3), "cut after {took:?}");
    let records = s
        .env
        .wait_for_record(|r| r.reason == Some(Reason::UpstreamTimeout))
        .await;
    let record = records
        .iter()
        .find(|r| r.reason == Some(Reason::UpstreamTimeout))
        .expect("a record of the cut stream");
    assert_eq!(record.path.as_deref(), Some("/events"));
    assert!(
        record
            .message
            .as_deref()
            .is_some_and(|m| m.contains("upstream.idle_timeout")),
        "{record:?}"
    );
    s.env.stop().await;
}

/// One event, a pause of a second, and another.
fn pauses(_secret: &str) -> Vec<Write> {
    vec![
        Write {
            after: Duration::ZERO,
            bytes: b"data: first\n\n".to_vec(),
        },
        Write {
            after: Duration::from_secs(1),
            bytes: b"data: after the pause\n\n".to_vec(),
        },
    ]
}

#[tokio::test]
async fn a_rule_may_let_its_streams_pause_longer_than_the_idle_limit() {
    // Cut by upstream.idle_timeout...
    let s = setup(pauses, Some("300ms")).await;
    let text =
        String::from_utf8_lossy(&read_stream(&s, Duration::from_secs(10)).await.all()).into_owned();
    assert!(!text.contains("after the pause"), "{text}");
    s.env.stop().await;
    // ...but not under a rule that sets its own.
    let s = setup_with(pauses, Some("300ms"), Some("5s")).await;
    let text =
        String::from_utf8_lossy(&read_stream(&s, Duration::from_secs(10)).await.all()).into_owned();
    assert!(text.contains("data: after the pause\n\n"), "{text}");
    assert!(
        text.ends_with("\r\n0\r\n\r\n"),
        "the stream ended cleanly: {text}"
    );
    s.env.stop().await;
}

/// 8 MiB at once: far more than the socket buffers hold, so the upstream
/// waits on the agent, not the other way round.
fn bulk(_secret: &str) -> Vec<Write> {
    (0..128)
        .map(|_| Write {
            after: Duration::ZERO,
            bytes: vec![b'x'; 64 * 1024],
        })
        .collect()
}

#[tokio::test]
async fn an_agent_that_reads_slowly_does_not_make_the_upstream_idle() {
    let s = setup(bulk, Some("400ms")).await;
    let got = read_stream_after(&s, Duration::from_secs(20), Duration::from_millis(1500)).await;
    assert_eq!(got.body().len(), 128 * 64 * 1024);
    let records = s
        .env
        .wait_for_record(|r| r.path.as_deref() == Some("/events"))
        .await;
    let record = records
        .iter()
        .find(|r| r.path.as_deref() == Some("/events"))
        .expect("a record of the stream");
    assert_eq!(record.reason, Some(Reason::Allowed), "{record:?}");
    s.env.stop().await;
}
