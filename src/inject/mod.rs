//! Putting a credential into the outbound request.
//!
//! ```yaml
//! inject: { header: Authorization, format: "Bearer {token}" }  # the default when `inject` is absent
//! inject: { header: X-Api-Key }                # format "{token}" for any header but Authorization
//! inject: { format: "token {token}" }          # header defaults to Authorization
//! inject: { basic: { username: svc } }         # Authorization: Basic base64(svc:{token})
//! inject: { query: api_key }                   # ?api_key={token}, percent-encoded
//! inject: { sigv4: { service: s3, region: eu-west-1 } }  # AWS keys: re-sign the request
//! ```
//!
//! Whatever the agent sent under the same header or query parameter is
//! replaced, never merged, so an upstream can only ever see the injected value.

pub mod query;
pub use crate::sigv4;
pub mod template;

use base64::Engine as _;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::credential::{Credential, CredentialValue};
use crate::field::FieldError;
use crate::reason::Reason;
use crate::sanitize::aws_payload::{AwsPayload, PayloadError};

pub use template::Template;

/// `inject:` as written in the configuration. At most one of `header`,
/// `query` and `basic`; `format` goes with a header.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInject {
    /// The header to set (`Authorization` when only `format` is given).
    pub header: Option<String>,
    /// The header value with one `{token}`.
    pub format: Option<String>,
    /// The query parameter to set.
    pub query: Option<String>,
    /// HTTP Basic auth with the token as password.
    pub basic: Option<RawBasic>,
    /// AWS SigV4 re-signing with AWS keys (the `aws` source).
    #[serde(default)]
    pub sigv4: Option<sigv4::RawSigV4>,
}

/// `inject: { basic: { username: ... } }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasic {
    /// The Basic auth user name; the password is the token.
    pub username: String,
}

/// How a token goes into a request, validated.
#[derive(Debug, Clone)]
pub enum Injection {
    /// Set header `name` to the rendered template.
    Header {
        /// The header, replaced wholesale.
        name: HeaderName,
        /// The value format.
        template: Template,
    },
    /// `Authorization: Basic base64(username:token)`.
    Basic {
        /// The user name; the token is the password.
        username: String,
    },
    /// Set query parameter `param` to the percent-encoded token.
    Query {
        /// The parameter name (unreserved characters only).
        param: String,
    },
    /// Re-sign the request with AWS Signature Version 4 (AWS keys only).
    SigV4(sigv4::SigV4),
}

/// Why a credential could not be put into a request. Never contains the value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InjectError {
    /// The credential is not a token (AWS keys need SigV4 re-signing).
    #[error("credential {credential}: a {kind} value cannot be injected as {method}")]
    UnsupportedValue {
        /// The credential's config name.
        credential: String,
        /// The value kind (`aws`).
        kind: &'static str,
        /// The configured injection kind.
        method: &'static str,
    },
    /// The token has bytes a header value cannot carry (e.g. CR, LF, NUL).
    #[error("credential {credential}: the value contains bytes not allowed in header {header}")]
    InvalidHeaderValue {
        /// The credential's config name.
        credential: String,
        /// The header it was meant for.
        header: String,
    },
    /// The request could not be signed.
    #[error("credential {credential}: SigV4 signing failed: {error}")]
    Sign {
        /// The credential's config name.
        credential: String,
        /// Why.
        error: sigv4::SignError,
    },
    /// The body cannot be signed as the agent framed or encoded it.
    #[error(transparent)]
    Payload(PayloadError),
    /// The request URI could not be rebuilt with the parameter.
    #[error("credential {credential}: the request URI cannot carry query parameter {param}")]
    InvalidUri {
        /// The credential's config name.
        credential: String,
        /// The configured parameter.
        param: String,
    },
}

impl InjectError {
    /// The stable reason the request is refused with: the credential is not
    /// usable (or the body cannot be signed), so nothing is forwarded.
    pub fn reason(&self) -> Reason {
        match self {
            InjectError::Payload(e) => e.reason(),
            _ => Reason::CredentialUnavailable,
        }
    }
}

/// Headers that frame the message or belong to the hop; injecting into them
/// would corrupt the request or leak the credential to the wrong party.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

