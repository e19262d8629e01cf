//! `credentials.<name>.github_app` as written in the configuration, its
//! validation into a [`GitHubAppSpec`], and the building of a
//! [`GitHubAppSource`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::credential::spec::{resolve, source_tls, SourceSpec};
use crate::credential::{endpoint, CredentialSource};
use crate::field::FieldError;
use crate::provider::Provider;
use crate::secret::SecretRef;

use super::app_jwt::AppKey;
use super::GitHubAppSource;

/// The public GitHub API.
const DEFAULT_API: &str = "https://api.github.com";

/// The `github_app` source as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGitHubApp {
    /// The GitHub App's id (the JWT's issuer).
    pub app_id: u64,
    /// The installation whose tokens are minted.
    pub installation_id: u64,
    /// The app's RSA private key (PEM), `{ env: NAME }` or `{ file: PATH }`.
    pub private_key: SecretRef,
    /// The REST API base: `https://api.github.com` when absent; for GitHub
    /// Enterprise Server `https://ghe.example/api/v3`. `http://` only for a
    /// loopback host.
    #[serde(default)]
    pub api: Option<String>,
    /// A PEM bundle of extra CAs to verify the API's certificate with.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// How long one call to GitHub may take (`10s` when absent).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The `github_app` source, validated.
#[derive(Debug, Clone)]
pub struct GitHubAppSpec {
    credential: String,
    app_id: u64,
    installation_id: u64,
    private_key: SecretRef,
    api: String,
    ca: Option<PathBuf>,
    timeout: Duration,
}

impl SourceSpec for GitHubAppSpec {
    fn kind(&self) -> &'static str {
        "github_app"
    }

    fn check_narrowing(&self, narrowing: &serde_yaml::Value) -> Result<(), Vec<FieldError>> {
        super::narrowing::check(narrowing)
    }

    fn build(&self, provider: &dyn Provider) -> Result<Arc<dyn CredentialSource>, Vec<FieldError>> {
        Ok(Arc::new(self.source(provider)?))
    }
}

impl GitHubAppSpec {
    /// The live source: the key read and parsed, the `ca` bundle read, the client made.
    pub(crate) fn source(
        &self,
        provider: &dyn Provider,
    ) -> Result<GitHubAppSource, Vec<FieldError>> {
        let key = load_key(&self.private_key, provider);
        let tls = source_tls(self.ca.as_deref(), provider);
        match (key, tls) {
            (Ok(key), Ok(tls)) => Ok(GitHubAppSource::new(
                &self.credential,
                self.app_id,
                self.installation_id,
                key,
                &self.api,
                tls,
                self.timeout,
            )),
            (key, tls) => Err(key.err().into_iter().chain(tls.err()).collect()),
        }
    }
}

/// The app's key, read and parsed, as an error at `private_key`.
fn load_key(private_key: &SecretRef, provider: &dyn Provider) -> Result<AppKey, FieldError> {
    let pem = resolve("private_key", private_key, provider)?;
    AppKey::from_pem(&pem).map_err(|message| FieldError::new("private_key", message))
}

/// Validates `raw`; every problem is reported, each with a path relative
/// to `github_app`.
pub fn validate(
    name: &str,
    raw: &RawGitHubApp,
    env: &dyn Provider,
) -> Result<GitHubAppSpec, Vec<FieldError>> {
    let mut errors = Vec::new();
    if raw.app_id == 0 {
        errors.push(FieldError::new("app_id", "must be the app's id (not 0)"));
    }
    if raw.installation_id == 0 {
        errors.push(FieldError::new(
            "installation_id",
            "must be the installation's id (not 0)",
        ));
    }
    let api = raw.api.as_deref().unwrap_or(DEFAULT_API);
    if let Err(message) = check_api(api) {
        errors.push(FieldError::new("api", message));
    }
    if let Err(e) = load_key(&raw.private_key, env) {
        errors.push(e);
    }
    if let Err(e) = source_tls(raw.ca.as_deref(), env) {
        errors.push(e);
    }
    let timeout = crate::credential::source_timeout(raw.timeout.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(GitHubAppSpec {
        credential: name.to_string(),
        app_id: raw.app_id,
        installation_id: raw.installation_id,
        private_key: raw.private_key.clone(),
        api: api.to_string(),
        ca: raw.ca.clone(),
        timeout,
    })
}

/// `https://host[:port][/path]`, no query, no credentials; `http://` only
/// for a loopback host (see [`endpoint::check_endpoint`]).
fn check_api(api: &str) -> Result<(), String> {
    let uri = endpoint::check_endpoint(api)?;
    if uri.query().is_some() {
        return Err("must not have a query".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls() {
        for ok in [
            "https://api.github.com",
            "https://ghe.example/api/v3",
            "https://ghe.example:8443/api/v3/",
            "http://127.0.0.1:9000",
            "http://[::1]:9000/api/v3",
            "http://localhost",
        ] {
            assert_eq!(check_api(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://api.github.com",
            "ftp://api.github.com",
            "api.github.com",
            "https://user:pw@ghe.example",
            "https://ghe.example/api/v3?x=1",
        ] {
            assert!(check_api(bad).is_err(), "{bad}");
        }
    }
}
