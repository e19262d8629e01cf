//! The `oauth2_token_exchange` source: an access token obtained per task by
//! OAuth 2.0 Token Exchange (RFC 8693), trading a *subject token* for a
//! token narrowed by `audience`, `resource` and `scope`, and revoked at task
//! end through the server's revocation endpoint (RFC 7009).
//!
//! ```yaml
//! credentials:
//!   reports-obo:
//!     oauth2_token_exchange:
//!       token_url: https://idp.example/oauth2/token   # or issuer: (discovery)
//!       client_id: credgate
//!       client_secret: { env: IDP_CLIENT_SECRET }
//!       subject_token:                                # exactly one
//!         file: /var/run/secrets/tokens/agent-token   # re-read on every exchange
//!         # credgate: { audience: https://idp.example, ttl: 5m, issuer: credgate }
//!       audience: https://reports.example
//!       scope: [reports.read]
//! ```
//!
//! The subject token is either a file (a projected service-account token or
//! a JWT-SVID that something else keeps fresh), or a JWT credgate signs for
//! the task ([`crate::credential::task_jwt`]): `sub` is the agent, and the
//! task id and labels are claims, so the identity provider can issue a token
//! on behalf of exactly this task. The talking to the authorization server
//! (client authentication, discovery, scope checks, revocation) is the
//! `oauth2_client_credentials` source's; this source adds the grant and
//! checks that `issued_token_type` is the type asked for.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::credential::oauth2::{
    self, check_token_response, ClientAuthMethod, OAuth2Source, OAuth2Spec,
    RawOAuth2ClientCredentials,
};
use crate::credential::spec::SourceSpec;
use crate::credential::task_jwt::{self, TaskClaims};
use crate::credential::{
    Credential, CredentialError, CredentialSource, CredentialValue, FetchContext, Revocation,
};
use crate::field::FieldError;
use crate::provider::Provider;
use crate::secret::{Secret, SecretRef};
use crate::units::parse_duration;

/// The source kind, as written in config and records.
pub const KIND: &str = "oauth2_token_exchange";

/// The RFC 8693 grant type.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The subject token type when none is configured.
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The requested token type when none is configured.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The life of a credgate-signed subject token when `ttl` is not given:
/// it is only needed for the exchange itself.
pub const DEFAULT_SUBJECT_TTL: Duration = Duration::from_secs(300);

/// The most a subject token file may hold.
const MAX_SUBJECT_TOKEN_BYTES: u64 = 64 * 1024;

/// `oauth2_token_exchange` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenExchange {
    /// The token endpoint. Exactly one of `token_url` and `issuer`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The issuer, whose metadata names the token and revocation endpoints.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The client id credgate exchanges as.
    pub client_id: String,
    /// How credgate authenticates as the client (`client_secret_basic` when absent).
    #[serde(default)]
    pub client_auth: ClientAuthMethod,
    /// The client secret, for `client_secret_basic` and `client_secret_post`.
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// The PEM private key, for `private_key_jwt`.
    #[serde(default)]
    pub private_key: Option<SecretRef>,
    /// What is exchanged: a file, or a JWT credgate signs for the task.
    pub subject_token: RawSubjectToken,
    /// The type of the subject token (`…:token-type:jwt` when absent).
    #[serde(default)]
    pub subject_token_type: Option<String>,
    /// The type asked for (`…:token-type:access_token` when absent); the
    /// answer's `issued_token_type` must be the same.
    #[serde(default)]
    pub requested_token_type: Option<String>,
    /// The `audience` of the issued token.
    #[serde(default)]
    pub audience: Option<String>,
    /// The RFC 8707 resource indicator of the issued token.
    #[serde(default)]
    pub resource: Option<String>,
    /// The scopes to ask for; every one must be granted, and no other.
    #[serde(default)]
    pub scope: Vec<String>,
    /// The RFC 7009 revocation endpoint, when discovery does not name one.
    #[serde(default)]
    pub revocation_url: Option<String>,
    /// A PEM bundle of extra CAs to trust for the authorization server.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The bound of each call to the server (`10s` when absent).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `subject_token:` — exactly one of its keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubjectToken {
    /// A file holding the token, re-read on every exchange.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// A JWT credgate signs for the task.
    #[serde(default)]
    pub credgate: Option<RawCredgateSubject>,
}

