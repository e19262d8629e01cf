//! Vault tokens: credgate's own login (kept until shortly before it expires, renewed once when refused), and the child token minted for each task, revoked at its end.

use super::*;

impl VaultSource {
    /// credgate's own token: the configured one, or a login still valid for
    /// a while (logging in again when it is not).
    pub(super) async fn parent_token(&self) -> Result<Secret, CredentialError> {
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

    pub(super) async fn login_with(
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
    pub(super) async fn forget_login(&self) {
        *self.login.lock().await = None;
    }

    /// The `auth` block of a login or token-create answer.
    pub(super) fn token_from(
        &self,
        answer: &Answer,
        path: &str,
    ) -> Result<HeldToken, CredentialError> {
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
    pub(super) async fn child_token(
        &self,
        ctx: &FetchContext,
        tokens: &mut TaskTokens,
    ) -> Result<HeldToken, CredentialError> {
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
                return Ok(latest.clone());
            }
        }
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
        let mut relogged = false;
        let answer = loop {
            let parent = self.parent_token().await?;
            let answer = self
                .call(
                    "creating the task's child token",
                    Method::POST,
                    path,
                    Some(&parent),
                    Some(&body),
                )
                .await?;
            if answer.status != StatusCode::FORBIDDEN {
                break answer;
            }
            // A login Vault no longer honours (revoked, or ended early) is
            // dropped; with a login method, log in again once and retry.
            self.forget_login().await;
            if relogged || matches!(self.auth, Auth::Token(_)) {
                break answer;
            }
            relogged = true;
        };
        if !answer.status.is_success() {
            return Err(self.error(format!(
                "creating the task's child token ({path}): Vault answered {} ({})",
                answer.status,
                answer.errors()
            )));
        }
        let held = self.token_from(&answer, path)?;
        tokens.tokens.push(held.clone());
        Ok(held)
    }

    /// `auth/token/revoke-self` with the child token, which revokes its
    /// leases too. A token Vault no longer knows (it expired, and its leases
    /// with it) is confirmed gone through its accessor.
    pub(super) async fn revoke_token(&self, held: &HeldToken) -> Result<(), CredentialError> {
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
