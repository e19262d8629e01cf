//! Writing a request: the head (with the body when it is small), and a
//! large body while watching for an early answer.

use super::*;

/// The request as it goes on the wire: head, and the body too when it is small.
pub(super) struct Message {
    pub(super) bytes: Vec<u8>,
    pub(super) body_inline: bool,
}

pub(super) fn encode_request(parts: &request::Parts, body: &[u8]) -> Message {
    let body_inline = body.len() <= INLINE_BODY;
    let mut out = Vec::with_capacity(256 + if body_inline { body.len() } else { 0 });
    encode_head(parts, Some(body.len() as u64), &mut out);
    if body_inline {
        out.extend_from_slice(body);
    }
    Message {
        bytes: out,
        body_inline,
    }
}

/// The request head, framed for a body of `length` bytes, or chunked when
/// `length` is `None`.
pub(super) fn encode_head(parts: &request::Parts, length: Option<u64>, out: &mut Vec<u8>) {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut had_length = false;
    for (name, value) in &parts.headers {
        // Framing is credgate's to set.
        if name == header::CONTENT_LENGTH {
            had_length = true;
            continue;
        }
        if name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // credgate reads trailers (and passes them on, scrubbed, to an agent
    // that takes them); an upstream may send them only when told so. Not on
    // an upgrade, whose `Connection` must name the upgrade alone.
    if !parts.headers.contains_key(header::TE) && !parts.headers.contains_key(header::UPGRADE) {
        out.extend_from_slice(b"te: trailers\r\nconnection: te\r\n");
    }
    if !parts.headers.contains_key(header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(authority.as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    match length {
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Some(length) => {
            let body_expected = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
            if length > 0 || had_length || body_expected {
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(length.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a large request body while watching the connection: an upstream
/// may answer (413, 401, ...) before it has read the whole body, and then
/// stop reading. Returns `true` when a final response arrived first; its
/// bytes are in `conn.buf` and the body is not sent further.
pub(super) async fn write_body(conn: &mut Conn, body: &[u8]) -> io::Result<bool> {
    let mut written = 0;
    std::future::poll_fn(|cx| {
        while written < body.len() {
            match Pin::new(&mut conn.io).poll_write(cx, &body[written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => loop {
                    // The upstream is not reading: has it answered?
                    let mut chunk = [0u8; 4096];
                    let mut read = ReadBuf::new(&mut chunk);
                    match Pin::new(&mut conn.io).poll_read(cx, &mut read) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Ready(Ok(())) if read.filled().is_empty() => {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the upstream closed the connection during the request body",
                            )))
                        }
                        Poll::Ready(Ok(())) => {
                            conn.buf.extend_from_slice(read.filled());
                            if final_answer(&conn.buf) {
                                return Poll::Ready(Ok(true));
                            }
                        }
                    }
                },
            }
        }
        Poll::Ready(Ok(false))
    })
    .await
}

/// Sends a streamed body piece by piece, each as it clears the scan, chunked
/// when the upstream was told no length. Returns `true` when a final
/// response arrived before the body was all sent (its bytes are in
/// `conn.buf`; the rest is not sent). A body that stops (a finding, a body
/// past `max_body`, an agent that went away) returns its abort, and the
/// caller drops the connection: the upstream never sees the request end.
pub(super) async fn write_stream(
    conn: &mut Conn,
    body: &mut Stream,
    chunked: bool,
    idle: Duration,
) -> Result<bool, StreamFailure> {
    while let Some(piece) = body.next().await.map_err(StreamFailure::Body)? {
        let written = tokio::time::timeout(idle, async {
            if chunked {
                // One write per chunk, so its framing shares a TLS record.
                let mut chunk = Vec::with_capacity(piece.len() + 20);
                chunk.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                chunk.extend_from_slice(&piece);
                chunk.extend_from_slice(b"\r\n");
                return write_body(conn, &chunk).await;
            }
            write_body(conn, &piece).await
        })
        .await
        .map_err(|_| StreamFailure::Stalled)?
        .map_err(StreamFailure::Io)?;
        if written {
            return Ok(true);
        }
    }
    let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
    tokio::time::timeout(idle, async {
        conn.io.write_all(end).await?;
        conn.io.flush().await
    })
    .await
    .map_err(|_| StreamFailure::Stalled)?
    .map_err(StreamFailure::Io)?;
    Ok(false)
}

/// Why a streamed body could not be sent.
pub(super) enum StreamFailure {
    /// The body itself stopped.
    Body(BodyAbort),
    /// The upstream did not read for `upstream.idle_timeout`.
    Stalled,
    /// The connection failed.
    Io(io::Error),
}
