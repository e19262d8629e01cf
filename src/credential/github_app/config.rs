//! `credentials.<name>.github_app` as written in the configuration, and its
//! validation.

use std::path::PathBuf;

use serde::Deserialize;

use crate::credential::endpoint;
use crate::field::FieldError;
use crate::secret::{Environment, SecretRef};

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

/// Validates `raw` and builds the source; every problem is reported, each
/// with a path relative to `github_app`.
pub(crate) fn compile(
    name: &str,
    raw: &RawGitHubApp,
    env: &dyn Environment,
) -> Result<GitHubAppSource, Vec<FieldError>> {
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
    let key = match raw.private_key.resolve(env) {
        Ok(pem) => match AppKey::from_pem(&pem) {
            Ok(key) => Some(key),
            Err(message) => {
                errors.push(FieldError::new("private_key", message));
                None
            }
        },
        Err(e) => {
            errors.push(FieldError::new("private_key", e.to_string()));
            None
        }
    };
    let tls = match crate::tls::upstream_client_config(raw.ca.as_deref()) {
        Ok(tls) => Some(tls),
        Err(e) => {
            errors.push(FieldError::new("ca", e.to_string()));
            None
        }
    };
    let timeout = crate::credential::source_timeout(raw.timeout.as_deref(), &mut errors);
    match (key, tls) {
        (Some(key), Some(tls)) if errors.is_empty() => Ok(GitHubAppSource::new(
            name,
            raw.app_id,
            raw.installation_id,
            key,
            api,
            tls,
            timeout,
        )),
        _ => Err(errors),
    }
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
