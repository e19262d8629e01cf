//! The `oauth2_client_credentials` source: an access token minted per task
//! by an OAuth 2.0 authorization server (RFC 6749 §4.4), narrowed by
//! `scope`, `audience` and `resource` (RFC 8707), and revoked at task end
//! through the server's revocation endpoint (RFC 7009).
//!
//! ```yaml
//! credentials:
//!   reports:
//!     oauth2_client_credentials:
//!       issuer: https://idp.example          # or token_url: https://idp.example/oauth2/token
//!       client_id: credgate
//!       client_auth: client_secret_basic     # | client_secret_post | private_key_jwt
//!       client_secret: { env: IDP_CLIENT_SECRET }
//!       scope: [reports.read]
//!       resource: https://reports.example/
//! ```
//!
//! The token response is checked before anything is forwarded with it: the
//! granted scope must be exactly the scope asked for (a server that silently
//! drops a scope, or adds one, gets a deny with a reason, never a narrower or
//! wider token), and the token type must be Bearer.

mod assertion;
mod client;
mod config;

pub use config::{validate, ClientAuthMethod, OAuth2Spec, RawOAuth2ClientCredentials};

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine;
use http::{StatusCode, Uri};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use tokio::sync::OnceCell;

use self::assertion::SigningKey;
use self::client::{check_url, HttpAnswer, HttpClient};
use crate::credential::{
    Credential, CredentialError, CredentialSource, CredentialValue, FetchContext, Revocation,
};
use crate::field::FieldError;
use crate::provider::Provider;
use crate::secret::{Secret, SecretRef};

/// The source kind, as written in config and records.
pub const KIND: &str = "oauth2_client_credentials";

/// The lifetime assumed for a token whose response has no `expires_in`:
/// short, so a token of unknown life is replaced soon.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);

/// The validated client authentication, holding its secret.
enum ClientAuth {
    Basic(Secret),
    Post(Secret),
    PrivateKeyJwt(SigningKey),
}

/// Where the endpoints come from.
enum Endpoints {
    /// Configured directly.
    Fixed { token: Uri, revocation: Option<Uri> },
    /// Discovered once from the issuer's metadata; `revocation` overrides
    /// the discovered revocation endpoint.
    Issuer {
        issuer: String,
        revocation: Option<Uri>,
        discovered: OnceCell<Discovered>,
    },
}

/// What the issuer's metadata says.
#[derive(Debug, Clone)]
struct Discovered {
    token: Uri,
    revocation: Option<Uri>,
}

/// Mints a token per task from an OAuth 2.0 authorization server.
pub struct OAuth2Source {
    credential: String,
    /// The kind named in errors: this source's, or that of a source built on it.
    kind: &'static str,
    client_id: String,
    auth: ClientAuth,
    scope: Vec<String>,
    audience: Option<String>,
    resource: Option<String>,
    endpoints: Endpoints,
    http: HttpClient,
}

impl CredentialSource for OAuth2Source {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn fetch<'a>(
        &'a self,
        ctx: &'a FetchContext,
    ) -> crate::BoxFuture<'a, Result<Credential, CredentialError>> {
        let _ = ctx;
        Box::pin(self.mint())
    }

    fn revoke<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> crate::BoxFuture<'a, Result<Revocation, CredentialError>> {
        Box::pin(self.revoke_token(credential))
    }
}

/// Form-urlencoding (`application/x-www-form-urlencoded`): everything but
/// the unreserved characters is escaped.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(value: &str) -> String {
    utf8_percent_encode(value, FORM).to_string()
}

/// A form body under construction.
#[derive(Default)]
struct Form(String);

impl Form {
    fn add(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(name);
        self.0.push('=');
        self.0.push_str(&encode(value));
    }
}

impl OAuth2Source {
    /// The same client, reporting its errors as the source `kind` (for a
    /// source that talks to the authorization server through this one).
    pub(crate) fn with_kind(mut self, kind: &'static str) -> OAuth2Source {
        self.kind = kind;
        self
    }

    /// An error of this source, naming the credential and the source kind.
    pub(crate) fn error(&self, message: impl Into<String>) -> CredentialError {
        CredentialError::Source {
            credential: self.credential.clone(),
            source_kind: self.kind,
            message: message.into(),
        }
    }

