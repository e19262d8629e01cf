//! The `aws` source: temporary AWS keys minted per task by STS AssumeRole,
//! narrowed by an inline session policy, for SigV4 re-signing.
//!
//! ```yaml
//! credentials:
//!   s3-reports:
//!     aws:
//!       role_arn: arn:aws:iam::123456789012:role/agent-reports
//!       region: eu-west-1
//!       duration: 15m            # 15m..12h; bounded by the task's remaining life, never below 15m
//!       base: env                # | { profile: name } | { web_identity: { role_arn, token_file } }
//!       sts_endpoint: https://sts.eu-west-1.amazonaws.com   # the default for the region
//!     inject: { sigv4: { service: s3, region: eu-west-1 } }
//! ```
//!
//! The base credentials (credgate's own identity) only ever sign the
//! AssumeRole call; requests are signed with the task's session keys. STS
//! cannot revoke a session, so task end reports `not_supported` and the keys
//! live until they expire, which is why `duration` is kept short.

mod config;
mod http;
mod sts;

pub use config::{validate, AwsSpec, RawAws, RawBase, RawWebIdentity};

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;

use self::http::StsHttp;
use self::sts::StsCredentials;
use crate::credential::endpoint;
use crate::credential::{
    Credential, CredentialError, CredentialSource, CredentialValue, FetchContext, Narrowing,
    RequestView,
};
use crate::field::FieldError;
use crate::provider::Provider;
use crate::secret::Secret;
use crate::sigv4;
use crate::units::parse_duration;

/// The source kind, as written in config and records.
pub const KIND: &str = "aws";

/// The shortest session STS grants.
pub const MIN_DURATION: Duration = Duration::from_secs(900);
/// The longest session STS grants a role (when the role allows it).
pub const MAX_DURATION: Duration = Duration::from_secs(12 * 3600);
/// The session length when `duration` is not given.
pub const DEFAULT_DURATION: Duration = MIN_DURATION;
/// STS's limit on an inline session policy, in characters.
pub const MAX_POLICY_CHARS: usize = 2048;

/// credgate's own credentials, validated.
enum Base {
    /// Fixed keys, read at load.
    Keys {
        access_key_id: String,
        secret_access_key: Secret,
        session_token: Option<Secret>,
    },
    /// Keys obtained with a web identity token before each AssumeRole.
    WebIdentity {
        role_arn: String,
        token_file: PathBuf,
    },
}

/// Mints per-task session keys with STS AssumeRole.
pub struct AwsSource {
    credential: String,
    role_arn: String,
    region: String,
    duration: Duration,
    base: Base,
    endpoint: ::http::Uri,
    http: StsHttp,
}

