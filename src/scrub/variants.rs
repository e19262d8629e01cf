//! The encoded forms of a secret that a response may carry.
//!
//! An upstream (or an error page, or an echo endpoint) may return a credential
//! it received in some encoded form. Each function here appends the byte
//! strings to look for; the caller deduplicates.

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use zeroize::Zeroizing;

/// A needle; zeroized when the set of variants is dropped.
pub(crate) type Needle = Zeroizing<Vec<u8>>;

/// Secrets shorter than this are matched raw only. Their encoded cores would
/// be a handful of characters (a 4-byte secret has 4-character base64 cores)
/// that occur by chance in any base64 or percent-encoded payload, so masking
/// them would corrupt ordinary responses; and a value that short is not a
/// credential worth hiding in encoded form.
pub const MIN_ENCODED_LEN: usize = 8;

/// Every form of `secret` to mask: raw; and, from [`MIN_ENCODED_LEN`] bytes
/// on, base64 (both alphabets, every alignment), percent-encoded and
/// JSON-escaped.
pub(crate) fn all(secret: &[u8]) -> Vec<Needle> {
    let mut out = Vec::new();
    if secret.is_empty() {
        return out;
    }
    push(&mut out, Zeroizing::new(secret.to_vec()));
    if secret.len() < MIN_ENCODED_LEN {
        return out;
    }
    for core in base64_cores(secret) {
        push(&mut out, Zeroizing::new(url_safe(&core)));
        // A standard-alphabet blob may itself be percent-encoded or sit in a
        // JSON string whose writer escapes '/'.
        for upper in [true, false] {
            push(&mut out, percent(&core, PercentStyle::STRICT, upper));
        }
        push(&mut out, Zeroizing::new(escape_slashes(&core)));
        push(&mut out, core);
    }
    for style in PercentStyle::ALL {
        for upper in [true, false] {
            push(&mut out, percent(secret, style, upper));
        }
    }
    for style in JsonStyle::ALL {
        for upper in [true, false] {
            push(&mut out, json(secret, style, upper));
        }
    }
    out
}

fn push(out: &mut Vec<Needle>, needle: Needle) {
    if !needle.is_empty() && !out.iter().any(|n| **n == *needle) {
        out.push(needle);
    }
}

/// For each of the three byte alignments, the standard-alphabet base64
/// characters that depend on `secret` alone. Wherever the secret sits inside
/// a larger base64 blob, one of these appears verbatim: the characters at the
/// edges, which mix in neighbouring bytes, are left out.
fn base64_cores(secret: &[u8]) -> Vec<Needle> {
    (0..3)
        .map(|skew: usize| {
            let mut shifted = Zeroizing::new(vec![0u8; skew]);
            shifted.extend_from_slice(secret);
            let encoded = Zeroizing::new(STANDARD_NO_PAD.encode(&*shifted));
            // Character j covers bits 6j..6j+6 of the shifted input; keep those
            // entirely inside the secret's bits 8*skew..8*(skew+len).
            let first = (8 * skew).div_ceil(6);
            let end = 8 * (skew + secret.len()) / 6;
            Zeroizing::new(encoded.as_bytes()[first..end].to_vec())
        })
        .collect()
}

fn url_safe(standard: &[u8]) -> Vec<u8> {
    standard
        .iter()
        .map(|b| match b {
            b'+' => b'-',
            b'/' => b'_',
            other => *other,
        })
        .collect()
}

fn escape_slashes(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 4);
    for b in text {
        if *b == b'/' {
            out.push(b'\\');
        }
        out.push(*b);
    }
    out
}

/// Which bytes a percent-encoder leaves alone. Encoders differ; these cover
/// the common ones (RFC 3986 strict, Python `quote`, JavaScript
/// `encodeURIComponent`, form encoding).
#[derive(Debug, Clone, Copy)]
struct PercentStyle {
    keep_slash: bool,
    plus_for_space: bool,
    keep_js_marks: bool,
}

impl PercentStyle {
    /// Only unreserved characters (`A-Za-z0-9-._~`) stay as they are.
    const STRICT: PercentStyle = PercentStyle {
        keep_slash: false,
        plus_for_space: false,
        keep_js_marks: false,
    };

    const ALL: [PercentStyle; 8] = {
        let mut all = [PercentStyle::STRICT; 8];
        let mut i = 0;
        while i < 8 {
            all[i] = PercentStyle {
                keep_slash: i & 1 != 0,
                plus_for_space: i & 2 != 0,
                keep_js_marks: i & 4 != 0,
            };
            i += 1;
        }
        all
    };
}

fn percent(secret: &[u8], style: PercentStyle, upper: bool) -> Needle {
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() * 3));
    for &b in secret {
        let kept = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (style.keep_slash && b == b'/')
            || (style.keep_js_marks && matches!(b, b'!' | b'\'' | b'(' | b')' | b'*'));
        if kept {
            out.push(b);
        } else if style.plus_for_space && b == b' ' {
            out.push(b'+');
        } else {
            out.push(b'%');
            out.extend_from_slice(&hex_byte(b, upper));
        }
    }
    out
}

