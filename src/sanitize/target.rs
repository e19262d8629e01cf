//! Secrets in the request target (path and query).

use std::borrow::Cow;
use std::ops::Range;

use super::decode::{merge, Decoding};
use super::rules::{self, Rule, RuleSet};

/// Query parameter names whose non-empty value is treated as a secret
/// (compared case-insensitively, after percent-decoding the name).
pub(crate) const SECRET_QUERY_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "api_key",
    "apikey",
    "api-key",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "auth",
    "private_token",
    "refresh_token",
    "id_token",
];

const PATH: Decoding = Decoding::Percent {
    plus_is_space: false,
};
const QUERY: Decoding = Decoding::Percent {
    plus_is_space: true,
};

/// The rules that fire on `target`, raw or percent-decoded.
pub(crate) fn scan(target: &str) -> RuleSet {
    let (path, query) = split(target);
    let mut found = rules_in_encoded(path.as_bytes(), PATH);
    if let Some(query) = query {
        found.extend(rules_in_encoded(query.as_bytes(), QUERY));
        if query.split('&').any(is_secret_param) {
            found.insert(Rule::SecretQueryParam);
        }
    }
    found
}

/// `target` with every query parameter that holds a secret dropped and every
/// secret in the path replaced by `REDACTED`.
pub(crate) fn redact(target: &str) -> String {
    let (path, query) = split(target);
    let mut out = String::with_capacity(target.len());
    let mut last = 0;
    for span in secret_spans(path.as_bytes(), PATH) {
        out.push_str(&path[last..span.start]);
        out.push_str("REDACTED");
        last = span.end;
    }
    out.push_str(&path[last..]);
    if let Some(query) = query {
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                !is_secret_param(pair) && rules_in_encoded(pair.as_bytes(), QUERY).is_empty()
            })
            .collect();
        if !kept.is_empty() {
            out.push('?');
            out.push_str(&kept.join("&"));
        }
    }
    out
}

fn split(target: &str) -> (&str, Option<&str>) {
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

fn rules_in_encoded(raw: &[u8], decoding: Decoding) -> RuleSet {
    let mut found = rules::rules_in(raw);
    if decoding.applies(raw) {
        found.extend(rules::rules_in(&decoding.decode(raw)));
    }
    found
}

/// Raw ranges of every secret, found raw or decoded, merged and sorted. The
/// ranges always fall on character boundaries: they cover ASCII-delimited
/// tokens or whole escape sequences.
fn secret_spans(raw: &[u8], decoding: Decoding) -> Vec<Range<usize>> {
    let mut spans = rules::spans_in(raw);
    if decoding.applies(raw) {
        let decoded = decoding.decode(raw);
        spans.extend(decoding.map_to_raw(raw, &rules::spans_in(&decoded)));
    }
    merge(spans)
}

fn is_secret_param(pair: &str) -> bool {
    let Some((name, value)) = pair.split_once('=') else {
        return false;
    };
    if value.is_empty() {
        return false;
    }
    let name: Cow<'_, [u8]> = if QUERY.applies(name.as_bytes()) {
        Cow::Owned(QUERY.decode(name.as_bytes()))
    } else {
        Cow::Borrowed(name.as_bytes())
    };
    SECRET_QUERY_PARAMS
        .iter()
        .any(|secret| name.eq_ignore_ascii_case(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GH: &str = "ghp_T3stSecretT3stSecretT3stSecretT3stSecret";

    fn ids(set: RuleSet) -> Vec<&'static str> {
        set.iter().map(Rule::id).collect()
    }

    #[test]
    fn secret_query_parameters_are_found_by_name() {
        for target in [
            "/x?token=abc",
            "/x?a=1&Access_Token=abc",
            "/x?API-KEY=abc",
            "/x?api%5Fkey=abc",
            "/x?client_secret=abc&b=2",
        ] {
            assert_eq!(ids(scan(target)), ["secret_query_param"], "{target}");
        }
        for target in [
            "/x?token=",
            "/x?token",
            "/x?key=abc",
            "/x?tokens=abc",
            "/x?sig=abc",
            "/token=abc",
            "/repos/acme/widgets/issues?state=open&per_page=100",
        ] {
            assert!(scan(target).is_empty(), "{target}");
        }
    }

    #[test]
    fn tokens_are_found_raw_and_percent_encoded() {
        let encoded = GH.replace('_', "%5F");
        for target in [
            format!("/repos/{GH}/x"),
            format!("/x?q={GH}"),
            format!("/repos/{encoded}/x"),
            format!("/x?q={encoded}"),
        ] {
            assert_eq!(ids(scan(&target)), ["github_token"], "{target}");
        }
        let key = "-----BEGIN+EC+PRIVATE+KEY-----abc";
        assert_eq!(ids(scan(&format!("/x?k={key}"))), ["private_key"]);
    }

    #[test]
    fn redaction_drops_secret_parameters_and_masks_the_path() {
        let target = format!("/a/{GH}/b?keep=1&token=abc&q={GH}&also=2");
        assert_eq!(redact(&target), "/a/REDACTED/b?keep=1&also=2");

        let encoded = GH.replace('_', "%5f");
        assert_eq!(redact(&format!("/a/{encoded}")), "/a/REDACTED");
        // A prefix glued to a word is no token, encoded or not.
        assert_eq!(redact(&format!("/a/x{encoded}")), format!("/a/x{encoded}"));
        assert_eq!(redact(&format!("/a/-{encoded}-/b")), "/a/-REDACTED-/b");
        assert_eq!(redact("/a?token=abc"), "/a");
        assert_eq!(redact("/plain/path?x=1"), "/plain/path?x=1");
        assert!(scan(&redact(&format!("/{GH}?api_key=1&x={encoded}"))).is_empty());
    }
}
