//! `CONNECT` pre-authorisation: decided on `host:port` alone, before any
//! DNS lookup, and deciding whether the tunnel is intercepted or blind.

use std::fmt::Write as _;

use super::decide::{host_key, Decision, Policy};
use super::target::write_host;
use super::Action;
use crate::reason::Reason;

impl Policy {
    /// Pre-authorises `CONNECT host:port` before any DNS lookup.
    ///
    /// A whole-host deny rule (no method restriction, and no path restriction
    /// once read loosely: `//**` or `/**/` cover every path) refuses it.
    /// Otherwise it is allowed, for interception, when an allow rule could
    /// match some https request to `host:port`; `rule` is then that rule.
    /// Failing that, a `tunnel` rule allows it as a blind tunnel (`rule` is
    /// the tunnel rule), unless a narrower deny rule covers the host, which a
    /// blind tunnel could not enforce. Interception is preferred over a
    /// tunnel because it still authorises every request.
    pub fn connect_decision(&self, task_scopes: &[String], host: &str, port: u16) -> Decision {
        if let Some(denied) = self.unknown_scopes(task_scopes) {
            return denied;
        }
        let key = host_key(host);
        let mut intercept = None;
        let mut tunnel = None;
        let mut narrow_deny = None;
        for scope in self.known(task_scopes) {
            for rule in scope.candidates(&key) {
                if !rule.matches_connect(host, port) {
                    continue;
                }
                match (rule.action, rule.tunnel) {
                    (Action::Deny, _) if rule.is_whole_host() => {
                        let message = connect_message(
                            &["rule ", &rule.id, " denies every request to "],
                            host,
                            port,
                            "",
                        );
                        return Decision::deny(Reason::DeniedByRule, Some(rule), message);
                    }
                    (Action::Deny, _) => {
                        narrow_deny.get_or_insert(rule);
                    }
                    (Action::Allow, true) => {
                        tunnel.get_or_insert(rule);
                    }
                    (Action::Allow, false) => {
                        intercept.get_or_insert(rule);
                    }
                }
            }
        }
        if let Some(rule) = intercept {
            let message =
                connect_message(&["rule ", &rule.id, " allows CONNECT to "], host, port, "");
            return Decision::allow(rule, message);
        }
        match (tunnel, narrow_deny) {
            (Some(tunnel), Some(deny)) => {
                let tail = format!(
                    ", which the blind tunnel of rule {} cannot enforce",
                    tunnel.id
                );
                let message = connect_message(
                    &["rule ", &deny.id, " restricts requests to "],
                    host,
                    port,
                    &tail,
                );
                Decision::deny(Reason::DeniedByRule, Some(deny), message)
            }
            (Some(tunnel), None) => {
                let message = connect_message(
                    &["rule ", &tunnel.id, " tunnels CONNECT to "],
                    host,
                    port,
                    " blindly",
                );
                Decision::allow(tunnel, message)
            }
            (None, _) => {
                let mut message = self.no_rule_prefix(task_scopes);
                message.push_str(" allows CONNECT to ");
                write_host(&mut message, host);
                let _ = write!(message, ":{port}");
                self.note_unknown(task_scopes, &mut message);
                Decision::deny(Reason::NoMatchingRule, None, message)
            }
        }
    }
}

impl Policy {
    /// The hosts that `tunnel` rules of the task name exactly for `port`,
    /// each once, in the task's scope order: where a stream that carries no
    /// host name of its own (SSH, a database protocol) may be going. A rule
    /// for `*.example` names no host to look up, so it offers none.
    pub fn tunnel_hosts<'s>(&'s self, task_scopes: &'s [String], port: u16) -> Vec<&'s str> {
        let mut hosts: Vec<&str> = Vec::new();
        for scope in self.known(task_scopes) {
            for rule in &scope.rules {
                let Some(host) = rule.host().exact() else {
                    continue;
                };
                if rule.tunnel
                    && rule.action == Action::Allow
                    && rule.matches_connect(host, port)
                    && !hosts.contains(&host)
                {
                    hosts.push(host);
                }
            }
        }
        hosts
    }
}

