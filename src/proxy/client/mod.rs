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

use super::h1::{parse_chunk_size, write_turn};
use super::interim::{EarlyHints, MAX_INTERIM};
use super::request_body::{BodyAbort, Outgoing, Stream};
use super::upstream::{ConnectError, GuardedConnector};
use crate::stream::Io;

/// How long an idle connection stays in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per destination; more are closed.
const MAX_IDLE_PER_DESTINATION: usize = 64;
/// The largest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The most header lines in a response head.
const MAX_HEADERS: usize = 128;
/// The longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// The most trailer bytes read (and dropped) after a chunked body.
const MAX_TRAILERS: usize = 16 * 1024;
/// Request bodies up to this size go out in the same write as the head.
const INLINE_BODY: usize = 16 * 1024;

mod body;
mod h2;
mod h2_body;
mod pool;
mod read;
mod response;
mod upgrade;
mod write;

use body::*;
use h2::{H2Pool, Route};
use pool::*;
use read::*;
pub(crate) use response::ResponseBody;
pub(crate) use upgrade::Upgraded;
use write::*;

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
    /// No response head within `upstream.first_byte_timeout`.
    #[error("no answer within upstream.first_byte_timeout")]
    FirstByteTimeout,
    /// The upstream stopped reading a streamed request body.
    #[error("the upstream stopped reading the request body for upstream.idle_timeout")]
    Stalled,
    /// The request body stopped before it was all sent (a secret found in
    /// it, a body past `max_body`, an agent that went away).
    #[error("{}", .0.message)]
    Body(BodyAbort),
}

/// How long an exchange may wait on the upstream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waits {
    /// From the end of the request to the response head.
    pub(crate) first_byte: Duration,
    /// For the upstream to take more of a streamed request body.
    pub(crate) idle: Duration,
}

/// A failed exchange on one connection; `answered` once any byte of a
/// response arrived (a request is retried on a fresh connection only before).
struct Failure {
    answered: bool,
    message: String,
    /// Set when a wait ran out, not the connection.
    waited: Option<Waited>,
}

/// Which wait on the upstream ran out.
#[derive(Clone, Copy)]
enum Waited {
    /// It stopped taking the request body (`upstream.idle_timeout`).
    Body,
    /// It did not answer (`upstream.first_byte_timeout`).
    Answer,
}

impl Failure {
    fn io(answered: bool, e: &io::Error) -> Self {
        Failure {
            answered,
            message: format!("the connection failed: {e}"),
            waited: None,
        }
    }

    fn protocol(message: impl Into<String>) -> Self {
        Failure {
            answered: true,
            message: message.into(),
            waited: None,
        }
    }

    /// A wait that ran out: never retried (the upstream may be working on it).
    fn waited(waited: Waited) -> Self {
        Failure {
            answered: true,
            message: String::new(),
            waited: Some(waited),
        }
    }
}

impl From<Failure> for SendError {
    fn from(f: Failure) -> SendError {
        match f.waited {
            Some(Waited::Body) => SendError::Stalled,
            Some(Waited::Answer) => SendError::FirstByteTimeout,
            None => SendError::Broken(f.message),
        }
    }
}

/// The upstream client for one address policy.
pub(crate) struct Client {
    connector: GuardedConnector,
    pool: Arc<Pool>,
    h2: H2Pool,
}

