//! The `vault` source: HashiCorp Vault or OpenBao.
//!
//! credgate authenticates itself (a token, an AppRole login, or a JWT /
//! Kubernetes login whose token file is re-read on every login). For each
//! task it then creates a **child token** (`auth/token/create`, with the
//! configured policies, a TTL that never outlives the task, `no_parent:
//! false` and the task in its metadata) and reads the secret *under that
//! token*: a KV v2 field, a dynamic secret, or any path. Every lease a read
//! creates belongs to the child token, so revoking the token when the task
//! ends revokes them all.
//!
//! Leases are not renewed: a credential expires with its lease (or its child
//! token, whichever ends first), the cache re-fetches it before then, and the
//! re-read yields a fresh lease under a child token that is still valid for
//! the task. Renewal could not extend a lease past its `max_ttl` anyway, and
//! a re-read keeps one code path for every secret engine.
//!
//! Child tokens are held in [`Secret`]s, in a map by task; they are never
//! logged, and errors name the source and the path, never a token.

mod config;
mod http;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ::http::{Method, StatusCode};
use serde_json::json;

use crate::credential::secret::random_bytes;
use crate::credential::{
    Credential, CredentialError, CredentialSource, CredentialValue, FetchContext, Revocation,
    Secret,
};
pub(crate) use config::compile;
pub use config::{
    RawAppRole, RawChildToken, RawJwt, RawKv2, RawPathField, RawPathRead, RawVault, RawVaultAuth,
    RawVaultRead,
};
use http::{Answer, VaultHttp};

/// A login token is renewed by logging in again this long before it expires.
const LOGIN_MARGIN: Duration = Duration::from_secs(30);

/// How credgate authenticates itself to Vault.
pub(crate) enum Auth {
    /// A token given in configuration.
    Token(Secret),
    /// `auth/{mount}/login` with a role id and secret id.
    AppRole {
        mount: String,
        role_id: String,
        secret_id: Secret,
    },
    /// `auth/{mount}/login` with a role and the JWT in `token_file`.
    Jwt {
        mount: String,
        role: String,
        token_file: PathBuf,
    },
}

impl Auth {
    fn describe(&self) -> String {
        match self {
            Auth::Token(_) => "token".into(),
            Auth::AppRole { mount, .. } => format!("approle at auth/{mount}"),
            Auth::Jwt { mount, .. } => format!("jwt at auth/{mount}"),
        }
    }
}

/// What each per-task token may do, and how long it lives at most.
pub(crate) struct ChildTokenSpec {
    pub(crate) policies: Vec<String>,
    pub(crate) ttl: Duration,
}

/// What is read under the child token.
pub(crate) enum Read {
    /// `GET {mount}/data/{path}` → `data.data[field]`.
    Kv2 { data_path: String, field: String },
    /// `GET {path}` → `data[field]`, with a lease.
    Dynamic { path: String, field: String },
    /// `GET` or `POST {path}` → `data[field]`, with a lease if Vault gives one.
    Path {
        path: String,
        field: String,
        method: Method,
        body: BTreeMap<String, String>,
    },
}

impl Read {
    fn path(&self) -> &str {
        match self {
            Read::Kv2 { data_path, .. } => data_path,
            Read::Dynamic { path, .. } | Read::Path { path, .. } => path,
        }
    }
}

/// A token credgate holds: its own login, or a task's child token.
struct HeldToken {
    token: Secret,
    accessor: String,
    /// `None`: the token does not expire.
    expires_at: Option<SystemTime>,
}

/// The child tokens created for one task (usually one; more when a task
/// outlives a child token's TTL), all revoked when the task ends.
#[derive(Default)]
struct TaskTokens {
    tokens: Vec<HeldToken>,
}

/// Reads secrets from Vault under per-task child tokens.
pub struct VaultSource {
    credential: String,
    address: String,
    http: VaultHttp,
    auth: Auth,
    login: tokio::sync::Mutex<Option<HeldToken>>,
    child: ChildTokenSpec,
    read: Read,
    /// Task id → its child tokens. A lock per task serialises creating and
    /// revoking them.
    tasks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<TaskTokens>>>>,
    /// Credential id → the task it was issued for, so `revoke` finds the task.
    issued: Mutex<HashMap<String, String>>,
}