/// `subject_token.credgate`: how credgate signs the subject token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredgateSubject {
    /// The `aud` claim: the identity provider that verifies it.
    pub audience: String,
    /// How long the token is valid (`5m` when absent; never past the task's end).
    #[serde(default)]
    pub ttl: Option<String>,
    /// The `iss` claim (`credgate` when absent); the identity provider
    /// maps it to credgate's JWKS (`GET /v1/jwks` on the admin API).
    #[serde(default)]
    pub issuer: Option<String>,
}

/// Where the subject token comes from, validated.
#[derive(Debug, Clone)]
enum SubjectToken {
    File(PathBuf),
    Credgate {
        audience: String,
        ttl: Duration,
        issuer: String,
    },
}

/// Exchanges a subject token for a task's access token.
pub struct TokenExchangeSource {
    credential: String,
    client: OAuth2Source,
    subject: SubjectToken,
    subject_token_type: String,
    requested_token_type: String,
}

/// `oauth2_token_exchange`, validated.
#[derive(Debug, Clone)]
pub struct TokenExchangeSpec {
    credential: String,
    client: OAuth2Spec,
    subject: SubjectToken,
    subject_token_type: String,
    requested_token_type: String,
}

impl SourceSpec for TokenExchangeSpec {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, provider: &dyn Provider) -> Result<Arc<dyn CredentialSource>, Vec<FieldError>> {
        Ok(Arc::new(self.source(provider)?))
    }
}

impl TokenExchangeSpec {
    fn source(&self, provider: &dyn Provider) -> Result<TokenExchangeSource, Vec<FieldError>> {
        Ok(TokenExchangeSource {
            credential: self.credential.clone(),
            client: self.client.source(provider)?.with_kind(KIND),
            subject: self.subject.clone(),
            subject_token_type: self.subject_token_type.clone(),
            requested_token_type: self.requested_token_type.clone(),
        })
    }
}

/// Validates the configuration: everything `oauth2_client_credentials`
/// checks (endpoints, client authentication, scope, audience, resource,
/// `ca`, `timeout`), plus exactly one subject token, a readable subject
/// token file, a working signer, and token types that are URIs. Every
/// problem is reported, each with its field path.
pub fn validate(
    name: &str,
    raw: &RawTokenExchange,
    env: &dyn Provider,
) -> Result<TokenExchangeSpec, Vec<FieldError>> {
    let mut errors = Vec::new();
    let client_raw = RawOAuth2ClientCredentials {
        token_url: raw.token_url.clone(),
        issuer: raw.issuer.clone(),
        client_id: raw.client_id.clone(),
        client_auth: raw.client_auth,
        client_secret: raw.client_secret.clone(),
        private_key: raw.private_key.clone(),
        scope: raw.scope.clone(),
        audience: raw.audience.clone(),
        resource: raw.resource.clone(),
        revocation_url: raw.revocation_url.clone(),
        ca: raw.ca.clone(),
        timeout: raw.timeout.clone(),
    };
    // Same field names, so the paths need no translation.
    let client = oauth2::validate(name, &client_raw, env)
        .map_err(|errs| errors.extend(errs))
        .ok();
    let subject = validate_subject(&raw.subject_token, env, &mut errors);
    let mut token_type = |field: &str, value: &Option<String>, default: &str| {
        let value = value.clone().unwrap_or_else(|| default.to_string());
        let plain = value.contains(':') && value.bytes().all(|b| b.is_ascii_graphic());
        if !plain {
            errors.push(FieldError::new(
                field,
                "must be a token type URI (e.g. urn:ietf:params:oauth:token-type:jwt)",
            ));
        }
        value
    };
    let subject_token_type = token_type(
        "subject_token_type",
        &raw.subject_token_type,
        TOKEN_TYPE_JWT,
    );
    let requested_token_type = token_type(
        "requested_token_type",
        &raw.requested_token_type,
        TOKEN_TYPE_ACCESS_TOKEN,
    );
    match (client, subject) {
        (Some(client), Some(subject)) if errors.is_empty() => Ok(TokenExchangeSpec {
            credential: name.to_string(),
            client,
            subject,
            subject_token_type,
            requested_token_type,
        }),
        _ => Err(errors),
    }
}

