//! `credentials.<name>.vault` as written in the configuration, its
//! validation into a [`VaultSpec`], and the building of a [`VaultSource`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use serde::Deserialize;

use crate::credential::spec::{resolve, source_tls, SourceSpec};
use crate::credential::{endpoint, CredentialSource};
use crate::field::FieldError;
use crate::provider::Provider;
use crate::secret::SecretRef;
use crate::units::parse_duration;

use super::{Auth, ChildTokenSpec, Read, VaultSource};

/// A child token's life when `child_token.ttl` is not given.
const DEFAULT_CHILD_TTL: Duration = Duration::from_secs(15 * 60);

/// The `vault` source as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVault {
    /// `https://vault.internal:8200`; `http://` only for a loopback host.
    pub address: String,
    /// A PEM bundle of extra CAs to verify Vault's certificate with.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// How credgate authenticates itself: exactly one of `token`, `approle`, `jwt`.
    pub auth: RawVaultAuth,
    /// The token minted per task, under which the secret is read.
    pub child_token: RawChildToken,
    /// What is read: exactly one of `kv2`, `dynamic`, `path`.
    pub read: RawVaultRead,
    /// How long one call to Vault may take (`10s` when absent).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `vault.auth`: exactly one method.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVaultAuth {
    /// A Vault token, `{ env: NAME }` or `{ file: PATH }`.
    #[serde(default)]
    pub token: Option<SecretRef>,
    /// AppRole login.
    #[serde(default)]
    pub approle: Option<RawAppRole>,
    /// JWT / Kubernetes login with a token file re-read on every login.
    #[serde(default)]
    pub jwt: Option<RawJwt>,
}

/// `vault.auth.approle`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppRole {
    /// The role id (an identifier, not the secret half).
    pub role_id: String,
    /// The secret id, `{ env: NAME }` or `{ file: PATH }`.
    pub secret_id: SecretRef,
    /// Where the AppRole method is mounted (`approle` when absent).
    #[serde(default)]
    pub mount: Option<String>,
}

/// `vault.auth.jwt`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    /// The Vault role to log in as.
    pub role: String,
    /// The file holding the JWT (e.g. a projected service account token).
    pub token_file: PathBuf,
    /// Where the method is mounted (`jwt` when absent; `kubernetes` for that method).
    #[serde(default)]
    pub mount: Option<String>,
}

/// `vault.child_token`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChildToken {
    /// The policies of the per-task token: what the task's credential may read.
    pub policies: Vec<String>,
    /// Its life at most (`15m` when absent); never beyond the task's end.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// `vault.read`: exactly one kind of read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVaultRead {
    /// A KV version 2 secret.
    #[serde(default)]
    pub kv2: Option<RawKv2>,
    /// A dynamic secret with a lease (`database/creds/readonly`, `pki/issue/web`, ...).
    #[serde(default)]
    pub dynamic: Option<RawPathField>,
    /// Any other path, read with GET or written with POST.
    #[serde(default)]
    pub path: Option<RawPathRead>,
}

/// `vault.read.kv2`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKv2 {
    /// Where the KV v2 engine is mounted (`secret` when absent).
    #[serde(default)]
    pub mount: Option<String>,
    /// The secret's path under the mount.
    pub path: String,
    /// The key within the secret's data.
    pub field: String,
}

/// `vault.read.dynamic`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathField {
    /// The full path after `/v1/`.
    pub path: String,
    /// The key within the answer's `data`.
    pub field: String,
}

/// `vault.read.path`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPathRead {
    /// The full path after `/v1/`.
    pub path: String,
    /// The key within the answer's `data`.
    pub field: String,
    /// `GET` (default) or `POST`.
    #[serde(default)]
    pub method: Option<String>,
    /// The JSON object a `POST` sends (e.g. `{ common_name: ... }` for `pki/issue/<role>`).
    #[serde(default)]
    pub data: Option<BTreeMap<String, String>>,
}

/// The `vault` source, validated.
#[derive(Debug, Clone)]
pub struct VaultSpec {
    credential: String,
    address: String,
    ca: Option<PathBuf>,
    timeout: Duration,
    auth: AuthSpec,
    child: ChildTokenSpec,
    read: Read,
}

