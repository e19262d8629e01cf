//! `websocket: true`: only such a rule allows an upgrade, and it still
//! allows the ordinary requests it matches.

use http::Method;

use super::test_support::{policy, scopes};
use super::{Decision, RawRule, RequestTarget, Scheme, ScopeRule, Verdict};
use crate::reason::Reason;

fn decide(p: &super::Policy, task: &[&str], path: &str, websocket: bool) -> Decision {
    p.decide(
        &scopes(task),
        &RequestTarget {
            method: &Method::GET,
            scheme: Scheme::Https,
            host: "ws.example",
            port: 443,
            path,
            websocket,
            encoded_slash: false,
        },
    )
}

#[test]
fn only_a_websocket_rule_allows_an_upgrade_and_it_allows_plain_requests_too() {
    let p = policy(&[
        ("plain", "- host: ws.example\n  paths: [\"/**\"]\n"),
        (
            "sockets",
            "- host: ws.example\n  methods: [GET]\n  paths: [\"/chat\"]\n  websocket: true\n",
        ),
        (
            "blocked",
            "- host: ws.example\n  paths: [\"/chat\"]\n  action: deny\n",
        ),
    ]);
    // The plain rule comes first, but cannot allow the upgrade.
    let d = decide(&p, &["plain", "sockets"], "/chat", true);
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.rule.unwrap().id.as_ref(), "sockets[0]");
    assert!(decide(&p, &["sockets"], "/chat", false).is_allowed());

    let d = decide(&p, &["plain"], "/chat", true);
    assert_eq!(d.reason, Reason::NoMatchingRule);
    assert_eq!(
        d.message,
        "rule plain[0] allows GET https://ws.example/chat but not as a WebSocket upgrade (the rule needs websocket: true)"
    );
    let d = decide(&p, &["sockets"], "/other", true);
    assert_eq!(
        d.message,
        "no rule of scope sockets allows a WebSocket upgrade of GET https://ws.example/other"
    );
    // A deny rule refuses an upgrade like any request.
    let d = decide(&p, &["sockets", "blocked"], "/chat", true);
    assert_eq!(d.reason, Reason::DeniedByRule);
}

fn compile(yaml: &str) -> Result<ScopeRule, Vec<String>> {
    let raw: RawRule = serde_yaml::from_str(yaml).unwrap();
    ScopeRule::compile("s", 0, &raw)
        .map_err(|errors| errors.into_iter().map(|e| e.to_string()).collect())
}

#[test]
fn websocket_is_refused_where_it_cannot_apply() {
    for yaml in [
        "host: a.example\naction: deny\nwebsocket: true\n",
        "host: a.example\ntunnel: true\nwebsocket: true\n",
        "host: a.example\nmethods: [POST]\nwebsocket: true\n",
    ] {
        let errors = compile(yaml).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with("websocket")),
            "{yaml}: {errors:?}"
        );
    }
    let rule = compile("host: a.example\nmethods: [get]\nwebsocket: true\n").unwrap();
    assert!(rule.websocket);
    assert!(
        rule.describe().ends_with("; WebSocket upgrades too"),
        "{}",
        rule.describe()
    );
}
