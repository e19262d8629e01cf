//! The `github_app` source: installation access tokens of a GitHub App,
//! minted per task and narrowed per rule or per request.
//!
//! credgate signs a short-lived app JWT (RS256, `iss` = the app id) with
//! the app's private key and asks `POST {api}/app/installations/{id}/access_tokens`
//! for a token limited to the narrowing's `repositories` and `permissions`
//! (see [`narrowing`]). Without a narrowing the token has everything the
//! installation was granted. The token expires when GitHub says
//! (`expires_at`, an hour); when the task ends it is revoked with
//! `DELETE {api}/installation/token`, authenticated by the token itself.
//!
//! Neither the private key, the JWT nor a token is ever logged: they live in
//! [`Secret`]s, and errors name the source, the call and GitHub's status.

mod app_jwt;
mod config;
mod http;
mod narrowing;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::http::{Method, StatusCode};

use crate::credential::{
    Credential, CredentialError, CredentialSource, CredentialValue, FetchContext, Narrowing,
    RequestView, Revocation, Secret,
};
use app_jwt::AppKey;
pub use config::{validate, GitHubAppSpec, RawGitHubApp};
use http::GitHubHttp;

/// Mints installation tokens of one GitHub App installation.
pub struct GitHubAppSource {
    credential: String,
    app_id: String,
    installation_id: u64,
    key: AppKey,
    http: GitHubHttp,
}

impl fmt::Debug for GitHubAppSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubAppSource")
            .field("credential", &self.credential)
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .field("api", &self.http.api())
            .field("key", &self.key)
            .finish()
    }
}

impl GitHubAppSource {
    fn new(
        credential: &str,
        app_id: u64,
        installation_id: u64,
        key: AppKey,
        api: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> GitHubAppSource {
        GitHubAppSource {
            credential: credential.to_string(),
            app_id: app_id.to_string(),
            installation_id,
            key,
            http: GitHubHttp::new(api, tls, timeout),
        }
    }

    fn error(&self, message: impl Into<String>) -> CredentialError {
        CredentialError::Source {
            credential: self.credential.clone(),
            source_kind: "github_app",
            message: message.into(),
        }
    }

    async fn fetch_for(&self, ctx: &FetchContext) -> Result<Credential, CredentialError> {
        let jwt = self
            .key
            .sign(&self.app_id, SystemTime::now())
            .map_err(|e| self.error(format!("cannot sign the app JWT: {e}")))?;
        // The narrowing's value is the request body: `repositories` and
        // `permissions`, or nothing for an unnarrowed token.
        let body = match &ctx.narrowing.value {
            serde_json::Value::Null => serde_json::json!({}),
            value => value.clone(),
        };
        let path = format!("/app/installations/{}/access_tokens", self.installation_id);
        let answer = self
            .http
            .call(Method::POST, &path, &jwt, Some(&body))
            .await
            .map_err(|e| self.error(format!("creating an installation token ({path}): {e}")))?;
        if answer.status != StatusCode::CREATED && answer.status != StatusCode::OK {
            return Err(self.error(format!(
                "creating an installation token ({}{path}): GitHub answered {} ({})",
                self.http.api(),
                answer.status,
                answer.message()
            )));
        }
        let token = answer.body["token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.error(format!(
                    "creating an installation token ({path}): the answer has no token"
                ))
            })?;
        let token = Secret::new(token);
        let expires_at = answer.body["expires_at"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .ok_or_else(|| {
                self.error(format!(
                    "creating an installation token ({path}): the answer has no valid expires_at"
                ))
            })?;
        Ok(Credential {
            name: self.credential.clone(),
            id: crate::credential::new_credential_id(),
            source: "github_app",
            value: CredentialValue::Token(token),
            expires_at: Some(expires_at),
            standing: false,
            renewed: None,
        })
    }

    /// `DELETE /installation/token` with the token as bearer. GitHub answers
    /// 204 when it revoked the token, 401 when it no longer accepts it
    /// (expired or already revoked): both mean it is gone.
    async fn revoke_for(&self, credential: &Credential) -> Result<Revocation, CredentialError> {
        let CredentialValue::Token(token) = &credential.value else {
            return Ok(Revocation::NotSupported);
        };
        let path = "/installation/token";
        let answer = self
            .http
            .call(Method::DELETE, path, token, None)
            .await
            .map_err(|e| self.error(format!("revoking the installation token ({path}): {e}")))?;
        match answer.status {
            StatusCode::NO_CONTENT | StatusCode::UNAUTHORIZED => Ok(Revocation::Revoked),
            status => Err(self.error(format!(
                "revoking the installation token ({}{path}): GitHub answered {status} ({})",
                self.http.api(),
                answer.message()
            ))),
        }
    }
}

impl CredentialSource for GitHubAppSource {
    fn kind(&self) -> &'static str {
        "github_app"
    }

    fn fetch<'a>(
        &'a self,
        ctx: &'a FetchContext,
    ) -> crate::BoxFuture<'a, Result<Credential, CredentialError>> {
        Box::pin(self.fetch_for(ctx))
    }

    fn revoke<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> crate::BoxFuture<'a, Result<Revocation, CredentialError>> {
        Box::pin(self.revoke_for(credential))
    }

    fn narrow(
        &self,
        narrowing: Option<&serde_yaml::Value>,
        request: &RequestView<'_>,
    ) -> Result<Narrowing, CredentialError> {
        let scope = narrowing::narrow(narrowing, request).map_err(|e| self.error(e))?;
        let Some(scope) = scope else {
            return Ok(Narrowing::default());
        };
        let key = serde_json::to_string(&scope)
            .map_err(|e| self.error(format!("cannot describe the narrowing: {e}")))?;
        let value = serde_json::to_value(&scope)
            .map_err(|e| self.error(format!("cannot describe the narrowing: {e}")))?;
        Ok(Narrowing { key, value })
    }
}
