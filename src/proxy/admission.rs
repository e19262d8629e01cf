//! admit: whether a request or a tunnel may go at all.
//!
//! Every way in asks here once it knows the task and what is asked for: an
//! absolute-form request and each request inside an intercepted tunnel
//! (after sanitize, so the rule is matched on the request as it will be
//! forwarded), and a `CONNECT`, before any DNS lookup, whether its tunnel
//! is to be intercepted or blind (transparent capture will ask the same).
//! The phases run in this order:
//!
//! ```text
//! authorize → secrets (requests) → approval (requests) → the gateway's admission phases (conditions, budgets…)
//! ```
//!
//! What they let through is an [`Admitted`], whose only constructor is
//! [`admit`]. The destination, credential and forward phases of a request
//! and both kinds of tunnel need one, so a phase added here runs for every
//! way in, and no way in can skip it.

use std::sync::Arc;

use super::gateway::{approval_info, Gateway, Snapshot};
use super::respond::Deny;
use crate::approval::{Asked, Check, Context, State};
use crate::audit::RecordGuard;
use crate::policy::{RequestTarget, ScopeRule, SecretAction, Verdict};
use crate::reason::Reason;
use crate::sanitize::{Finding, FindingLocation};
use crate::task::{Task, TaskService as _};
use crate::BoxFuture;

/// What asks to be admitted.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum Ask<'a> {
    /// An HTTP request, as it will be forwarded.
    Request(RequestTarget<'a>),
    /// A tunnel to `host:port` (`CONNECT`), before any DNS lookup.
    Tunnel {
        /// The normalised host.
        host: &'a str,
        /// The port.
        port: u16,
    },
}

impl Ask<'_> {
    /// The host asked for.
    pub fn host(&self) -> &str {
        match self {
            Ask::Request(target) => target.host,
            Ask::Tunnel { host, .. } => host,
        }
    }
}

/// A phase that decides, after authorize, whether an allowed request or
/// tunnel may still go: a human approval, a request-time condition, a
/// budget. The gateway runs its phases for every way in, in order.
pub trait AdmissionPhase: Send + Sync {
    /// The phase's name, for logs.
    fn name(&self) -> &'static str;

    /// `Ok` lets `ask` on to the next phase; `Err` denies it with a reason.
    /// `rule` is the rule that allowed it.
    fn check<'a>(
        &'a self,
        task: &'a Task,
        ask: Ask<'a>,
        rule: &'a ScopeRule,
    ) -> BoxFuture<'a, Result<(), Deny>>;
}

/// A request or tunnel that every admission phase let through, and the
/// rule that allowed it.
pub(crate) struct Admitted {
    rule: Arc<ScopeRule>,
}

impl Admitted {
    /// The rule that allowed the request or tunnel.
    pub(crate) fn rule(&self) -> &Arc<ScopeRule> {
        &self.rule
    }
}

/// authorize, then (for a request carrying `findings`) the secret check,
/// then every admission phase of the gateway, in order. The record gets the
/// deciding rule; a denial says why.
pub(crate) async fn admit(
    gw: &Gateway,
    snapshot: &Snapshot,
    task: &Task,
    ask: Ask<'_>,
    seen: &Seen<'_>,
    rec: &mut RecordGuard,
) -> Result<Admitted, Deny> {
    let findings = seen.findings;
    // authorize: the task's scope rules, default deny.
    let policy = &snapshot.config.policy;
    let decision = match &ask {
        Ask::Request(target) => policy.decide(&task.scopes, target),
        Ask::Tunnel { host, port } => policy.connect_decision(&task.scopes, host, *port),
    };
    rec.rule(decision.rule.as_ref().map(|r| r.id.clone()));
    // secrets: a request carrying one goes on (without it) only under a rule
    // that says to strip it; the sanitizer has removed it from what `ask`
    // describes, so the rule was matched on what would be forwarded.
    let strips = decision.verdict == Verdict::Allow
        && decision
            .rule
            .as_ref()
            .is_some_and(|r| r.on_secret == SecretAction::Strip);
    if !findings.is_empty() && !strips {
        return Err(Deny::new(
            Reason::SecretInRequest,
            format!(
                "the request carries what looks like a secret ({}); credgate injects credentials itself, send none",
                describe_findings(findings)
            ),
        ));
    }
    if decision.verdict != Verdict::Allow {
        return Err(Deny::new(decision.reason, decision.message));
    }
    let rule = decision.rule.expect("an allow decision names its rule");
    // approval: before any DNS lookup or credential fetch. A tunnel rule
    // cannot ask for one (it carries no request to approve).
    if let Ask::Request(target) = &ask {
        approval(gw, task, target, &rule, seen, rec).await?;
    }
    for phase in gw.admission_phases().iter() {
        phase.check(task, ask, &rule).await?;
    }
    Ok(Admitted { rule })
}

