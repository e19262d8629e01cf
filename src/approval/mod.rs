//! Human approvals: what a rule with `approval:` asks a person for, and
//! the grants their answers make.
//!
//! Pure bookkeeping, with time passed in: the store keeps every approval
//! of every task, decides whether a request is covered by a grant, reuses
//! the pending approval of an identical request, remembers a denial until
//! the task ends, and expires what nobody answered. Waiting for an answer
//! (a rule's `hold`) watches the approval's state.
//!
//! A request is identified by its task, the rule that allowed it, its
//! method and its normalised path (never its query or body). A grant is
//! one of:
//! - `request`: that request, once; the next identical one asks again;
//! - a duration: any request of the task under that rule, until it runs out;
//! - `task`: any request of the task under that rule, until the task ends.
//!
//! An approver may narrow a grant (a duration instead of `task`, `request`
//! instead of a duration), never widen it. With `approvers: 2`, two
//! distinct approver names must approve.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// What a rule's `approval:` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalSpec {
    /// How many distinct approvers must approve (1 or 2).
    pub approvers: u8,
    /// How long a request waits for the answer before it is refused
    /// (zero: refused at once, to be retried).
    pub hold: Duration,
    /// The widest grant an approval makes.
    pub grant: Grant,
}

impl Default for ApprovalSpec {
    /// `approval: required`: one approver, no hold, the request alone.
    fn default() -> Self {
        ApprovalSpec {
            approvers: 1,
            hold: Duration::ZERO,
            grant: Grant::Request,
        }
    }
}

/// What an approval covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// The approved request, once.
    Request,
    /// Every request of the task under the rule, for this long.
    For(Duration),
    /// Every request of the task under the rule, while the task lives.
    Task,
}

impl Grant {
    /// `request`, `task`, or a duration (`10m`).
    pub fn parse(text: &str) -> Result<Grant, String> {
        match text.trim() {
            "request" => Ok(Grant::Request),
            "task" => Ok(Grant::Task),
            other => match crate::units::parse_duration(other) {
                Ok(d) if d.is_zero() => Err("a grant must last longer than zero".into()),
                Ok(d) => Ok(Grant::For(d)),
                Err(e) => Err(format!("{e}; or use request or task")),
            },
        }
    }

    /// Whether this grant covers no more than `other`.
    pub fn within(self, other: Grant) -> bool {
        match (self, other) {
            (Grant::Request, _) | (_, Grant::Task) => true,
            (Grant::For(a), Grant::For(b)) => a <= b,
            (Grant::Task | Grant::For(_), Grant::Request) | (Grant::Task, Grant::For(_)) => false,
        }
    }

    /// The narrower of the two.
    pub fn narrowest(self, other: Grant) -> Grant {
        if self.within(other) {
            self
        } else {
            other
        }
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::Request => f.write_str("request"),
            Grant::Task => f.write_str("task"),
            Grant::For(d) => f.write_str(&humantime::format_duration(*d).to_string()),
        }
    }
}

/// Where an approval is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Asked, not yet decided.
    Pending,
    /// Approved by enough approvers.
    Granted,
    /// Denied by an approver.
    Denied,
    /// Nobody answered in time, or its task ended first.
    Expired,
}

impl State {
    /// The name the API and the records use.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Granted => "granted",
            State::Denied => "denied",
            State::Expired => "expired",
        }
    }

    /// The state named `text`.
    pub fn parse(text: &str) -> Option<State> {
        [
            State::Pending,
            State::Granted,
            State::Denied,
            State::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// The request an approval is for: its task, rule, method and normalised
/// path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Asked {
    pub task: Arc<str>,
    pub rule: Arc<str>,
    pub method: String,
    pub path: String,
}

/// What an approver sees of the request, besides [`Asked`]: nothing in it
/// is a credential or a task token (the headers are the sanitised ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    pub agent: String,
    pub labels: Vec<(String, String)>,
    pub purpose: Option<String>,
    pub host: String,
    pub port: u16,
    pub headers: Vec<(String, String)>,
    pub body_size: Option<u64>,
}

/// One approver's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub approver: String,
    pub reason: Option<String>,
    pub at: Instant,
}

/// One approval, as the API shows it.
#[derive(Debug, Clone)]
pub struct Approval {
    /// `apr-` and 32 hex digits: unguessable.
    pub id: String,
    pub asked: Asked,
    pub context: Context,
    pub spec: ApprovalSpec,
    pub state: State,
    /// Who approved so far (distinct names), in order.
    pub approvals: Vec<Answer>,
    /// Who denied it, and why.
    pub denial: Option<Answer>,
    /// The grant, once granted: the rule's, narrowed by the approvers.
    pub grant: Option<Grant>,
    pub first_asked: Instant,
    pub last_asked: Instant,
    /// How often the request was made while it was pending.
    pub asks: u32,
    /// When it was granted, denied or expired.
    pub decided_at: Option<Instant>,
    /// A `request` grant once the request it approved has gone.
    used: bool,
}