fn validate_subject(
    raw: &RawSubjectToken,
    env: &dyn Provider,
    errors: &mut Vec<FieldError>,
) -> Option<SubjectToken> {
    match (&raw.file, &raw.credgate) {
        (Some(path), None) => match env.metadata(path) {
            Ok(meta) if meta.is_file => Some(SubjectToken::File(path.clone())),
            Ok(_) => {
                errors.push(FieldError::new(
                    "subject_token.file",
                    format!("{} is not a file", path.display()),
                ));
                None
            }
            Err(e) => {
                errors.push(FieldError::new(
                    "subject_token.file",
                    format!("{}: {e}", path.display()),
                ));
                None
            }
        },
        (None, Some(credgate)) => {
            let mut ok = true;
            if credgate.audience.is_empty() {
                errors.push(FieldError::new(
                    "subject_token.credgate.audience",
                    "must not be empty",
                ));
                ok = false;
            }
            let issuer = credgate
                .issuer
                .clone()
                .unwrap_or_else(|| "credgate".to_string());
            if issuer.is_empty() {
                errors.push(FieldError::new(
                    "subject_token.credgate.issuer",
                    "must not be empty when given",
                ));
                ok = false;
            }
            let ttl = match credgate.ttl.as_deref().map(parse_duration) {
                None => DEFAULT_SUBJECT_TTL,
                Some(Ok(t)) if t >= Duration::from_secs(1) => t,
                Some(Ok(_)) => {
                    errors.push(FieldError::new(
                        "subject_token.credgate.ttl",
                        "must be at least 1s",
                    ));
                    ok = false;
                    DEFAULT_SUBJECT_TTL
                }
                Some(Err(message)) => {
                    errors.push(FieldError::new("subject_token.credgate.ttl", message));
                    ok = false;
                    DEFAULT_SUBJECT_TTL
                }
            };
            if let Err(message) = task_jwt::signer() {
                errors.push(FieldError::new("subject_token.credgate", message));
                ok = false;
            }
            ok.then(|| SubjectToken::Credgate {
                audience: credgate.audience.clone(),
                ttl,
                issuer,
            })
        }
        _ => {
            errors.push(FieldError::new(
                "subject_token",
                "give exactly one of file and credgate",
            ));
            None
        }
    }
}

impl CredentialSource for TokenExchangeSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn fetch<'a>(
        &'a self,
        ctx: &'a FetchContext,
    ) -> crate::BoxFuture<'a, Result<Credential, CredentialError>> {
        Box::pin(self.exchange(ctx))
    }

    fn revoke<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> crate::BoxFuture<'a, Result<Revocation, CredentialError>> {
        Box::pin(self.client.revoke_token(credential))
    }
}

impl TokenExchangeSource {
    /// The subject token for the task in `ctx`: the file's current content,
    /// or a JWT signed now. Errors never contain the token.
    async fn subject_token(&self, ctx: &FetchContext) -> Result<Secret, CredentialError> {
        match &self.subject {
            SubjectToken::File(path) => {
                let shown = path.display();
                let read = async {
                    use tokio::io::AsyncReadExt;
                    let file = tokio::fs::File::open(path).await?;
                    let mut bytes = Vec::new();
                    file.take(MAX_SUBJECT_TOKEN_BYTES + 1)
                        .read_to_end(&mut bytes)
                        .await?;
                    Ok::<_, std::io::Error>(bytes)
                };
                let mut bytes = read.await.map_err(|e| {
                    self.client
                        .error(format!("reading the subject token {shown} failed: {e}"))
                })?;
                if bytes.len() as u64 > MAX_SUBJECT_TOKEN_BYTES {
                    return Err(self.client.error(format!(
                        "the subject token {shown} is larger than {MAX_SUBJECT_TOKEN_BYTES} bytes"
                    )));
                }
                let end = bytes.trim_ascii_end().len();
                bytes.truncate(end);
                let token = Secret::new(bytes);
                match token.expose_str() {
                    Some(text) if !text.is_empty() && !text.contains(char::is_whitespace) => {
                        Ok(token)
                    }
                    _ => Err(self.client.error(format!(
                        "the subject token {shown} is empty or not a single token"
                    ))),
                }
            }
            SubjectToken::Credgate {
                audience,
                ttl,
                issuer,
            } => {
                let signer = task_jwt::signer().map_err(|e| self.client.error(e))?;
                let claims = TaskClaims {
                    issuer,
                    agent: &ctx.agent,
                    audience,
                    task_id: &ctx.task_id,
                    labels: &ctx.labels,
                    ttl: *ttl,
                    task_expires_at: ctx.task_expires_at,
                };
                signer
                    .sign(&claims, SystemTime::now())
                    .map(|(token, _)| token)
                    .map_err(|e| self.client.error(format!("subject token: {e}")))
            }
        }
    }