impl Injection {
    /// Validates `inject:`; `None` means `Authorization: Bearer {token}`.
    /// A header other than `Authorization` defaults to the bare `{token}`.
    /// Error paths are relative to `inject`.
    pub fn compile(raw: Option<&RawInject>) -> Result<Injection, Vec<FieldError>> {
        let raw = match raw {
            Some(raw) => raw,
            None => return Ok(bearer()),
        };
        let chosen = [
            raw.header.is_some(),
            raw.query.is_some(),
            raw.basic.is_some(),
            raw.sigv4.is_some(),
        ];
        if chosen.iter().filter(|c| **c).count() > 1 {
            return Err(vec![FieldError::new(
                "",
                "choose one of header, query, basic, sigv4",
            )]);
        }
        if let Some(raw_sigv4) = &raw.sigv4 {
            if raw.format.is_some() {
                return Err(vec![FieldError::new(
                    "format",
                    "applies only to header injection",
                )]);
            }
            return sigv4::SigV4::compile(raw_sigv4)
                .map(Injection::SigV4)
                .map_err(|errs| {
                    errs.into_iter()
                        .map(|(field, m)| FieldError::new(format!("sigv4.{field}"), m))
                        .collect()
                });
        }
        let mut errors = Vec::new();
        if raw.format.is_some() && (raw.query.is_some() || raw.basic.is_some()) {
            errors.push(FieldError::new(
                "format",
                "applies only to header injection",
            ));
        }
        let injection = if let Some(param) = &raw.query {
            check_param(param)
                .map_err(|m| errors.push(FieldError::new("query", m)))
                .ok();
            Injection::Query {
                param: param.clone(),
            }
        } else if let Some(basic) = &raw.basic {
            check_username(&basic.username)
                .map_err(|m| errors.push(FieldError::new("basic.username", m)))
                .ok();
            Injection::Basic {
                username: basic.username.clone(),
            }
        } else {
            header_injection(raw, &mut errors)
        };
        if errors.is_empty() {
            Ok(injection)
        } else {
            Err(errors)
        }
    }

    /// Puts `credential` into the request: sets the header (replacing every
    /// existing value of that name), or `Authorization: Basic ...`, or the
    /// query parameter (removing every existing parameter of that name, also
    /// percent-encoded or differently cased spellings, first). Injected header
    /// values are marked sensitive so HTTP/2 never indexes them.
    ///
    /// Only token values can be injected this way; AWS keys are an error.
    /// SigV4 signs as for an empty body: requests with a body go through
    /// [`apply_with_body`](Injection::apply_with_body).
    pub fn apply(
        &self,
        credential: &Credential,
        parts: &mut http::request::Parts,
    ) -> Result<(), InjectError> {
        self.apply_with_body(credential, parts, &[], &AwsPayload::default())
    }

    /// Whether the injection reads the whole request body (a SigV4
    /// signature covers the payload's hash), so a streamed body must be
    /// held whole first, unless it goes to S3 unhashed
    /// ([`apply_streamed`](Injection::apply_streamed)).
    pub fn reads_body(&self) -> bool {
        matches!(self, Injection::SigV4(_))
    }

    /// [`apply`](Injection::apply) for a request whose (buffered) body is
    /// `body`: SigV4 signs its hash, with the checksum headers of `payload`
    /// (what the sanitizer learnt of the body's AWS framing). `parts` must
    /// hold the final URI and `Host`, since both are signed.
    pub fn apply_with_body(
        &self,
        credential: &Credential,
        parts: &mut http::request::Parts,
        body: &[u8],
        payload: &AwsPayload,
    ) -> Result<(), InjectError> {
        if let Injection::SigV4(settings) = self {
            return sign_sigv4(settings, credential, parts, Signed::Hashed(body, payload));
        }
        let token = match &credential.value {
            CredentialValue::Token(token) => token.expose(),
            other => {
                return Err(InjectError::UnsupportedValue {
                    credential: credential.name.clone(),
                    kind: other.kind(),
                    method: self.kind(),
                })
            }
        };
        match self {
            Injection::Header { name, template } => {
                let rendered = Zeroizing::new(template.render(token));
                let mut value = HeaderValue::from_bytes(&rendered).map_err(|_| {
                    InjectError::InvalidHeaderValue {
                        credential: credential.name.clone(),
                        header: title_case(name.as_str()),
                    }
                })?;
                value.set_sensitive(true);
                parts.headers.insert(name.clone(), value);
            }
            Injection::Basic { username } => {
                let mut pair = Zeroizing::new(Vec::with_capacity(username.len() + 1 + token.len()));
                pair.extend_from_slice(username.as_bytes());
                pair.push(b':');
                pair.extend_from_slice(token);
                let mut header = String::with_capacity(6 + pair.len().div_ceil(3) * 4);
                header.push_str("Basic ");
                base64::engine::general_purpose::STANDARD.encode_string(&*pair, &mut header);
                let mut value = HeaderValue::try_from(header)
                    .expect("base64 output is always a valid header value");
                value.set_sensitive(true);
                parts.headers.insert(AUTHORIZATION, value);
            }
            Injection::Query { param } => {
                parts.uri = query::with_param(&parts.uri, param, token).ok_or_else(|| {
                    InjectError::InvalidUri {
                        credential: credential.name.clone(),
                        param: param.clone(),
                    }
                })?;
            }
            Injection::SigV4(_) => unreachable!("signed above"),
        }
        Ok(())
    }

