//! Reads under a task's child token, and the leases they hold: renewed while the task needs them, re-read when they cannot be.

use super::*;

impl VaultSource {
    /// `PUT sys/leases/renew` under the child token that holds the lease;
    /// the lease with its new end. A renewal that does not make the lease
    /// end later than it did is an error: the caller re-reads.
    pub(super) async fn renew(
        &self,
        child: &HeldToken,
        lease: &HeldLease,
        increment: Duration,
    ) -> Result<HeldLease, CredentialError> {
        let path = "sys/leases/renew";
        let body = json!({ "lease_id": lease.lease_id, "increment": increment.as_secs() });
        let answer = self
            .call(
                "renewing the lease",
                Method::PUT,
                path,
                Some(&child.token),
                Some(&body),
            )
            .await?;
        if !answer.status.is_success() {
            return Err(self.error(format!(
                "renewing the lease ({path}): Vault answered {} ({})",
                answer.status,
                answer.errors()
            )));
        }
        let granted = answer.body["lease_duration"].as_u64().unwrap_or(0);
        let expires_at = SystemTime::now() + Duration::from_secs(granted);
        if granted == 0 || expires_at <= lease.expires_at {
            return Err(self.error(format!(
                "renewing the lease ({path}): Vault granted {granted}s, no later than it ended"
            )));
        }
        Ok(HeldLease {
            expires_at,
            renewable: answer.body["renewable"].as_bool().unwrap_or(false),
            ..lease.clone()
        })
    }

    /// A child token that read nothing is revoked now: no credential of the
    /// task refers to it, so the task's end would not.
    pub(super) async fn abandon_unused(&self, task_id: &str) {
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

    pub(super) fn is_issued_for(&self, task_id: &str) -> bool {
        self.issued
            .lock()
            .expect("vault issued map poisoned")
            .values()
            .any(|t| t == task_id)
    }

    /// Reads the configured secret with `child`; the value, when it expires
    /// and the lease Vault attached, if any.
    pub(super) async fn read_under(
        &self,
        child: &Secret,
        token_expires: Option<SystemTime>,
    ) -> Result<(Secret, Option<SystemTime>, Option<ReadLease>), CredentialError> {
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
        let held = answer.body["lease_id"]
            .as_str()
            .filter(|id| !id.is_empty() && lease > 0)
            .map(|id| ReadLease {
                lease_id: id.to_string(),
                renewable: answer.body["renewable"].as_bool().unwrap_or(false),
                duration: Duration::from_secs(lease),
            });
        Ok((Secret::new(value), expires_at, held))
    }
}