    /// The token and revocation endpoints: configured, or discovered once.
    /// A failed discovery is not remembered, so the next fetch tries again.
    async fn endpoints(&self) -> Result<Discovered, CredentialError> {
        match &self.endpoints {
            Endpoints::Fixed { token, revocation } => Ok(Discovered {
                token: token.clone(),
                revocation: revocation.clone(),
            }),
            Endpoints::Issuer {
                issuer,
                revocation,
                discovered,
            } => {
                let mut found = discovered
                    .get_or_try_init(|| self.discover(issuer))
                    .await?
                    .clone();
                if revocation.is_some() {
                    found.revocation = revocation.clone();
                }
                Ok(found)
            }
        }
    }

    /// Reads the issuer's metadata: OpenID Connect discovery first, then
    /// RFC 8414 authorization server metadata when the former is not found.
    async fn discover(&self, issuer: &str) -> Result<Discovered, CredentialError> {
        let trimmed = issuer.trim_end_matches('/');
        let openid = format!("{trimmed}/.well-known/openid-configuration");
        // RFC 8414 §3.1: the well-known segment goes between host and path.
        let rfc8414 = match trimmed.split_once("://") {
            Some((scheme, rest)) => {
                let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                format!("{scheme}://{host}/.well-known/oauth-authorization-server{path}")
            }
            None => return Err(self.error(format!("issuer {issuer} is not a URL"))),
        };
        let mut tried = Vec::new();
        for url in [openid, rfc8414] {
            let uri = check_url(&url).map_err(|m| self.error(format!("discovery: {m}")))?;
            let answer = self
                .http
                .get_json(&uri)
                .await
                .map_err(|e| self.error(format!("discovery: {e}")))?;
            if answer.status == StatusCode::NOT_FOUND {
                tried.push(url);
                continue;
            }
            if !answer.status.is_success() {
                return Err(self.error(format!("discovery: {url} answered {}", answer.status)));
            }
            return self.parse_metadata(issuer, &url, &answer);
        }
        Err(self.error(format!(
            "discovery: no metadata for issuer {issuer} (not found at {})",
            tried.join(" nor ")
        )))
    }

    fn parse_metadata(
        &self,
        issuer: &str,
        url: &str,
        answer: &HttpAnswer,
    ) -> Result<Discovered, CredentialError> {
        #[derive(Deserialize)]
        struct Metadata {
            issuer: Option<String>,
            token_endpoint: Option<String>,
            revocation_endpoint: Option<String>,
        }
        let metadata: Metadata = serde_json::from_slice(&answer.body)
            .map_err(|e| self.error(format!("discovery: {url} is not metadata JSON: {e}")))?;
        // RFC 8414 §3.3 / OpenID Discovery §4.3: the document must be for
        // the issuer asked about, or an attacker's metadata could redirect
        // the client secret elsewhere.
        if metadata.issuer.as_deref().map(|i| i.trim_end_matches('/'))
            != Some(issuer.trim_end_matches('/'))
        {
            return Err(self.error(format!(
                "discovery: {url} describes issuer {:?}, not {issuer}",
                metadata.issuer.unwrap_or_default()
            )));
        }
        let token = metadata
            .token_endpoint
            .ok_or_else(|| self.error(format!("discovery: {url} names no token_endpoint")))?;
        let token = check_url(&token)
            .map_err(|m| self.error(format!("discovery: token_endpoint from {url}: {m}")))?;
        let revocation = metadata
            .revocation_endpoint
            .map(|r| check_url(&r))
            .transpose()
            .map_err(|m| self.error(format!("discovery: revocation_endpoint from {url}: {m}")))?;
        Ok(Discovered { token, revocation })
    }

