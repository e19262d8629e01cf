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
//! authorize → secrets (requests) → the gateway's admission phases (approval, conditions, budgets…)
//! ```
//!
//! What they let through is an [`Admitted`], whose only constructor is
//! [`admit`]. The destination, credential and forward phases of a request
//! and both kinds of tunnel need one, so a phase added here runs for every
//! way in, and no way in can skip it.

use std::sync::Arc;

use super::gateway::{Gateway, Snapshot};
use super::respond::Deny;
use crate::audit::RecordGuard;
use crate::policy::{RequestTarget, ScopeRule, SecretAction, Verdict};
use crate::reason::Reason;
use crate::sanitize::{Finding, FindingLocation};
use crate::task::Task;
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
    findings: &[Finding],
    rec: &mut RecordGuard,
) -> Result<Admitted, Deny> {
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
    for phase in gw.admission_phases().iter() {
        phase.check(task, ask, &rule).await?;
    }
    Ok(Admitted { rule })
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
