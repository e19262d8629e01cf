//! The `oauth2_client_credentials` source against a real authorization
//! server (panva's oidc-provider, `tests/peers/oidc/server.js`), through the
//! real proxy: the token is minted per task with scope and resource, injected
//! as a Bearer token, never shown to the agent or the decision log, refused
//! when the server silently drops a scope, and revoked when the task ends.

mod support;

use std::sync::Arc;

use credgate::audit::Event;
use credgate::tls::CertificateAuthority;
use serde_json::{json, Value};
use support::oidc::OidcServer;
use support::*;

/// The resource server whose scopes cover everything the tests ask for.
const REPORTS: &str = "https://reports.test/";
/// A resource server that knows only `reports.read`: asking it for
/// `reports.write` too makes oidc-provider drop that scope silently.
const NARROW: &str = "https://narrow.test/";

/// The authorization server with `clients` (oidc-provider client metadata),
/// the two resource servers, and its config file kept alive beside it.
struct Idp {
    server: OidcServer,
    _dir: TempDir,
}

impl std::ops::Deref for Idp {
    type Target = OidcServer;
    fn deref(&self) -> &OidcServer {
        &self.server
    }
}

fn start_idp(clients: Value) -> Idp {
    let dir = TempDir::new();
    let config = json!({
        "clients": clients,
        "scopes": ["reports.read", "reports.write"],
        "resources": {
            REPORTS: { "scope": "reports.read reports.write", "format": "opaque" },
            NARROW: { "scope": "reports.read", "format": "opaque" },
        },
    });
    let server = OidcServer::start(&dir, config);
    Idp { server, _dir: dir }
}

fn secret_client(id: &str, secret: &str, method: &str) -> Value {
    json!({
        "client_id": id,
        "client_secret": secret,
        "token_endpoint_auth_method": method,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "scope": "reports.read reports.write",
    })
}

/// The authorization server, credgate and an echoing TLS upstream for
/// `reports.test`, with one task holding scope `reports`.
struct Setup {
    idp: Idp,
    env: Env,
    upstream: Upstream,
    introspector_secret: String,
    id: String,
    token: String,
}

/// `source` is the body of `oauth2_client_credentials:` (one line per field,
/// indented by six spaces); `{issuer}` in it is replaced.
async fn setup(clients: Vec<Value>, source: &str, vars: &[(&str, &str)]) -> Setup {
    let introspector_secret = test_secret();
    let mut clients = clients;
    clients.push(secret_client(
        "introspector",
        &introspector_secret,
        "client_secret_basic",
    ));
    let idp = start_idp(Value::Array(clients));
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = Upstream::start_tls(ca.clone(), "reports.test", echo_handler()).await;
    let extra = format!(
        r#"
credentials:
  reports:
    oauth2_client_credentials:
{source}
scopes:
  reports:
    - host: reports.test
      port: {port}
      methods: [GET]
      paths: ["/**"]
      credential: reports
      allow_private: true
"#,
        source = source.replace("{issuer}", &idp.issuer()),
        port = upstream.port()
    );
    let env = Env::start_trusting(ca, &extra, vars).await;
    env.resolver.map("reports.test", "127.0.0.1");
    let (id, token) = env.start_task(&["reports"]);
    Setup {
        idp,
        env,
        upstream,
        introspector_secret,
        id,
        token,
    }
}

impl Setup {
    /// `GET path` on reports.test through an intercepted tunnel.
    async fn get(&self, path: &str) -> RawResponse {
        let target = format!("reports.test:{}", self.upstream.port());
        let mut tls = tunnel(
            &self.env,
            &proxy_auth(&self.id, &self.token),
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

    async fn revoke_messages(&self) -> Vec<String> {
        self.env
            .records()
            .await
            .into_iter()
            .filter(|r| r.event == Event::CredentialRevoke)
            .map(|r| r.message.unwrap_or_default())
            .collect()
    }
}

fn basic_source() -> String {
    format!(
        "      issuer: {{issuer}}\n\
         \x20     client_id: basic\n\
         \x20     client_secret: {{ env: IDP_SECRET }}\n\
         \x20     scope: [reports.read, reports.write]\n\
         \x20     resource: {REPORTS}\n"
    )
}

#[tokio::test]
async fn client_credentials_with_scope_and_resource_injects_an_opaque_token() {
    let secret = test_secret();
    let s = setup(
        vec![secret_client("basic", &secret, "client_secret_basic")],
        &basic_source(),
        &[("IDP_SECRET", &secret)],
    )
    .await;

    let resp = s.get("/v1/report").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let tokens = s.bearer_tokens();
    assert_eq!(tokens.len(), 1);
    let token = &tokens[0];
    // Opaque: not a JWT the upstream could read claims from.
    assert_eq!(token.matches('.').count(), 0, "expected an opaque token");

    let info = s.idp.introspect(token, &s.introspector_secret).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], "basic", "{info}");
    assert_eq!(info["aud"], REPORTS, "{info}");
    assert_eq!(info["scope"], "reports.read reports.write", "{info}");