    /// Whether this injection signs requests to `host` for S3 (SigV4 with
    /// service `s3`, configured or read from the host name): there a body
    /// may stream unhashed ([`apply_streamed`](Injection::apply_streamed)).
    pub fn signs_s3(&self, host: &str) -> bool {
        match self {
            Injection::SigV4(settings) => settings
                .scope_for(host)
                .is_some_and(|(service, _)| service == "s3"),
            _ => false,
        }
    }

    /// [`apply_with_body`](Injection::apply_with_body) for an S3 request
    /// whose body streams, so is not hashed: `framing` sets the headers of
    /// the body as it will be sent (after the request's own codings were
    /// checked) and returns the `x-amz-content-sha256` to sign with
    /// (`UNSIGNED-PAYLOAD`, `STREAMING-UNSIGNED-PAYLOAD-TRAILER`).
    pub fn apply_streamed(
        &self,
        credential: &Credential,
        parts: &mut http::request::Parts,
        framing: impl FnOnce(&mut http::HeaderMap) -> &'static str,
    ) -> Result<(), InjectError> {
        let Injection::SigV4(settings) = self else {
            return Err(InjectError::UnsupportedValue {
                credential: credential.name.clone(),
                kind: credential.value.kind(),
                method: self.kind(),
            });
        };
        sign_sigv4(
            settings,
            credential,
            parts,
            Signed::Streamed(Box::new(framing)),
        )
    }

    /// A one-line description for `credgate check`/`explain`, e.g.
    /// `header Authorization: Bearer {token}`.
    pub fn describe(&self) -> String {
        match self {
            Injection::Header { name, template } => {
                format!("header {}: {template}", title_case(name.as_str()))
            }
            Injection::Basic { username } => {
                format!("basic auth, username {username:?}, password {{token}}")
            }
            Injection::Query { param } => format!("query {param}={{token}}"),
            Injection::SigV4(s) => format!(
                "AWS SigV4 re-signing, service {}, region {}",
                s.service.as_deref().unwrap_or("from the host"),
                s.region.as_deref().unwrap_or("from the host")
            ),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Injection::Header { .. } => "header",
            Injection::Basic { .. } => "basic",
            Injection::Query { .. } => "query",
            Injection::SigV4(_) => "sigv4",
        }
    }
}

/// How a signature covers the body.
enum Signed<'a> {
    /// By its SHA-256 (it is held whole), with the checksum headers of what
    /// the sanitizer learnt of its AWS framing.
    Hashed(&'a [u8], &'a AwsPayload),
    /// Not at all (S3, a body that streams): the function sets the
    /// headers of the body as sent and returns what `x-amz-content-sha256`
    /// says instead.
    Streamed(Box<dyn FnOnce(&mut http::HeaderMap) -> &'static str + 'a>),
}

/// Signs `parts` with the AWS keys of `credential` for the service and
/// region of `settings` (or of the request's host), with the payload's
/// checksum headers.
fn sign_sigv4(
    settings: &sigv4::SigV4,
    credential: &Credential,
    parts: &mut http::request::Parts,
    body: Signed<'_>,
) -> Result<(), InjectError> {
    let CredentialValue::Aws {
        access_key_id,
        secret_access_key,
        session_token,
    } = &credential.value
    else {
        return Err(InjectError::UnsupportedValue {
            credential: credential.name.clone(),
            kind: credential.value.kind(),
            method: "sigv4",
        });
    };
    let sign_error = |error| InjectError::Sign {
        credential: credential.name.clone(),
        error,
    };
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_string())
        .or_else(|| parts.uri.host().map(str::to_string))
        .unwrap_or_default();
    let (service, region) = settings
        .scope_for(&host)
        .ok_or_else(|| sign_error(sigv4::SignError::UnknownScope(host.clone())))?;
    check_content_coding(&parts.headers).map_err(InjectError::Payload)?;
    let keys = sigv4::SigningKeys {
        access_key_id,
        secret_access_key,
        session_token: session_token.as_ref(),
    };
    let now = std::time::SystemTime::now();
    match body {
        Signed::Hashed(body, payload) => {
            payload.apply(&mut parts.headers);
            sigv4::sign(parts, body, &keys, &service, &region, now)
        }
        Signed::Streamed(framing) => {
            if service != "s3" {
                // Only S3 takes a payload it cannot hash first.
                return Err(sign_error(sigv4::SignError::NeedsPayloadHash(service)));
            }
            let payload_hash = framing(&mut parts.headers);
            sigv4::sign_with_payload_hash(parts, payload_hash, &keys, &service, &region, now)
        }
    }
    .map_err(sign_error)
}

