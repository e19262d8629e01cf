//! The upstream HTTP/1.1 client.
//!
//! One exchange at a time per connection, driven by the task that serves the
//! agent: the request is written and the response read in that task, with no
//! connection task and no channel in between. Idle connections are pooled per
//! destination (scheme, host, port) and reused only when the previous response
//! ended cleanly at its framed length.
//!
//! Responses are framed strictly (RFC 9112 §6.3): a `Content-Length` must be
//! one number, `Transfer-Encoding` must be exactly `chunked`, and a response
//! carrying both is refused rather than guessed at. A body framed by the end
//! of the connection is read to its end and the connection is not reused.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::h1::{parse_chunk_size, write_turn};
use super::upstream::{ConnectError, GuardedConnector};

/// How long an idle connection stays in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per destination; more are closed.
const MAX_IDLE_PER_DESTINATION: usize = 64;
/// The largest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The most header lines in a response head.
const MAX_HEADERS: usize = 128;
/// Interim (1xx) responses skipped before the final one.
const MAX_INTERIM: usize = 16;
/// The longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// The most trailer bytes read (and dropped) after a chunked body.
const MAX_TRAILERS: usize = 16 * 1024;
/// Request bodies up to this size go out in the same write as the head.
const INLINE_BODY: usize = 16 * 1024;

/// A connection to an upstream, plain or TLS.
pub(crate) enum Io {
    /// Cleartext (only for rules that allow it).
    Plain(TcpStream),
    /// TLS, verified.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Where a pooled connection goes.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
struct Destination {
    tls: bool,
    host: String,
    port: u16,
}

/// An upstream connection and what has been read from it but not used yet.
struct Conn {
    io: Io,
    buf: BytesMut,
    idle_since: Instant,
}

impl Conn {
    fn new(io: Io) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
            idle_since: Instant::now(),
        }
    }

    /// Whether an idle connection can carry another request: not expired,
    /// and the upstream has neither closed it nor sent anything unasked.
    fn reusable(&mut self, now: Instant) -> bool {
        if now.duration_since(self.idle_since) >= IDLE_TIMEOUT || !self.buf.is_empty() {
            return false;
        }
        // A read that would block means a quiet, open connection. Anything
        // else (end of stream, bytes, an error) means it must not be used.
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        self.io.read_buf(&mut self.buf).await
    }
}

/// Idle connections by destination.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<Destination, Vec<Conn>>>,
}

impl Pool {
    fn checkout(&self, to: &Destination) -> Option<Conn> {
        let now = Instant::now();
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            let list = idle.get_mut(to)?;
            let mut found = None;
            while let Some(mut conn) = list.pop() {
                if conn.reusable(now) {
                    found = Some(conn);
                    break;
                }
                stale.push(conn);
            }
            // An emptied list stays for the connection's return; the sweep
            // removes it if nothing comes back.
            found
        };
        // Closed outside the lock.
        drop(stale);
        found
    }

    fn checkin(&self, to: Destination, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(to).or_default();
        if list.len() < MAX_IDLE_PER_DESTINATION {
            list.push(conn);
        }
    }

    /// Closes connections idle for longer than [`IDLE_TIMEOUT`].
    fn sweep(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            idle.retain(|_, list| {
                let (keep, old): (Vec<Conn>, Vec<Conn>) = list
                    .drain(..)
                    .partition(|c| now.duration_since(c.idle_since) < IDLE_TIMEOUT);
                *list = keep;
                expired.extend(old);
                !list.is_empty()
            });
        }
        drop(expired);
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.values().map(Vec::len).sum()
    }
}

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection broke, or the upstream answered with something that
    /// is not a well-framed HTTP/1.1 response.
    #[error("{0}")]
    Broken(String),
}

/// A failed exchange on one connection; `answered` once any byte of a
/// response arrived (a request is retried on a fresh connection only before).
struct Failure {
    answered: bool,
    message: String,
}

impl Failure {
    fn io(answered: bool, e: &io::Error) -> Self {
        Failure {
            answered,
            message: format!("the connection failed: {e}"),
        }
    }

    fn protocol(message: impl Into<String>) -> Self {
        Failure {
            answered: true,
            message: message.into(),
        }
    }
}

/// The upstream client for one address policy.
pub(crate) struct Client {
    connector: GuardedConnector,
    pool: Arc<Pool>,
}

impl Client {
    pub(crate) fn new(connector: GuardedConnector) -> Self {
        Client {
            connector,
            pool: Arc::default(),
        }
    }

