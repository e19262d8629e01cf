//! The one bounded HTTP exchange every credential source uses to reach its
//! server (token endpoints, Vault, the GitHub API, STS): verified TLS for
//! `https`, plain TCP only to a loopback address (checked on the address
//! dialled, not only on the name in the configuration), each exchange
//! bounded in time and size, the answer zeroed when dropped.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use zeroize::Zeroizing;

use crate::stream::{Io, UpstreamStream};

/// The connector every source's HTTP client is built on.
#[derive(Clone)]
struct SourceConnector {
    tls: TlsConnector,
}

impl SourceConnector {
    /// Verifies servers with `tls` (webpki roots plus the source's `ca`).
    fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        SourceConnector {
            tls: TlsConnector::from(tls),
        }
    }
}

impl tower_service::Service<Uri> for SourceConnector {
    type Response = UpstreamStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<UpstreamStream>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the URL has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let secure = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .filter(|addr| secure || addr.ip().is_loopback())
                .collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{host} has no address credgate may reach over plain http (loopback only)"
                    ),
                ));
            }
            let stream = TcpStream::connect(&addrs[..]).await?;
            let _ = stream.set_nodelay(true);
            if !secure {
                return Ok(UpstreamStream::new(Io::Plain(stream)));
            }
            let name = ServerName::try_from(host).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "not a valid server name")
            })?;
            let stream = tls.connect(name, stream).await?;
            Ok(UpstreamStream::new(Io::Tls(Box::new(stream))))
        })
    }
}

/// An error and its sources, on one line (the client's own errors hide the
/// useful part in their sources).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// The most a source's answer may hold; token documents and secrets are far
/// smaller.
pub(crate) const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A pooled client for one source: every exchange bounded in time and in
/// size, the answer held in memory that is zeroed when dropped (it usually
/// carries a credential).
pub(crate) struct SourceClient {
    client: Client<SourceConnector, Full<Bytes>>,
    timeout: Duration,
    max_answer: usize,
}

impl SourceClient {
    /// Verifies servers with `tls`; each exchange must finish within
    /// `timeout`, and an answer may hold [`MAX_ANSWER_BYTES`].
    pub(crate) fn new(tls: Arc<rustls::ClientConfig>, timeout: Duration) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(SourceConnector::new(tls));
        SourceClient {
            client,
            timeout,
            max_answer: MAX_ANSWER_BYTES,
        }
    }

    /// Answers may hold at most `bytes` (below [`MAX_ANSWER_BYTES`]).
    pub(crate) fn with_answer_limit(mut self, bytes: usize) -> Self {
        self.max_answer = bytes.min(MAX_ANSWER_BYTES);
        self
    }

    /// Sends `request` and reads the whole answer. Errors name `server` (a
    /// URL or a product name), never a value sent or received.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
        server: &str,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), String> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("cannot reach {server}: {}", error_chain(&e)))?;
            let status = response.status();
            let mut bytes = Zeroizing::new(Vec::new());
            let mut body = response.into_body();
            while let Some(frame) = body.frame().await {
                let frame =
                    frame.map_err(|e| format!("reading the answer of {server} failed: {e}"))?;
                if let Some(data) = frame.data_ref() {
                    if bytes.len() + data.len() > self.max_answer {
                        return Err(format!(
                            "the answer of {server} is larger than {} bytes",
                            self.max_answer
                        ));
                    }
                    bytes.extend_from_slice(data);
                }
            }
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("{server} did not answer within {:?}", self.timeout))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server on 127.0.0.1 that answers every connection with `answer`
    /// after `delay`; returns its URL.
    async fn server(answer: Vec<u8>, delay: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut head = [0u8; 4096];
                    let _ = stream.read(&mut head).await;
                    tokio::time::sleep(delay).await;
                    let _ = stream.write_all(&answer).await;
                });
            }
        });
        format!("http://127.0.0.1:{port}/token")
    }

    fn client(timeout: Duration) -> SourceClient {
        let tls = crate::tls::upstream_client_config(None, &crate::provider::FakeProvider::new())
            .unwrap();
        SourceClient::new(tls, timeout)
    }

    fn get(url: &str) -> Request<Full<Bytes>> {
        Request::get(url).body(Full::new(Bytes::new())).unwrap()
    }

    fn answer(body: &[u8]) -> Vec<u8> {
        let mut out =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn an_answer_within_the_bounds_is_read_whole() {
        let url = server(answer(b"{\"ok\":true}"), Duration::ZERO).await;
        let (status, body) = client(Duration::from_secs(5))
            .send(get(&url), "the test server")
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"{\"ok\":true}");
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_refused_without_its_content() {
        let body = b"test-secret-answer-".repeat(100);
        let url = server(answer(&body), Duration::ZERO).await;
        let limited = client(Duration::from_secs(5)).with_answer_limit(1000);
        let err = limited
            .send(get(&url), "the test server")
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "the answer of the test server is larger than 1000 bytes"
        );
        // The limit can only be lowered.
        let raised = client(Duration::from_secs(5)).with_answer_limit(usize::MAX);
        assert_eq!(raised.max_answer, MAX_ANSWER_BYTES);
    }

    #[tokio::test]
    async fn a_slow_server_is_a_timeout_naming_it() {
        let url = server(answer(b"{}"), Duration::from_secs(5)).await;
        let err = client(Duration::from_millis(200))
            .send(get(&url), "the test server")
            .await
            .unwrap_err();
        assert_eq!(err, "the test server did not answer within 200ms");
    }

    #[tokio::test]
    async fn cleartext_goes_to_loopback_only() {
        // A name that resolves to a non-loopback address is refused before
        // anything is sent; 192.0.2.0/24 is reserved for documentation.
        let err = client(Duration::from_secs(5))
            .send(get("http://192.0.2.1:9/token"), "the test server")
            .await
            .unwrap_err();
        assert!(err.contains("loopback only"), "{err}");
    }
}
