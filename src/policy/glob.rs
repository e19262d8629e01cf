//! Path patterns of rules, compiled once per config load.
//!
//! `*` as a whole segment is exactly one non-empty segment, `**` as a whole
//! segment is zero or more segments, and `*` inside a segment (`*.json`) is
//! any run of characters except `/`. Everything else is literal.
//!
//! Matching compares percent-decoded bytes segment by segment, so
//! `/v1/a%3Ab` and `/v1/a:b` are the same path to every rule: upstreams
//! decode both to the same thing, and a deny rule must not miss either.
//! Segment boundaries come only from raw `/`: an encoded one (`%2F`, which
//! only an `encoded_slash: keep` rule lets through) is never decoded here,
//! so it is a character inside its segment to allow and deny rules alike.
//!
//! Patterns match in one of two ways ([`PathMatching`]):
//!
//! - Allow rules match **exactly**: `//`, a trailing `/`, `;params` and case
//!   are all significant, because what is forwarded is exactly what was
//!   matched. `/repos/acme/*` does not match `/repos/acme//x` nor
//!   `/repos/acme/x/`; only `**` spans empty segments.
//! - Deny rules match **loosely**: pattern and path are both compared in
//!   their [`loose form`](MatchPath::loose): each segment cut at its first
//!   `;` (raw or `%3B`), empty segments then removed (a trailing `/` too,
//!   but `/` stays `/`), and ASCII letters lowercased. Upstreams that merge
//!   slashes, strip matrix parameters or ignore case serve
//!   `/repos/acme//Secret;x/` as `/repos/acme/secret`, so a deny rule for the
//!   latter must refuse the former. Segments still compare whole: a deny of
//!   `/repos/acme/secret/**` does not cover `/repos/acme/secrets`.

use std::borrow::Cow;
use std::cell::OnceCell;

use super::normalize_path;
use super::path::hex_pair;

/// How a pattern compares with request paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathMatching {
    /// Byte for byte after decoding: allow rules.
    Exact,
    /// Both sides in loose form (see the module docs): deny rules.
    Loose,
}

/// One compiled path pattern.
#[derive(Debug, Clone)]
pub(crate) struct PathGlob {
    source: Box<str>,
    matching: PathMatching,
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
    pub(crate) fn compile(pattern: &str, matching: PathMatching) -> Result<PathGlob, String> {
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
                "**" => Segment::AnySegments,
                "*" => Segment::AnyOne,
                _ => {
                    let pieces: Vec<Box<[u8]>> = segment
                        .split('*')
                        .map(|piece| decode_for_match(piece).into_owned().into_boxed_slice())
                        .collect();
                    match matching {
                        PathMatching::Exact => Segment::from_pieces(pieces),
                        PathMatching::Loose => match Segment::loose_from_pieces(pieces) {
                            Some(compiled) => compiled,
                            // Empty segments do not exist in a loose path.
                            None => continue,
                        },
                    }
                }
            };
            // `/**/**` means the same as `/**` and backtracks less.
            if matches!(compiled, Segment::AnySegments)
                && matches!(segments.last(), Some(Segment::AnySegments))
            {
                continue;
            }
            segments.push(compiled);
        }
        if segments.is_empty() {
            // Only a loose pattern with nothing but empty segments gets here:
            // it names the root, which is one empty segment to the matcher.
            segments.push(Segment::Literal(Box::default()));
        }
        Ok(PathGlob {
            source: normalised.into(),
            matching,
            segments: segments.into(),
        })
    }

    /// The pattern as written (in canonical form), for messages.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// `true` for `/**`, which matches every path (loosely also `//**` and
    /// `/**/`, which mean the same there).
    pub(crate) fn is_universal(&self) -> bool {
        matches!(*self.segments, [Segment::AnySegments])
    }

    /// Matches a request path, in the form this pattern compares.
    pub(crate) fn matches(&self, path: &MatchPath<'_>) -> bool {
        match self.matching {
            PathMatching::Exact => self.matches_bytes(path.exact()),
            PathMatching::Loose => self.matches_bytes(path.loose()),
        }
    }

    /// Matches a path prepared by [`decode_for_match`] (and, for a loose
    /// pattern, brought into loose form).
    ///
    /// `**` is handled by remembering only the latest one and letting it
    /// absorb one more segment on a mismatch, which is complete for patterns
    /// whose other items each match exactly one segment and runs in
    /// O(segments × pattern) without recursion.
    fn matches_bytes(&self, decoded_path: &[u8]) -> bool {
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
    /// A segment of decoded literal runs that had `*`s between them.
    fn from_pieces(mut pieces: Vec<Box<[u8]>>) -> Segment {
        if pieces.len() == 1 {
            Segment::Literal(pieces.pop().unwrap_or_default())
        } else {
            Segment::Wild(pieces.into())
        }
    }

    /// The loose form of [`Segment::from_pieces`]: cut at the first `;`,
    /// lowercased, `None` when nothing is left.
    fn loose_from_pieces(mut pieces: Vec<Box<[u8]>>) -> Option<Segment> {
        if let Some(at) = pieces.iter().position(|piece| piece.contains(&b';')) {
            pieces.truncate(at + 1);
            let cut = &pieces[at];
            let end = cut.iter().position(|b| *b == b';').unwrap_or(cut.len());
            pieces[at] = cut[..end].into();
        }
        for piece in &mut pieces {
            piece.make_ascii_lowercase();
        }
        match &pieces[..] {
            [only] if only.is_empty() => None,
            // `*;x` is left as a lone `*`: one segment, never empty here.
            [first, last] if first.is_empty() && last.is_empty() => Some(Segment::AnyOne),
            _ => Some(Segment::from_pieces(pieces)),
        }
    }

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

/// A request path prepared once per decision for every rule: decoded by
/// [`decode_for_match`] for exact patterns, and brought into loose form, on
/// first use only, for loose ones.
#[derive(Debug)]
pub(crate) struct MatchPath<'a> {
    exact: Cow<'a, [u8]>,
    /// `None` inside when the exact form is already loose.
    loose: OnceCell<Option<Box<[u8]>>>,
}