fn connect_message(parts: &[&str], host: &str, port: u16, tail: &str) -> String {
    let mut message = parts.concat();
    write_host(&mut message, host);
    let _ = write!(message, ":{port}{tail}");
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::test_support::{policy, scopes};

    fn connect(p: &Policy, task: &[&str], host: &str, port: u16) -> Decision {
        p.connect_decision(&scopes(task), host, port)
    }

    #[test]
    fn connect_is_allowed_when_some_request_could_be() {
        let p = policy(&[
            ("github-read", "- host: api.github.com\n  methods: [GET]\n"),
            ("github-comment", "- host: api.github.com\n  methods: [POST]\n  paths: ['/repos/*/*/issues/*/comments']\n"),
            ("lockdown", "- host: api.github.com\n  action: deny\n  paths: ['/repos/acme/secret/**']\n"),
        ]);
        let d = connect(&p, &["github-comment"], "api.github.com", 443);
        assert!(d.is_allowed());
        assert!(!d.is_blind_tunnel());
        assert_eq!(
            d.message,
            "rule github-comment[0] allows CONNECT to api.github.com:443"
        );
        // A deny restricted to some methods or paths leaves the host reachable.
        assert!(connect(&p, &["lockdown", "github-read"], "api.github.com", 443).is_allowed());
        let d = connect(&p, &["github-read"], "evil.example", 443);
        assert_eq!(d.reason, Reason::NoMatchingRule);
        assert_eq!(
            d.message,
            "no rule of scope github-read allows CONNECT to evil.example:443"
        );
        assert_eq!(
            connect(&p, &["github-read"], "api.github.com", 8443).reason,
            Reason::NoMatchingRule
        );
        assert_eq!(
            connect(&p, &["nope"], "api.github.com", 443).reason,
            Reason::ScopeUnknown
        );
    }

    #[test]
    fn connect_respects_whole_host_denies_and_schemes() {
        let p = policy(&[
            (
                "open",
                "- host: '*.example.com'\n- host: plain.example\n  schemes: [http]\n",
            ),
            (
                "block",
                "- host: admin.example.com\n  action: deny\n  paths: ['/**']\n",
            ),
        ]);
        let d = connect(&p, &["open", "block"], "admin.example.com", 443);
        assert_eq!(d.reason, Reason::DeniedByRule);
        assert_eq!(
            d.message,
            "rule block[0] denies every request to admin.example.com:443"
        );
        assert!(connect(&p, &["open", "block"], "www.example.com", 443).is_allowed());
        assert_eq!(
            connect(&p, &["open"], "plain.example", 80).reason,
            Reason::NoMatchingRule
        );
        assert_eq!(
            connect(&p, &["open"], "[::1]", 443).reason,
            Reason::NoMatchingRule
        );
        let d = connect(&p, &["open"], "::1", 8443);
        assert_eq!(
            d.message,
            "no rule of scope open allows CONNECT to [::1]:8443"
        );
    }

    #[test]
    fn connect_whole_host_denies_under_loose_matching() {
        // Loosely, `//**` and `/**/` mean every path, so they deny the host.
        for pattern in ["/**", "//**", "/**/", "/;x/**"] {
            let p = policy(&[
                ("open", "- host: admin.example.com\n"),
                (
                    "block",
                    &format!("- host: admin.example.com\n  action: deny\n  paths: ['{pattern}']\n"),
                ),
            ]);
            let d = connect(&p, &["open", "block"], "admin.example.com", 443);
            assert_eq!(d.reason, Reason::DeniedByRule, "{pattern}");
        }
        // Loosely narrow denies (case, `;`, `//`) still leave the host reachable.
        let p = policy(&[
            ("open", "- host: admin.example.com\n"),
            (
                "block",
                "- host: admin.example.com\n  action: deny\n  paths: ['/Admin//x;y/**', '/**/*']\n",
            ),
        ]);
        assert!(connect(&p, &["open", "block"], "admin.example.com", 443).is_allowed());
        // An allow rule is never whole-host by a loose reading.
        assert!(!crate::policy::ScopeRule::compile(
            "s",
            0,
            &serde_yaml::from_str("host: a.example\npaths: ['//**']").unwrap()
        )
        .unwrap()
        .is_whole_host());
    }

    #[test]
    fn tunnel_hosts_are_the_exact_hosts_of_tunnel_rules_for_the_port() {
        let p = policy(&[
            ("ssh", "- host: github.com\n  port: 22\n  tunnel: true\n- host: '*.example'\n  port: 22\n  tunnel: true\n"),
            ("more", "- host: GitHub.com\n  port: 22\n  tunnel: true\n- host: gitlab.com\n  port: 22\n  tunnel: true\n"),
            ("web", "- host: api.test\n- host: pinned.test\n  tunnel: true\n"),
            ("denied", "- host: db.test\n  port: 22\n  action: deny\n"),
        ]);
        assert_eq!(
            p.tunnel_hosts(&scopes(&["ssh", "more", "web", "denied"]), 22),
            ["github.com", "gitlab.com"]
        );
        assert_eq!(
            p.tunnel_hosts(&scopes(&["web", "ssh"]), 443),
            ["pinned.test"]
        );
        assert!(p.tunnel_hosts(&scopes(&["web"]), 22).is_empty());
        assert!(p.tunnel_hosts(&scopes(&["nonesuch"]), 22).is_empty());
    }

    #[test]
    fn connect_tunnels_only_when_nothing_would_be_bypassed() {
        let p = policy(&[
            ("pinned", "- host: pinned.example\n  tunnel: true\n"),
            ("intercept", "- host: pinned.example\n  methods: [GET]\n"),
            (
                "narrow",
                "- host: pinned.example\n  action: deny\n  methods: [DELETE]\n",
            ),
        ]);
        let d = connect(&p, &["pinned"], "pinned.example", 443);
        assert!(d.is_blind_tunnel());
        assert_eq!(&*d.rule.as_ref().unwrap().id, "pinned[0]");
        assert_eq!(
            d.message,
            "rule pinned[0] tunnels CONNECT to pinned.example:443 blindly"
        );
        let d = connect(&p, &["pinned", "intercept"], "pinned.example", 443);
        assert!(d.is_allowed());
        assert!(!d.is_blind_tunnel());
        assert_eq!(&*d.rule.unwrap().id, "intercept[0]");
        let d = connect(&p, &["pinned", "narrow"], "pinned.example", 443);
        assert_eq!(d.reason, Reason::DeniedByRule);
        assert_eq!(
            d.message,
            "rule narrow[0] restricts requests to pinned.example:443, which the blind tunnel of \
             rule pinned[0] cannot enforce"
        );
    }
}
