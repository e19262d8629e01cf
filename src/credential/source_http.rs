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

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::proxy::upstream::UpstreamStream;

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
                return Ok(UpstreamStream::Plain(TokioIo::new(stream)));
            }
            let name = ServerName::try_from(host).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidInput, "not a valid server name")
            })?;
            let stream = tls.connect(name, stream).await?;
            Ok(UpstreamStream::Tls(Box::new(TokioIo::new(stream))))
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
