//! What the cache stores and under which key, and when an entry is due.

use std::sync::Arc;
use std::time::Duration;

use moka::{Equivalent, Expiry};
use tokio::time::Instant;

use crate::audit::CredentialInfo;
use crate::credential::Credential;

/// The task, credential and narrowing an entry belongs to. The task is part
/// of the key so a credential issued for one task is never served to another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct CacheKey {
    pub(super) task_id: String,
    pub(super) credential: String,
    pub(super) narrowing: String,
}

/// A borrowed key, so a hit allocates nothing. Hashes like [`CacheKey`]
/// because `String` hashes like `str`.
#[derive(Hash)]
pub(super) struct KeyRef<'a> {
    pub(super) task_id: &'a str,
    pub(super) credential: &'a str,
    pub(super) narrowing: &'a str,
}

impl Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.task_id == key.task_id
            && self.credential == key.credential
            && self.narrowing == key.narrowing
    }
}

impl KeyRef<'_> {
    pub(super) fn to_key(&self) -> CacheKey {
        CacheKey {
            task_id: self.task_id.to_string(),
            credential: self.credential.to_string(),
            narrowing: self.narrowing.to_string(),
        }
    }
}

/// One entry: the credential and when it is due for refresh.
pub(super) struct Cached {
    pub(super) credential: Arc<Credential>,
    /// What the record of a request served from this entry says of the
    /// credential, built once.
    pub(super) hit_info: Arc<CredentialInfo>,
    /// From insertion until the entry must be refreshed; `None`: never.
    pub(super) refresh_after: Option<Duration>,
    /// The same point on tokio's clock.
    pub(super) refresh_at: Option<Instant>,
}

impl Cached {
    pub(super) fn is_due(&self, now: Instant) -> bool {
        self.refresh_at.is_some_and(|at| now >= at)
    }
}

/// Tells moka to evict an entry when it is due for refresh, which frees
/// entries nobody asks for again. moka runs on the real clock while
/// [`Cached::is_due`] runs on tokio's, which is what makes refresh
/// deterministic under paused time; in production both agree.
pub(super) struct RefreshExpiry;

impl Expiry<CacheKey, Arc<Cached>> for RefreshExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Cached>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        value.refresh_after
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Cached>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        value.refresh_after
    }
}

/// When to refresh a credential with `ttl` left: `skew` before it expires, or
/// half way for a TTL shorter than twice the skew, so a short-lived
/// credential is still used for a while before it is replaced.
pub(super) fn refresh_after(ttl: Duration, skew: Duration) -> Duration {
    if ttl < skew.saturating_mul(2) {
        ttl / 2
    } else {
        ttl - skew
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, RandomState};

    #[test]
    fn refresh_point() {
        let skew = Duration::from_secs(60);
        assert_eq!(
            refresh_after(Duration::from_secs(3600), skew),
            Duration::from_secs(3540)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(120), skew),
            Duration::from_secs(60)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(119), skew),
            Duration::from_millis(59_500)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(10), skew),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn borrowed_keys_find_owned_ones() {
        let owned = CacheKey {
            task_id: "task-a".into(),
            credential: "api".into(),
            narrowing: "".into(),
        };
        let borrowed = KeyRef {
            task_id: "task-a",
            credential: "api",
            narrowing: "",
        };
        let hasher = RandomState::new();
        assert_eq!(hasher.hash_one(&owned), hasher.hash_one(&borrowed));
        assert!(borrowed.equivalent(&owned));
        assert_eq!(borrowed.to_key(), owned);
        // Field boundaries matter: ("ab", "c") is not ("a", "bc").
        let shifted = KeyRef {
            task_id: "task-",
            credential: "aapi",
            narrowing: "",
        };
        assert!(!shifted.equivalent(&owned));
    }
}
