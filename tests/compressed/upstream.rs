//! The upstream of tests/compressed.rs: HTTPS, ignores `Accept-Encoding`
//! and answers each path compressed in its own way.

use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use credgate::tls::{CertificateAuthority, LeafCache};
use http::{Request, Response};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::HOST;

/// Zeros the bomb producer has fed its encoder, across the test binary.
pub(crate) static BOMB_ZEROS: AtomicU64 = AtomicU64::new(0);

/// A response body fed from a channel, one frame per message; the channel
/// is bounded, so a producer runs only as far as credgate reads.
struct ChannelBody(mpsc::Receiver<Bytes>);

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

/// The text every compressed endpoint sends, with the credential in it.
pub(crate) fn plain_body(secret: &str) -> String {
    let filler: String = (0..200).map(|i| format!("{{\"row\":{i}}},")).collect();
    format!("{filler}\n\"echo\":\"{secret}\"\n{filler}\n")
}

/// `text` encoded by `coding`, flushed in the middle of the credential so
/// its halves decode in different pieces where the encoder can flush.
fn encode(coding: &str, text: &str, secret: &str) -> Vec<u8> {
    let split = text.find(secret).unwrap() + secret.len() / 2;
    let (a, b) = text.as_bytes().split_at(split);
    fn two<W: std::io::Write>(mut w: W, a: &[u8], b: &[u8]) -> W {
        w.write_all(a).unwrap();
        w.flush().unwrap();
        w.write_all(b).unwrap();
        w
    }
    let fast = flate2::Compression::fast();
    match coding {
        "gzip" => two(flate2::write::GzEncoder::new(Vec::new(), fast), a, b)
            .finish()
            .unwrap(),
        "deflate" => two(flate2::write::ZlibEncoder::new(Vec::new(), fast), a, b)
            .finish()
            .unwrap(),
        "br" => {
            let mut out = Vec::new();
            drop(two(
                brotli::CompressorWriter::new(&mut out, 4096, 5, 22),
                a,
                b,
            ));
            out
        }
        "zstd" => ruzstd::encoding::compress_to_vec(
            text.as_bytes(),
            ruzstd::encoding::CompressionLevel::Fastest,
        ),
        other => panic!("no encoder for {other}"),
    }
}

/// Sends `bytes` as frames of `size` bytes, `pause` apart.
fn send_in(tx: mpsc::Sender<Bytes>, bytes: Vec<u8>, size: usize, pause: Duration) {
    tokio::spawn(async move {
        for piece in bytes.chunks(size) {
            tokio::time::sleep(pause).await;
            if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                return;
            }
        }
    });
}

/// 1 GiB of zeros gzipped, produced as credgate reads it, never held whole.
fn send_bomb(tx: mpsc::Sender<Bytes>) {
    tokio::task::spawn_blocking(move || {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            gz.write_all(&zeros).unwrap();
            BOMB_ZEROS.fetch_add(zeros.len() as u64, Ordering::Relaxed);
            if gz.get_ref().len() >= 16 * 1024 {
                let out = std::mem::take(gz.get_mut());
                if tx.blocking_send(Bytes::from(out)).is_err() {
                    return;
                }
            }
        }
        let _ = tx.blocking_send(Bytes::from(gz.finish().unwrap()));
    });
}

/// What the upstream answers on `path`: the `Content-Encoding`, and a body
/// producer started on `tx`.
fn answer(path: &str, secret: &str, tx: mpsc::Sender<Bytes>) -> Option<String> {
    let text = plain_body(secret);
    let fast = Duration::ZERO;
    match path.trim_start_matches('/') {
        coding @ ("gzip" | "deflate" | "br" | "zstd") => {
            // Compressed bytes in frames of 5: every secret's encoding is cut.
            send_in(tx, encode(coding, &text, secret), 5, fast);
            Some(coding.into())
        }
        "x-gzip" => {
            send_in(tx, encode("gzip", &text, secret), 64, fast);
            Some("x-gzip".into())
        }
        "gzip-br" => {
            let gz = encode("gzip", &text, secret);
            send_in(tx, brotli_of(&gz), 7, fast);
            Some("gzip, br".into())
        }
        "bomb" => {
            send_bomb(tx);
            Some("gzip".into())
        }
        "turns-corrupt" => {
            // A sound start, flushed so it decodes at once; then, once the
            // head has gone out, bytes no deflate stream may hold.
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(b"data: a sound start\n\n").unwrap();
            gz.flush().unwrap();
            let start = gz.get_ref().clone();
            tokio::spawn(async move {
                tx.send(Bytes::from(start)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = tx.send(Bytes::from(vec![0xff; 64])).await;
            });
            Some("gzip".into())
        }
        "truncated" => {
            // Paced, so the head goes out before the end is missed.
            let gz = encode("gzip", &text, secret);
            send_in(
                tx,
                gz[..gz.len() - 12].to_vec(),
                64,
                Duration::from_millis(30),
            );
            Some("gzip".into())
        }
        "compress" => {
            send_in(tx, text.into_bytes(), 64, fast);
            Some("compress".into())
        }
        "silent" => {
            // Compressed, and nothing of the body for far longer than the
            // idle limit.
            let gz = encode("gzip", &text, secret);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let _ = tx.send(Bytes::from(gz)).await;
            });
            Some("gzip".into())
        }
        "too-deep" => {
            let gz = encode("gzip", &text, secret);
            send_in(tx, gz, 64, fast);
            Some("identity, gzip, gzip, gzip".into())
        }
        _ => None,
    }
}

/// `data` brotli-compressed.
fn brotli_of(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

/// An HTTPS upstream that ignores `Accept-Encoding` and answers as
/// [`answer`] says; it notes the `Accept-Encoding` each request carried.
pub(crate) struct Packed {
    pub(crate) port: u16,
    _task: tokio::task::JoinHandle<()>,
}

impl Packed {
    pub(crate) async fn start(ca: Arc<CertificateAuthority>, secret: String) -> Self {
        let tls = crate::support::http1_only(LeafCache::new(ca).server_config(HOST).await.unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let secret = secret.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let asked = req.headers().get("accept-encoding").cloned();
                        let (tx, rx) = mpsc::channel(2);
                        let coding = answer(req.uri().path(), &secret, tx);
                        let mut response = Response::builder()
                            .header("content-type", "application/json")
                            .header("x-upstream", "packed");
                        if let Some(asked) = asked {
                            response = response.header("x-asked-encoding", asked);
                        }
                        if let Some(coding) = coding {
                            response = response.header("content-encoding", coding);
                        }
                        let response = response.body(ChannelBody(rx)).unwrap();
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Packed { port, _task: task }
    }
}
