//! `gzip` and `deflate`, on flate2's pure-Rust inflater (miniz_oxide).

use flate2::{Crc, Decompress, FlushDecompress, Status};

use super::{Coding, DecodeError, Stage, PIECE};

/// The longest gzip header accepted (its optional name, comment and extra
/// field are otherwise unbounded).
const MAX_GZIP_HEADER: usize = 64 * 1024;

/// Where a flate stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing read yet.
    Start,
    /// Inside a gzip member's header.
    GzipHeader,
    /// Inside the deflate data.
    Body,
    /// Inside a gzip member's CRC-32 and length.
    GzipTrailer,
    /// At a point where the stream may end.
    Done,
}

/// A gzip or deflate decoder.
pub(super) struct Flate {
    coding: Coding,
    state: State,
    inflate: Decompress,
    /// The CRC and length of the current gzip member's output.
    crc: Crc,
}

impl Flate {
    /// A `gzip` decoder.
    pub(super) fn gzip() -> Self {
        Self::new(Coding::Gzip)
    }

    /// A `deflate` decoder.
    pub(super) fn deflate() -> Self {
        Self::new(Coding::Deflate)
    }

    fn new(coding: Coding) -> Self {
        Flate {
            coding,
            state: State::Start,
            inflate: Decompress::new(false),
            crc: Crc::new(),
        }
    }

    fn corrupt(&self, what: impl Into<String>) -> DecodeError {
        DecodeError::corrupt(self.coding, what)
    }

    fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        let (before_in, before_out) = (self.inflate.total_in(), self.inflate.total_out());
        // A slice of one piece: the inflater can never write more.
        out.resize(PIECE, 0);
        let status = self
            .inflate
            .decompress(input, out, FlushDecompress::None)
            .map_err(|e| self.corrupt(e.to_string()))?;
        out.truncate((self.inflate.total_out() - before_out) as usize);
        if self.coding == Coding::Gzip {
            self.crc.update(out);
        }
        if status == Status::StreamEnd {
            self.state = if self.coding == Coding::Gzip {
                State::GzipTrailer
            } else {
                State::Done
            };
        }
        Ok((self.inflate.total_in() - before_in) as usize)
    }

    fn trailer(&mut self, input: &[u8]) -> Result<usize, DecodeError> {
        let Some(trailer) = input.get(..8) else {
            return Ok(0);
        };
        let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let len = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
        if crc != self.crc.sum() || len != self.crc.amount() {
            return Err(self.corrupt("the CRC or length of a gzip member does not match"));
        }
        self.state = State::Done;
        Ok(8)
    }
}

impl Stage for Flate {
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, DecodeError> {
        match self.state {
            State::Start => match self.coding {
                Coding::Gzip if input.is_empty() => Ok(0),
                Coding::Gzip => {
                    self.state = State::GzipHeader;
                    self.step(input, out)
                }
                _ => {
                    let Some(head) = input.get(..2) else {
                        return Ok(0);
                    };
                    // RFC 1950: method 8, and the two bytes a multiple of 31.
                    let zlib = head[0] & 0x0f == 8
                        && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0;
                    self.inflate = Decompress::new(zlib);
                    self.state = State::Body;
                    self.inflate(input, out)
                }
            },
            State::GzipHeader => match gzip_header_len(input) {
                Err(what) => Err(self.corrupt(what)),
                Ok(None) if input.len() > MAX_GZIP_HEADER => {
                    Err(self.corrupt("the gzip header is too long"))
                }
                Ok(None) => Ok(0),
                Ok(Some(len)) => {
                    self.inflate.reset(false);
                    self.crc.reset();
                    self.state = State::Body;
                    Ok(len)
                }
            },
            State::Body => self.inflate(input, out),
            State::GzipTrailer => self.trailer(input),
            State::Done => match (self.coding, input) {
                (_, []) => Ok(0),
                // RFC 1952 §2.2: a gzip body may be several members.
                (Coding::Gzip, [0x1f]) => Ok(0),
                (Coding::Gzip, [0x1f, 0x8b, ..]) => {
                    self.state = State::GzipHeader;
                    self.step(input, out)
                }
                // Bytes past the end were never decoded, so they are
                // refused rather than dropped unread.
                _ => Err(self.corrupt("data follows the end of the compressed stream")),
            },
        }
    }

    fn complete(&self) -> bool {
        matches!(self.state, State::Start | State::Done)
    }

    fn coding(&self) -> Coding {
        self.coding
    }
}

/// The length of the gzip member header at the front of `buf`, `None` if
/// it is not all there yet.
fn gzip_header_len(buf: &[u8]) -> Result<Option<usize>, &'static str> {
    const FHCRC: u8 = 0x02;
    const FEXTRA: u8 = 0x04;
    const FNAME: u8 = 0x08;
    const FCOMMENT: u8 = 0x10;
    if buf.len() >= 2 && buf[..2] != [0x1f, 0x8b] {
        return Err("not a gzip header");
    }
    if buf.len() < 10 {
        return Ok(None);
    }
    if buf[2] != 8 {
        return Err("not deflate-compressed");
    }
    let flags = buf[3];
    if flags & 0xe0 != 0 {
        return Err("reserved gzip header flags are set");
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let Some(len) = buf.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(end) = buf
                .get(at..)
                .and_then(|rest| rest.iter().position(|b| *b == 0))
            else {
                return Ok(None);
            };
            at += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    Ok((buf.len() >= at).then_some(at))
}
