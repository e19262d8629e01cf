//! An upstream body as credgate scrubs it: as it came, or decoded from the
//! content coding the upstream used although credgate asked for identity.
//!
//! Decoding happens between the upstream connection and the scrub chain, so
//! the scrubber sees what the agent will, and the agent gets the body
//! decoded (without `Content-Encoding`). Before the response head goes out,
//! [`prime`] decodes the start of the body: an upstream that sends garbage
//! or a bomb from its first bytes gets a clean 502. Past the head, a decode
//! failure ends the body with an error, so the connection closes without a
//! proper end of body and the agent never takes a cut body for a whole one.
//! Trailers are held until the last decoded piece has gone, and follow it;
//! the scrub chain cleans them like any response's (see [`super::trailers`]).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http_body::{Body, Frame, SizeHint};

use super::client::ResponseBody;
use super::respond::Deny;
use crate::decode::{parse_codings, BodyDecoder, Coding, DecodeError, DecodeLimits, RATIO_FLOOR};
use crate::reason::Reason;
use crate::task::Task;

/// Why a decoded body stopped, carried inside the `io::Error` it ends
/// with so the record can name the reason.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct DecodeFailure {
    /// The stable reason.
    pub(crate) reason: Reason,
    /// Words for the record (never body bytes).
    pub(crate) message: String,
}

impl From<DecodeError> for DecodeFailure {
    fn from(e: DecodeError) -> Self {
        DecodeFailure {
            reason: e.reason(),
            message: e.to_string(),
        }
    }
}

/// The codings of a response, read from every `Content-Encoding` line (one
/// `identity` line must not hide a `gzip`). Call it before the hop-by-hop
/// headers go, so a `Connection` header naming `Content-Encoding` cannot
/// make an encoding disappear.
pub(crate) fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, Deny> {
    parse_codings(
        headers
            .get_all(header::CONTENT_ENCODING)
            .iter()
            .map(|v| v.as_bytes()),
    )
    .map_err(|e| Deny::new(e.reason(), e.to_string()))
}

/// A body from the upstream, on its way to the scrub chain.
pub(crate) enum UpstreamSource {
    /// Not encoded: passed as it comes.
    Identity(ResponseBody),
    /// Content-coded: decoded in pieces.
    Decoded(Box<DecodedBody>),
}

/// A content-coded body being decoded.
pub(crate) struct DecodedBody {
    inner: ResponseBody,
    decoder: BodyDecoder,
    /// Pieces decoded before the head went out.
    ready: VecDeque<Bytes>,
    /// The upstream's trailers, which come after all of the encoded body and
    /// go after all of the decoded one.
    trailers: Option<HeaderMap>,
}

/// Decodes the start of a content-coded body, before the response head goes
/// out: until the first read has given decoded output, the body has ended,
/// or a little over [`RATIO_FLOOR`] has been decoded (so a bomb is judged).
/// Waits for the upstream at most `wait` (what is left of the idle and
/// total timeouts), and not past the task's end.
/// On success, `headers` lose `Content-Encoding` and `Content-Length`.
pub(crate) async fn prime(
    inner: ResponseBody,
    codings: &[Coding],
    limits: DecodeLimits,
    wait: Duration,
    task: &Task,
    headers: &mut HeaderMap,
) -> Result<UpstreamSource, Deny> {
    let mut body = DecodedBody {
        inner,
        decoder: BodyDecoder::new(codings, limits),
        ready: VecDeque::new(),
        trailers: None,
    };
    let primed = tokio::select! {
        primed = tokio::time::timeout(wait, poll_fn(|cx| body.poll_prime(cx))) => primed,
        () = task.wait_ended() => {
            return Err(Deny::new(Reason::TaskEnded, "the task ended while the response was decoded"));
        }
    };
    match primed {
        Err(_) => Err(Deny::new(
            Reason::UpstreamTimeout,
            "the compressed response did not begin within upstream.idle_timeout (or upstream.total_timeout)",
        )),
        Ok(Err(failure)) => Err(Deny::new(failure.reason, failure.message)),
        Ok(Ok(())) => {
            // The agent gets the body decoded and re-framed.
            headers.remove(header::CONTENT_ENCODING);
            headers.remove(header::CONTENT_LENGTH);
            Ok(UpstreamSource::Decoded(Box::new(body)))
        }
    }
}

impl DecodedBody {
    fn poll_prime(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DecodeFailure>> {
        loop {
            match self.decoder.next_piece() {
                Err(e) => return Poll::Ready(Err(e.into())),
                Ok(Some(piece)) => {
                    self.ready.push_back(piece);
                    if self.decoder.decoded() > RATIO_FLOOR {
                        return Poll::Ready(Ok(()));
                    }
                }
                Ok(None) if self.decoder.is_finished() || !self.ready.is_empty() => {
                    return Poll::Ready(Ok(()));
                }
                Ok(None) => match self.read(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(DecodeFailure {
                            reason: Reason::UpstreamError,
                            message: format!("the upstream body broke off: {e}"),
                        }))
                    }
                },
            }
        }
    }

    /// Feeds the decoder the next frame of the upstream body.
    fn read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.decoder.end();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Err(e)),
            Poll::Ready(Some(Ok(frame))) => {
                match frame.into_data() {
                    Ok(data) => self.decoder.push(&data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers = Some(trailers);
                        }
                    }
                }
                Poll::Ready(Ok(()))
            }
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if let Some(piece) = self.ready.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        loop {
            match self.decoder.next_piece() {
                Err(e) => return Poll::Ready(Some(Err(io::Error::other(DecodeFailure::from(e))))),
                Ok(Some(piece)) => return Poll::Ready(Some(Ok(Frame::data(piece)))),
                Ok(None) if self.decoder.is_finished() => {
                    return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
                }
                Ok(None) => match self.read(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                },
            }
        }
    }
}

impl Body for UpstreamSource {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            UpstreamSource::Identity(body) => Pin::new(body).poll_frame(cx),
            UpstreamSource::Decoded(body) => body.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamSource::Identity(body) => body.is_end_stream(),
            UpstreamSource::Decoded(body) => {
                body.ready.is_empty() && body.decoder.is_finished() && body.trailers.is_none()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamSource::Identity(body) => body.size_hint(),
            // Unknown until decoded: re-framed (chunked on HTTP/1.1).
            UpstreamSource::Decoded(_) => SizeHint::default(),
        }
    }
}
