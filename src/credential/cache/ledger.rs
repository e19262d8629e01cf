//! What was issued to each task, for scrubbing and revocation.
//!
//! Sharded by task id so misses of different tasks rarely contend; touched on
//! misses, task end and scrubber rebuilds, never on cache hits. An ended task
//! leaves a tombstone for a while, so a fetch that was still running when it
//! ended is refused (and revoked) instead of recorded.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::credential::{Credential, CredentialSource};

/// Shards: enough that tasks rarely contend on a miss.
const SHARDS: usize = 16;

/// How long an ended task is remembered. Far longer than any fetch may take.
pub(super) const ENDED_RETENTION: Duration = Duration::from_secs(3600);

/// One credential issued for a task, with what is needed to forget and revoke it.
pub(super) struct Issued<K> {
    /// The cache key it was stored under.
    pub(super) key: K,
    pub(super) credential: Arc<Credential>,
    pub(super) source: Arc<dyn CredentialSource>,
}

struct TaskLedger<K> {
    generation: u64,
    issued: Vec<Issued<K>>,
    ended_at: Option<Instant>,
}

impl<K> Default for TaskLedger<K> {
    fn default() -> Self {
        TaskLedger {
            generation: 0,
            issued: Vec::new(),
            ended_at: None,
        }
    }
}

/// The ledgers of the tasks whose ids hash to one shard.
type Shard<K> = Mutex<HashMap<String, TaskLedger<K>>>;

/// Per-task records of issued credentials.
pub(super) struct Ledgers<K> {
    shards: Box<[Shard<K>]>,
    /// Bumped whenever any task's credentials change.
    changes: AtomicU64,
}

impl<K> Ledgers<K> {
    pub(super) fn new() -> Self {
        Ledgers {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            changes: AtomicU64::new(0),
        }
    }