/// How credgate logs in to Vault, with its secret by reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthSpec {
    Token(SecretRef),
    AppRole {
        mount: String,
        role_id: String,
        secret_id: SecretRef,
    },
    Jwt {
        mount: String,
        role: String,
        token_file: PathBuf,
    },
}

impl SourceSpec for VaultSpec {
    fn kind(&self) -> &'static str {
        "vault"
    }

    fn build(&self, provider: &dyn Provider) -> Result<Arc<dyn CredentialSource>, Vec<FieldError>> {
        Ok(Arc::new(self.source(provider)?))
    }
}

impl VaultSpec {
    /// The live source: the login secret read, the `ca` bundle read, the client made.
    pub(crate) fn source(&self, provider: &dyn Provider) -> Result<VaultSource, Vec<FieldError>> {
        let auth = load_auth(&self.auth, provider);
        let tls = source_tls(self.ca.as_deref(), provider);
        match (auth, tls) {
            (Ok(auth), Ok(tls)) => Ok(VaultSource::new(
                &self.credential,
                &self.address,
                tls,
                self.timeout,
                auth,
                self.child.clone(),
                self.read.clone(),
            )),
            (auth, tls) => Err(auth.err().into_iter().chain(tls.err()).collect()),
        }
    }
}

/// Validates `raw`; every problem is reported, each with a path relative
/// to `vault`.
pub fn validate(
    name: &str,
    raw: &RawVault,
    env: &dyn Provider,
) -> Result<VaultSpec, Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Err(message) = check_address(&raw.address) {
        errors.push(FieldError::new("address", message));
    }
    if let Err(e) = source_tls(raw.ca.as_deref(), env) {
        errors.push(e);
    }
    let timeout = crate::credential::source_timeout(raw.timeout.as_deref(), &mut errors);
    let auth = validate_auth(&raw.auth, &mut errors);
    if let Some(Err(e)) = auth.as_ref().map(|auth| load_auth(auth, env)) {
        errors.push(e);
    }
    let child = validate_child(&raw.child_token, &mut errors);
    let read = validate_read(&raw.read, &mut errors);
    match (auth, read) {
        (Some(auth), Some(read)) if errors.is_empty() => Ok(VaultSpec {
            credential: name.to_string(),
            address: raw.address.clone(),
            ca: raw.ca.clone(),
            timeout,
            auth,
            child,
            read,
        }),
        _ => Err(errors),
    }
}

/// The login with its secret read.
fn load_auth(auth: &AuthSpec, provider: &dyn Provider) -> Result<Auth, FieldError> {
    Ok(match auth {
        AuthSpec::Token(token) => Auth::Token(resolve("auth.token", token, provider)?),
        AuthSpec::AppRole {
            mount,
            role_id,
            secret_id,
        } => Auth::AppRole {
            mount: mount.clone(),
            role_id: role_id.clone(),
            secret_id: resolve("auth.approle.secret_id", secret_id, provider)?,
        },
        AuthSpec::Jwt {
            mount,
            role,
            token_file,
        } => Auth::Jwt {
            mount: mount.clone(),
            role: role.clone(),
            token_file: token_file.clone(),
        },
    })
}

fn duration(
    text: &Option<String>,
    default: Duration,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Duration {
    match text.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) if d >= Duration::from_secs(1) => d,
        Some(Ok(_)) => {
            errors.push(FieldError::new(path, "must be at least 1s"));
            default
        }
        Some(Err(message)) => {
            errors.push(FieldError::new(path, message));
            default
        }
    }
}

/// `https://host[:port]`, or `http://` for a loopback host only: a Vault
/// token must not cross a network in clear (see [`endpoint::check_endpoint`]).
fn check_address(address: &str) -> Result<(), String> {
    let uri = endpoint::check_endpoint(address)?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("give only scheme, host and port (Vault's API is under /v1/)".into());
    }
    Ok(())
}

