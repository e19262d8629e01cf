//! The `oauth2_token_exchange` source (RFC 8693) against a real
//! authorization server (panva's oidc-provider with a registered
//! token-exchange grant, `tests/peers/oidc/server.js`), through the real
//! proxy: the subject token is a file re-read on every exchange, or a JWT
//! credgate signs for the task and the server verifies with credgate's JWKS
//! (fetched from the admin API); the exchanged token reaches the upstream
//! and never the agent or the decision log; an `issued_token_type` other than
//! the one asked for is a 503 deny; the task's end revokes the token.

mod support;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use credgate::audit::Event;
use credgate::reason::Reason;
use credgate::tls::CertificateAuthority;
use serde_json::{json, Value};
use support::oidc::OidcServer;
use support::*;

/// The resource server the exchanged tokens are for.
const REPORTS: &str = "https://reports.test/";

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The authorization server, credgate and an echoing TLS upstream for
/// `reports.test`, with one task holding scope `reports`.
struct Setup {
    idp: OidcServer,
    env: Env,
    upstream: Upstream,
    dir: TempDir,
    client_secret: String,
    introspector_secret: String,
    id: String,
    token: String,
}

/// Where subject tokens come from in a test.
enum Subject {
    /// credgate signs them; the server fetches credgate's JWKS.
    Credgate,
    /// A file holding a JWT signed by a key the server trusts inline.
    File(Value),
}

/// `issued_token_type`: what the server answers whatever was asked, when given.
async fn setup(subject: Subject, issued_token_type: Option<&str>) -> Setup {
    let dir = TempDir::new();
    let client_secret = test_secret();
    let introspector_secret = test_secret();
    let trust_file = dir.path().join("trust.json");
    let trusted = match &subject {
        Subject::File(jwks) => json!({ "test-issuer": { "jwks": jwks } }),
        // Filled in once credgate's admin port is known.
        Subject::Credgate => json!({}),
    };
    std::fs::write(&trust_file, trusted.to_string()).unwrap();
    let mut exchange = json!({ "trust_file": trust_file });
    if let Some(issued) = issued_token_type {
        exchange["issued_token_type"] = json!(issued);
    }
    let client = |id: &str, secret: &str, grant: &str| {
        json!({
            "client_id": id,
            "client_secret": secret,
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": [grant],
            "redirect_uris": [],
            "response_types": [],
            "scope": "reports.read reports.write",
        })
    };
    let idp = OidcServer::start(
        &dir,
        json!({
            "clients": [
                client("credgate", &client_secret, GRANT),
                client("introspector", &introspector_secret, "client_credentials"),
            ],
            "scopes": ["reports.read", "reports.write"],
            "resources": { REPORTS: { "scope": "reports.read reports.write", "format": "opaque" } },
            "token_exchange": exchange,
        }),
    );
    let subject_yaml = match &subject {
        Subject::Credgate => format!(
            "credgate: {{ audience: '{}', ttl: 2m, issuer: credgate-test }}",
            idp.issuer()
        ),
        Subject::File(_) => format!(
            "file: {}",
            serde_json::to_string(&dir.path().join("subject.jwt").display().to_string()).unwrap()
        ),
    };
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = Upstream::start_tls(ca.clone(), "reports.test", echo_handler()).await;
    let extra = format!(
        r#"
credentials:
  reports:
    oauth2_token_exchange:
      issuer: {issuer}
      client_id: credgate
      client_secret: {{ env: IDP_SECRET }}
      subject_token: {{ {subject_yaml} }}
      subject_token_type: urn:ietf:params:oauth:token-type:jwt
      requested_token_type: urn:ietf:params:oauth:token-type:access_token
      resource: {REPORTS}
      scope: [reports.read]
scopes:
  reports:
    - host: reports.test
      port: {port}
      methods: [GET]
      paths: ["/**"]
      credential: reports
      allow_private: true
"#,
        issuer = idp.issuer(),
        port = upstream.port()
    );
    if matches!(subject, Subject::File(_)) {
        // compile checks the file exists; its content is read per exchange.
        std::fs::write(dir.path().join("subject.jwt"), "").unwrap();
    }
    let env = Env::start_trusting(ca, &extra, &[("IDP_SECRET", &client_secret)]).await;
    if matches!(subject, Subject::Credgate) {
        let trusted = json!({
            "credgate-test": { "jwks_uri": format!("http://{}/v1/jwks", env.admin) }
        });
        std::fs::write(&trust_file, trusted.to_string()).unwrap();
    }
    env.resolver.map("reports.test", "127.0.0.1");
    let (id, token) = env.start_task(&["reports"]);
    Setup {
        idp,
        env,
        upstream,
        dir,
        client_secret,
        introspector_secret,
        id,
        token,
    }
}

