//! The compiled policy and the decisions it makes, request by request and
//! for each `CONNECT`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::glob::MatchPath;
use super::rule::is_never_forwarded;
use super::target::write_url;
use super::{Action, RequestTarget, ScopeRule};
use crate::reason::Reason;

/// Whether the request may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it (or, for a `CONNECT`, accept the tunnel).
    Allow,
    /// Refuse it; nothing is resolved, dialled or fetched.
    Deny,
}

/// The outcome of one policy question, with what the record and the agent
/// are told.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Allow or deny.
    pub verdict: Verdict,
    /// The rule that decided: the allowing rule, the denying rule, or for a
    /// `CONNECT` the tunnel rule when the tunnel is to be blind. `None` when
    /// no rule decided (no match, refused method, unknown scopes).
    pub rule: Option<Arc<ScopeRule>>,
    /// The stable reason for the record, the status and the metric.
    pub reason: Reason,
    /// One actionable sentence, safe to show the agent: it names rules,
    /// scopes, method and URL without query or fragment, never a secret.
    /// Empty when a rule allows a request: [`Decision::why`] writes that
    /// sentence where it is shown.
    pub message: String,
}

impl Decision {
    pub(super) fn allow(rule: &Arc<ScopeRule>, message: String) -> Decision {
        Decision {
            verdict: Verdict::Allow,
            rule: Some(Arc::clone(rule)),
            reason: Reason::Allowed,
            message,
        }
    }

    /// The message, or for an allow decision the sentence saying which rule
    /// allows `target`.
    pub fn why(&self, target: &RequestTarget<'_>) -> String {
        match (&self.verdict, &self.rule) {
            (Verdict::Allow, Some(rule)) if self.message.is_empty() => {
                rule_message(&rule.id, " allows ", target)
            }
            _ => self.message.clone(),
        }
    }

    pub(super) fn deny(reason: Reason, rule: Option<&Arc<ScopeRule>>, message: String) -> Decision {
        Decision {
            verdict: Verdict::Deny,
            rule: rule.map(Arc::clone),
            reason,
            message,
        }
    }

    /// `true` when the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// `true` when a `CONNECT` was allowed by a `tunnel` rule: relay bytes
    /// blindly, without interception or injection.
    pub fn is_blind_tunnel(&self) -> bool {
        self.is_allowed() && self.rule.as_ref().is_some_and(|rule| rule.tunnel)
    }
}

/// All scopes, compiled. Built once per config load and shared read-only
/// (behind an `Arc`) by every request; deciding takes no lock.
#[derive(Default)]
pub struct Policy {
    scopes: Vec<CompiledScope>,
    by_name: HashMap<Arc<str>, usize>,
}

/// The scopes and their rules; the indexes are derived from them.
impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.scopes.iter().map(|s| (&s.name, &s.rules)))
            .finish()
    }
}

/// One scope's rules in file order, with an index so a decision only looks
/// at rules that can match the host.
pub(super) struct CompiledScope {
    name: Arc<str>,
    /// The scope's rules in file order.
    pub(super) rules: Vec<Arc<ScopeRule>>,
    /// Positions of the rules naming exactly this host, ascending.
    by_host: HashMap<Box<str>, Vec<u32>>,
    /// Positions of the `*.` rules, ascending; each is checked by suffix.
    subdomain_rules: Vec<u32>,
}

impl CompiledScope {
    /// The rules that may match `host`, in file order.
    pub(super) fn candidates<'s>(
        &'s self,
        host: &str,
    ) -> impl Iterator<Item = &'s Arc<ScopeRule>> + 's {
        let exact = self.by_host.get(host).map_or(&[][..], Vec::as_slice);
        MergeAscending {
            a: exact,
            b: &self.subdomain_rules,
        }
        .map(|position| &self.rules[position as usize])
    }
}

/// Merges two ascending position lists, so candidates keep file order.
struct MergeAscending<'a> {
    a: &'a [u32],
    b: &'a [u32],
}

impl Iterator for MergeAscending<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let take_a = match (self.a.first(), self.b.first()) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        let list = if take_a { &mut self.a } else { &mut self.b };
        let (&first, rest) = list.split_first()?;
        *list = rest;
        Some(first)
    }
}

/// The index key for a host: forgiving about case and one trailing dot,
/// like [`super::HostPattern::matches`], so the index never hides an exact
/// deny rule that the matcher itself would apply.
pub(super) fn host_key(host: &str) -> Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

