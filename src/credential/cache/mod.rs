//! The per-task credential cache.
//!
//! Entries are keyed by (task, credential name, narrowing), so a credential
//! issued for one task is never served to another. Concurrent misses for a
//! key share one fetch. An entry is refreshed `skew` before its credential
//! expires; standing credentials (no expiry) stay until the task ends.
//!
//! Alongside the entries, a per-task ledger remembers every credential
//! issued, including ones a refresh replaced but that are still valid at
//! their source: the scrubber must keep looking for them and the end of the
//! task must revoke them. The ledger is touched on misses and task end only;
//! hits never take a lock.

mod entry;
mod ledger;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use moka::future::Cache;
use moka::ops::compute::Op;
use tokio::time::Instant;

use crate::audit::{CacheOutcome, CredentialInfo};
use crate::credential::{
    Credential, CredentialDef, CredentialError, CredentialSource, FetchContext, Revocation,
};
use entry::{refresh_after, CacheKey, Cached, KeyRef, RefreshExpiry};
use ledger::{Issued, Ledgers};

/// How long before expiry a credential is refreshed when not configured.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(60);

/// How long a failed fetch is remembered: requests in that window get the
/// same error without calling the source again, so a failing source is not
/// hammered by every request of a busy task.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// Attempts at revoking one credential before the failure is reported.
const REVOKE_ATTEMPTS: u32 = 3;

/// The bound on revoking a credential whose task ended during its fetch.
const LATE_REVOKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a credential came from the cache or from a fetch this call ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache (also when another request's fetch was awaited).
    Hit,
    /// This call fetched it from the source.
    Miss,
}

impl CacheStatus {
    /// `hit` or `miss`, for records.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
        }
    }
}

/// Credentials issued per task, fetched once per key and revoked at task end.
pub struct CredentialCache {
    skew: Duration,
    entries: Cache<CacheKey, Arc<Cached>>,
    ledgers: Ledgers<CacheKey>,
    /// Recent failures, with when they happened (on tokio's clock).
    failures: Cache<CacheKey, (Instant, CredentialError)>,
}

impl Default for CredentialCache {
    fn default() -> Self {
        CredentialCache::new(DEFAULT_SKEW)
    }
}

impl CredentialCache {
    /// A cache that refreshes credentials `skew` before they expire (for a
    /// TTL shorter than `2 * skew`: after half the TTL). Entries expire per
    /// credential; standing credentials live until their task ends.
    pub fn new(skew: Duration) -> CredentialCache {
        CredentialCache {
            skew,
            entries: Cache::builder().expire_after(RefreshExpiry).build(),
            ledgers: Ledgers::new(),
            failures: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(NEGATIVE_TTL)
                .build(),
        }
    }

    /// The credential `def` for `task_id` if it is cached and not due for
    /// refresh, with what a record says of it: the common case, answered
    /// without building the [`FetchContext`] that
    /// [`get_or_fetch`](Self::get_or_fetch) needs.
    pub async fn cached(
        &self,
        def: &CredentialDef,
        narrowing: &str,
        task_id: &str,
    ) -> Option<(Arc<Credential>, Arc<CredentialInfo>)> {
        let lookup = KeyRef {
            task_id,
            credential: &def.name,
            narrowing,
        };
        let cached = self.entries.get(&lookup).await?;
        (!cached.is_due(Instant::now()))
            .then(|| (cached.credential.clone(), cached.hit_info.clone()))
    }

