//! The in-memory task store.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use crate::secret::{constant_time_eq, sha256};

use super::auth::{AuthError, ProxyCredential};
use super::model::{Task, TaskSpec};
use super::token::{generate_task_id, TaskToken};

/// Every task this process knows, by id and by token digest.
///
/// Read-mostly: every proxied request takes the read lock once, briefly, to
/// authenticate; writers are task creation and purging. No lock is ever held
/// across an `.await` (there is none in this type).
///
/// Ended tasks stay for a while (see [`TaskStore::purge_ended`]) so that an
/// agent reusing its token gets "task ended" rather than "invalid token".
#[derive(Debug, Default)]
pub struct TaskStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Arc<Task>>,
    /// Keyed by SHA-256 of the token. Looking up by digest leaks nothing
    /// useful through timing: learning a prefix of a digest does not help
    /// to find a token.
    by_token: HashMap<[u8; 32], Arc<Task>>,
    ambient: Option<Arc<Task>>,
}

impl TaskStore {
    /// An empty store.
    pub fn new() -> TaskStore {
        TaskStore::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that grants access, so a poisoned lock is still usable.
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a task with a fresh id and token. The token is returned once
    /// and never stored; only its digest is. The spec is taken as is: scope
    /// validation and TTL capping are the [`super::TaskService`]'s job.
    pub fn create(&self, spec: TaskSpec, now: SystemTime) -> (Arc<Task>, TaskToken) {
        let token = TaskToken::generate();
        let digest = token.digest();
        let task = Arc::new(Task::new(generate_task_id(), spec, now, Some(digest)));
        let mut inner = self.write();
        inner.by_id.insert(task.id.clone(), task.clone());
        inner.by_token.insert(digest, task.clone());
        (task, token)
    }

    /// Creates the sidecar-mode task that needs no token and replaces any
    /// previous ambient task. Without a TTL it lives as long as the process.
    pub fn create_ambient(&self, spec: TaskSpec, now: SystemTime) -> Arc<Task> {
        let task = Arc::new(Task::new(generate_task_id(), spec, now, None));
        let mut inner = self.write();
        inner.by_id.insert(task.id.clone(), task.clone());
        inner.ambient = Some(task.clone());
        task
    }

    /// The ambient task, if sidecar mode configured one (ended or not: the
    /// caller checks [`Task::is_active`]).
    pub fn ambient(&self) -> Option<Arc<Task>> {
        self.read().ambient.clone()
    }

    /// Finds the active task `credential` belongs to.
    ///
    /// Basic: the user must equal the task id and the password's digest must
    /// equal the stored digest (constant time). Bearer: looked up by the
    /// token's digest. Unknown → [`AuthError::Invalid`]; known but not
    /// active at `now` → [`AuthError::Ended`].
    pub fn authenticate(
        &self,
        credential: &ProxyCredential,
        now: SystemTime,
    ) -> Result<Arc<Task>, AuthError> {
        let task = match credential {
            ProxyCredential::Basic { user, password } => {
                let digest = sha256(password.expose());
                let task = self.read().by_id.get(user.as_str()).cloned();
                task.filter(|t| t.token_hash().is_some_and(|h| constant_time_eq(h, &digest)))
            }
            ProxyCredential::Bearer(token) => {
                let digest = sha256(token.expose());
                self.read().by_token.get(&digest).cloned()
            }
        };
        let task = task.ok_or(AuthError::Invalid)?;
        if task.is_active(now) {
            Ok(task)
        } else {
            Err(AuthError::Ended)
        }
    }

    /// The task with this id, active or not.
    pub fn get(&self, id: &str) -> Option<Arc<Task>> {
        self.read().by_id.get(id).cloned()
    }

    /// Every known task, oldest first.
    pub fn list(&self) -> Vec<Arc<Task>> {
        let mut tasks: Vec<_> = self.read().by_id.values().cloned().collect();
        tasks.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        tasks
    }

    /// Tasks not yet ended whose expiry is at or before `now`. The reaper
    /// ends them through the [`super::TaskService`] so that revocation and
    /// the `task.end` record happen.
    pub fn expired(&self, now: SystemTime) -> Vec<Arc<Task>> {
        self.read()
            .by_id
            .values()
            .filter(|t| t.ended().is_none() && now >= t.expires_at)
            .cloned()
            .collect()
    }

    /// Forgets tasks that were ended at least `keep` before `now`. Tasks that
    /// merely expired are kept until something ends them, so their end work
    /// cannot be skipped by purging.
    pub fn purge_ended(&self, now: SystemTime, keep: Duration) {
        let stale = |t: &Arc<Task>| {
            t.ended_at()
                .is_some_and(|at| at.checked_add(keep).is_some_and(|until| until <= now))
        };
        if !self.read().by_id.values().any(stale) {
            return;
        }
        let mut inner = self.write();
        inner.by_id.retain(|_, t| !stale(t));
        inner.by_token.retain(|_, t| !stale(t));
        if inner.ambient.as_ref().is_some_and(stale) {
            inner.ambient = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::task::EndReason;
    use std::collections::BTreeMap;

    fn spec(ttl_secs: u64) -> TaskSpec {
        TaskSpec {
            agent: "agent".into(),
            scopes: vec!["github-read".into()],
            ttl: Some(Duration::from_secs(ttl_secs)),
            labels: BTreeMap::from([("ticket".into(), "T-1".into())]),
        }
    }

    fn basic(user: &str, password: &str) -> ProxyCredential {
        ProxyCredential::Basic {
            user: user.into(),
            password: Secret::new(password),
        }
    }

    fn bearer(token: &str) -> ProxyCredential {
        ProxyCredential::Bearer(Secret::new(token))
    }

    #[test]
    fn basic_and_bearer_authenticate_the_right_task() {
        let store = TaskStore::new();
        let now = SystemTime::now();
        let (a, token_a) = store.create(spec(60), now);
        let (b, token_b) = store.create(spec(60), now);
        let got = store
            .authenticate(&basic(&a.id, token_a.expose()), now)
            .unwrap();
        assert!(Arc::ptr_eq(&got, &a));
        let got = store.authenticate(&bearer(token_b.expose()), now).unwrap();
        assert!(Arc::ptr_eq(&got, &b));
    }

    #[test]
    fn mismatched_or_unknown_credentials_are_invalid() {
        let store = TaskStore::new();
        let now = SystemTime::now();
        let (a, token_a) = store.create(spec(60), now);
        let (b, _token_b) = store.create(spec(60), now);
        // Right token, wrong task id.
        assert_eq!(
            store
                .authenticate(&basic(&b.id, token_a.expose()), now)
                .unwrap_err(),
            AuthError::Invalid
        );
        // Right id, wrong token; unknown id; unknown bearer.
        assert_eq!(
            store
                .authenticate(&basic(&a.id, "cgt_test-secret-wrong"), now)
                .unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            store
                .authenticate(&basic("task-0000000000000000", token_a.expose()), now)
                .unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            store
                .authenticate(&bearer("cgt_test-secret-unknown"), now)
                .unwrap_err(),
            AuthError::Invalid
        );
        // The token's digest is not a credential.
        let digest = crate::hex::lower(a.token_hash().unwrap());
        assert_eq!(
            store.authenticate(&bearer(&digest), now).unwrap_err(),
            AuthError::Invalid
        );
        // A near-miss (one character changed) is still invalid.
        let mut near = token_a.expose().to_string();
        let last = if near.ends_with('A') { "B" } else { "A" };
        near.replace_range(near.len() - 1.., last);
        assert_eq!(
            store.authenticate(&bearer(&near), now).unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn ambient_task_cannot_be_reached_with_a_token() {
        let store = TaskStore::new();
        let now = SystemTime::now();
        let ambient = store.create_ambient(spec(60), now);
        assert!(Arc::ptr_eq(&store.ambient().unwrap(), &ambient));
        assert!(ambient.token_hash().is_none());
        assert_eq!(
            store
                .authenticate(&basic(&ambient.id, "x"), now)
                .unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn ended_and_expired_tasks_say_ended() {
        let store = TaskStore::new();
        let now = SystemTime::now();
        let (a, token_a) = store.create(spec(60), now);
        assert!(a.end(EndReason::Requested));
        assert_eq!(
            store
                .authenticate(&bearer(token_a.expose()), now)
                .unwrap_err(),
            AuthError::Ended
        );
        assert_eq!(
            store
                .authenticate(&basic(&a.id, token_a.expose()), now)
                .unwrap_err(),
            AuthError::Ended
        );

        let (b, token_b) = store.create(spec(60), now);
        let just_before = b.expires_at - Duration::from_nanos(1);
        assert!(store
            .authenticate(&bearer(token_b.expose()), just_before)
            .is_ok());
        assert_eq!(
            store
                .authenticate(&bearer(token_b.expose()), b.expires_at)
                .unwrap_err(),
            AuthError::Ended,
            "a task is no longer active at its expiry instant"
        );
    }

    #[test]
    fn expired_lists_only_unended_tasks_past_expiry() {
        let store = TaskStore::new();
        let now = SystemTime::now();
        let (short, _) = store.create(spec(10), now);
        let (_long, _) = store.create(spec(1000), now);
        let (ended, _) = store.create(spec(10), now);
        ended.end(EndReason::Requested);
        assert!(store.expired(now).is_empty());
        let later = now + Duration::from_secs(10);
        let expired = store.expired(later);
        assert_eq!(expired.len(), 1);
        assert!(Arc::ptr_eq(&expired[0], &short));
    }

    #[test]
    fn purge_forgets_only_tasks_ended_long_enough_ago() {
        let store = TaskStore::new();
        let now = SystemTime::now();
        let (ended, token) = store.create(spec(10), now);
        let (expired_only, _) = store.create(spec(10), now);
        let (active, _) = store.create(spec(10_000), now);
        ended.end(EndReason::Requested);
        let keep = Duration::from_secs(300);

        store.purge_ended(now, keep);
        assert!(store.get(&ended.id).is_some(), "kept while within `keep`");
        assert_eq!(
            store
                .authenticate(&bearer(token.expose()), now)
                .unwrap_err(),
            AuthError::Ended
        );

        let much_later = ended.ended_at().unwrap() + keep;
        store.purge_ended(much_later, keep);
        assert!(store.get(&ended.id).is_none());
        assert_eq!(
            store
                .authenticate(&bearer(token.expose()), much_later)
                .unwrap_err(),
            AuthError::Invalid
        );
        assert!(
            store.get(&expired_only.id).is_some(),
            "expired but not ended is kept"
        );
        assert!(store.get(&active.id).is_some());
        assert_eq!(store.list().len(), 2);
    }

    #[test]
    fn get_and_list_see_created_tasks() {
        let store = TaskStore::new();
        let now = SystemTime::now();
        let (a, _) = store.create(spec(60), now);
        let (b, _) = store.create(spec(60), now + Duration::from_secs(1));
        assert!(Arc::ptr_eq(&store.get(&a.id).unwrap(), &a));
        assert!(store.get("task-ffffffffffffffff").is_none());
        let ids: Vec<_> = store.list().iter().map(|t| t.id.clone()).collect();
        assert_eq!(ids, vec![a.id.clone(), b.id.clone()]);
    }
}