impl fmt::Debug for VaultSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSource")
            .field("credential", &self.credential)
            .field("address", &self.address)
            .field("auth", &self.auth.describe())
            .field("policies", &self.child.policies)
            .field("ttl", &self.child.ttl)
            .field("read", &self.read.path())
            .finish()
    }
}

impl VaultSource {
    pub(crate) fn new(
        credential: &str,
        address: &str,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
        auth: Auth,
        child: ChildTokenSpec,
        read: Read,
    ) -> VaultSource {
        VaultSource {
            credential: credential.to_string(),
            address: address.to_string(),
            http: VaultHttp::new(address, tls, timeout),
            auth,
            login: tokio::sync::Mutex::new(None),
            child,
            read,
            tasks: Mutex::default(),
            issued: Mutex::default(),
        }
    }

    fn error(&self, message: impl Into<String>) -> CredentialError {
        CredentialError::Source {
            credential: self.credential.clone(),
            source_kind: "vault",
            message: message.into(),
        }
    }

    /// Calls Vault; any failure to get an answer is an error naming `what`.
    async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        token: Option<&Secret>,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, CredentialError> {
        self.http
            .call(method, path, token, body)
            .await
            .map_err(|e| self.error(format!("{what} ({path}): {e}")))
    }

    /// credgate's own token: the configured one, or a login still valid for
    /// a while (logging in again when it is not).
    async fn parent_token(&self) -> Result<Secret, CredentialError> {
        let (mount, body) = match &self.auth {
            Auth::Token(token) => return Ok(token.clone()),
            Auth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let secret_id = secret_id
                    .expose_str()
                    .ok_or_else(|| self.error("the AppRole secret id is not UTF-8"))?;
                (mount, json!({ "role_id": role_id, "secret_id": secret_id }))
            }
            Auth::Jwt {
                mount,
                role,
                token_file,
            } => {
                let mut held = self.login.lock().await;
                if let Some(token) = still_valid(&held) {
                    return Ok(token);
                }
                // Re-read on every login: projected tokens are rotated on disk.
                let jwt = tokio::fs::read_to_string(token_file).await.map_err(|e| {
                    self.error(format!("cannot read {}: {e}", token_file.display()))
                })?;
                let body = json!({ "role": role, "jwt": jwt.trim() });
                let token = self.login_with(mount, &body).await?;
                let secret = token.token.clone();
                *held = Some(token);
                return Ok(secret);
            }
        };
        let mut held = self.login.lock().await;
        if let Some(token) = still_valid(&held) {
            return Ok(token);
        }
        let token = self.login_with(mount, &body).await?;
        let secret = token.token.clone();
        *held = Some(token);
        Ok(secret)
    }

    async fn login_with(
        &self,
        mount: &str,
        body: &serde_json::Value,
    ) -> Result<HeldToken, CredentialError> {
        let path = format!("auth/{mount}/login");
        let answer = self
            .call("logging in", Method::POST, &path, None, Some(body))
            .await?;
        if !answer.status.is_success() {
            return Err(self.error(format!(
                "logging in ({path}): Vault answered {} ({})",
                answer.status,
                answer.errors()
            )));
        }
        self.token_from(&answer, &path)
    }

    /// Forgets a login Vault refused, so the next fetch logs in again.
    async fn forget_login(&self) {
        *self.login.lock().await = None;
    }

    /// The `auth` block of a login or token-create answer.
    fn token_from(&self, answer: &Answer, path: &str) -> Result<HeldToken, CredentialError> {
        let auth = &answer.body["auth"];
        let token = auth["client_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                self.error(format!("{path}: Vault's answer has no auth.client_token"))
            })?;
        let lease = auth["lease_duration"].as_u64().unwrap_or(0);
        Ok(HeldToken {
            token: Secret::new(token),
            accessor: auth["accessor"].as_str().unwrap_or_default().to_string(),
            expires_at: (lease > 0).then(|| SystemTime::now() + Duration::from_secs(lease)),
        })
    }

    /// The task's child token, created when the task has none that is good
    /// for most of the life a new one would get.
    async fn child_token(
        &self,
        ctx: &FetchContext,
        tokens: &mut TaskTokens,
    ) -> Result<(Secret, Option<SystemTime>), CredentialError> {
        let now = SystemTime::now();
        let remaining =
            ctx.task_expires_at
                .duration_since(now)
                .map_err(|_| CredentialError::TaskEnded {
                    credential: self.credential.clone(),
                    source_kind: "vault",
                    task_id: ctx.task_id.clone(),
                })?;
        let ttl = self.child.ttl.min(remaining).max(Duration::from_secs(1));
        if let Some(latest) = tokens.tokens.last() {
            let left = latest
                .expires_at
                .map(|at| at.duration_since(now).unwrap_or_default());
            // Reuse while it has two thirds of a new token's life left, so a
            // refresh near expiry gets a fresh token rather than the same end.
            if left.is_none_or(|left| left * 3 >= ttl * 2) {
                return Ok((latest.token.clone(), latest.expires_at));
            }
        }
        let parent = self.parent_token().await?;
        let body = json!({
            "policies": self.child.policies,
            "ttl": format!("{}s", ttl.as_secs()),
            "explicit_max_ttl": format!("{}s", ttl.as_secs()),
            "no_parent": false,
            "renewable": false,
            "display_name": format!("credgate-{}", self.credential),
            "meta": { "task_id": ctx.task_id, "agent": ctx.agent, "credential": self.credential },
        });
        let path = "auth/token/create";
        let answer = self
            .call(
                "creating the task's child token",
                Method::POST,
                path,
                Some(&parent),
                Some(&body),
            )
            .await?;
        if !answer.status.is_success() {
            if answer.status == StatusCode::FORBIDDEN {
                self.forget_login().await;
            }
            return Err(self.error(format!(
                "creating the task's child token ({path}): Vault answered {} ({})",
                answer.status,
                answer.errors()
            )));
        }
        let held = self.token_from(&answer, path)?;
        let out = (held.token.clone(), held.expires_at);
        tokens.tokens.push(held);
        Ok(out)
    }

    fn task_lock(&self, task_id: &str) -> Arc<tokio::sync::Mutex<TaskTokens>> {
        self.tasks
            .lock()
            .expect("vault task map poisoned")
            .entry(task_id.to_string())
            .or_default()
            .clone()
    }

    async fn fetch_for(&self, ctx: &FetchContext) -> Result<Credential, CredentialError> {
        let lock = self.task_lock(&ctx.task_id);
        let mut tokens = lock.lock().await;
        let (child, token_expires) = self.child_token(ctx, &mut tokens).await?;
        drop(tokens);
        let read = self.read_under(&child, token_expires).await;
        match read {
            Ok((value, expires_at)) => {
                let id = format!("cred-{}", hex(&random_bytes::<6>()));
                self.issued
                    .lock()
                    .expect("vault issued map poisoned")
                    .insert(id.clone(), ctx.task_id.clone());
                Ok(Credential {
                    name: self.credential.clone(),
                    id,
                    source: "vault",
                    value: CredentialValue::Token(value),
                    expires_at,
                    standing: false,
                })
            }
            Err(e) => {
                self.abandon_unused(&ctx.task_id).await;
                Err(e)
            }
        }
    }

    /// A child token that read nothing is revoked now: no credential of the
    /// task refers to it, so the task's end would not.
    async fn abandon_unused(&self, task_id: &str) {
        if self.is_issued_for(task_id) {
            return;
        }
        let lock = self.task_lock(task_id);
        let mut tokens = lock.lock().await;
        while let Some(held) = tokens.tokens.last() {
            if let Err(e) = self.revoke_token(held).await {
                tracing::warn!(error = %e, "revoking an unused child token failed; it expires with its TTL");
                return;
            }
            tokens.tokens.pop();
        }
    }

    fn is_issued_for(&self, task_id: &str) -> bool {
        self.issued
            .lock()
            .expect("vault issued map poisoned")
            .values()
            .any(|t| t == task_id)
    }

    /// Reads the configured secret with `child`; the value and when it expires.
    async fn read_under(
        &self,
        child: &Secret,
        token_expires: Option<SystemTime>,
    ) -> Result<(Secret, Option<SystemTime>), CredentialError> {
        let (method, path, field, body) = match &self.read {
            Read::Kv2 { data_path, field } => (Method::GET, data_path, field, None),
            Read::Dynamic { path, field } => (Method::GET, path, field, None),
            Read::Path {
                path,
                field,
                method,
                body,
            } => {
                let body = (*method == Method::POST).then(|| json!(body));
                (method.clone(), path, field, body)
            }
        };
        let answer = self
            .call("reading", method, path, Some(child), body.as_ref())
            .await?;
        if !answer.status.is_success() {
            return Err(self.error(format!(
                "reading {path}: Vault answered {} ({})",
                answer.status,
                answer.errors()
            )));
        }
        let data = match &self.read {
            Read::Kv2 { .. } => &answer.body["data"]["data"],
            _ => &answer.body["data"],
        };
        let value = data[field.as_str()]
            .as_str()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                self.error(format!(
                    "reading {path}: the answer has no non-empty text field {field:?}"
                ))
            })?;
        let lease = answer.body["lease_duration"].as_u64().unwrap_or(0);
        let lease_expires = (lease > 0).then(|| SystemTime::now() + Duration::from_secs(lease));
        // A lease dies with its child token at the latest.
        let expires_at = match (lease_expires, token_expires) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok((Secret::new(value), expires_at))
    }

    /// Revokes every child token of the task that issued `credential`; done
    /// once per task, confirmed to later callers by the tokens being gone.
    async fn revoke_for(&self, credential: &Credential) -> Result<Revocation, CredentialError> {
        let task_id = self
            .issued
            .lock()
            .expect("vault issued map poisoned")
            .remove(&credential.id);
        let Some(task_id) = task_id else {
            // Not issued by this source (or already revoked and forgotten).
            return Ok(Revocation::Revoked);
        };
        let lock = self.task_lock(&task_id);
        let mut tokens = lock.lock().await;
        while let Some(held) = tokens.tokens.last() {
            self.revoke_token(held).await?;
            tokens.tokens.pop();
        }
        drop(tokens);
        if !self.is_issued_for(&task_id) {
            self.tasks
                .lock()
                .expect("vault task map poisoned")
                .remove(&task_id);
        }
        Ok(Revocation::Revoked)
    }

    /// `auth/token/revoke-self` with the child token, which revokes its
    /// leases too. A token Vault no longer knows (it expired, and its leases
    /// with it) is confirmed gone through its accessor.
    async fn revoke_token(&self, held: &HeldToken) -> Result<(), CredentialError> {
        let path = "auth/token/revoke-self";
        let answer = self
            .call(
                "revoking the task's child token",
                Method::POST,
                path,
                Some(&held.token),
                None,
            )
            .await?;
        if answer.status.is_success() {
            return Ok(());
        }
        if answer.status != StatusCode::FORBIDDEN || held.accessor.is_empty() {
            return Err(self.error(format!(
                "revoking the task's child token ({path}): Vault answered {} ({})",
                answer.status,
                answer.errors()
            )));
        }
        let parent = self.parent_token().await?;
        let path = "auth/token/revoke-accessor";
        let answer = self
            .call(
                "revoking the task's child token",
                Method::POST,
                path,
                Some(&parent),
                Some(&json!({ "accessor": held.accessor })),
            )
            .await?;
        let gone = answer.status.is_success()
            || (answer.status == StatusCode::BAD_REQUEST
                && answer.errors().contains("invalid accessor"));
        if gone {
            Ok(())
        } else {
            Err(self.error(format!(
                "revoking the task's child token ({path}): Vault answered {} ({})",
                answer.status,
                answer.errors()
            )))
        }
    }
}

fn still_valid(held: &Option<HeldToken>) -> Option<Secret> {
    let held = held.as_ref()?;
    match held.expires_at {
        Some(at) if at <= SystemTime::now() + LOGIN_MARGIN => None,
        _ => Some(held.token.clone()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CredentialSource for VaultSource {
    fn kind(&self) -> &'static str {
        "vault"
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
}