/// Content codings a signed body may carry on: S3 keeps them as the
/// object's metadata, and other services that accept one decode it
/// themselves; the signature covers the encoded bytes either way.
const KNOWN_CODINGS: [&str; 8] = [
    "identity",
    "gzip",
    "x-gzip",
    "deflate",
    "br",
    "zstd",
    "compress",
    "x-compress",
];

/// Refuses a body whose `Content-Encoding` names a coding credgate does not
/// know: it could be a framing the service reads the body through (as
/// `aws-chunked` is), and signing it as if it were the payload would store
/// the framing.
fn check_content_coding(headers: &http::HeaderMap) -> Result<(), PayloadError> {
    let known = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty())
        .all(|coding| {
            KNOWN_CODINGS
                .iter()
                .any(|known| coding.eq_ignore_ascii_case(known.as_bytes()))
        });
    if known {
        Ok(())
    } else {
        Err(PayloadError::Unsupported(format!(
            "the body's Content-Encoding names a coding credgate cannot sign for; it signs {}",
            KNOWN_CODINGS.join(", ")
        )))
    }
}

fn bearer() -> Injection {
    Injection::Header {
        name: AUTHORIZATION,
        template: Template::parse("Bearer {token}").expect("a valid built-in format"),
    }
}

fn header_injection(raw: &RawInject, errors: &mut Vec<FieldError>) -> Injection {
    let name = match raw.header.as_deref() {
        None => AUTHORIZATION,
        Some(header) => match HeaderName::from_bytes(header.as_bytes()) {
            Ok(name) if FORBIDDEN_HEADERS.contains(&name.as_str()) => {
                errors.push(FieldError::new(
                    "header",
                    format!("{header} frames the message or belongs to the proxy hop; it cannot carry a credential"),
                ));
                name
            }
            Ok(name) => name,
            Err(_) => {
                errors.push(FieldError::new(
                    "header",
                    format!("{header:?} is not a valid header name"),
                ));
                AUTHORIZATION
            }
        },
    };
    let format = raw.format.as_deref().unwrap_or(if name == AUTHORIZATION {
        "Bearer {token}"
    } else {
        "{token}"
    });
    match Template::parse(format) {
        Ok(template) => Injection::Header { name, template },
        Err(message) => {
            errors.push(FieldError::new("format", message));
            bearer()
        }
    }
}

fn check_param(param: &str) -> Result<(), String> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if param.is_empty() || !param.bytes().all(unreserved) {
        return Err(format!(
            "{param:?} must be a non-empty name of letters, digits, '-', '.', '_' or '~'"
        ));
    }
    Ok(())
}

fn check_username(username: &str) -> Result<(), String> {
    // RFC 7617: the user-id cannot contain a colon; controls would break the header.
    if username.contains(':') || username.chars().any(char::is_control) {
        return Err("must not contain ':' or control characters".to_string());
    }
    Ok(())
}

