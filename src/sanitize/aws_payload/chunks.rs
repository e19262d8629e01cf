//! The aws-chunked framing: chunk-size lines (with chunk signatures in the
//! signed forms), chunk data, and the trailers after the last chunk.

use super::checksum::{checked_base64, Checksum, ChecksumAlgorithm};
use super::{malformed, PayloadError, TRAILER_SIGNATURE};

/// The longest chunk-size line or trailer line accepted (a chunk signature
/// of SigV4a is the longest thing one holds, about 150 bytes).
const MAX_LINE: usize = 1024;

/// An aws-chunked body, decoded.
pub(super) struct Decoded {
    pub(super) payload: Vec<u8>,
    /// The trailer's checksum, as the agent wrote it.
    pub(super) checksum: Option<Checksum>,
}

/// Reads the lines and chunks of an aws-chunked body.
struct Cursor<'b> {
    body: &'b [u8],
    pos: usize,
}

impl<'b> Cursor<'b> {
    /// The next line, without its CRLF.
    fn line(&mut self, what: &str) -> Result<&'b [u8], PayloadError> {
        let rest = &self.body[self.pos..];
        let window = &rest[..rest.len().min(MAX_LINE + 2)];
        let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
            return Err(if rest.len() > MAX_LINE {
                malformed(format!("a {what} line is longer than {MAX_LINE} bytes"))
            } else {
                malformed(format!("the body ends inside a {what} line"))
            });
        };
        let line = &rest[..end];
        check_line(line, what)?;
        self.pos += end + 2;
        Ok(line)
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], PayloadError> {
        let rest = &self.body[self.pos..];
        if rest.len() < n {
            return Err(malformed("the body ends inside a chunk"));
        }
        self.pos += n;
        Ok(&rest[..n])
    }
}

pub(super) fn decode_chunks(
    body: &[u8],
    signed: bool,
    announced: Option<ChecksumAlgorithm>,
    decoded_length: Option<u64>,
) -> Result<Decoded, PayloadError> {
    // The payload is shorter than its framing; a declared length bigger
    // than the body is caught by the checks below, not allocated.
    let capacity = decoded_length
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(body.len())
        .min(body.len());
    let mut payload = Vec::with_capacity(capacity);
    let mut cursor = Cursor { body, pos: 0 };
    loop {
        let line = cursor.line("chunk-size")?;
        let size = next_chunk(line, signed, decoded_length, payload.len() as u64)?;
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).map_err(|_| malformed("the body ends inside a chunk"))?;
        payload.extend_from_slice(cursor.take(size)?);
        if cursor.take(2).ok() != Some(b"\r\n".as_slice()) {
            return Err(data_without_crlf());
        }
    }
    let mut trailers = Trailers::default();
    loop {
        let line = cursor.line("trailer")?;
        if line.is_empty() {
            break;
        }
        trailers.line(line, signed, announced)?;
    }
    if cursor.pos != body.len() {
        return Err(goes_on());
    }
    let checksum = trailers.end(signed, announced)?;
    Ok(Decoded { payload, checksum })
}

/// An aws-chunked body decoded as it arrives, piece by piece: the same
/// checks as [`decode_chunks`], each made as soon as the bytes it needs
/// are there, with the same messages. What is held between pieces is at
/// most one line (bounded by [`MAX_LINE`]), never payload.
pub(super) struct ChunkStream {
    signed: bool,
    announced: Option<ChecksumAlgorithm>,
    decoded_length: Option<u64>,
    /// Payload bytes decoded so far.
    decoded: u64,
    state: State,
    /// The part of a line (chunk-size or trailer) read so far, or of the
    /// CRLF after a chunk's data.
    partial: Vec<u8>,
    trailers: Trailers,
}

/// Where in the framing the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A chunk-size line.
    Size,
    /// A chunk's data, with this many bytes still to come.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// A trailer line, or the empty line that ends the trailers.
    Trailer,
    /// After the trailers: the body must end here.
    Done,
}

