//! Configuration: raw serde structs, validated into the model the proxy runs on.
//!
//! Loading is two-stage. The YAML is parsed into a generic tree, then every
//! section, credential and rule is deserialised and compiled on its own, so
//! one run reports *all* problems with their field paths
//! (`scopes.github-read[0].paths[1]: …`) instead of stopping at the first.
//!
//! The result, [`Config`], is a plain value: compiled rules, parsed
//! durations and URLs, secret *references*. Validation opens no file, reads
//! no variable and starts no client except through the [`Provider`] it is
//! given (to check that a secret resolves, a key parses, a program is
//! executable), so a test validates with a
//! [`FakeProvider`](crate::provider::FakeProvider) and compares the model.
//! Live sources and clients are built from it in one place, the gateway's
//! snapshot ([`crate::proxy::Snapshot`]).

mod credential;

pub use credential::{CredentialSpec, RawCredential};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::field::{join_path, FieldError};
use crate::policy::{Policy, RawRule, ScopeRule};
use crate::provider::Provider;
use crate::sanitize::{RawSanitize, Sanitizer};
use crate::secret::SecretRef;

/// The default configuration file, relative to the working directory.
pub const DEFAULT_CONFIG_PATH: &str = "config/credgate.yaml";

/// The default configuration, built into the binary (for `credgate demo`).
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config/credgate.yaml");

/// A validated configuration.
#[derive(Debug)]
pub struct Config {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// Where the transparent listener takes the connections `credgate init`
    /// redirects (none when empty): one address, or one per family
    /// (`127.0.0.1:15001` and `[::1]:15001`, where the lock-down sends IPv4
    /// and IPv6).
    pub transparent_listen: Vec<SocketAddr>,
    /// The proxy URL handed to agents (without credentials); when unset,
    /// `http://` + the address actually bound.
    pub proxy_url: Option<String>,
    /// The admin API.
    pub admin: AdminConfig,
    /// The interception CA.
    pub ca: CaConfig,
    /// The decision log.
    pub audit_path: PathBuf,
    /// Upstream connections.
    pub upstream: UpstreamConfig,
    /// Task lifetimes.
    pub tasks: TaskLimits,
    /// Request-side header stripping and secret detection.
    pub sanitizer: Sanitizer,
    /// Credentials by name.
    pub credentials: BTreeMap<String, CredentialSpec>,
    /// Compiled scopes.
    pub policy: Policy,
    /// Sidecar mode: the task active for the pod's lifetime.
    pub ambient_task: Option<AmbientTask>,
    /// How long a pending approval waits for an answer.
    pub approval_pending_ttl: Duration,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address of the admin API.
    pub listen: SocketAddr,
    /// Bearer token for the admin API. `credgate serve` creates the file
    /// (mode 0600) with a random token when it does not exist yet.
    pub token: SecretRef,
}

/// The interception CA files.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// CA certificate (PEM); agents trust it.
    pub cert: PathBuf,
    /// CA private key (PEM, mode 0600).
    pub key: PathBuf,
}

/// Upstream connection settings.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Extra CA bundle trusted for upstreams, besides the webpki roots.
    pub extra_ca: Option<PathBuf>,
    /// Resolve + connect + TLS handshake.
    pub connect_timeout: Duration,
    /// From sending the request to the response head.
    pub first_byte_timeout: Duration,
    /// The longest the response body may go without a byte: a stream that
    /// keeps flowing lives as long as it flows.
    pub idle_timeout: Duration,
    /// The whole exchange, body included; none by default, so a healthy
    /// long stream (an LLM's tokens, a log tail) is not cut.
    pub total_timeout: Option<Duration>,
    /// The most a compressed response body may decode to; past it the
    /// response is cut (`response_too_large`).
    pub max_decoded_body: u64,
    /// The most a compressed body may grow by (decoded bytes per encoded
    /// byte), judged once it has decoded past 1 MiB: a decompression bomb
    /// is stopped long before `max_decoded_body`.
    pub max_decode_ratio: u64,
}

/// Task lifetime bounds.
#[derive(Debug, Clone, Copy)]
pub struct TaskLimits {
    /// TTL of a task started without one.
    pub default_ttl: Duration,
    /// The longest TTL a task may ask for.
    pub max_ttl: Duration,
}

/// The ambient task of sidecar mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbientTask {
    /// Agent name recorded for its requests.
    pub agent: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// Labels recorded with every request.
    pub labels: BTreeMap<String, String>,
    /// Lifetime; the task ends at shutdown or after this long.
    pub ttl: Duration,
}

