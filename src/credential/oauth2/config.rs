//! `oauth2_client_credentials` as written in the configuration, its
//! validation into an [`OAuth2Spec`], and the building of an [`OAuth2Source`].

use std::sync::Arc;

use super::*;
use crate::credential::spec::{resolve, source_tls, SourceSpec};

/// `oauth2_client_credentials` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2ClientCredentials {
    /// The token endpoint. Exactly one of `token_url` and `issuer`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The issuer, whose metadata (OpenID discovery, else RFC 8414) names
    /// the token and revocation endpoints.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The client id registered at the authorization server.
    pub client_id: String,
    /// How credgate authenticates as the client (`client_secret_basic` when absent).
    #[serde(default)]
    pub client_auth: ClientAuthMethod,
    /// The client secret, for `client_secret_basic` and `client_secret_post`.
    #[serde(default)]
    pub client_secret: Option<SecretRef>,
    /// The PEM private key (RSA → RS256, P-256 EC → ES256), for `private_key_jwt`.
    #[serde(default)]
    pub private_key: Option<SecretRef>,
    /// The scopes to ask for; every one must be granted.
    #[serde(default)]
    pub scope: Vec<String>,
    /// The `audience` parameter some servers use to pick the API.
    #[serde(default)]
    pub audience: Option<String>,
    /// The RFC 8707 resource indicator: the API the token is for.
    #[serde(default)]
    pub resource: Option<String>,
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

/// How the client authenticates at the token and revocation endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523).
    PrivateKeyJwt,
}

/// `oauth2_client_credentials`, validated.
#[derive(Debug, Clone)]
pub struct OAuth2Spec {
    credential: String,
    client_id: String,
    auth: AuthSpec,
    scope: Vec<String>,
    audience: Option<String>,
    resource: Option<String>,
    endpoints: EndpointSpec,
    ca: Option<PathBuf>,
    timeout: Duration,
}

/// The client authentication, with its secret by reference.
#[derive(Debug, Clone)]
enum AuthSpec {
    Basic(SecretRef),
    Post(SecretRef),
    PrivateKeyJwt(SecretRef),
}

/// The endpoints as configured.
#[derive(Debug, Clone)]
enum EndpointSpec {
    Fixed {
        token: Uri,
        revocation: Option<Uri>,
    },
    Issuer {
        issuer: String,
        revocation: Option<Uri>,
    },
}

impl SourceSpec for OAuth2Spec {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn build(&self, provider: &dyn Provider) -> Result<Arc<dyn CredentialSource>, Vec<FieldError>> {
        Ok(Arc::new(self.source(provider)?))
    }
}

impl OAuth2Spec {
    /// The live source: the secret resolved, the key parsed, the `ca`
    /// bundle read (through `provider`), the client made.
    pub(crate) fn source(&self, provider: &dyn Provider) -> Result<OAuth2Source, Vec<FieldError>> {
        let auth = load_auth(&self.auth, provider);
        let tls = source_tls(self.ca.as_deref(), provider);
        let (auth, tls) = match (auth, tls) {
            (Ok(auth), Ok(tls)) => (auth, tls),
            (auth, tls) => return Err(auth.err().into_iter().chain(tls.err()).collect()),
        };
        let endpoints = match &self.endpoints {
            EndpointSpec::Fixed { token, revocation } => Endpoints::Fixed {
                token: token.clone(),
                revocation: revocation.clone(),
            },
            EndpointSpec::Issuer { issuer, revocation } => Endpoints::Issuer {
                issuer: issuer.clone(),
                revocation: revocation.clone(),
                discovered: OnceCell::new(),
            },
        };
        Ok(OAuth2Source {
            credential: self.credential.clone(),
            kind: KIND,
            client_id: self.client_id.clone(),
            auth,
            scope: self.scope.clone(),
            audience: self.audience.clone(),
            resource: self.resource.clone(),
            endpoints,
            http: HttpClient::new(tls, self.timeout),
        })
    }
}

