//! Response-side scrubbing: what flows back to the agent.
//!
//! Runs on every response header and body chunk before the agent sees it.
//! Every credential value in play for the task (and the task token) is
//! masked, in the forms an upstream is likely to echo it:
//!
//! - raw;
//! - base64, standard and URL-safe, padded or not, at any alignment inside a
//!   larger blob (`base64("Authorization: Bearer <secret>")`);
//! - percent-encoded, upper- and lowercase hex, for the common encoder styles;
//! - JSON-escaped (`\"`, `\\`, `\/`, control characters, `\uXXXX` for
//!   non-ASCII and HTML-sensitive characters).
//!
//! Secrets shorter than eight bytes are matched raw only (see
//! [`MIN_ENCODED_LEN`] for why). Masking replaces every matched byte with `*`,
//! so lengths — and `Content-Length` — stay valid. Base64 forms inside
//! MIME-wrapped (line-broken) blobs and hex encodings are not recognised.
//!
//! Overlapping occurrences (a secret that overlaps itself, two secrets that
//! share bytes, one secret inside another) are all masked: the search reports
//! every match, overlapping ones included, on the unmodified bytes, and the
//! union of them is masked. A leftmost-longest search would skip a match that
//! starts inside an earlier one and leave part of it readable.

mod sample;
mod stream;
mod variants;

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};

pub use stream::StreamScrubber;
pub use variants::MIN_ENCODED_LEN;

/// Up to this many needle bytes in total the matcher is a DFA.
const DFA_NEEDLE_BYTES: usize = 16 << 10;

/// Masks a fixed set of secrets. Built once per set of secrets (per task and
/// credential generation), then shared by every response of that set.
pub struct Scrubber {
    automaton: Option<AhoCorasick>,
    /// Which stretches of a haystack the automaton need read, when the
    /// needles are long enough for sampling to pay (see [`sample`]).
    sampler: Option<sample::Sampler>,
    needles: usize,
    max_needle_len: usize,
    /// Every needle, sorted: what a streamed body's tail is compared with
    /// to know how much of it could still begin one.
    sorted: Vec<variants::Needle>,
    /// The bytes some needle starts with.
    first_bytes: [bool; 256],
}

