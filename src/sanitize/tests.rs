//! The sanitizer as the pipeline uses it: configuration in, requests through.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

const GH: &str = "ghp_T3stSecretT3stSecretT3stSecretT3stSecret";
const AWS: &str = "AKIATESTSECRET000001";

fn sanitizer(yaml: &str) -> Sanitizer {
    let raw: RawSanitize = serde_yaml::from_str(yaml).unwrap();
    Sanitizer::compile(&raw).unwrap()
}

/// A header map of `pairs`, in order (repeated names append).
pub(super) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn rules_of(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.rule).collect()
}

#[test]
fn an_empty_section_gives_the_defaults() {
    let s = sanitizer("{}");
    assert_eq!(s.max_body(), DEFAULT_MAX_BODY);
    assert_eq!(s.max_buffered_body(), DEFAULT_MAX_BUFFERED_BODY);
    let mut map = headers(&[("x-api-key", "test-secret"), ("accept", "*/*")]);
    assert_eq!(s.strip_headers(&mut map), ["x-api-key"]);
}

#[test]
fn configuration_is_read_and_applied() {
    let s = sanitizer(
        "strip_headers: [x-team-token]\nalso_strip_headers: [\"x-corp-*\"]\nmax_body: 1GiB\nmax_buffered_body: 64KiB\n",
    );
    assert_eq!(s.max_body(), 1 << 30);
    assert_eq!(s.max_buffered_body(), 64 << 10);
    let mut map = headers(&[
        ("x-team-token", "test-secret"),
        ("x-corp-key", "test-secret"),
        ("x-api-key", "kept: the given list replaces the default"),
    ]);
    assert_eq!(s.strip_headers(&mut map), ["x-corp-key", "x-team-token"]);
    assert!(map.contains_key("x-api-key"));
}

#[test]
fn unknown_fields_are_refused() {
    assert!(serde_yaml::from_str::<RawSanitize>("strip: [a]").is_err());
}

#[test]
fn every_error_is_reported_with_its_path() {
    let raw: RawSanitize = serde_yaml::from_str(
        "strip_headers: [ok, \"*\"]\nalso_strip_headers: [\"bad name\"]\nmax_body: lots\nmax_buffered_body: 2GiB\nmax_body_scan: 1MiB\n",
    )
    .unwrap();
    let errors = Sanitizer::compile(&raw).unwrap_err();
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "strip_headers[1]",
            "also_strip_headers[0]",
            "max_body_scan",
            "max_body",
            "max_buffered_body"
        ]
    );
}

#[test]
fn body_size_bounds() {
    for (max_body, buffered, ok) in [
        ("1", "1", true),
        ("100GiB", "1GiB", true),
        ("0", "1MiB", false),
        ("1MiB", "0", false),
        ("1MiB", "1025MiB", false),
    ] {
        let raw = RawSanitize {
            max_body: Some(max_body.into()),
            max_buffered_body: Some(buffered.into()),
            ..RawSanitize::default()
        };
        assert_eq!(
            Sanitizer::compile(&raw).is_ok(),
            ok,
            "{max_body} {buffered}"
        );
    }
}

#[test]
fn the_replaced_max_body_scan_says_what_replaced_it() {
    let raw: RawSanitize = serde_yaml::from_str("max_body_scan: 1MiB").unwrap();
    let errors = Sanitizer::compile(&raw).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].message.contains("max_body"),
        "{}",
        errors[0].message
    );
}

