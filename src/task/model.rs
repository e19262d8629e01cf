//! The task itself, its lifecycle and its API view.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::scrub::Scrubber;
use crate::secret::Secret;

/// The lifetime a task gets when its spec names none and nothing else decides.
///
/// The running gateway normally applies its configured default (and cap)
/// before calling the store; this is the store's last resort so that a task
/// never lives forever by accident.
pub const DEFAULT_TASK_TTL: Duration = Duration::from_secs(15 * 60);

/// How far away "never" is for an ambient task without a TTL: far enough to
/// outlive any pod, near enough to stay representable in RFC 3339.
const AMBIENT_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What a caller asks for when starting a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    /// Free-form name of the agent doing the work (appears in every record).
    pub agent: String,
    /// Names of the configured scopes granted to the task.
    pub scopes: Vec<String>,
    /// How long the task may live. `None` means "the service's default": the
    /// admin API leaves it `None` when the caller gave no `ttl`, and the
    /// gateway replaces it with its configured default before creating the
    /// task. The store itself falls back to [`DEFAULT_TASK_TTL`] (or, for the
    /// ambient task, to living as long as the process).
    pub ttl: Option<Duration>,
    /// Free-form labels (ticket, environment, …) copied into every record.
    pub labels: BTreeMap<String, String>,
}

/// Why a task stopped being usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Someone ended it (admin API, `credgate task end`, `credgate run` exiting).
    Requested,
    /// Its expiry passed and the reaper ended it.
    Expired,
    /// The gateway is shutting down.
    Shutdown,
}

/// The state shown by the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Requests under this task are served.
    Active,
    /// The task was ended on request or by shutdown.
    Ended,
    /// The task's expiry has passed (whether or not the reaper has run yet).
    Expired,
}

/// When and why a task ended.
#[derive(Debug, Clone, Copy)]
struct Ending {
    why: EndReason,
    at: SystemTime,
}

/// A bounded unit of agent work.
///
/// Shared as `Arc<Task>` between the store, the admin API and every open
/// connection of the task; ending it is visible to all of them at once.
#[derive(Debug)]
pub struct Task {
    /// `task-` followed by 16 random hex digits.
    pub id: String,
    /// The agent's name from the spec.
    pub agent: String,
    /// The scope names granted to the task.
    pub scopes: Vec<String>,
    /// Labels from the spec, shared with every record of the task.
    pub labels: Arc<BTreeMap<String, String>>,
    /// When the task was created.
    pub created_at: SystemTime,
    /// The first instant at which the task is no longer active.
    pub expires_at: SystemTime,
    /// `true` for the sidecar-mode task that needs no token.
    pub ambient: bool,
    /// SHA-256 of the task token; `None` for the ambient task.
    token_hash: Option<[u8; 32]>,
    /// `None` while the task runs. A watch channel so that connections can
    /// wait for the end without polling and late subscribers still see it.
    end: watch::Sender<Option<Ending>>,
    /// Masks the task token in responses; built on the first response, from
    /// the token that request presented (any token that authenticates for
    /// this task is its token).
    token_scrubber: OnceLock<Arc<Scrubber>>,
}

impl Task {
    /// Builds a task from `spec`; `token_hash` is `None` only for the ambient task.
    pub(crate) fn new(
        id: String,
        spec: TaskSpec,
        now: SystemTime,
        token_hash: Option<[u8; 32]>,
    ) -> Task {
        let ambient = token_hash.is_none();
        let ttl = match (spec.ttl, ambient) {
            (Some(ttl), _) => ttl,
            (None, false) => DEFAULT_TASK_TTL,
            (None, true) => AMBIENT_LIFETIME,
        };
        let expires_at = now
            .checked_add(ttl)
            .or_else(|| now.checked_add(AMBIENT_LIFETIME))
            .unwrap_or(now);
        Task {
            id,
            agent: spec.agent,
            scopes: spec.scopes,
            labels: Arc::new(spec.labels),
            created_at: now,
            expires_at,
            ambient,
            token_hash,
            end: watch::Sender::new(None),
            token_scrubber: OnceLock::new(),
        }
    }

    /// The scrubber for the task token, `token` as presented by a request of
    /// this task. Built once per task and shared by all its connections.
    pub(crate) fn token_scrubber(&self, token: &Secret) -> Arc<Scrubber> {
        self.token_scrubber
            .get_or_init(|| Arc::new(Scrubber::compact([token.expose()])))
            .clone()
    }

    /// The stored token digest, for constant-time comparison by the store.
    pub(crate) fn token_hash(&self) -> Option<&[u8; 32]> {
        self.token_hash.as_ref()
    }

    /// `true` when requests under this task may be served at `now`: it has
    /// not been ended and `now` is before its expiry.
    pub fn is_active(&self, now: SystemTime) -> bool {
        self.end.borrow().is_none() && now < self.expires_at
    }

    /// Why the task ended, or `None` while it has not been ended. A task whose
    /// expiry passed but which the reaper has not reached yet still reports
    /// `None` here; use [`Task::is_active`] to decide whether to serve it.
    pub fn ended(&self) -> Option<EndReason> {
        self.end.borrow().map(|e| e.why)
    }

    /// When the task was ended, if it was.
    pub fn ended_at(&self) -> Option<SystemTime> {
        self.end.borrow().map(|e| e.at)
    }

    /// Marks the task ended. Returns `true` only for the first call, so the
    /// caller that gets `true` is the one that must do the end work
    /// (revocation, record, closing connections) exactly once.
    pub fn end(&self, why: EndReason) -> bool {
        let at = SystemTime::now();
        self.end.send_if_modified(|state| {
            if state.is_some() {
                return false;
            }
            *state = Some(Ending { why, at });
            true
        })
    }