impl Client {
    pub(crate) fn new(connector: GuardedConnector) -> Self {
        Client {
            connector,
            pool: Arc::default(),
            h2: H2Pool::default(),
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
    /// upstream may have closed the idle connection as it was taken. A
    /// streamed body cannot be sent twice, so it always takes a new one.
    ///
    /// Over TLS, the upstream may choose HTTP/2 (see [`h2`]); an
    /// [`UpstreamHttp`](crate::policy::UpstreamHttp) in the request's
    /// extensions says what the rule allows.
    ///
    /// Early hints (`103`) that come before the answer go to the
    /// [`EarlyHints`] in the request's extensions, if any (an HTTP/1.1
    /// upstream's: hyper's HTTP/2 client consumes them).
    pub(crate) async fn send(
        &self,
        parts: &request::Parts,
        body: &mut Outgoing,
        waits: Waits,
    ) -> Result<Response<ResponseBody>, SendError> {
        let to = Destination::of(&parts.uri)?;
        let http = h2::wanted(parts);
        let mut fresh = None;
        if to.tls && http != crate::policy::UpstreamHttp::Http1 {
            match self.h2.route(&to, http, &self.connector).await? {
                Route::H2(sender, connection) => {
                    let retry = h2::Retry {
                        pool: &self.h2,
                        to: &to,
                        http,
                        connector: &self.connector,
                        connection,
                    };
                    return h2::send(sender, retry, parts, body, waits).await;
                }
                Route::H1(conn) => fresh = conn,
            }
        }
        match body {
            Outgoing::Whole(body) => self.send_whole(parts, body, to, waits, fresh).await,
            Outgoing::Stream(stream) => self.send_stream(parts, stream, to, waits, fresh).await,
        }
    }

    /// `fresh` is a connection just made for this request (the upstream
    /// chose HTTP/1.1 in ALPN).
    async fn send_whole(
        &self,
        parts: &request::Parts,
        body: &Bytes,
        to: Destination,
        waits: Waits,
        fresh: Option<Conn>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let message = encode_request(parts, body);
        let head_request = parts.method == Method::HEAD;
        let hints = parts.extensions.get::<EarlyHints>();

        if let Some(mut conn) = fresh {
            return match exchange(&mut conn, &message, body, head_request, hints, waits).await {
                Ok(head) => Ok(self.response(head, conn, to)),
                Err(f) => Err(f.into()),
            };
        }
        if let Some(mut conn) = self.pool.checkout(&to) {
            match exchange(&mut conn, &message, body, head_request, hints, waits).await {
                Ok(head) => return Ok(self.response(head, conn, to)),
                Err(f) if !f.answered && parts.method.is_idempotent() => {}
                Err(f) => return Err(f.into()),
            }
        }
        let mut conn = self.connect(&to).await?;
        match exchange(&mut conn, &message, body, head_request, hints, waits).await {
            Ok(head) => Ok(self.response(head, conn, to)),
            Err(f) => Err(f.into()),
        }
    }

    /// Sends a streamed body on a new connection; the wait for the answer
    /// starts when the body has been sent.
    async fn send_stream(
        &self,
        parts: &request::Parts,
        body: &mut Stream,
        to: Destination,
        waits: Waits,
        fresh: Option<Conn>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let length = body.length();
        let mut conn = match fresh {
            Some(conn) => conn,
            None => self.connect(&to).await?,
        };
        let mut head = Vec::with_capacity(512);
        encode_head(parts, length, &mut head);
        write_turn().await;
        tokio::time::timeout(waits.idle, conn.io.write_all(&head))
            .await
            .map_err(|_| SendError::Stalled)?
            .map_err(|e| SendError::Broken(Failure::io(false, &e).message))?;
        let early = match write_stream(&mut conn, body, length.is_none(), waits.idle).await {
            Ok(early) => early,
            Err(StreamFailure::Body(abort)) => return Err(SendError::Body(abort)),
            Err(StreamFailure::Stalled) => return Err(SendError::Stalled),
            // An upstream that answered and closed is read below.
            Err(StreamFailure::Io(e)) if conn.buf.is_empty() => {
                return Err(SendError::Broken(Failure::io(false, &e).message))
            }
            Err(StreamFailure::Io(_)) => true,
        };
        let head_request = parts.method == Method::HEAD;
        let hints = parts.extensions.get::<EarlyHints>();
        let answer = read_head(&mut conn, head_request, hints);
        let mut head = tokio::time::timeout(waits.first_byte, answer)
            .await
            .map_err(|_| SendError::FirstByteTimeout)??;
        if early {
            // The rest of the request body was never sent.
            head.reuse = false;
        }
        Ok(self.response(head, conn, to))
    }

    async fn connect(&self, to: &Destination) -> Result<Conn, SendError> {
        let io = tokio::time::timeout(
            self.connector.connect_timeout,
            self.connector.connect(&to.host, to.port, to.tls),
        )
        .await
        .map_err(|_| ConnectError::Timeout(to.host.clone()))??;
        Ok(Conn::new(io))
    }

    fn response(&self, head: Head, conn: Conn, to: Destination) -> Response<ResponseBody> {
        let mut body = H1Body {
            conn: Some(conn),
            decode: head.decode,
            reuse: head.reuse,
            to,
            pool: self.pool.clone(),
            trailers: None,
        };
        if body.decode == Decode::Done {
            body.release();
        }
        head.response.map(|()| ResponseBody::H1(body))
    }
}

/// Writes the request (bounded by `waits.idle`: a body held whole may be
/// large) and reads the response head (bounded by `waits.first_byte`, which
/// starts once the request has been sent).
async fn exchange(
    conn: &mut Conn,
    message: &Message,
    body: &[u8],
    head_request: bool,
    hints: Option<&EarlyHints>,
    waits: Waits,
) -> Result<Head, Failure> {
    let sent = tokio::time::timeout(waits.idle, async {
        write_turn().await;
        conn.io.write_all(&message.bytes).await?;
        let early = !message.body_inline && write_body(conn, body).await?;
        if !early {
            conn.io.flush().await?;
        }
        Ok::<_, io::Error>(early)
    })
    .await
    .map_err(|_| Failure::waited(Waited::Body))?;
    let early = sent.map_err(|e| Failure::io(!conn.buf.is_empty(), &e))?;
    let mut head = tokio::time::timeout(waits.first_byte, read_head(conn, head_request, hints))
        .await
        .map_err(|_| Failure::waited(Waited::Answer))??;
    if early {
        // The rest of the request body was never sent.
        head.reuse = false;
    }
    Ok(head)
}

#[cfg(test)]
mod tests;
