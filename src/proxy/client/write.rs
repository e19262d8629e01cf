//! Writing a request: the head (with the body when it is small), and a
//! large body while watching for an early answer.

use super::*;

/// The request as it goes on the wire: head, and the body too when it is small.
pub(super) struct Message {
    pub(super) bytes: Vec<u8>,
    pub(super) body_inline: bool,
}

pub(super) fn encode_request(parts: &request::Parts, body: &[u8]) -> Message {
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let body_inline = body.len() <= INLINE_BODY;
    let mut out = Vec::with_capacity(256 + if body_inline { body.len() } else { 0 });
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut had_length = false;
    for (name, value) in &parts.headers {
        // Framing is credgate's to set: the body was read whole.
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
    if !parts.headers.contains_key(header::HOST) {
        if let Some(authority) = parts.uri.authority() {
            out.extend_from_slice(b"host: ");
            out.extend_from_slice(authority.as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    let body_expected = matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
    if !body.is_empty() || had_length || body_expected {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(body.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if body_inline {
        out.extend_from_slice(body);
    }
    Message {
        bytes: out,
        body_inline,
    }
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
                            if final_answer(&mut conn.buf) {
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
