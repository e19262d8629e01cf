//! `encoded_slash: keep` through the real proxy: curl asks for an npm-style
//! scoped package (`/@acme%2fleftpad`) over HTTPS with interception, and a
//! recording TLS upstream shows the request target it was sent. Under a
//! rule that keeps it the `%2f` arrives byte for byte; under any other rule,
//! or a pattern that would need it to be a separator, the request is
//! refused with 400 `path_rejected`, recorded, and goes nowhere.

mod support;

use credgate::audit::Verdict;
use credgate::reason::Reason;
use support::*;

struct Setup {
    env: Env,
    registry: Upstream,
    other: Upstream,
}

/// `npm` keeps encoded slashes on `registry.test` only; `strict` allows the
/// same paths there without keeping them; `nested` keeps them but wants the
/// package name as a segment of its own (`/**/leftpad`).
async fn setup() -> Setup {
    let upstream_ca = std::sync::Arc::new(credgate::tls::CertificateAuthority::generate().unwrap());
    let registry = Upstream::start_tls(upstream_ca.clone(), "registry.test", ok_handler()).await;
    let other = Upstream::start_tls(upstream_ca.clone(), "other.test", ok_handler()).await;
    let extra = format!(
        r#"
scopes:
  npm:
    - host: registry.test
      port: {registry}
      methods: [GET]
      paths: ["/*"]
      encoded_slash: keep
      allow_private: true
    - host: other.test
      port: {other}
      methods: [GET]
      paths: ["/*"]
      allow_private: true
  strict:
    - host: registry.test
      port: {registry}
      methods: [GET]
      paths: ["/*"]
      allow_private: true
  nested:
    - host: registry.test
      port: {registry}
      methods: [GET]
      paths: ["/**/leftpad"]
      encoded_slash: keep
      allow_private: true
"#,
        registry = registry.port(),
        other = other.port(),
    );
    let env = Env::start_trusting(upstream_ca, &extra, &[]).await;
    env.resolver.map("registry.test", "127.0.0.1");
    env.resolver.map("other.test", "127.0.0.1");
    Setup {
        env,
        registry,
        other,
    }
}

/// `GET https://{host}:{port}{path}` with curl through the proxy as a new
/// task of `scope`; the status and the body.
async fn get(s: &Setup, scope: &str, host: &str, port: u16, path: &str) -> (u16, String) {
    let (id, token) = s.env.start_task(&[scope]);
    let url = format!("https://{host}:{port}{path}");
    let out = run_cli(curl_via(
        &s.env.proxy_url(&id, &token),
        &s.env.ca_cert,
        &url,
    ))
    .await;
    curl_status(&out)
}

/// Asserts a 400 `path_rejected`, with a record of it naming `path`.
async fn assert_path_rejected(s: &Setup, status: u16, body: &str, path: &str) {
    assert_eq!(status, 400, "{body}");
    let error: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(error["error"], "path_rejected", "{body}");
    let records = s
        .env
        .wait_for_record(|r| {
            r.reason == Some(Reason::PathRejected) && r.path.as_deref() == Some(path)
        })
        .await;
    let record = records
        .iter()
        .rev()
        .find(|r| r.reason == Some(Reason::PathRejected))
        .unwrap();
    assert_eq!(record.decision, Some(Verdict::Deny));
    assert_eq!(record.method.as_deref(), Some("GET"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_encoded_slash_reaches_the_upstream_byte_for_byte() {
    let s = setup().await;
    let port = s.registry.port();
    for path in ["/@acme%2fleftpad", "/@acme%2Fleftpad"] {
        let (status, body) = get(&s, "npm", "registry.test", port, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        let received = s.registry.received();
        let last = received.last().unwrap();
        // Neither decoded nor re-encoded (not even to uppercase hex).
        assert_eq!(last.path_and_query, path);
        let records = s
            .env
            .wait_for_record(|r| r.path.as_deref() == Some(path))
            .await;
        let record = records
            .iter()
            .find(|r| r.path.as_deref() == Some(path))
            .unwrap();
        assert_eq!(record.decision, Some(Verdict::Allow));
        assert_eq!(record.rule.as_deref(), Some("npm[0]"));
    }
    assert_eq!(s.registry.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_slash_is_refused_unless_the_matching_rule_keeps_it() {
    let s = setup().await;
    let path = "/@acme%2fleftpad";

    // The same path and pattern, under a rule that does not keep it.
    let (status, body) = get(&s, "strict", "registry.test", s.registry.port(), path).await;
    assert_path_rejected(&s, status, &body, path).await;

    // The task's keep rule is for another host: it opens nothing here.
    let (status, body) = get(&s, "npm", "other.test", s.other.port(), path).await;
    assert_path_rejected(&s, status, &body, path).await;
    assert!(body.contains("encoded_slash: keep"), "{body}");

    // Double encoding is a literal `%2F`, never a slash: forwarded as today.
    let (status, body) = get(&s, "strict", "registry.test", s.registry.port(), "/a%252fb").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.registry.received().last().unwrap().path_and_query,
        "/a%252fb"
    );

    // A backslash, and a dot segment behind an encoded slash, stay refused
    // even under the rule that keeps encoded slashes.
    for refused in ["/@acme%5cleftpad", "/@acme%2f..%2fadmin"] {
        let (status, body) = get(&s, "npm", "registry.test", s.registry.port(), refused).await;
        assert_eq!(status, 400, "{refused}: {body}");
        assert!(body.contains("path_rejected"), "{refused}: {body}");
    }
    assert_eq!(
        s.registry.received().len(),
        1,
        "only /a%252fb went upstream"
    );
    assert!(s.other.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encoded_slash_never_separates_segments() {
    let s = setup().await;
    let port = s.registry.port();
    // `/**/leftpad` needs `leftpad` as a segment of its own: `%2f` is not a
    // separator, so the path is no match, and refused as a path.
    let (status, body) = get(&s, "nested", "registry.test", port, "/@acme%2fleftpad").await;
    assert_path_rejected(&s, status, &body, "/@acme%2fleftpad").await;
    assert!(s.registry.received().is_empty());
    // With a real separator it matches.
    let (status, body) = get(&s, "nested", "registry.test", port, "/@acme/leftpad").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.registry.received().last().unwrap().path_and_query,
        "/@acme/leftpad"
    );
}