    /// Closes connections that have been idle too long.
    pub(crate) fn sweep(&self) {
        self.pool.sweep();
    }

    /// Sends `parts` (whose URI is absolute: scheme, host and port say where)
    /// with `body`, and returns the response with its body still to be read.
    /// A request that fails on a reused connection before any answer came
    /// back is sent again on a new one when its method is idempotent: the
    /// upstream may have closed the idle connection as it was taken.
    pub(crate) async fn send(
        &self,
        parts: &request::Parts,
        body: &Bytes,
    ) -> Result<Response<ResponseBody>, SendError> {
        let tls = parts.uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = parts
            .uri
            .host()
            .ok_or(ConnectError::NoHost)?
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = parts.uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let to = Destination {
            tls,
            host: host.to_string(),
            port,
        };
        let message = encode_request(parts, body);
        let head_request = parts.method == Method::HEAD;

        if let Some(mut conn) = self.pool.checkout(&to) {
            match exchange(&mut conn, &message, body, head_request).await {
                Ok(head) => return Ok(self.response(head, conn, to)),
                Err(f) if !f.answered && parts.method.is_idempotent() => {}
                Err(f) => return Err(SendError::Broken(f.message)),
            }
        }
        let io = tokio::time::timeout(
            self.connector.connect_timeout,
            self.connector.connect(host, port, tls),
        )
        .await
        .map_err(|_| ConnectError::Timeout(host.to_string()))??;
        let mut conn = Conn::new(io);
        match exchange(&mut conn, &message, body, head_request).await {
            Ok(head) => Ok(self.response(head, conn, to)),
            Err(f) => Err(SendError::Broken(f.message)),
        }
    }

    fn response(&self, head: Head, conn: Conn, to: Destination) -> Response<ResponseBody> {
        let mut body = ResponseBody {
            conn: Some(conn),
            decode: head.decode,
            reuse: head.reuse,
            to,
            pool: self.pool.clone(),
        };
        if body.decode == Decode::Done {
            body.release();
        }
        head.response.map(|()| body)
    }
}

/// The request as it goes on the wire: head, and the body too when it is small.
struct Message {
    bytes: Vec<u8>,
    body_inline: bool,
}

fn encode_request(parts: &request::Parts, body: &[u8]) -> Message {
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

/// A response head and how its body is framed.
struct Head {
    response: Response<()>,
    decode: Decode,
    reuse: bool,
}

async fn exchange(
    conn: &mut Conn,
    message: &Message,
    body: &[u8],
    head_request: bool,
) -> Result<Head, Failure> {
    let sent: io::Result<bool> = async {
        write_turn().await;
        conn.io.write_all(&message.bytes).await?;
        let early = !message.body_inline && write_body(conn, body).await?;
        if !early {
            conn.io.flush().await?;
        }
        Ok(early)
    }
    .await;
    let early = sent.map_err(|e| Failure::io(!conn.buf.is_empty(), &e))?;
    let mut head = read_head(conn, head_request).await?;
    if early {
        // The rest of the request body was never sent.
        head.reuse = false;
    }
    Ok(head)
}

/// Writes a large request body while watching the connection: an upstream
/// may answer (413, 401, ...) before it has read the whole body, and then
/// stop reading. Returns `true` when a final response arrived first; its
/// bytes are in `conn.buf` and the body is not sent further.
async fn write_body(conn: &mut Conn, body: &[u8]) -> io::Result<bool> {
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

/// Whether `buf` holds the start of a final answer: a complete non-interim
/// head, or something [`read_head`] will refuse. Interim responses are taken
/// off, as `read_head` would skip them.
fn final_answer(buf: &mut BytesMut) -> bool {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let interim = parsed
                    .code
                    .is_some_and(|c| (100..200).contains(&c) && c != 101);
                if !interim {
                    return true;
                }
                buf.advance(len);
            }
            Ok(httparse::Status::Partial) => return buf.len() > MAX_HEAD,
            Err(_) => return true,
        }
    }
}