/// Which characters a JSON writer escapes beyond the mandatory `"`, `\` and
/// control characters: `/` (PHP), everything non-ASCII (Python's default),
/// `<`, `>`, `&`, U+2028 and U+2029 (Go's HTML-safe default).
#[derive(Debug, Clone, Copy)]
struct JsonStyle {
    escape_slash: bool,
    ascii_only: bool,
    html_safe: bool,
}

impl JsonStyle {
    const ALL: [JsonStyle; 8] = {
        let mut all = [JsonStyle {
            escape_slash: false,
            ascii_only: false,
            html_safe: false,
        }; 8];
        let mut i = 0;
        while i < 8 {
            all[i] = JsonStyle {
                escape_slash: i & 1 != 0,
                ascii_only: i & 2 != 0,
                html_safe: i & 4 != 0,
            };
            i += 1;
        }
        all
    };
}

/// `secret` as it appears inside a JSON string. Bytes that are not UTF-8 are
/// kept as they are: no writer can express them otherwise.
fn json(secret: &[u8], style: JsonStyle, upper: bool) -> Needle {
    let mut out = Zeroizing::new(Vec::with_capacity(secret.len() + 8));
    for chunk in secret.utf8_chunks() {
        for ch in chunk.valid().chars() {
            let short = match ch {
                '"' => Some(b'"'),
                '\\' => Some(b'\\'),
                '/' if style.escape_slash => Some(b'/'),
                '\n' => Some(b'n'),
                '\r' => Some(b'r'),
                '\t' => Some(b't'),
                '\u{8}' => Some(b'b'),
                '\u{c}' => Some(b'f'),
                _ => None,
            };
            let as_unicode = ch < ' '
                || (style.ascii_only && !ch.is_ascii())
                || (style.html_safe && matches!(ch, '<' | '>' | '&' | '\u{2028}' | '\u{2029}'));
            if let Some(letter) = short {
                out.extend_from_slice(&[b'\\', letter]);
            } else if as_unicode {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    out.extend_from_slice(b"\\u");
                    out.extend_from_slice(&hex_byte((*unit >> 8) as u8, upper));
                    out.extend_from_slice(&hex_byte(*unit as u8, upper));
                }
            } else {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
            }
        }
        out.extend_from_slice(chunk.invalid());
    }
    out
}

fn hex_byte(b: u8, upper: bool) -> [u8; 2] {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    [digits[usize::from(b >> 4)], digits[usize::from(b & 15)]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn found_in(needles: &[Needle], hay: &[u8]) -> bool {
        needles.iter().any(|n| contains(hay, n))
    }

    #[test]
    fn short_and_empty_secrets() {
        assert!(all(b"").is_empty());
        let needles = all(b"short");
        assert_eq!(needles.len(), 1);
        assert_eq!(&**needles[0], b"short");
    }

    #[test]
    fn a_base64_core_is_found_at_every_offset_in_a_larger_blob() {
        let secret = b"test-secret-\xfb\xff/+value";
        let needles = all(secret);
        for before in 0..6 {
            for after in 0..4 {
                let mut blob = vec![b'A'; before];
                blob.extend_from_slice(b"Authorization: Bearer ");
                blob.extend_from_slice(secret);
                blob.extend(std::iter::repeat_n(b'z', after));
                for encoded in [
                    STANDARD.encode(&blob),
                    STANDARD_NO_PAD.encode(&blob),
                    URL_SAFE_NO_PAD.encode(&blob),
                ] {
                    assert!(found_in(&needles, encoded.as_bytes()), "{before} {after}");
                }
            }
        }
    }

    #[test]
    fn cores_exclude_the_edge_characters() {
        // Two different neighbours must not change whether a core matches.
        let secret = b"test-secret-01";
        for (skew, core) in base64_cores(secret).iter().enumerate() {
            for fill in [0u8, 0xff] {
                let mut blob = vec![fill; skew];
                blob.extend_from_slice(secret);
                blob.push(fill);
                let encoded = STANDARD.encode(&blob);
                assert!(contains(encoded.as_bytes(), core));
            }
        }
    }

    #[test]
    fn percent_forms() {
        let needles = all(b"test secret/+=!");
        for form in [
            "test%20secret%2F%2B%3D%21",
            "test%20secret%2f%2b%3d%21",
            "test%20secret/%2B%3D%21",
            "test+secret%2F%2B%3D%21",
            "test%20secret%2F%2B%3D!",
        ] {
            assert!(found_in(&needles, form.as_bytes()), "{form}");
        }
    }

    #[test]
    fn json_forms() {
        let needles = all("test\"secret\\/é<\u{1f600}\n".as_bytes());
        for form in [
            r#"test\"secret\\/é<😀\n"#,
            r#"test\"secret\\\/é<😀\n"#,
            r#"test\"secret\\/\u00e9<\ud83d\ude00\n"#,
            r#"test\"secret\\/\u00E9<\uD83D\uDE00\n"#,
            r#"test\"secret\\/é\u003c😀\n"#,
        ] {
            assert!(found_in(&needles, form.as_bytes()), "{form}");
        }
    }

    #[test]
    fn variants_are_unique_and_plain_secrets_have_few() {
        let needles = all(b"test-secret-plain0123");
        let mut sorted: Vec<&[u8]> = needles.iter().map(|n| n.as_slice()).collect();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), needles.len());
        // raw + three base64 cores; nothing else differs for an unreserved secret.
        assert_eq!(needles.len(), 4);
    }
}