impl Approval {
    /// When a time-boxed grant runs out.
    pub fn grant_until(&self) -> Option<Instant> {
        match (self.grant, self.decided_at) {
            (Some(Grant::For(d)), Some(at)) => Some(at + d),
            _ => None,
        }
    }

    /// The names of those who approved.
    pub fn approvers(&self) -> Vec<String> {
        self.approvals.iter().map(|a| a.approver.clone()).collect()
    }

    /// Whether this approval's grant covers `asked` at `now`.
    fn covers(&self, asked: &Asked, now: Instant) -> bool {
        if self.state != State::Granted
            || self.asked.task != asked.task
            || self.asked.rule != asked.rule
        {
            return false;
        }
        match self.grant {
            Some(Grant::Request) => !self.used && self.asked == *asked,
            Some(Grant::For(_)) => self.grant_until().is_some_and(|until| now < until),
            Some(Grant::Task) => true,
            None => false,
        }
    }
}

/// What the store says of a request that needs approval.
#[derive(Debug)]
pub enum Check {
    /// A grant covers it (a `request` grant is used up by it).
    Granted(Approval),
    /// It waits for an answer: a new approval, or the pending one of an
    /// identical request. The receiver sees the state change.
    Pending {
        approval: Approval,
        created: bool,
        changes: watch::Receiver<State>,
    },
    /// An approver denied an identical request of this task.
    Denied(Approval),
}

/// Why an answer was refused; it changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("no approval {0}")]
    NotFound(String),
    #[error("approval {id} is already {}", state.as_str())]
    Decided { id: String, state: State },
    #[error("the approver's name is required")]
    NoApprover,
    #[error("a denial needs a reason")]
    NoReason,
    #[error("{approver} has already approved {id}; a second approver must be someone else")]
    SameApprover { id: String, approver: String },
    #[error("the grant {asked} is wider than the rule allows ({allowed})")]
    WiderGrant { asked: Grant, allowed: Grant },
}

/// An approval's outcome, for the record and the notification.
#[derive(Debug, Clone)]
pub enum Change {
    /// A new pending approval.
    Requested(Approval),
    /// One approver approved; more are needed.
    Approved(Approval),
    Granted(Approval),
    Denied(Approval),
    Expired(Approval),
}

struct Entry {
    approval: Approval,
    state: watch::Sender<State>,
}

