//! credgate in front of the test upstream, and the agent's side of an
//! upgrade through an intercepted tunnel.

use std::sync::Arc;

use credgate::tls::CertificateAuthority;
use tokio::io::{AsyncRead, AsyncWrite};

use super::upstream::{header, Answer, WsUpstream};
use super::{accept_for, new_key, Wire, TEXT};
use crate::support::*;

pub const HOST: &str = "ws.test";

pub struct Setup {
    pub env: Env,
    pub upstream: WsUpstream,
    pub secret: String,
    pub auth: String,
    pub task: String,
}

/// credgate with scope `api` (WebSocket upgrades allowed, credential
/// injected), scope `stripping` (the same, secrets the agent sends are
/// masked) and scope `plain` (the same host, no upgrades), and a task
/// holding `scope`.
pub async fn setup(answer: Answer, scope: &str) -> Setup {
    setup_idle(answer, scope, None).await
}

/// [`setup`] with `upstream.idle_timeout` set to `idle`.
pub async fn setup_idle(answer: Answer, scope: &str, idle: Option<&str>) -> Setup {
    let secret = test_secret();
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = WsUpstream::start(Some(ca.clone()), HOST, answer).await;
    let config = format!(
        "credentials:\n  api:\n    static: {{ env: API_TOKEN }}\n\
         scopes:\n  api:\n    - host: {HOST}\n      port: {port}\n      credential: api\n      allow_private: true\n      websocket: true\n\
         \x20 stripping:\n    - host: {HOST}\n      port: {port}\n      credential: api\n      allow_private: true\n      websocket: true\n      on_secret: strip\n\
         \x20 plain:\n    - host: {HOST}\n      port: {port}\n      credential: api\n      allow_private: true\n\
         \x20 patient:\n    - host: {HOST}\n      port: {port}\n      credential: api\n      allow_private: true\n      websocket: true\n      idle_timeout: 30s\n",
        port = upstream.port
    );
    let env = Env::start_trusting(ca, &config, &[("API_TOKEN", &secret)]).await;
    if let Some(idle) = idle {
        let text = std::fs::read_to_string(&env.config_path).unwrap();
        let text = text.replace(
            "first_byte_timeout: 10s }",
            &format!("first_byte_timeout: 10s, idle_timeout: {idle} }}"),
        );
        assert!(text.contains("idle_timeout"), "{text}");
        let provider: std::collections::BTreeMap<String, String> =
            [("API_TOKEN".to_string(), secret.clone())].into();
        let config = credgate::config::Config::parse(&text, &provider).unwrap();
        env.gateway().reload(config, &provider).await.unwrap();
    }
    env.resolver.map(HOST, "127.0.0.1");
    let (task, token) = env.start_task(&[scope]);
    Setup {
        auth: proxy_auth(&task, &token),
        env,
        upstream,
        secret,
        task,
    }
}

/// An upgrade request for `/chat` offering permessage-deflate, with an
/// `Authorization` of the agent's own (which must not reach the upstream).
pub fn upgrade(target: &str, key: &str, extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
         Authorization: Bearer agent-own-value\r\n{extra}\r\n"
    )
}

/// Opens the tunnel and sends the upgrade; returns the wire and the head.
pub async fn open(s: &Setup) -> (Wire<impl AsyncRead + AsyncWrite + Unpin>, String, String) {
    let target = format!("{HOST}:{}", s.upstream.port);
    let tls = tunnel(&s.env, &s.auth, &target, HOST).await.unwrap();
    let mut wire = Wire::new(tls);
    let key = new_key();
    wire.send(upgrade(&target, &key, "").as_bytes()).await;
    let head = wire.head().await.expect("an answer to the upgrade");
    (wire, head, key)
}

/// Opens a socket and reads the credential message the upstream sends first.
pub async fn open_switched(s: &Setup) -> Wire<impl AsyncRead + AsyncWrite + Unpin> {
    let (mut wire, head, key) = open(s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some(&*accept_for(&key))
    );
    let (kind, text) = wire.message().await.expect("the echoed credential");
    assert_eq!(kind, TEXT);
    let masked = format!("auth=Bearer {}", "*".repeat(s.secret.len()));
    assert_eq!(String::from_utf8_lossy(&text), masked);
    wire
}

pub fn request_record(
    records: &[credgate::audit::DecisionRecord],
) -> &credgate::audit::DecisionRecord {
    records
        .iter()
        .find(|r| r.path.as_deref() == Some("/chat"))
        .expect("a record of the upgrade")
}