impl ChunkStream {
    pub(super) fn new(
        signed: bool,
        announced: Option<ChecksumAlgorithm>,
        decoded_length: Option<u64>,
    ) -> ChunkStream {
        ChunkStream {
            signed,
            announced,
            decoded_length,
            decoded: 0,
            state: State::Size,
            partial: Vec::new(),
            trailers: Trailers::default(),
        }
    }

    /// Decodes the next bytes of the body, appending the payload they
    /// carry to `out`.
    pub(super) fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), PayloadError> {
        while let Some(&byte) = input.first() {
            match self.state {
                State::Data(left) => {
                    let n = usize::try_from(left).map_or(input.len(), |left| left.min(input.len()));
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.decoded += n as u64;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd => {
                    let expected = b"\r\n"[self.partial.len()];
                    if byte != expected {
                        return Err(data_without_crlf());
                    }
                    input = &input[1..];
                    self.partial.push(byte);
                    if self.partial.len() == 2 {
                        self.partial.clear();
                        self.state = State::Size;
                    }
                }
                State::Size | State::Trailer => {
                    // Up to the next LF, within what a line may hold.
                    let room = MAX_LINE + 2 - self.partial.len();
                    let take = input
                        .iter()
                        .position(|b| *b == b'\n')
                        .map_or(input.len(), |lf| lf + 1)
                        .min(room);
                    self.partial.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.partial.ends_with(b"\r\n") {
                        let mut line = std::mem::take(&mut self.partial);
                        line.truncate(line.len() - 2);
                        self.end_of_line(&line)?;
                    } else if self.partial.len() == MAX_LINE + 2 {
                        return Err(self.line_error());
                    }
                }
                State::Done => return Err(goes_on()),
            }
        }
        Ok(())
    }

    /// The body has ended: the trailer's checksum, if it ended where its
    /// framing says.
    pub(super) fn finish(self) -> Result<Option<Checksum>, PayloadError> {
        match self.state {
            State::Size | State::Trailer => Err(self.line_error()),
            State::Data(_) => Err(malformed("the body ends inside a chunk")),
            State::DataEnd => Err(data_without_crlf()),
            State::Done => self.trailers.end(self.signed, self.announced),
        }
    }

    /// Payload bytes decoded so far.
    pub(super) fn decoded(&self) -> u64 {
        self.decoded
    }

    fn end_of_line(&mut self, line: &[u8]) -> Result<(), PayloadError> {
        check_line(line, self.what())?;
        self.state = match self.state {
            State::Size => {
                match next_chunk(line, self.signed, self.decoded_length, self.decoded)? {
                    0 => State::Trailer,
                    size => State::Data(size),
                }
            }
            _ if line.is_empty() => State::Done,
            _ => {
                self.trailers.line(line, self.signed, self.announced)?;
                State::Trailer
            }
        };
        Ok(())
    }

    /// The error for a line without its CRLF where [`Cursor::line`] would
    /// give it: too long, or cut off by the body's end.
    fn line_error(&self) -> PayloadError {
        let what = self.what();
        if self.partial.len() > MAX_LINE {
            malformed(format!("a {what} line is longer than {MAX_LINE} bytes"))
        } else {
            malformed(format!("the body ends inside a {what} line"))
        }
    }

    fn what(&self) -> &'static str {
        if self.state == State::Size {
            "chunk-size"
        } else {
            "trailer"
        }
    }
}

/// The size of the chunk a chunk-size line opens, checked against what
/// `x-amz-decoded-content-length` leaves after `decoded` bytes; at the
/// last (size 0) chunk, that the chunks held all it says.
fn next_chunk(
    line: &[u8],
    signed: bool,
    decoded_length: Option<u64>,
    decoded: u64,
) -> Result<u64, PayloadError> {
    let size = chunk_size(line, signed)?;
    let left = decoded_length.map(|n| n - decoded);
    if size == 0 && left.is_some_and(|left| left > 0) {
        return Err(malformed(
            "the chunks hold less than x-amz-decoded-content-length says",
        ));
    }
    if left.is_some_and(|left| size > left) {
        return Err(malformed(
            "the chunks hold more than x-amz-decoded-content-length says",
        ));
    }
    Ok(size)
}

