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
/// secret lies within one such run; a JSON or form body is one run (or a
/// few, split by non-ASCII text), and binary data (an upload) has almost no
/// run that long, so its views cost nothing.
fn decoded_views(body: &[u8]) -> impl Iterator<Item = (Range<usize>, Decoding)> + '_ {
    // No view changes text without an escape byte, so the runs before the
    // first one need no reading (nor does any of a body without one).
    let from = memchr::memchr3(b'%', b'+', b'\\', body)
        .map_or(body.len(), |first| text_start(body, 0, first));
    long_text_runs(body, from).flat_map(move |run| {
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

/// Bytes probed at once by [`long_text_runs`].
const WORD: usize = 8;

// A run of SHORTEST_SECRET bytes holds a whole word at a multiple of WORD.
const _: () = assert!(SHORTEST_SECRET >= 2 * WORD - 1);

/// The maximal runs of text ([`is_text`]) in `body` of at least
/// [`SHORTEST_SECRET`] bytes that start at or after `from`, in order; `from`
/// is the start of `body`, its end, or just after a byte that is not text.
///
/// Such a run holds a whole [`WORD`] at a multiple of `WORD`, so only those
/// words are tested until one is all text, a few instructions each; the run
/// is then grown from it both ways, a word at a time. Binary data almost
/// never has a word of eight text bytes (one in three bytes is printable),
/// and text is read once, eight bytes per step.
fn long_text_runs(body: &[u8], from: usize) -> impl Iterator<Item = Range<usize>> + '_ {
    // The next word to test, and where the last run ended (no run starts
    // before it).
    let (mut next, mut done) = (from.next_multiple_of(WORD), from);
    std::iter::from_fn(move || {
        while next + WORD <= body.len() {
            let at = next;
            next += WORD;
            if !all_text(&body[at..at + WORD]) {
                continue;
            }
            let start = text_start(body, done, at);
            let end = text_end(body, at + WORD);
            done = end;
            next = end.next_multiple_of(WORD);
            if end - start >= SHORTEST_SECRET {
                return Some(start..end);
            }
        }
        None
    })
}

/// Where the run of text that ends at `at` starts, `floor` at the earliest;
/// read a word at a time.
fn text_start(body: &[u8], floor: usize, mut at: usize) -> usize {
    while at >= floor + WORD && all_text(&body[at - WORD..at]) {
        at -= WORD;
    }
    at - body[floor..at]
        .iter()
        .rev()
        .take_while(|b| is_text(**b))
        .count()
}

/// Where the run of text that starts at `at` ends; read a word at a time.
fn text_end(body: &[u8], mut at: usize) -> usize {
    while at + WORD <= body.len() && all_text(&body[at..at + WORD]) {
        at += WORD;
    }
    at + body[at..].iter().take_while(|b| is_text(**b)).count()
}

/// Whether every byte of `word` ([`WORD`] bytes) is text. Tests the word as
/// one integer: a byte from 0x80 rules it out at once (nearly every word of
/// binary data); one below 0x20 or a DEL sends it to the byte-by-byte test
/// (tab, CR and LF are text).
fn all_text(word: &[u8]) -> bool {
    const LOW: u64 = u64::from_ne_bytes([0x01; WORD]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; WORD]);
    let w = u64::from_ne_bytes(word.try_into().expect("a word is WORD bytes"));
    if w & HIGH != 0 {
        return false;
    }
    // With no high bit set, each is exact: some byte below 0x20, some 0x7f.
    let control = w.wrapping_sub(LOW * 0x20) & !w & HIGH != 0;
    let del = (w ^ (LOW * 0x7f)).wrapping_sub(LOW) & !(w ^ (LOW * 0x7f)) & HIGH != 0;
    if control || del {
        return word.iter().all(|b| is_text(*b));
    }
    true
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
    fn long_text_runs_split_at_control_and_non_ascii_bytes() {
        let body = b"short\x00a run of text\twith a tab\x7fdel\xc3\xa9than fifteen\r\n..";
        let runs: Vec<&[u8]> = long_text_runs(body, 0).map(|r| &body[r]).collect();
        assert_eq!(
            runs,
            [&b"a run of text\twith a tab"[..], b"than fifteen\r\n.."]
        );
    }

    #[test]
    fn long_text_runs_match_a_byte_by_byte_reading() {
        let mut x: u32 = 0x9E37_79B9;
        for round in 0..2000 {
            let len = round % 211;
            // Runs of text of every length, split by control, DEL and
            // non-ASCII bytes, at every offset.
            let split = [0x00, 0x1f, 0x7f, 0x80, 0xc3, 0xff];
            let text = [b'a', b'%', b' ', b'\t', b'\r', b'\n', b'~', b'\\'];
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    if x % (3 + round as u32 % 29) == 0 {
                        split[(x >> 8) as usize % split.len()]
                    } else {
                        text[(x >> 8) as usize % text.len()]
                    }
                })
                .collect();
            let mut expected = Vec::new();
            let mut at = 0;
            while at < body.len() {
                let run = body[at..].iter().take_while(|b| is_text(**b)).count();
                if run >= SHORTEST_SECRET {
                    expected.push(at..at + run);
                }
                at += run.max(1);
            }
            let runs: Vec<_> = long_text_runs(&body, 0).collect();
            assert_eq!(runs, expected, "{body:?}");
            // From where a run may start: the runs that start there or later.
            let starts: Vec<usize> = (0..=len)
                .filter(|&i| i == 0 || i == len || !is_text(body[i - 1]))
                .collect();
            let from = starts[round % starts.len()];
            let later: Vec<_> = expected
                .iter()
                .filter(|r| r.start >= from)
                .cloned()
                .collect();
            assert_eq!(
                long_text_runs(&body, from).collect::<Vec<_>>(),
                later,
                "{body:?} {from}"
            );
        }
    }

    #[test]
    fn a_word_is_text_exactly_when_each_byte_is() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly text bytes, so both answers come up often.
            let mut word = x.to_le_bytes();
            for (i, b) in word.iter_mut().enumerate() {
                if (x >> (i + 56)) & 1 == 1 {
                    *b = 0x20 + *b % 0x5f;
                }
            }
            assert_eq!(
                all_text(&word),
                word.iter().all(|b| is_text(*b)),
                "{word:?}"
            );
        }
        for b in 0..=255u8 {
            let word = [b'a', b'b', b, b'c', b'd', b'e', b'f', b'g'];
            assert_eq!(all_text(&word), is_text(b), "{b:#x}");
        }
    }

    #[test]
    fn ordinary_json_bodies_are_quiet() {
        let body = br#"{"model":"m-1","messages":[{"role":"user","content":"List the task-list items\nand the disk-usage: 100% of /var.\u00e9"}],"id":"550e8400-e29b-41d4-a716-446655440000","commit":"3f786850e387550fdab836ed7e6dc881de23001b","image":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}"#;
        assert!(body_rules(body).is_empty());
        assert!(body_spans(body).is_empty());
    }
}