    /// Adds the client authentication to `form`, or returns the
    /// `Authorization` header value for Basic.
    fn authenticate(
        &self,
        form: &mut Form,
        audience: &str,
    ) -> Result<Option<String>, CredentialError> {
        match &self.auth {
            ClientAuth::Basic(secret) => {
                let secret = secret
                    .expose_str()
                    .ok_or_else(|| self.error("the client secret is not UTF-8"))?;
                // RFC 6749 §2.3.1: both parts are form-encoded before Basic.
                let pair = format!("{}:{}", encode(&self.client_id), encode(secret));
                Ok(Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )))
            }
            ClientAuth::Post(secret) => {
                let secret = secret
                    .expose_str()
                    .ok_or_else(|| self.error("the client secret is not UTF-8"))?;
                form.add("client_id", &self.client_id);
                form.add("client_secret", secret);
                Ok(None)
            }
            ClientAuth::PrivateKeyJwt(key) => {
                let jwt = key
                    .sign(&self.client_id, audience, SystemTime::now())
                    .map_err(|e| self.error(format!("signing the client assertion failed: {e}")))?;
                form.add("client_id", &self.client_id);
                form.add(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                );
                form.add("client_assertion", jwt.expose_str().unwrap_or_default());
                Ok(None)
            }
        }
    }

    /// The client assertion's audience: the issuer when known (what
    /// RFC 7523bis asks for), else the token endpoint (what RFC 7523 did).
    fn assertion_audience(&self, token: &Uri) -> String {
        match &self.endpoints {
            Endpoints::Issuer { issuer, .. } => issuer.clone(),
            Endpoints::Fixed { .. } => token.to_string(),
        }
    }

    /// POSTs `grant_type` with `fields` (none of them the client
    /// authentication, which is added here) to the token endpoint, followed
    /// by the configured `scope`, `audience` and `resource`. Returns the
    /// token endpoint and the body of a successful answer; a refusal is an
    /// error naming the status and the OAuth error code only.
    pub(crate) async fn token_request(
        &self,
        grant_type: &str,
        fields: &[(&str, &str)],
    ) -> Result<(Uri, zeroize::Zeroizing<Vec<u8>>), CredentialError> {
        let endpoints = self.endpoints().await?;
        let mut form = Form::default();
        form.add("grant_type", grant_type);
        for (name, value) in fields {
            form.add(name, value);
        }
        if !self.scope.is_empty() {
            form.add("scope", &self.scope.join(" "));
        }
        if let Some(audience) = &self.audience {
            form.add("audience", audience);
        }
        if let Some(resource) = &self.resource {
            form.add("resource", resource);
        }
        let authorization =
            self.authenticate(&mut form, &self.assertion_audience(&endpoints.token))?;
        let answer = self
            .http
            .post_form(&endpoints.token, form.0, authorization)
            .await
            .map_err(|e| self.error(e))?;
        let url = endpoints.token;
        if !answer.status.is_success() {
            return Err(self.error(format!(
                "token request to {url} was refused: {}{}",
                answer.status,
                oauth_error(&answer.body)
            )));
        }
        Ok((url, answer.body))
    }

    /// The scopes every token must be granted exactly.
    pub(crate) fn scope(&self) -> &[String] {
        &self.scope
    }

    async fn mint(&self) -> Result<Credential, CredentialError> {
        let (url, body) = self.token_request("client_credentials", &[]).await?;
        let granted = check_token_response(&body, &self.scope)
            .map_err(|problem| self.error(format!("token response from {url}: {problem}")))?;
        let expires_at = SystemTime::now() + granted.ttl;
        Ok(Credential {
            name: self.credential.clone(),
            id: crate::credential::new_credential_id(),
            source: KIND,
            value: CredentialValue::Token(granted.token),
            expires_at: Some(expires_at),
            standing: false,
            renewed: None,
        })
    }

    /// Revokes a token this client obtained (RFC 7009), when the server has
    /// a revocation endpoint; `Revoked` only on the server's 200.
    pub(crate) async fn revoke_token(
        &self,
        credential: &Credential,
    ) -> Result<Revocation, CredentialError> {
        let CredentialValue::Token(token) = &credential.value else {
            return Ok(Revocation::NotSupported);
        };
        let endpoints = self.endpoints().await?;
        let Some(url) = endpoints.revocation else {
            return Ok(Revocation::NotSupported);
        };
        let mut form = Form::default();
        form.add(
            "token",
            token
                .expose_str()
                .ok_or_else(|| self.error("the token is not UTF-8"))?,
        );
        form.add("token_type_hint", "access_token");
        let authorization =
            self.authenticate(&mut form, &self.assertion_audience(&endpoints.token))?;
        let answer = self
            .http
            .post_form(&url, form.0, authorization)
            .await
            .map_err(|e| self.error(format!("revocation: {e}")))?;
        // RFC 7009 §2.2: 200 means revoked (or already invalid).
        if answer.status == StatusCode::OK {
            Ok(Revocation::Revoked)
        } else {
            Err(self.error(format!(
                "revocation at {url} was refused: {}{}",
                answer.status,
                oauth_error(&answer.body)
            )))
        }
    }
}

/// `: error <code>` from an RFC 6749 §5.2 error body, or nothing. Only the
/// error code is kept: a description is the server's free text and may
/// echo what was sent.
fn oauth_error(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Option<String>,
    }
    let code = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.error)
        .filter(|code| {
            code.len() <= 64
                && code
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        });
    match code {
        Some(code) => format!(" (error {code})"),
        None => String::new(),
    }
}