async fn read_head(conn: &mut Conn, head_request: bool) -> Result<Head, Failure> {
    let mut interim = 0;
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            answered = true;
            match parse_head(&mut conn.buf)? {
                None => {}
                Some(response) => {
                    let status = response.status();
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(Failure::protocol(
                            "the upstream switched protocols, which credgate never asks for",
                        ));
                    }
                    if status.is_informational() {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(Failure::protocol(
                                "the upstream sent too many interim responses",
                            ));
                        }
                        continue;
                    }
                    let (decode, reuse) = framing(&response, head_request)?;
                    return Ok(Head {
                        response,
                        decode,
                        reuse,
                    });
                }
            }
            if conn.buf.len() > MAX_HEAD {
                return Err(Failure::protocol(format!(
                    "the upstream's response head is larger than {MAX_HEAD} bytes"
                )));
            }
        }
        match conn.fill().await {
            Ok(0) if answered => {
                return Err(Failure::protocol(
                    "the upstream closed the connection inside a response head",
                ))
            }
            Ok(0) => {
                return Err(Failure {
                    answered: false,
                    message: "the upstream closed the connection without answering".into(),
                })
            }
            Ok(_) => {}
            Err(e) => return Err(Failure::io(answered, &e)),
        }
    }
}

/// Parses a complete response head at the start of `buf` and takes it off
/// the buffer; `None` when more bytes are needed. Header values are slices
/// of the head's bytes, not copies.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Response<()>>, Failure> {
    // Where each header's name and value sit in the head.
    let mut spans: Vec<(usize, usize, usize, usize)> = Vec::new();
    let (len, version, code) = {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Err(Failure::protocol(format!(
                    "the upstream's response head is larger than {MAX_HEAD} bytes"
                )))
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                return Err(Failure::protocol(format!(
                    "the upstream's response head is malformed ({e})"
                )))
            }
        };
        let base = buf.as_ptr() as usize;
        spans.reserve_exact(parsed.headers.len());
        for h in parsed.headers.iter() {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            spans.push((name, name + h.name.len(), value, value + h.value.len()));
        }
        (len, parsed.version, parsed.code)
    };
    let version = match version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => {
            return Err(Failure::protocol(
                "the upstream answered in an unsupported HTTP version",
            ))
        }
    };
    let status = code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| Failure::protocol("the upstream's status code is invalid"))?;
    let head = buf.split_to(len).freeze();
    let mut map = HeaderMap::with_capacity(spans.len());
    for &(name_start, name_end, value_start, value_end) in &spans {
        let name = HeaderName::from_bytes(&head[name_start..name_end])
            .map_err(|_| Failure::protocol("the upstream sent an invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| Failure::protocol("the upstream sent an invalid header value"))?;
        map.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = map;
    Ok(Some(response))
}

/// How a response body is delimited (RFC 9112 §6.3), and whether the
/// connection may carry another request after it.
fn framing(response: &Response<()>, head_request: bool) -> Result<(Decode, bool), Failure> {
    let headers = response.headers();
    let status = response.status();
    let mut reuse = response.version() == Version::HTTP_11
        && !headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Decode::Done, reuse));
    }
    let has_length = headers.contains_key(header::CONTENT_LENGTH);
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if has_length {
            return Err(Failure::protocol(
                "the upstream's response has both Transfer-Encoding and Content-Length",
            ));
        }
        let mut codings = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii);
        let only_chunked = codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        if !only_chunked || response.version() != Version::HTTP_11 {
            // Another transfer coding would pass bytes the scrubber cannot read.
            return Err(Failure::protocol(
                "the upstream used a transfer coding other than chunked",
            ));
        }
        return Ok((Decode::Chunked(Chunk::Size), reuse));
    }
    if has_length {
        let mut length = None;
        for value in headers.get_all(header::CONTENT_LENGTH) {
            for part in value.as_bytes().split(|b| *b == b',') {
                let part = part.trim_ascii();
                let n = (!part.is_empty()
                    && part.len() <= 19
                    && part.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| Failure::protocol("the upstream's Content-Length is invalid"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Failure::protocol(
                        "the upstream sent conflicting Content-Length values",
                    ));
                }
                length = Some(n);
            }
        }
        let n = length.expect("a Content-Length header has a value");
        return Ok((
            if n == 0 {
                Decode::Done
            } else {
                Decode::Length(n)
            },
            reuse,
        ));
    }
    // Delimited by the end of the connection, which then cannot be reused.
    reuse = false;
    Ok((Decode::Eof, reuse))
}

/// Where the body decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decode {
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
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// At the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines (dropped), this many bytes so far.
    Trailers(usize),
}

/// What one decoding step produced.
enum Step {
    Data(Bytes),
    NeedMore,
    Done,
}

