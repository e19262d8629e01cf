//! A small client for the admin API, used by `credgate task` and `credgate run`.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use zeroize::Zeroize;

use crate::secret::Secret;
use crate::task::TaskView;

use super::api::{CreateTaskRequest, ErrorBody};

/// Every exchange (connect, request, response) must finish within this time.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers larger than this are refused; a task list is far smaller.
const MAX_RESPONSE: usize = 8 * 1024 * 1024;

/// Why an admin API call failed. Never contains the admin or a task token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminClientError {
    /// The admin URL cannot be used.
    #[error("admin URL {url:?}: {why}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No TCP connection to the admin listener.
    #[error("cannot reach the admin API at {addr} (is `credgate serve` running?): {source}")]
    Connect {
        /// `host:port` dialled.
        addr: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The HTTP exchange broke.
    #[error("admin API exchange failed: {0}")]
    Http(#[from] hyper::Error),
    /// The exchange took too long.
    #[error("the admin API did not answer within {0:?}")]
    Timeout(Duration),
    /// The API answered with an error.
    #[error("admin API: {message} ({status}, {code})")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The stable error code (`not_found`, `unauthorized`, …).
        code: String,
        /// The API's message.
        message: String,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from the admin API: {0}")]
    Decode(String),
}

/// A task the API just created, with its secrets held as [`Secret`]s so
/// they cannot be printed by accident.
#[derive(Debug)]
pub struct CreatedTask {
    /// The task id.
    pub id: String,
    /// The task token.
    pub token: Secret,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// Proxy URL with `ID:TOKEN@` userinfo (so as secret as the token).
    pub proxy_url: Secret,
    /// The task's own port, `http://127.0.0.1:PORT`, when asked for.
    pub task_port_url: Option<String>,
    /// The task's view.
    pub task: TaskView,
}

#[derive(Deserialize)]
struct CreatedTaskWire {
    id: String,
    token: String,
    expires_at: String,
    proxy_url: String,
    #[serde(default)]
    task_port_url: Option<String>,
    task: TaskView,
}

/// Talks HTTP/1.1 to one admin API base URL with one admin token.
#[derive(Debug)]
pub struct AdminClient {
    /// `host:port` to dial and to send as `Host`.
    authority: String,
    /// Path prefix of the base URL without trailing `/` (usually empty).
    prefix: String,
    token: Secret,
}

impl AdminClient {
    /// A client for `base_url` (`http://host:port[/prefix]`). Only `http` is
    /// supported: the admin API listens on loopback (or a pod-local address)
    /// and serves no TLS.
    pub fn new(base_url: &str, admin_token: Secret) -> Result<AdminClient, AdminClientError> {
        let bad = |why| AdminClientError::BadUrl {
            url: base_url.to_owned(),
            why,
        };
        let uri: Uri = base_url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("only http:// admin URLs are supported"));
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials belong in the admin token file, not the URL",
            ));
        }
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        let port = authority.port_u16().unwrap_or(80);
        Ok(AdminClient {
            authority: format!("{}:{port}", authority.host()),
            prefix: uri.path().trim_end_matches('/').to_owned(),
            token: admin_token,
        })
    }

    /// `POST /v1/tasks`.
    pub async fn start_task(
        &self,
        request: &CreateTaskRequest,
    ) -> Result<CreatedTask, AdminClientError> {
        let body =
            serde_json::to_vec(request).map_err(|e| AdminClientError::Decode(e.to_string()))?;
        let (status, mut bytes) = self.exchange(Method::POST, "/v1/tasks", Some(body)).await?;
        if status != StatusCode::CREATED {
            return Err(api_error(status, &bytes));
        }
        // The body holds the token: decode without echoing any of it.
        let decoded = serde_json::from_slice::<CreatedTaskWire>(&bytes);
        bytes.zeroize();
        let wire = decoded.map_err(|_| {
            AdminClientError::Decode("the task creation answer is not the documented JSON".into())
        })?;
        Ok(CreatedTask {
            id: wire.id,
            token: Secret::new(wire.token),
            expires_at: wire.expires_at,
            proxy_url: Secret::new(wire.proxy_url),
            task_port_url: wire.task_port_url,
            task: wire.task,
        })
    }

    /// `DELETE /v1/tasks/{id}`: ends the task; returns its final view.
    pub async fn end_task(&self, id: &str) -> Result<TaskView, AdminClientError> {
        self.call(Method::DELETE, &task_path(id)?).await
    }

    /// `GET /v1/tasks/{id}`.
    pub async fn get_task(&self, id: &str) -> Result<TaskView, AdminClientError> {
        self.call(Method::GET, &task_path(id)?).await
    }

    /// `GET /v1/tasks`.
    pub async fn list_tasks(&self) -> Result<Vec<TaskView>, AdminClientError> {
        self.call(Method::GET, "/v1/tasks").await
    }

    /// The approvals in `state`, of `task` (each, when `None`, all).
    pub async fn list_approvals(
        &self,
        state: Option<&str>,
        task: Option<&str>,
    ) -> Result<Vec<super::ApprovalView>, AdminClientError> {
        let mut query = Vec::new();
        for (key, value) in [("state", state), ("task", task)] {
            if let Some(value) = value {
                let value = percent_encoding::utf8_percent_encode(value, ESCAPED);
                query.push(format!("{key}={value}"));
            }
        }
        let path = if query.is_empty() {
            "/v1/approvals".to_owned()
        } else {
            format!("/v1/approvals?{}", query.join("&"))
        };
        self.call(Method::GET, &path).await
    }

    /// The approval `id`.
    pub async fn get_approval(&self, id: &str) -> Result<super::ApprovalView, AdminClientError> {
        self.call(Method::GET, &format!("/v1/approvals/{}", segment(id)))
            .await
    }

    /// Approves `id`.
    pub async fn approve(
        &self,
        id: &str,
        request: &super::ApproveRequest,
    ) -> Result<super::ApprovalView, AdminClientError> {
        let path = format!("/v1/approvals/{}/approve", segment(id));
        self.call_with(Method::POST, &path, serde_json::to_vec(request).ok())
            .await
    }

    /// Denies `id`.
    pub async fn deny(
        &self,
        id: &str,
        request: &super::DenyRequest,
    ) -> Result<super::ApprovalView, AdminClientError> {
        let path = format!("/v1/approvals/{}/deny", segment(id));
        self.call_with(Method::POST, &path, serde_json::to_vec(request).ok())
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, AdminClientError> {
        self.call_with(method, path, None).await
    }

    async fn call_with<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, AdminClientError> {
        let (status, bytes) = self.exchange(method, path, body).await?;
        if !status.is_success() {
            return Err(api_error(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| AdminClientError::Decode(e.to_string()))
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), AdminClientError> {
        tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange_now(method, path, body))
            .await
            .map_err(|_| AdminClientError::Timeout(EXCHANGE_TIMEOUT))?
    }

    async fn exchange_now(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), AdminClientError> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|source| AdminClientError::Connect {
                addr: self.authority.clone(),
                source,
            })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = tokio::spawn(connection);

        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(HOST, &self.authority)
            .header(ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let mut request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| AdminClientError::Decode(e.to_string()))?;
        request
            .headers_mut()
            .insert(AUTHORIZATION, self.authorization()?);

        let response = sender.send_request(request).await;
        let result = match response {
            Ok(response) => {
                let status = response.status();
                match Limited::new(response.into_body(), MAX_RESPONSE)
                    .collect()
                    .await
                {
                    Ok(collected) => Ok((status, collected.to_bytes().to_vec())),
                    Err(e) => Err(AdminClientError::Decode(format!("reading the answer: {e}"))),
                }
            }
            Err(e) => Err(AdminClientError::Http(e)),
        };
        driver.abort();
        result
    }

    fn authorization(&self) -> Result<HeaderValue, AdminClientError> {
        let mut text = Vec::with_capacity(7 + self.token.expose().len());
        text.extend_from_slice(b"Bearer ");
        text.extend_from_slice(self.token.expose());
        let value = HeaderValue::from_bytes(&text);
        text.zeroize();
        let mut value = value.map_err(|_| {
            AdminClientError::Decode(
                "the admin token contains bytes not allowed in a header".into(),
            )
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

fn task_path(id: &str) -> Result<String, AdminClientError> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AdminClientError::Api {
            status: StatusCode::NOT_FOUND,
            code: "not_found".into(),
            message: format!("{id:?} is not a task id"),
        });
    }
    Ok(format!("/v1/tasks/{id}"))
}

