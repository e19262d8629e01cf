//! Credentials, their sources and the per-task cache.
//!
//! A [`CredentialSource`] turns a [`FetchContext`] (which task is asking) into a
//! [`Credential`]: a value with an expiry, a stable id and a fingerprint. The
//! [`cache::CredentialCache`] keeps what was issued per task, coalesces
//! concurrent fetches and revokes everything when the task ends. Values live
//! in [`Secret`]s, so nothing here can print them.

pub mod aws;
pub mod cache;
pub(crate) mod endpoint;
pub mod error;
pub mod exec;
pub mod exec_output;
pub mod github_app;
pub mod oauth2;
pub(crate) mod source_http;
pub mod spec;
pub mod static_source;
pub mod task_jwt;
pub mod token_exchange;
pub mod vault;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::audit::{CacheOutcome, CredentialInfo};
use crate::field::FieldError;

pub use crate::secret::Secret;
pub use cache::{CacheStatus, CredentialCache};
pub use error::CredentialError;
pub use spec::{CredentialDef, SourceSpec};

/// How long one call of a source (a command, an HTTP exchange) may take
/// when its `timeout:` is not given.
pub const DEFAULT_SOURCE_TIMEOUT: Duration = Duration::from_secs(10);

/// A source's `timeout:` field: a duration longer than zero, or
/// [`DEFAULT_SOURCE_TIMEOUT`]. A bad value is an error at `timeout` (the
/// default stands in, so every other problem is still reported).
pub(crate) fn source_timeout(text: Option<&str>, errors: &mut Vec<FieldError>) -> Duration {
    match text.map(crate::units::parse_duration) {
        None => DEFAULT_SOURCE_TIMEOUT,
        Some(Ok(t)) if t > Duration::ZERO => t,
        Some(Ok(_)) => {
            errors.push(FieldError::new("timeout", "must be longer than zero"));
            DEFAULT_SOURCE_TIMEOUT
        }
        Some(Err(message)) => {
            errors.push(FieldError::new("timeout", message));
            DEFAULT_SOURCE_TIMEOUT
        }
    }
}

/// A fresh id for an issued credential, as records name it: `cred-` + 12
/// random hex digits (never derived from the value).
pub(crate) fn new_credential_id() -> String {
    format!(
        "cred-{}",
        crate::hex::lower(&crate::secret::random_bytes::<6>())
    )
}

/// One credential issued by a source, as the cache holds it and injection uses it.
pub struct Credential {
    /// The configuration name (`credentials.<name>`), shown in records.
    pub name: String,
    /// A stable id for records (`cred-` + 12 hex digits); never derived reversibly from the value.
    pub id: String,
    /// The kind of source that issued it (`static`, `exec`, ...).
    pub source: &'static str,
    /// The secret material.
    pub value: CredentialValue,
    /// When the upstream stops accepting it; `None` when the source did not say.
    pub expires_at: Option<SystemTime>,
    /// `true` for a standing secret (the `static` exception) rather than one minted for the task.
    pub standing: bool,
    /// `Some(what)` when the source extended the credential it issued before
    /// (same value, same id, later expiry) instead of minting a new one;
    /// `what` says what was extended, for records (never secret), e.g.
    /// `lease sha256:0123456789ab`.
    pub renewed: Option<String>,
}

/// The secret material of a [`Credential`].
pub enum CredentialValue {
    /// A bearer-style token, injected through a header, Basic auth or a query parameter.
    Token(Secret),
    /// AWS keys, for SigV4 re-signing.
    Aws {
        /// The access key id. Not secret by AWS's definition, but it identifies the
        /// principal, so it is scrubbed and never printed like the rest.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: Secret,
        /// The session token of temporary credentials.
        session_token: Option<Secret>,
    },
}

impl CredentialValue {
    /// `token` or `aws`: what kind of value this is, for errors and records.
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialValue::Token(_) => "token",
            CredentialValue::Aws { .. } => "aws",
        }
    }
}

impl fmt::Debug for CredentialValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialValue::Token(secret) => f.debug_tuple("Token").field(secret).finish(),
            CredentialValue::Aws {
                access_key_id,
                secret_access_key,
                session_token,
            } => f
                .debug_struct("Aws")
                .field(
                    "access_key_id",
                    &crate::secret::fingerprint(access_key_id.as_bytes()),
                )
                .field("secret_access_key", secret_access_key)
                .field("session_token", session_token)
                .finish(),
        }
    }
}

impl Credential {
    /// How records name this credential: by source, name, id and
    /// fingerprint, never by its value. `cache` is left out on lifecycle events.
    pub fn record_info(&self, cache: Option<CacheOutcome>) -> CredentialInfo {
        CredentialInfo {
            source: self.source.to_string(),
            name: self.name.clone(),
            id: self.id.clone(),
            fingerprint: self.fingerprint(),
            expires_at: self.expires_at.map(crate::audit::format_timestamp),
            cache,
            standing: self.standing,
        }
    }

    /// The fingerprint records carry instead of the value: of the token, or of
    /// the secret access key for AWS keys.
    pub fn fingerprint(&self) -> String {
        match &self.value {
            CredentialValue::Token(token) => token.fingerprint(),
            CredentialValue::Aws {
                secret_access_key, ..
            } => secret_access_key.fingerprint(),
        }
    }

