//! A small JSON-over-HTTP client for talking to an authorization server:
//! form-encoded POSTs and JSON GETs, each bounded in time and size, over
//! verified TLS, or plain HTTP to a loopback address only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use zeroize::Zeroizing;

use crate::credential::source_http::SourceClient;

/// The most an authorization server's answer may hold; token responses and
/// metadata documents are far smaller.
pub(super) const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// Checks that `url` is an absolute `https://` URL, or `http://` to a
/// loopback host, without userinfo or fragment (see
/// [`check_endpoint`](crate::credential::endpoint::check_endpoint)).
/// Returns the parsed URI.
pub(super) fn check_url(url: &str) -> Result<Uri, String> {
    crate::credential::endpoint::check_endpoint(url)
}

/// What an authorization server answered.
pub(super) struct HttpAnswer {
    /// The status code.
    pub(super) status: StatusCode,
    /// The body, bounded by [`MAX_RESPONSE_BYTES`] and zeroed when dropped
    /// (a token response carries the token).
    pub(super) body: Zeroizing<Vec<u8>>,
}

/// A pooled client for one authorization server configuration: the shared
/// bounded exchange of every source, with form and JSON requests on top.
pub(super) struct HttpClient {
    client: SourceClient,
}

impl HttpClient {
    /// A client verifying servers with `tls`, bounding every call (connect,
    /// send, read the whole answer) by `timeout` and [`MAX_RESPONSE_BYTES`].
    pub(super) fn new(tls: Arc<rustls::ClientConfig>, timeout: Duration) -> HttpClient {
        HttpClient {
            client: SourceClient::new(tls, timeout).with_answer_limit(MAX_RESPONSE_BYTES),
        }
    }

    /// `GET url` asking for JSON.
    pub(super) async fn get_json(&self, url: &Uri) -> Result<HttpAnswer, String> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(url.clone())
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("calling {url} failed: {e}"))?;
        self.call(url, request).await
    }

    /// `POST url` with a form-encoded `form` body and optional
    /// `Authorization` value (both may hold secrets and are never logged).
    pub(super) async fn post_form(
        &self,
        url: &Uri,
        form: String,
        authorization: Option<String>,
    ) -> Result<HttpAnswer, String> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(value) = authorization {
            let mut value = http::HeaderValue::from_str(&value).map_err(|_| {
                format!(
                    "calling {url} failed: the client authentication is not a valid header value"
                )
            })?;
            value.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| format!("calling {url} failed: {e}"))?;
        self.call(url, request).await
    }

    async fn call(&self, url: &Uri, request: Request<Full<Bytes>>) -> Result<HttpAnswer, String> {
        let (status, body) = self.client.send(request, &url.to_string()).await?;
        Ok(HttpAnswer { status, body })
    }
}
