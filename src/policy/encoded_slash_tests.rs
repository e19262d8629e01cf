//! `encoded_slash: keep`: an encoded `/` is kept as sent, is a character
//! inside its segment to every pattern, and passes only under the allow rule
//! that matched and says so.

use http::Method;

use super::test_support::{policy, scopes};
use super::{
    normalize_request_path, Decision, EncodedSlash, RawRule, RequestTarget, Scheme, ScopeRule,
    TargetError, Verdict,
};
use crate::reason::Reason;

/// Decides `GET https://{host}{raw}`, normalising `raw` as the proxy does.
fn decide(p: &super::Policy, task: &[&str], host: &str, raw: &str) -> Decision {
    let normalised = normalize_request_path(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
    p.decide(
        &scopes(task),
        &RequestTarget {
            method: &Method::GET,
            scheme: Scheme::Https,
            host,
            port: 443,
            path: &normalised.path,
            websocket: false,
            encoded_slash: normalised.encoded_slash,
        },
    )
}

/// Scope `npm` keeps encoded slashes on `registry.example` and not on
/// `other.example`; scope `plain` does not keep them anywhere.
fn registry(paths: &str) -> super::Policy {
    let npm = format!(
        "- host: registry.example\n  paths: {paths}\n  encoded_slash: keep\n\
         - host: other.example\n  paths: {paths}\n"
    );
    let plain = format!("- host: registry.example\n  paths: {paths}\n");
    policy(&[("npm", npm.as_str()), ("plain", plain.as_str())])
}

#[test]
fn an_encoded_slash_is_kept_as_sent_and_reported() {
    for (raw, kept) in [
        ("/@acme%2fleftpad", "/@acme%2fleftpad"),
        ("/@acme%2Fleftpad", "/@acme%2Fleftpad"),
        // Other escapes still get their canonical form around it.
        ("/@acme%2f%6Ceft%3apad", "/@acme%2fleft%3Apad"),
        ("/a/%2f/b", "/a/%2f/b"),
    ] {
        let normalised = normalize_request_path(raw).unwrap();
        assert_eq!(normalised.path, kept, "{raw:?}");
        assert!(normalised.encoded_slash, "{raw:?}");
    }
}

#[test]
fn other_spellings_of_a_slash_are_no_encoded_slash() {
    // Double encoding is a literal `%2F`; an overlong UTF-8 `/` is two
    // escapes no UTF-8 decoder reads as a character: neither is a slash,
    // and both are forwarded (and matched) as they were before.
    for (raw, kept) in [
        ("/a%252Fb", "/a%252Fb"),
        ("/a%252fb", "/a%252fb"),
        ("/a%C0%AFb", "/a%C0%AFb"),
        ("/a%c0%afb", "/a%C0%AFb"),
        ("/a%E0%80%AFb", "/a%E0%80%AFb"),
    ] {
        let normalised = normalize_request_path(raw).unwrap();
        assert_eq!(normalised.path, kept, "{raw:?}");
        assert!(!normalised.encoded_slash, "{raw:?}");
    }
    // A backslash is refused however it is spelled, rule or no rule.
    for raw in ["/a%5Cb", "/a%5cb", "/a\\b", "/a%2f%5Cb"] {
        assert_eq!(
            normalize_request_path(raw),
            Err(TargetError::Backslash),
            "{raw:?}"
        );
    }
}

#[test]
fn dots_next_to_an_encoded_slash_are_refused() {
    for raw in [
        "/a/..%2fetc",
        "/a/..%2Fetc",
        "/a%2f..%2fb",
        "/a%2F..",
        "/a%2f.%2fb",
        "/a/%2e%2e%2fb",
        "/a/%2E%2e%2Fb",
    ] {
        assert_eq!(
            normalize_request_path(raw),
            Err(TargetError::DotBesideEncodedSlash),
            "{raw:?}"
        );
    }
    // Dots inside a longer name are no dot segment.
    assert!(normalize_request_path("/@acme%2f.npmrc").is_ok());
    assert!(normalize_request_path("/@acme%2f...b").is_ok());
}

#[test]
fn a_keep_rule_matches_the_encoded_slash_inside_one_segment() {
    let p = registry(r#"["/*"]"#);
    let d = decide(&p, &["npm"], "registry.example", "/@acme%2fleftpad");
    assert_eq!(d.verdict, Verdict::Allow, "{}", d.message);
    assert_eq!(d.rule.unwrap().id.as_ref(), "npm[0]");
    let d = decide(&p, &["npm"], "registry.example", "/@acme%2Fleftpad");
    assert!(d.is_allowed(), "{}", d.message);

    // Never a separator: not `/**/leftpad`, not `/@acme/leftpad`, not `/*/*`.
    for pattern in [r#"["/**/leftpad"]"#, r#"["/@acme/leftpad"]"#, r#"["/*/*"]"#] {
        let p = registry(pattern);
        let d = decide(&p, &["npm"], "registry.example", "/@acme%2fleftpad");
        assert_eq!(d.verdict, Verdict::Deny, "{pattern}");
        assert_eq!(d.reason, Reason::PathRejected, "{pattern}");
    }
    // A wildcard inside a segment spans it.
    let p = registry(r#"["/@acme*"]"#);
    assert!(decide(&p, &["npm"], "registry.example", "/@acme%2fleftpad").is_allowed());
}

#[test]
fn only_the_rule_that_matched_can_keep_an_encoded_slash() {
    let p = registry(r#"["/**"]"#);
    // The same paths on a host whose rule does not keep: refused as today.
    let d = decide(&p, &["npm"], "other.example", "/@acme%2fleftpad");
    assert_eq!(d.reason, Reason::PathRejected);
    assert_eq!(
        d.message,
        "rule npm[1] allows GET https://other.example/@acme%2fleftpad but not with an encoded \"/\" (%2F) in the path (the rule needs encoded_slash: keep)"
    );
    // A scope without a keep rule for the host opens nothing either.
    let d = decide(&p, &["plain"], "registry.example", "/@acme%2fleftpad");
    assert_eq!(d.reason, Reason::PathRejected);
    assert!(d.rule.is_none());
    // No rule at all: still a refused path, saying what would allow it.
    let d = decide(&p, &["plain"], "nowhere.example", "/a%2fb");
    assert_eq!(d.reason, Reason::PathRejected);
    assert_eq!(
        d.message,
        "the path contains an encoded \"/\" (%2F), which only a rule with encoded_slash: keep allows; no rule of scope plain allows GET https://nowhere.example/a%2fb"
    );
    // Paths without one are unaffected.
    assert!(decide(&p, &["plain"], "registry.example", "/leftpad").is_allowed());
}

#[test]
fn a_deny_rule_refuses_a_path_with_an_encoded_slash_like_any_other() {
    let p = policy(&[(
        "npm",
        "- host: registry.example\n  encoded_slash: keep\n\
         - host: registry.example\n  paths: [\"/@evil*\"]\n  action: deny\n",
    )]);
    let d = decide(&p, &["npm"], "registry.example", "/@evil%2fpkg");
    assert_eq!(d.reason, Reason::DeniedByRule);
    assert!(decide(&p, &["npm"], "registry.example", "/@acme%2fpkg").is_allowed());
}

#[test]
fn a_deny_rule_also_reads_an_encoded_slash_as_the_separator_an_upstream_may_decode() {
    let p = policy(&[(
        "npm",
        "- host: registry.example\n  encoded_slash: keep\n\
         - host: registry.example\n  paths: [\"/@acme/secret/**\", \"/-/admin\"]\n  action: deny\n",
    )]);
    for path in [
        "/@acme%2fsecret%2fx",
        "/@acme%2Fsecret/x",
        "/@acme/secret%2fx",
        "/-%2Fadmin",
        "/-%2fADMIN",
        "/-%2f%2fadmin",
    ] {
        let d = decide(&p, &["npm"], "registry.example", path);
        assert_eq!(d.reason, Reason::DeniedByRule, "{path}");
    }
    // Spellings that are no slash are no separator either.
    for path in [
        "/@acme%252fsecret%252fx",
        "/@acme%2fsecretive",
        "/-%2fadministrator",
    ] {
        assert!(
            decide(&p, &["npm"], "registry.example", path).is_allowed(),
            "{path}"
        );
    }
}

fn compile(yaml: &str) -> Result<ScopeRule, Vec<String>> {
    let raw: RawRule = serde_yaml::from_str(yaml).unwrap();
    ScopeRule::compile("s", 0, &raw)
        .map_err(|errors| errors.into_iter().map(|e| e.to_string()).collect())
}

#[test]
fn encoded_slash_is_refuse_unless_an_allow_rule_says_keep() {
    let rule = compile("host: a.example\n").unwrap();
    assert_eq!(rule.encoded_slash, EncodedSlash::Refuse);
    let rule = compile("host: a.example\nencoded_slash: refuse\n").unwrap();
    assert_eq!(rule.encoded_slash, EncodedSlash::Refuse);
    let rule = compile("host: a.example\nencoded_slash: keep\n").unwrap();
    assert_eq!(rule.encoded_slash, EncodedSlash::Keep);
    assert!(
        rule.describe()
            .ends_with("; encoded slashes (%2F) kept as sent"),
        "{}",
        rule.describe()
    );
    for yaml in [
        "host: a.example\nencoded_slash: decode\n",
        "host: a.example\nencoded_slash: keep\naction: deny\n",
        "host: a.example\nencoded_slash: keep\ntunnel: true\n",
    ] {
        let errors = compile(yaml).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with("encoded_slash")),
            "{yaml}: {errors:?}"
        );
    }
    // Patterns still cannot hold one: a rule names such paths with `*`.
    let errors =
        compile("host: a.example\npaths: [\"/@acme%2fx\"]\nencoded_slash: keep\n").unwrap_err();
    assert!(errors[0].starts_with("paths[0]"), "{errors:?}");
}
