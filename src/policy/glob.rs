//! Path patterns of rules, compiled once per config load.
//!
//! `*` as a whole segment is exactly one non-empty segment, `**` as a whole
//! segment is zero or more segments, and `*` inside a segment (`*.json`) is
//! any run of characters except `/`. Everything else is literal.
//!
//! Matching compares percent-decoded bytes segment by segment, so
//! `/v1/a%3Ab` and `/v1/a:b` are the same path to every rule: upstreams
//! decode both to the same thing, and a deny rule must not miss either.
//! Segment boundaries come only from raw `/` (an encoded one is refused
//! earlier and never decoded here).

use std::borrow::Cow;

use super::normalize_path;
use super::path::hex_pair;

/// One compiled path pattern.
#[derive(Debug, Clone)]
pub(crate) struct PathGlob {
    source: Box<str>,
    segments: Box<[Segment]>,
}

#[derive(Debug, Clone)]
enum Segment {
    /// `**`: zero or more segments, empty ones included.
    AnySegments,
    /// `*`: exactly one non-empty segment.
    AnyOne,
    /// Decoded bytes that must be equal.
    Literal(Box<[u8]>),
    /// Decoded pieces between the `*`s of a segment like `v*-*.json`.
    Wild(Box<[Box<[u8]>]>),
}

impl PathGlob {
    /// Compiles one entry of `paths`. The error is a message for the
    /// operator; the caller attaches the field path.
    pub(crate) fn compile(pattern: &str) -> Result<PathGlob, String> {
        if !pattern.starts_with('/') {
            return Err(format!("{pattern:?} must start with \"/\""));
        }
        if pattern.contains(['?', '#']) {
            return Err(format!(
                "{pattern:?}: patterns match the path only; \"?\" and \"#\" cannot appear"
            ));
        }
        for segment in pattern[1..].split('/') {
            let decoded_dots = segment.to_ascii_lowercase().replace("%2e", ".");
            if decoded_dots == "." || decoded_dots == ".." {
                return Err(format!(
                    "{pattern:?}: \".\" and \"..\" segments cannot appear in a pattern"
                ));
            }
            if segment.contains("**") && segment != "**" {
                return Err(format!(
                    "{pattern:?}: \"**\" must be a whole segment, as in \"/repos/**\""
                ));
            }
        }
        // The literal parts get the same canonical form as request paths.
        let normalised = normalize_path(pattern).map_err(|e| format!("{pattern:?}: {e}"))?;
        let mut segments: Vec<Segment> = Vec::new();
        for segment in normalised[1..].split('/') {
            let compiled = match segment {
                "**" => {
                    // `/**/**` means the same as `/**` and backtracks less.
                    if matches!(segments.last(), Some(Segment::AnySegments)) {
                        continue;
                    }
                    Segment::AnySegments
                }
                "*" => Segment::AnyOne,
                _ if segment.contains('*') => Segment::Wild(
                    segment
                        .split('*')
                        .map(|piece| decode_for_match(piece).into_owned().into_boxed_slice())
                        .collect(),
                ),
                _ => Segment::Literal(decode_for_match(segment).into_owned().into_boxed_slice()),
            };
            segments.push(compiled);
        }
        Ok(PathGlob {
            source: normalised.into(),
            segments: segments.into(),
        })
    }

    /// The pattern as written (in canonical form), for messages.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// `true` for `/**`, which matches every path.
    pub(crate) fn is_universal(&self) -> bool {
        matches!(*self.segments, [Segment::AnySegments])
    }

    /// Matches a path prepared by [`decode_for_match`].
    ///
    /// `**` is handled by remembering only the latest one and letting it
    /// absorb one more segment on a mismatch, which is complete for patterns
    /// whose other items each match exactly one segment and runs in
    /// O(segments × pattern) without recursion.
    pub(crate) fn matches(&self, decoded_path: &[u8]) -> bool {
        let Some(rest) = decoded_path.strip_prefix(b"/") else {
            return false;
        };
        let mut input = rest.split(|b| *b == b'/');
        let mut at = 0;
        let mut resume: Option<(usize, std::slice::Split<'_, u8, _>)> = None;
        loop {
            let mut ahead = input.clone();
            let next = ahead.next();
            match (self.segments.get(at), next) {
                (Some(Segment::AnySegments), _) => {
                    at += 1;
                    resume = Some((at, input.clone()));
                    continue;
                }
                (Some(pattern), Some(segment)) if pattern.matches_one(segment) => {
                    at += 1;
                    input = ahead;
                    continue;
                }
                (None, None) => return true,
                _ => {}
            }
            let Some((resume_at, absorbed)) = resume.as_mut() else {
                return false;
            };
            if absorbed.next().is_none() {
                return false;
            }
            at = *resume_at;
            input = absorbed.clone();
        }
    }
}

impl Segment {
    fn matches_one(&self, segment: &[u8]) -> bool {
        match self {
            Segment::AnySegments => true,
            Segment::AnyOne => !segment.is_empty(),
            Segment::Literal(literal) => **literal == *segment,
            Segment::Wild(pieces) => wild_matches(pieces, segment),
        }
    }
}

/// `pieces` are the literal runs between `*`s; the first must be a prefix,
/// the last a suffix, the middle ones found in order without overlapping.
fn wild_matches(pieces: &[Box<[u8]>], segment: &[u8]) -> bool {
    let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
        return false;
    };
    if pieces.len() < 2 || segment.len() < first.len() + last.len() {
        return false;
    }
    if !segment.starts_with(first) || !segment.ends_with(last) {
        return false;
    }
    let mut middle = &segment[first.len()..segment.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        if piece.is_empty() {
            continue;
        }
        match middle.windows(piece.len()).position(|w| w == &**piece) {
            Some(found) => middle = &middle[found + piece.len()..],
            None => return false,
        }
    }
    true
}