fn api_error(status: StatusCode, body: &[u8]) -> AdminClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error, message }) => AdminClientError::Api {
            status,
            code: error,
            message,
        },
        Err(_) => AdminClientError::Api {
            status,
            code: "unknown".into(),
            message: format!("HTTP {status} without an error body"),
        },
    }
}

/// What a path segment or query value escapes: all but the unreserved.
const ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `id` as one path segment.
fn segment(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, ESCAPED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        let token = || Secret::new("test-secret-admin");
        let client = AdminClient::new("http://127.0.0.1:8081", token()).unwrap();
        assert_eq!(client.authority, "127.0.0.1:8081");
        assert_eq!(client.prefix, "");
        let client = AdminClient::new("http://localhost/credgate/", token()).unwrap();
        assert_eq!(client.authority, "localhost:80");
        assert_eq!(client.prefix, "/credgate");
        let client = AdminClient::new("http://[::1]:9000", token()).unwrap();
        assert_eq!(client.authority, "[::1]:9000");
        for bad in [
            "https://127.0.0.1:8081",
            "127.0.0.1:8081",
            "http://u:p@h:1",
            "not a url",
        ] {
            assert!(AdminClient::new(bad, token()).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_and_errors_hide_the_admin_token() {
        let client =
            AdminClient::new("http://127.0.0.1:1", Secret::new("test-secret-admin")).unwrap();
        assert!(!format!("{client:?}").contains("test-secret-admin"));
        let header = client.authorization().unwrap();
        assert!(header.is_sensitive());
    }

    #[test]
    fn task_ids_cannot_smuggle_paths() {
        assert_eq!(task_path("task-0123").unwrap(), "/v1/tasks/task-0123");
        assert!(task_path("../v1/tasks").is_err());
        assert!(task_path("a/b").is_err());
        assert!(task_path("").is_err());
    }
}
