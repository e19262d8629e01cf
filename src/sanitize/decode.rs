//! Undoing one layer of encoding so a secret hidden as `ghp%5F...` or
//! `sk-\u0061nt-...` is seen, and mapping what was found back to the raw bytes
//! so it can be redacted there.
//!
//! A decoder is a step function over "units": one raw escape sequence (or one
//! plain byte) and the 1–4 bytes it stands for. Decoding and mapping walk the
//! same units, so a range in the decoded text always maps to whole escape
//! sequences in the raw text.

use std::ops::Range;

/// One encoding layer credgate looks through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoding {
    /// `%XX` escapes; with `plus_is_space`, `+` is a space
    /// (`application/x-www-form-urlencoded`, query strings).
    Percent {
        /// Whether `+` stands for a space.
        plus_is_space: bool,
    },
    /// JSON string escapes: `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`,
    /// `\uXXXX` (with surrogate pairs).
    JsonEscape,
}

/// One decoded unit: the raw bytes it consumed end at `next`; `bytes[..len]`
/// is what they stand for.
struct Unit {
    next: usize,
    bytes: [u8; 4],
    len: usize,
}

impl Unit {
    fn plain(raw: &[u8], pos: usize) -> Unit {
        Unit {
            next: pos + 1,
            bytes: [raw[pos], 0, 0, 0],
            len: 1,
        }
    }

    fn byte(next: usize, byte: u8) -> Unit {
        Unit {
            next,
            bytes: [byte, 0, 0, 0],
            len: 1,
        }
    }
}

impl Decoding {
    /// Whether `raw` contains anything this layer would change; when not, the
    /// decoded text equals the raw text and scanning it again is wasted work.
    pub(crate) fn applies(self, raw: &[u8]) -> bool {
        match self {
            Decoding::Percent {
                plus_is_space: true,
            } => memchr::memchr2(b'%', b'+', raw).is_some(),
            Decoding::Percent {
                plus_is_space: false,
            } => memchr::memchr(b'%', raw).is_some(),
            Decoding::JsonEscape => memchr::memchr(b'\\', raw).is_some(),
        }
    }

    /// The decoded form of `raw`. Malformed escapes are kept as they are.
    pub(crate) fn decode(self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len());
        let mut pos = 0;
        while pos < raw.len() {
            let unit = self.step(raw, pos);
            out.extend_from_slice(&unit.bytes[..unit.len]);
            pos = unit.next;
        }
        out
    }

    /// Maps ranges of the decoded text (sorted, non-overlapping, non-empty) to
    /// the raw ranges that encode them, widened to whole escape sequences.
    pub(crate) fn map_to_raw(self, raw: &[u8], decoded: &[Range<usize>]) -> Vec<Range<usize>> {
        let mut out = Vec::with_capacity(decoded.len());
        let mut spans = decoded.iter().peekable();
        let mut open: Option<usize> = None;
        let (mut pos, mut offset) = (0, 0);
        while pos < raw.len() {
            let unit = self.step(raw, pos);
            let unit_end = offset + unit.len;
            while let Some(span) = spans.peek() {
                if open.is_none() {
                    if span.start >= unit_end {
                        break;
                    }
                    open = Some(pos);
                }
                if span.end > unit_end {
                    break;
                }
                out.extend(open.take().map(|start| start..unit.next));
                spans.next();
            }
            if spans.peek().is_none() {
                break;
            }
            pos = unit.next;
            offset = unit_end;
        }
        out
    }

    fn step(self, raw: &[u8], pos: usize) -> Unit {
        match self {
            Decoding::Percent { plus_is_space } => percent_step(raw, pos, plus_is_space),
            Decoding::JsonEscape => json_step(raw, pos),
        }
    }
}