/// Validates the configuration: exactly one of `token_url`/`issuer`, URLs
/// that are https (or http to loopback), the secret that `client_auth`
/// needs (it must resolve now) and no other, a usable private key, plain
/// scope names, a readable `ca` bundle. Every problem is reported, each
/// with its field path.
pub fn validate(
    name: &str,
    raw: &RawOAuth2ClientCredentials,
    env: &dyn Provider,
) -> Result<OAuth2Spec, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut url = |field: &str, value: &Option<String>| -> Option<Uri> {
        let value = value.as_deref()?;
        check_url(value)
            .map_err(|message| errors.push(FieldError::new(field, message)))
            .ok()
    };
    let token_url = url("token_url", &raw.token_url);
    let issuer_url = url("issuer", &raw.issuer);
    let revocation = url("revocation_url", &raw.revocation_url);
    if raw.token_url.is_some() == raw.issuer.is_some() {
        errors.push(FieldError::new(
            "",
            "give exactly one of token_url and issuer",
        ));
    }
    if raw.client_id.is_empty() {
        errors.push(FieldError::new("client_id", "must not be empty"));
    }
    for (i, scope) in raw.scope.iter().enumerate() {
        let plain = !scope.is_empty()
            && scope
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if !plain {
            errors.push(FieldError::new(
                format!("scope[{i}]"),
                "a scope is a non-empty name without spaces, quotes or backslashes",
            ));
        }
    }
    for (field, value) in [("audience", &raw.audience), ("resource", &raw.resource)] {
        if value.as_deref() == Some("") {
            errors.push(FieldError::new(field, "must not be empty when given"));
        }
    }
    if let Some(resource) = &raw.resource {
        // RFC 8707 §2: an absolute URI without a fragment.
        if resource.contains('#') || !resource.contains("://") {
            errors.push(FieldError::new(
                "resource",
                "must be an absolute URI without a fragment (RFC 8707)",
            ));
        }
    }
    let auth = validate_auth(raw, &mut errors);
    if let Some(Err(e)) = auth.as_ref().map(|auth| load_auth(auth, env)) {
        errors.push(e);
    }
    let timeout = crate::credential::source_timeout(raw.timeout.as_deref(), &mut errors);
    if let Err(e) = source_tls(raw.ca.as_deref(), env) {
        errors.push(e);
    }
    let endpoints = match (token_url, issuer_url) {
        (Some(token), None) => Some(EndpointSpec::Fixed { token, revocation }),
        (None, Some(_)) => Some(EndpointSpec::Issuer {
            issuer: raw.issuer.clone().unwrap_or_default(),
            revocation,
        }),
        _ => None,
    };
    match (auth, endpoints) {
        (Some(auth), Some(endpoints)) if errors.is_empty() => Ok(OAuth2Spec {
            credential: name.to_string(),
            client_id: raw.client_id.clone(),
            auth,
            scope: raw.scope.clone(),
            audience: raw.audience.clone(),
            resource: raw.resource.clone(),
            endpoints,
            ca: raw.ca.clone(),
            timeout,
        }),
        _ => Err(errors),
    }
}

/// The authentication `client_auth` names, with the one secret it needs.
fn validate_auth(
    raw: &RawOAuth2ClientCredentials,
    errors: &mut Vec<FieldError>,
) -> Option<AuthSpec> {
    let (needed, unwanted) = match raw.client_auth {
        ClientAuthMethod::PrivateKeyJwt => ("private_key", "client_secret"),
        _ => ("client_secret", "private_key"),
    };
    let present = |field: &str| match field {
        "private_key" => raw.private_key.is_some(),
        _ => raw.client_secret.is_some(),
    };
    let method = match raw.client_auth {
        ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
        ClientAuthMethod::ClientSecretPost => "client_secret_post",
        ClientAuthMethod::PrivateKeyJwt => "private_key_jwt",
    };
    if present(unwanted) {
        errors.push(FieldError::new(
            unwanted,
            format!("not used by client_auth {method}; remove it"),
        ));
    }
    if !present(needed) {
        errors.push(FieldError::new(
            needed,
            format!("client_auth {method} needs {needed}"),
        ));
        return None;
    }
    Some(match raw.client_auth {
        ClientAuthMethod::ClientSecretBasic => AuthSpec::Basic(raw.client_secret.clone()?),
        ClientAuthMethod::ClientSecretPost => AuthSpec::Post(raw.client_secret.clone()?),
        ClientAuthMethod::PrivateKeyJwt => AuthSpec::PrivateKeyJwt(raw.private_key.clone()?),
    })
}

/// The client authentication with its secret read (and key parsed).
fn load_auth(auth: &AuthSpec, provider: &dyn Provider) -> Result<ClientAuth, FieldError> {
    Ok(match auth {
        AuthSpec::Basic(secret) => ClientAuth::Basic(resolve("client_secret", secret, provider)?),
        AuthSpec::Post(secret) => ClientAuth::Post(resolve("client_secret", secret, provider)?),
        AuthSpec::PrivateKeyJwt(key) => {
            let pem = resolve("private_key", key, provider)?;
            ClientAuth::PrivateKeyJwt(
                SigningKey::from_pem(&pem).map_err(|m| FieldError::new("private_key", m))?,
            )
        }
    })
}
