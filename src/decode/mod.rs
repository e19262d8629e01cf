//! Content codings of response bodies, decoded as a stream so the scrubber
//! can read what the agent would.
//!
//! credgate asks every upstream for `Accept-Encoding: identity`, but some
//! answer compressed anyway. A compressed body cannot be scanned for
//! credentials, so it is decoded on its way through, and sent on decoded.
//! Decoding is where a hostile upstream gets leverage (a few kilobytes can
//! inflate to gigabytes), so [`BodyDecoder`] never holds more than one piece
//! of output per stage, and stops at a total size and at a ratio of decoded
//! to encoded bytes.
//!
//! Pure logic: bytes in, pieces out, no I/O.

mod brotli;
mod flate;
mod zstd;

#[cfg(test)]
mod tests;

use bytes::Bytes;

use crate::reason::Reason;

/// The most output one step produces: a piece of the decoded body.
pub const PIECE: usize = 64 * 1024;

/// The most codings a body may carry on top of each other. Real servers
/// use one; a deeper stack only multiplies a bomb's leverage.
pub const MAX_STACK: usize = 2;

/// The ratio limit is judged only past this many decoded bytes: small,
/// very repetitive bodies (a JSON array of zeros) compress far better than
/// any sane limit, and are harmless.
pub const RATIO_FLOOR: u64 = 1 << 20;

/// A content coding credgate can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` (also `x-gzip`), RFC 1952; concatenated members are one body.
    Gzip,
    /// `deflate`: zlib-wrapped (RFC 1950), or raw deflate as some servers
    /// send it and browsers accept.
    Deflate,
    /// `br`, RFC 7932.
    Brotli,
    /// `zstd`, RFC 8878 (windows up to 8 MiB, as RFC 9659 asks of HTTP).
    Zstd,
}

impl Coding {
    /// The coding's token as it appears in `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// Why a body could not be decoded. Never carries body bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A coding credgate does not decode.
    #[error("the upstream answered with Content-Encoding {0:?}, which credgate cannot decode")]
    Unsupported(String),
    /// More codings on top of each other than [`MAX_STACK`].
    #[error("the upstream answered with {0} content codings stacked ({1}); credgate decodes at most {MAX_STACK}")]
    TooDeep(usize, String),
    /// The encoded data is not valid for its coding.
    #[error("the {coding} body is corrupt: {what}")]
    Corrupt {
        /// The coding token.
        coding: &'static str,
        /// What is wrong, in words.
        what: String,
    },
    /// The body ended inside the encoded stream.
    #[error("the {0} body ended before its encoded stream did")]
    Truncated(&'static str),
    /// The decoded body grew past `upstream.max_decoded_body`.
    #[error("the decoded body exceeds upstream.max_decoded_body ({0} bytes)")]
    TooLarge(u64),
    /// The body decodes to more than `upstream.max_decode_ratio` times its
    /// encoded size.
    #[error(
        "the body decodes to more than upstream.max_decode_ratio ({0}) times its encoded size"
    )]
    RatioExceeded(u64),
}

impl DecodeError {
    /// The stable reason for this failure.
    pub fn reason(&self) -> Reason {
        match self {
            DecodeError::TooLarge(_) | DecodeError::RatioExceeded(_) => Reason::ResponseTooLarge,
            _ => Reason::ResponseUnscannable,
        }
    }

    fn corrupt(coding: Coding, what: impl Into<String>) -> Self {
        DecodeError::Corrupt {
            coding: coding.token(),
            what: what.into(),
        }
    }
}

/// Reads the codings of `Content-Encoding` header lines, in the order they
/// were applied (decode in reverse). `identity` is no coding and is
/// dropped; an empty list means the body is not encoded.
pub fn parse_codings<'a>(
    lines: impl Iterator<Item = &'a [u8]>,
) -> Result<Vec<Coding>, DecodeError> {
    let mut codings = Vec::new();
    let mut named = Vec::new();
    for token in lines.flat_map(|line| line.split(|b| *b == b',')) {
        let token = token.trim_ascii();
        let coding = if token.is_empty() || token.eq_ignore_ascii_case(b"identity") {
            continue;
        } else if token.eq_ignore_ascii_case(b"gzip") || token.eq_ignore_ascii_case(b"x-gzip") {
            Coding::Gzip
        } else if token.eq_ignore_ascii_case(b"deflate") {
            Coding::Deflate
        } else if token.eq_ignore_ascii_case(b"br") {
            Coding::Brotli
        } else if token.eq_ignore_ascii_case(b"zstd") {
            Coding::Zstd
        } else {
            return Err(DecodeError::Unsupported(
                String::from_utf8_lossy(token).into_owned(),
            ));
        };
        named.push(coding.token());
        codings.push(coding);
    }
    if codings.len() > MAX_STACK {
        return Err(DecodeError::TooDeep(codings.len(), named.join(", ")));
    }
    Ok(codings)
}

