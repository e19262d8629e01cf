//! Scrubbing a body that arrives in chunks.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Scrubber;

/// Scrubs one streamed body. Holds back the last `max_needle_len - 1` bytes
/// of what it has seen, so a needle split across chunks is still whole when
/// it is searched for; the output, concatenated, is exactly what
/// [`Scrubber::scrub_in_place`] makes of the whole body.
pub struct StreamScrubber {
    scrubber: Arc<Scrubber>,
    /// Received, not yet emitted, still unmasked: a later match may start in
    /// these bytes, and masking them early would hide it from the search.
    pending: BytesMut,
    /// Ranges of `pending` already known to lie inside a match.
    pending_masks: Vec<Range<usize>>,
}

impl StreamScrubber {
    pub(super) fn new(scrubber: Arc<Scrubber>) -> StreamScrubber {
        StreamScrubber {
            scrubber,
            pending: BytesMut::new(),
            pending_masks: Vec::new(),
        }
    }

    /// Feeds the next chunk. Returns the bytes now safe to emit (possibly
    /// empty) and how many new occurrences were masked.
    pub fn push(&mut self, chunk: &[u8]) -> (Bytes, usize) {
        let holdback = self.scrubber.max_needle_len().saturating_sub(1);
        self.take(chunk, holdback)
    }

    /// Feeds the chunk that ends the body: returns everything left to emit,
    /// scrubbed, and how many new occurrences were masked. A body that
    /// arrives whole is scrubbed in one pass, without holding anything back.
    pub fn push_last(&mut self, chunk: Bytes) -> (Bytes, usize) {
        if self.pending.is_empty() {
            return self.scrubber.scrub_bytes(chunk);
        }
        self.take(&chunk, 0)
    }

    /// Appends `chunk` and emits all but the last `holdback` pending bytes.
    fn take(&mut self, chunk: &[u8], holdback: usize) -> (Bytes, usize) {
        let held = self.pending.len();
        self.pending.extend_from_slice(chunk);
        // A match that ends inside the held bytes was found, counted and
        // recorded when those bytes first arrived.
        let (spans, count) = self.scrubber.find_all(&self.pending, held);
        self.pending_masks.extend(spans);
        let ready = self.pending.len().saturating_sub(holdback);
        (self.emit(ready), count)
    }

    /// End of body: returns the held-back tail, scrubbed, and the number of
    /// occurrences masked now (always 0: every match in the tail was counted
    /// by the push that completed it).
    pub fn finish(&mut self) -> (Bytes, usize) {
        let all = self.pending.len();
        (self.emit(all), 0)
    }

    /// Splits off the first `len` pending bytes, masked.
    fn emit(&mut self, len: usize) -> Bytes {
        let mut out = self.pending.split_to(len);
        self.pending_masks.retain_mut(|span| {
            if span.start < len {
                out[span.start..span.end.min(len)].fill(b'*');
            }
            if span.end <= len {
                return false;
            }
            *span = span.start.saturating_sub(len)..span.end - len;
            true
        });
        out.freeze()
    }
}

impl Drop for StreamScrubber {
    fn drop(&mut self) {
        // Held bytes may hold part of a secret, unmasked.
        self.pending.fill(0);
    }
}

impl fmt::Debug for StreamScrubber {
    /// Sizes only: the held bytes may contain part of a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamScrubber")
            .field("scrubber", &self.scrubber)
            .field("pending", &self.pending.len())
            .finish()
    }
}
