//! Secrets in header values and bodies, seen raw and through the encodings an
//! agent (or its HTTP library) commonly applies.

use std::ops::Range;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{HeaderName, HeaderValue};

use super::decode::{merge, Decoding};
use super::rules::{self, Rule, RuleSet};

/// Header values are percent-decoded only: `+` is literal in most of them.
const HEADER_VIEW: Decoding = Decoding::Percent {
    plus_is_space: false,
};

/// Bodies are also read as form-urlencoded and as JSON-escaped text; both are
/// a single cheap pass and only run when the body contains `%`, `+` or `\`.
const BODY_VIEWS: [Decoding; 2] = [
    Decoding::Percent {
        plus_is_space: true,
    },
    Decoding::JsonEscape,
];

/// The rules that fire on one header: its name, its value raw and
/// percent-decoded, and the decoded credentials of a `Basic` value.
pub(crate) fn header_rules(name: &HeaderName, value: &HeaderValue) -> RuleSet {
    let raw = value.as_bytes();
    let mut found = rules::rules_in(name.as_str().as_bytes());
    found.extend(rules::rules_in(raw));
    if HEADER_VIEW.applies(raw) {
        found.extend(rules::rules_in(&HEADER_VIEW.decode(raw)));
    }
    if let Some(credentials) = basic_credentials(raw) {
        found.extend(rules::rules_in(&credentials));
    }
    found
}

/// The rules that fire anywhere in `body`, raw or decoded.
pub(crate) fn body_rules(body: &[u8]) -> RuleSet {
    let mut found = rules::rules_in(body);
    for view in BODY_VIEWS {
        if view.applies(body) {
            found.extend(rules::rules_in(&view.decode(body)));
        }
    }
    found
}

/// Raw ranges of every secret in `body`, found raw or decoded; sorted and
/// merged so each range is masked (and counted) once.
pub(crate) fn body_spans(body: &[u8]) -> Vec<Range<usize>> {
    let mut spans = rules::spans_in(body);
    for view in BODY_VIEWS {
        if view.applies(body) {
            let decoded = view.decode(body);
            spans.extend(view.map_to_raw(body, &rules::spans_in(&decoded)));
        }
    }
    merge(spans)
}

/// Every secret in `body`, found raw or decoded, with its rule and raw range
/// (a secret seen in several views is listed once per view).
pub(crate) fn body_matches(body: &[u8]) -> Vec<(Rule, Range<usize>)> {
    let mut found = Vec::new();
    rules::scan(body, |rule, span| found.push((rule, span)));
    for view in BODY_VIEWS {
        if view.applies(body) {
            let decoded = view.decode(body);
            let mut in_view = Vec::new();
            rules::scan(&decoded, |rule, span| in_view.push((rule, span)));
            let spans: Vec<Range<usize>> = in_view.iter().map(|(_, span)| span.clone()).collect();
            let raw = view.map_to_raw(body, &spans);
            found.extend(in_view.into_iter().map(|(rule, _)| rule).zip(raw));
        }
    }
    found
}

/// `user:password` from `Basic <base64>`, when the value is one.
fn basic_credentials(raw: &[u8]) -> Option<Vec<u8>> {
    let (scheme, rest) = raw.split_at(raw.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    STANDARD.decode(rest.trim_ascii()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-ant-api03-Test-Secret-0000000000";

    fn ids(set: RuleSet) -> Vec<&'static str> {
        set.iter().map(Rule::id).collect()
    }

    #[test]
    fn header_values_are_read_raw_encoded_and_as_basic_credentials() {
        let name = HeaderName::from_static("x-custom");
        let basic = format!("Basic {}", STANDARD.encode(format!("user:{KEY}")));
        for value in [
            KEY.to_string(),
            format!("Bearer {}", KEY.replace('-', "%2D")),
            basic,
        ] {
            let value = HeaderValue::from_str(&value).unwrap();
            assert_eq!(ids(header_rules(&name, &value)), ["anthropic_api_key"]);
        }
        let plain = HeaderValue::from_static("Basic dXNlcjpwYXNzd29yZA==");
        assert!(header_rules(&name, &plain).is_empty());
    }

    #[test]
    fn a_secret_used_as_header_name_is_found() {
        let name = HeaderName::from_static("ghp_t3stsecrett3stsecrett3stsecrett3stsecret");
        let value = HeaderValue::from_static("1");
        assert_eq!(ids(header_rules(&name, &value)), ["github_token"]);
    }

    #[test]
    fn bodies_are_read_raw_form_encoded_and_json_escaped() {
        let escaped = KEY.replacen('a', r"\u0061", 2);
        for body in [
            format!(r#"{{"prompt":"use {KEY} please"}}"#),
            format!("grant=x&key={}", KEY.replace('-', "%2d")),
            format!(r#"{{"prompt":"{escaped}"}}"#),
        ] {
            assert_eq!(
                ids(body_rules(body.as_bytes())),
                ["anthropic_api_key"],
                "{body}"
            );
        }
    }

    #[test]
    fn body_spans_cover_the_encoded_form_in_raw_coordinates() {
        let escaped = KEY.replacen('a', r"\u0061", 2);
        let body = format!(r#"{{"a":"{escaped}","b":"{KEY}"}}"#);
        let spans = body_spans(body.as_bytes());
        let covered: Vec<&str> = spans.iter().map(|s| &body[s.clone()]).collect();
        assert_eq!(covered, [escaped.as_str(), KEY]);
    }

    #[test]
    fn ordinary_json_bodies_are_quiet() {
        let body = br#"{"model":"m-1","messages":[{"role":"user","content":"List the task-list items\nand the disk-usage: 100% of /var.\u00e9"}],"id":"550e8400-e29b-41d4-a716-446655440000","commit":"3f786850e387550fdab836ed7e6dc881de23001b","image":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}"#;
        assert!(body_rules(body).is_empty());
        assert!(body_spans(body).is_empty());
    }
}