/// How far a body may decode.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// The most decoded bytes in all.
    pub max_decoded: u64,
    /// The most decoded bytes per encoded byte, past [`RATIO_FLOOR`].
    pub max_ratio: u64,
}

/// One coding's decoder: takes encoded bytes, gives decoded ones.
trait Stage: Send {
    /// Decodes from the front of `input` into `out` (empty, with at least
    /// [`PIECE`] capacity), adding at most [`PIECE`] bytes; returns how many
    /// input bytes it consumed. Consuming and producing nothing means it
    /// needs more input than `input` holds.
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError>;

    /// Whether the encoded stream has ended where a stream may end.
    fn complete(&self) -> bool;

    /// The coding, for errors.
    fn coding(&self) -> Coding;
}

fn stage(coding: Coding) -> Box<dyn Stage> {
    match coding {
        Coding::Gzip => Box::new(flate::Flate::gzip()),
        Coding::Deflate => Box::new(flate::Flate::deflate()),
        Coding::Brotli => Box::new(brotli::Brotli::new()),
        Coding::Zstd => Box::new(zstd::Zstd::new()),
    }
}

/// A body's stack of decoders, fed encoded bytes, giving decoded pieces.
pub struct BodyDecoder {
    /// In decoding order: the coding applied last comes first.
    stages: Vec<Box<dyn Stage>>,
    /// The input waiting for each stage; `pending[0]` is the encoded body.
    pending: Vec<Vec<u8>>,
    /// Whether each stage has given everything it ever will.
    drained: Vec<bool>,
    /// The encoded body has ended.
    ended: bool,
    encoded: u64,
    decoded: u64,
    limits: DecodeLimits,
}

impl BodyDecoder {
    /// A decoder for a body encoded with `codings`, in the order they were
    /// applied (as [`parse_codings`] returns them).
    pub fn new(codings: &[Coding], limits: DecodeLimits) -> Self {
        BodyDecoder {
            stages: codings.iter().rev().map(|c| stage(*c)).collect(),
            pending: vec![Vec::new(); codings.len()],
            drained: vec![false; codings.len()],
            ended: false,
            encoded: 0,
            decoded: 0,
            limits,
        }
    }

    /// Adds encoded bytes. Call it when [`BodyDecoder::next_piece`] asks for
    /// more, so no more than one read is ever waiting.
    pub fn push(&mut self, encoded: &[u8]) {
        if let Some(first) = self.pending.first_mut() {
            first.extend_from_slice(encoded);
        }
    }

    /// Says the encoded body has ended.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Whether the whole body has been decoded and given out.
    pub fn is_finished(&self) -> bool {
        self.drained.last().copied().unwrap_or(self.ended)
    }

    /// Encoded bytes consumed so far.
    pub fn encoded(&self) -> u64 {
        self.encoded
    }

    /// Decoded bytes given out so far.
    pub fn decoded(&self) -> u64 {
        self.decoded
    }

    /// The next piece of decoded body (never empty, at most [`PIECE`]
    /// bytes), or `None` when more input is needed, or, once
    /// [`BodyDecoder::is_finished`], when the body is done.
    pub fn next_piece(&mut self) -> Result<Option<Bytes>, DecodeError> {
        let Some(last) = self.stages.len().checked_sub(1) else {
            return Ok(None);
        };
        let Some(piece) = self.pull(last)? else {
            return Ok(None);
        };
        self.decoded += piece.len() as u64;
        if self.decoded > self.limits.max_decoded {
            return Err(DecodeError::TooLarge(self.limits.max_decoded));
        }
        if self.decoded > RATIO_FLOOR
            && self.decoded > self.encoded.saturating_mul(self.limits.max_ratio)
        {
            return Err(DecodeError::RatioExceeded(self.limits.max_ratio));
        }
        Ok(Some(Bytes::from(piece)))
    }

    /// The next output of stage `i`, pulling input from the stage before it
    /// only when stage `i` cannot go on without.
    fn pull(&mut self, i: usize) -> Result<Option<Vec<u8>>, DecodeError> {
        if self.drained[i] {
            return Ok(None);
        }
        loop {
            let mut out = Vec::with_capacity(PIECE);
            let consumed = self.stages[i].step(&self.pending[i], &mut out)?;
            self.pending[i].drain(..consumed);
            if i == 0 {
                self.encoded += consumed as u64;
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
            if consumed > 0 {
                continue;
            }
            // Stuck: stage `i` needs more input than it has.
            let input_over = if i == 0 {
                self.ended
            } else {
                match self.pull(i - 1)? {
                    Some(more) => {
                        self.pending[i].extend_from_slice(&more);
                        continue;
                    }
                    None => self.drained[i - 1],
                }
            };
            if !input_over {
                return Ok(None);
            }
            let stage = &self.stages[i];
            if !self.pending[i].is_empty() || !stage.complete() {
                return Err(DecodeError::Truncated(stage.coding().token()));
            }
            self.drained[i] = true;
            return Ok(None);
        }
    }
}
