//! One pooled HTTP(S) client for the STS endpoint, every call bounded in time.
//!
//! The endpoint is the operator's configuration, not the agent's choice, so
//! it is dialled directly; TLS is always verified, and cleartext is used
//! only when every address dialled is a loopback address.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::proxy::upstream::UpstreamStream;

/// The most an STS answer may hold; a credentials document is ~2 KiB.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// A client for the STS endpoint.
pub(super) struct StsHttp {
    client: Client<StsConnector, Full<Bytes>>,
    timeout: Duration,
}

impl StsHttp {
    /// A client trusting the webpki roots plus the PEM bundle `ca`.
    pub(super) fn new(ca: Option<&Path>, timeout: Duration) -> Result<StsHttp, String> {
        let tls = crate::tls::upstream_client_config(ca).map_err(|e| e.to_string())?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(StsConnector {
                tls: TlsConnector::from(tls),
            });
        Ok(StsHttp { client, timeout })
    }

    /// Sends `request` (already signed) and reads the whole answer. The
    /// error names the endpoint, never a value sent or received.
    pub(super) async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), String> {
        let url = request.uri().clone();
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("calling {url} failed: {}", chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer of {url} failed: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("{url} did not answer within {:?}", self.timeout))?
    }
}

/// An error and its sources, on one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Dials the STS endpoint: TLS for https, plain TCP only to loopback addresses.
#[derive(Clone)]
struct StsConnector {
    tls: TlsConnector,
}

impl tower_service::Service<Uri> for StsConnector {
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
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let secure = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
            let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .filter(|addr| secure || addr.ip().is_loopback())
                .collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{host} has no address credgate may reach (plain http: loopback only)"),
                ));
            }
            let stream = TcpStream::connect(&addrs[..]).await?;
            let _ = stream.set_nodelay(true);
            if !secure {
                return Ok(UpstreamStream::Plain(TokioIo::new(stream)));
            }
            let name = ServerName::try_from(host)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = tls.connect(name, stream).await?;
            Ok(UpstreamStream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}
