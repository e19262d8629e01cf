//! A small JSON-over-HTTP client for talking to an authorization server:
//! form-encoded POSTs and JSON GETs, each bounded in time and size, over
//! verified TLS, or plain HTTP to a loopback address only.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::credential::source_http::{error_chain, SourceConnector};

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
    /// The body, bounded by [`MAX_RESPONSE_BYTES`].
    pub(super) body: Bytes,
}

/// Why a call to the authorization server failed. Messages name the URL,
/// never a request or response body.
#[derive(Debug, thiserror::Error)]
pub(super) enum HttpError {
    /// The call did not complete in time.
    #[error("{url} did not answer within {timeout:?}")]
    Timeout {
        /// The URL called.
        url: String,
        /// The bound.
        timeout: Duration,
    },
    /// Connecting, sending or receiving failed.
    #[error("calling {url} failed: {message}")]
    Transport {
        /// The URL called.
        url: String,
        /// What went wrong, from the connector or hyper.
        message: String,
    },
    /// The answer was larger than [`MAX_RESPONSE_BYTES`] or broke off.
    #[error("reading the answer of {url} failed: {message}")]
    Body {
        /// The URL called.
        url: String,
        /// What went wrong.
        message: String,
    },
}

/// A pooled client for one authorization server configuration.
#[derive(Clone)]
pub(super) struct HttpClient {
    client: Client<SourceConnector, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client verifying servers with `tls`, bounding
    /// every call (connect, send, read the whole answer) by `timeout`.
    pub(super) fn new(tls: std::sync::Arc<rustls::ClientConfig>, timeout: Duration) -> HttpClient {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(SourceConnector::new(tls));
        HttpClient { client, timeout }
    }

    /// `GET url` asking for JSON.
    pub(super) async fn get_json(&self, url: &Uri) -> Result<HttpAnswer, HttpError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(url.clone())
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| transport(url, e))?;
        self.call(url, request).await
    }

    /// `POST url` with a form-encoded `form` body and optional
    /// `Authorization` value (both may hold secrets and are never logged).
    pub(super) async fn post_form(
        &self,
        url: &Uri,
        form: String,
        authorization: Option<String>,
    ) -> Result<HttpAnswer, HttpError> {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(url.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(value) = authorization {
            let mut value =
                http::HeaderValue::from_str(&value).map_err(|_| HttpError::Transport {
                    url: url.to_string(),
                    message: "the client authentication is not a valid header value".into(),
                })?;
            value.set_sensitive(true);
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| transport(url, e))?;
        self.call(url, request).await
    }

    async fn call(
        &self,
        url: &Uri,
        request: Request<Full<Bytes>>,
    ) -> Result<HttpAnswer, HttpError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| transport(url, error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| HttpError::Body {
                    url: url.to_string(),
                    message: e.to_string(),
                })?
                .to_bytes();
            Ok(HttpAnswer { status, body })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| HttpError::Timeout {
                url: url.to_string(),
                timeout: self.timeout,
            })?
    }
}

fn transport(url: &Uri, message: impl ToString) -> HttpError {
    HttpError::Transport {
        url: url.to_string(),
        message: message.to_string(),
    }
}
