//! `zstd`, on the pure-Rust ruzstd decoder.
//!
//! ruzstd decodes whole blocks from a slice. Given several blocks at once it
//! decodes them all, and a block of one repeated byte costs four encoded
//! bytes for 128 KiB decoded, so this stage hands it exactly one block at a
//! time, read from the block header here, and drains the output in pieces.

use std::io::Read;

use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

use super::{Coding, DecodeError, Stage, PIECE};

const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// RFC 9659 §3: HTTP zstd decoders need not accept windows over 8 MiB, so
/// no encoder may count on more; a larger window is refused.
const MAX_WINDOW: u64 = 8 << 20;

/// RFC 8878 §3.1.1.2: a block's content is at most 128 KiB.
const MAX_BLOCK: usize = 128 << 10;

/// Where a zstd body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing read yet.
    Start,
    /// Between blocks of a frame whose header said whether it has a checksum.
    Blocks { checksum: bool },
    /// After the last block, giving out what is left. ruzstd hashes output
    /// as it leaves, so the checksum is judged when all of it has.
    Draining { checksum: bool },
    /// After a complete frame.
    Done,
}

/// A zstd decoder (one or more frames).
pub(super) struct Zstd {
    state: State,
    frame: FrameDecoder,
}

impl Zstd {
    /// A decoder at the start of a zstd body.
    pub(super) fn new() -> Self {
        Zstd {
            state: State::Start,
            frame: FrameDecoder::new(),
        }
    }

    fn header(&mut self, input: &[u8]) -> Result<usize, DecodeError> {
        let Some(len) = frame_header_len(input)? else {
            return Ok(0);
        };
        let descriptor = input[4];
        self.frame
            .init(&input[..len])
            .map_err(|e| corrupt(e.to_string()))?;
        self.state = State::Blocks {
            checksum: descriptor & 0x04 != 0,
        };
        Ok(len)
    }

    fn block(&mut self, input: &[u8], checksum: bool) -> Result<usize, DecodeError> {
        let Some(head) = input.get(..3) else {
            return Ok(0);
        };
        let head = u32::from_le_bytes([head[0], head[1], head[2], 0]);
        let last = head & 1 != 0;
        let size = (head >> 3) as usize;
        if size > MAX_BLOCK {
            return Err(corrupt("a block is larger than 128 KiB"));
        }
        let content = match (head >> 1) & 3 {
            0 | 2 => size,
            1 => 1,
            _ => return Err(corrupt("a block has the reserved type")),
        };
        let need = 3 + content + if last && checksum { 4 } else { 0 };
        let Some(block) = input.get(..need) else {
            return Ok(0);
        };
        self.frame
            .decode_blocks(block, BlockDecodingStrategy::UptoBlocks(1))
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(need)
    }
}

fn corrupt(what: impl Into<String>) -> DecodeError {
    DecodeError::corrupt(Coding::Zstd, what)
}

impl Stage for Zstd {
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        // Decoded output first: a block is decoded only once the last one
        // has gone out (beyond the window ruzstd keeps for back-references).
        if self.frame.can_collect() > 0 {
            out.resize(PIECE, 0);
            let n = self.frame.read(out).map_err(|e| corrupt(e.to_string()))?;
            out.truncate(n);
            if n > 0 {
                return Ok(0);
            }
        }
        match self.state {
            State::Start => self.header(input),
            State::Blocks { checksum } => {
                let used = self.block(input, checksum)?;
                if self.frame.is_finished() {
                    self.state = State::Draining { checksum };
                }
                Ok(used)
            }
            State::Draining { checksum } => {
                if checksum
                    && self.frame.get_calculated_checksum() != self.frame.get_checksum_from_data()
                {
                    return Err(corrupt("the frame checksum does not match"));
                }
                self.state = State::Done;
                self.step(input, out)
            }
            State::Done => match input {
                [] => Ok(0),
                // RFC 8878 §3: a body may be several frames.
                [0x28, 0xb5, 0x2f, 0xfd, ..] => self.header(input),
                _ if input.len() < 4 && MAGIC.starts_with(input) => Ok(0),
                _ => Err(corrupt("data follows the end of the compressed stream")),
            },
        }
    }

    fn complete(&self) -> bool {
        matches!(self.state, State::Start | State::Done)
    }

    fn coding(&self) -> Coding {
        Coding::Zstd
    }
}

/// The length of the frame header at the front of `buf` (RFC 8878 §3.1.1),
/// `None` if it is not all there yet. Refuses what credgate will not decode:
/// skippable frames, dictionaries, windows over [`MAX_WINDOW`].
fn frame_header_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let known = buf.len().min(4);
    if buf[..known] != MAGIC[..known] {
        return Err(corrupt("not a zstd frame"));
    }
    let Some(&descriptor) = buf.get(4) else {
        return Ok(None);
    };
    if descriptor & 0x08 != 0 {
        return Err(corrupt("the reserved frame header bit is set"));
    }
    let single_segment = descriptor & 0x20 != 0;
    let dict_len = [0, 1, 2, 4][usize::from(descriptor & 3)];
    if dict_len != 0 {
        return Err(corrupt("frames with a dictionary are not supported"));
    }
    let size_len = match descriptor >> 6 {
        0 => usize::from(single_segment),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let len = 5 + usize::from(!single_segment) + size_len;
    let Some(header) = buf.get(..len) else {
        return Ok(None);
    };
    let window = if single_segment {
        // The window is the content size.
        let mut size = [0u8; 8];
        size[..size_len].copy_from_slice(&header[5..]);
        let size = u64::from_le_bytes(size);
        if size_len == 2 {
            size + 256
        } else {
            size
        }
    } else {
        let exponent = u32::from(header[5] >> 3);
        let base = 1u64 << (10 + exponent);
        base + base / 8 * u64::from(header[5] & 7)
    };
    if window > MAX_WINDOW {
        return Err(corrupt(format!(
            "the frame asks for a {window}-byte window; credgate decodes up to 8 MiB"
        )));
    }
    Ok(Some(len))
}