/// A path under `/v1/`: plain segments, no `..`, no query, no leading slash.
fn check_path(path: &str) -> Result<(), String> {
    let plain =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+' | '@');
    if path.is_empty()
        || path.starts_with('/')
        || path.ends_with('/')
        || !path.chars().all(plain)
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "{path:?} must be a relative path of plain segments (letters, digits, - _ . + @), without leading or trailing /"
        ));
    }
    Ok(())
}

fn checked(value: &str, path: &str, errors: &mut Vec<FieldError>) -> String {
    if let Err(message) = check_path(value) {
        errors.push(FieldError::new(path, message));
    }
    value.to_string()
}

fn field(value: &str, path: &str, errors: &mut Vec<FieldError>) -> String {
    if value.is_empty() {
        errors.push(FieldError::new(path, "must not be empty"));
    }
    value.to_string()
}

fn validate_auth(raw: &RawVaultAuth, errors: &mut Vec<FieldError>) -> Option<AuthSpec> {
    match (&raw.token, &raw.approle, &raw.jwt) {
        (Some(token), None, None) => Some(AuthSpec::Token(token.clone())),
        (None, Some(approle), None) => {
            let mount = checked(
                approle.mount.as_deref().unwrap_or("approle"),
                "auth.approle.mount",
                errors,
            );
            let role_id = field(&approle.role_id, "auth.approle.role_id", errors);
            Some(AuthSpec::AppRole {
                mount,
                role_id,
                secret_id: approle.secret_id.clone(),
            })
        }
        (None, None, Some(jwt)) => {
            let mount = checked(
                jwt.mount.as_deref().unwrap_or("jwt"),
                "auth.jwt.mount",
                errors,
            );
            let role = field(&jwt.role, "auth.jwt.role", errors);
            if jwt.token_file.as_os_str().is_empty() {
                errors.push(FieldError::new("auth.jwt.token_file", "must not be empty"));
            }
            Some(AuthSpec::Jwt {
                mount,
                role,
                token_file: jwt.token_file.clone(),
            })
        }
        _ => {
            errors.push(FieldError::new(
                "auth",
                "needs exactly one method: token, approle, jwt",
            ));
            None
        }
    }
}

fn validate_child(raw: &RawChildToken, errors: &mut Vec<FieldError>) -> ChildTokenSpec {
    if raw.policies.is_empty() {
        // Without policies a child token inherits all of credgate's own.
        errors.push(FieldError::new(
            "child_token.policies",
            "name at least one policy: the per-task token must be narrower than credgate's own",
        ));
    }
    for (i, policy) in raw.policies.iter().enumerate() {
        let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if policy.is_empty() || !policy.chars().all(plain) {
            errors.push(FieldError::new(
                format!("child_token.policies[{i}]"),
                "a policy name uses only letters, digits, '-', '_' and '.'",
            ));
        }
        if policy == "root" {
            errors.push(FieldError::new(
                format!("child_token.policies[{i}]"),
                "a per-task token must not hold the root policy",
            ));
        }
    }
    ChildTokenSpec {
        policies: raw.policies.clone(),
        ttl: duration(&raw.ttl, DEFAULT_CHILD_TTL, "child_token.ttl", errors),
    }
}

