//! The `vault` source: HashiCorp Vault or OpenBao.
//!
//! credgate authenticates itself (a token, an AppRole login, or a JWT /
//! Kubernetes login whose token file is re-read on every login). A login is
//! kept until shortly before it expires; if Vault refuses it before then
//! (it was revoked), credgate logs in again once and retries. For each
//! task it then creates a **child token** (`auth/token/create`, with the
//! configured policies, a TTL that never outlives the task, `no_parent:
//! false` and the task in its metadata) and reads the secret *under that
//! token*: a KV v2 field, a dynamic secret, or any path. Every lease a read
//! creates belongs to the child token, so revoking the token when the task
//! ends revokes them all.
//!
//! A credential expires with its lease (or its child token, whichever ends
//! first), and the cache fetches again shortly before then. Leases are
//! renewed while the task lives and needs them: the source remembers, per
//! task (and narrowing), the last lease it read, and a fetch **renews** that
//! lease (`PUT sys/leases/renew` under the child token that holds it, asking
//! for the lease's first duration again, bounded by that token's and the
//! task's remaining life) and hands back the same secret under the same
//! credential id with the later expiry; the record says it was renewed and
//! names the lease by its fingerprint. It **re-reads** the path instead,
//! getting a new secret and lease, when
//!
//! - the last read gave no lease, or Vault said it is not renewable;
//! - the lease has expired or is within [`RENEW_MARGIN`] of it;
//! - the child token holding it is being replaced: a refresh uses a fresh
//!   child token once the current one has less than two thirds of a new
//!   one's life left, and a lease cannot outlive its token, so renewing it
//!   there would buy nothing;
//! - the renewal could not end later than the lease already does (the token,
//!   the task or the lease's `max_ttl` is the limit);
//! - or Vault refuses or fails the renewal, or grants no extension.
//!
//! See [`plan`]. No timer of its own drives this: the cache's refresh before
//! expiry does. A lease replaced by a re-read stays valid until it expires
//! or the task ends, and the task's end revokes it with its child token.
//!
//! Child tokens are held in [`Secret`]s, in a map by task; they are never
//! logged, and errors name the source and the path, never a token.

mod config;
mod http;
mod leases;
mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ::http::{Method, StatusCode};
use serde_json::json;

use crate::credential::{
    Credential, CredentialError, CredentialSource, CredentialValue, FetchContext, Revocation,
    Secret,
};
use crate::secret::fingerprint;
pub use config::{
    validate, RawAppRole, RawChildToken, RawJwt, RawKv2, RawPathField, RawPathRead, RawVault,
    RawVaultAuth, RawVaultRead, VaultSpec,
};
use http::{Answer, VaultHttp};

/// A login token is renewed by logging in again this long before it expires.
const LOGIN_MARGIN: Duration = Duration::from_secs(30);

/// A lease this close to its end is re-read rather than renewed: the renewal
/// might arrive after it.
const RENEW_MARGIN: Duration = Duration::from_secs(2);

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChildTokenSpec {
    pub(crate) policies: Vec<String>,
    pub(crate) ttl: Duration,
}

/// What is read under the child token.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Clone)]
struct HeldToken {
    token: Secret,
    accessor: String,
    /// `None`: the token does not expire.
    expires_at: Option<SystemTime>,
}

/// The child tokens created for one task (usually one; more when a task
/// outlives a child token's TTL), all revoked when the task ends, and the
/// last lease read for each narrowing of the credential, to renew it.
#[derive(Default)]
struct TaskTokens {
    tokens: Vec<HeldToken>,
    leases: HashMap<String, HeldLease>,
}

/// A lease a read created, kept so that the next fetch can renew it.
#[derive(Clone)]
struct HeldLease {
    lease_id: String,
    renewable: bool,
    /// What Vault granted at the read; a renewal asks for as much again.
    granted: Duration,
    /// When the lease ends (its token may end it earlier).
    expires_at: SystemTime,
    /// The accessor of the child token it was read under.
    token_accessor: String,
    /// The credential that carries it, re-issued on renewal.
    credential_id: String,
    value: Secret,
}

/// The lease part of a read's answer.
struct ReadLease {
    lease_id: String,
    renewable: bool,
    duration: Duration,
}

/// Whether a fetch renews the task's last lease or reads the path again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// `sys/leases/renew`, asking for `increment`.
    Renew { increment: Duration },
    /// Read the path again: a new secret and lease.
    Reread,
}