    /// The credential `def` for the task in `ctx`, fetched if it is not
    /// cached or is due for refresh. Concurrent misses for the same key are
    /// coalesced into one fetch whose result (or error) every waiter gets.
    /// An error is remembered for [`NEGATIVE_TTL`]. `narrowing` is
    /// part of the key (e.g. repository + permission; `""` when unused).
    pub async fn get_or_fetch(
        &self,
        def: &CredentialDef,
        narrowing: &str,
        ctx: &FetchContext,
    ) -> Result<(Arc<Credential>, CacheStatus), CredentialError> {
        let lookup = KeyRef {
            task_id: &ctx.task_id,
            credential: &def.name,
            narrowing,
        };
        if let Some(cached) = self.entries.get(&lookup).await {
            if !cached.is_due(Instant::now()) {
                return Ok((cached.credential.clone(), CacheStatus::Hit));
            }
            self.forget_if_current(lookup.to_key(), &cached).await;
        }
        if self.ledgers.has_ended(&ctx.task_id) {
            return Err(task_ended(def, ctx));
        }
        let key = lookup.to_key();
        if let Some((failed_at, error)) = self.failures.get(&key).await {
            if failed_at.elapsed() < NEGATIVE_TTL {
                return Err(error);
            }
        }
        let mut fetched = false;
        let result = self
            .entries
            .try_get_with(key.clone(), async {
                fetched = true;
                self.fetch_and_record(def, &key, ctx).await
            })
            .await;
        let cached = match result {
            Ok(cached) => cached,
            Err(error) => {
                let error = Arc::unwrap_or_clone(error);
                if fetched {
                    self.failures
                        .insert(key, (Instant::now(), error.clone()))
                        .await;
                }
                return Err(error);
            }
        };
        // The task may have ended between recording this credential and moka
        // storing it; end_task revoked it, so make sure it is not served.
        if self.ledgers.has_ended(&ctx.task_id) {
            self.entries.invalidate(&lookup).await;
            return Err(task_ended(def, ctx));
        }
        let status = if fetched {
            CacheStatus::Miss
        } else {
            CacheStatus::Hit
        };
        Ok((cached.credential.clone(), status))
    }

    /// Every credential issued for the task that is still held: current ones
    /// and replaced ones that have not expired yet (for scrubbing and revocation).
    pub fn issued_for_task(&self, task_id: &str) -> Vec<Arc<Credential>> {
        self.ledgers.credentials(task_id)
    }

    /// Increments whenever a credential is issued for the task: callers
    /// rebuild their scrubber when it changes. `0` for a task with none yet.
    pub fn generation(&self, task_id: &str) -> u64 {
        self.ledgers.generation(task_id)
    }

    /// Every credential held for any task: a response to one task is scrubbed
    /// of all of them, since a shared upstream may echo another task's.
    pub fn all_issued(&self) -> Vec<Arc<Credential>> {
        self.ledgers.all_credentials()
    }

    /// Changes whenever a credential is issued or a task's credentials are
    /// dropped, for any task.
    pub fn global_generation(&self) -> u64 {
        self.ledgers.changes()
    }

    /// The task ended: drops all its entries and revokes each credential
    /// issued for it at its source, concurrently, each bounded by `timeout`.
    /// Returns one outcome per credential. A fetch still running for the
    /// task is revoked when it completes instead of being cached.
    pub async fn end_task(
        &self,
        task_id: &str,
        timeout: Duration,
    ) -> Vec<(Arc<Credential>, Result<Revocation, CredentialError>)> {
        let issued = self.ledgers.end(task_id);
        for entry in &issued {
            self.entries.invalidate(&entry.key).await;
        }
        let mut revocations = tokio::task::JoinSet::new();
        let mut by_job = HashMap::with_capacity(issued.len());
        for Issued {
            credential, source, ..
        } in issued
        {
            let handle = revocations.spawn(revoke(source, credential.clone(), timeout));
            by_job.insert(handle.id(), credential);
        }
        let mut outcomes = Vec::with_capacity(by_job.len());
        while let Some(joined) = revocations.join_next_with_id().await {
            let (id, outcome) = match joined {
                Ok((id, outcome)) => (id, outcome),
                Err(e) => (e.id(), Err(revoke_panicked(by_job.get(&e.id())))),
            };
            if let Some(credential) = by_job.remove(&id) {
                outcomes.push((credential, outcome));
            }
        }
        outcomes
    }