    /// Records `issued` for the task and bumps its generation; dropping
    /// credentials that have expired at their source, which are of no use to
    /// anyone any more, and an earlier record of the same credential (a
    /// renewal re-issues it under its id with a later expiry). Returns
    /// `false`, recording nothing, when the task has ended: the caller must
    /// revoke the credential itself.
    pub(super) fn record(&self, task_id: &str, issued: Issued<K>) -> bool {
        let mut shard = self.shard(task_id);
        let ledger = shard.entry(task_id.to_string()).or_default();
        if ledger.ended_at.is_some() {
            return false;
        }
        let now = SystemTime::now();
        let same =
            |c: &Credential| c.id == issued.credential.id && c.source == issued.credential.source;
        ledger
            .issued
            .retain(|i| i.credential.expires_at.is_none_or(|at| at > now) && !same(&i.credential));
        ledger.issued.push(issued);
        ledger.generation += 1;
        self.changes.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Changes whenever any task's credentials change.
    pub(super) fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// Every credential currently recorded, for every task.
    pub(super) fn all_credentials(&self) -> Vec<Arc<Credential>> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for ledger in shard.values() {
                all.extend(ledger.issued.iter().map(|i| i.credential.clone()));
            }
        }
        all
    }

    /// Whether [`end`](Ledgers::end) was called for the task (recently).
    pub(super) fn has_ended(&self, task_id: &str) -> bool {
        self.shard(task_id)
            .get(task_id)
            .is_some_and(|ledger| ledger.ended_at.is_some())
    }

    /// The credentials currently recorded for the task.
    pub(super) fn credentials(&self, task_id: &str) -> Vec<Arc<Credential>> {
        self.shard(task_id)
            .get(task_id)
            .map(|ledger| ledger.issued.iter().map(|i| i.credential.clone()).collect())
            .unwrap_or_default()
    }

    /// How many credentials were ever recorded for the task.
    pub(super) fn generation(&self, task_id: &str) -> u64 {
        self.shard(task_id)
            .get(task_id)
            .map_or(0, |ledger| ledger.generation)
    }

    /// Marks the task ended and hands over everything recorded for it. Also
    /// forgets tombstones in the same shard older than [`ENDED_RETENTION`].
    pub(super) fn end(&self, task_id: &str) -> Vec<Issued<K>> {
        let mut shard = self.shard(task_id);
        let now = Instant::now();
        shard.retain(|_, ledger| {
            ledger
                .ended_at
                .is_none_or(|at| now.duration_since(at) < ENDED_RETENTION)
        });
        let ledger = shard.entry(task_id.to_string()).or_default();
        ledger.ended_at = Some(now);
        self.changes.fetch_add(1, Ordering::SeqCst);
        std::mem::take(&mut ledger.issued)
    }

    fn shard(&self, task_id: &str) -> MutexGuard<'_, HashMap<String, TaskLedger<K>>> {
        let mut hasher = std::hash::DefaultHasher::new();
        task_id.hash(&mut hasher);
        let index = (hasher.finish() % self.shards.len() as u64) as usize;
        // Every mutation under the lock is a single push, retain or take, so a
        // panic elsewhere cannot leave the map half-updated.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::static_source::StaticSource;
    use crate::credential::{CredentialValue, Secret};

    fn issued(n: u8, expires_at: Option<SystemTime>) -> Issued<u8> {
        Issued {
            key: n,
            credential: Arc::new(Credential {
                name: "api".into(),
                id: format!("cred-{n:012}"),
                source: "static",
                value: CredentialValue::Token(Secret::new(format!("test-secret-{n}"))),
                expires_at,
                standing: expires_at.is_none(),
                renewed: None,
            }),
            source: Arc::new(StaticSource::new("api", Secret::new("test-secret"))),
        }
    }

    fn ids(ledgers: &Ledgers<u8>, task: &str) -> Vec<String> {
        ledgers
            .credentials(task)
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }

    #[test]
    fn records_per_task_and_counts_generations() {
        let ledgers = Ledgers::new();
        assert_eq!(ledgers.generation("a"), 0);
        assert!(ledgers.record("a", issued(1, None)));
        assert!(ledgers.record("a", issued(2, None)));
        assert!(ledgers.record("b", issued(3, None)));
        assert_eq!(ledgers.generation("a"), 2);
        assert_eq!(
            ids(&ledgers, "a"),
            ["cred-000000000001", "cred-000000000002"]
        );
        assert_eq!(ids(&ledgers, "b"), ["cred-000000000003"]);
    }

    #[test]
    fn expired_credentials_are_dropped_but_live_replaced_ones_kept() {
        let ledgers = Ledgers::new();
        let past = SystemTime::now() - Duration::from_secs(1);
        let future = SystemTime::now() + Duration::from_secs(600);
        ledgers.record("a", issued(1, Some(past)));
        ledgers.record("a", issued(2, Some(future)));
        ledgers.record("a", issued(3, Some(future)));
        assert_eq!(
            ids(&ledgers, "a"),
            ["cred-000000000002", "cred-000000000003"]
        );
    }

    #[test]
    fn a_renewal_replaces_the_record_of_its_credential() {
        let ledgers = Ledgers::new();
        let soon = SystemTime::now() + Duration::from_secs(60);
        let later = SystemTime::now() + Duration::from_secs(600);
        ledgers.record("a", issued(1, Some(soon)));
        ledgers.record("a", issued(2, Some(soon)));
        ledgers.record("a", issued(1, Some(later)));
        assert_eq!(
            ids(&ledgers, "a"),
            ["cred-000000000002", "cred-000000000001"]
        );
        assert_eq!(ledgers.credentials("a")[1].expires_at, Some(later));
        assert_eq!(ledgers.generation("a"), 3, "a renewal is still a change");
    }

    #[test]
    fn end_hands_everything_over_and_refuses_later_records() {
        let ledgers = Ledgers::new();
        ledgers.record("a", issued(1, None));
        ledgers.record("b", issued(2, None));
        let ended = ledgers.end("a");
        assert_eq!(ended.iter().map(|i| i.key).collect::<Vec<_>>(), [1]);
        assert!(ledgers.has_ended("a") && !ledgers.has_ended("b"));
        assert!(ids(&ledgers, "a").is_empty());
        assert!(!ledgers.record("a", issued(3, None)));
        assert!(ids(&ledgers, "a").is_empty());
        assert_eq!(ids(&ledgers, "b"), ["cred-000000000002"]);
    }

    #[tokio::test(start_paused = true)]
    async fn tombstones_are_forgotten_after_retention() {
        let ledgers: Ledgers<u8> = Ledgers::new();
        // Force one shard so ending "b" prunes "a".
        let ledgers = Ledgers {
            shards: ledgers.shards.into_vec().into_iter().take(1).collect(),
            changes: AtomicU64::new(0),
        };
        ledgers.end("a");
        tokio::time::advance(ENDED_RETENTION + Duration::from_secs(1)).await;
        assert!(ledgers.has_ended("a"));
        ledgers.end("b");
        assert!(!ledgers.has_ended("a") && ledgers.has_ended("b"));
    }
}
