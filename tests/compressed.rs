//! Compressed responses through interception: an upstream that compresses
//! although credgate asks for `Accept-Encoding: identity` has its body
//! decoded, scrubbed and sent on decoded; a decompression bomb is refused
//! before the head with bounded memory; a body that turns corrupt after the
//! head breaks the connection; a coding credgate cannot decode is refused.

mod support;
#[path = "compressed/upstream.rs"]
mod upstream;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use credgate::reason::Reason;
use credgate::tls::CertificateAuthority;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use upstream::{plain_body, Packed, BOMB_ZEROS};

const HOST: &str = "packed.test";

struct Setup {
    env: Env,
    upstream: Packed,
    secret: String,
    auth: String,
}

async fn setup() -> Setup {
    setup_with("").await
}

/// Like [`setup`], with `upstream` settings added (`idle_timeout: 400ms`).
async fn setup_with(upstream_settings: &str) -> Setup {
    let secret = test_secret();
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = Packed::start(ca.clone(), secret.clone()).await;
    let config = format!(
        "credentials:\n  api:\n    static: {{ env: API_TOKEN }}\n\
         scopes:\n  api:\n    - host: {HOST}\n      port: {port}\n      credential: api\n      allow_private: true\n",
        port = upstream.port
    );
    let env = Env::start_trusting(ca, &config, &[("API_TOKEN", &secret)]).await;
    if !upstream_settings.is_empty() {
        let text = std::fs::read_to_string(&env.config_path).unwrap();
        let text = text.replace(
            "first_byte_timeout: 10s }",
            &format!("first_byte_timeout: 10s, {upstream_settings} }}"),
        );
        assert!(text.contains(upstream_settings), "{text}");
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
        upstream,
        secret,
    }
}

/// A response as the agent read it off the wire.
struct Got {
    head: String,
    /// The raw bytes after the head.
    rest: Vec<u8>,
}