/// A response body being read from its upstream connection. The connection
/// goes back to the pool when the body ends at its framed length; if the
/// body is dropped early, the connection is closed.
pub(crate) struct ResponseBody {
    conn: Option<Conn>,
    decode: Decode,
    reuse: bool,
    to: Destination,
    pool: Arc<Pool>,
}

impl ResponseBody {
    fn release(&mut self) {
        self.decode = Decode::Done;
        if let Some(conn) = self.conn.take() {
            if self.reuse && conn.buf.is_empty() {
                // The body is done with its destination.
                self.pool.checkin(std::mem::take(&mut self.to), conn);
            }
        }
    }

    /// One decoding step over the buffered bytes.
    fn step(&mut self, buf: &mut BytesMut) -> io::Result<Step> {
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
                    } else {
                        // Trailers are not scanned, so they do not pass.
                        self.decode = Decode::Chunked(Chunk::Trailers(seen + line.len() + 2));
                    }
                }
            }
        }
    }
}

/// Takes one CRLF-terminated line (without its CRLF) off the front of `buf`.
fn take_line(buf: &mut BytesMut, max: usize) -> io::Result<Option<BytesMut>> {
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

fn framing_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("invalid response framing: {what}"),
    )
}

impl Body for ResponseBody {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::proxy::address::AddressPolicy;
    use crate::proxy::upstream::SystemResolver;

    /// What a scripted upstream does with the next request on a connection.
    #[derive(Clone)]
    enum Act {
        /// Reads a request, writes these bytes.
        Answer(&'static [u8]),
        /// Reads a request, writes these bytes, closes.
        AnswerClose(&'static [u8]),
        /// Reads a request and closes without answering.
        Drop,
        /// Reads a request head only, writes these bytes, and reads no more.
        AnswerBeforeBody(&'static [u8]),
    }

    /// Serves connection `i` with `script[i]` (the last script repeats);
    /// returns the address and every request received, by connection.
    async fn upstream(script: Vec<Vec<Act>>) -> (String, Arc<StdMutex<Vec<(usize, String)>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            for i in 0..32 {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let acts = script[i.min(script.len() - 1)].clone();
                let log = log.clone();
                tokio::spawn(async move {
                    for act in acts {
                        if let Act::AnswerBeforeBody(bytes) = act {
                            let head = read_head_only(&mut stream).await.unwrap();
                            log.lock().unwrap().push((i, head));
                            stream.write_all(bytes).await.unwrap();
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            return;
                        }
                        let Some(request) = read_request(&mut stream).await else {
                            return;
                        };
                        log.lock().unwrap().push((i, request));
                        match act {
                            Act::Answer(bytes) => stream.write_all(bytes).await.unwrap(),
                            Act::AnswerClose(bytes) => {
                                stream.write_all(bytes).await.unwrap();
                                return;
                            }
                            Act::Drop | Act::AnswerBeforeBody(_) => return,
                        }
                    }
                    // Keep the connection open until the client closes it.
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest).await;
                });
            }
        });
        (addr, seen)
    }

