//! Scrubbing a body that arrives in chunks.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::Scrubber;

/// Scrubs one streamed body. Holds back only the bytes at the end of what it
/// has seen that could still begin a needle ([`Scrubber::open_prefix_len`]),
/// so a needle split across chunks is still whole when it is searched for
/// and everything else goes on at once; the output, concatenated, is exactly
/// what [`Scrubber::scrub_in_place`] makes of the whole body.
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
    pub fn push(&mut self, chunk: Bytes) -> (Bytes, usize) {
        if self.pending.is_empty() {
            // Nearly every chunk of a body: nothing held, nothing to mask.
            // What is ready then goes on as the chunk's own bytes, uncopied.
            let (spans, _) = self.scrubber.find_all(&chunk, 0);
            if spans.is_empty() {
                let ready = chunk.len() - self.scrubber.open_prefix_len(&chunk);
                self.pending.extend_from_slice(&chunk[ready..]);
                return (chunk.slice(..ready), 0);
            }
        }
        self.take(&chunk, None)
    }

    /// How many bytes are held back, waiting for the next chunk.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// Feeds the chunk that ends the body: returns everything left to emit,
    /// scrubbed, and how many new occurrences were masked. A body that
    /// arrives whole is scrubbed in one pass, without holding anything back.
    pub fn push_last(&mut self, chunk: Bytes) -> (Bytes, usize) {
        if self.pending.is_empty() {
            return self.scrubber.scrub_bytes(chunk);
        }
        self.take(&chunk, Some(0))
    }

    /// Appends `chunk` and emits all but the last `holdback` pending bytes
    /// (by default, those that could still begin a needle).
    fn take(&mut self, chunk: &[u8], holdback: Option<usize>) -> (Bytes, usize) {
        let held = self.pending.len();
        self.pending.extend_from_slice(chunk);
        // A match that ends inside the held bytes was found, counted and
        // recorded when those bytes first arrived.
        let (spans, count) = self.scrubber.find_all(&self.pending, held);
        self.pending_masks.extend(spans);
        let holdback = holdback.unwrap_or_else(|| self.scrubber.open_prefix_len(&self.pending));
        let ready = self.pending.len() - holdback;
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