/// Every approval of every task.
pub struct Approvals {
    /// How long a pending approval waits for an answer, in milliseconds
    /// (the configuration's, which a reload may change).
    pending_ttl: AtomicU64,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Approvals {
    pub fn new(pending_ttl: Duration) -> Approvals {
        let approvals = Approvals {
            pending_ttl: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
        };
        approvals.set_pending_ttl(pending_ttl);
        approvals
    }

    /// Sets how long a pending approval waits for an answer from now on.
    pub fn set_pending_ttl(&self, ttl: Duration) {
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.pending_ttl.store(millis, Ordering::Relaxed);
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.pending_ttl.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `asked` may go under `spec` at `now`: granted, waiting, or
    /// denied; and the changes to record (what expired, a new approval).
    pub fn check(
        &self,
        asked: &Asked,
        spec: ApprovalSpec,
        context: impl FnOnce() -> Context,
        now: Instant,
    ) -> (Check, Vec<Change>) {
        let mut entries = self.lock();
        let mut changes = expire_locked(&mut entries, self.ttl(), now);
        if let Some(entry) = entries.values_mut().find(|e| e.approval.covers(asked, now)) {
            if entry.approval.grant == Some(Grant::Request) {
                entry.approval.used = true;
            }
            return (Check::Granted(entry.approval.clone()), changes);
        }
        let same =
            |e: &&mut Entry, state: State| e.approval.state == state && e.approval.asked == *asked;
        if let Some(entry) = entries.values_mut().find(|e| same(e, State::Denied)) {
            return (Check::Denied(entry.approval.clone()), changes);
        }
        if let Some(entry) = entries.values_mut().find(|e| same(e, State::Pending)) {
            entry.approval.last_asked = now;
            entry.approval.asks += 1;
            let check = Check::Pending {
                approval: entry.approval.clone(),
                created: false,
                changes: entry.state.subscribe(),
            };
            return (check, changes);
        }
        let id = format!(
            "apr-{}",
            crate::hex::lower(&crate::secret::random_bytes::<16>())
        );
        let approval = Approval {
            id: id.clone(),
            asked: asked.clone(),
            context: context(),
            spec,
            state: State::Pending,
            approvals: Vec::new(),
            denial: None,
            grant: None,
            first_asked: now,
            last_asked: now,
            asks: 1,
            decided_at: None,
            used: false,
        };
        let (state, receiver) = watch::channel(State::Pending);
        entries.insert(
            id,
            Entry {
                approval: approval.clone(),
                state,
            },
        );
        changes.push(Change::Requested(approval.clone()));
        let check = Check::Pending {
            approval,
            created: true,
            changes: receiver,
        };
        (check, changes)
    }

    /// The approval `id` as it is now.
    pub fn get(&self, id: &str) -> Option<Approval> {
        self.lock().get(id).map(|e| e.approval.clone())
    }

    /// Every approval in `state` (all when `None`) of `task` (all when
    /// `None`), oldest first.
    pub fn list(&self, state: Option<State>, task: Option<&str>) -> Vec<Approval> {
        let mut out: Vec<Approval> = self
            .lock()
            .values()
            .map(|e| &e.approval)
            .filter(|a| state.is_none_or(|s| a.state == s))
            .filter(|a| task.is_none_or(|t| &*a.asked.task == t))
            .cloned()
            .collect();
        out.sort_by_key(|a| (a.first_asked, a.id.clone()));
        out
    }

    /// `approver` approves `id`, with a grant no wider than the rule's.
    pub fn approve(
        &self,
        id: &str,
        approver: &str,
        reason: Option<&str>,
        grant: Option<Grant>,
        now: Instant,
    ) -> Result<Change, AnswerError> {
        let approver = approver.trim();
        if approver.is_empty() {
            return Err(AnswerError::NoApprover);
        }
        let mut entries = self.lock();
        expire_locked(&mut entries, self.ttl(), now);
        let entry = pending(&mut entries, id)?;
        let approval = &mut entry.approval;
        let allowed = approval.spec.grant;
        if let Some(asked) = grant {
            if !asked.within(allowed) {
                return Err(AnswerError::WiderGrant { asked, allowed });
            }
        }
        if approval.approvals.iter().any(|a| a.approver == approver) {
            return Err(AnswerError::SameApprover {
                id: id.to_owned(),
                approver: approver.to_owned(),
            });
        }
        approval.approvals.push(Answer {
            approver: approver.to_owned(),
            reason: reason.map(str::to_owned).filter(|r| !r.trim().is_empty()),
            at: now,
        });
        let narrowed = approval.grant.unwrap_or(allowed);
        approval.grant = Some(grant.map_or(narrowed, |g| g.narrowest(narrowed)));
        if approval.approvals.len() < usize::from(approval.spec.approvers) {
            return Ok(Change::Approved(approval.clone()));
        }
        approval.state = State::Granted;
        approval.decided_at = Some(now);
        entry.state.send_replace(State::Granted);
        Ok(Change::Granted(entry.approval.clone()))
    }

    /// `approver` denies `id`, saying why.
    pub fn deny(
        &self,
        id: &str,
        approver: &str,
        reason: &str,
        now: Instant,
    ) -> Result<Change, AnswerError> {
        let approver = approver.trim();
        if approver.is_empty() {
            return Err(AnswerError::NoApprover);
        }
        if reason.trim().is_empty() {
            return Err(AnswerError::NoReason);
        }
        let mut entries = self.lock();
        expire_locked(&mut entries, self.ttl(), now);
        let entry = pending(&mut entries, id)?;
        let approval = &mut entry.approval;
        approval.state = State::Denied;
        approval.grant = None;
        approval.decided_at = Some(now);
        approval.denial = Some(Answer {
            approver: approver.to_owned(),
            reason: Some(reason.trim().to_owned()),
            at: now,
        });
        entry.state.send_replace(State::Denied);
        Ok(Change::Denied(entry.approval.clone()))
    }

    /// Expires what waited longer than the pending time-to-live.
    pub fn expire(&self, now: Instant) -> Vec<Change> {
        expire_locked(&mut self.lock(), self.ttl(), now)
    }

    /// The task ended: its pending approvals expire, and every approval of
    /// it is forgotten (its grants and denials end with it).
    pub fn end_task(&self, task: &str, now: Instant) -> Vec<Change> {
        let mut entries = self.lock();
        let mut changes = Vec::new();
        entries.retain(|_, entry| {
            if &*entry.approval.asked.task != task {
                return true;
            }
            if entry.approval.state == State::Pending {
                entry.approval.state = State::Expired;
                entry.approval.decided_at = Some(now);
                entry.state.send_replace(State::Expired);
                changes.push(Change::Expired(entry.approval.clone()));
            }
            false
        });
        changes
    }
}

/// The pending approval `id`, or why it cannot be answered.
fn pending<'a>(
    entries: &'a mut HashMap<String, Entry>,
    id: &str,
) -> Result<&'a mut Entry, AnswerError> {
    let entry = entries
        .get_mut(id)
        .ok_or_else(|| AnswerError::NotFound(id.to_owned()))?;
    match entry.approval.state {
        State::Pending => Ok(entry),
        state => Err(AnswerError::Decided {
            id: id.to_owned(),
            state,
        }),
    }
}

fn expire_locked(entries: &mut HashMap<String, Entry>, ttl: Duration, now: Instant) -> Vec<Change> {
    let mut changes = Vec::new();
    for entry in entries.values_mut() {
        let approval = &mut entry.approval;
        if approval.state == State::Pending && now >= approval.first_asked + ttl {
            approval.state = State::Expired;
            approval.decided_at = Some(now);
            entry.state.send_replace(State::Expired);
            changes.push(Change::Expired(approval.clone()));
        }
    }
    changes
}

#[cfg(test)]
mod tests;
