//! The loop that ends expired tasks and forgets old ended ones.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::MissedTickBehavior;

use super::model::Task;
use super::store::TaskStore;

/// Every `every`, hands each task whose expiry has passed to `on_expired`,
/// then purges tasks ended more than `keep_ended` ago. Returns when
/// `shutdown` resolves.
///
/// Expiry already makes [`TaskStore::authenticate`] refuse a task at once;
/// the reaper exists so that the *end work* happens: `on_expired` is where
/// the gateway calls `task.end(EndReason::Expired)` and, when that returns
/// `true`, revokes credentials, writes `task.end` and closes connections.
/// Tasks are handled one after another, and a slow revocation delays only
/// the next reap, never a request.
pub async fn run_reaper<F>(
    store: Arc<TaskStore>,
    every: Duration,
    keep_ended: Duration,
    on_expired: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(Arc<Task>) -> crate::BoxFuture<'static, ()>,
{
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        for task in store.expired(SystemTime::now()) {
            tokio::select! {
                () = &mut shutdown => return,
                () = on_expired(task) => {}
            }
        }
        store.purge_ended(SystemTime::now(), keep_ended);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{EndReason, TaskSpec};
    use std::collections::BTreeMap;

    fn spec(ttl: Duration) -> TaskSpec {
        TaskSpec {
            agent: "agent".into(),
            scopes: vec!["s".into()],
            ttl: Some(ttl),
            labels: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn expired_tasks_are_handed_over_and_purged_later() {
        let store = Arc::new(TaskStore::new());
        let now = SystemTime::now();
        let (expired, _) = store.create(spec(Duration::ZERO), now);
        let (alive, _) = store.create(spec(Duration::from_secs(3600)), now);
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let reaper = tokio::spawn(run_reaper(
            store.clone(),
            Duration::from_millis(10),
            Duration::ZERO,
            move |task: Arc<Task>| {
                let seen_tx = seen_tx.clone();
                Box::pin(async move {
                    if task.end(EndReason::Expired) {
                        let _ = seen_tx.send(task.id.clone());
                    }
                }) as crate::BoxFuture<'static, ()>
            },
            async {
                let _ = stop_rx.await;
            },
        ));
        let id = tokio::time::timeout(Duration::from_secs(5), seen_rx.recv())
            .await
            .expect("reaper ran")
            .unwrap();
        assert_eq!(id, expired.id);
        assert_eq!(expired.ended(), Some(EndReason::Expired));
        assert!(alive.ended().is_none());
        // With keep_ended = 0 the next round forgets it.
        tokio::time::timeout(Duration::from_secs(5), async {
            while store.get(&expired.id).is_some() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("purged");
        assert!(store.get(&alive.id).is_some());
        assert!(seen_rx.try_recv().is_err(), "end work ran once");
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), reaper)
            .await
            .expect("reaper stopped")
            .unwrap();
    }
}