    /// Resolves once the task has been ended (immediately if it already was).
    ///
    /// Cancel-safe: dropping the future loses nothing, so connections can use
    /// it in `select!` to close when their task ends. Expiry alone does not
    /// resolve it; the reaper ends expired tasks.
    pub async fn wait_ended(&self) {
        let mut rx = self.end.subscribe();
        // The sender lives as long as `self`, so the channel cannot close
        // while this future is borrowed from it.
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// The state as of `now`.
    pub fn state_at(&self, now: SystemTime) -> TaskState {
        match self.ended() {
            Some(EndReason::Expired) => TaskState::Expired,
            Some(EndReason::Requested | EndReason::Shutdown) => TaskState::Ended,
            None if now >= self.expires_at => TaskState::Expired,
            None => TaskState::Active,
        }
    }

    /// The view the admin API returns, as of the current time. It never
    /// contains the token or its digest.
    pub fn view(&self) -> TaskView {
        self.view_at(SystemTime::now())
    }

    /// [`Task::view`] as of `now`.
    pub fn view_at(&self, now: SystemTime) -> TaskView {
        TaskView {
            id: self.id.clone(),
            agent: self.agent.clone(),
            scopes: self.scopes.clone(),
            labels: (*self.labels).clone(),
            created_at: rfc3339(self.created_at),
            expires_at: rfc3339(self.expires_at),
            state: self.state_at(now),
            ambient: self.ambient,
            ended_at: self.ended_at().map(rfc3339),
            end_reason: self.ended(),
        }
    }
}

/// What the admin API shows about a task. Contains no secret by construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// The task id.
    pub id: String,
    /// The agent's name.
    pub agent: String,
    /// Granted scope names.
    pub scopes: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// Expiry time, RFC 3339 UTC.
    pub expires_at: String,
    /// Active, ended or expired.
    pub state: TaskState,
    /// `true` for the sidecar-mode task.
    pub ambient: bool,
    /// When the task was ended, RFC 3339 UTC, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Why the task was ended, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
}

/// RFC 3339 in UTC with whole seconds, e.g. `2026-01-02T03:04:05Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ttl: Option<Duration>) -> TaskSpec {
        TaskSpec {
            agent: "agent".into(),
            scopes: vec!["s".into()],
            ttl,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn expiry_is_exclusive_at_expires_at() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let task = Task::new(
            "task-x".into(),
            spec(Some(Duration::from_secs(60))),
            now,
            Some([0; 32]),
        );
        assert!(task.is_active(now));
        assert!(task.is_active(now + Duration::from_secs(59)));
        assert!(!task.is_active(task.expires_at));
        assert_eq!(task.state_at(task.expires_at), TaskState::Expired);
        assert_eq!(task.ended(), None, "expiry alone does not end the task");
    }

    #[test]
    fn missing_ttl_uses_default_and_ambient_lives_long() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let task = Task::new("task-x".into(), spec(None), now, Some([0; 32]));
        assert_eq!(task.expires_at, now + DEFAULT_TASK_TTL);
        let ambient = Task::new("task-a".into(), spec(None), now, None);
        assert!(ambient.ambient);
        assert!(ambient.is_active(now + Duration::from_secs(10 * 365 * 24 * 3600)));
    }

    #[test]
    fn end_runs_once_and_records_the_first_reason() {
        let now = SystemTime::now();
        let task = Task::new("task-x".into(), spec(None), now, Some([0; 32]));
        assert!(task.end(EndReason::Requested));
        assert!(!task.end(EndReason::Shutdown));
        assert!(!task.end(EndReason::Requested));
        assert_eq!(task.ended(), Some(EndReason::Requested));
        assert!(!task.is_active(now));
        assert_eq!(task.state_at(now), TaskState::Ended);
    }

    #[test]
    fn view_shows_state_and_times_but_no_token() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045);
        let task = Task::new(
            "task-x".into(),
            spec(Some(Duration::from_secs(60))),
            now,
            Some([0xab; 32]),
        );
        let view = task.view_at(now);
        assert_eq!(view.created_at, "2026-01-02T03:04:05Z");
        assert_eq!(view.expires_at, "2026-01-02T03:05:05Z");
        assert_eq!(view.state, TaskState::Active);
        let json = serde_json::to_string(&view).unwrap();
        assert!(json.contains("\"state\":\"active\""), "{json}");
        assert!(!json.contains("abab"), "{json}");
        assert!(!json.contains("end_reason"), "{json}");
        task.end(EndReason::Expired);
        assert_eq!(task.view_at(now).state, TaskState::Expired);
        assert_eq!(task.view_at(now).end_reason, Some(EndReason::Expired));
    }

    #[tokio::test]
    async fn wait_ended_wakes_waiters_and_late_callers() {
        let task = std::sync::Arc::new(Task::new(
            "task-x".into(),
            spec(None),
            SystemTime::now(),
            Some([0; 32]),
        ));
        let waiter = tokio::spawn({
            let task = task.clone();
            async move { task.wait_ended().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        task.end(EndReason::Shutdown);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiter woke")
            .unwrap();
        // A caller arriving after the end returns at once.
        tokio::time::timeout(Duration::from_secs(5), task.wait_ended())
            .await
            .expect("late caller returned");
    }

    #[tokio::test]
    async fn wait_ended_is_cancel_safe() {
        let task = Task::new(
            "task-x".into(),
            spec(None),
            SystemTime::now(),
            Some([0; 32]),
        );
        let timed_out = tokio::time::timeout(Duration::from_millis(10), task.wait_ended()).await;
        assert!(timed_out.is_err());
        task.end(EndReason::Requested);
        tokio::time::timeout(Duration::from_secs(5), task.wait_ended())
            .await
            .expect("woke after a cancelled wait");
    }
}
