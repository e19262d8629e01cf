//! `credentials.<name>` in the configuration: its raw shape, and its
//! validation into a [`CredentialSpec`].
//!
//! ```yaml
//! credentials:
//!   internal-api:
//!     static: { env: INTERNAL_API_TOKEN }
//!   reports:
//!     exec:
//!       command: ["/usr/local/bin/mint-token", "--audience", "reports"]
//!       timeout: 10s
//!     inject: { query: api_key }
//! ```

use std::sync::Arc;

use serde::Deserialize;

use crate::credential::exec::RawExec;
use crate::credential::oauth2::RawOAuth2ClientCredentials;
use crate::credential::spec::SourceSpec;
use crate::credential::{aws, exec, github_app, oauth2, static_source, token_exchange, vault};
use crate::field::FieldError;
use crate::inject::{Injection, RawInject};
use crate::provider::Provider;
use crate::secret::SecretRef;

/// One credential as written in the configuration: exactly one source key,
/// plus how to inject it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    /// `static: { env: NAME }` or `static: { file: PATH }`: a standing secret.
    #[serde(default, rename = "static")]
    pub static_: Option<SecretRef>,
    /// `exec: { command: [...], timeout: 10s }`: a command that mints the credential.
    #[serde(default)]
    pub exec: Option<RawExec>,
    /// `oauth2_client_credentials: { token_url | issuer, client_id, ... }`:
    /// a token minted per task by an OAuth 2.0 authorization server.
    #[serde(default)]
    pub oauth2_client_credentials: Option<RawOAuth2ClientCredentials>,
    /// `vault: { address, auth, child_token, read }`: a secret read from
    /// Vault / OpenBao under a child token minted per task.
    #[serde(default)]
    pub vault: Option<vault::RawVault>,
    /// `github_app: { app_id, installation_id, private_key, api, ca }`:
    /// GitHub App installation tokens minted per task, narrowed by rules.
    #[serde(default)]
    pub github_app: Option<github_app::RawGitHubApp>,
    /// `oauth2_token_exchange: { token_url | issuer, client_id, subject_token, ... }`:
    /// a token obtained per task by RFC 8693 token exchange.
    #[serde(default)]
    pub oauth2_token_exchange: Option<token_exchange::RawTokenExchange>,
    /// `aws: { role_arn, region, duration, base, sts_endpoint }`: AWS
    /// session keys minted per task by STS AssumeRole, for SigV4 re-signing.
    #[serde(default)]
    pub aws: Option<aws::RawAws>,
    /// How the credential is put into requests; `Authorization: Bearer {token}` when absent.
    #[serde(default)]
    pub inject: Option<RawInject>,
}

/// A named, validated credential: where it comes from and how it is injected.
#[derive(Debug, Clone)]
pub struct CredentialSpec {
    /// The name under `credentials:`, which rules refer to.
    pub name: String,
    /// Where the credential comes from, validated; built into a live source
    /// with the rest of the gateway's snapshot.
    pub source: Arc<dyn SourceSpec>,
    /// How it is put into requests.
    pub injection: Injection,
}

impl CredentialSpec {
    /// Validates one credential. Exactly one source key must be present;
    /// secrets and files are checked through `provider` (a missing variable
    /// is a configuration error, not a failed request). Every problem is
    /// reported, each with a path relative to the credential (`static`,
    /// `exec.command[0]`, `inject.format`).
    pub fn compile(
        name: &str,
        raw: &RawCredential,
        provider: &dyn Provider,
    ) -> Result<CredentialSpec, Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Err(message) = check_name(name) {
            errors.push(FieldError::new("", message));
        }
        let source = match validate_source(name, raw, provider) {
            Ok(source) => Some(source),
            Err(errs) => {
                errors.extend(errs);
                None
            }
        };
        let injection = Injection::compile(raw.inject.as_ref())
            .map_err(|errs| errors.extend(errs.into_iter().map(|e| e.under("inject"))))
            .ok();
        // AWS keys can only be used by re-signing, and only AWS keys (from
        // `aws`, or an `exec` printing credential_process JSON) can sign.
        let sigv4 = matches!(injection, Some(Injection::SigV4(_)));
        if raw.aws.is_some() && injection.is_some() && !sigv4 {
            errors.push(FieldError::new(
                "inject",
                "an aws credential is injected by SigV4 re-signing: inject: { sigv4: { service, region } }",
            ));
        }
        if sigv4 && raw.aws.is_none() && raw.exec.is_none() {
            errors.push(FieldError::new(
                "inject.sigv4",
                "SigV4 re-signing needs AWS keys, from an aws (or exec) source",
            ));
        }
        match (source, injection) {
            (Some(source), Some(injection)) if errors.is_empty() => Ok(CredentialSpec {
                name: name.to_string(),
                source,
                injection,
            }),
            _ => Err(errors),
        }
    }
}

