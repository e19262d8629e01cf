//! Request paths: one canonical spelling, decided before any rule looks.
//!
//! The normalised path is both what rules match and what is forwarded, so
//! the upstream can never resolve a path to somewhere the rule did not see.
//! Anything upstreams are known to read in more than one way (`\`, NUL,
//! `..;`) is refused rather than guessed at. An encoded slash (`%2F`) is kept
//! as sent and reported ([`RequestPath::encoded_slash`]), so that only the
//! rule that matched decides whether it may pass (`encoded_slash: keep`).

use super::TargetError;

/// A request path in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPath {
    /// The canonical path: what rules match and what is forwarded.
    pub path: String,
    /// The path holds `%2F` or `%2f`, kept as sent. Only a rule with
    /// `encoded_slash: keep` allows it; it is never a separator.
    pub encoded_slash: bool,
}

/// Returns the canonical form of an origin-form path (no query, no fragment),
/// refusing an encoded `/` (`%2F`): for rule patterns and every path that no
/// rule's `encoded_slash: keep` can apply to.
///
/// See [`normalize_request_path`] for the canonical form.
pub fn normalize_path(raw: &str) -> Result<String, TargetError> {
    let normalised = normalize_request_path(raw)?;
    if normalised.encoded_slash {
        return Err(TargetError::EncodedSlash);
    }
    Ok(normalised.path)
}

/// Returns the canonical form of a request's origin-form path (no query, no
/// fragment), with any encoded `/` kept for the matching rule to judge.
///
/// Percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
/// decoded and every other escape gets uppercase hex, except `%2F`/`%2f`,
/// which stays exactly as sent (an upstream that reads it as a character
/// gets the very bytes the agent sent); characters that may not appear raw
/// in a path (space, `"`, `<`, non-ASCII, …) are percent-encoded. Then `.`
/// and `..` segments are resolved as in RFC 3986 `remove_dot_segments`, also
/// when they were encoded (`%2e%2e`). Nothing else is collapsed: `//` stays
/// `//`, a trailing `/` stays, and so do `;params` and case, since this is
/// what is forwarded. Deny rules compare a looser form of it (see the `glob`
/// module).
///
/// Only `%2F` is an encoded slash: `%252F` is a literal `%2F` for everyone
/// and stays `%252F`; an overlong UTF-8 spelling (`%C0%AF`) is no character
/// at all to a UTF-8 decoder and stays as two escapes, matched literally.
///
/// Refused: a path not starting with `/`; `\` or `%5C`; NUL raw or encoded;
/// control characters raw or encoded; malformed escapes; `?`/`#`; a `..`
/// that would climb above `/` (refused, never clamped); dot segments with
/// parameters (`..;x`); a `.` or `..` next to an encoded slash (`..%2F`).
pub fn normalize_request_path(raw: &str) -> Result<RequestPath, TargetError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(TargetError::PathNotAbsolute);
    }
    let mut out = String::with_capacity(raw.len());
    let mut encoded_slash = false;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'%' {
            let value = match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(&hi), Some(&lo)) => hex_pair(hi, lo).ok_or(TargetError::InvalidEscape)?,
                _ => return Err(TargetError::InvalidEscape),
            };
            match value {
                b'/' => {
                    // Three ASCII bytes (the hex digits were just checked).
                    out.push_str(&raw[i..i + 3]);
                    encoded_slash = true;
                }
                _ if is_unreserved(value) => out.push(char::from(value)),
                _ => {
                    check_byte(value)?;
                    push_escape(&mut out, value);
                }
            }
            i += 3;
            continue;
        }
        check_byte(byte)?;
        match byte {
            b'?' | b'#' => return Err(TargetError::QueryOrFragment),
            b'/' => out.push('/'),
            _ if is_pchar(byte) => out.push(char::from(byte)),
            _ => push_escape(&mut out, byte),
        }
        i += 1;
    }
    Ok(RequestPath {
        path: remove_dot_segments(out)?,
        encoded_slash,
    })
}

