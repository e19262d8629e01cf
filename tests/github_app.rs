//! The `github_app` source through the real proxy, against an in-repo fake
//! of GitHub's app endpoints (`tests/support/github.rs`) that verifies the
//! app JWT with the app's public key: installation tokens are narrowed as
//! the rule says (statically, or per request from the repository in the
//! path), cached per narrowing, injected as Bearer tokens the agent never
//! sees, and revoked one by one when the task ends.

mod support;

#[path = "support/github.rs"]
mod github;

use std::sync::Arc;

use credgate::audit::Event;
use credgate::config::Config;
use credgate::reason::Reason;
use credgate::tls::CertificateAuthority;
use github::{App, FakeGitHub, Mode};
use serde_json::json;
use support::*;

/// The API host the agent talks to; the harness resolves it to 127.0.0.1.
const API_HOST: &str = "api.github.test";

/// The fake GitHub, credgate, and an echoing TLS upstream for the API host.
struct Setup {
    app: App,
    github: FakeGitHub,
    env: Env,
    upstream: Upstream,
}

/// `scopes` is the YAML under `scopes:` with `{host}` and `{port}` replaced.
async fn setup(scopes: &str) -> Setup {
    let app = App::generate();
    let github = FakeGitHub::start(&app).await;
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let upstream = Upstream::start_tls(ca.clone(), API_HOST, echo_handler()).await;
    let extra = format!(
        "credentials:\n  github:\n    github_app:\n      app_id: {app_id}\n      \
         installation_id: {installation}\n      private_key: {{ env: GH_APP_KEY }}\n      \
         api: {api}\nscopes:\n{scopes}",
        app_id = app.app_id,
        installation = app.installation_id,
        api = github.api(),
        scopes = scopes
            .replace("{host}", API_HOST)
            .replace("{port}", &upstream.port().to_string()),
    );
    let env = Env::start_trusting(ca, &extra, &[("GH_APP_KEY", &app.private_pem)]).await;
    env.resolver.map(API_HOST, "127.0.0.1");
    Setup {
        app,
        github,
        env,
        upstream,
    }
}