/// Validates a source from the credential's raw form: `None` when the
/// credential does not name this source; errors are relative to its key.
type Validate =
    fn(&str, &RawCredential, &dyn Provider) -> Option<Result<Arc<dyn SourceSpec>, Vec<FieldError>>>;

/// Every source: its key under a credential (the field of [`RawCredential`]
/// that holds it), and how it is validated. A new source is a file of its
/// own, one line here and its field.
const SOURCES: [(&str, Validate); 7] = [
    ("static", |name, raw, p| {
        (raw.static_.as_ref()).map(|r| spec(static_source::validate(name, r, p)))
    }),
    ("exec", |name, raw, p| {
        (raw.exec.as_ref()).map(|r| spec(exec::validate(name, r, p)))
    }),
    ("oauth2_client_credentials", |name, raw, p| {
        (raw.oauth2_client_credentials.as_ref()).map(|r| spec(oauth2::validate(name, r, p)))
    }),
    ("vault", |name, raw, p| {
        (raw.vault.as_ref()).map(|r| spec(vault::validate(name, r, p)))
    }),
    ("github_app", |name, raw, p| {
        (raw.github_app.as_ref()).map(|r| spec(github_app::validate(name, r, p)))
    }),
    ("oauth2_token_exchange", |name, raw, p| {
        (raw.oauth2_token_exchange.as_ref()).map(|r| spec(token_exchange::validate(name, r, p)))
    }),
    ("aws", |name, raw, p| {
        (raw.aws.as_ref()).map(|r| spec(aws::validate(name, r, p)))
    }),
];

fn spec<S: SourceSpec + 'static>(
    validated: Result<S, Vec<FieldError>>,
) -> Result<Arc<dyn SourceSpec>, Vec<FieldError>> {
    validated.map(|source| Arc::new(source) as Arc<dyn SourceSpec>)
}

/// Validates the one source a credential names; errors are placed under its key.
fn validate_source(
    name: &str,
    raw: &RawCredential,
    provider: &dyn Provider,
) -> Result<Arc<dyn SourceSpec>, Vec<FieldError>> {
    let mut given = SOURCES.iter().filter_map(|(key, validate)| {
        validate(name, raw, provider).map(|validated| (*key, validated))
    });
    match (given.next(), given.next()) {
        (Some((key, validated)), None) => {
            validated.map_err(|errs| errs.into_iter().map(|e| e.under(key)).collect())
        }
        _ => {
            let kinds: Vec<&str> = SOURCES.iter().map(|(key, _)| *key).collect();
            Err(vec![FieldError::new(
                "",
                format!("credential needs exactly one source: {}", kinds.join(", ")),
            )])
        }
    }
}