    async fn exchange(&self, ctx: &FetchContext) -> Result<Credential, CredentialError> {
        let subject = self.subject_token(ctx).await?;
        let subject_text = subject
            .expose_str()
            .ok_or_else(|| self.client.error("the subject token is not UTF-8"))?;
        let (url, body) = self
            .client
            .token_request(
                GRANT_TYPE,
                &[
                    ("subject_token", subject_text),
                    ("subject_token_type", &self.subject_token_type),
                    ("requested_token_type", &self.requested_token_type),
                ],
            )
            .await?;
        let granted = check_exchange_response(&body, &self.requested_token_type)
            .and_then(|body| check_token_response(&body, self.client.scope()))
            .map_err(|problem| {
                self.client
                    .error(format!("token exchange response from {url}: {problem}"))
            })?;
        Ok(Credential {
            name: self.credential.clone(),
            id: crate::credential::new_credential_id(),
            source: KIND,
            value: CredentialValue::Token(granted.token),
            expires_at: Some(SystemTime::now() + granted.ttl),
            standing: false,
            renewed: None,
        })
    }
}

/// Checks what RFC 8693 §2.2.1 adds to a token response: `issued_token_type`
/// must be present and the type asked for. A token that is not an access
/// token comes with `token_type` `N_A`; it is injected as a bearer value
/// like any other, so the rest of the response is checked as Bearer.
/// Returns the body to check as an RFC 6749 token response. Messages never
/// contain the token.
fn check_exchange_response(body: &[u8], requested: &str) -> Result<Vec<u8>, String> {
    let mut response: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| {
            format!(
                "not a JSON token response ({} at line {} column {})",
                format!("{:?}", e.classify()).to_lowercase(),
                e.line(),
                e.column()
            )
        })?;
    let shown = |t: &str| -> String {
        t.chars()
            .take(96)
            .filter(|c| c.is_ascii_graphic())
            .collect()
    };
    match response.get("issued_token_type").and_then(|v| v.as_str()) {
        Some(issued) if issued == requested => {}
        Some(issued) => {
            return Err(format!(
                "issued_token_type {:?} is not the requested {requested}",
                shown(issued)
            ))
        }
        None => return Err("no issued_token_type (RFC 8693 §2.2.1)".into()),
    }
    let not_applicable = response
        .get("token_type")
        .and_then(|v| v.as_str())
        .is_some_and(|t| t.eq_ignore_ascii_case("n_a"));
    if not_applicable && requested != TOKEN_TYPE_ACCESS_TOKEN {
        response.insert("token_type".into(), "Bearer".into());
    }
    serde_json::to_vec(&response).map_err(|e| format!("re-reading the response failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validation and building in one step, as loading does.
    fn compile(
        name: &str,
        raw: &RawTokenExchange,
        env: &dyn Provider,
    ) -> Result<TokenExchangeSource, Vec<FieldError>> {
        validate(name, raw, env)?.source(env)
    }
    use std::collections::BTreeMap;

    fn raw(yaml: &str) -> RawTokenExchange {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn env() -> BTreeMap<String, String> {
        [("IDP_SECRET".to_string(), "test-secret-idp".to_string())].into()
    }

    fn paths(errors: &[FieldError]) -> Vec<String> {
        errors.iter().map(|e| e.path.clone()).collect()
    }

    #[test]
    fn issued_token_type_must_be_the_requested_one() {
        let ok = br#"{"access_token":"test-secret-tok","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#;
        let body = check_exchange_response(ok, TOKEN_TYPE_ACCESS_TOKEN).unwrap();
        assert!(check_token_response(&body, &[]).is_ok());

        let other = br#"{"access_token":"test-secret-tok","token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:refresh_token"}"#;
        let err = check_exchange_response(other, TOKEN_TYPE_ACCESS_TOKEN).unwrap_err();
        assert!(err.contains("token-type:refresh_token"), "{err}");
        assert!(!err.contains("test-secret"), "{err}");

        let none = br#"{"access_token":"test-secret-tok","token_type":"Bearer"}"#;
        let err = check_exchange_response(none, TOKEN_TYPE_ACCESS_TOKEN).unwrap_err();
        assert!(err.contains("no issued_token_type"), "{err}");

        let broken = br#"{"access_token":"test-secret-tok","#;
        let err = check_exchange_response(broken, TOKEN_TYPE_ACCESS_TOKEN).unwrap_err();
        assert!(!err.contains("test-secret"), "{err}");
    }

    #[test]
    fn a_jwt_with_token_type_n_a_is_accepted_only_when_no_access_token_was_asked() {
        let body = br#"{"access_token":"test-secret-tok","token_type":"N_A","issued_token_type":"urn:ietf:params:oauth:token-type:jwt"}"#;
        let checked = check_exchange_response(body, TOKEN_TYPE_JWT).unwrap();
        assert!(check_token_response(&checked, &[]).is_ok());
        let body = br#"{"access_token":"test-secret-tok","token_type":"N_A","issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}"#;
        let checked = check_exchange_response(body, TOKEN_TYPE_ACCESS_TOKEN).unwrap();
        assert!(check_token_response(&checked, &[]).is_err());
    }

    #[test]
    fn compile_reports_every_problem_with_its_field() {
        let errors = compile(
            "obo",
            &raw("{ token_url: 'http://idp.test/token', client_id: c, \
                  client_secret: { env: IDP_SECRET }, \
                  subject_token: { file: /nonexistent/token, credgate: { audience: x } }, \
                  subject_token_type: 'jwt', scope: ['a b'] }"),
            &env(),
        )
        .err()
        .unwrap();
        assert_eq!(
            paths(&errors),
            [
                "token_url",
                "scope[0]",
                "subject_token",
                "subject_token_type"
            ]
        );
        let errors = compile(
            "obo",
            &raw("{ token_url: 'https://idp.test/token', client_id: c, \
                  client_secret: { env: IDP_SECRET }, \
                  subject_token: { file: /nonexistent/token } }"),
            &env(),
        )
        .err()
        .unwrap();
        assert_eq!(paths(&errors), ["subject_token.file"]);
        let errors = compile(
            "obo",
            &raw(
                "{ issuer: 'https://idp.test', client_id: c, client_secret: { env: IDP_SECRET }, \
                  subject_token: { credgate: { audience: '', ttl: 0s } } }",
            ),
            &env(),
        )
        .err()
        .unwrap();
        assert_eq!(
            paths(&errors),
            [
                "subject_token.credgate.audience",
                "subject_token.credgate.ttl"
            ]
        );
        assert!(!format!("{errors:?}").contains("test-secret"));
    }

    #[test]
    fn compile_accepts_a_credgate_signed_subject() {
        let source = compile(
            "obo",
            &raw(
                "{ issuer: 'https://idp.test', client_id: c, client_secret: { env: IDP_SECRET }, \
                  subject_token: { credgate: { audience: 'https://idp.test', ttl: 2m } }, \
                  audience: 'https://reports.test', scope: [reports.read] }",
            ),
            &env(),
        )
        .map_err(|e| format!("{e:?}"))
        .unwrap();
        assert_eq!(source.kind(), KIND);
        assert_eq!(source.requested_token_type, TOKEN_TYPE_ACCESS_TOKEN);
        assert_eq!(source.subject_token_type, TOKEN_TYPE_JWT);
        assert!(serde_yaml::from_str::<RawTokenExchange>(
            "{ token_url: 'https://idp.test/token', client_id: c, subject_token: { env: X } }"
        )
        .is_err());
    }
}