    let records = s
        .env
        .wait_for_record(|r| r.upstream.as_ref().and_then(|u| u.status) == Some(200))
        .await;
    let allowed = records
        .iter()
        .find(|r| r.path.as_deref() == Some("/v1/report"))
        .expect("a record for the request");
    let cred = allowed
        .credential
        .as_ref()
        .expect("credential in the record");
    assert_eq!(cred.source, "oauth2_client_credentials");
    assert!(cred.expires_at.is_some(), "TTL from expires_in");
    assert!(!resp.text().contains(token.as_str()));
    let log = s.env.log_text().await;
    assert!(!log.contains(token.as_str()), "token in the decision log");
    assert!(!log.contains(&secret), "client secret in the decision log");
}

#[tokio::test]
async fn task_end_revokes_the_token_at_the_authorization_server() {
    let secret = test_secret();
    let s = setup(
        vec![secret_client("basic", &secret, "client_secret_basic")],
        &basic_source(),
        &[("IDP_SECRET", &secret)],
    )
    .await;
    assert_eq!(s.get("/v1/report").await.status, 200);
    let token = s.bearer_tokens().remove(0);
    let before = s.idp.introspect(&token, &s.introspector_secret).await;
    assert_eq!(before["active"], true, "{before}");

    s.env.end_task(&s.id).await;

    let after = s.idp.introspect(&token, &s.introspector_secret).await;
    assert_eq!(after["active"], false, "{after}");
    assert_eq!(s.revoke_messages().await, ["revoked at the source"]);
    // The ended task gets nothing more.
    let target = format!("reports.test:{}", s.upstream.port());
    let (_, resp) = connect_raw(&s.env, Some(&proxy_auth(&s.id, &s.token)), &target).await;
    assert_eq!(resp.status, 407, "{}", resp.text());
    assert_eq!(s.upstream.received().len(), 1);
}

#[tokio::test]
async fn a_silently_dropped_scope_is_a_503_deny_with_a_reason() {
    let secret = test_secret();
    // The narrow resource server knows only reports.read: oidc-provider
    // issues a token with just that scope and says nothing else.
    let source = basic_source().replace(REPORTS, NARROW);
    let s = setup(
        vec![secret_client("basic", &secret, "client_secret_basic")],
        &source,
        &[("IDP_SECRET", &secret)],
    )
    .await;

    let resp = s.get("/v1/report").await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.reason(), Some("credential_unavailable"));
    let text = resp.text();
    assert!(
        text.contains("reports.write was not granted"),
        "the reason names the dropped scope: {text}"
    );
    assert!(text.contains("oauth2_client_credentials"), "{text}");
    assert!(
        s.upstream.received().is_empty(),
        "forwarded without a credential"
    );

    let records = s
        .env
        .wait_for_record(|r| r.reason == Some(credgate::reason::Reason::CredentialUnavailable))
        .await;
    let denied = records
        .iter()
        .find(|r| r.reason == Some(credgate::reason::Reason::CredentialUnavailable))
        .expect("a deny record");
    assert!(
        denied
            .message
            .as_deref()
            .is_some_and(|m| m.contains("reports.write was not granted")),
        "{denied:?}"
    );
    assert!(!s.env.log_text().await.contains(&secret));
}

/// The public JWK of a P-256 key pair (uncompressed point `04 || x || y`).
fn ec_jwk(key: &rcgen::KeyPair) -> Value {
    use base64::Engine;
    let point = key.public_key_raw();
    assert_eq!(point.len(), 65);
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    json!({
        "kty": "EC",
        "crv": "P-256",
        "x": b64(&point[1..33]),
        "y": b64(&point[33..]),
        "use": "sig",
        "alg": "ES256",
    })
}