/// Sorts ranges and joins those that overlap or touch.
pub(crate) fn merge(mut spans: Vec<Range<usize>>) -> Vec<Range<usize>> {
    spans.sort_unstable_by_key(|span| span.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    merged
}

fn percent_step(raw: &[u8], pos: usize, plus_is_space: bool) -> Unit {
    match raw[pos] {
        b'%' => match (hex(raw.get(pos + 1)), hex(raw.get(pos + 2))) {
            (Some(high), Some(low)) => Unit::byte(pos + 3, high << 4 | low),
            _ => Unit::plain(raw, pos),
        },
        b'+' if plus_is_space => Unit::byte(pos + 1, b' '),
        _ => Unit::plain(raw, pos),
    }
}

fn json_step(raw: &[u8], pos: usize) -> Unit {
    if raw[pos] != b'\\' {
        return Unit::plain(raw, pos);
    }
    let simple = match raw.get(pos + 1) {
        Some(b'"') => b'"',
        Some(b'\\') => b'\\',
        Some(b'/') => b'/',
        Some(b'b') => 0x08,
        Some(b'f') => 0x0c,
        Some(b'n') => b'\n',
        Some(b'r') => b'\r',
        Some(b't') => b'\t',
        Some(b'u') => return json_unicode(raw, pos).unwrap_or_else(|| Unit::plain(raw, pos)),
        _ => return Unit::plain(raw, pos),
    };
    Unit::byte(pos + 2, simple)
}

/// `\uXXXX`, or a `\uD8XX\uDCXX` surrogate pair, as UTF-8. A lone surrogate is
/// not a character and is left undecoded.
fn json_unicode(raw: &[u8], pos: usize) -> Option<Unit> {
    let unit_at = |at: usize| -> Option<u32> {
        if raw.get(at..at + 2)? != b"\\u" {
            return None;
        }
        raw.get(at + 2..at + 6)?
            .iter()
            .try_fold(0u32, |acc, b| Some(acc << 4 | u32::from(hex(Some(b))?)))
    };
    let first = unit_at(pos)?;
    let (code, next) = match first {
        0xD800..=0xDBFF => {
            let second = unit_at(pos + 6).filter(|c| (0xDC00..=0xDFFF).contains(c))?;
            (
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00),
                pos + 12,
            )
        }
        _ => (first, pos + 6),
    };
    let ch = char::from_u32(code)?;
    let mut bytes = [0u8; 4];
    let len = ch.encode_utf8(&mut bytes).len();
    Some(Unit { next, bytes, len })
}

fn hex(b: Option<&u8>) -> Option<u8> {
    let b = *b?;
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERCENT: Decoding = Decoding::Percent {
        plus_is_space: true,
    };

    #[test]
    fn percent_decoding() {
        assert_eq!(PERCENT.decode(b"a%5Fb%5fc+d"), b"a_b_c d");
        assert_eq!(
            Decoding::Percent {
                plus_is_space: false
            }
            .decode(b"a+b"),
            b"a+b"
        );
        // Malformed escapes stay as they are.
        assert_eq!(PERCENT.decode(b"100%"), b"100%");
        assert_eq!(PERCENT.decode(b"%zz%4"), b"%zz%4");
    }

    #[test]
    fn json_decoding() {
        let raw = br#"a\"b\\c\/d\n\u0041\u00e9\ud83d\ude00"#;
        assert_eq!(JSON.decode(raw), "a\"b\\c/d\nA\u{e9}\u{1f600}".as_bytes());
        // A lone surrogate and a bad escape are left alone.
        assert_eq!(JSON.decode(br"\ud800x\q"), br"\ud800x\q");
        assert_eq!(JSON.decode(br"end\"), br"end\");
    }

    const JSON: Decoding = Decoding::JsonEscape;

    #[test]
    fn applies_only_when_something_would_change() {
        assert!(!PERCENT.applies(b"plain"));
        assert!(PERCENT.applies(b"a+b"));
        assert!(!Decoding::Percent {
            plus_is_space: false
        }
        .applies(b"a+b"));
        assert!(JSON.applies(br"\n"));
        assert!(!JSON.applies(b"{}"));
    }

    #[test]
    fn mapping_covers_whole_escape_sequences() {
        let raw = b"x%41%42y%43z";
        // decoded: x A B y C z
        let mapped = PERCENT.map_to_raw(raw, &[1..3, 4..5]);
        assert_eq!(mapped, vec![1..7, 8..11]);

        let raw = br#"\u00e9ab"#; // decoded: [c3 a9] a b
        assert_eq!(JSON.map_to_raw(raw, &[1..3, 3..4]), vec![0..7, 7..8]);
    }

    #[test]
    fn merge_joins_overlapping_and_touching_ranges() {
        assert_eq!(merge(vec![5..8, 0..2, 1..3, 8..9]), vec![0..3, 5..9]);
    }

    #[test]
    fn mapping_two_spans_inside_one_unit() {
        let raw = br#"\ud83d\ude00"#; // four decoded bytes
        assert_eq!(JSON.map_to_raw(raw, &[0..1, 2..4]), vec![0..12, 0..12]);
    }
}
