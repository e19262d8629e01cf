//! JSON over HTTP(S) to the GitHub REST API: one pooled client, every call
//! bounded in time.
//!
//! The API base is the operator's configuration, not something an agent
//! chose, so it is dialled directly (no destination policy), over TLS that is
//! always verified; cleartext is accepted only for loopback hosts, which
//! config validation enforces before a client is built.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use zeroize::Zeroizing;

use crate::credential::source_http::SourceClient;
use crate::credential::Secret;

/// The REST API version the calls are written against.
const API_VERSION: &str = "2022-11-28";

/// A client for one GitHub API base (`https://api.github.com` or a GitHub
/// Enterprise Server's `https://ghe.example/api/v3`).
pub(super) struct GitHubHttp {
    client: SourceClient,
    /// The base URL, no trailing slash.
    api: String,
}

/// What GitHub answered: the status and the JSON document (`Null` when empty).
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: serde_json::Value,
}

impl Answer {
    /// GitHub's `message`, shortened, for errors; it describes the request
    /// ("Bad credentials", "Not Found"), never a token.
    pub(super) fn message(&self) -> String {
        let message: String = self.body["message"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        if message.is_empty() {
            "no error detail".into()
        } else {
            message
        }
    }
}

impl GitHubHttp {
    /// A client for `api` (already validated), verifying TLS with `tls`.
    pub(super) fn new(api: &str, tls: Arc<rustls::ClientConfig>, timeout: Duration) -> GitHubHttp {
        GitHubHttp {
            client: SourceClient::new(tls, timeout),
            api: api.trim_end_matches('/').to_string(),
        }
    }

    /// The base URL, for messages.
    pub(super) fn api(&self) -> &str {
        &self.api
    }

    /// Calls `{api}{path}` with `bearer` as `Authorization: Bearer` and
    /// `body` as JSON. The error is a description without any value sent or
    /// received.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: &Secret,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, String> {
        let uri = format!("{}{path}", self.api);
        let mut authorization = Zeroizing::new(b"Bearer ".to_vec());
        authorization.extend_from_slice(bearer.expose());
        let mut authorization = HeaderValue::from_bytes(&authorization)
            .map_err(|_| "the bearer token is not a valid header value".to_string())?;
        authorization.set_sensitive(true);
        let mut request = Request::builder()
            .method(method)
            .uri(&uri)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", API_VERSION)
            .header(
                "user-agent",
                concat!("credgate/", env!("CARGO_PKG_VERSION")),
            )
            .header("authorization", authorization);
        let payload = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(body).map_err(|e| e.to_string())?)
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let (status, bytes) = self.client.send(request, &self.api).await?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Null
        } else {
            // Not JSON (a proxy's error page, say): the status still tells
            // what happened; the body is not shown.
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
        };
        Ok(Answer { status, body })
    }
}