impl Policy {
    /// Builds the policy from compiled scopes. A name given twice gets the
    /// rules of both entries, in order, so no deny rule is ever dropped.
    pub fn new(scopes: Vec<(String, Vec<ScopeRule>)>) -> Policy {
        let mut policy = Policy::default();
        for (name, rules) in scopes {
            let position = match policy.by_name.get(name.as_str()) {
                Some(&position) => position,
                None => {
                    let name: Arc<str> = name.into();
                    policy
                        .by_name
                        .insert(Arc::clone(&name), policy.scopes.len());
                    policy.scopes.push(CompiledScope {
                        name,
                        rules: Vec::new(),
                        by_host: HashMap::new(),
                        subdomain_rules: Vec::new(),
                    });
                    policy.scopes.len() - 1
                }
            };
            let scope = &mut policy.scopes[position];
            for rule in rules {
                let index = u32::try_from(scope.rules.len()).expect("fewer than 2^32 rules");
                match rule.host().exact() {
                    Some(host) => scope.by_host.entry(host.into()).or_default().push(index),
                    None => scope.subdomain_rules.push(index),
                }
                scope.rules.push(Arc::new(rule));
            }
        }
        policy
    }

    /// `true` when the configuration has a scope of this name.
    pub fn has_scope(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The scope names, in the order they were given.
    pub fn scope_names(&self) -> Vec<&str> {
        self.scopes.iter().map(|scope| &*scope.name).collect()
    }

    /// The rules of one scope in file order, or `None` for an unknown scope.
    pub fn rules(&self, scope: &str) -> Option<&[Arc<ScopeRule>]> {
        let &position = self.by_name.get(scope)?;
        Some(&self.scopes[position].rules)
    }

    /// The task's scopes this policy has, in the task's order.
    pub(super) fn known<'s>(
        &'s self,
        task_scopes: &'s [String],
    ) -> impl Iterator<Item = &'s CompiledScope> {
        task_scopes
            .iter()
            .filter_map(|name| self.by_name.get(name.as_str()).map(|&i| &self.scopes[i]))
    }

    /// Denies when none of the task's scopes exists; the task can then do
    /// nothing at all, and the operator needs to hear why.
    pub(super) fn unknown_scopes(&self, task_scopes: &[String]) -> Option<Decision> {
        if task_scopes.iter().any(|name| self.has_scope(name)) {
            return None;
        }
        let message = if task_scopes.is_empty() {
            "the task holds no scope".to_string()
        } else {
            format!(
                "none of the task's scopes ({}) exists in the current configuration",
                task_scopes.join(", ")
            )
        };
        Some(Decision::deny(Reason::ScopeUnknown, None, message))
    }

    /// Decides one request of a task holding `task_scopes`.
    ///
    /// In order: `TRACE`/`CONNECT` are refused; scopes unknown to this policy
    /// are skipped, and if none is known the request is denied; any matching
    /// deny rule wins over every allow rule, across all scopes; otherwise the
    /// first matching allow rule (task's scope order, then file order)
    /// allows; otherwise nothing allows and the request is denied. `tunnel`
    /// rules never match here.
    ///
    /// Allow rules match the path exactly, deny rules loosely (empty
    /// segments, a trailing `/`, `;params` and ASCII case do not count; see
    /// [`ScopeRule::matches`]). The path is decoded once, and its loose form
    /// computed at most once, only when a deny rule gets as far as the path.
    pub fn decide(&self, task_scopes: &[String], target: &RequestTarget<'_>) -> Decision {
        if is_never_forwarded(target.method) {
            let method = target.method.as_str().to_ascii_uppercase();
            return Decision::deny(
                Reason::MethodRefused,
                None,
                format!("credgate never forwards {method} requests"),
            );
        }
        if let Some(denied) = self.unknown_scopes(task_scopes) {
            return denied;
        }
        let host = host_key(target.host);
        let path = MatchPath::new(target.path);
        let mut allowed: Option<&Arc<ScopeRule>> = None;
        for scope in self.known(task_scopes) {
            for rule in scope.candidates(&host) {
                if !rule.matches_prepared(target, &path) {
                    continue;
                }
                match rule.action {
                    Action::Deny => {
                        let message = rule_message(&rule.id, " denies ", target);
                        return Decision::deny(Reason::DeniedByRule, Some(rule), message);
                    }
                    Action::Allow => {
                        allowed.get_or_insert(rule);
                    }
                }
            }
        }
        match allowed {
            // The allow sentence is built only where it is shown
            // ([`Decision::why`]), not on every forwarded request.
            Some(rule) => Decision::allow(rule, String::new()),
            // Refused as a malformed path, as when no rule could keep it:
            // the agent's fix is the same (no `%2F`), or the operator's
            // (`encoded_slash: keep` on the rule for that upstream).
            None if target.encoded_slash => {
                let plain = RequestTarget {
                    encoded_slash: false,
                    ..*target
                };
                let message = match self.allowing_rule(task_scopes, &plain) {
                    Some(rule) => {
                        rule_message(&rule.id, " allows ", target)
                            + " but not with an encoded \"/\" (%2F) in the path \
                               (the rule needs encoded_slash: keep)"
                    }
                    None => {
                        "the path contains an encoded \"/\" (%2F), which only a rule \
                         with encoded_slash: keep allows; "
                            .to_owned()
                            + &self.no_rule_allows(task_scopes, target)
                    }
                };
                Decision::deny(Reason::PathRejected, None, message)
            }
            None if target.websocket => {
                let plain = RequestTarget {
                    websocket: false,
                    ..*target
                };
                // Say whether the GET itself would pass: the usual fix is
                // `websocket: true` on the rule that allows it.
                let message = match self.allowing_rule(task_scopes, &plain) {
                    Some(rule) => {
                        rule_message(&rule.id, " allows ", target)
                            + " but not as a WebSocket upgrade (the rule needs websocket: true)"
                    }
                    None => {
                        let what = rule_message("", "", target);
                        format!(
                            "{} allows a WebSocket upgrade of {}",
                            self.no_rule_prefix(task_scopes),
                            what.trim_start_matches("rule ")
                        )
                    }
                };
                Decision::deny(Reason::NoMatchingRule, None, message)
            }
            None => {
                let mut message = self.no_rule_allows(task_scopes, target);
                self.note_unknown(task_scopes, &mut message);
                Decision::deny(Reason::NoMatchingRule, None, message)
            }
        }
    }

    /// The rule that allows `target`, if one does: asked of the same request
    /// without the one thing (an encoded `/`, an upgrade) no rule allowed,
    /// to tell the agent which rule setting is missing.
    fn allowing_rule(
        &self,
        task_scopes: &[String],
        target: &RequestTarget<'_>,
    ) -> Option<Arc<ScopeRule>> {
        let decision = self.decide(task_scopes, target);
        (decision.verdict == Verdict::Allow)
            .then_some(decision.rule)
            .flatten()
    }

    /// "no rule of scope a allows GET https://host/path".
    fn no_rule_allows(&self, task_scopes: &[String], target: &RequestTarget<'_>) -> String {
        let mut message = self.no_rule_prefix(task_scopes);
        message.push_str(" allows ");
        message.push_str(target.method.as_str());
        message.push(' ');
        write_url(
            &mut message,
            target.scheme,
            target.host,
            target.port,
            target.path,
        );
        message
    }

    /// "no rule of scope a" or "no rule of scopes a, b" (known scopes only).
    pub(super) fn no_rule_prefix(&self, task_scopes: &[String]) -> String {
        let known: Vec<&str> = self.known(task_scopes).map(|scope| &*scope.name).collect();
        let noun = if known.len() == 1 { "scope" } else { "scopes" };
        format!("no rule of {noun} {}", known.join(", "))
    }

    /// Names the task's scopes this configuration lacks: the usual cause of
    /// a surprising deny after a config change.
    pub(super) fn note_unknown(&self, task_scopes: &[String], message: &mut String) {
        let unknown: Vec<&str> = task_scopes
            .iter()
            .filter(|name| !self.has_scope(name))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            let _ = write!(
                message,
                " (not in the configuration: {})",
                unknown.join(", ")
            );
        }
    }
}