    /// Every byte string of the value that must never reach the agent, for the
    /// response scrubber. Includes the AWS access key id.
    pub fn secret_values(&self) -> Vec<&[u8]> {
        match &self.value {
            CredentialValue::Token(token) => vec![token.expose()],
            CredentialValue::Aws {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let mut values = vec![access_key_id.as_bytes(), secret_access_key.expose()];
                if let Some(token) = session_token {
                    values.push(token.expose());
                }
                values
            }
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("source", &self.source)
            .field("value", &self.value)
            .field("expires_at", &self.expires_at)
            .field("standing", &self.standing)
            .finish()
    }
}

/// Who is asking for a credential: sources that mint per task (exec, token
/// exchange, ...) use it to narrow what they issue.
/// What a source may look at in the request a credential is for, to narrow
/// the credential to it (e.g. the repository in a GitHub API path).
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request method.
    pub method: &'a http::Method,
    /// The normalised host.
    pub host: &'a str,
    /// The normalised path (no query).
    pub path: &'a str,
}

/// The narrowing of one credential fetch: what the source is asked to limit
/// the credential to, and the stable key that tells cached credentials of
/// different narrowings apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Narrowing {
    /// Part of the cache key; `""` when the credential is not narrowed.
    pub key: String,
    /// The source's own description of the narrowing (`null` when none).
    pub value: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchContext {
    /// The task the credential is for.
    pub task_id: String,
    /// The agent running the task.
    pub agent: String,
    /// The task's labels (ticket, env, ...).
    pub labels: BTreeMap<String, String>,
    /// When the task ends at the latest; a source may bound the credential's life by it.
    pub task_expires_at: SystemTime,
    /// What the credential is narrowed to for this fetch.
    pub narrowing: Narrowing,
}

/// Where credentials come from. One implementation per source kind; the cache
/// calls [`fetch`](CredentialSource::fetch) on a miss and
/// [`revoke`](CredentialSource::revoke) when the task ends.
pub trait CredentialSource: Send + Sync {
    /// The source kind as written in config and records (`static`, `exec`, ...).
    fn kind(&self) -> &'static str;

    /// Obtains a credential for the task in `ctx`. Called only on a cache miss,
    /// once per key even when many requests miss at the same time. An error
    /// means nothing may be forwarded (fail closed).
    fn fetch<'a>(
        &'a self,
        ctx: &'a FetchContext,
    ) -> crate::BoxFuture<'a, Result<Credential, CredentialError>>;

    /// Revokes `credential` at the source, if the source supports it. Called
    /// when the task that holds it ends. The default says revocation is not
    /// supported, which is the truth for standing secrets and opaque commands.
    fn revoke<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> crate::BoxFuture<'a, Result<Revocation, CredentialError>> {
        let _ = credential;
        Box::pin(async { Ok(Revocation::NotSupported) })
    }

    /// The narrowing for one request, from the rule's block (already checked
    /// by [`SourceSpec::check_narrowing`]) and the request. Called before the
    /// cache lookup: its key is part of the cache key. Default: not narrowed.
    fn narrow(
        &self,
        narrowing: Option<&serde_yaml::Value>,
        request: &RequestView<'_>,
    ) -> Result<Narrowing, CredentialError> {
        let _ = (narrowing, request);
        Ok(Narrowing::default())
    }
}

/// What revoking a credential achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The source invalidated the credential.
    Revoked,
    /// The source has no way to revoke; the credential lives until it expires.
    NotSupported,
}

impl Revocation {
    /// `revoked` or `not_supported`, for records.
    pub fn as_str(self) -> &'static str {
        match self {
            Revocation::Revoked => "revoked",
            Revocation::NotSupported => "not_supported",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws() -> Credential {
        Credential {
            name: "aws".into(),
            id: "cred-000000000000".into(),
            source: "exec",
            value: CredentialValue::Aws {
                access_key_id: "ASIATESTKEYID".into(),
                secret_access_key: Secret::new("test-secret-access-key"),
                session_token: Some(Secret::new("test-secret-session")),
            },
            expires_at: None,
            standing: false,
            renewed: None,
        }
    }

    #[test]
    fn debug_never_shows_values_not_even_the_access_key_id() {
        let shown = format!("{:?}", aws());
        for value in ["ASIATESTKEYID", "test-secret"] {
            assert!(!shown.contains(value), "{shown}");
        }
        assert!(shown.contains("cred-000000000000"), "{shown}");
    }

    #[test]
    fn secret_values_cover_every_part_of_an_aws_value() {
        let cred = aws();
        let values = cred.secret_values();
        assert_eq!(
            values,
            vec![
                &b"ASIATESTKEYID"[..],
                b"test-secret-access-key",
                b"test-secret-session"
            ]
        );
        assert_eq!(
            cred.fingerprint(),
            crate::secret::fingerprint(b"test-secret-access-key")
        );
    }

    #[test]
    fn token_fingerprint_is_the_token_fingerprint() {
        let cred = Credential {
            value: CredentialValue::Token(Secret::new("test-secret-token")),
            ..aws()
        };
        assert_eq!(
            cred.fingerprint(),
            crate::secret::fingerprint(b"test-secret-token")
        );
        assert_eq!(cred.secret_values(), vec![&b"test-secret-token"[..]]);
        assert_eq!(cred.value.kind(), "token");
    }
}