impl Setup {
    /// `GET path` on reports.test through an intercepted tunnel, as `task`.
    async fn get_as(&self, task: (&str, &str), path: &str) -> RawResponse {
        let target = format!("reports.test:{}", self.upstream.port());
        let mut tls = tunnel(
            &self.env,
            &proxy_auth(task.0, task.1),
            &target,
            "reports.test",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        exchange(
            &mut tls,
            format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
    }

    async fn get(&self, path: &str) -> RawResponse {
        self.get_as((&self.id, &self.token), path).await
    }

    /// The bearer tokens the upstream received, in order.
    fn bearer_tokens(&self) -> Vec<String> {
        self.upstream
            .received()
            .iter()
            .map(|r| {
                let auth = r.header("authorization");
                assert_eq!(auth.len(), 1, "one Authorization header: {auth:?}");
                auth[0]
                    .strip_prefix("Bearer ")
                    .unwrap_or_else(|| panic!("not a Bearer token: {}", auth[0]))
                    .to_string()
            })
            .collect()
    }

    /// Asserts no exchanged token, subject token or client secret is in the
    /// agent's `responses` or in the decision log.
    async fn assert_nothing_leaked(&self, responses: &[&RawResponse], secrets: &[&str]) {
        let log = self.env.log_text().await;
        for secret in secrets.iter().chain([&self.client_secret.as_str()]) {
            assert!(!log.contains(secret), "a secret is in the decision log");
            for resp in responses {
                assert!(
                    !resp.text().contains(secret),
                    "a secret reached the agent: {}",
                    resp.text()
                );
            }
        }
        // No JWT at all (a credgate-signed subject token would start so).
        assert!(!log.contains("eyJ"), "a JWT is in the decision log: {log}");
    }
}

/// A test issuer's key and JWKS, and a signer of subject tokens with it.
struct TestIssuer {
    key: jsonwebtoken::EncodingKey,
    jwks: Value,
}

impl TestIssuer {
    fn new() -> TestIssuer {
        use base64::Engine;
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwks = json!({ "keys": [{
            "kty": "EC", "crv": "P-256", "kid": "test-key",
            "x": b64(&point[1..33]), "y": b64(&point[33..]),
        }] });
        TestIssuer {
            key: jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der()),
            jwks,
        }
    }

    /// A JWT for `sub`, addressed to `aud`, valid for five minutes.
    fn sign(&self, sub: &str, aud: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("test-key".into());
        let claims = json!({
            "iss": "test-issuer", "sub": sub, "aud": aud,
            "iat": now, "exp": now + 300, "jti": random_hex(8),
        });
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

#[tokio::test]
async fn a_credgate_signed_subject_token_carries_the_task_and_is_exchanged() {
    let s = setup(Subject::Credgate, None).await;

    let resp = s.get("/v1/report").await;
    assert_eq!(
        resp.status,
        200,
        "{}\n--- oidc-provider stderr\n{}",
        resp.text(),
        s.idp.errors.lock().unwrap()
    );
    let tokens = s.bearer_tokens();
    assert_eq!(tokens.len(), 1);
    let token = &tokens[0];
    assert_eq!(token.matches('.').count(), 0, "the exchanged opaque token");

    // The server verified credgate's signature with the JWKS from the admin
    // API, and issued the token for this agent and this task.
    let info = s.idp.introspect(token, &s.introspector_secret).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], "credgate", "{info}");
    assert_eq!(info["sub"], "test-agent", "{info}");
    assert_eq!(info["subject_issuer"], "credgate-test", "{info}");
    assert_eq!(info["task_id"], s.id.as_str(), "{info}");
    assert_eq!(info["task_labels"]["ticket"], "T-1", "{info}");
    assert_eq!(info["act"]["sub"], format!("task:{}", s.id), "{info}");
    assert_eq!(info["scope"], "reports.read", "{info}");
    assert_eq!(info["exchanged_audience"], REPORTS, "{info}");

    let records = s
        .env
        .wait_for_record(|r| r.upstream.as_ref().and_then(|u| u.status) == Some(200))
        .await;
    let cred = records
        .iter()
        .find(|r| r.path.as_deref() == Some("/v1/report"))
        .and_then(|r| r.credential.as_ref())
        .expect("a credential in the record");
    assert_eq!(cred.source, "oauth2_token_exchange");
    assert!(cred.expires_at.is_some());
    s.assert_nothing_leaked(&[&resp], &[token]).await;

    // The task's end revokes the exchanged token at the server.
    s.env.end_task(&s.id).await;
    let after = s.idp.introspect(token, &s.introspector_secret).await;
    assert_eq!(after["active"], false, "{after}");
    let revoked: Vec<String> = s
        .env
        .records()
        .await
        .into_iter()
        .filter(|r| r.event == Event::CredentialRevoke)
        .map(|r| r.message.unwrap_or_default())
        .collect();
    assert_eq!(revoked, ["revoked at the source"]);
}

#[tokio::test]
async fn the_subject_token_file_is_read_again_on_every_exchange() {
    let issuer = TestIssuer::new();
    let s = setup(Subject::File(issuer.jwks.clone()), None).await;
    let file = s.dir.path().join("subject.jwt");
    let first = issuer.sign("agent-one", &s.idp.issuer());
    std::fs::write(&file, format!("{first}\n")).unwrap();

    let resp = s.get("/v1/report").await;
    assert_eq!(
        resp.status,
        200,
        "{}\n--- oidc-provider stderr\n{}",
        resp.text(),
        s.idp.errors.lock().unwrap()
    );

    // A rotated file (as the kubelet does with projected tokens) is what the
    // next exchange, for another task, presents.
    let second = issuer.sign("agent-two", &s.idp.issuer());
    std::fs::write(&file, &second).unwrap();
    let (id2, token2) = s.env.start_task(&["reports"]);
    let resp2 = s.get_as((&id2, &token2), "/v1/report").await;
    assert_eq!(resp2.status, 200, "{}", resp2.text());

    let tokens = s.bearer_tokens();
    assert_eq!(tokens.len(), 2);
    assert_ne!(tokens[0], tokens[1], "one token per task");
    let subs = [
        s.idp.introspect(&tokens[0], &s.introspector_secret).await,
        s.idp.introspect(&tokens[1], &s.introspector_secret).await,
    ];
    assert_eq!(subs[0]["sub"], "agent-one", "{}", subs[0]);
    assert_eq!(subs[1]["sub"], "agent-two", "{}", subs[1]);
    assert_eq!(subs[0]["subject_issuer"], "test-issuer");
    s.assert_nothing_leaked(&[&resp, &resp2], &[&tokens[0], &tokens[1], &first, &second])
        .await;
}

#[tokio::test]
async fn a_subject_token_the_server_does_not_trust_is_a_503_deny() {
    let trusted = TestIssuer::new();
    let s = setup(Subject::File(trusted.jwks.clone()), None).await;
    // Signed by another key under the trusted key's id.
    let forged = TestIssuer::new().sign("agent-one", &s.idp.issuer());
    std::fs::write(s.dir.path().join("subject.jwt"), &forged).unwrap();

    let resp = s.get("/v1/report").await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.reason(), Some("credential_unavailable"));
    let text = resp.text();
    assert!(text.contains("invalid_grant"), "{text}");
    assert!(text.contains("oauth2_token_exchange"), "{text}");
    assert!(
        s.upstream.received().is_empty(),
        "forwarded without a credential"
    );
    s.assert_nothing_leaked(&[&resp], &[&forged]).await;
}

#[tokio::test]
async fn an_issued_token_type_other_than_requested_is_a_503_deny() {
    let s = setup(
        Subject::Credgate,
        Some("urn:ietf:params:oauth:token-type:refresh_token"),
    )
    .await;

    let resp = s.get("/v1/report").await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.reason(), Some("credential_unavailable"));
    let text = resp.text();
    assert!(
        text.contains("issued_token_type")
            && text.contains("token-type:refresh_token")
            && text.contains("oauth2_token_exchange"),
        "the reason names the mismatch and the source: {text}"
    );
    assert!(
        s.upstream.received().is_empty(),
        "forwarded without a credential"
    );

    let records = s
        .env
        .wait_for_record(|r| r.reason == Some(Reason::CredentialUnavailable))
        .await;
    let denied = records
        .iter()
        .find(|r| r.reason == Some(Reason::CredentialUnavailable))
        .expect("a deny record");
    assert!(
        denied
            .message
            .as_deref()
            .is_some_and(|m| m.contains("issued_token_type")),
        "{denied:?}"
    );
    s.assert_nothing_leaked(&[&resp], &[]).await;
}