/// An accepted token response.
#[derive(Debug)]
pub(crate) struct Granted {
    /// The access token.
    pub(crate) token: Secret,
    /// How long it lives, from `expires_in`.
    pub(crate) ttl: Duration,
}

/// Checks a token response (RFC 6749 §5.1) against what was asked for.
/// Messages never contain the token.
pub(crate) fn check_token_response(body: &[u8], asked: &[String]) -> Result<Granted, String> {
    #[derive(Deserialize)]
    struct TokenResponse {
        access_token: Option<String>,
        token_type: Option<String>,
        expires_in: Option<serde_json::Value>,
        scope: Option<String>,
    }
    let response: TokenResponse = serde_json::from_slice(body).map_err(|e| {
        format!(
            "not a JSON token response ({} at line {} column {})",
            format!("{:?}", e.classify()).to_lowercase(),
            e.line(),
            e.column()
        )
    })?;
    let token = match response.access_token {
        Some(token) if !token.is_empty() => Secret::new(token),
        _ => return Err("no access_token".into()),
    };
    match response.token_type.as_deref() {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(t) => {
            let shown: String = t
                .chars()
                .take(32)
                .filter(|c| c.is_ascii_graphic())
                .collect();
            return Err(format!("token_type {shown:?} is not Bearer"));
        }
        None => return Err("no token_type".into()),
    }
    let ttl = match response.expires_in {
        None => DEFAULT_TOKEN_TTL,
        Some(value) => {
            let seconds = value
                .as_u64()
                .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                .ok_or("expires_in is not a whole number of seconds")?;
            if seconds == 0 {
                return Err("expires_in is 0: the token is already expired".into());
            }
            Duration::from_secs(seconds)
        }
    };
    let asked: BTreeSet<&str> = asked.iter().map(String::as_str).collect();
    let granted: Option<BTreeSet<&str>> = response
        .scope
        .as_deref()
        .map(|s| s.split(' ').filter(|s| !s.is_empty()).collect());
    match granted {
        // RFC 6749 §5.1 lets a server omit `scope` when it is what was
        // asked; a server that drops every scope omits it too, so when
        // scopes were asked the response must say what it granted.
        None if !asked.is_empty() => {
            return Err(format!(
                "it does not say which scope was granted (asked for {})",
                join(&asked)
            ))
        }
        None => {}
        Some(granted) => {
            let missing: BTreeSet<&str> = asked.difference(&granted).copied().collect();
            let extra: BTreeSet<&str> = granted.difference(&asked).copied().collect();
            if !missing.is_empty() {
                return Err(format!(
                    "scope {} was not granted (asked for {}, granted {:?})",
                    join(&missing),
                    join(&asked),
                    join(&granted)
                ));
            }
            if !extra.is_empty() {
                return Err(format!(
                    "scope {} was granted but not asked for: the token would be wider than configured",
                    join(&extra)
                ));
            }
        }
    }
    Ok(Granted { token, ttl })
}