/// What the pipeline saw of a request besides its target: the secret
/// findings, and for an approver the sanitised headers and the body's size.
pub(crate) struct Seen<'a> {
    pub(crate) findings: &'a [Finding],
    pub(crate) headers: Option<&'a http::HeaderMap>,
    pub(crate) body_size: Option<u64>,
}

impl Seen<'static> {
    /// A tunnel: no request yet.
    pub(crate) const TUNNEL: Seen<'static> = Seen {
        findings: &[],
        headers: None,
        body_size: None,
    };
}

/// approval: a request that `rule` allows goes on only under a grant. A
/// pending approval is made (or the identical request's reused) and the
/// request waits for it up to the rule's `hold`; otherwise it is refused
/// with the approval's id, to be retried once a person has approved.
async fn approval(
    gw: &Gateway,
    task: &Task,
    target: &RequestTarget<'_>,
    rule: &ScopeRule,
    seen: &Seen<'_>,
    rec: &mut RecordGuard,
) -> Result<(), Deny> {
    let Some(spec) = rule.approval else {
        return Ok(());
    };
    let asked = Asked {
        task: task.id.as_str().into(),
        rule: rule.id.clone(),
        method: target.method.as_str().to_owned(),
        path: target.path.to_owned(),
    };
    let context = || {
        Context {
        agent: task.agent.clone(),
        labels: task
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        purpose: task.labels.get("purpose").cloned(),
        host: target.host.to_owned(),
        port: target.port,
        headers: seen
            .headers
            .map(|headers| {
                headers
                    .iter()
                    .map(|(name, value)| {
                        // A header a secret was found in (a rule that
                        // strips secrets lets the request on) shows no value.
                        let secret = seen.findings.iter().any(|f| {
                            matches!(&f.location, FindingLocation::Header(h) if h.eq_ignore_ascii_case(name.as_str()))
                        });
                        let value = if secret {
                            "(removed: it looks like a secret)".to_owned()
                        } else {
                            String::from_utf8_lossy(value.as_bytes()).into_owned()
                        };
                        (name.as_str().to_owned(), value)
                    })
                    .collect()
            })
            .unwrap_or_default(),
        body_size: seen.body_size,
    }
    };
    let mut held = spec.hold.is_zero();
    loop {
        let (check, changes) =
            gw.approvals
                .check(&asked, spec, context, tokio::time::Instant::now());
        gw.record_approvals(changes);
        match check {
            Check::Granted(approval) => {
                rec.approval(approval_info(&approval));
                return Ok(());
            }
            Check::Denied(approval) => {
                rec.approval(approval_info(&approval));
                let denial = approval.denial.as_ref();
                return Err(Deny::new(
                    Reason::ApprovalDenied,
                    format!(
                        "{} denied approval {} for this request: {}",
                        denial.map_or("an approver", |d| d.approver.as_str()),
                        approval.id,
                        denial
                            .and_then(|d| d.reason.as_deref())
                            .unwrap_or("no reason given")
                    ),
                )
                .with_approval(&approval.id));
            }
            Check::Pending {
                approval,
                mut changes,
                ..
            } => {
                if !held {
                    // Wait for an answer (or the hold to run out), then ask
                    // again: a grant now covers the request.
                    held = true;
                    let until = tokio::time::Instant::now() + spec.hold;
                    while *changes.borrow_and_update() == State::Pending {
                        match tokio::time::timeout_at(until, changes.changed()).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) | Err(_) => break,
                        }
                    }
                    continue;
                }
                rec.approval(approval_info(&approval));
                return Err(Deny::new(
                    Reason::ApprovalRequired,
                    format!(
                        "rule {} needs a person's approval: ask them to approve {} \
                         (credgate approvals approve {} --as NAME), then retry",
                        rule.id, approval.id, approval.id
                    ),
                )
                .with_approval(&approval.id));
            }
        }
    }
}

/// `github_token in header x-custom, jwt in the body`: rule and place, never
/// the value.
fn describe_findings(findings: &[Finding]) -> String {
    let mut parts: Vec<String> = findings
        .iter()
        .map(|f| match &f.location {
            FindingLocation::Url => format!("{} in the URL", f.rule),
            FindingLocation::Header(name) => format!("{} in header {name}", f.rule),
            FindingLocation::Body => format!("{} in the body", f.rule),
            #[allow(unreachable_patterns)]
            _ => f.rule.to_string(),
        })
        .collect();
    parts.sort();
    parts.dedup();
    parts.join(", ")
}