fn validate_read(raw: &RawVaultRead, errors: &mut Vec<FieldError>) -> Option<Read> {
    match (&raw.kv2, &raw.dynamic, &raw.path) {
        (Some(kv2), None, None) => {
            let mount = checked(
                kv2.mount.as_deref().unwrap_or("secret"),
                "read.kv2.mount",
                errors,
            );
            let path = checked(&kv2.path, "read.kv2.path", errors);
            Some(Read::Kv2 {
                data_path: format!("{mount}/data/{path}"),
                field: field(&kv2.field, "read.kv2.field", errors),
            })
        }
        (None, Some(dynamic), None) => Some(Read::Dynamic {
            path: checked(&dynamic.path, "read.dynamic.path", errors),
            field: field(&dynamic.field, "read.dynamic.field", errors),
        }),
        (None, None, Some(path)) => {
            let method = match path
                .method
                .as_deref()
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                None | Some("GET") => Method::GET,
                Some("POST") => Method::POST,
                Some(_) => {
                    errors.push(FieldError::new("read.path.method", "must be GET or POST"));
                    Method::GET
                }
            };
            if path.data.is_some() && method != Method::POST {
                errors.push(FieldError::new(
                    "read.path.data",
                    "is sent only with method: POST",
                ));
            }
            Some(Read::Path {
                path: checked(&path.path, "read.path.path", errors),
                field: field(&path.field, "read.path.field", errors),
                body: path.data.clone().unwrap_or_default(),
                method,
            })
        }
        _ => {
            errors.push(FieldError::new(
                "read",
                "needs exactly one kind: kv2, dynamic, path",
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validation and building in one step, as loading does.
    fn compile(
        name: &str,
        raw: &RawVault,
        env: &dyn Provider,
    ) -> Result<VaultSource, Vec<FieldError>> {
        validate(name, raw, env)?.source(env)
    }
    use std::collections::BTreeMap;

    fn raw(yaml: &str) -> RawVault {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn env() -> BTreeMap<String, String> {
        [("VAULT_TOKEN".to_string(), "test-secret-vault".to_string())].into()
    }

    fn paths(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    const GOOD: &str = "{ address: 'https://vault.internal:8200', auth: { token: { env: VAULT_TOKEN } }, \
        child_token: { policies: [db-read], ttl: 5m }, read: { kv2: { path: apps/reports, field: api_key } } }";

    #[test]
    fn a_good_definition_compiles() {
        let source = compile("db", &raw(GOOD), &env()).unwrap();
        let shown = format!("{source:?}");
        assert!(!shown.contains("test-secret"), "{shown}");
        assert!(shown.contains("secret/data/apps/reports"), "{shown}");
    }

    #[test]
    fn cleartext_only_on_loopback() {
        for (address, ok) in [
            ("http://127.0.0.1:8200", true),
            ("http://localhost:8200", true),
            ("http://[::1]:8200", true),
            ("https://vault.internal", true),
            ("http://vault.internal:8200", false),
            ("http://10.0.0.1:8200", false),
            ("https://vault.internal/v1/secret", false),
            ("vault.internal:8200", false),
            ("https://user:pw@vault.internal", false),
        ] {
            assert_eq!(check_address(address).is_ok(), ok, "{address}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let errors = compile(
            "db",
            &raw("{ address: 'http://vault.internal', auth: { token: { env: NOPE } }, \
                 child_token: { policies: [], ttl: 0s }, \
                 read: { path: { path: '../sys/raw', field: '', method: DELETE } }, timeout: soon }"),
            &env(),
        )
        .unwrap_err();
        assert_eq!(
            paths(&errors),
            [
                "address",
                "timeout",
                "auth.token",
                "child_token.policies",
                "child_token.ttl",
                "read.path.method",
                "read.path.path",
                "read.path.field"
            ]
        );
        assert!(errors.iter().all(|e| !e.message.contains("test-secret")));
    }

    #[test]
    fn exactly_one_auth_and_one_read() {
        let errors = compile(
            "db",
            &raw(
                "{ address: 'https://v', auth: {}, child_token: { policies: [p] }, \
                 read: { kv2: { path: a, field: b }, dynamic: { path: c, field: d } } }",
            ),
            &env(),
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["auth", "read"]);
        let errors = compile(
            "db",
            &raw("{ address: 'https://v', auth: { token: { env: VAULT_TOKEN }, jwt: { role: r, token_file: /t } }, \
                 child_token: { policies: [root] }, read: { dynamic: { path: pki/issue/web, field: serial_number } } }"),
            &env(),
        )
        .unwrap_err();
        assert_eq!(paths(&errors), ["auth", "child_token.policies[0]"]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_yaml::from_str::<RawVault>(
            "{ address: 'https://v', auth: { token: { env: T } }, child_token: { policies: [p] }, \
             read: { kv2: { path: a, field: b, version: 2 } } }"
        )
        .is_err());
        assert!(serde_yaml::from_str::<RawVault>(
            "{ address: 'https://v', auth: { token: { env: T } }, child_token: { policies: [p], renewable: true }, \
             read: { kv2: { path: a, field: b } } }"
        )
        .is_err());
    }
}