/// Refuses bytes that are dangerous whether raw or encoded.
fn check_byte(byte: u8) -> Result<(), TargetError> {
    match byte {
        0 => Err(TargetError::Nul),
        b'\\' => Err(TargetError::Backslash),
        // Encoded CR/LF and friends have no use in an API path and are how
        // header splitting and log forging reach backends that decode them.
        0x01..=0x1f | 0x7f => Err(TargetError::ControlChar),
        _ => Ok(()),
    }
}

/// RFC 3986 unreserved: decoding these never changes what a URI means.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar` minus `pct-encoded`: what may stand raw in a segment.
fn is_pchar(byte: u8) -> bool {
    is_unreserved(byte)
        || matches!(
            byte,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

/// Value of two hex digits, either case.
pub(crate) fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    Some((digit(hi)? * 16 + digit(lo)?) as u8)
}

fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xf)]));
}

/// What a segment means for dot resolution.
enum Dot {
    None,
    Current,
    Parent,
}

fn classify(segment: &str) -> Result<Dot, TargetError> {
    match segment {
        "." => return Ok(Dot::Current),
        ".." => return Ok(Dot::Parent),
        _ => {}
    }
    // Tomcat and other servlet containers strip `;params` before resolving
    // dots, so `/public/..;/admin` reaches `/admin` there.
    let head = segment.split(';').next().unwrap_or_default();
    if segment.len() > head.len() && (head == "." || head == "..") {
        return Err(TargetError::DotSegmentParams);
    }
    if segment.starts_with(".%3B") || segment.starts_with("..%3B") {
        return Err(TargetError::DotSegmentParams);
    }
    // An upstream that does decode `%2F` resolves `a%2F..%2Fb` as `a/../b`:
    // a dot among the pieces of a segment is refused, not left to it.
    if has_encoded_slash(segment) {
        let spelled = segment.replace("%2f", "%2F");
        let is_dot = |piece: &str| matches!(piece.split(';').next(), Some("." | ".."));
        if spelled.split("%2F").any(is_dot) {
            return Err(TargetError::DotBesideEncodedSlash);
        }
    }
    Ok(Dot::None)
}

/// `true` when `text` holds `%2F` or `%2f`.
pub(crate) fn has_encoded_slash(text: &str) -> bool {
    text.contains("%2F") || text.contains("%2f")
}