fn data_without_crlf() -> PayloadError {
    malformed("a chunk's data is not followed by CRLF")
}

fn goes_on() -> PayloadError {
    malformed("the body goes on after its last chunk and trailers")
}

/// A line (without its CRLF) may hold no other CR or LF.
fn check_line(line: &[u8], what: &str) -> Result<(), PayloadError> {
    if line.contains(&b'\n') || line.contains(&b'\r') {
        return Err(malformed(format!("a {what} line holds a bare CR or LF")));
    }
    Ok(())
}

/// What the trailers of a body said so far.
#[derive(Default)]
struct Trailers {
    checksum: Option<Checksum>,
    signature: bool,
}

impl Trailers {
    /// One trailer line (not the empty one that ends them): the checksum
    /// `x-amz-trailer` announced, or the trailer signature of a signed
    /// framing; anything else is refused.
    fn line(
        &mut self,
        line: &[u8],
        signed: bool,
        announced: Option<ChecksumAlgorithm>,
    ) -> Result<(), PayloadError> {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err(malformed("a trailer line has no ':'"));
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = std::str::from_utf8(&line[colon + 1..])
            .map_err(|_| malformed("a trailer value is not plain text"))?
            .trim();
        if name == TRAILER_SIGNATURE && signed && announced.is_some() {
            if self.signature || !is_hex(value) {
                return Err(malformed("the trailer signature is malformed or repeated"));
            }
            self.signature = true;
        } else if let Some(algorithm) = announced.filter(|a| a.header() == name.as_str()) {
            if self.checksum.is_some() {
                return Err(malformed("the checksum trailer is repeated"));
            }
            self.checksum = Some((algorithm, checked_base64(value, algorithm, "trailer")?));
        } else {
            return Err(malformed(
                "the body carries a trailer that x-amz-trailer did not announce",
            ));
        }
        Ok(())
    }

    /// After the trailers: every one the framing needs was there.
    fn end(
        self,
        signed: bool,
        announced: Option<ChecksumAlgorithm>,
    ) -> Result<Option<Checksum>, PayloadError> {
        if announced.is_some() && self.checksum.is_none() {
            return Err(malformed(
                "the checksum trailer x-amz-trailer announced is missing",
            ));
        }
        if signed && announced.is_some() && !self.signature {
            return Err(malformed(
                "a signed framing with a trailer needs x-amz-trailer-signature",
            ));
        }
        Ok(self.checksum)
    }
}

/// The size on a chunk-size line: hex digits, and for a signed framing
/// `;chunk-signature=<hex>` (the agent's own signature, which credgate
/// neither can nor needs to check: it signs the whole payload itself).
fn chunk_size(line: &[u8], signed: bool) -> Result<u64, PayloadError> {
    let (digits, extension) = match line.iter().position(|b| *b == b';') {
        Some(i) => (&line[..i], Some(&line[i + 1..])),
        None => (line, None),
    };
    match (extension, signed) {
        (None, false) => {}
        (Some(ext), true)
            if ext
                .strip_prefix(b"chunk-signature=")
                .is_some_and(|sig| std::str::from_utf8(sig).is_ok_and(is_hex)) => {}
        (None, true) => {
            return Err(malformed(
                "a chunk of a signed framing has no chunk-signature",
            ))
        }
        (Some(_), _) => {
            return Err(malformed(
                "a chunk-size line has an extension credgate does not know",
            ))
        }
    }
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(malformed("a chunk size is not a hexadecimal number"));
    }
    let text = std::str::from_utf8(digits).expect("hex digits are ASCII");
    Ok(u64::from_str_radix(text, 16).expect("at most 15 hex digits"))
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}