#[test]
fn findings_name_rule_and_location_only() {
    let s = sanitizer("{}");
    assert_eq!(
        s.scan_target(&format!("/x/{AWS}?token=abc")),
        [
            Finding {
                rule: "aws_access_key_id",
                location: FindingLocation::Url
            },
            Finding {
                rule: "secret_query_param",
                location: FindingLocation::Url
            },
        ]
    );
    let map = headers(&[("x-note", GH), ("x-note", GH), ("x-other", AWS)]);
    assert_eq!(
        s.scan_headers(&map),
        [
            Finding {
                rule: "github_token",
                location: FindingLocation::Header("x-note".into())
            },
            Finding {
                rule: "aws_access_key_id",
                location: FindingLocation::Header("x-other".into())
            },
        ]
    );
    let body = format!("{{\"a\":\"{GH}\",\"b\":\"{GH}\"}}");
    assert_eq!(
        s.scan_body(body.as_bytes()),
        [Finding {
            rule: "github_token",
            location: FindingLocation::Body
        }]
    );
    let debug = format!("{:?}", s.scan_body(body.as_bytes()));
    assert!(!debug.contains("T3st"), "{debug}");
}

#[test]
fn every_rule_is_reachable_through_the_body() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.dGVzdC1zZWNyZXQ";
    let body = format!(
        "{AWS} {GH} xoxp-0123456789-test-secret sk-TestSecret0123456789abcd \
         sk-ant-api03-test-secret-000000000 -----BEGIN PRIVATE KEY-----x-----END PRIVATE KEY----- {jwt} \
         cgt_test-secret-0123456789abcdef0123456789abcdef"
    );
    let mut expected: Vec<_> = DETECTION_RULES.to_vec();
    expected.retain(|id| *id != "secret_query_param");
    assert_eq!(rules_of(&s_default().scan_body(body.as_bytes())), expected);
}

fn s_default() -> Sanitizer {
    Sanitizer::compile(&RawSanitize::default()).unwrap()
}

#[test]
fn stripped_headers_are_not_findings_and_scanning_sees_what_is_left() {
    let s = s_default();
    let mut map = headers(&[("authorization", &format!("Bearer {GH}")), ("x-fwd", GH)]);
    assert_eq!(s.strip_headers(&mut map), ["authorization"]);
    assert_eq!(
        s.scan_headers(&map),
        [Finding {
            rule: "github_token",
            location: FindingLocation::Header("x-fwd".into())
        }]
    );
}

#[test]
fn redacting_headers_removes_only_the_offending_ones() {
    let s = s_default();
    let mut map = headers(&[("x-a", GH), ("x-a", "harmless"), ("x-b", "harmless")]);
    assert_eq!(s.redact_headers(&mut map), ["x-a"]);
    assert_eq!(map.len(), 1);
    assert!(s.scan_headers(&map).is_empty());
}

#[test]
fn redacting_a_body_keeps_its_length_and_leaves_nothing_to_find() {
    let s = s_default();
    let escaped = GH.replace('_', r"\u005f");
    let form = GH.replace('_', "%5F");
    let original = format!(r#"{{"a":"{GH}","b":"{escaped}","c":"x={form}&y=1","d":"keep me"}}"#);
    let mut body = original.clone().into_bytes();
    assert_eq!(s.redact_body(&mut body), 3);
    assert_eq!(body.len(), original.len());
    assert!(s.scan_body(&body).is_empty());
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains(r#""d":"keep me""#) && text.starts_with(r#"{"a":"****"#));
    assert!(!text.contains("T3st"));
}

#[test]
fn redacting_a_clean_body_changes_nothing() {
    let s = s_default();
    let original = br#"{"task":"task-list","sha":"3f786850e387550fdab836ed7e6dc881de23001b"}"#;
    let mut body = original.to_vec();
    assert_eq!(s.redact_body(&mut body), 0);
    assert_eq!(body, original);
}

#[test]
fn redacting_the_target_leaves_a_clean_valid_target() {
    let s = s_default();
    let redacted = s.redact_target(&format!("/v1/{GH}/items?api_key=1&page=2&q={AWS}"));
    assert_eq!(redacted, "/v1/REDACTED/items?page=2");
    assert!(s.scan_target(&redacted).is_empty());
    assert!(redacted.parse::<http::uri::PathAndQuery>().is_ok());
}