impl CredentialSource for AwsSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn fetch<'a>(
        &'a self,
        ctx: &'a FetchContext,
    ) -> crate::BoxFuture<'a, Result<Credential, CredentialError>> {
        Box::pin(self.assume_role(ctx))
    }

    // `revoke` keeps the default: STS has no way to end a session early
    // (only a deny policy on the role for sessions issued before a time,
    // which would hit every task), so task end records `not_supported`.

    fn narrow(
        &self,
        narrowing: Option<&serde_yaml::Value>,
        request: &RequestView<'_>,
    ) -> Result<Narrowing, CredentialError> {
        let _ = request;
        match policy_of(narrowing) {
            Ok(None) => Ok(Narrowing::default()),
            Ok(Some(policy)) => Ok(Narrowing {
                key: policy.clone(),
                value: serde_json::json!({ "policy": policy }),
            }),
            Err(errors) => Err(self.error(format!(
                "invalid narrowing: {}",
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
        }
    }
}

/// The session policy of a `narrowing:` block as canonical JSON (keys
/// sorted, no spaces), or `None` when there is no block. The block is
/// `{ policy: { Version, Statement, ... } }`; nothing else is accepted.
fn policy_of(narrowing: Option<&serde_yaml::Value>) -> Result<Option<String>, Vec<FieldError>> {
    let Some(narrowing) = narrowing else {
        return Ok(None);
    };
    let Some(map) = narrowing.as_mapping() else {
        return Err(vec![FieldError::new(
            "",
            "must be a mapping { policy: ... }",
        )]);
    };
    let mut errors = Vec::new();
    let mut policy = None;
    for (key, value) in map {
        match key.as_str() {
            Some("policy") => policy = Some(value),
            Some(other) => errors.push(FieldError::new(
                other,
                "the aws source narrows only by policy (an inline session policy)",
            )),
            None => errors.push(FieldError::new("", "keys must be strings")),
        }
    }
    let Some(policy) = policy else {
        errors.push(FieldError::new(
            "policy",
            "missing: the session policy document",
        ));
        return Err(errors);
    };
    let json = match serde_json::to_value(policy) {
        Ok(serde_json::Value::Object(doc)) => {
            if !doc.contains_key("Statement") {
                errors.push(FieldError::new(
                    "policy",
                    "a policy document needs a Statement",
                ));
            }
            serde_json::Value::Object(doc).to_string()
        }
        Ok(_) => {
            errors.push(FieldError::new(
                "policy",
                "must be a policy document (a mapping with Version and Statement)",
            ));
            String::new()
        }
        Err(e) => {
            errors.push(FieldError::new(
                "policy",
                format!("not expressible as JSON: {e}"),
            ));
            String::new()
        }
    };
    if json.chars().count() > MAX_POLICY_CHARS {
        errors.push(FieldError::new(
            "policy",
            format!("STS accepts session policies of at most {MAX_POLICY_CHARS} characters"),
        ));
    }
    if errors.is_empty() {
        Ok(Some(json))
    } else {
        Err(errors)
    }
}

impl AwsSource {
    fn error(&self, message: impl Into<String>) -> CredentialError {
        CredentialError::Source {
            credential: self.credential.clone(),
            source_kind: KIND,
            message: message.into(),
        }
    }

    /// The session length for `ctx`: the configured one, shortened to the
    /// task's remaining life but never below STS's minimum.
    fn duration_for(&self, ctx: &FetchContext) -> Duration {
        let remaining = ctx
            .task_expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        self.duration.min(remaining).max(MIN_DURATION)
    }

    async fn assume_role(&self, ctx: &FetchContext) -> Result<Credential, CredentialError> {
        let session = sts::session_name(&ctx.task_id);
        let seconds = self.duration_for(ctx).as_secs().to_string();
        let mut params = vec![
            ("Action", "AssumeRole"),
            ("Version", "2011-06-15"),
            ("RoleArn", self.role_arn.as_str()),
            ("RoleSessionName", session.as_str()),
            ("DurationSeconds", seconds.as_str()),
        ];
        let policy = ctx.narrowing.value["policy"].as_str();
        if let Some(policy) = policy {
            params.push(("Policy", policy));
        }
        let base = self.base_keys(&session).await?;
        let keys = sigv4::SigningKeys {
            access_key_id: &base.0,
            secret_access_key: &base.1,
            session_token: base.2.as_ref(),
        };
        let creds = self.call(&params, Some(&keys), "AssumeRole").await?;
        if creds.expiration <= SystemTime::now() {
            return Err(CredentialError::Expired {
                credential: self.credential.clone(),
                source_kind: KIND,
            });
        }
        Ok(Credential {
            name: self.credential.clone(),
            id: crate::credential::new_credential_id(),
            source: KIND,
            value: CredentialValue::Aws {
                access_key_id: creds.access_key_id,
                secret_access_key: creds.secret_access_key,
                session_token: Some(creds.session_token),
            },
            expires_at: Some(creds.expiration),
            standing: false,
            renewed: None,
        })
    }

    /// credgate's own keys: the configured ones, or fresh ones from
    /// AssumeRoleWithWebIdentity with the current token file.
    async fn base_keys(
        &self,
        session: &str,
    ) -> Result<(String, Secret, Option<Secret>), CredentialError> {
        match &self.base {
            Base::Keys {
                access_key_id,
                secret_access_key,
                session_token,
            } => Ok((
                access_key_id.clone(),
                secret_access_key.clone(),
                session_token.clone(),
            )),
            Base::WebIdentity {
                role_arn,
                token_file,
            } => {
                let token = zeroize::Zeroizing::new(
                    tokio::fs::read_to_string(token_file).await.map_err(|e| {
                        self.error(format!(
                            "cannot read the web identity token {}: {e}",
                            token_file.display()
                        ))
                    })?,
                );
                let params = [
                    ("Action", "AssumeRoleWithWebIdentity"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", role_arn.as_str()),
                    ("RoleSessionName", session),
                    ("DurationSeconds", "900"),
                    ("WebIdentityToken", token.trim()),
                ];
                let creds = self
                    .call(&params, None, "AssumeRoleWithWebIdentity")
                    .await?;
                Ok((
                    creds.access_key_id,
                    creds.secret_access_key,
                    Some(creds.session_token),
                ))
            }
        }
    }

    /// POSTs `params` to STS, signed with `keys` when given.
    async fn call(
        &self,
        params: &[(&str, &str)],
        keys: Option<&sigv4::SigningKeys<'_>>,
        action: &str,
    ) -> Result<StsCredentials, CredentialError> {
        let body = zeroize::Zeroizing::new(sts::form(params));
        let authority = self
            .endpoint
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let (mut parts, ()) = ::http::Request::builder()
            .method(::http::Method::POST)
            .uri(self.endpoint.clone())
            .header(::http::header::HOST, authority)
            .header(
                ::http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .header(::http::header::ACCEPT, "text/xml")
            .body(())
            .map_err(|e| self.error(format!("cannot build the {action} request: {e}")))?
            .into_parts();
        if let Some(keys) = keys {
            sigv4::sign(
                &mut parts,
                body.as_bytes(),
                keys,
                "sts",
                &self.region,
                SystemTime::now(),
            )
            .map_err(|e| self.error(format!("cannot sign the {action} request: {e}")))?;
        }
        let request =
            ::http::Request::from_parts(parts, Full::new(Bytes::from(body.as_bytes().to_vec())));
        let (status, answer) = self
            .http
            .send(request)
            .await
            .map_err(|m| self.error(format!("STS {action}: {m}")))?;
        let text = zeroize::Zeroizing::new(String::from_utf8_lossy(&answer).into_owned());
        if !status.is_success() {
            return Err(self.error(format!(
                "STS {action} of {} answered {status}: {}",
                params
                    .iter()
                    .find(|(n, _)| *n == "RoleArn")
                    .map_or("the role", |(_, v)| *v),
                sts::error_summary(&text)
            )));
        }
        sts::parse_credentials(&text).map_err(|m| self.error(format!("STS {action}: {m}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Validation and building in one step, as loading does.
    fn compile(name: &str, raw: &RawAws, env: &dyn Provider) -> Result<AwsSource, Vec<FieldError>> {
        validate(name, raw, env)?.source(env)
    }
    use std::collections::BTreeMap;

    fn raw(yaml: &str) -> RawAws {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn env() -> BTreeMap<String, String> {
        [
            ("AWS_ACCESS_KEY_ID".to_string(), "AKIATESTBASE".to_string()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                "test-secret-base".to_string(),
            ),
        ]
        .into()
    }

    fn error_paths(yaml: &str, env: &BTreeMap<String, String>) -> Vec<String> {
        match compile("c", &raw(yaml), env) {
            Ok(_) => vec![],
            Err(errors) => errors.into_iter().map(|e| e.path).collect(),
        }
    }

    const GOOD: &str = "{ role_arn: 'arn:aws:iam::123456789012:role/r', region: eu-west-1 }";

    #[test]
    fn valid_configuration_compiles_with_defaults() {
        let source = compile("c", &raw(GOOD), &env()).unwrap();
        assert_eq!(source.duration, DEFAULT_DURATION);
        assert_eq!(
            source.endpoint.to_string(),
            "https://sts.eu-west-1.amazonaws.com/"
        );
        assert_eq!(source.kind(), "aws");
    }

    #[test]
    fn refused_configurations_name_their_field() {
        assert_eq!(
            error_paths(
                "{ role_arn: 'arn:aws:iam::1:user/u', region: 'EU WEST', duration: 5m, \
                 sts_endpoint: 'http://sts.example', timeout: 0s }",
                &env()
            ),
            ["role_arn", "region", "duration", "timeout", "sts_endpoint"]
        );
        assert_eq!(error_paths(GOOD, &BTreeMap::new()), ["base"]);
        assert_eq!(
            error_paths(
                "{ role_arn: 'arn:aws:iam::123456789012:role/r', region: eu-west-1, base: vault }",
                &env()
            ),
            ["base"]
        );
        assert!(error_paths(
            "{ role_arn: 'arn:aws:iam::123456789012:role/r', region: eu-west-1, \
               sts_endpoint: 'http://127.0.0.1:4566' }",
            &env()
        )
        .is_empty());
    }

    #[test]
    fn errors_never_show_the_base_secret() {
        let mut env = env();
        env.remove("AWS_ACCESS_KEY_ID");
        let Err(errors) = compile("c", &raw(GOOD), &env) else {
            panic!("compiled without base keys");
        };
        assert!(!format!("{errors:?}").contains("test-secret"));
    }

    #[test]
    fn profile_base_reads_the_shared_credentials_file() {
        let dir = std::env::temp_dir().join(format!(
            "credgate-aws-{}",
            crate::credential::new_credential_id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("credentials");
        std::fs::write(
            &file,
            "[default]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = x\n\
             [agents]\naws_access_key_id = AKIAAGENTS\naws_secret_access_key = test-secret-p\n",
        )
        .unwrap();
        let env: BTreeMap<String, String> = [(
            "AWS_SHARED_CREDENTIALS_FILE".to_string(),
            file.display().to_string(),
        )]
        .into();
        let yaml = "{ role_arn: 'arn:aws:iam::123456789012:role/r', region: eu-west-1, \
                    base: { profile: agents } }";
        let source = compile("c", &raw(yaml), &env).unwrap();
        match &source.base {
            Base::Keys { access_key_id, .. } => assert_eq!(access_key_id, "AKIAAGENTS"),
            Base::WebIdentity { .. } => panic!("expected keys"),
        }
        let missing = "{ role_arn: 'arn:aws:iam::123456789012:role/r', region: eu-west-1, \
                       base: { profile: nope } }";
        assert_eq!(error_paths(missing, &env), ["base.profile"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn narrowing_is_a_canonical_session_policy() {
        use crate::credential::SourceSpec;
        let spec = validate("c", &raw(GOOD), &env()).unwrap();
        let source = spec.source(&env()).unwrap();
        let block: serde_yaml::Value = serde_yaml::from_str(
            "policy: { Version: '2012-10-17', Statement: [ { Effect: Allow, Action: 's3:GetObject', Resource: '*' } ] }",
        )
        .unwrap();
        spec.check_narrowing(&block).unwrap();
        let view = RequestView {
            method: &::http::Method::GET,
            host: "h",
            path: "/",
        };
        let narrowing = source.narrow(Some(&block), &view).unwrap();
        assert_eq!(
            narrowing.key,
            r#"{"Statement":[{"Action":"s3:GetObject","Effect":"Allow","Resource":"*"}],"Version":"2012-10-17"}"#
        );
        assert_eq!(narrowing.value["policy"], narrowing.key.as_str());
        assert_eq!(source.narrow(None, &view).unwrap(), Narrowing::default());
        let paths = |yaml: &str| -> Vec<String> {
            let block: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
            spec.check_narrowing(&block)
                .unwrap_err()
                .into_iter()
                .map(|e| e.path)
                .collect()
        };
        assert_eq!(paths("scope: [x]"), ["scope", "policy"]);
        assert_eq!(paths("policy: 'allow all'"), ["policy"]);
        assert_eq!(paths("policy: { Version: '2012-10-17' }"), ["policy"]);
        let big = format!(
            "policy: {{ Statement: [], Padding: '{}' }}",
            "x".repeat(MAX_POLICY_CHARS)
        );
        assert_eq!(paths(&big), ["policy"]);
    }

    #[test]
    fn duration_is_bounded_by_the_task_but_not_below_the_sts_minimum() {
        let mut source = compile("c", &raw(GOOD), &env()).unwrap();
        source.duration = Duration::from_secs(3600);
        let ctx = |left: u64| FetchContext {
            task_id: "t".into(),
            agent: "a".into(),
            labels: BTreeMap::new(),
            task_expires_at: SystemTime::now() + Duration::from_secs(left),
            narrowing: Narrowing::default(),
        };
        assert_eq!(source.duration_for(&ctx(7200)), Duration::from_secs(3600));
        let mid = source.duration_for(&ctx(1800)).as_secs();
        assert!((1790..=1800).contains(&mid), "{mid}");
        assert_eq!(source.duration_for(&ctx(60)), MIN_DURATION);
    }
}
