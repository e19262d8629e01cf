//! A sampling filter in front of the scrubber's automaton.
//!
//! A body is searched for every needle at every offset, and almost no body
//! holds one: the search is the cost of scrubbing a download. An automaton
//! reads every byte; its prefilters jump to a rare byte of some needle, which
//! on binary or base64 data (every byte as common as another, and the
//! needles' own alphabet) is nearly every other byte.
//!
//! Every needle is at least `shortest` bytes long, so every occurrence
//! covers, whole, one [`WINDOW`]-byte window starting at a multiple of
//! `stride = shortest - WINDOW + 1`, at most `shortest - WINDOW` bytes after
//! the occurrence starts. So the filter reads one window every `stride`
//! bytes and looks it up in a bit table of every window found in the first
//! `shortest` bytes of some needle. A window not in the table rules out
//! every occurrence that would cover it; one in the table (a real start or a
//! hash collision) marks the bytes an occurrence covering it could span,
//! and only those are handed to the automaton. Marked stretches that touch
//! are merged, so an occurrence lies inside one stretch, whole, and is found
//! exactly once.
//!
//! The filter only chooses what the automaton reads: whatever it is given,
//! the matches are the automaton's. Adversarial input (the needles' windows
//! at every stride) makes every byte marked and the search what it was
//! without the filter.

use std::ops::Range;

/// Bytes in one sampled window.
const WINDOW: usize = 4;

/// The largest bit table, as a power of two: 64 Kibit, 8 KiB, small enough
/// to stay in the first-level cache.
const MAX_TABLE_BITS: u32 = 16;

/// The table has at least this many bits per window it holds, so a window of
/// random bytes hits it (falsely) at most once in as many samples.
const BITS_PER_WINDOW: usize = 64;

/// Needles shorter than this make the stride too short to pay: the plain
/// automaton is used.
const SHORTEST_SAMPLED: usize = 8;

/// The windows every needle begins with, and how to sample a body for them.
pub(super) struct Sampler {
    /// Bytes from one sampled window to the next.
    stride: usize,
    /// How far before a sampled window an occurrence covering it may start.
    reach_back: usize,
    /// How far after a sampled window's start an occurrence covering it may end.
    reach_forward: usize,
    /// One bit per window hash: set when some needle has that window within
    /// its first `shortest` bytes.
    table: Box<[u64]>,
    /// log2 of the table's size in bits.
    table_bits: u32,
}

impl Sampler {
    /// The filter for `needles`, or `None` when it would not pay: a needle
    /// too short, or so many distinct windows that the largest table would
    /// mark most of any body.
    pub(super) fn new(needles: &[&[u8]]) -> Option<Sampler> {
        let shortest = needles.iter().map(|n| n.len()).min()?;
        let longest = needles.iter().map(|n| n.len()).max()?;
        if shortest < SHORTEST_SAMPLED {
            return None;
        }
        let reach_back = shortest - WINDOW;
        let mut windows: Vec<[u8; WINDOW]> = needles
            .iter()
            .flat_map(|needle| (0..=reach_back).map(|at| window(&needle[at..])))
            .collect();
        windows.sort_unstable();
        windows.dedup();
        let wanted = (windows.len() * BITS_PER_WINDOW)
            .next_power_of_two()
            .max(1024);
        let table_bits = wanted.trailing_zeros();
        if table_bits > MAX_TABLE_BITS {
            return None;
        }
        let mut table = vec![0u64; wanted / 64].into_boxed_slice();
        for window in windows {
            let slot = slot(window, table_bits);
            table[slot / 64] |= 1 << (slot % 64);
        }
        Some(Sampler {
            stride: reach_back + 1,
            reach_back,
            reach_forward: longest,
            table,
            table_bits,
        })
    }

    /// The stretches of `hay` that may hold an occurrence, in order, disjoint
    /// and not touching; every occurrence of a needle lies inside one.
    pub(super) fn stretches<'h>(
        &'h self,
        hay: &'h [u8],
    ) -> impl Iterator<Item = Range<usize>> + 'h {
        let mut at = 0;
        let mut open: Option<Range<usize>> = None;
        std::iter::from_fn(move || {
            while at + WINDOW <= hay.len() {
                let sampled = at;
                at += self.stride;
                let slot = slot(window(&hay[sampled..]), self.table_bits);
                if self.table[slot / 64] & (1 << (slot % 64)) == 0 {
                    continue;
                }
                let marked = sampled.saturating_sub(self.reach_back)
                    ..(sampled + self.reach_forward).min(hay.len());
                match &mut open {
                    Some(current) if marked.start <= current.end => current.end = marked.end,
                    _ => {
                        if let Some(done) = open.replace(marked) {
                            return Some(done);
                        }
                    }
                }
            }
            open.take()
        })
    }
}

/// The window at the start of `bytes` (which holds at least [`WINDOW`]).
fn window(bytes: &[u8]) -> [u8; WINDOW] {
    bytes[..WINDOW]
        .try_into()
        .expect("a window is WINDOW bytes")
}

/// The table slot of a window: a multiplicative hash of its bytes, its top
/// `table_bits` bits.
fn slot(window: [u8; WINDOW], table_bits: u32) -> usize {
    let hash = u32::from_le_bytes(window).wrapping_mul(0x9E37_79B1);
    (hash >> (32 - table_bits)) as usize
}