/// Names appear in records, rules and a command's environment: keep them plain.
fn check_name(name: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || !name.chars().all(plain) {
        return Err(format!(
            "credential name {name:?} must be non-empty and use only letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::exec::tests::{env, Script};
    use crate::inject::Injection;
    use std::collections::BTreeMap;

    fn raw(yaml: &str) -> RawCredential {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn static_resolves_now_and_defaults_to_bearer() {
        let env: BTreeMap<String, String> = [(
            "INTERNAL_API_TOKEN".to_string(),
            "test-secret-api".to_string(),
        )]
        .into();
        let def = CredentialSpec::compile(
            "internal-api",
            &raw("static: { env: INTERNAL_API_TOKEN }"),
            &env,
        )
        .unwrap();
        assert_eq!(def.source.kind(), "static");
        assert_eq!(
            def.injection.describe(),
            "header Authorization: Bearer {token}"
        );
        assert!(!format!("{def:?}").contains("test-secret"));
    }

    #[test]
    fn missing_env_is_a_config_error_naming_the_variable() {
        let errors = CredentialSpec::compile(
            "internal-api",
            &raw("static: { env: NOT_SET }"),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["static"]);
        assert!(errors[0].message.contains("NOT_SET"), "{}", errors[0]);
    }

    #[test]
    fn exactly_one_source() {
        let env = env();
        for yaml in [
            "inject: { query: key }",
            "{ static: { env: PATH }, exec: { command: [/bin/sh] } }",
        ] {
            let errors = CredentialSpec::compile("c", &raw(yaml), &env).unwrap_err();
            assert_eq!(
                errors[0].message,
                "credential needs exactly one source: static, exec, oauth2_client_credentials, vault, github_app, oauth2_token_exchange, aws"
            );
            assert_eq!(errors[0].path, "");
        }
    }

    #[test]
    fn aws_keys_go_with_sigv4_only() {
        let env: std::collections::BTreeMap<String, String> = [
            ("AWS_ACCESS_KEY_ID".to_string(), "AKIATESTBASE".to_string()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                "test-secret".to_string(),
            ),
            ("TOKEN".to_string(), "test-secret-token".to_string()),
        ]
        .into();
        let aws = "aws: { role_arn: 'arn:aws:iam::123456789012:role/r', region: eu-west-1 }";
        let paths = |yaml: &str| -> Vec<String> {
            match CredentialSpec::compile("c", &raw(yaml), &env) {
                Ok(_) => vec![],
                Err(errors) => errors.into_iter().map(|e| e.path).collect(),
            }
        };
        assert!(paths(&format!("{{ {aws}, inject: {{ sigv4: {{}} }} }}")).is_empty());
        assert_eq!(paths(&format!("{{ {aws} }}")), ["inject"]);
        assert_eq!(
            paths(&format!("{{ {aws}, inject: {{ header: X-Key }} }}")),
            ["inject"]
        );
        assert_eq!(
            paths("{ static: { env: TOKEN }, inject: { sigv4: { service: s3 } } }"),
            ["inject.sigv4"]
        );
        assert_eq!(
            paths(&format!(
                "{{ {aws}, inject: {{ sigv4: {{ region: 'EU' }} }} }}"
            )),
            ["inject.sigv4.region"]
        );
        assert_eq!(
            paths(&format!(
                "{{ {aws}, static: {{ env: TOKEN }}, inject: {{ sigv4: {{}} }} }}"
            )),
            [""]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(
            serde_yaml::from_str::<RawCredential>("{ exec: { command: [sh], shell: true } }")
                .is_err()
        );
        assert!(serde_yaml::from_str::<RawCredential>("{ statik: { env: X } }").is_err());
        assert!(serde_yaml::from_str::<RawCredential>("static: { env: X, file: /y }").is_err());
        assert!(serde_yaml::from_str::<RawCredential>("static: { vault: X }").is_err());
        let file =
            serde_yaml::from_str::<RawCredential>("static:\n  file: /run/secrets/t").unwrap();
        assert_eq!(file.static_, Some(SecretRef::File("/run/secrets/t".into())));
    }

    #[test]
    fn exec_checks_program_and_timeout_and_reports_everything() {
        let env = env();
        let errors = CredentialSpec::compile(
            "reports",
            &raw(
                "{ exec: { command: [/nonexistent/mint], timeout: 10 }, inject: { query: 'a b' } }",
            ),
            &env,
        )
        .unwrap_err();
        assert_eq!(
            paths(&errors),
            ["exec.timeout", "exec.command[0]", "inject.query"]
        );

        let script = Script::new("echo '{}'");
        let not_executable = format!("{{ exec: {{ command: [{}] }} }}", script.path.display());
        let errors = CredentialSpec::compile("reports", &raw(&not_executable), &env).unwrap_err();
        assert!(
            errors[0].message.contains("not executable"),
            "{}",
            errors[0]
        );

        let errors =
            CredentialSpec::compile("reports", &raw("exec: { command: [] }"), &env).unwrap_err();
        assert_eq!(paths(&errors), ["exec.command"]);
        let errors = CredentialSpec::compile(
            "reports",
            &raw("exec: { command: [no-such-mint-tool] }"),
            &env,
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["exec.command[0]"]);
    }

    #[test]
    fn exec_with_a_bare_name_on_path() {
        let def = CredentialSpec::compile(
            "reports",
            &raw("{ exec: { command: [sh, -c, 'true'], timeout: 2s }, inject: { header: X-Api-Key } }"),
            &env(),
        )
        .unwrap();
        assert_eq!(def.source.kind(), "exec");
        assert!(matches!(def.injection, Injection::Header { .. }));
        assert_eq!(def.injection.describe(), "header X-Api-Key: {token}");
    }

    #[test]
    fn github_app_reports_every_problem_under_its_key() {
        let errors = CredentialSpec::compile(
            "github",
            &raw("github_app: { app_id: 0, installation_id: 7, private_key: { env: NOT_SET }, api: 'http://api.github.com', timeout: 0s }"),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "github_app.app_id",
                "github_app.api",
                "github_app.private_key",
                "github_app.timeout"
            ]
        );
        assert!(serde_yaml::from_str::<RawCredential>(
            "github_app: { app_id: 1, installation_id: 2, private_key: { env: K }, key_id: 3 }"
        )
        .is_err());
    }

    #[test]
    fn names_are_plain() {
        let env: BTreeMap<String, String> = [("T".to_string(), "test-secret".to_string())].into();
        let errors =
            CredentialSpec::compile("bad name", &raw("static: { env: T }"), &env).unwrap_err();
        assert_eq!(paths(&errors), [""]);
    }
}