impl Got {
    /// Whether a chunked body ended with its terminal chunk.
    fn ended_cleanly(&self) -> bool {
        self.rest.ends_with(b"\r\n0\r\n\r\n") || self.rest.starts_with(b"0\r\n\r\n")
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// GETs `path` through an intercepted tunnel, `Connection: close`, and reads
/// until the connection closes (within `limit`).
async fn get(s: &Setup, path: &str, limit: Duration) -> Got {
    request(s, "GET", path, limit).await
}

/// Like [`get`], with any method.
async fn request(s: &Setup, method: &str, path: &str, limit: Duration) -> Got {
    let target = format!("{HOST}:{}", s.upstream.port);
    let mut tls = tunnel(&s.env, &s.auth, &target, HOST).await.unwrap();
    tls.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{path}: no end within {limit:?}");
    let end = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("{path}: no head in {:?}", String::from_utf8_lossy(&all)));
    Got {
        head: String::from_utf8_lossy(&all[..end]).into_owned(),
        rest: all[end + 4..].to_vec(),
    }
}

/// The data of a chunked body.
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..line_end])
            .ok()
            .and_then(|line| usize::from_str_radix(line.trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else {
            break;
        };
        let data = &rest[line_end + 2..];
        if data.len() < size + 2 {
            break;
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
    body
}

/// The request record of `path`, once written.
async fn record_of(env: &Env, path: &str) -> credgate::audit::DecisionRecord {
    let records = env
        .wait_for_record(|r| r.path.as_deref() == Some(path))
        .await;
    records
        .into_iter()
        .find(|r| r.path.as_deref() == Some(path))
        .unwrap_or_else(|| panic!("no record of {path}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_coding_is_decoded_scrubbed_and_sent_on_decoded() {
    let s = setup().await;
    let masked = plain_body(&"*".repeat(s.secret.len()));
    for path in ["/gzip", "/x-gzip", "/deflate", "/br", "/zstd", "/gzip-br"] {
        let got = get(&s, path, Duration::from_secs(20)).await;
        assert!(got.head.starts_with("HTTP/1.1 200"), "{path}: {}", got.head);
        assert_eq!(got.header("content-encoding"), None, "{path}: {}", got.head);
        assert_eq!(got.header("content-length"), None, "{path}: {}", got.head);
        assert_eq!(got.header("transfer-encoding"), Some("chunked"), "{path}");
        assert_eq!(
            got.header("x-upstream"),
            Some("packed"),
            "{path}: {}",
            got.head
        );
        // credgate still asks for no coding; decoding is for when it comes anyway.
        assert_eq!(got.header("x-asked-encoding"), Some("identity"), "{path}");
        assert!(got.ended_cleanly(), "{path}: the body did not end cleanly");
        let body = String::from_utf8(dechunk(&got.rest)).unwrap();
        assert_eq!(body, masked, "{path}");
        let raw = String::from_utf8_lossy(&got.rest);
        let (head, tail) = s.secret.split_at(s.secret.len() / 2);
        assert!(!raw.contains(head) && !raw.contains(tail), "{path}: {raw}");
        let record = record_of(&s.env, path).await;
        assert_eq!(record.reason, Some(Reason::Allowed), "{path}: {record:?}");
        assert_eq!(record.scrubbed, 1, "{path}: {record:?}");
        assert_eq!(record.bytes_out, masked.len() as u64, "{path}: {record:?}");
    }
    s.env.stop().await;
}

/// The peak resident set of this process (credgate runs in it).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_refused_before_the_head_with_bounded_memory() {
    let s = setup().await;
    let before = peak_rss_kib();
    let started = Instant::now();
    let got = get(&s, "/bomb", Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert!(got.head.starts_with("HTTP/1.1 502"), "{}", got.head);
    assert_eq!(got.header("x-credgate-reason"), Some("response_too_large"));
    let record = record_of(&s.env, "/bomb").await;
    assert_eq!(record.reason, Some(Reason::ResponseTooLarge), "{record:?}");
    assert!(
        record
            .message
            .as_deref()
            .is_some_and(|m| m.contains("upstream.max_decode_ratio")),
        "{record:?}"
    );
    assert_eq!(record.bytes_out, 0, "{record:?}");
    // Judged from the first mebibyte: the upstream was stopped long before
    // its gibibyte, and nothing near it was ever held.
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    let zeros = BOMB_ZEROS.load(Ordering::Relaxed);
    assert!(
        zeros < 256 << 20,
        "the upstream got to encode {zeros} zeros"
    );
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 200 * 1024, "peak RSS grew by {grown} KiB");
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_after_the_head_cuts_the_connection() {
    let s = setup().await;
    for (path, words) in [
        ("/turns-corrupt", "corrupt"),
        ("/truncated", "ended before"),
    ] {
        let got = get(&s, path, Duration::from_secs(20)).await;
        assert!(got.head.starts_with("HTTP/1.1 200"), "{path}: {}", got.head);
        assert!(!got.ended_cleanly(), "{path}: a cut body looked complete");
        let record = record_of(&s.env, path).await;
        assert_eq!(
            record.reason,
            Some(Reason::ResponseUnscannable),
            "{path}: {record:?}"
        );
        assert!(
            record.message.as_deref().is_some_and(|m| m.contains(words)),
            "{path}: {record:?}"
        );
    }
    let got = get(&s, "/turns-corrupt", Duration::from_secs(20)).await;
    let body = String::from_utf8(dechunk(&got.rest)).unwrap();
    assert_eq!(body, "data: a sound start\n\n");
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coding_credgate_cannot_decode_is_refused() {
    let s = setup().await;
    for (path, words) in [
        ("/compress", "compress\\\", which credgate cannot decode"),
        ("/too-deep", "3 content codings"),
    ] {
        let got = get(&s, path, Duration::from_secs(20)).await;
        assert!(got.head.starts_with("HTTP/1.1 502"), "{path}: {}", got.head);
        assert_eq!(
            got.header("x-credgate-reason"),
            Some("response_unscannable")
        );
        let body = String::from_utf8_lossy(&got.rest);
        assert!(body.contains(words), "{path}: {body}");
        assert!(!body.contains(&s.secret), "{path}: {body}");
        let record = record_of(&s.env, path).await;
        assert_eq!(
            record.reason,
            Some(Reason::ResponseUnscannable),
            "{path}: {record:?}"
        );
    }
    s.env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_the_first_piece_is_bounded_and_head_gets_decoded_headers() {
    let s = setup_with("idle_timeout: 400ms").await;
    let started = Instant::now();
    let got = get(&s, "/silent", Duration::from_secs(10)).await;
    assert!(got.head.starts_with("HTTP/1.1 504"), "{}", got.head);
    assert_eq!(got.header("x-credgate-reason"), Some("upstream_timeout"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let record = record_of(&s.env, "/silent").await;
    assert_eq!(record.reason, Some(Reason::UpstreamTimeout), "{record:?}");

    // A HEAD describes the body as a GET would get it: decoded.
    let got = request(&s, "HEAD", "/gzip", Duration::from_secs(10)).await;
    assert!(got.head.starts_with("HTTP/1.1 200"), "{}", got.head);
    assert_eq!(got.header("content-encoding"), None, "{}", got.head);
    s.env.stop().await;
}
