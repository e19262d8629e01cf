//! A source as validated: plain data that names its secrets by reference,
//! built into a live [`CredentialSource`] in one place
//! (the gateway's snapshot, on load and on every reload).

use std::fmt;
use std::sync::Arc;

use crate::credential::CredentialSource;
use crate::field::FieldError;
use crate::provider::Provider;

/// One source kind's validated configuration.
///
/// Validation (each source's `validate`) checks everything it can, reading
/// secrets and files only through a [`Provider`], and keeps what it found as
/// plain values: parsed URLs and durations, secret references, paths. Its
/// `Debug` form is the validated model, and shows no secret.
pub trait SourceSpec: fmt::Debug + Send + Sync {
    /// The source kind as written in config and records (`static`, `exec`, ...).
    fn kind(&self) -> &'static str;

    /// Validates a rule's `narrowing:` block. A source that cannot narrow
    /// refuses any (field paths relative to `narrowing`).
    fn check_narrowing(&self, narrowing: &serde_yaml::Value) -> Result<(), Vec<FieldError>> {
        let _ = narrowing;
        Err(vec![FieldError::new(
            "",
            format!("the {} source cannot narrow its credential", self.kind()),
        )])
    }

    /// The live source: secrets resolved, files read (through `provider`),
    /// clients made. Errors have paths relative to the source's key, as
    /// validation's do; after a successful validation they only happen when
    /// a file or variable changed in between.
    fn build(&self, provider: &dyn Provider) -> Result<Arc<dyn CredentialSource>, Vec<FieldError>>;
}

/// A named live source, as the cache fetches from it.
#[derive(Clone)]
pub struct CredentialDef {
    /// The name under `credentials:`, which rules refer to.
    pub name: String,
    /// Where the credential comes from.
    pub source: Arc<dyn CredentialSource>,
}

impl fmt::Debug for CredentialDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialDef")
            .field("name", &self.name)
            .field("source", &self.source.kind())
            .finish()
    }
}

/// Reads a secret for validation or building, as an error at `field`.
pub(crate) fn resolve(
    field: &str,
    secret: &crate::secret::SecretRef,
    provider: &dyn Provider,
) -> Result<crate::secret::Secret, FieldError> {
    secret
        .resolve(provider)
        .map_err(|e| FieldError::new(field, e.to_string()))
}

/// The TLS client configuration for a source's server: the webpki roots
/// plus the PEM bundle `ca` (read through `provider`), as an error at `ca`.
pub(crate) fn source_tls(
    ca: Option<&std::path::Path>,
    provider: &dyn Provider,
) -> Result<Arc<rustls::ClientConfig>, FieldError> {
    crate::tls::upstream_client_config(ca, provider)
        .map_err(|e| FieldError::new("ca", e.to_string()))
}
