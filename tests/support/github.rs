#![allow(dead_code, unreachable_pub)]

//! An in-repo fake of the GitHub App endpoints credgate calls, on
//! 127.0.0.1 over plain HTTP: it verifies the app JWT with the app's public
//! key, mints random installation tokens, and records what it was asked
//! and what it revoked.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::support::test_secret;

/// A GitHub App's identity and its RSA key pair, generated per test.
pub struct App {
    pub app_id: u64,
    pub installation_id: u64,
    /// The private key, PEM (what credgate is configured with).
    pub private_pem: String,
    /// The public key, PEM (what the fake verifies JWTs with).
    pub public_pem: String,
}

impl App {
    pub fn generate() -> App {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
        App {
            app_id: 4242,
            installation_id: 777,
            private_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
        }
    }
}

/// One token the fake issued, and what it was asked for.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    /// The request body: `repositories` and `permissions`, or `{}`.
    pub body: Value,
}

/// Everything the fake saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub issued: Vec<Issued>,
    /// Tokens revoked with `DELETE /installation/token`, in order.
    pub revoked: Vec<String>,
    /// Why requests were refused (a bad JWT, a wrong path, ...).
    pub refused: Vec<String>,
    /// The `accept` header of every request.
    pub accept: Vec<String>,
}

/// What the fake does with a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Issue a token.
    Issue,
    /// Refuse as GitHub does when the app lacks a permission (422).
    Unprocessable,
}

/// The running fake; stops when dropped.
pub struct FakeGitHub {
    pub addr: std::net::SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    pub mode: Arc<Mutex<Mode>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    app_id: u64,
    installation_id: u64,
    key: jsonwebtoken::DecodingKey,
    seen: Arc<Mutex<Seen>>,
    mode: Arc<Mutex<Mode>>,
}

impl FakeGitHub {
    pub async fn start(app: &App) -> FakeGitHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let mode = Arc::new(Mutex::new(Mode::Issue));
        let shared = Arc::new(Shared {
            app_id: app.app_id,
            installation_id: app.installation_id,
            key: jsonwebtoken::DecodingKey::from_rsa_pem(app.public_pem.as_bytes()).unwrap(),
            seen: seen.clone(),
            mode: mode.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&shared, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeGitHub {
            addr,
            seen,
            mode,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, the `api:` credgate is configured with.
    pub fn api(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.seen.lock().unwrap().issued.clone()
    }

    pub fn revoked(&self) -> Vec<String> {
        self.seen.lock().unwrap().revoked.clone()
    }

    pub fn refused(&self) -> Vec<String> {
        self.seen.lock().unwrap().refused.clone()
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap()
}

fn refuse(shared: &Shared, status: StatusCode, why: String) -> Response<Full<Bytes>> {
    shared.seen.lock().unwrap().refused.push(why.clone());
    reply(status, json!({ "message": why }))
}

async fn answer(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let accept = parts
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    shared.seen.lock().unwrap().accept.push(accept);
    let bearer = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let token_path = format!(
        "/app/installations/{}/access_tokens",
        shared.installation_id
    );
    match (parts.method.as_str(), parts.uri.path()) {
        ("POST", path) if path == token_path => {
            if let Err(why) = verify_jwt(shared, &bearer) {
                return refuse(shared, StatusCode::UNAUTHORIZED, why);
            }
            let Ok(request) = serde_json::from_slice::<Value>(&body) else {
                return refuse(shared, StatusCode::BAD_REQUEST, "body is not JSON".into());
            };
            if *shared.mode.lock().unwrap() == Mode::Unprocessable {
                return refuse(
                    shared,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "The permissions requested are not granted to this installation.".into(),
                );
            }
            let token = test_secret();
            let expires = SystemTime::now() + Duration::from_secs(3600);
            shared.seen.lock().unwrap().issued.push(Issued {
                token: token.clone(),
                body: request.clone(),
            });
            reply(
                StatusCode::CREATED,
                json!({
                    "token": token,
                    "expires_at": humantime::format_rfc3339_seconds(expires).to_string(),
                    "permissions": request.get("permissions").cloned().unwrap_or(json!({ "issues": "write" })),
                    "repository_selection": "selected",
                }),
            )
        }
        ("DELETE", "/installation/token") => {
            let mut seen = shared.seen.lock().unwrap();
            let known = seen.issued.iter().any(|i| i.token == bearer);
            if !known || seen.revoked.contains(&bearer) {
                drop(seen);
                return refuse(shared, StatusCode::UNAUTHORIZED, "Bad credentials".into());
            }
            seen.revoked.push(bearer);
            reply(StatusCode::NO_CONTENT, Value::Null)
        }
        (method, path) => refuse(
            shared,
            StatusCode::NOT_FOUND,
            format!("unexpected {method} {path}"),
        ),
    }
}

/// RS256 with the app's key, `iss` the app id, `iat` about a minute back,
/// `exp` in the future and at most ten minutes ahead.
fn verify_jwt(shared: &Shared, jwt: &str) -> Result<(), String> {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[shared.app_id.to_string()]);
    validation.leeway = 0;
    let data = jsonwebtoken::decode::<Value>(jwt, &shared.key, &validation)
        .map_err(|e| format!("JWT refused: {e}"))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = data.claims["iat"].as_u64().ok_or("iat is not a number")?;
    let exp = data.claims["exp"].as_u64().ok_or("exp is not a number")?;
    if iat > now.saturating_sub(30) || iat < now.saturating_sub(120) {
        return Err(format!("iat {iat} is not about a minute before {now}"));
    }
    if exp <= now || exp > now + 600 {
        return Err(format!("exp {exp} is not within ten minutes after {now}"));
    }
    Ok(())
}