impl Setup {
    /// `method path` on the API host through an intercepted tunnel.
    async fn send(&self, task: &(String, String), method: &str, path: &str) -> RawResponse {
        let target = format!("{API_HOST}:{}", self.upstream.port());
        let mut tls = tunnel(&self.env, &proxy_auth(&task.0, &task.1), &target, API_HOST)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let body = if method == "GET" { "" } else { "{}" };
        exchange(
            &mut tls,
            format!(
                "{method} {path} HTTP/1.1\r\nHost: {target}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
    }

    /// The bearer tokens the API host received, in order.
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

    /// No issued token, nor the app's private key, in `text`.
    fn assert_no_secret(&self, text: &str, what: &str) {
        for issued in self.github.issued() {
            assert!(!text.contains(&issued.token), "a token in {what}");
        }
        let key_body = self.app.private_pem.lines().nth(1).unwrap();
        assert!(!text.contains(key_body), "the private key in {what}");
        assert!(!text.contains("BEGIN PRIVATE KEY"), "a key in {what}");
    }

    /// Every response and the whole decision log are free of secrets, and
    /// the fake refused nothing (every JWT verified).
    async fn assert_clean(&self, responses: &[&RawResponse]) {
        for resp in responses {
            self.assert_no_secret(&resp.text(), "a response to the agent");
        }
        self.assert_no_secret(&self.env.log_text().await, "the decision log");
        assert_eq!(self.github.refused(), Vec::<String>::new());
        let accept = self.github.seen.lock().unwrap().accept.clone();
        assert!(
            accept.iter().all(|a| a == "application/vnd.github+json"),
            "{accept:?}"
        );
    }
}

const STATIC_READ: &str = r#"  github-read:
    - host: "{host}"
      port: {port}
      methods: [GET]
      paths: ["/repos/acme/*/issues/**"]
      credential: github
      allow_private: true
      narrowing: { repositories: [docs, app], permissions: { issues: read } }
"#;

const FROM_REQUEST: &str = r#"  github-write:
    - host: "{host}"
      port: {port}
      methods: [GET, POST, PATCH]
      paths: ["/repos/acme/*/issues/**", "/repos/acme/*/issues"]
      credential: github
      allow_private: true
      narrowing: { from_request: true, permission: issues }
    - host: "{host}"
      port: {port}
      methods: [GET]
      paths: ["/user"]
      credential: github
      allow_private: true
      narrowing: { from_request: true, permission: issues }
"#;

#[tokio::test]
async fn static_narrowing_is_sent_as_configured_and_the_token_injected() {
    let s = setup(STATIC_READ).await;
    let task = s.env.start_task(&["github-read"]);

    let first = s.send(&task, "GET", "/repos/acme/app/issues/1").await;
    assert_eq!(first.status, 200, "{}", first.text());
    let second = s.send(&task, "GET", "/repos/acme/docs/issues/2").await;
    assert_eq!(second.status, 200, "{}", second.text());

    let issued = s.github.issued();
    assert_eq!(issued.len(), 1, "one narrowing, one token: {issued:?}");
    assert_eq!(
        issued[0].body,
        json!({ "repositories": ["app", "docs"], "permissions": { "issues": "read" } })
    );
    assert_eq!(
        s.bearer_tokens(),
        [issued[0].token.clone(), issued[0].token.clone()]
    );

    let records = s.env.records().await;
    let issue = records
        .iter()
        .find(|r| r.event == Event::CredentialIssue)
        .expect("an issue record");
    let message = issue.message.clone().unwrap_or_default();
    assert!(message.contains("narrowed to"), "{message}");
    assert!(message.contains("\"app\""), "{message}");
    let cred = issue.credential.as_ref().unwrap();
    assert_eq!(cred.source, "github_app");
    assert!(cred.expires_at.is_some(), "TTL from expires_at");
    s.assert_clean(&[&first, &second]).await;
    s.env.stop().await;
}

#[tokio::test]
async fn from_request_narrowing_mints_one_token_per_repository_and_level() {
    let s = setup(FROM_REQUEST).await;
    let task = s.env.start_task(&["github-write"]);

    let mut responses = Vec::new();
    for (method, path) in [
        ("POST", "/repos/acme/app/issues"),
        ("PATCH", "/repos/acme/app/issues/7"),
        ("POST", "/repos/acme/docs/issues"),
        ("GET", "/repos/acme/app/issues/7"),
    ] {
        let resp = s.send(&task, method, path).await;
        assert_eq!(resp.status, 200, "{method} {path}: {}", resp.text());
        responses.push(resp);
    }

    let issued = s.github.issued();
    let bodies: Vec<_> = issued.iter().map(|i| i.body.clone()).collect();
    assert_eq!(
        bodies,
        [
            json!({ "repositories": ["app"], "permissions": { "issues": "write" } }),
            json!({ "repositories": ["docs"], "permissions": { "issues": "write" } }),
            json!({ "repositories": ["app"], "permissions": { "issues": "read" } }),
        ],
        "two requests to the same repository share one token"
    );
    let (app_write, docs_write, app_read) = (&issued[0].token, &issued[1].token, &issued[2].token);
    assert_ne!(app_write, docs_write);
    assert_eq!(
        s.bearer_tokens(),
        [app_write, app_write, docs_write, app_read].map(String::clone),
        "each request carries the token narrowed to its repository"
    );

    // A path naming no repository cannot be narrowed: refused, not forwarded.
    let refused = s.send(&task, "GET", "/user").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.reason(), Some("credential_unavailable"));
    let text = refused.text();
    assert!(text.contains("github_app"), "{text}");
    assert!(text.contains("names no repository"), "{text}");
    assert_eq!(
        s.github.issued().len(),
        3,
        "no token for an unnarrowable path"
    );
    assert_eq!(s.upstream.received().len(), 4);

    let refs: Vec<&RawResponse> = responses.iter().chain([&refused]).collect();
    s.assert_clean(&refs).await;
    s.env.stop().await;
}

#[tokio::test]
async fn task_end_revokes_every_token_of_the_task_and_only_its_own() {
    let s = setup(FROM_REQUEST).await;
    let a = s.env.start_task(&["github-write"]);
    let b = s.env.start_task(&["github-write"]);
    for path in ["/repos/acme/app/issues", "/repos/acme/docs/issues"] {
        assert_eq!(s.send(&a, "POST", path).await.status, 200);
    }
    assert_eq!(
        s.send(&b, "POST", "/repos/acme/app/issues").await.status,
        200
    );
    let issued = s.github.issued();
    assert_eq!(issued.len(), 3, "tokens are per task: {issued:?}");
    assert_ne!(issued[0].token, issued[2].token);

    s.env.end_task(&a.0).await;
    let mut revoked = s.github.revoked();
    revoked.sort();
    let mut expected = vec![issued[0].token.clone(), issued[1].token.clone()];
    expected.sort();
    assert_eq!(revoked, expected, "task a's two tokens, not task b's");

    let records = s.env.records().await;
    let messages: Vec<String> = records
        .iter()
        .filter(|r| r.event == Event::CredentialRevoke)
        .filter(|r| r.task.as_deref() == Some(a.0.as_str()))
        .map(|r| r.message.clone().unwrap_or_default())
        .collect();
    assert_eq!(messages.len(), 2, "{records:?}");
    assert!(
        messages.iter().all(|m| m.contains("revoked at the source")),
        "{messages:?}"
    );

    // Task b still works with its token; the ended task gets nothing more.
    assert_eq!(
        s.send(&b, "POST", "/repos/acme/app/issues").await.status,
        200
    );
    assert_eq!(s.github.issued().len(), 3);
    s.env.end_task(&b.0).await;
    assert_eq!(s.github.revoked().len(), 3);
    s.assert_clean(&[]).await;
    s.env.stop().await;
}

#[tokio::test]
async fn a_rule_without_narrowing_gets_an_unnarrowed_token() {
    let s = setup(
        r#"  github-any:
    - host: "{host}"
      port: {port}
      methods: [GET]
      paths: ["/**"]
      credential: github
      allow_private: true
"#,
    )
    .await;
    let task = s.env.start_task(&["github-any"]);
    let resp = s.send(&task, "GET", "/user").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let issued = s.github.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].body, json!({}));
    assert_eq!(s.bearer_tokens(), [issued[0].token.clone()]);
    s.assert_clean(&[&resp]).await;
    s.env.stop().await;
}