    /// Removes a due entry, unless a concurrent request already replaced it.
    async fn forget_if_current(&self, key: CacheKey, seen: &Arc<Cached>) {
        self.entries
            .entry(key)
            .and_compute_with(|current| {
                let op = match current {
                    Some(entry) if Arc::ptr_eq(entry.value(), seen) => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Runs the source once and records the credential in the task's ledger,
    /// in the same critical section that checks the task has not ended.
    async fn fetch_and_record(
        &self,
        def: &CredentialDef,
        key: &CacheKey,
        ctx: &FetchContext,
    ) -> Result<Arc<Cached>, CredentialError> {
        let credential = Arc::new(def.source.fetch(ctx).await?);
        let refresh_after = match credential.expires_at {
            None => None,
            Some(at) => match at.duration_since(SystemTime::now()) {
                Ok(ttl) if !ttl.is_zero() => Some(refresh_after(ttl, self.skew)),
                _ => {
                    return Err(CredentialError::Expired {
                        credential: def.name.clone(),
                        source_kind: def.source.kind(),
                    })
                }
            },
        };
        let recorded = self.ledgers.record(
            &ctx.task_id,
            Issued {
                key: key.clone(),
                credential: credential.clone(),
                source: def.source.clone(),
            },
        );
        if !recorded {
            if let Err(e) =
                revoke(def.source.clone(), credential.clone(), LATE_REVOKE_TIMEOUT).await
            {
                tracing::warn!(credential_id = %credential.id, error = %e, "revoking a credential fetched for an ended task failed");
            }
            return Err(task_ended(def, ctx));
        }
        Ok(Arc::new(Cached {
            hit_info: Arc::new(credential.record_info(Some(CacheOutcome::Hit))),
            credential,
            refresh_after,
            refresh_at: refresh_after.map(|d| Instant::now() + d),
        }))
    }
}

fn task_ended(def: &CredentialDef, ctx: &FetchContext) -> CredentialError {
    CredentialError::TaskEnded {
        credential: def.name.clone(),
        source_kind: def.source.kind(),
        task_id: ctx.task_id.clone(),
    }
}

async fn revoke(
    source: Arc<dyn CredentialSource>,
    credential: Arc<Credential>,
    timeout: Duration,
) -> Result<Revocation, CredentialError> {
    // Retried within the overall bound: a revocation lost to a transient
    // error would leave a credential alive until it expires.
    let attempts = async {
        let mut last = None;
        for attempt in 0..REVOKE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            match source.revoke(&credential).await {
                Ok(done) => return Ok(done),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    };
    match tokio::time::timeout(timeout, attempts).await {
        Ok(outcome) => outcome,
        Err(_) => Err(CredentialError::RevokeTimeout {
            credential: credential.name.clone(),
            source_kind: source.kind(),
            timeout,
        }),
    }
}

fn revoke_panicked(credential: Option<&Arc<Credential>>) -> CredentialError {
    CredentialError::Source {
        credential: credential.map_or_else(String::new, |c| c.name.clone()),
        source_kind: credential.map_or("unknown", |c| c.source),
        message: "revocation panicked".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{CredentialValue, Secret};
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts fetches and revocations; fails the first `fail_first` fetches.
    #[derive(Default)]
    struct CountingSource {
        fetches: AtomicUsize,
        revokes: AtomicUsize,
        ttl: Option<Duration>,
        fail_first: usize,
        fetch_delay: Duration,
        revoke_delay: Duration,
        revoke_fail_first: usize,
    }

    impl CredentialSource for CountingSource {
        fn kind(&self) -> &'static str {
            "counting"
        }

        fn fetch<'a>(
            &'a self,
            ctx: &'a FetchContext,
        ) -> crate::BoxFuture<'a, Result<Credential, CredentialError>> {
            Box::pin(async move {
                let n = self.fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.fetch_delay).await;
                if n < self.fail_first {
                    return Err(CredentialError::Source {
                        credential: "api".into(),
                        source_kind: "counting",
                        message: format!("failure {n}"),
                    });
                }
                Ok(Credential {
                    name: "api".into(),
                    id: format!("cred-{n:012}"),
                    source: "counting",
                    value: CredentialValue::Token(Secret::new(format!(
                        "test-secret-{}-{n}",
                        ctx.task_id
                    ))),
                    expires_at: self.ttl.map(|ttl| SystemTime::now() + ttl),
                    standing: self.ttl.is_none(),
                    renewed: None,
                })
            })
        }

        fn revoke<'a>(
            &'a self,
            _credential: &'a Credential,
        ) -> crate::BoxFuture<'a, Result<Revocation, CredentialError>> {
            Box::pin(async move {
                let n = self.revokes.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.revoke_delay).await;
                if n < self.revoke_fail_first {
                    return Err(CredentialError::Source {
                        credential: "api".into(),
                        source_kind: "counting",
                        message: format!("revocation failure {n}"),
                    });
                }
                Ok(Revocation::Revoked)
            })
        }
    }

    fn def(source: CountingSource) -> (Arc<CredentialDef>, Arc<CountingSource>) {
        let source = Arc::new(source);
        let def = CredentialDef {
            name: "api".into(),
            source: source.clone(),
        };
        (Arc::new(def), source)
    }

    fn ctx(task: &str) -> FetchContext {
        FetchContext {
            task_id: task.into(),
            agent: "agent".into(),
            labels: BTreeMap::new(),
            task_expires_at: SystemTime::now() + Duration::from_secs(3600),
            narrowing: Default::default(),
        }
    }

    fn fetches(source: &CountingSource) -> usize {
        source.fetches.load(Ordering::SeqCst)
    }

    fn value(credential: &Credential) -> &str {
        match &credential.value {
            CredentialValue::Token(token) => token.expose_str().unwrap(),
            CredentialValue::Aws { .. } => panic!("expected a token"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_first_requests_share_one_fetch() {
        let cache = Arc::new(CredentialCache::default());
        let (def, source) = def(CountingSource {
            ttl: Some(Duration::from_secs(600)),
            fetch_delay: Duration::from_millis(500),
            ..Default::default()
        });
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let (cache, def) = (cache.clone(), def.clone());
            requests.spawn(async move { cache.get_or_fetch(&def, "", &ctx("task-a")).await });
        }
        let mut misses = 0;
        let mut ids = std::collections::HashSet::new();
        while let Some(result) = requests.join_next().await {
            let (credential, status) = result.unwrap().unwrap();
            misses += usize::from(status == CacheStatus::Miss);
            ids.insert(credential.id.clone());
        }
        assert_eq!(fetches(&source), 1);
        assert_eq!(misses, 1);
        assert_eq!(ids.len(), 1);
        assert_eq!(cache.generation("task-a"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_skew_before_expiry_not_earlier() {
        let cache = CredentialCache::new(Duration::from_secs(60));
        let (def, source) = def(CountingSource {
            ttl: Some(Duration::from_secs(120)),
            ..Default::default()
        });
        let ctx = ctx("task-a");
        let (first, status) = cache.get_or_fetch(&def, "", &ctx).await.unwrap();
        assert_eq!(status, CacheStatus::Miss);
        tokio::time::advance(Duration::from_secs(59)).await;
        let (again, status) = cache.get_or_fetch(&def, "", &ctx).await.unwrap();
        assert_eq!((status, fetches(&source)), (CacheStatus::Hit, 1));
        assert!(Arc::ptr_eq(&first, &again));
        tokio::time::advance(Duration::from_secs(2)).await;
        let (fresh, status) = cache.get_or_fetch(&def, "", &ctx).await.unwrap();
        assert_eq!((status, fetches(&source)), (CacheStatus::Miss, 2));
        assert_ne!(fresh.id, first.id);
        // The replaced credential is still valid upstream: keep scrubbing it.
        assert_eq!(cache.issued_for_task("task-a").len(), 2);
        assert_eq!(cache.generation("task-a"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn standing_credentials_are_never_refreshed() {
        let cache = CredentialCache::default();
        let (def, source) = def(CountingSource::default());
        cache.get_or_fetch(&def, "", &ctx("task-a")).await.unwrap();
        tokio::time::advance(Duration::from_secs(30 * 24 * 3600)).await;
        let (_, status) = cache.get_or_fetch(&def, "", &ctx("task-a")).await.unwrap();
        assert_eq!((status, fetches(&source)), (CacheStatus::Hit, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn tasks_and_narrowings_never_share_credentials() {
        let cache = CredentialCache::default();
        let (def, source) = def(CountingSource::default());
        let (a, _) = cache.get_or_fetch(&def, "", &ctx("task-a")).await.unwrap();
        let (b, status) = cache.get_or_fetch(&def, "", &ctx("task-b")).await.unwrap();
        assert_eq!(status, CacheStatus::Miss);
        assert_eq!(
            (value(&a), value(&b)),
            ("test-secret-task-a-0", "test-secret-task-b-1")
        );
        let (narrow, status) = cache
            .get_or_fetch(&def, "repo:x", &ctx("task-a"))
            .await
            .unwrap();
        assert_eq!(status, CacheStatus::Miss);
        assert_ne!(narrow.id, a.id);
        let (a_again, status) = cache.get_or_fetch(&def, "", &ctx("task-a")).await.unwrap();
        assert_eq!(
            (status, a_again.id.as_str()),
            (CacheStatus::Hit, a.id.as_str())
        );
        assert_eq!(fetches(&source), 3);
        assert_eq!(cache.issued_for_task("task-b").len(), 1);
        assert_eq!(cache.issued_for_task("task-a").len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_propagate_to_every_waiter_and_are_remembered_briefly() {
        let cache = Arc::new(CredentialCache::default());
        let (def, source) = def(CountingSource {
            fail_first: 1,
            fetch_delay: Duration::from_millis(100),
            ..Default::default()
        });
        let mut requests = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let (cache, def) = (cache.clone(), def.clone());
            requests.spawn(async move { cache.get_or_fetch(&def, "", &ctx("task-a")).await });
        }
        while let Some(result) = requests.join_next().await {
            let err = result.unwrap().unwrap_err();
            assert_eq!(err.to_string(), "credential api (counting): failure 0");
        }
        assert_eq!(fetches(&source), 1);
        assert_eq!(cache.generation("task-a"), 0);
        // Within the negative window the error is served without a fetch…
        let err = cache
            .get_or_fetch(&def, "", &ctx("task-a"))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "credential api (counting): failure 0");
        assert_eq!(fetches(&source), 1);
        // …and after it the source is asked again.
        tokio::time::advance(NEGATIVE_TTL + Duration::from_millis(1)).await;
        let (_, status) = cache.get_or_fetch(&def, "", &ctx("task-a")).await.unwrap();
        assert_eq!((status, fetches(&source)), (CacheStatus::Miss, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn already_expired_credentials_are_refused() {
        let cache = CredentialCache::default();
        let (def, _) = def(CountingSource {
            ttl: Some(Duration::ZERO),
            ..Default::default()
        });
        let err = cache
            .get_or_fetch(&def, "", &ctx("task-a"))
            .await
            .unwrap_err();
        assert!(matches!(err, CredentialError::Expired { .. }), "{err:?}");
        assert!(cache.issued_for_task("task-a").is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn revocations_are_retried_then_reported() {
        let cache = CredentialCache::default();
        let (def, source) = def(CountingSource {
            revoke_fail_first: 2,
            ..Default::default()
        });
        cache.get_or_fetch(&def, "", &ctx("task-a")).await.unwrap();
        let outcomes = cache.end_task("task-a", Duration::from_secs(5)).await;
        assert!(
            matches!(outcomes[0].1, Ok(Revocation::Revoked)),
            "{:?}",
            outcomes[0].1
        );
        assert_eq!(source.revokes.load(Ordering::SeqCst), 3);

        let (def, source) = def_failing_revoke();
        cache.get_or_fetch(&def, "", &ctx("task-b")).await.unwrap();
        let outcomes = cache.end_task("task-b", Duration::from_secs(5)).await;
        assert!(
            outcomes[0].1.is_err(),
            "a revocation that keeps failing is reported"
        );
        assert_eq!(
            source.revokes.load(Ordering::SeqCst),
            REVOKE_ATTEMPTS as usize
        );
    }

    fn def_failing_revoke() -> (Arc<CredentialDef>, Arc<CountingSource>) {
        def(CountingSource {
            revoke_fail_first: usize::MAX,
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn end_task_revokes_and_forgets() {
        let cache = CredentialCache::default();
        let (def, source) = def(CountingSource::default());
        cache.get_or_fetch(&def, "", &ctx("task-a")).await.unwrap();
        cache
            .get_or_fetch(&def, "narrow", &ctx("task-a"))
            .await
            .unwrap();
        let (b, _) = cache.get_or_fetch(&def, "", &ctx("task-b")).await.unwrap();
        let outcomes = cache.end_task("task-a", Duration::from_secs(5)).await;
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes
            .iter()
            .all(|(c, r)| value(c).starts_with("test-secret-task-a")
                && matches!(r, Ok(Revocation::Revoked))));
        assert_eq!(source.revokes.load(Ordering::SeqCst), 2);
        assert!(cache.issued_for_task("task-a").is_empty());
        let err = cache
            .get_or_fetch(&def, "", &ctx("task-a"))
            .await
            .unwrap_err();
        assert!(matches!(err, CredentialError::TaskEnded { .. }), "{err:?}");
        assert_eq!(fetches(&source), 3, "an ended task must not cause a fetch");
        // Other tasks are untouched.
        let (b_again, status) = cache.get_or_fetch(&def, "", &ctx("task-b")).await.unwrap();
        assert_eq!(
            (status, b_again.id.as_str()),
            (CacheStatus::Hit, b.id.as_str())
        );
        assert!(cache
            .end_task("task-a", Duration::from_secs(5))
            .await
            .is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn slow_revocations_are_bounded() {
        let cache = CredentialCache::default();
        let (def, _) = def(CountingSource {
            revoke_delay: Duration::from_secs(3600),
            ..Default::default()
        });
        cache.get_or_fetch(&def, "", &ctx("task-a")).await.unwrap();
        let started = Instant::now();
        let outcomes = cache.end_task("task-a", Duration::from_secs(5)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert!(matches!(
            outcomes[..],
            [(_, Err(CredentialError::RevokeTimeout { .. }))]
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_finishing_after_its_task_ended_is_revoked_not_served() {
        let cache = Arc::new(CredentialCache::default());
        let (def, source) = def(CountingSource {
            fetch_delay: Duration::from_secs(2),
            ..Default::default()
        });
        let request = {
            let (cache, def) = (cache.clone(), def.clone());
            tokio::spawn(async move { cache.get_or_fetch(&def, "", &ctx("task-a")).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(cache
            .end_task("task-a", Duration::from_secs(5))
            .await
            .is_empty());
        let err = request.await.unwrap().unwrap_err();
        assert!(matches!(err, CredentialError::TaskEnded { .. }), "{err:?}");
        assert_eq!(source.revokes.load(Ordering::SeqCst), 1);
        assert!(cache.issued_for_task("task-a").is_empty());
    }
}