    /// Reads one request head.
    async fn read_head_only(stream: &mut TcpStream) -> Option<String> {
        let mut data = Vec::new();
        let mut byte = [0u8; 1];
        while !data.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            data.push(byte[0]);
        }
        Some(String::from_utf8(data).unwrap())
    }

    /// Reads one request head and its Content-Length body.
    async fn read_request(stream: &mut TcpStream) -> Option<String> {
        let head = read_head_only(stream).await?;
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.ok()?;
        Some(head + &String::from_utf8(body).unwrap())
    }

    fn client() -> Client {
        let tls = crate::tls::upstream_client_config(None).unwrap();
        Client::new(GuardedConnector::new(
            Arc::new(SystemResolver),
            AddressPolicy::LoopbackOnly,
            tls,
            Duration::from_secs(5),
        ))
    }

    fn request(method: Method, addr: &str, path: &str) -> request::Parts {
        let (mut parts, ()) = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .body(())
            .unwrap()
            .into_parts();
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_str(addr).unwrap());
        parts
    }

    async fn get(client: &Client, addr: &str) -> Result<(Response<()>, Bytes), SendError> {
        let response = client
            .send(&request(Method::GET, addr, "/"), &Bytes::new())
            .await?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| SendError::Broken(e.to_string()))?;
        Ok((Response::from_parts(parts, ()), body.to_bytes()))
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";

    #[tokio::test]
    async fn a_length_framed_response_is_read_and_its_connection_reused() {
        let (addr, seen) = upstream(vec![vec![Act::Answer(OK), Act::Answer(OK)]]).await;
        let client = client();
        for _ in 0..2 {
            let (response, body) = get(&client, &addr).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(&body[..], b"hello");
        }
        let seen = seen.lock().unwrap();
        assert_eq!(seen.iter().map(|(c, _)| *c).collect::<Vec<_>>(), [0, 0]);
        assert_eq!(client.pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_and_trailers_are_dropped() {
        let (addr, seen) = upstream(vec![vec![
            Act::Answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: secret\r\n\r\n",
            ),
            Act::Answer(OK),
        ]])
        .await;
        let client = client();
        let (response, body) = get(&client, &addr).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(&body[..], b"hello world");
        let (_, body) = get(&client, &addr).await.unwrap();
        assert_eq!(&body[..], b"hello");
        assert!(seen.lock().unwrap().iter().all(|(c, _)| *c == 0));
    }

    #[tokio::test]
    async fn ambiguous_or_unreadable_framing_is_refused() {
        let cases: [&'static [u8]; 6] = [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!",
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
        ];
        for case in cases {
            let (addr, _) = upstream(vec![vec![Act::Answer(case)]]).await;
            let err = get(&client(), &addr).await.unwrap_err();
            assert!(
                matches!(err, SendError::Broken(_)),
                "{}: {err}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[tokio::test]
    async fn identical_repeated_lengths_are_one_length() {
        let (addr, _) = upstream(vec![vec![Act::Answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\ncontent-length: 5\r\n\r\nhello",
        )]])
        .await;
        let (_, body) = get(&client(), &addr).await.unwrap();
        assert_eq!(&body[..], b"hello");
    }

    #[tokio::test]
    async fn broken_chunked_framing_fails_the_body() {
        let cases: [&'static [u8]; 3] = [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        ];
        for case in cases {
            let (addr, _) = upstream(vec![vec![Act::Answer(case)]]).await;
            let client = client();
            assert!(get(&client, &addr).await.is_err());
            assert_eq!(client.pool.idle_count(), 0);
        }
    }

    #[tokio::test]
    async fn a_body_delimited_by_close_is_read_to_the_end_and_not_reused() {
        let (addr, seen) = upstream(vec![
            vec![Act::AnswerClose(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")],
            vec![Act::Answer(OK)],
        ])
        .await;
        let client = client();
        let (_, body) = get(&client, &addr).await.unwrap();
        assert_eq!(&body[..], b"until the end");
        assert_eq!(client.pool.idle_count(), 0);
        let (_, body) = get(&client, &addr).await.unwrap();
        assert_eq!(&body[..], b"hello");
        let conns: Vec<usize> = seen.lock().unwrap().iter().map(|(c, _)| *c).collect();
        assert_eq!(conns, [0, 1]);
    }

    #[tokio::test]
    async fn a_length_cut_short_is_an_error_not_a_short_body() {
        let (addr, _) = upstream(vec![vec![Act::AnswerClose(
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nhello",
        )]])
        .await;
        assert!(get(&client(), &addr).await.is_err());
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let (addr, _) = upstream(vec![vec![Act::Answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        )]])
        .await;
        let (response, body) = get(&client(), &addr).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(&body[..], b"hello");
    }

    #[tokio::test]
    async fn a_head_response_has_no_body_whatever_its_length_says() {
        let (addr, seen) = upstream(vec![vec![
            Act::Answer(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"),
            Act::Answer(OK),
        ]])
        .await;
        let client = client();
        let response = client
            .send(&request(Method::HEAD, &addr, "/"), &Bytes::new())
            .await
            .unwrap();
        assert!(response.body().is_end_stream());
        drop(response);
        let (_, body) = get(&client, &addr).await.unwrap();
        assert_eq!(&body[..], b"hello");
        assert!(seen.lock().unwrap().iter().all(|(c, _)| *c == 0));
    }

    #[tokio::test]
    async fn a_closed_idle_connection_is_not_used() {
        let (addr, seen) = upstream(vec![vec![Act::AnswerClose(OK)], vec![Act::Answer(OK)]]).await;
        let client = client();
        get(&client, &addr).await.unwrap();
        // Let the close arrive before the next checkout.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let post = request(Method::POST, &addr, "/");
        let response = client.send(&post, &Bytes::from_static(b"x")).await.unwrap();
        assert_eq!(response.status(), 200);
        let conns: Vec<usize> = seen.lock().unwrap().iter().map(|(c, _)| *c).collect();
        assert_eq!(conns, [0, 1]);
    }

    #[tokio::test]
    async fn only_idempotent_requests_are_sent_again_when_a_reused_connection_drops_them() {
        let script = vec![vec![Act::Answer(OK), Act::Drop], vec![Act::Answer(OK)]];
        let (addr, seen) = upstream(script.clone()).await;
        let client = client();
        get(&client, &addr).await.unwrap();
        let (_, body) = get(&client, &addr).await.unwrap();
        assert_eq!(&body[..], b"hello");
        let conns: Vec<usize> = seen.lock().unwrap().iter().map(|(c, _)| *c).collect();
        assert_eq!(conns, [0, 0, 1]);

        let (addr, seen) = upstream(script).await;
        get(&client, &addr).await.unwrap();
        let post = request(Method::POST, &addr, "/");
        let Err(err) = client.send(&post, &Bytes::from_static(b"x")).await else {
            panic!("a dropped POST must not be sent again");
        };
        assert!(matches!(err, SendError::Broken(_)), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 2, "the POST was not sent twice");
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        while head.len() <= MAX_HEAD {
            head.extend_from_slice(
                b"x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        head.extend_from_slice(b"content-length: 0\r\n\r\n");
        let (addr, _) = upstream(vec![vec![Act::Answer(head.leak())]]).await;
        assert!(matches!(
            get(&client(), &addr).await.unwrap_err(),
            SendError::Broken(_)
        ));
    }

    #[tokio::test]
    async fn a_body_dropped_early_closes_its_connection() {
        let (addr, seen) = upstream(vec![vec![Act::Answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        )]])
        .await;
        let client = client();
        let response = client
            .send(&request(Method::GET, &addr, "/"), &Bytes::new())
            .await
            .unwrap();
        let mut body = response.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "hello");
        drop(body);
        assert_eq!(client.pool.idle_count(), 0);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn framing_headers_are_credgates_own() {
        let (addr, seen) = upstream(vec![vec![Act::Answer(OK), Act::Answer(OK)]]).await;
        let client = client();
        let mut post = request(Method::POST, &addr, "/upload?x=1");
        post.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        post.headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        post.headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        client
            .send(&post, &Bytes::from_static(b"body!"))
            .await
            .unwrap();
        let empty_post = request(Method::POST, &addr, "/");
        client.send(&empty_post, &Bytes::new()).await.unwrap();
        let seen = seen.lock().unwrap();
        let first = &seen[0].1;
        assert!(
            first.starts_with("POST /upload?x=1 HTTP/1.1\r\n"),
            "{first}"
        );
        assert!(first.contains("content-length: 5\r\n"), "{first}");
        assert!(!first.contains("999") && !first.contains("chunked") && !first.contains("close"));
        assert!(first.ends_with("\r\n\r\nbody!"), "{first}");
        assert!(seen[1].1.contains("content-length: 0\r\n"), "{}", seen[1].1);
    }

    #[tokio::test]
    async fn idle_connections_past_their_time_are_swept() {
        let (addr, _) = upstream(vec![vec![Act::Answer(OK)]]).await;
        let client = client();
        get(&client, &addr).await.unwrap();
        assert_eq!(client.pool.idle_count(), 1);
        client.sweep();
        assert_eq!(client.pool.idle_count(), 1);
        {
            let mut idle = client.pool.idle.lock().unwrap();
            for conn in idle.values_mut().flatten() {
                conn.idle_since -= IDLE_TIMEOUT;
            }
        }
        client.sweep();
        assert_eq!(client.pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn an_answer_before_the_whole_body_is_returned_and_the_connection_dropped() {
        let (addr, seen) = upstream(vec![vec![Act::AnswerBeforeBody(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo big!",
        )]])
        .await;
        let client = client();
        // Far more than the socket buffers take: the write would block for good.
        let body = Bytes::from(vec![b'x'; 32 * 1024 * 1024]);
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            client.send(&request(Method::POST, &addr, "/upload"), &body),
        )
        .await
        .expect("the early answer is returned, not waited past");
        let Ok(response) = sent else {
            panic!("the early answer is a response, not an error");
        };
        assert_eq!(response.status(), 413);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"too big!");
        assert_eq!(
            client.pool.idle_count(),
            0,
            "a half-sent request's connection is not reused"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }
}