#[tokio::test]
async fn a_refusal_by_github_fails_closed_naming_the_source() {
    let s = setup(STATIC_READ).await;
    s.github.set_mode(Mode::Unprocessable);
    let task = s.env.start_task(&["github-read"]);
    let resp = s.send(&task, "GET", "/repos/acme/app/issues/1").await;
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.reason(), Some("credential_unavailable"));
    let text = resp.text();
    assert!(text.contains("github_app"), "{text}");
    assert!(text.contains("422"), "{text}");
    assert!(
        s.upstream.received().is_empty(),
        "forwarded without a token"
    );
    let records = s
        .env
        .wait_for_record(|r| r.reason == Some(Reason::CredentialUnavailable))
        .await;
    assert!(records
        .iter()
        .any(|r| r.reason == Some(Reason::CredentialUnavailable)));
    s.env.stop().await;
}

/// The config of one github_app credential with `key` as its private key
/// and `narrowing` on a rule.
fn parse(key: &str, narrowing: &str) -> Result<(), String> {
    let dir = TempDir::new();
    let upstream_ca = CertificateAuthority::generate().unwrap();
    std::fs::write(dir.path().join("upstream-ca.pem"), upstream_ca.cert_pem()).unwrap();
    let text = base_config(
        dir.path(),
        &format!(
            "credentials:\n  github:\n    github_app:\n      app_id: 1\n      \
             installation_id: 2\n      private_key: {{ env: GH_APP_KEY }}\n\
             scopes:\n  gh:\n    - host: api.github.com\n      methods: [GET]\n      \
             paths: [\"/repos/**\"]\n      credential: github\n      narrowing: {narrowing}\n"
        ),
    );
    let env: std::collections::BTreeMap<String, String> =
        [("GH_APP_KEY".to_string(), key.to_string())].into();
    Config::parse(&text, &env)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn a_bad_private_key_is_a_load_error_that_does_not_show_it() {
    let good = App::generate();
    let narrowing = "{ repositories: [app] }";
    parse(&good.private_pem, narrowing).unwrap();

    let garbage = test_secret();
    let err = parse(&garbage, narrowing).unwrap_err();
    assert!(
        err.contains("credentials.github.github_app.private_key"),
        "{err}"
    );
    assert!(!err.contains(&garbage), "{err}");

    // GitHub App keys are RSA: an EC key cannot sign RS256.
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .unwrap()
        .serialize_pem();
    let err = parse(&ec, narrowing).unwrap_err();
    assert!(
        err.contains("credentials.github.github_app.private_key"),
        "{err}"
    );
    assert!(!err.contains(ec.lines().nth(1).unwrap()), "{err}");

    // A truncated RSA key is as bad.
    let truncated: String = good
        .private_pem
        .lines()
        .take(5)
        .collect::<Vec<_>>()
        .join("\n");
    let err = parse(&truncated, narrowing).unwrap_err();
    assert!(err.contains("private_key"), "{err}");
    assert!(
        !err.contains(good.private_pem.lines().nth(1).unwrap()),
        "{err}"
    );
}

#[test]
fn a_bad_narrowing_is_a_load_error_naming_the_field() {
    let app = App::generate();
    let err = parse(
        &app.private_pem,
        "{ repositories: [app, 'acme/docs'], permissions: { issues: owner } }",
    )
    .unwrap_err();
    assert!(
        err.contains("scopes.gh[0].narrowing.repositories[1]"),
        "{err}"
    );
    assert!(
        err.contains("scopes.gh[0].narrowing.permissions.issues"),
        "{err}"
    );
    let err = parse(&app.private_pem, "{ from_request: true }").unwrap_err();
    assert!(err.contains("scopes.gh[0].narrowing.permission"), "{err}");
}