/// "rule ID VERB METHOD URL", for a decision a rule made.
fn rule_message(id: &str, verb: &str, target: &RequestTarget<'_>) -> String {
    let mut message = String::with_capacity(96);
    message.push_str("rule ");
    message.push_str(id);
    message.push_str(verb);
    message.push_str(target.method.as_str());
    message.push(' ');
    write_url(
        &mut message,
        target.scheme,
        target.host,
        target.port,
        target.path,
    );
    message
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::policy::test_support::{policy, scopes};
    use crate::policy::Scheme;

    fn decide(p: &Policy, task: &[&str], method: &str, host: &str, path: &str) -> Decision {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        p.decide(
            &scopes(task),
            &RequestTarget {
                method: &method,
                scheme: Scheme::Https,
                host,
                port: 443,
                path,
                websocket: false,
                encoded_slash: false,
            },
        )
    }

    fn github() -> Policy {
        policy(&[
            (
                "github-read",
                r#"
- host: api.github.com
  methods: [GET, HEAD]
  paths: ["/repos/acme/*/issues/**", "/repos/acme/*/pulls/**"]
  credential: github
- host: api.github.com
  methods: [GET]
  paths: ["/repos/acme/*"]
- host: api.github.com
  action: deny
  methods: [POST]
"#,
            ),
            (
                "github-comment",
                r#"
- host: api.github.com
  methods: [POST]
  paths: ["/repos/acme/*/issues/*/comments"]
  credential: github-write
"#,
            ),
            (
                "lockdown",
                r#"
- host: api.github.com
  action: deny
  paths: ["/repos/acme/secret/**"]
"#,
            ),
        ])
    }

    #[test]
    fn first_allow_in_scope_then_file_order() {
        let p = github();
        let d = decide(
            &p,
            &["github-read"],
            "GET",
            "api.github.com",
            "/repos/acme/x/issues/1",
        );
        assert_eq!(d.verdict, Verdict::Allow);
        assert_eq!(d.reason, Reason::Allowed);
        let method = Method::GET;
        let target = RequestTarget {
            method: &method,
            scheme: Scheme::Https,
            host: "api.github.com",
            port: 443,
            path: "/repos/acme/x/issues/1",
            websocket: false,
            encoded_slash: false,
        };
        assert_eq!(
            d.why(&target),
            "rule github-read[0] allows GET https://api.github.com/repos/acme/x/issues/1"
        );
        let rule = d.rule.unwrap();
        assert_eq!(&*rule.id, "github-read[0]");
        assert_eq!(rule.credential.as_deref(), Some("github"));
        let d = decide(
            &p,
            &["github-read"],
            "GET",
            "api.github.com",
            "/repos/acme/x",
        );
        assert_eq!(&*d.rule.unwrap().id, "github-read[1]");
    }

    #[test]
    fn deny_beats_allow_across_scopes() {
        let p = github();
        let path = "/repos/acme/x/issues/1/comments";
        let allowed = decide(&p, &["github-comment"], "POST", "api.github.com", path);
        assert!(allowed.is_allowed());
        // github-read's POST deny is in an earlier scope than the allow.
        let d = decide(
            &p,
            &["github-read", "github-comment"],
            "POST",
            "api.github.com",
            path,
        );
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.reason, Reason::DeniedByRule);
        assert_eq!(&*d.rule.unwrap().id, "github-read[2]");
        // ... and in a later one.
        let d = decide(
            &p,
            &["github-comment", "github-read"],
            "POST",
            "api.github.com",
            path,
        );
        assert_eq!(d.reason, Reason::DeniedByRule);
        assert_eq!(
            d.message,
            "rule github-read[2] denies POST https://api.github.com/repos/acme/x/issues/1/comments"
        );
        let d = decide(
            &p,
            &["github-read", "lockdown"],
            "GET",
            "api.github.com",
            "/repos/acme/secret/issues/1",
        );
        assert_eq!(d.reason, Reason::DeniedByRule);
        assert_eq!(&*d.rule.unwrap().id, "lockdown[0]");
    }

    #[test]
    fn deny_cannot_be_sidestepped_by_spelling() {
        let p = github();
        for (method, path) in [
            ("post", "/repos/acme/x/issues/1/comments"),
            ("GET", "/repos/acme/%73ecret/issues/1"),
            ("GET", "/repos/acme/secret/issues/%31"),
        ] {
            let path = crate::policy::normalize_path(path).unwrap();
            let d = decide(
                &p,
                &["github-comment", "github-read", "lockdown"],
                method,
                "api.github.com",
                &path,
            );
            assert_eq!(d.reason, Reason::DeniedByRule, "{method} {path}");
        }
        let exact = policy(&[
            ("wide", "- host: '*.example.com'\n"),
            ("narrow", "- host: admin.example.com\n  action: deny\n"),
        ]);
        for host in [
            "admin.example.com",
            "ADMIN.example.com",
            "admin.example.com.",
        ] {
            let d = decide(&exact, &["wide", "narrow"], "GET", host, "/");
            assert_eq!(d.reason, Reason::DeniedByRule, "{host}");
        }
        assert!(decide(&exact, &["wide", "narrow"], "GET", "www.example.com", "/").is_allowed());
    }

    /// An allow of `/repos/acme/**` and `/admin/**` with denies of
    /// `/repos/acme/secret/**` and `/admin`, as in the field.
    fn lockdown() -> Policy {
        policy(&[
            (
                "open",
                "- host: api.example.com\n  paths: ['/repos/acme/**', '/admin/**']\n",
            ),
            (
                "closed",
                "- host: api.example.com\n  action: deny\n  paths: ['/repos/acme/secret/**', '/admin']\n",
            ),
        ])
    }

    fn lockdown_get(path: &str) -> Decision {
        let path = crate::policy::normalize_path(path).unwrap();
        decide(
            &lockdown(),
            &["open", "closed"],
            "GET",
            "api.example.com",
            &path,
        )
    }

    fn assert_denied_by_closed(path: &str) {
        let d = lockdown_get(path);
        assert_eq!(d.reason, Reason::DeniedByRule, "{path:?}: {}", d.message);
        assert_eq!(&*d.rule.unwrap().id, "closed[0]", "{path:?}");
    }

    #[test]
    fn deny_is_not_bypassed_by_empty_segments() {
        for path in [
            "/repos/acme//secret/x",
            "/repos//acme/secret/x",
            "//repos/acme/secret/x",
            "/repos/acme/secret//x",
            "/repos/acme///secret",
        ] {
            assert_denied_by_closed(path);
        }
    }

    #[test]
    fn deny_is_not_bypassed_by_matrix_params() {
        for path in [
            "/repos/acme/secret;x/x",
            "/repos/acme/secret;jsessionid=ABC/x",
            "/repos/acme;v=1/secret/x",
            "/repos/acme/;x/secret/x",
            "/repos/acme/secret%3Bx/x",
            "/admin;x",
        ] {
            assert_denied_by_closed(path);
        }
    }

    #[test]
    fn deny_is_not_bypassed_by_case() {
        for path in [
            "/repos/acme/Secret/x",
            "/repos/acme/SECRET/x",
            "/Repos/Acme/secret/x",
            "/repos/acme/%53ecret/x",
            "/ADMIN",
        ] {
            assert_denied_by_closed(path);
        }
    }

    #[test]
    fn deny_is_not_bypassed_by_a_trailing_slash() {
        for path in ["/admin/", "/admin//", "//admin", "/repos/acme/secret/"] {
            assert_denied_by_closed(path);
        }
        let d = lockdown_get("/Admin;x//");
        assert_eq!(&*d.rule.unwrap().id, "closed[0]");
    }

    #[test]
    fn deny_stays_precise() {
        for path in [
            "/repos/acme/secrets",
            "/repos/acme/secrets/x",
            "/repos/acme/secret-x/y",
            "/repos/acme/x/secret",
            "/admin/users",
            "/repos/acme/public;secret",
        ] {
            let d = lockdown_get(path);
            assert!(d.is_allowed(), "{path:?}: {}", d.message);
        }
        assert_eq!(
            lockdown_get("/administrator").reason,
            Reason::NoMatchingRule
        );
    }

    #[test]
    fn allow_rules_still_match_exactly() {
        let p = policy(&[(
            "narrow",
            "- host: api.example.com\n  paths: ['/repos/acme/*', '/v1/Items']\n",
        )]);
        let get = |path| decide(&p, &["narrow"], "GET", "api.example.com", path);
        assert!(get("/repos/acme/x").is_allowed());
        assert!(get("/v1/Items").is_allowed());
        for path in [
            "/repos/acme//x",
            "/repos//acme/x",
            "/repos/acme/x/",
            "/repos/acme/x//",
            "/Repos/acme/x",
            "/v1/items",
            "/v1/Items;x",
            "/v1/Items/",
        ] {
            assert_eq!(get(path).reason, Reason::NoMatchingRule, "{path:?}");
        }
        // What an allow rule approves is what is forwarded: the loose form
        // is never used to allow, nor for the message.
        let d = lockdown_get("/repos/acme//Public;v=1/");
        assert!(d.is_allowed());
        assert_eq!(&*d.rule.unwrap().id, "open[0]");
        let d = lockdown_get("/repos/acme//Secret;v=1/");
        assert_eq!(
            d.message,
            "rule closed[0] denies GET https://api.example.com/repos/acme//Secret;v=1/"
        );
    }

    #[test]
    fn no_matching_rule_says_what_was_refused() {
        let p = github();
        let d = decide(
            &p,
            &["github-read"],
            "DELETE",
            "api.github.com",
            "/repos/acme/x",
        );
        assert_eq!(d.verdict, Verdict::Deny);
        assert_eq!(d.reason, Reason::NoMatchingRule);
        assert!(d.rule.is_none());
        assert_eq!(
            d.message,
            "no rule of scope github-read allows DELETE https://api.github.com/repos/acme/x"
        );
        let d = decide(
            &p,
            &["github-read", "gone", "github-comment"],
            "GET",
            "evil.example",
            "/x?token=abc",
        );
        assert_eq!(
            d.message,
            "no rule of scopes github-read, github-comment allows GET https://evil.example/x \
             (not in the configuration: gone)"
        );
        assert!(!d.message.contains("token"));
    }

    #[test]
    fn trace_and_connect_are_refused_first() {
        let p = github();
        for method in ["TRACE", "trace", "CONNECT"] {
            let d = decide(&p, &["unknown"], method, "api.github.com", "/");
            assert_eq!(d.reason, Reason::MethodRefused, "{method}");
            assert_eq!(d.verdict, Verdict::Deny);
        }
        let d = decide(&p, &["github-read"], "trace", "api.github.com", "/");
        assert_eq!(d.message, "credgate never forwards TRACE requests");
    }

    #[test]
    fn unknown_scopes_are_skipped_and_all_unknown_is_denied() {
        let p = github();
        let d = decide(
            &p,
            &["gone", "github-read"],
            "GET",
            "api.github.com",
            "/repos/acme/x",
        );
        assert!(d.is_allowed());
        let d = decide(
            &p,
            &["gone", "also-gone"],
            "GET",
            "api.github.com",
            "/repos/acme/x",
        );
        assert_eq!(d.reason, Reason::ScopeUnknown);
        assert_eq!(
            d.message,
            "none of the task's scopes (gone, also-gone) exists in the current configuration"
        );
        let d = decide(&p, &[], "GET", "api.github.com", "/repos/acme/x");
        assert_eq!(d.reason, Reason::ScopeUnknown);
    }

    #[test]
    fn tunnel_rules_never_allow_requests() {
        let p = policy(&[("pinned", "- host: pinned.example\n  tunnel: true\n")]);
        let d = decide(&p, &["pinned"], "GET", "pinned.example", "/");
        assert_eq!(d.reason, Reason::NoMatchingRule);
    }

    #[test]
    fn index_keeps_file_order_between_exact_and_wildcard_rules() {
        let p = policy(&[(
            "mixed",
            r#"
- host: "*.example.com"
  methods: [GET]
  credential: first
- host: api.example.com
  credential: second
- host: "*.example.com"
  credential: third
"#,
        )]);
        let first = |method| {
            decide(&p, &["mixed"], method, "api.example.com", "/")
                .rule
                .unwrap()
        };
        assert_eq!(&*first("GET").id, "mixed[0]");
        assert_eq!(&*first("PUT").id, "mixed[1]");
        let other = decide(&p, &["mixed"], "PUT", "www.example.com", "/")
            .rule
            .unwrap();
        assert_eq!(&*other.id, "mixed[2]");
    }

    #[test]
    fn policy_and_decisions_cross_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Policy>();
        shareable::<Decision>();
    }

    #[test]
    fn scope_listing_and_duplicate_names() {
        let p = policy(&[
            ("a", "- host: a.example\n"),
            ("b", "- host: b.example\n"),
            (
                "a",
                "- host: a.example\n  action: deny\n  methods: [DELETE]\n",
            ),
        ]);
        assert_eq!(p.scope_names(), ["a", "b"]);
        assert!(p.has_scope("b"));
        assert!(!p.has_scope("c"));
        assert_eq!(p.rules("a").unwrap().len(), 2);
        assert!(p.rules("c").is_none());
        assert_eq!(
            decide(&p, &["a"], "DELETE", "a.example", "/").reason,
            Reason::DeniedByRule
        );
    }
}
