//! `aws:` as written in the configuration, and its validation into an
//! [`AwsSource`]: the role, region, duration, base credentials and STS
//! endpoint.

use super::*;

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
pub fn compile(
    name: &str,
    raw: &RawAws,
    env: &dyn Environment,
) -> Result<AwsSource, Vec<FieldError>> {
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
    let base = compile_base(raw.base.as_ref(), env, &mut errors);
    let http = StsHttp::new(raw.ca.as_deref(), timeout)
        .map_err(|m| errors.push(FieldError::new("ca", m)))
        .ok();
    match (base, endpoint, http) {
        (Some(base), Some(endpoint), Some(http)) if errors.is_empty() => Ok(AwsSource {
            credential: name.to_string(),
            role_arn: raw.role_arn.clone(),
            region: raw.region.clone(),
            duration,
            base,
            endpoint,
            http,
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

fn compile_base(
    raw: Option<&RawBase>,
    env: &dyn Environment,
    errors: &mut Vec<FieldError>,
) -> Option<Base> {
    match raw {
        None => base_from_env(env, errors),
        Some(RawBase::Named(name)) if name == "env" => base_from_env(env, errors),
        Some(RawBase::Named(other)) => {
            errors.push(FieldError::new(
                "base",
                format!("{other:?} is not a base: use env, {{ profile: NAME }} or {{ web_identity: {{ role_arn, token_file }} }}"),
            ));
            None
        }
        Some(RawBase::Profile { profile }) => base_from_profile(profile, env)
            .map_err(|m| errors.push(FieldError::new("base.profile", m)))
            .ok(),
        Some(RawBase::WebIdentity { web_identity }) => {
            if !is_role_arn(&web_identity.role_arn) {
                errors.push(FieldError::new(
                    "base.web_identity.role_arn",
                    format!("{:?} is not a role ARN", web_identity.role_arn),
                ));
            }
            if let Err(e) = std::fs::metadata(&web_identity.token_file) {
                errors.push(FieldError::new(
                    "base.web_identity.token_file",
                    format!("cannot read {}: {e}", web_identity.token_file.display()),
                ));
            }
            Some(Base::WebIdentity {
                role_arn: web_identity.role_arn.clone(),
                token_file: web_identity.token_file.clone(),
            })
        }
    }
}

fn base_from_env(env: &dyn Environment, errors: &mut Vec<FieldError>) -> Option<Base> {
    let key_id = env.var("AWS_ACCESS_KEY_ID").filter(|v| !v.is_empty());
    let secret = env.var("AWS_SECRET_ACCESS_KEY").filter(|v| !v.is_empty());
    match (key_id, secret) {
        (Some(access_key_id), Some(secret)) => Some(Base::Keys {
            access_key_id,
            secret_access_key: Secret::new(secret),
            session_token: env
                .var("AWS_SESSION_TOKEN")
                .filter(|v| !v.is_empty())
                .map(Secret::new),
        }),
        _ => {
            errors.push(FieldError::new(
                "base",
                "base env needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment",
            ));
            None
        }
    }
}

/// Reads `[profile]` from the shared credentials file
/// (`AWS_SHARED_CREDENTIALS_FILE`, else `$HOME/.aws/credentials`).
fn base_from_profile(profile: &str, env: &dyn Environment) -> Result<Base, String> {
    let path = env
        .var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| {
            env.var("HOME")
                .map(|h| Path::new(&h).join(".aws/credentials"))
        })
        .ok_or("neither AWS_SHARED_CREDENTIALS_FILE nor HOME is set")?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
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