/// `x-api-key` → `X-Api-Key`: header names as operators write them.
fn title_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::Secret;

    fn token(value: &[u8]) -> Credential {
        Credential {
            name: "reports".into(),
            id: "cred-000000000000".into(),
            source: "exec",
            value: CredentialValue::Token(Secret::new(value)),
            expires_at: None,
            standing: false,
            renewed: None,
        }
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn compile(yaml: &str) -> Result<Injection, Vec<FieldError>> {
        let raw: RawInject = serde_yaml::from_str(yaml).unwrap();
        Injection::compile(Some(&raw))
    }

    fn error_paths(yaml: &str) -> Vec<String> {
        compile(yaml)
            .unwrap_err()
            .into_iter()
            .map(|e| e.path)
            .collect()
    }

    #[test]
    fn defaults() {
        let describe = |yaml: &str| compile(yaml).unwrap().describe();
        assert_eq!(
            Injection::compile(None).unwrap().describe(),
            "header Authorization: Bearer {token}"
        );
        assert_eq!(describe("{}"), "header Authorization: Bearer {token}");
        assert_eq!(
            describe("header: authorization"),
            "header Authorization: Bearer {token}"
        );
        assert_eq!(describe("header: x-api-key"), "header X-Api-Key: {token}");
        assert_eq!(
            describe("format: 'token {token}'"),
            "header Authorization: token {token}"
        );
        assert_eq!(describe("query: api_key"), "query api_key={token}");
        assert_eq!(
            describe("basic: { username: svc }"),
            "basic auth, username \"svc\", password {token}"
        );
    }

    #[test]
    fn refused_configurations_name_their_field() {
        assert_eq!(error_paths("{ header: X-Key, query: key }"), [""]);
        assert_eq!(
            error_paths("{ query: key, format: 'x {token}' }"),
            ["format"]
        );
        assert_eq!(
            error_paths("{ header: X-Key, format: 'Bearer' }"),
            ["format"]
        );
        assert_eq!(error_paths("header: 'bad header'"), ["header"]);
        assert_eq!(error_paths("header: Content-Length"), ["header"]);
        assert_eq!(error_paths("header: Proxy-Authorization"), ["header"]);
        assert_eq!(error_paths("query: 'a&b'"), ["query"]);
        assert_eq!(error_paths("query: ''"), ["query"]);
        assert_eq!(
            error_paths("basic: { username: 'a:b' }"),
            ["basic.username"]
        );
        assert!(serde_yaml::from_str::<RawInject>("cookie: x").is_err());
    }

    #[test]
    fn header_replaces_every_value_the_agent_sent() {
        let injection = compile("header: X-Api-Key").unwrap();
        let mut p = parts(
            "/r",
            &[
                ("x-api-key", "agent-1"),
                ("X-Api-Key", "agent-2"),
                ("accept", "*/*"),
            ],
        );
        injection.apply(&token(b"test-secret-h"), &mut p).unwrap();
        let values: Vec<_> = p.headers.get_all("x-api-key").iter().collect();
        assert_eq!(values, ["test-secret-h"]);
        assert!(values[0].is_sensitive());
        assert_eq!(p.headers["accept"], "*/*");
    }

    #[test]
    fn default_bearer_replaces_an_agent_authorization() {
        let mut p = parts("/r", &[("authorization", "Bearer agent-guess")]);
        bearer().apply(&token(b"test-secret-b"), &mut p).unwrap();
        assert_eq!(p.headers.get_all(AUTHORIZATION).iter().count(), 1);
        assert_eq!(p.headers[AUTHORIZATION], "Bearer test-secret-b");
    }

    #[test]
    fn basic_uses_the_token_as_password() {
        let injection = compile("basic: { username: svc }").unwrap();
        let mut p = parts("/r", &[("authorization", "Basic YWdlbnQ6Z3Vlc3M=")]);
        injection.apply(&token(b"test-secret-p"), &mut p).unwrap();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("svc:test-secret-p")
        );
        assert_eq!(
            p.headers.get_all(AUTHORIZATION).iter().collect::<Vec<_>>(),
            [expected.as_str()]
        );
        assert!(p.headers[AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn query_replaces_the_parameter() {
        let injection = compile("query: api_key").unwrap();
        let mut p = parts("https://api.example/r?api_key=agent&x=1", &[]);
        injection.apply(&token(b"test-secret-q"), &mut p).unwrap();
        assert_eq!(
            p.uri.to_string(),
            "https://api.example/r?x=1&api_key=test-secret-q"
        );
    }

    #[test]
    fn header_injection_refuses_values_that_would_split_the_header() {
        let mut p = parts("/r", &[]);
        let err = bearer()
            .apply(&token(b"test-secret-\r\nX-Evil: 1"), &mut p)
            .unwrap_err();
        assert!(
            matches!(err, InjectError::InvalidHeaderValue { .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains("test-secret"), "{err}");
        assert!(p.headers.is_empty());
        assert_eq!(err.reason(), Reason::CredentialUnavailable);
    }

    #[test]
    fn aws_values_need_sigv4() {
        let aws = Credential {
            value: CredentialValue::Aws {
                access_key_id: "ASIATEST".into(),
                secret_access_key: Secret::new("test-secret-sak"),
                session_token: None,
            },
            ..token(b"unused")
        };
        let mut p = parts("/r", &[]);
        let err = bearer().apply(&aws, &mut p).unwrap_err();
        assert!(
            matches!(err, InjectError::UnsupportedValue { kind: "aws", .. }),
            "{err:?}"
        );
        assert!(p.headers.is_empty());
    }
}