/// The bytes rules compare: every valid escape decoded except `%2F`, which
/// stays as three literal bytes so decoding never creates a segment boundary.
/// Borrows when there is nothing to decode, which is the common case.
pub(crate) fn decode_for_match(path: &str) -> Cow<'_, [u8]> {
    let bytes = path.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(value) = hex_pair(bytes[i + 1], bytes[i + 2]) {
                if value != b'/' {
                    out.push(value);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &str) -> PathGlob {
        PathGlob::compile(pattern).unwrap_or_else(|e| panic!("{e}"))
    }

    fn hits(pattern: &str, path: &str) -> bool {
        glob(pattern).matches(&decode_for_match(path))
    }

    #[test]
    fn single_star_is_one_non_empty_segment() {
        assert!(hits("/repos/*/issues", "/repos/acme/issues"));
        assert!(!hits("/repos/*/issues", "/repos/acme/x/issues"));
        assert!(!hits("/repos/*/issues", "/repos//issues"));
        assert!(!hits("/repos/*/issues", "/repos/issues"));
        assert!(!hits("/*", "/"));
        assert!(hits("/*", "/a"));
        assert!(!hits("/*", "/a/"));
    }

    #[test]
    fn double_star_is_zero_or_more_segments() {
        let p = "/repos/acme/*/issues/**";
        assert!(hits(p, "/repos/acme/x/issues"));
        assert!(hits(p, "/repos/acme/x/issues/"));
        assert!(hits(p, "/repos/acme/x/issues/1/comments"));
        assert!(!hits(p, "/repos/acme/x/issuesX"));
        assert!(!hits(p, "/repos/acme/issues/1"));
        assert!(!hits(p, "/repos/other/x/issues/1"));
        assert!(hits("/**", "/"));
        assert!(hits("/**", "/a//b/"));
        assert!(hits("/a/**/b", "/a/b"));
        assert!(hits("/a/**/b", "/a/x/y/b"));
        assert!(!hits("/a/**/b", "/a/x/y/c"));
        assert!(hits("/**/b/**/c", "/x/b/y/b/z/c"));
        assert!(!hits("/**/b/**/c", "/x/b/y/b/z/d"));
        assert!(hits("/a/**/**/b", "/a/b"));
    }

    #[test]
    fn star_inside_a_segment_stays_inside_it() {
        assert!(hits("/v1/*.json", "/v1/data.json"));
        assert!(hits("/v1/*.json", "/v1/.json"));
        assert!(!hits("/v1/*.json", "/v1/a/b.json"));
        assert!(!hits("/v1/*.json", "/v1/data.jsonx"));
        assert!(hits("/v*-*", "/v1-beta"));
        assert!(hits("/a*b*c", "/abc"));
        assert!(hits("/a*b*c", "/axxbyyc"));
        assert!(!hits("/a*b*c", "/ac"));
        // Prefix and suffix may not share bytes.
        assert!(!hits("/ab*ba", "/aba"));
        assert!(hits("/ab*ba", "/abba"));
    }

    #[test]
    fn literals_compare_decoded_bytes() {
        assert!(hits("/v1/a:b", "/v1/a%3Ab"));
        assert!(hits("/v1/a%3ab", "/v1/a:b"));
        assert!(hits("/v1/%41", "/v1/A"));
        assert!(!hits("/v1/a", "/v1/A"));
        // An escaped star in a pattern is a literal star, not a wildcard.
        assert!(hits("/v1/%2A", "/v1/*"));
        assert!(!hits("/v1/%2A", "/v1/x"));
        // An encoded slash (never produced by normalisation) is no boundary.
        assert!(!hits("/a/b", "/a%2Fb"));
        assert!(!hits("/a/*", "/a%2Fb"));
    }

    #[test]
    fn trailing_slash_and_empty_segments_are_significant() {
        assert!(!hits("/a/b", "/a/b/"));
        assert!(hits("/a/b/", "/a/b/"));
        assert!(!hits("/a/b", "/a//b"));
        assert!(hits("/", "/"));
        assert!(!hits("/", "/a"));
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        let pattern = "/**/a/**/a/**/a/**/a/**/a/**/b";
        let path = format!("/{}", ["a"; 2000].join("/"));
        assert!(!hits(pattern, &path));
    }

    #[test]
    fn bad_patterns_are_config_errors() {
        for bad in [
            "repos/**",
            "",
            "/a**b",
            "/a/**x",
            "/a/***",
            "/a/../b",
            "/a/./b",
            "/a/%2e%2E/b",
            "/a?x",
            "/a#x",
            "/a%2Fb",
            "/a%zz",
            "/a\\b",
        ] {
            assert!(PathGlob::compile(bad).is_err(), "{bad:?} accepted");
        }
        let err = PathGlob::compile("/a**b").unwrap_err();
        assert!(err.contains("whole segment"), "{err}");
    }

    #[test]
    fn universal_and_source() {
        assert!(glob("/**").is_universal());
        assert!(glob("/**/**").is_universal());
        assert!(!glob("/a/**").is_universal());
        assert_eq!(glob("/v1/%7euser/*").as_str(), "/v1/~user/*");
    }
}