impl Scrubber {
    /// Builds the matcher for `secrets` and all their encoded forms. Empty
    /// secrets are ignored; a scrubber without any secret changes nothing.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Scrubber {
        Scrubber::build(secrets, DFA_NEEDLE_BYTES)
    }

    /// Like [`Scrubber::new`], but always with the compact matcher: for
    /// scrubbers kept per connection, where memory matters more than the
    /// last bit of speed.
    pub fn compact<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Scrubber {
        Scrubber::build(secrets, 0)
    }

    fn build<'a>(secrets: impl IntoIterator<Item = &'a [u8]>, dfa_limit: usize) -> Scrubber {
        let mut needles: Vec<variants::Needle> =
            secrets.into_iter().flat_map(variants::all).collect();
        needles.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
        needles.dedup_by(|a, b| a.as_slice() == b.as_slice());
        let max_needle_len = needles.iter().map(|n| n.len()).max().unwrap_or(0);
        let total: usize = needles.iter().map(|n| n.len()).sum();
        // A DFA is fastest, but its table grows with states x byte classes:
        // fine for tokens, megabytes for a PEM key in all its encodings.
        let kind = if total <= dfa_limit {
            AhoCorasickKind::DFA
        } else {
            AhoCorasickKind::ContiguousNFA
        };
        let sampler =
            sample::Sampler::new(&needles.iter().map(|n| n.as_slice()).collect::<Vec<_>>());
        let automaton = (!needles.is_empty()).then(|| {
            AhoCorasick::builder()
                .match_kind(MatchKind::Standard)
                .kind(Some(kind))
                // With a sampler, the automaton reads only short stretches
                // where a needle may start: there is nothing to skip.
                .prefilter(sampler.is_none() && prefilter_pays(&needles))
                .build(needles.iter().map(|n| n.as_slice()))
                .expect("credential-sized needles always fit an automaton")
        });
        let mut first_bytes = [false; 256];
        for needle in &needles {
            first_bytes[usize::from(needle[0])] = true;
        }
        Scrubber {
            automaton,
            sampler,
            needles: needles.len(),
            max_needle_len,
            sorted: needles,
            first_bytes,
        }
    }

    /// `true` when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.automaton.is_none()
    }

    /// The longest byte string searched for.
    pub fn max_needle_len(&self) -> usize {
        self.max_needle_len
    }

    /// How many bytes at the end of `hay` could still begin a needle: the
    /// length of its longest suffix that is a proper prefix of some needle
    /// (0 when none is). A streaming scrubber holds back exactly these, so a
    /// needle split across chunks is caught and nothing else waits.
    pub fn open_prefix_len(&self, hay: &[u8]) -> usize {
        let longest = self.max_needle_len.saturating_sub(1).min(hay.len());
        for start in hay.len() - longest..hay.len() {
            if !self.first_bytes[usize::from(hay[start])] {
                continue;
            }
            let suffix = &hay[start..];
            // The needles that start with `suffix` sort right at or after it.
            // The first of them may be `suffix` itself (a whole needle, already
            // matched); the next is then the shortest longer one, if any.
            let at = self
                .sorted
                .partition_point(|needle| needle.as_slice() < suffix);
            let open = self.sorted[at..]
                .iter()
                .take(2)
                .any(|needle| needle.len() > suffix.len() && needle.starts_with(suffix));
            if open {
                return suffix.len();
            }
        }
        0
    }

    /// Overwrites every occurrence of every needle in `buf` with `*`,
    /// overlapping occurrences included. Returns how many occurrences were
    /// masked.
    pub fn scrub_in_place(&self, buf: &mut [u8]) -> usize {
        let (spans, count) = self.find_all(buf, 0);
        for span in spans {
            buf[span].fill(b'*');
        }
        count
    }

    /// Masks every occurrence in `data`: the same bytes back when there is
    /// none, a masked copy otherwise. Returns how many were masked.
    pub fn scrub_bytes(&self, data: Bytes) -> (Bytes, usize) {
        let (spans, count) = self.find_all(&data, 0);
        if spans.is_empty() {
            return (data, count);
        }
        let mut masked = BytesMut::from(&data[..]);
        for span in spans {
            masked[span].fill(b'*');
        }
        (masked.freeze(), count)
    }

    /// Scrubs every header value (names are left alone); returns how many
    /// occurrences were masked.
    pub fn scrub_headers(&self, headers: &mut HeaderMap) -> usize {
        scrub_headers_with([self], headers)
    }

    /// Whether some needle occurs in `hay`.
    fn is_match(&self, hay: &[u8]) -> bool {
        let Some(automaton) = &self.automaton else {
            return false;
        };
        match &self.sampler {
            None => automaton.is_match(hay),
            Some(sampler) => sampler
                .stretches(hay)
                .any(|stretch| automaton.is_match(Input::new(hay).range(stretch))),
        }
    }

    /// The exact pass: every header named by a needle goes, every value
    /// holding one is masked. Returns how many occurrences were masked.
    fn scrub_each_header(&self, headers: &mut HeaderMap) -> usize {
        // A header *name* can carry a secret too; such a header is dropped
        // whole, since no mask keeps it meaningful.
        let named: Vec<http::HeaderName> = headers
            .keys()
            .filter(|name| self.is_match(name.as_str().as_bytes()))
            .cloned()
            .collect();
        let mut count = named.len();
        for name in named {
            headers.remove(&name);
        }
        for value in headers.values_mut() {
            if !self.is_match(value.as_bytes()) {
                continue;
            }
            let mut bytes = value.as_bytes().to_vec();
            count += self.scrub_in_place(&mut bytes);
            // Masking only writes '*', so the bytes stay a valid value; were
            // that ever not so, an empty value beats leaking the secret.
            let mut masked =
                HeaderValue::from_bytes(&bytes).unwrap_or_else(|_| HeaderValue::from_static(""));
            masked.set_sensitive(value.is_sensitive());
            *value = masked;
        }
        count
    }

    /// A scrubber for one streamed body.
    pub fn stream(self: &Arc<Self>) -> StreamScrubber {
        StreamScrubber::new(Arc::clone(self))
    }

    /// The union of every match in `hay` that ends after `counted_after`, as
    /// sorted disjoint ranges, and how many such matches there were. Merging
    /// as matches arrive keeps memory proportional to the disjoint regions,
    /// not to the matches (a self-overlapping needle matches at every byte of
    /// a long run).
    fn find_all(&self, hay: &[u8], counted_after: usize) -> (Vec<Range<usize>>, usize) {
        let Some(automaton) = &self.automaton else {
            return (Vec::new(), 0);
        };
        let mut spans: Vec<Range<usize>> = Vec::new();
        let mut count = 0;
        // Every match lies inside one stretch, and the stretches come in
        // order without touching, so matches still arrive in order of end.
        let stretches: Box<dyn Iterator<Item = Range<usize>>> = match &self.sampler {
            Some(sampler) => Box::new(sampler.stretches(hay)),
            None => Box::new(std::iter::once(0..hay.len())),
        };
        let found = stretches
            .flat_map(|stretch| automaton.find_overlapping_iter(Input::new(hay).range(stretch)));
        // Overlapping matches arrive in order of their end, so a new match
        // can only merge with the most recent spans.
        for found in found {
            if found.end() <= counted_after {
                continue;
            }
            count += 1;
            let mut span = found.range();
            while let Some(last) = spans.last() {
                if span.start > last.end {
                    break;
                }
                span.start = span.start.min(last.start);
                span.end = span.end.max(last.end);
                spans.pop();
            }
            spans.push(span);
        }
        (spans, count)
    }
}

