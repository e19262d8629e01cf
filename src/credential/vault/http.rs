//! JSON over HTTP(S) to Vault: one pooled client, every call bounded in time.
//!
//! The Vault address is the operator's configuration, not something an agent
//! chose, so it is dialled directly (no destination policy), over TLS that is
//! always verified; cleartext is accepted only for loopback addresses, which
//! config validation enforces before a client is built.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;

use crate::credential::source_http::SourceClient;
use crate::credential::Secret;

/// A client for one Vault server.
pub(super) struct VaultHttp {
    client: SourceClient,
    /// `scheme://host:port`, no trailing slash.
    address: String,
}

/// What Vault answered: the status and the JSON document (`Null` when empty).
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: serde_json::Value,
}

impl Answer {
    /// Vault's `errors` list joined, for messages; Vault's errors describe
    /// the request (permission denied, invalid lease), never a secret.
    pub(super) fn errors(&self) -> String {
        let joined = self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        let mut joined: String = joined.chars().take(200).collect();
        if joined.is_empty() {
            joined = "no error detail".into();
        }
        joined
    }
}

impl VaultHttp {
    /// A client for `address` (already validated), verifying TLS with `tls`.
    pub(super) fn new(
        address: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> VaultHttp {
        VaultHttp {
            client: SourceClient::new(tls, timeout),
            address: address.trim_end_matches('/').to_string(),
        }
    }

    /// Calls `/v1/{path}` with `token` as `X-Vault-Token` and `body` as JSON.
    /// The error is a description without any value sent or received.
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, String> {
        let uri = format!("{}/v1/{path}", self.address);
        let mut request = Request::builder().method(method).uri(&uri);
        if let Some(token) = token {
            let mut value = http::HeaderValue::from_bytes(token.expose())
                .map_err(|_| "the Vault token is not a valid header value".to_string())?;
            value.set_sensitive(true);
            request = request.header("x-vault-token", value);
        }
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
        let (status, bytes) = self
            .client
            .send(request, &format!("Vault at {}", self.address))
            .await?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|_| format!("Vault answered {status} with a body that is not JSON"))?
        };
        Ok(Answer { status, body })
    }
}
