//! The validated model of every shipped configuration, compared with its
//! snapshot under `tests/snapshots/`.
//!
//! Validation is a pure function of the text and of what a `FakeProvider`
//! holds: these tests give it no real environment and no real file, and
//! check the list of everything it was asked. When the model changes on
//! purpose, `UPDATE_SNAPSHOTS=1 cargo test --test config_model` rewrites the
//! snapshots; review the diff.

use std::path::Path;

use credgate::config::Config;
use credgate::provider::FakeProvider;

/// Validates `file` (relative to the repository) with `provider` and
/// compares the model with `tests/snapshots/<snapshot>`; returns what the
/// provider was asked.
fn check_snapshot(file: &str, snapshot: &str, provider: &FakeProvider) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join(file)).unwrap();
    let config = Config::parse(&text, provider).unwrap_or_else(|e| panic!("{file}: {e}"));
    let model = format!("{config:#?}\n");
    let path = root.join("tests/snapshots").join(snapshot);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &model).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_SNAPSHOTS=1 writes it)", path.display()));
    if model != expected {
        let first = model
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(model.lines().count().min(expected.lines().count()));
        panic!(
            "the validated model of {file} differs from {} from line {}:\n  got:      {:?}\n  expected: {:?}\n(UPDATE_SNAPSHOTS=1 rewrites it)",
            path.display(),
            first + 1,
            model.lines().nth(first),
            expected.lines().nth(first),
        );
    }
    provider.asked()
}

#[test]
fn the_default_configuration() {
    let provider = FakeProvider::new();
    let asked = check_snapshot("config/credgate.yaml", "credgate.yaml.txt", &provider);
    assert!(asked.is_empty(), "{asked:?}");
}

#[test]
fn the_github_example() {
    let provider = FakeProvider::new()
        .with_var("PATH", "/usr/local/bin:/usr/bin")
        .with_program("/usr/local/bin/github-app-token.sh");
    let asked = check_snapshot(
        "examples/credgate.github.yaml",
        "credgate.github.yaml.txt",
        &provider,
    );
    // Each exec credential looks its program up on PATH; nothing else is read.
    assert_eq!(
        asked,
        [
            "var PATH",
            "metadata /usr/local/bin/github-app-token.sh",
            "var PATH",
            "metadata /usr/local/bin/github-app-token.sh",
        ]
    );
}

#[test]
fn every_source_kind() {
    let ca = credgate::tls::CertificateAuthority::generate().unwrap();
    let app_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
        .unwrap()
        .serialize_pem();
    let provider = FakeProvider::new()
        .with_var("PATH", "/opt/bin")
        .with_var("INTERNAL_API_TOKEN", "test-secret-internal")
        .with_var("SSO_CLIENT_SECRET", "test-secret-sso")
        .with_program("/opt/bin/mint-token")
        .with_file("/etc/credgate/upstream-ca.pem", ca.cert_pem())
        .with_file("/etc/credgate/vault-ca.pem", ca.cert_pem())
        .with_file("/run/secrets/idp-client-secret", "test-secret-idp\n")
        .with_file("/run/secrets/vault-secret-id", "test-secret-vault")
        .with_file("/run/secrets/github-app.pem", app_key)
        .with_file("/var/run/secrets/tokens/aws", "test-secret-jwt");
    let asked = check_snapshot(
        "tests/snapshots/every-source.yaml",
        "every-source.yaml.txt",
        &provider,
    );
    let model = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/every-source.yaml.txt"),
    )
    .unwrap();
    // The model names secrets; it never holds one.
    assert!(!model.contains("test-secret"), "{model}");
    assert!(!model.contains("PRIVATE KEY"), "{model}");
    // Everything validation learnt, it learnt from the provider.
    let mut asked = asked;
    asked.sort();
    asked.dedup();
    assert_eq!(
        asked,
        [
            "metadata /opt/bin/mint-token",
            "metadata /var/run/secrets/tokens/aws",
            "read /etc/credgate/upstream-ca.pem",
            "read /etc/credgate/vault-ca.pem",
            "read /run/secrets/github-app.pem",
            "read /run/secrets/idp-client-secret",
            "read /run/secrets/vault-secret-id",
            "var INTERNAL_API_TOKEN",
            "var PATH",
            "var SSO_CLIENT_SECRET",
        ]
    );
}

#[test]
fn a_missing_secret_or_file_is_an_error_at_its_field() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("tests/snapshots/every-source.yaml")).unwrap();
    let provider = FakeProvider::new().with_var("PATH", "/opt/bin");
    let errors = Config::parse(&text, &provider).unwrap_err();
    let paths: Vec<&str> = errors.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "upstream.extra_ca",
            "credentials.db.vault.ca",
            "credentials.db.vault.auth.approle.secret_id",
            "credentials.exchanged.oauth2_token_exchange.client_secret",
            "credentials.github.github_app.private_key",
            "credentials.idp.oauth2_client_credentials.client_secret",
            "credentials.internal-api.static",
            "credentials.reports.exec.command[0]",
            "credentials.s3.aws.base.web_identity.token_file",
        ],
        "{errors}"
    );
}
