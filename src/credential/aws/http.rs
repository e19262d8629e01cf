//! One pooled HTTP(S) client for the STS endpoint, every call bounded in time.
//!
//! The endpoint is the operator's configuration, not the agent's choice, so
//! it is dialled directly; TLS is always verified, and cleartext is used
//! only when every address dialled is a loopback address.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::credential::source_http::{error_chain, SourceConnector};

/// The most an STS answer may hold; a credentials document is ~2 KiB.
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// A client for the STS endpoint.
pub(super) struct StsHttp {
    client: Client<SourceConnector, Full<Bytes>>,
    timeout: Duration,
}

impl StsHttp {
    /// A client trusting the webpki roots plus the PEM bundle `ca`.
    pub(super) fn new(ca: Option<&Path>, timeout: Duration) -> Result<StsHttp, String> {
        let tls = crate::tls::upstream_client_config(ca).map_err(|e| e.to_string())?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(SourceConnector::new(tls));
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
                .map_err(|e| format!("calling {url} failed: {}", error_chain(&e)))?;
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
