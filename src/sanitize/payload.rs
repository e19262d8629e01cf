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

/// The shortest secret any rule accepts (`xoxa-` and ten characters).
const SHORTEST_SECRET: usize = 15;

/// The rules that fire anywhere in `body`, raw or decoded.
pub(crate) fn body_rules(body: &[u8]) -> RuleSet {
    let mut found = rules::rules_in(body);
    for (run, view) in decoded_views(body) {
        found.extend(rules::rules_in(&view.decode(&body[run])));
    }
    found
}

/// Raw ranges of every secret in `body`, found raw or decoded; sorted and
/// merged so each range is masked (and counted) once.
pub(crate) fn body_spans(body: &[u8]) -> Vec<Range<usize>> {
    merge(
        body_matches(body)
            .into_iter()
            .map(|(_, span)| span)
            .collect(),
    )
}

/// Every secret in `body`, found raw or decoded, with its rule and raw range
/// (a secret seen in several views is listed once per view).
pub(crate) fn body_matches(body: &[u8]) -> Vec<(Rule, Range<usize>)> {
    let mut found = Vec::new();
    rules::scan(body, |rule, span| found.push((rule, span)));
    for (run, view) in decoded_views(body) {
        let raw = &body[run.clone()];
        let decoded = view.decode(raw);
        let mut in_view = Vec::new();
        rules::scan(&decoded, |rule, span| in_view.push((rule, span)));
        let spans: Vec<Range<usize>> = in_view.iter().map(|(_, span)| span.clone()).collect();
        let mapped = view.map_to_raw(raw, &spans);
        found.extend(
            in_view
                .into_iter()
                .map(|(rule, _)| rule)
                .zip(mapped)
                .map(|(rule, span)| (rule, span.start + run.start..span.end + run.start)),
        );
    }
    found
}

/// Each run of text in `body` long enough to hold a secret that a decoded
/// view changes, with the view. An escape sequence and the secret it spells
/// are printable ASCII (no control byte but tab, CR and LF), so an encoded
/// secret lies within one such run that holds an escape byte (`%`, `+`,
/// `\\`). So the runs are found from their escape bytes: text without any
/// is passed over at the speed of a vectorised byte search, and binary data
/// (an upload) has few runs long enough to hold a secret around them.
fn decoded_views(body: &[u8]) -> impl Iterator<Item = (Range<usize>, Decoding)> + '_ {
    escaped_runs(body, SHORTEST_SECRET).flat_map(move |run| {
        let text = &body[run.clone()];
        BODY_VIEWS
            .into_iter()
            .filter(move |view| view.applies(text))
            .map(move |view| (run.clone(), view))
    })
}

/// Printable ASCII, tab, CR and LF: what an escaped secret is made of.
fn is_text(b: u8) -> bool {
    (0x20..0x7f).contains(&b) || matches!(b, b'\t' | b'\r' | b'\n')
}

/// The maximal runs of text ([`is_text`]) in `body` of at least `shortest`
/// bytes that hold an escape byte, in order.
fn escaped_runs(body: &[u8], shortest: usize) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut escapes = memchr::memchr3_iter(b'%', b'+', b'\\', body);
    // Where the last run ended: escape bytes before it were inside it.
    let mut done = 0;
    std::iter::from_fn(move || {
        for at in escapes.by_ref() {
            if at < done {
                continue;
            }
            let before = body[..at].iter().rev().take_while(|b| is_text(**b)).count();
            let after = body[at..].iter().take_while(|b| is_text(**b)).count();
            let run = at - before..at + after;
            done = run.end;
            if run.len() >= shortest {
                return Some(run);
            }
        }
        None
    })
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
    fn an_encoded_secret_amid_binary_data_is_found_in_its_run_of_text() {
        let escaped = KEY.replacen('a', r"\u0061", 2);
        let percent = KEY.replace('-', "%2D");
        for secret in [escaped.as_str(), percent.as_str(), KEY] {
            let mut body: Vec<u8> = (0..4000u32).map(|i| (i * 7 % 32) as u8).collect();
            let at = 1234;
            body.splice(at..at, format!("\"{secret}\"").bytes());
            assert_eq!(ids(body_rules(&body)), ["anthropic_api_key"], "{secret}");
            let spans = body_spans(&body);
            assert_eq!(spans.len(), 1, "{secret}");
            assert_eq!(&body[spans[0].clone()], secret.as_bytes());
        }
    }

    #[test]
    fn escaped_runs_are_the_runs_of_text_that_hold_an_escape() {
        let body = b"a%\x00cd\tef\n\x01\x02g+\xc3\xa9h\\ij plain";
        assert_eq!(
            escaped_runs(body, 1).collect::<Vec<_>>(),
            [0..2, 11..13, 15..25]
        );
        assert_eq!(escaped_runs(body, 3).collect::<Vec<_>>(), vec![15..25]);
    }

    #[test]
    fn escaped_runs_match_a_byte_by_byte_reading() {
        let mut x: u32 = 0x9E37_79B9;
        for round in 0..400 {
            let len = round % 97;
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    // Mostly text and escapes, with control and non-ASCII bytes between.
                    [b'a', b'%', b' ', b'\n', 0x00, 0xc3, b'+', b'\\', b'z'][(x % 9) as usize]
                })
                .collect();
            for shortest in [1, 2, 3, 5, 15] {
                let mut expected = Vec::new();
                let mut at = 0;
                while at < body.len() {
                    let run = body[at..].iter().take_while(|b| is_text(**b)).count();
                    let escaped = body[at..at + run].iter().any(|b| b"%+\\".contains(b));
                    if run >= shortest && escaped {
                        expected.push(at..at + run);
                    }
                    at += run.max(1);
                }
                let runs: Vec<_> = escaped_runs(&body, shortest).collect();
                assert_eq!(runs, expected, "{body:?} {shortest}");
            }
        }
    }

    #[test]
    fn ordinary_json_bodies_are_quiet() {
        let body = br#"{"model":"m-1","messages":[{"role":"user","content":"List the task-list items\nand the disk-usage: 100% of /var.\u00e9"}],"id":"550e8400-e29b-41d4-a716-446655440000","commit":"3f786850e387550fdab836ed7e6dc881de23001b","image":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}"#;
        assert!(body_rules(body).is_empty());
        assert!(body_spans(body).is_empty());
    }
}