/// Whether a prefilter is worth having. It skips ahead to a rare byte of
/// some needle and runs the automaton from there; with a needle made only of
/// bytes that are common in text (a lowercase-and-digits key) it stops at
/// nearly every byte, each stop costing many times the plain automaton step
/// it was meant to save. Only a choice of speed: matches are the same.
fn prefilter_pays(needles: &[variants::Needle]) -> bool {
    fn common_in_text(b: u8) -> bool {
        b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(
                b,
                b' ' | b'-' | b'.' | b',' | b':' | b';' | b'/' | b'"' | b'=' | b'\n'
            )
    }
    needles
        .iter()
        .all(|needle| needle.iter().any(|&b| !common_in_text(b)))
}

/// Scrubs every header value with each of `scrubbers` in turn, as
/// [`Scrubber::scrub_headers`] does with one; returns how many occurrences
/// were masked.
///
/// Names and values are joined once and each automaton searches the joined
/// bytes, instead of one search per name and value per scrubber: a search
/// has a fixed cost that dominates for strings this short, and almost no
/// response carries a secret in its headers. Anything found inside one name
/// or value is also found in the joined bytes, so "no match" there is
/// certain; a match may come from across a join and only sends that scrubber
/// to the exact pass. After one exact pass the joined bytes may be stale (a
/// mask is bytes a later needle could match), so every later scrubber takes
/// the exact pass too.
pub fn scrub_headers_with<'a, I>(scrubbers: I, headers: &mut HeaderMap) -> usize
where
    I: IntoIterator<Item = &'a Scrubber>,
    I::IntoIter: Clone,
{
    let scrubbers = scrubbers.into_iter();
    if scrubbers.clone().all(|s| s.automaton.is_none()) {
        return 0;
    }
    let total: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 2)
        .sum();
    // Most responses' headers fit on the stack.
    let mut small = [0u8; 1024];
    let mut large = Vec::new();
    let joined: &mut [u8] = if total <= small.len() {
        &mut small[..total]
    } else {
        large.resize(total, 0);
        &mut large
    };
    let mut at = 0;
    for (name, value) in headers.iter() {
        for part in [name.as_str().as_bytes(), value.as_bytes()] {
            joined[at..at + part.len()].copy_from_slice(part);
            joined[at + part.len()] = b'\n';
            at += part.len() + 1;
        }
    }
    let mut count = 0;
    let mut searched_only = true; // no exact pass yet: `joined` is current
    for scrubber in scrubbers {
        if scrubber.is_empty() || searched_only && !scrubber.is_match(joined) {
            continue;
        }
        searched_only = false;
        count += scrubber.scrub_each_header(headers);
    }
    if !searched_only {
        // The copy may hold a secret the headers no longer show.
        zeroize::Zeroize::zeroize(joined);
    }
    count
}

impl fmt::Debug for Scrubber {
    /// Counts only: the automaton holds the secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("needles", &self.needles)
            .field("max_needle_len", &self.max_needle_len)
            .finish()
    }
}

#[cfg(test)]
mod tests;
