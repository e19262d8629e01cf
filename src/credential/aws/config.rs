//! `aws:` as written in the configuration, its validation into an
//! [`AwsSpec`] (the role, region, duration, base credentials and STS
//! endpoint), and the building of an [`AwsSource`].

use std::sync::Arc;

use super::*;
use crate::credential::spec::{source_tls, SourceSpec};
use crate::credential::CredentialSource;

/// The `aws` source, validated.
#[derive(Debug, Clone)]
pub struct AwsSpec {
    credential: String,
    role_arn: String,
    region: String,
    duration: Duration,
    base: BaseSpec,
    endpoint: ::http::Uri,
    ca: Option<PathBuf>,
    timeout: Duration,
}

/// Where credgate's own credentials come from, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BaseSpec {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    Env,
    /// A profile of the shared credentials file.
    Profile(String),
    /// AssumeRoleWithWebIdentity with the token in `token_file`.
    WebIdentity {
        role_arn: String,
        token_file: PathBuf,
    },
}

impl SourceSpec for AwsSpec {
    fn kind(&self) -> &'static str {
        "aws"
    }

    fn check_narrowing(&self, narrowing: &serde_yaml::Value) -> Result<(), Vec<FieldError>> {
        policy_of(Some(narrowing)).map(|_| ())
    }

    fn build(&self, provider: &dyn Provider) -> Result<Arc<dyn CredentialSource>, Vec<FieldError>> {
        Ok(Arc::new(self.source(provider)?))
    }
}

impl AwsSpec {
    /// The live source: the base keys read, the `ca` bundle read, the client made.
    pub(crate) fn source(&self, provider: &dyn Provider) -> Result<AwsSource, Vec<FieldError>> {
        let base = load_base(&self.base, provider);
        let tls = source_tls(self.ca.as_deref(), provider);
        match (base, tls) {
            (Ok(base), Ok(tls)) => Ok(AwsSource {
                credential: self.credential.clone(),
                role_arn: self.role_arn.clone(),
                region: self.region.clone(),
                duration: self.duration,
                base,
                endpoint: self.endpoint.clone(),
                http: StsHttp::new(tls, self.timeout),
            }),
            (base, tls) => Err(base.err().into_iter().chain(tls.err()).collect()),
        }
    }
}

/// `aws:` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    /// The role each task's session assumes.
    pub role_arn: String,
    /// The region of the STS endpoint (and of the signing scope of STS calls).
    pub region: String,
    /// How long each session lives (`15m` when absent).
    #[serde(default)]
    pub duration: Option<String>,
    /// credgate's own credentials, which sign the AssumeRole call (`env` when absent).
    #[serde(default)]
    pub base: Option<RawBase>,
    /// The STS endpoint; `https://sts.<region>.amazonaws.com` when absent.
    #[serde(default)]
    pub sts_endpoint: Option<String>,
    /// A PEM bundle of extra CAs to trust for the STS endpoint.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The bound of each STS call (`10s` when absent).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `base:`: where credgate's own AWS credentials come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawBase {
    /// `env`: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN.
    Named(String),
    /// `{ profile: name }`: a profile of the shared credentials file.
    Profile {
        /// The profile name.
        profile: String,
    },
    /// `{ web_identity: { role_arn, token_file } }`: AssumeRoleWithWebIdentity.
    WebIdentity {
        /// The role and the token file.
        web_identity: RawWebIdentity,
    },
}

/// `base: { web_identity: ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebIdentity {
    /// The role credgate itself assumes with the token.
    pub role_arn: String,
    /// The OIDC token file (e.g. a projected service account token); read at each use.
    pub token_file: PathBuf,
}

/// Validates the configuration: a role ARN, a plain region, a duration STS
/// accepts, base credentials that resolve now (through `env`), an https
/// endpoint (or http to loopback) and a readable `ca`. Every problem is
/// reported with its field path.
pub fn validate(name: &str, raw: &RawAws, env: &dyn Provider) -> Result<AwsSpec, Vec<FieldError>> {
    let mut errors = Vec::new();
    if !is_role_arn(&raw.role_arn) {
        errors.push(FieldError::new(
            "role_arn",
            format!(
                "{:?} is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                raw.role_arn
            ),
        ));
    }
    if sigv4::SigV4::compile(&sigv4::RawSigV4 {
        service: None,
        region: Some(raw.region.clone()),
    })
    .is_err()
    {
        errors.push(FieldError::new(
            "region",
            format!("{:?} is not a region name", raw.region),
        ));
    }
    let duration = match raw.duration.as_deref().map(parse_duration) {
        None => DEFAULT_DURATION,
        Some(Ok(d)) if (MIN_DURATION..=MAX_DURATION).contains(&d) => d,
        Some(Ok(_)) => {
            errors.push(FieldError::new(
                "duration",
                "STS grants sessions of 15m to 12h",
            ));
            DEFAULT_DURATION
        }
        Some(Err(message)) => {
            errors.push(FieldError::new("duration", message));
            DEFAULT_DURATION
        }
    };
    let timeout = crate::credential::source_timeout(raw.timeout.as_deref(), &mut errors);
    let endpoint_text = raw
        .sts_endpoint
        .clone()
        .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com", raw.region));
    let endpoint = check_sts_endpoint(&endpoint_text)
        .map_err(|m| errors.push(FieldError::new("sts_endpoint", m)))
        .ok();
    let base = validate_base(raw.base.as_ref(), env, &mut errors);
    if let Some(Err(e)) = base.as_ref().map(|base| load_base(base, env)) {
        errors.push(e);
    }
    if let Err(e) = source_tls(raw.ca.as_deref(), env) {
        errors.push(e);
    }
    match (base, endpoint) {
        (Some(base), Some(endpoint)) if errors.is_empty() => Ok(AwsSpec {
            credential: name.to_string(),
            role_arn: raw.role_arn.clone(),
            region: raw.region.clone(),
            duration,
            base,
            endpoint,
            ca: raw.ca.clone(),
            timeout,
        }),
        _ => Err(errors),
    }
}

fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5]
            .strip_prefix("role/")
            .is_some_and(|r| !r.is_empty())
}

/// `https://...`, or `http://` to a loopback host; no userinfo, query or
/// fragment (see [`endpoint::check_endpoint`]).
fn check_sts_endpoint(url: &str) -> Result<::http::Uri, String> {
    let uri = endpoint::check_endpoint(url)?;
    if uri.query().is_some() {
        return Err("the STS endpoint must not carry a query".into());
    }
    Ok(uri)
}

fn validate_base(
    raw: Option<&RawBase>,
    env: &dyn Provider,
    errors: &mut Vec<FieldError>,
) -> Option<BaseSpec> {
    match raw {
        None => Some(BaseSpec::Env),
        Some(RawBase::Named(name)) if name == "env" => Some(BaseSpec::Env),
        Some(RawBase::Named(other)) => {
            errors.push(FieldError::new(
                "base",
                format!("{other:?} is not a base: use env, {{ profile: NAME }} or {{ web_identity: {{ role_arn, token_file }} }}"),
            ));
            None
        }
        Some(RawBase::Profile { profile }) => Some(BaseSpec::Profile(profile.clone())),
        Some(RawBase::WebIdentity { web_identity }) => {
            if !is_role_arn(&web_identity.role_arn) {
                errors.push(FieldError::new(
                    "base.web_identity.role_arn",
                    format!("{:?} is not a role ARN", web_identity.role_arn),
                ));
            }
            if let Err(e) = env.metadata(&web_identity.token_file) {
                errors.push(FieldError::new(
                    "base.web_identity.token_file",
                    format!("cannot read {}: {e}", web_identity.token_file.display()),
                ));
            }
            Some(BaseSpec::WebIdentity {
                role_arn: web_identity.role_arn.clone(),
                token_file: web_identity.token_file.clone(),
            })
        }
    }
}

/// credgate's own credentials, read (through `env`) for keys, as an error
/// at `base` or `base.profile`.
fn load_base(base: &BaseSpec, env: &dyn Provider) -> Result<Base, FieldError> {
    match base {
        BaseSpec::Env => base_from_env(env).map_err(|m| FieldError::new("base", m)),
        BaseSpec::Profile(profile) => {
            base_from_profile(profile, env).map_err(|m| FieldError::new("base.profile", m))
        }
        BaseSpec::WebIdentity {
            role_arn,
            token_file,
        } => Ok(Base::WebIdentity {
            role_arn: role_arn.clone(),
            token_file: token_file.clone(),
        }),
    }
}

fn base_from_env(env: &dyn Provider) -> Result<Base, String> {
    let key_id = env.var("AWS_ACCESS_KEY_ID").filter(|v| !v.is_empty());
    let secret = env.var("AWS_SECRET_ACCESS_KEY").filter(|v| !v.is_empty());
    match (key_id, secret) {
        (Some(access_key_id), Some(secret)) => Ok(Base::Keys {
            access_key_id,
            secret_access_key: Secret::new(secret),
            session_token: env
                .var("AWS_SESSION_TOKEN")
                .filter(|v| !v.is_empty())
                .map(Secret::new),
        }),
        _ => Err(
            "base env needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment".into(),
        ),
    }
}

/// Reads `[profile]` from the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, else `$HOME/.aws/credentials`).
fn base_from_profile(profile: &str, env: &dyn Provider) -> Result<Base, String> {
    let path = env
        .var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| {
            env.var("HOME")
                .map(|h| Path::new(&h).join(".aws/credentials"))
        })
        .ok_or("neither AWS_SHARED_CREDENTIALS_FILE nor HOME is set")?;
    let bytes = zeroize::Zeroizing::new(
        env.read(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let text =
        std::str::from_utf8(&bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let (mut key_id, mut secret, mut token) = (None, None, None);
    let mut in_profile = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') && line.ends_with(']') {
            in_profile = line[1..line.len() - 1].trim() == profile;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if !in_profile {
            continue;
        }
        let v = v.trim().to_string();
        match k.trim() {
            "aws_access_key_id" => key_id = Some(v),
            "aws_secret_access_key" => secret = Some(Secret::new(v)),
            "aws_session_token" => token = Some(Secret::new(v)),
            _ => {}
        }
    }
    match (key_id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Base::Keys {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        _ => Err(format!(
            "profile {profile:?} in {} has no aws_access_key_id and aws_secret_access_key",
            path.display()
        )),
    }
}