/// All the problems found in a configuration.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors {
    /// The file the errors are about, when there is one.
    pub file: Option<PathBuf>,
    /// Every problem, in file order.
    pub errors: Vec<FieldError>,
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => writeln!(
                f,
                "{} has {} problem(s):",
                file.display(),
                self.errors.len()
            )?,
            None => writeln!(f, "the configuration has {} problem(s):", self.errors.len())?,
        }
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    token: Option<SecretRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    #[serde(default)]
    extra_ca: Option<PathBuf>,
    #[serde(default)]
    connect_timeout: Option<String>,
    #[serde(default)]
    first_byte_timeout: Option<String>,
    #[serde(default)]
    idle_timeout: Option<String>,
    #[serde(default)]
    total_timeout: Option<String>,
    #[serde(default)]
    max_decoded_body: Option<String>,
    #[serde(default)]
    max_decode_ratio: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTasks {
    #[serde(default)]
    default_ttl: Option<String>,
    #[serde(default)]
    max_ttl: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApprovals {
    #[serde(default)]
    pending_ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmbient {
    #[serde(default)]
    agent: Option<String>,
    scopes: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    ttl: Option<String>,
}

const TOP_LEVEL: &[&str] = &[
    "listen",
    "transparent_listen",
    "proxy_url",
    "admin",
    "ca",
    "audit",
    "upstream",
    "tasks",
    "sanitize",
    "credentials",
    "scopes",
    "ambient_task",
    "approvals",
];

/// Collects errors while the sections are validated one by one.
struct Collector {
    errors: Vec<FieldError>,
}

impl Collector {
    fn section<T: DeserializeOwned>(&mut self, path: &str, value: &serde_yaml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let inner = if inner == "." { String::new() } else { inner };
                let message = e.into_inner().to_string();
                self.errors
                    .push(FieldError::new(join_path(path, &inner), message));
                None
            }
        }
    }

    fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        match text.map(crate::units::parse_duration) {
            None => default,
            Some(Ok(d)) if d.is_zero() => {
                self.errors
                    .push(FieldError::new(path, "must be longer than zero"));
                default
            }
            Some(Ok(d)) => d,
            Some(Err(msg)) => {
                self.errors.push(FieldError::new(path, msg));
                default
            }
        }
    }

    fn size(&mut self, path: &str, text: Option<&str>, default: u64) -> u64 {
        match text.map(crate::units::parse_size) {
            None => default,
            Some(Ok(0)) => {
                self.errors
                    .push(FieldError::new(path, "must be larger than zero"));
                default
            }
            Some(Ok(n)) => n,
            Some(Err(msg)) => {
                self.errors.push(FieldError::new(path, msg));
                default
            }
        }
    }

    fn positive(&mut self, path: &str, value: Option<u64>, default: u64) -> u64 {
        match value {
            None => default,
            Some(0) => {
                self.errors
                    .push(FieldError::new(path, "must be larger than zero"));
                default
            }
            Some(n) => n,
        }
    }

    fn addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.errors.push(FieldError::new(
                    path,
                    format!("{text:?} is not an address like 127.0.0.1:8080"),
                ));
                None
            }
        }
    }

    fn extend(&mut self, prefix: &str, errors: Vec<FieldError>) {
        self.errors
            .extend(errors.into_iter().map(|e| e.under(prefix)));
    }
}