fn join(scopes: &BTreeSet<&str>) -> String {
    scopes.iter().copied().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validation and building in one step, as loading does.
    fn compile(
        name: &str,
        raw: &RawOAuth2ClientCredentials,
        env: &dyn Provider,
    ) -> Result<OAuth2Source, Vec<FieldError>> {
        validate(name, raw, env)?.source(env)
    }
    use std::collections::BTreeMap;

    fn asked(scopes: &[&str]) -> Vec<String> {
        scopes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_complete_response_is_accepted() {
        let body = br#"{"access_token":"test-secret-tok","token_type":"bearer","expires_in":600,"scope":"b a"}"#;
        let granted = check_token_response(body, &asked(&["a", "b"])).unwrap();
        assert_eq!(granted.token.expose(), b"test-secret-tok");
        assert_eq!(granted.ttl, Duration::from_secs(600));
    }

    #[test]
    fn no_expires_in_means_a_short_life() {
        let body = br#"{"access_token":"test-secret-tok","token_type":"Bearer","expires_in":"60"}"#;
        assert_eq!(
            check_token_response(body, &[]).unwrap().ttl,
            Duration::from_secs(60)
        );
        let body = br#"{"access_token":"test-secret-tok","token_type":"Bearer"}"#;
        assert_eq!(
            check_token_response(body, &[]).unwrap().ttl,
            DEFAULT_TOKEN_TTL
        );
        let body = br#"{"access_token":"test-secret-tok","token_type":"Bearer","expires_in":0}"#;
        assert!(check_token_response(body, &[]).is_err());
    }

    #[test]
    fn dropped_added_or_unstated_scopes_are_refused_without_the_token() {
        let cases: [(&[u8], &str); 5] = [
            (
                br#"{"access_token":"test-secret-tok","token_type":"Bearer","scope":"a"}"#,
                "scope b was not granted",
            ),
            (
                br#"{"access_token":"test-secret-tok","token_type":"Bearer","scope":"a b c"}"#,
                "scope c was granted but not asked for",
            ),
            (
                br#"{"access_token":"test-secret-tok","token_type":"Bearer"}"#,
                "does not say which scope",
            ),
            (
                br#"{"access_token":"test-secret-tok","token_type":"Bearer","scope":""}"#,
                "scope a b was not granted",
            ),
            (
                br#"{"access_token":"test-secret-tok","token_type":"mac","scope":"a b"}"#,
                "is not Bearer",
            ),
        ];
        for (body, expected) in cases {
            let err = check_token_response(body, &asked(&["a", "b"])).unwrap_err();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("test-secret"), "{err}");
        }
        let wider = br#"{"access_token":"test-secret-tok","token_type":"Bearer","scope":"admin"}"#;
        assert!(check_token_response(wider, &[]).is_err());
        let broken = br#"{"access_token":"test-secret-tok","#;
        let err = check_token_response(broken, &[]).unwrap_err();
        assert!(!err.contains("test-secret"), "{err}");
    }

    #[test]
    fn oauth_errors_keep_only_a_plain_code() {
        assert_eq!(
            oauth_error(br#"{"error":"invalid_scope","error_description":"x test-secret"}"#),
            " (error invalid_scope)"
        );
        assert_eq!(oauth_error(br#"{"error":"a b test-secret"}"#), "");
        assert_eq!(oauth_error(b"<html>"), "");
    }

    #[test]
    fn form_encoding_escapes_everything_reserved() {
        let mut form = Form::default();
        form.add("scope", "a b");
        form.add("resource", "https://r.test/x?y=1&z");
        assert_eq!(
            form.0,
            "scope=a%20b&resource=https%3A%2F%2Fr.test%2Fx%3Fy%3D1%26z"
        );
    }

    fn raw(yaml: &str) -> RawOAuth2ClientCredentials {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn env() -> BTreeMap<String, String> {
        [("IDP_SECRET".to_string(), "test-secret-idp".to_string())].into()
    }

    fn paths(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(|e| e.path.clone()).collect()
    }

    #[test]
    fn compile_reports_every_problem_with_its_field() {
        let errors = compile(
            "reports",
            &raw(
                "{ token_url: 'http://idp.test/token', issuer: 'https://idp.test', client_id: '', \
                  client_auth: private_key_jwt, client_secret: { env: IDP_SECRET }, \
                  scope: ['a b'], resource: 'reports', timeout: 0s }",
            ),
            &env(),
        )
        .err()
        .unwrap();
        assert_eq!(
            paths(&errors),
            [
                "token_url",
                "",
                "client_id",
                "scope[0]",
                "resource",
                "client_secret",
                "private_key",
                "timeout"
            ]
        );
        let shown = format!("{errors:?}");
        assert!(!shown.contains("test-secret"), "{shown}");
    }

    #[test]
    fn compile_resolves_the_secret_now() {
        let errors = compile(
            "reports",
            &raw("{ token_url: 'https://idp.test/token', client_id: c, client_secret: { env: NOT_SET } }"),
            &env(),
        )
        .err()
        .unwrap();
        assert_eq!(paths(&errors), ["client_secret"]);
        assert!(errors[0].message.contains("NOT_SET"));
        let source = compile(
            "reports",
            &raw(
                "{ issuer: 'https://idp.test', client_id: c, client_auth: client_secret_post, \
                  client_secret: { env: IDP_SECRET }, scope: [reports.read] }",
            ),
            &env(),
        )
        .map_err(|e| format!("{e:?}"))
        .unwrap();
        assert_eq!(source.kind(), KIND);
        assert!(serde_yaml::from_str::<RawOAuth2ClientCredentials>(
            "{ token_url: 'https://idp.test/token', client_id: c, client_auth: tls_client_auth }"
        )
        .is_err());
        assert!(serde_yaml::from_str::<RawOAuth2ClientCredentials>(
            "{ token_url: 'https://idp.test/token', client_id: c, grant: x }"
        )
        .is_err());
    }
}
