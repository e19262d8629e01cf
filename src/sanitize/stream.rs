//! Request bodies too large to hold, scanned as they flow.
//!
//! The body arrives in pieces. Each piece is scanned together with the end
//! of what came before it ([`CONTEXT`] bytes), so a secret split across
//! pieces is seen whole, in every view the buffered scan reads (raw,
//! form-urlencoded, JSON-escaped). A piece is passed on once nothing in it
//! could still be the start of a secret that the next piece completes: what
//! is held back is the trailing run of token characters (every secret form
//! is one: letters, digits and `-_.%\+/=`), and the whole of a match that
//! reaches the end of what has arrived, since it may still grow or turn out
//! to be none; and an unfinished line of a private key block (`-----BEGIN
//! RSA PRI`, which holds spaces). So a secret is found before its first byte goes on,
//! and ordinary data (JSON, NDJSON, binary) flows with little or no delay.
//!
//! Under a rule that blocks secrets a finding stops the body; under one that
//! strips them, the secret is masked with `*` in place (lengths are kept, so
//! a `Content-Length` stays true).

use std::collections::BTreeSet;

use bytes::Bytes;

use super::payload::body_matches;
use super::{Finding, FindingLocation};

/// Bytes already passed on that the next scan reads again, so a secret
/// split at a piece boundary is seen whole.
const CONTEXT: usize = 8 * 1024;

/// The longest trailing run of token characters held back; a longer run is
/// passed on but for its last `MAX_HOLD` bytes (no secret form is longer).
const MAX_HOLD: usize = 8 * 1024;

/// The longest match held open at the end of the body so far (a private key
/// block waiting for its `END` line). Past it the body is stopped.
const MAX_OPEN: usize = 64 * 1024;

/// The scan of one streamed request body.
#[derive(Debug)]
pub struct BodyStreamScan {
    /// `buf[..released]` has been passed on (context); the rest is held.
    buf: Vec<u8>,
    released: usize,
    strip: bool,
    masked: usize,
    found: BTreeSet<&'static str>,
}

/// Why a streamed body was stopped: its findings, by rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyStopped {
    /// What was found (one per rule), never the value.
    pub findings: Vec<Finding>,
    /// Set when the body was stopped because a match stayed open too long
    /// (under a stripping rule), not because a secret was confirmed.
    pub open_too_long: bool,
}

impl BodyStreamScan {
    /// A scan that stops the body on a finding, or masks it when `strip`.
    pub fn new(strip: bool) -> BodyStreamScan {
        BodyStreamScan {
            buf: Vec::new(),
            released: 0,
            strip,
            masked: 0,
            found: BTreeSet::new(),
        }
    }

    /// Adds the next `piece` and returns what may be passed on now (possibly
    /// nothing), or why the body must stop.
    pub fn push(&mut self, piece: &[u8]) -> Result<Bytes, BodyStopped> {
        self.buf.extend_from_slice(piece);
        self.release(false)
    }

    /// The body has ended: returns the rest, scanned to the end.
    pub fn finish(&mut self) -> Result<Bytes, BodyStopped> {
        self.release(true)
    }

    /// How many secrets were masked (under a stripping rule).
    pub fn masked(&self) -> usize {
        self.masked
    }

    /// The rules that fired so far, for the record.
    pub fn findings(&self) -> Vec<Finding> {
        self.found
            .iter()
            .map(|rule| Finding {
                rule,
                location: FindingLocation::Body,
            })
            .collect()
    }

    fn release(&mut self, last: bool) -> Result<Bytes, BodyStopped> {
        let end = self.buf.len();
        let hold_from = if last {
            end
        } else {
            let pending = &self.buf[self.released..];
            end - trailing_token_run(pending).max(open_key_header(pending))
        };
        let mut open_from = end;
        let mut open_rules = Vec::new();
        let mut confirmed = Vec::new();
        for (rule, span) in body_matches(&self.buf) {
            if span.end <= self.released {
                // Wholly in the context: handled when it was first seen.
                continue;
            }
            if !last && span.end >= hold_from {
                // It reaches into the trailing run, which the next piece may
                // extend (or, in a decoded view, finish an escape of): it may
                // still grow, or prove to be another rule or none. Hold it.
                open_from = open_from.min(span.start.max(self.released));
                open_rules.push(rule.id());
                continue;
            }
            confirmed.push((rule, span));
        }
        for (rule, _) in &confirmed {
            self.found.insert(rule.id());
        }
        if !confirmed.is_empty() && !self.strip {
            return Err(self.stopped(false));
        }
        if end - open_from > MAX_OPEN {
            self.found.extend(open_rules);
            return Err(self.stopped(true));
        }
        for (_, span) in &confirmed {
            let from = span.start.max(self.released);
            if self.buf[from..span.end].iter().any(|b| *b != b'*') {
                self.buf[from..span.end].fill(b'*');
                self.masked += 1;
            }
        }
        let keep = hold_from.min(open_from);
        let out = Bytes::copy_from_slice(&self.buf[self.released..keep]);
        self.released = keep;
        if self.released > CONTEXT {
            let drop = self.released - CONTEXT;
            self.buf.drain(..drop);
            self.released -= drop;
        }
        Ok(out)
    }

    fn stopped(&self, open_too_long: bool) -> BodyStopped {
        BodyStopped {
            findings: self.findings(),
            open_too_long,
        }
    }
}

/// The length of the run of token characters that ends `bytes`, at most
/// [`MAX_HOLD`].
fn trailing_token_run(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rev()
        .take(MAX_HOLD)
        .take_while(|b| b.is_ascii_alphanumeric() || b"-_.%\\+/=".contains(b))
        .count()
}

/// The length of the tail of `bytes` that is an unfinished line of a
/// private key block (`-----BEGIN ` or `-----END `, and label characters so
/// far), or 0: its label holds spaces, so the token run does not cover it.
fn open_key_header(bytes: &[u8]) -> usize {
    // A marker, a label of at most 64 characters, and the closing dashes.
    let window = &bytes[bytes.len().saturating_sub(11 + 64 + 5)..];
    let label_char =
        |b: &u8| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b' ' || *b == b'-';
    [&b"-----BEGIN "[..], b"-----END "]
        .iter()
        .filter_map(|marker| {
            let at = window.windows(marker.len()).rposition(|w| w == *marker)?;
            window[at + marker.len()..]
                .iter()
                .all(label_char)
                .then_some(window.len() - at)
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
