//! How credential sources reach their servers (token endpoints, Vault, the
//! GitHub API, STS): verified TLS for `https`, and plain TCP only to a
//! loopback address — checked on the address dialled, not only on the name
//! in the configuration.

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
pub(crate) struct SourceConnector {
    tls: TlsConnector,
}

impl SourceConnector {
    /// Verifies servers with `tls` (webpki roots plus the source's `ca`).
    pub(crate) fn new(tls: Arc<rustls::ClientConfig>) -> Self {
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
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
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
}

impl SourceClient {
    /// Verifies servers with `tls`; each exchange must finish within `timeout`.
    pub(crate) fn new(tls: Arc<rustls::ClientConfig>, timeout: Duration) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(SourceConnector::new(tls));
        SourceClient { client, timeout }
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
                    if bytes.len() + data.len() > MAX_ANSWER_BYTES {
                        return Err(format!(
                            "the answer of {server} is larger than {MAX_ANSWER_BYTES} bytes"
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