#[tokio::test]
async fn private_key_jwt_authenticates_with_a_key_made_at_test_time() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = TempDir::new();
    let pem = dir.path().join("client.pem");
    std::fs::write(&pem, key.serialize_pem()).unwrap();
    let client = json!({
        "client_id": "signed",
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "ES256",
        "jwks": { "keys": [ec_jwk(&key)] },
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "scope": "reports.read reports.write",
    });
    let source = format!(
        "      issuer: {{issuer}}\n\
         \x20     client_id: signed\n\
         \x20     client_auth: private_key_jwt\n\
         \x20     private_key: {{ file: {pem} }}\n\
         \x20     scope: [reports.read]\n\
         \x20     resource: {REPORTS}\n",
        pem = serde_json::to_string(&pem.display().to_string()).unwrap()
    );
    let s = setup(vec![client], &source, &[]).await;

    let resp = s.get("/v1/report").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let token = s.bearer_tokens().remove(0);
    let info = s.idp.introspect(&token, &s.introspector_secret).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["client_id"], "signed", "{info}");
    assert_eq!(info["scope"], "reports.read", "{info}");

    // Revocation authenticates the same way.
    s.env.end_task(&s.id).await;
    let after = s.idp.introspect(&token, &s.introspector_secret).await;
    assert_eq!(after["active"], false, "{after}");
    let log = s.env.log_text().await;
    assert!(!log.contains(&token));
    assert!(!log.contains("PRIVATE KEY"));
}

#[tokio::test]
async fn the_token_never_reaches_the_agent_nor_the_decision_log() {
    let secret = test_secret();
    // client_secret_post against a configured token_url, no revocation
    // endpoint known: the end of the task is recorded as not supported.
    let source = format!(
        "      token_url: {{issuer}}/token\n\
         \x20     client_id: poster\n\
         \x20     client_auth: client_secret_post\n\
         \x20     client_secret: {{ env: IDP_SECRET }}\n\
         \x20     scope: [reports.read]\n\
         \x20     resource: {REPORTS}\n"
    );
    let s = setup(
        vec![secret_client("poster", &secret, "client_secret_post")],
        &source,
        &[("IDP_SECRET", &secret)],
    )
    .await;

    // The echo upstream sends every request header back, the injected
    // Authorization included: the scrubber must remove the token.
    let first = s.get("/echo").await;
    let second = s.get("/echo?again").await;
    for resp in [&first, &second] {
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let tokens = s.bearer_tokens();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        tokens[0], tokens[1],
        "one token per task, reused from the cache"
    );
    let token = &tokens[0];
    for resp in [&first, &second] {
        let text = resp.text();
        assert!(text.contains("authorization"), "the echo came back: {text}");
        assert!(
            !text.contains(token.as_str()),
            "token reached the agent: {text}"
        );
        assert!(!text.contains(&secret), "client secret reached the agent");
    }

    s.env.end_task(&s.id).await;
    assert_eq!(
        s.revoke_messages().await,
        ["the source has no revocation; the credential expires on its own"]
    );
    let log = s.env.log_text().await;
    assert!(!log.contains(token.as_str()), "token in the decision log");
    assert!(!log.contains(&secret), "client secret in the decision log");
    assert!(!log.contains(&s.token), "task token in the decision log");
}

#[tokio::test]
async fn an_unreachable_issuer_is_a_503_naming_the_source_and_url_not_the_secret() {
    let secret = test_secret();
    let down = format!("http://127.0.0.1:{}", closed_port().await);
    let source = basic_source().replace("{issuer}", &down);
    let s = setup(
        vec![secret_client("basic", &secret, "client_secret_basic")],
        &source,
        &[("IDP_SECRET", &secret)],
    )
    .await;

    let resp = s.get("/v1/report").await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.reason(), Some("credential_unavailable"));
    let text = resp.text();
    assert!(text.contains("oauth2_client_credentials"), "{text}");
    assert!(
        text.contains(&format!("{down}/.well-known/openid-configuration")),
        "the reason names the URL: {text}"
    );
    assert!(!text.contains(&secret));
    assert!(s.upstream.received().is_empty());
    assert!(!s.env.log_text().await.contains(&secret));
}