/// The renew-vs-re-read rule (see the module documentation): renew `lease`
/// only if it is renewable, not within [`RENEW_MARGIN`] of its end, held by
/// `token` (the child token this fetch uses) and can end later than it does
/// now. The increment is the lease's first duration, bounded by the token's
/// and the task's remaining life.
fn plan(
    lease: Option<&HeldLease>,
    token: &HeldToken,
    task_expires_at: SystemTime,
    now: SystemTime,
) -> Plan {
    let Some(lease) = lease else {
        return Plan::Reread;
    };
    if !lease.renewable || lease.lease_id.is_empty() {
        return Plan::Reread;
    }
    if lease.expires_at <= now + RENEW_MARGIN {
        return Plan::Reread;
    }
    if token.accessor.is_empty() || token.accessor != lease.token_accessor {
        return Plan::Reread;
    }
    let left = |at: SystemTime| at.duration_since(now).unwrap_or_default();
    let mut increment = lease.granted.min(left(task_expires_at));
    if let Some(token_end) = token.expires_at {
        increment = increment.min(left(token_end));
    }
    // Whole seconds, as Vault counts them.
    let increment = Duration::from_secs(increment.as_secs());
    if now + increment <= lease.expires_at {
        return Plan::Reread;
    }
    Plan::Renew { increment }
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
        let child = self.child_token(ctx, &mut tokens).await?;
        let key = &ctx.narrowing.key;
        let last = tokens.leases.get(key).cloned();
        drop(tokens);
        let now = SystemTime::now();
        if let (Plan::Renew { increment }, Some(lease)) =
            (plan(last.as_ref(), &child, ctx.task_expires_at, now), &last)
        {
            match self.renew(&child, lease, increment).await {
                Ok(renewed) => {
                    let credential = self.issue(ctx, renewed.clone(), &child);
                    lock.lock().await.leases.insert(key.clone(), renewed);
                    return Ok(credential);
                }
                Err(e) => tracing::warn!(
                    credential = %self.credential,
                    lease = %fingerprint(lease.lease_id.as_bytes()),
                    error = %e,
                    "renewing the lease failed; reading the secret again"
                ),
            }
        }
        let read = self.read_under(&child.token, child.expires_at).await;
        match read {
            Ok((value, expires_at, lease)) => {
                let id = crate::credential::new_credential_id();
                self.issued
                    .lock()
                    .expect("vault issued map poisoned")
                    .insert(id.clone(), ctx.task_id.clone());
                let mut tokens = lock.lock().await;
                match lease {
                    Some(lease) => {
                        tokens.leases.insert(
                            key.clone(),
                            HeldLease {
                                expires_at: now + lease.duration,
                                lease_id: lease.lease_id,
                                renewable: lease.renewable,
                                granted: lease.duration,
                                token_accessor: child.accessor.clone(),
                                credential_id: id.clone(),
                                value: value.clone(),
                            },
                        );
                    }
                    None => {
                        tokens.leases.remove(key);
                    }
                }
                Ok(Credential {
                    name: self.credential.clone(),
                    id,
                    source: "vault",
                    value: CredentialValue::Token(value),
                    expires_at,
                    standing: false,
                    renewed: None,
                })
            }
            Err(e) => {
                self.abandon_unused(&ctx.task_id).await;
                Err(e)
            }
        }
    }

    /// The credential a renewal re-issues: the lease's value and id, with
    /// the renewed expiry (or the token's, if sooner).
    fn issue(&self, ctx: &FetchContext, lease: HeldLease, child: &HeldToken) -> Credential {
        self.issued
            .lock()
            .expect("vault issued map poisoned")
            .insert(lease.credential_id.clone(), ctx.task_id.clone());
        let expires_at = match child.expires_at {
            Some(token_end) => lease.expires_at.min(token_end),
            None => lease.expires_at,
        };
        Credential {
            name: self.credential.clone(),
            id: lease.credential_id,
            source: "vault",
            value: CredentialValue::Token(lease.value),
            expires_at: Some(expires_at),
            standing: false,
            renewed: Some(format!("lease {}", fingerprint(lease.lease_id.as_bytes()))),
        }
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
        // Their leases went with them.
        tokens.leases.clear();
        drop(tokens);
        if !self.is_issued_for(&task_id) {
            self.tasks
                .lock()
                .expect("vault task map poisoned")
                .remove(&task_id);
        }
        Ok(Revocation::Revoked)
    }
}