/// RFC 3986 section 5.2.4 on an absolute path, refusing instead of clamping
/// when `..` would climb above the root.
fn remove_dot_segments(path: String) -> Result<String, TargetError> {
    let body = &path[1..];
    let mut has_dots = false;
    for segment in body.split('/') {
        if !matches!(classify(segment)?, Dot::None) {
            has_dots = true;
        }
    }
    if !has_dots {
        return Ok(path);
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = body.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let dot = classify(segment)?;
        let is_dot = !matches!(dot, Dot::None);
        match dot {
            Dot::None => kept.push(segment),
            Dot::Current => {}
            Dot::Parent => {
                if kept.pop().is_none() {
                    return Err(TargetError::EscapesRoot);
                }
            }
        }
        // A final `.` or `..` still names a directory: `/a/b/..` is `/a/`.
        if last && is_dot {
            kept.push("");
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in kept {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> String {
        normalize_path(raw).unwrap_or_else(|e| panic!("{raw:?}: {e}"))
    }

    #[test]
    fn plain_paths_are_unchanged() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "//",
            "/a//b",
            "/v1/x.json",
            "/a:b@c!$&'()*+,;=",
        ] {
            assert_eq!(norm(p), p);
        }
    }

    #[test]
    fn dot_segments_resolve() {
        assert_eq!(norm("/v1/repos/acme/../evil"), "/v1/repos/evil");
        assert_eq!(norm("/a/./b"), "/a/b");
        assert_eq!(norm("/a/b/."), "/a/b/");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a/.."), "/");
        assert_eq!(norm("/."), "/");
        assert_eq!(norm("/./a"), "/a");
        assert_eq!(norm("/a//../b"), "/a/b");
        assert_eq!(norm("/a/.../b"), "/a/.../b");
        assert_eq!(norm("/a/..b/.c"), "/a/..b/.c");
    }

    #[test]
    fn encoded_dots_resolve_too() {
        assert_eq!(norm("/a/b/%2e%2e/c"), "/a/c");
        assert_eq!(norm("/a/b/%2E%2E/c"), "/a/c");
        assert_eq!(norm("/a/b/.%2e/c"), "/a/c");
        assert_eq!(norm("/a/b/%2e./c"), "/a/c");
        assert_eq!(norm("/a/%2e/c"), "/a/c");
        assert_eq!(norm("/a/b/%2e%2e"), "/a/");
        // Double encoding is a literal `%2e` for everyone, not a dot.
        assert_eq!(norm("/a/%252e%252e/c"), "/a/%252e%252e/c");
    }

    #[test]
    fn climbing_above_root_is_refused() {
        for bad in [
            "/..",
            "/../x",
            "/a/../..",
            "/a/../../b",
            "/%2e%2e/x",
            "/%2E./x",
            "/./../x",
        ] {
            assert_eq!(
                normalize_path(bad),
                Err(TargetError::EscapesRoot),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn escapes_are_canonical() {
        assert_eq!(norm("/%41"), "/A");
        assert_eq!(norm("/%7e%5F%2D"), "/~_-");
        assert_eq!(norm("/a%3ab"), "/a%3Ab");
        assert_eq!(norm("/a%3Ab"), "/a%3Ab");
        assert_eq!(norm("/%25"), "/%25");
        assert_eq!(norm("/a b"), "/a%20b");
        assert_eq!(norm("/é"), "/%C3%A9");
        assert_eq!(norm("/{x}|[y]^`\"<>"), "/%7Bx%7D%7C%5By%5D%5E%60%22%3C%3E");
    }

    #[test]
    fn ambiguous_bytes_are_refused() {
        let cases = [
            ("/a%2fb", TargetError::EncodedSlash),
            ("/a%2Fb", TargetError::EncodedSlash),
            ("/a\\b", TargetError::Backslash),
            ("/a%5cb", TargetError::Backslash),
            ("/a%5Cb", TargetError::Backslash),
            ("/a%00b", TargetError::Nul),
            ("/a\0b", TargetError::Nul),
            ("/a%0d%0aX", TargetError::ControlChar),
            ("/a\tb", TargetError::ControlChar),
            ("/a%7f", TargetError::ControlChar),
            ("/a%zz", TargetError::InvalidEscape),
            ("/a%4", TargetError::InvalidEscape),
            ("/a%", TargetError::InvalidEscape),
            ("/a%+1", TargetError::InvalidEscape),
            ("/a?x=1", TargetError::QueryOrFragment),
            ("/a#f", TargetError::QueryOrFragment),
            ("a/b", TargetError::PathNotAbsolute),
            ("", TargetError::PathNotAbsolute),
            ("*", TargetError::PathNotAbsolute),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_path(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn dot_segments_with_parameters_are_refused() {
        for bad in [
            "/public/..;/admin",
            "/a/.;x/b",
            "/a/%2e%2e;/b",
            "/a/..%3b/b",
            "/a/..%3B",
        ] {
            assert_eq!(
                normalize_path(bad),
                Err(TargetError::DotSegmentParams),
                "{bad:?}"
            );
        }
        assert_eq!(norm("/a/b;v=1/c"), "/a/b;v=1/c");
    }

    #[test]
    fn normalisation_is_idempotent() {
        for raw in ["/a/%2e%2e/b%3a/%41/", "/x y/é", "/a/./b/../c//d"] {
            let once = norm(raw);
            assert_eq!(norm(&once), once);
        }
    }
}
