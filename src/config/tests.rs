use std::collections::BTreeMap;

use super::*;

fn env() -> BTreeMap<String, String> {
    [("GH_TOKEN".to_string(), "test-secret-gh".to_string())].into()
}

fn errors(text: &str) -> Vec<String> {
    match Config::parse(text, &env()) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.errors.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn the_shipped_default_config_is_valid() {
    let config = Config::parse(DEFAULT_CONFIG_YAML, &env()).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:8081");
    assert!(config.policy.has_scope("packages-read"));
    assert!(config.proxy_url.is_none());
    assert_eq!(config.tasks.default_ttl, Duration::from_secs(900));
}

#[test]
fn an_empty_file_takes_every_default() {
    let config = Config::parse("", &env()).unwrap();
    assert_eq!(
        config.audit_path,
        PathBuf::from(".credgate/decisions.jsonl")
    );
    assert_eq!(config.upstream.connect_timeout, Duration::from_secs(10));
    assert!(config.policy.scope_names().is_empty());
}

#[test]
fn transparent_listen_takes_one_address_or_a_list() {
    let one = Config::parse("transparent_listen: 127.0.0.1:15001\n", &env()).unwrap();
    assert_eq!(one.transparent_listen.len(), 1);
    let both = Config::parse(
        "transparent_listen: [127.0.0.1:15001, \"[::1]:15001\"]\n",
        &env(),
    )
    .unwrap();
    assert_eq!(both.transparent_listen[1].to_string(), "[::1]:15001");
    let none = Config::parse("listen: 127.0.0.1:8080\n", &env()).unwrap();
    assert!(none.transparent_listen.is_empty());
    let bad = errors("transparent_listen: [127.0.0.1:1, nowhere]\n").join("\n");
    assert!(bad.contains("transparent_listen[1]:"), "{bad}");
}

#[test]
fn every_error_is_reported_with_its_field_path() {
    let found = errors(
        r#"
listen: nowhere
transparent_listen: "port 15001"
colour: blue
upstream: { connect_timeout: 10 }
tasks: { default_ttl: 9h, max_ttl: 1h }
credentials:
  gh:
    static: { env: GH_TOKEN }
  broken:
    static: { env: NOT_SET_ANYWHERE }
scopes:
  read:
    - host: api.github.com
      methods: [GET]
      paths: ["no-slash"]
      credential: missing
    - host: api.github.com
      colour: red
ambient_task: { scopes: [nope] }
"#,
    );
    let joined = found.join("\n");
    for expected in [
        "listen:",
        "transparent_listen: \"port 15001\" is not an address",
        "colour: unknown field",
        "upstream.connect_timeout:",
        "tasks.default_ttl: is longer than tasks.max_ttl",
        "credentials.broken",
        "scopes.read[0].credential: no credential named \"missing\"",
        "scopes.read[0].paths[0]",
        "scopes.read[1]",
        "ambient_task.scopes[0]: no scope named \"nope\"",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
    assert!(
        !joined.contains("test-secret"),
        "a secret value leaked into an error"
    );
}

#[test]
fn secret_references_accept_only_one_form() {
    let joined = errors(
        r#"
admin: { token: { env: A, file: /b } }
"#,
    )
    .join("\n");
    assert!(joined.contains("admin"), "{joined}");
    let config = Config::parse("admin: { token: { env: ADMIN } }", &env()).unwrap();
    assert_eq!(config.admin.token, SecretRef::Env("ADMIN".into()));
}

#[test]
fn proxy_url_must_be_a_bare_http_url() {
    assert!(errors("proxy_url: http://user:pw@host:1")
        .join("\n")
        .contains("proxy_url"));
    assert!(errors("proxy_url: https://host:1")
        .join("\n")
        .contains("proxy_url"));
    let config = Config::parse("proxy_url: http://credgate.agents:8080", &env()).unwrap();
    assert_eq!(
        config.proxy_url.as_deref(),
        Some("http://credgate.agents:8080")
    );
}

#[test]
fn scopes_are_described_in_plain_words() {
    let config = Config::parse(
        r#"
credentials:
  gh:
    static: { env: GH_TOKEN }
scopes:
  github-read:
    - host: api.github.com
      methods: [GET, HEAD]
      paths: ["/repos/acme/*/issues/**"]
      credential: gh
    - host: api.github.com
      paths: ["/orgs/**"]
      action: deny
"#,
        &env(),
    )
    .unwrap();
    let text = config.describe_scopes();
    assert!(text.starts_with("scope github-read:\n"), "{text}");
    assert!(text.contains("GET, HEAD"), "{text}");
    assert!(text.contains("/repos/acme/*/issues/**"), "{text}");
    assert!(text.contains("credential gh from static source"), "{text}");
    assert!(text.contains("deny"), "{text}");
    assert!(!text.contains("test-secret"), "{text}");
}

#[test]
fn narrowing_is_checked_by_the_credential_source() {
    let joined = errors(
        r#"
credentials:
  gh:
    static: { env: GH_TOKEN }
scopes:
  s:
    - host: api.github.com
      credential: gh
      narrowing: { repositories: [app] }
    - host: api.github.com
      narrowing: { repositories: [app] }
"#,
    )
    .join("\n");
    assert!(
        joined.contains("scopes.s[0].narrowing: the static source cannot narrow its credential"),
        "{joined}"
    );
    assert!(joined.contains("scopes.s[1].narrowing"), "{joined}");
}

#[test]
fn decoding_limits_have_defaults_and_name_their_field_on_error() {
    let config = Config::parse("", &env()).unwrap();
    assert_eq!(config.upstream.max_decoded_body, 1 << 30);
    assert_eq!(config.upstream.max_decode_ratio, 100);
    let config = Config::parse(
        "upstream: { max_decoded_body: 64MiB, max_decode_ratio: 20 }\n",
        &env(),
    )
    .unwrap();
    assert_eq!(config.upstream.max_decoded_body, 64 << 20);
    assert_eq!(config.upstream.max_decode_ratio, 20);
    let joined =
        errors("upstream: { max_decoded_body: 1 parsec, max_decode_ratio: 0 }\n").join("\n");
    for expected in [
        "upstream.max_decoded_body:",
        "upstream.max_decode_ratio: must be larger than zero",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
    let joined = errors("upstream: { max_decoded_body: \"0\" }\n").join("\n");
    assert!(
        joined.contains("upstream.max_decoded_body: must be larger than zero"),
        "{joined}"
    );
}
