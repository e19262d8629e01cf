//! A response body read from its upstream connection.

use super::*;

/// Where the body decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decode {
    /// This many bytes remain.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Until the upstream closes.
    Eof,
    /// The body is complete.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// At the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines, this many bytes so far.
    Trailers(usize),
}

/// What one decoding step produced.
pub(super) enum Step {
    Data(Bytes),
    /// The trailer section, which ended the body.
    Trailers(HeaderMap),
    NeedMore,
    Done,
}

/// A response body being read from its HTTP/1.1 upstream connection. The
/// connection goes back to the pool when the body ends at its framed length;
/// if the body is dropped early, the connection is closed.
pub(crate) struct H1Body {
    pub(super) conn: Option<Conn>,
    pub(super) decode: Decode,
    pub(super) reuse: bool,
    pub(super) to: Destination,
    pub(super) pool: Arc<Pool>,
    /// Trailer fields read so far (a chunked body's last section), boxed:
    /// most bodies have none.
    pub(super) trailers: Option<Box<HeaderMap>>,
}

impl H1Body {
    pub(super) fn release(&mut self) {
        self.decode = Decode::Done;
        if let Some(conn) = self.conn.take() {
            if self.reuse && conn.buf.is_empty() {
                // The body is done with its destination.
                self.pool.checkin(std::mem::take(&mut self.to), conn);
            }
        }
    }

    /// One decoding step over the buffered bytes.
    pub(super) fn step(&mut self, buf: &mut BytesMut) -> io::Result<Step> {
        loop {
            match self.decode {
                Decode::Done => return Ok(Step::Done),
                Decode::Length(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - n as u64;
                    self.decode = if left == 0 {
                        Decode::Done
                    } else {
                        Decode::Length(left)
                    };
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Decode::Eof => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::Data(buf.split().freeze()));
                }
                Decode::Chunked(Chunk::Size) => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Step::NeedMore);
                    };
                    let size =
                        parse_chunk_size(&line).map_err(|e| framing_error(&e.to_string()))?;
                    self.decode = Decode::Chunked(if size == 0 {
                        Chunk::Trailers(0)
                    } else {
                        Chunk::Data(size)
                    });
                }
                Decode::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let left = left - n as u64;
                    self.decode = Decode::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Ok(Step::Data(buf.split_to(n).freeze()));
                }
                Decode::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(framing_error("chunk data is not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.decode = Decode::Chunked(Chunk::Size);
                }
                Decode::Chunked(Chunk::Trailers(seen)) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS.saturating_sub(seen))? else {
                        return Ok(Step::NeedMore);
                    };
                    if line.is_empty() {
                        self.decode = Decode::Done;
                        return Ok(match self.trailers.take() {
                            Some(trailers) => Step::Trailers(*trailers),
                            None => Step::Done,
                        });
                    }
                    self.decode = Decode::Chunked(Chunk::Trailers(seen + line.len() + 2));
                    // A field credgate cannot read exactly (obs-fold, a bad
                    // name or value) is dropped, never guessed at; what is
                    // kept is scrubbed and filtered by the pipeline.
                    if let Some((name, value)) = trailer_field(&line) {
                        let trailers = self.trailers.get_or_insert_default();
                        if trailers.len() < MAX_HEADERS {
                            trailers.append(name, value);
                        }
                    }
                }
            }
        }
    }
}

/// A trailer line as a field, when it is a well-formed one.
fn trailer_field(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        return None;
    }
    let colon = line.iter().position(|b| *b == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

/// Takes one CRLF-terminated line (without its CRLF) off the front of `buf`.
pub(super) fn take_line(buf: &mut BytesMut, max: usize) -> io::Result<Option<BytesMut>> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(pos) => {
            if pos == 0 || buf[pos - 1] != b'\r' {
                return Err(framing_error("bare LF in chunked framing"));
            }
            if pos - 1 > max {
                return Err(framing_error("chunked framing line too long"));
            }
            let mut line = buf.split_to(pos + 1);
            line.truncate(pos - 1);
            Ok(Some(line))
        }
        None if buf.len() > max + 2 => Err(framing_error("chunked framing line too long")),
        None => Ok(None),
    }
}

pub(super) fn framing_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid response framing: {what}"),
    )
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            let Some(mut conn) = this.conn.take() else {
                return Poll::Ready(None);
            };
            let step = this.step(&mut conn.buf);
            match step {
                Err(e) => return Poll::Ready(Some(Err(e))),
                Ok(Step::Data(data)) => {
                    this.conn = Some(conn);
                    if this.decode == Decode::Done {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Done) => {
                    this.conn = Some(conn);
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Step::Trailers(trailers)) => {
                    this.conn = Some(conn);
                    this.release();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Step::NeedMore) => {}
            }
            let read = {
                let fill = conn.fill();
                std::pin::pin!(fill).poll(cx)
            };
            match read {
                Poll::Pending => {
                    this.conn = Some(conn);
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(0)) if this.decode == Decode::Eof => {
                    // The end of the connection is the end of this body.
                    this.decode = Decode::Done;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection inside the body",
                    ))))
                }
                Poll::Ready(Ok(_)) => this.conn = Some(conn),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decode == Decode::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decode {
            Decode::Done => SizeHint::with_exact(0),
            Decode::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}
