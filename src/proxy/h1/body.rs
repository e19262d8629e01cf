//! Reading a request body: the first part whole, the rest piece by piece.
//!
//! A small body is read whole before the pipeline runs, as the sanitize
//! phase wants it. A body larger than that first part is not held: the
//! pipeline reads the rest through a [`BodyReader`] while it forwards, so an
//! upload is bounded by `max_body`, not by memory.

use super::*;

/// The most bytes one [`H1Connection::next_piece`] hands out.
const MAX_PIECE: usize = 64 * 1024;

/// The start of a request body.
pub(crate) struct BodyStart {
    /// The body's first bytes (all of it when `rest` is `None`).
    pub(crate) first: Bytes,
    /// Where the rest of the body is read from, when there is more.
    pub(crate) rest: Option<BodyReader>,
}

/// Where a body being read piece by piece stands.
#[derive(Debug)]
pub(crate) struct BodyReader {
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// `Content-Length` framing: this many bytes are still to come.
    Length(u64),
    /// Chunked framing: this many bytes of the current chunk are still to
    /// come (0: a chunk-size line is next), and whether the CRLF closing the
    /// previous chunk's data is still to be read.
    Chunk { left: u64, crlf: bool },
    /// The body has ended (trailers, if any, were read and dropped).
    Done,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> H1Connection<IO> {
    /// Reads the body's first `hold` bytes or, when it is shorter, all of it.
    pub(crate) async fn read_body_start(
        &mut self,
        framing: Framing,
        hold: usize,
    ) -> Result<BodyStart, H1Error> {
        let mut reader = BodyReader {
            state: match framing {
                Framing::Empty => State::Done,
                Framing::Length(len) => State::Length(len),
                Framing::Chunked => State::Chunk {
                    left: 0,
                    crlf: false,
                },
            },
        };
        if let Framing::Length(len) = framing {
            if len <= hold as u64 {
                // The common case: one contiguous read, no copy.
                let len = len as usize;
                while self.buf.len() < len {
                    if self.fill().await? == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                    }
                }
                return Ok(BodyStart {
                    first: self.buf.split_to(len).freeze(),
                    rest: None,
                });
            }
        }
        let mut first = BytesMut::new();
        while first.len() <= hold {
            match self.next_piece(&mut reader).await? {
                Some(piece) => first.extend_from_slice(&piece),
                None => {
                    return Ok(BodyStart {
                        first: first.freeze(),
                        rest: None,
                    })
                }
            }
        }
        Ok(BodyStart {
            first: first.freeze(),
            rest: Some(reader),
        })
    }

    /// The next piece of the body (at most 64 KiB), or `None` once it has
    /// ended. A body that ends early or breaks its chunked framing is an
    /// error, never a short body.
    pub(crate) async fn next_piece(
        &mut self,
        reader: &mut BodyReader,
    ) -> Result<Option<Bytes>, H1Error> {
        loop {
            match reader.state {
                State::Done => return Ok(None),
                State::Length(0) => {
                    reader.state = State::Done;
                    return Ok(None);
                }
                State::Length(left) => {
                    let piece = self.take(left).await?;
                    reader.state = State::Length(left - piece.len() as u64);
                    return Ok(Some(piece));
                }
                State::Chunk { left: 0, crlf } => {
                    if crlf {
                        while self.buf.len() < 2 {
                            if self.fill().await? == 0 {
                                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                            }
                        }
                        if &self.buf[..2] != b"\r\n" {
                            return Err(H1Error::Framing("chunk data not followed by CRLF"));
                        }
                        self.buf.advance(2);
                    }
                    let line = self.read_line(1024).await?;
                    let size = parse_chunk_size(&line)?;
                    if size == 0 {
                        self.skip_trailers().await?;
                        reader.state = State::Done;
                        return Ok(None);
                    }
                    reader.state = State::Chunk {
                        left: size,
                        crlf: true,
                    };
                }
                State::Chunk { left, crlf } => {
                    let piece = self.take(left).await?;
                    reader.state = State::Chunk {
                        left: left - piece.len() as u64,
                        crlf,
                    };
                    return Ok(Some(piece));
                }
            }
        }
    }

    /// Up to `left` (and at most [`MAX_PIECE`]) body bytes, reading when
    /// nothing is buffered.
    async fn take(&mut self, left: u64) -> Result<Bytes, H1Error> {
        if self.buf.is_empty() {
            // Room for a whole piece: every piece is scanned with the end of
            // the one before, so few large pieces cost less than many small.
            self.buf.reserve(MAX_PIECE);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
        let n = self.buf.len().min(MAX_PIECE).min(left as usize);
        Ok(self.buf.split_to(n).freeze())
    }

    /// Reads and discards the trailer section after the last chunk: nothing
    /// downstream uses it, and forwarding it would be a way around header
    /// sanitizing.
    async fn skip_trailers(&mut self) -> Result<(), H1Error> {
        let mut trailer_bytes = 0;
        loop {
            let line = self.read_line(MAX_TRAILERS).await?;
            if line.is_empty() {
                return Ok(());
            }
            trailer_bytes += line.len();
            if trailer_bytes > MAX_TRAILERS {
                return Err(H1Error::Framing("trailer section too large"));
            }
            if line[0] == b' ' || line[0] == b'\t' {
                return Err(H1Error::Framing("obs-fold in trailer section"));
            }
        }
    }
}