impl<'a> MatchPath<'a> {
    /// Prepares a normalised path; nothing is allocated unless it has
    /// escapes to decode.
    pub(crate) fn new(path: &'a str) -> MatchPath<'a> {
        MatchPath {
            exact: decode_for_match(path),
            loose: OnceCell::new(),
        }
    }

    /// The decoded path.
    pub(crate) fn exact(&self) -> &[u8] {
        &self.exact
    }

    /// The decoded path without empty segments (so without a trailing `/`,
    /// though `/` stays `/`), with each segment cut at its first `;` and
    /// ASCII-lowercased. Computed at most once, and borrowed from the exact
    /// form when that is already loose.
    pub(crate) fn loose(&self) -> &[u8] {
        match self.loose.get_or_init(|| loosen(&self.exact)) {
            Some(loose) => loose,
            None => &self.exact,
        }
    }
}

/// The loose form of a decoded path, or `None` when it is already loose
/// (or is no absolute path, which no pattern matches anyway).
fn loosen(decoded: &[u8]) -> Option<Box<[u8]>> {
    let rest = decoded.strip_prefix(b"/")?;
    if is_loose(rest) {
        return None;
    }
    let mut out = Vec::with_capacity(decoded.len());
    for segment in rest.split(|b| *b == b'/') {
        let end = segment
            .iter()
            .position(|b| *b == b';')
            .unwrap_or(segment.len());
        if end == 0 {
            continue;
        }
        out.push(b'/');
        out.extend(segment[..end].iter().map(u8::to_ascii_lowercase));
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Some(out.into())
}

/// `true` when `rest` (a decoded path after its leading `/`) has no empty
/// segment, no `;` and no ASCII uppercase letter; `""` is the root.
fn is_loose(rest: &[u8]) -> bool {
    if rest.is_empty() {
        return true;
    }
    if rest.last() == Some(&b'/') {
        return false;
    }
    let mut previous = b'/';
    for &byte in rest {
        if byte == b';' || byte.is_ascii_uppercase() || (byte == b'/' && previous == b'/') {
            return false;
        }
        previous = byte;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &str) -> PathGlob {
        PathGlob::compile(pattern, PathMatching::Exact).unwrap_or_else(|e| panic!("{e}"))
    }

    fn loose_glob(pattern: &str) -> PathGlob {
        PathGlob::compile(pattern, PathMatching::Loose).unwrap_or_else(|e| panic!("{e}"))
    }

    fn hits(pattern: &str, path: &str) -> bool {
        glob(pattern).matches(&MatchPath::new(path))
    }

    fn loose_hits(pattern: &str, path: &str) -> bool {
        loose_glob(pattern).matches(&MatchPath::new(path))
    }

    fn loose(path: &str) -> String {
        String::from_utf8(MatchPath::new(path).loose().to_vec()).unwrap()
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
            for matching in [PathMatching::Exact, PathMatching::Loose] {
                assert!(
                    PathGlob::compile(bad, matching).is_err(),
                    "{bad:?} accepted"
                );
            }
        }
        let err = PathGlob::compile("/a**b", PathMatching::Exact).unwrap_err();
        assert!(err.contains("whole segment"), "{err}");
    }

    #[test]
    fn universal_and_source() {
        assert!(glob("/**").is_universal());
        assert!(glob("/**/**").is_universal());
        assert!(!glob("/a/**").is_universal());
        assert_eq!(glob("/v1/%7euser/*").as_str(), "/v1/~user/*");
        assert_eq!(loose_glob("/V1//x/").as_str(), "/V1//x/");
        // Loosely these mean `/**` as well; exactly they do not.
        for pattern in ["//**", "/**/", "/;x/**", "/**//**"] {
            assert!(loose_glob(pattern).is_universal(), "{pattern}");
            assert!(!glob(pattern).is_universal(), "{pattern}");
        }
        assert!(!loose_glob("/**/*").is_universal());
    }

    #[test]
    fn loose_form_of_paths() {
        for (path, want) in [
            ("/", "/"),
            ("//", "/"),
            ("///", "/"),
            ("/;x", "/"),
            ("/a", "/a"),
            ("/a/", "/a"),
            ("/a//b", "/a/b"),
            ("//a///b//", "/a/b"),
            ("/a;x/b", "/a/b"),
            ("/a;x=1;y=2/b;z", "/a/b"),
            ("/a/;x/b", "/a/b"),
            ("/a%3Bx/b", "/a/b"),
            ("/Repos/ACME/Secret", "/repos/acme/secret"),
            ("/%41b", "/ab"),
            ("/%C3%89", "/\u{c9}"),
        ] {
            assert_eq!(loose(path), want, "{path:?}");
        }
        assert_eq!(MatchPath::new("/A//b/").exact(), b"/A//b/");
    }

    #[test]
    fn loose_form_borrows_when_already_loose() {
        for path in ["/", "/a", "/a/b.json", "/v1/x-y_z~"] {
            let prepared = MatchPath::new(path);
            assert_eq!(prepared.loose(), path.as_bytes());
            assert_eq!(prepared.loose.get(), Some(&None), "{path:?}");
        }
        for path in ["//", "/a/", "/a//b", "/a;x", "/A"] {
            let prepared = MatchPath::new(path);
            prepared.loose();
            assert!(matches!(prepared.loose.get(), Some(Some(_))), "{path:?}");
        }
    }

    #[test]
    fn loose_patterns_ignore_empty_segments_params_and_case() {
        let deny = "/repos/acme/secret/**";
        for path in [
            "/repos/acme/secret",
            "/repos/acme/secret/",
            "/repos/acme//secret/x",
            "//repos/acme/secret/x",
            "/repos/acme/secret//x",
            "/repos/acme/secret;x/x",
            "/repos/acme/secret;jsessionid=1/x",
            "/repos;v=1/acme/secret/x",
            "/repos/acme/;x/secret/x",
            "/repos/acme/Secret/x",
            "/REPOS/ACME/SECRET/X",
            "/repos/acme/%53ecret/x",
        ] {
            assert!(loose_hits(deny, path), "{path:?}");
        }
        for path in [
            "/admin", "/admin/", "/admin//", "/Admin", "/admin;x", "//admin",
        ] {
            assert!(loose_hits("/admin", path), "{path:?}");
        }
        assert!(!hits("/admin", "/admin/"));
        // The pattern is read loosely too.
        assert!(loose_hits("/Admin/", "/admin"));
        assert!(loose_hits("/a//b", "/a/b"));
        assert!(loose_hits("/a;v=1/b", "/a/b"));
        assert!(loose_hits("/A*.JSON", "/a.json"));
        assert!(loose_hits("/v*;x", "/V1"));
        assert!(loose_hits("/*;x", "/anything"));
        assert!(!loose_hits("/*;x", "/"));
        assert!(loose_hits("/", "//"));
        assert!(loose_hits("/;x", "/"));
        assert!(!loose_hits("/", "/a"));
        assert!(!loose_hits("/*", "//"));
    }

    #[test]
    fn loose_patterns_still_compare_whole_segments() {
        let deny = "/repos/acme/secret/**";
        for path in [
            "/repos/acme/secrets",
            "/repos/acme/secrets/x",
            "/repos/acme/secre",
            "/repos/acme/x/secret",
            "/repos/acmesecret/x",
            "/repos/acme/secret%2Fx",
        ] {
            assert!(!loose_hits(deny, path), "{path:?}");
        }
        assert!(!loose_hits("/admin", "/admin/x"));
        assert!(!loose_hits("/admin", "/administrator"));
        assert!(!loose_hits("/admin", "/x/admin"));
        assert!(!loose_hits("/v1/*.json", "/v1/a/b.json"));
        assert!(!loose_hits("/a/*/c", "/a//c"));
    }

    #[test]
    fn exact_patterns_keep_every_spelling_distinct() {
        assert!(!hits("/repos/acme/*", "/repos/acme//x"));
        assert!(!hits("/repos/acme/*", "/repos/acme/x/"));
        assert!(!hits("/repos/acme/x", "/repos/acme/X"));
        assert!(!hits("/repos/acme/x", "/repos/acme/x;y"));
        assert!(hits("/repos/acme/x;y", "/repos/acme/x;y"));
        assert!(!hits("/repos/acme/x;y", "/repos/acme/x"));
        // Only `**` spans empty segments.
        assert!(hits("/repos/acme/**", "/repos/acme//x"));
    }
}
