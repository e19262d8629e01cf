//! The `static` source: a standing secret from the environment or a file.
//!
//! This is the documented exception to just-in-time credentials. The value is
//! checked when the configuration is validated, so a missing variable is a
//! configuration error rather than a failed request, and read when the
//! source is built. It never expires and cannot be revoked; the agent still
//! never sees it.

use std::sync::Arc;

use crate::credential::spec::{resolve, SourceSpec};
use crate::credential::{
    Credential, CredentialError, CredentialSource, CredentialValue, FetchContext, Secret,
};
use crate::field::FieldError;
use crate::provider::Provider;
use crate::secret::SecretRef;

/// The `static` source, validated: where its secret is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticSpec {
    credential: String,
    secret: SecretRef,
}

impl SourceSpec for StaticSpec {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn build(&self, provider: &dyn Provider) -> Result<Arc<dyn CredentialSource>, Vec<FieldError>> {
        let secret = resolve("", &self.secret, provider).map_err(|e| vec![e])?;
        Ok(Arc::new(StaticSource::new(&self.credential, secret)))
    }
}

/// Validates `static`: the secret must resolve now (through `provider`), so
/// a missing variable or file is a configuration error.
pub fn validate(
    name: &str,
    secret: &SecretRef,
    provider: &dyn Provider,
) -> Result<StaticSpec, Vec<FieldError>> {
    resolve("", secret, provider).map_err(|e| vec![e])?;
    Ok(StaticSpec {
        credential: name.to_string(),
        secret: secret.clone(),
    })
}

/// Hands out the same standing secret to every task.
pub struct StaticSource {
    credential: String,
    id: String,
    value: Secret,
}

impl StaticSource {
    /// A source for credential `credential` holding `value`. The record id is
    /// derived from the value's fingerprint, so it is stable across fetches,
    /// tasks and restarts, and changes when the secret is rotated.
    pub fn new(credential: &str, value: Secret) -> StaticSource {
        let fingerprint = value.fingerprint();
        let digits = fingerprint.strip_prefix("sha256:").unwrap_or(&fingerprint);
        StaticSource {
            credential: credential.to_string(),
            id: format!("cred-{digits}"),
            value,
        }
    }
}

impl CredentialSource for StaticSource {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn fetch<'a>(
        &'a self,
        _ctx: &'a FetchContext,
    ) -> crate::BoxFuture<'a, Result<Credential, CredentialError>> {
        Box::pin(async move {
            Ok(Credential {
                name: self.credential.clone(),
                id: self.id.clone(),
                source: "static",
                value: CredentialValue::Token(self.value.clone()),
                expires_at: None,
                standing: true,
                renewed: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Revocation;
    use std::time::SystemTime;

    fn ctx(task: &str) -> FetchContext {
        FetchContext {
            task_id: task.into(),
            agent: "agent".into(),
            labels: Default::default(),
            task_expires_at: SystemTime::now(),
            narrowing: Default::default(),
        }
    }

    #[tokio::test]
    async fn standing_secret_with_a_stable_id() {
        let source = StaticSource::new("internal-api", Secret::new("test-secret-static"));
        let a = source.fetch(&ctx("task-a")).await.unwrap();
        let b = source.fetch(&ctx("task-b")).await.unwrap();
        assert_eq!(a.id, b.id);
        assert!(
            a.id.starts_with("cred-") && a.id.len() == "cred-".len() + 12,
            "{}",
            a.id
        );
        assert!(a.standing && a.expires_at.is_none());
        assert_eq!(a.source, "static");
        assert_eq!(a.secret_values(), vec![&b"test-secret-static"[..]]);
        let rotated = StaticSource::new("internal-api", Secret::new("test-secret-rotated"));
        assert_ne!(rotated.fetch(&ctx("task-a")).await.unwrap().id, a.id);
        assert_eq!(source.revoke(&a).await.unwrap(), Revocation::NotSupported);
    }
}
