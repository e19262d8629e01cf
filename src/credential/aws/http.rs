//! One pooled HTTP(S) client for the STS endpoint, every call bounded in time.
//!
//! The endpoint is the operator's configuration, not the agent's choice, so
//! it is dialled directly; TLS is always verified, and cleartext is used
//! only when every address dialled is a loopback address.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use zeroize::Zeroizing;

use crate::credential::source_http::SourceClient;

/// A client for the STS endpoint.
pub(super) struct StsHttp {
    client: SourceClient,
}

impl StsHttp {
    /// A client verifying the endpoint with `tls`.
    pub(super) fn new(tls: Arc<rustls::ClientConfig>, timeout: Duration) -> StsHttp {
        StsHttp {
            client: SourceClient::new(tls, timeout),
        }
    }

    /// Sends `request` (already signed) and reads the whole answer. The
    /// error names the endpoint, never a value sent or received.
    pub(super) async fn send(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), String> {
        let url = request.uri().to_string();
        self.client.send(request, &url).await
    }
}