fn still_valid(held: &Option<HeldToken>) -> Option<Secret> {
    let held = held.as_ref()?;
    match held.expires_at {
        Some(at) if at <= SystemTime::now() + LOGIN_MARGIN => None,
        _ => Some(held.token.clone()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn token(accessor: &str, life: Option<Duration>, now: SystemTime) -> HeldToken {
        HeldToken {
            token: Secret::new("test-secret-child"),
            accessor: accessor.into(),
            expires_at: life.map(|l| now + l),
        }
    }

    /// A renewable 10-minute lease with `left` to go, read under `acc-1`.
    fn lease(left: Duration, now: SystemTime) -> HeldLease {
        HeldLease {
            lease_id: "database/creds/ro/AbC".into(),
            renewable: true,
            granted: 10 * MINUTE,
            expires_at: now + left,
            token_accessor: "acc-1".into(),
            credential_id: "cred-000000000001".into(),
            value: Secret::new("test-secret-value"),
        }
    }

    #[test]
    fn renews_a_renewable_lease_under_its_token_for_its_first_duration() {
        let now = SystemTime::now();
        let child = token("acc-1", Some(60 * MINUTE), now);
        let lease = lease(MINUTE, now);
        assert_eq!(
            plan(Some(&lease), &child, now + 120 * MINUTE, now),
            Plan::Renew {
                increment: 10 * MINUTE
            }
        );
        // A token that does not expire bounds nothing.
        let forever = token("acc-1", None, now);
        assert_eq!(
            plan(Some(&lease), &forever, now + 120 * MINUTE, now),
            Plan::Renew {
                increment: 10 * MINUTE
            }
        );
    }

    #[test]
    fn the_increment_is_bounded_by_the_token_and_the_task() {
        let now = SystemTime::now();
        let lease = lease(MINUTE, now);
        let short_token = token("acc-1", Some(5 * MINUTE), now);
        assert_eq!(
            plan(Some(&lease), &short_token, now + 120 * MINUTE, now),
            Plan::Renew {
                increment: 5 * MINUTE
            }
        );
        let child = token("acc-1", Some(60 * MINUTE), now);
        assert_eq!(
            plan(
                Some(&lease),
                &child,
                now + 3 * MINUTE + Duration::from_millis(500),
                now
            ),
            Plan::Renew {
                increment: 3 * MINUTE
            }
        );
    }

    #[test]
    fn re_reads_when_renewal_is_impossible_or_useless() {
        let now = SystemTime::now();
        let child = token("acc-1", Some(60 * MINUTE), now);
        let task_end = now + 120 * MINUTE;
        // Nothing to renew: the last read had no lease.
        assert_eq!(plan(None, &child, task_end, now), Plan::Reread);
        // Vault said it is not renewable.
        let fixed = HeldLease {
            renewable: false,
            ..lease(MINUTE, now)
        };
        assert_eq!(plan(Some(&fixed), &child, task_end, now), Plan::Reread);
        // Expired, or too close to its end for a renewal to arrive in time.
        for left in [Duration::ZERO, RENEW_MARGIN] {
            assert_eq!(
                plan(Some(&lease(left, now)), &child, task_end, now),
                Plan::Reread
            );
        }
        let expired = HeldLease {
            expires_at: now - MINUTE,
            ..lease(MINUTE, now)
        };
        assert_eq!(plan(Some(&expired), &child, task_end, now), Plan::Reread);
        // The token holding it is being replaced by a fresh one.
        let fresh = token("acc-2", Some(60 * MINUTE), now);
        assert_eq!(
            plan(Some(&lease(MINUTE, now)), &fresh, task_end, now),
            Plan::Reread
        );
        let unknown = token("", Some(60 * MINUTE), now);
        let no_accessor = HeldLease {
            token_accessor: String::new(),
            ..lease(MINUTE, now)
        };
        assert_eq!(
            plan(Some(&no_accessor), &unknown, task_end, now),
            Plan::Reread
        );
        // The token (or the task) ends before the lease would gain anything.
        let ending = token("acc-1", Some(MINUTE), now);
        assert_eq!(
            plan(Some(&lease(2 * MINUTE, now)), &ending, task_end, now),
            Plan::Reread
        );
        assert_eq!(
            plan(Some(&lease(2 * MINUTE, now)), &child, now + MINUTE, now),
            Plan::Reread
        );
    }
}