impl Config {
    /// Reads (through `env`) and validates `path`.
    pub fn load(path: &Path, env: &dyn Provider) -> Result<Config, ConfigErrors> {
        let cannot = |message: String| ConfigErrors {
            file: Some(path.to_path_buf()),
            errors: vec![FieldError::new("", message)],
        };
        let bytes = env
            .read(path)
            .map_err(|e| cannot(format!("cannot read the file: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| cannot("the file is not UTF-8 text".to_string()))?;
        Config::parse(&text, env).map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })
    }

    /// Validates configuration text, learning about secrets and files only
    /// through `env`.
    pub fn parse(text: &str, env: &dyn Provider) -> Result<Config, ConfigErrors> {
        let fail = |errors| ConfigErrors { file: None, errors };
        let root: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| fail(vec![FieldError::new("", format!("not valid YAML: {e}"))]))?;
        let empty = serde_yaml::Mapping::new();
        let map = match &root {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => &empty,
            _ => {
                return Err(fail(vec![FieldError::new(
                    "",
                    "the top level must be a mapping",
                )]))
            }
        };
        let mut c = Collector { errors: Vec::new() };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if TOP_LEVEL.contains(&k) => {}
                _ => c.errors.push(FieldError::new(
                    yaml_key(key),
                    format!("unknown field, expected one of: {}", TOP_LEVEL.join(", ")),
                )),
            }
        }
        let get = |k: &str| map.get(k).filter(|v| !v.is_null());

        let listen_text: String = get("listen")
            .and_then(|v| c.section("listen", v))
            .unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let listen = c.addr("listen", &listen_text);
        let transparent_listen: Vec<SocketAddr> = match get("transparent_listen") {
            None => Vec::new(),
            Some(v) if v.is_sequence() => c
                .section::<Vec<String>>("transparent_listen", v)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter_map(|(i, text)| c.addr(&format!("transparent_listen[{i}]"), text))
                .collect(),
            Some(v) => c
                .section::<String>("transparent_listen", v)
                .and_then(|text| c.addr("transparent_listen", &text))
                .into_iter()
                .collect(),
        };
        let proxy_url = get("proxy_url").and_then(|v| c.section::<String>("proxy_url", v));
        if let Some(url) = &proxy_url {
            let ok = url
                .strip_prefix("http://")
                .is_some_and(|rest| !rest.is_empty() && !rest.contains(['@', '/', '?', '#']));
            if !ok {
                c.errors.push(FieldError::new(
                    "proxy_url",
                    "must look like http://host:port (no path, no credentials)",
                ));
            }
        }

        let admin: Option<RawAdmin> = get("admin").and_then(|v| c.section("admin", v));
        let admin_listen_text = admin
            .as_ref()
            .and_then(|a| a.listen.clone())
            .unwrap_or_else(|| "127.0.0.1:8081".to_string());
        let admin_listen = c.addr("admin.listen", &admin_listen_text);
        let admin_token = admin
            .and_then(|a| a.token)
            .unwrap_or_else(|| SecretRef::File(".credgate/admin-token".into()));

        let ca = get("ca")
            .and_then(|v| c.section::<RawCa>("ca", v))
            .map(|r| CaConfig {
                cert: r.cert,
                key: r.key,
            })
            .unwrap_or_else(|| CaConfig {
                cert: ".credgate/ca.crt".into(),
                key: ".credgate/ca.key".into(),
            });
        let audit_path = get("audit")
            .and_then(|v| c.section::<RawAudit>("audit", v))
            .map(|r| r.path)
            .unwrap_or_else(|| ".credgate/decisions.jsonl".into());

        let up: RawUpstream = get("upstream")
            .and_then(|v| c.section("upstream", v))
            .unwrap_or_default();
        if let Some(path) = &up.extra_ca {
            if let Err(e) = crate::tls::upstream_client_config(Some(path), env) {
                c.errors
                    .push(FieldError::new("upstream.extra_ca", e.to_string()));
            }
        }
        let upstream = UpstreamConfig {
            extra_ca: up.extra_ca,
            connect_timeout: c.duration(
                "upstream.connect_timeout",
                up.connect_timeout.as_deref(),
                Duration::from_secs(10),
            ),
            first_byte_timeout: c.duration(
                "upstream.first_byte_timeout",
                up.first_byte_timeout.as_deref(),
                Duration::from_secs(60),
            ),
            idle_timeout: c.duration(
                "upstream.idle_timeout",
                up.idle_timeout.as_deref(),
                Duration::from_secs(300),
            ),
            total_timeout: up
                .total_timeout
                .as_deref()
                .map(|text| c.duration("upstream.total_timeout", Some(text), Duration::MAX)),
            max_decoded_body: c.size(
                "upstream.max_decoded_body",
                up.max_decoded_body.as_deref(),
                1 << 30,
            ),
            max_decode_ratio: c.positive("upstream.max_decode_ratio", up.max_decode_ratio, 100),
        };

        let raw_tasks: RawTasks = get("tasks")
            .and_then(|v| c.section("tasks", v))
            .unwrap_or_default();
        let tasks = TaskLimits {
            default_ttl: c.duration(
                "tasks.default_ttl",
                raw_tasks.default_ttl.as_deref(),
                Duration::from_secs(15 * 60),
            ),
            max_ttl: c.duration(
                "tasks.max_ttl",
                raw_tasks.max_ttl.as_deref(),
                Duration::from_secs(8 * 3600),
            ),
        };
        if tasks.default_ttl > tasks.max_ttl {
            c.errors.push(FieldError::new(
                "tasks.default_ttl",
                "is longer than tasks.max_ttl",
            ));
        }

        let raw_approvals: RawApprovals = get("approvals")
            .and_then(|v| c.section("approvals", v))
            .unwrap_or_default();
        let approval_pending_ttl = c.duration(
            "approvals.pending_ttl",
            raw_approvals.pending_ttl.as_deref(),
            Duration::from_secs(15 * 60),
        );

        let raw_sanitize: RawSanitize = get("sanitize")
            .and_then(|v| c.section("sanitize", v))
            .unwrap_or_default();
        let sanitizer = match Sanitizer::compile(&raw_sanitize) {
            Ok(s) => Some(s),
            Err(errors) => {
                c.extend("sanitize", errors);
                None
            }
        };

        let mut credentials = BTreeMap::new();
        if let Some(v) = get("credentials") {
            if let Some(raw) = c.section::<BTreeMap<String, serde_yaml::Value>>("credentials", v) {
                for (name, value) in raw {
                    let path = format!("credentials.{name}");
                    let Some(raw_cred) = c.section::<RawCredential>(&path, &value) else {
                        continue;
                    };
                    match CredentialSpec::compile(&name, &raw_cred, env) {
                        Ok(spec) => {
                            credentials.insert(name, spec);
                        }
                        Err(errors) => c.extend(&path, errors),
                    }
                }
            }
        }

        let mut scopes = Vec::new();
        if let Some(v) = get("scopes") {
            if let Some(raw) = c.section::<BTreeMap<String, serde_yaml::Value>>("scopes", v) {
                for (name, value) in raw {
                    let path = format!("scopes.{name}");
                    let Some(rules) = c.section::<Vec<serde_yaml::Value>>(&path, &value) else {
                        continue;
                    };
                    let mut compiled = Vec::new();
                    for (i, rule_value) in rules.iter().enumerate() {
                        let rule_path = format!("{path}[{i}]");
                        let Some(raw_rule) = c.section::<RawRule>(&rule_path, rule_value) else {
                            continue;
                        };
                        if let Some(cred) = &raw_rule.credential {
                            if !credentials.contains_key(cred)
                                && !c
                                    .errors
                                    .iter()
                                    .any(|e| e.path.starts_with(&format!("credentials.{cred}")))
                            {
                                c.errors.push(FieldError::new(
                                    format!("{rule_path}.credential"),
                                    format!("no credential named {cred:?} under credentials"),
                                ));
                            }
                        }
                        if let (Some(cred), Some(narrowing)) =
                            (&raw_rule.credential, &raw_rule.narrowing)
                        {
                            if let Some(def) = credentials.get(cred) {
                                if let Err(errors) = def.source.check_narrowing(narrowing) {
                                    c.extend(&format!("{rule_path}.narrowing"), errors);
                                }
                            }
                        }
                        match ScopeRule::compile(&name, i, &raw_rule) {
                            Ok(rule) => compiled.push(rule),
                            Err(errors) => c.extend(&rule_path, errors),
                        }
                    }
                    scopes.push((name, compiled));
                }
            }
        }
        let policy = Policy::new(scopes);

        let ambient_task = get("ambient_task")
            .and_then(|v| c.section::<RawAmbient>("ambient_task", v))
            .map(|raw| {
                if raw.scopes.is_empty() {
                    c.errors.push(FieldError::new(
                        "ambient_task.scopes",
                        "needs at least one scope",
                    ));
                }
                for (i, s) in raw.scopes.iter().enumerate() {
                    if !policy.has_scope(s) {
                        c.errors.push(FieldError::new(
                            format!("ambient_task.scopes[{i}]"),
                            format!("no scope named {s:?} under scopes"),
                        ));
                    }
                }
                AmbientTask {
                    agent: raw.agent.unwrap_or_else(|| "sidecar".to_string()),
                    scopes: raw.scopes,
                    labels: raw.labels,
                    ttl: c.duration(
                        "ambient_task.ttl",
                        raw.ttl.as_deref(),
                        Duration::from_secs(365 * 24 * 3600),
                    ),
                }
            });

        if !c.errors.is_empty() {
            return Err(fail(c.errors));
        }
        let listen = listen.expect("no errors means listen parsed");
        Ok(Config {
            listen,
            transparent_listen,
            proxy_url,
            admin: AdminConfig {
                listen: admin_listen.expect("no errors means admin.listen parsed"),
                token: admin_token,
            },
            ca,
            audit_path,
            upstream,
            tasks,
            sanitizer: sanitizer.expect("no errors means sanitize compiled"),
            credentials,
            policy,
            ambient_task,
            approval_pending_ttl,
        })
    }

    /// The scopes in plain words, for `credgate check`.
    pub fn describe_scopes(&self) -> String {
        let mut out = String::new();
        for name in self.policy.scope_names() {
            out.push_str(&format!("scope {name}:\n"));
            for rule in self.policy.rules(name).unwrap_or_default() {
                out.push_str(&format!("  - {}\n", rule.describe()));
                if let Some(def) = rule
                    .credential
                    .as_ref()
                    .and_then(|c| self.credentials.get(c))
                {
                    out.push_str(&format!(
                        "      credential {} from {} source, injected as {}\n",
                        def.name,
                        def.source.kind(),
                        def.injection.describe()
                    ));
                }
            }
        }
        out
    }
}

fn yaml_key(key: &serde_yaml::Value) -> String {
    match key {
        serde_yaml::Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests;
