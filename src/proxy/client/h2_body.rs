//! A request body as an HTTP/2 upstream connection pulls it: one piece,
//! or pieces of a scanned [`Stream`] taken as flow control allows. The
//! request that sent it shares a slot with it, to learn how it ended (a
//! [`BodyAbort`]), whether the upstream stopped taking it, and to get the
//! stream back for its counts and findings.

use tokio::sync::oneshot;

use super::*;

/// A request body as an HTTP/2 connection pulls it.
pub(crate) enum H2Body {
    /// One piece, sent in one go.
    Whole(Option<Bytes>),
    /// Pieces pulled from a scanned stream.
    Stream(Box<Pull>),
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            H2Body::Whole(whole) => Poll::Ready(whole.take().map(|b| Ok(Frame::data(b)))),
            H2Body::Stream(pull) => pull.poll_piece(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            H2Body::Whole(whole) => whole.as_ref().is_none_or(Bytes::is_empty),
            H2Body::Stream(pull) => pull.done.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            H2Body::Whole(whole) => {
                SizeHint::with_exact(whole.as_ref().map_or(0, |b| b.len() as u64))
            }
            H2Body::Stream(pull) => pull
                .length
                .map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}

type Next = Pin<Box<dyn Future<Output = (Box<Stream>, Result<Option<Bytes>, BodyAbort>)> + Send>>;

/// What the body and the request that sent it share.
#[derive(Default)]
struct Shared {
    /// The stream, back from the body once it ended (for its counts and
    /// findings).
    stream: Option<Box<Stream>>,
    /// When the body last handed a piece over and has not been asked for
    /// the next since: the upstream is not taking more.
    handed: Option<Instant>,
    /// Why the body stopped, when it did: the connection may report the
    /// reset it caused before the sender hears of it.
    abort: Option<BodyAbort>,
    /// The request was given up (stalled, or its pipeline cut short): the
    /// body must never end, so its next poll resets the stream.
    cancelled: bool,
}

/// A streamed body being pulled by the connection.
pub(crate) struct Pull {
    stream: Option<Box<Stream>>,
    next: Option<Next>,
    length: Option<u64>,
    shared: Arc<Mutex<Shared>>,
    /// Says how the body ended; `None` once it has.
    done: Option<oneshot::Sender<Result<(), BodyAbort>>>,
}

/// The sender's side of a [`Pull`]. Dropped before the body ended and
/// without an answer to carry on for (a stalled upstream, a task that
/// ended), it cancels the body.
pub(super) struct Pulled {
    shared: Arc<Mutex<Shared>>,
    pub(super) done: oneshot::Receiver<Result<(), BodyAbort>>,
    /// The upstream answered while the body still flows (a gRPC stream
    /// going both ways): the body goes on with the response.
    pub(super) answered: bool,
}

impl Drop for Pulled {
    fn drop(&mut self) {
        if !self.answered {
            self.shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .cancelled = true;
        }
    }
}

impl Pull {
    pub(super) fn new(stream: Box<Stream>) -> (Pull, Pulled) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, rx) = oneshot::channel();
        let pull = Pull {
            length: stream.length(),
            stream: Some(stream),
            next: None,
            shared: shared.clone(),
            done: Some(tx),
        };
        let pulled = Pulled {
            shared,
            done: rx,
            answered: false,
        };
        (pull, pulled)
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poll_piece(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let cancelled = {
            let mut shared = self.shared();
            shared.handed = None;
            shared.cancelled
        };
        if cancelled {
            self.done = None;
            return Poll::Ready(Some(Err(io::Error::other("the request was given up"))));
        }
        let next = match &mut self.next {
            Some(next) => next,
            None => {
                let Some(mut stream) = self.stream.take() else {
                    return Poll::Ready(None);
                };
                self.next.insert(Box::pin(async move {
                    let next = stream.next().await;
                    (stream, next)
                }))
            }
        };
        let Poll::Ready((stream, next)) = next.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        self.next = None;
        match next {
            Ok(Some(piece)) => {
                self.stream = Some(stream);
                self.shared().handed = Some(Instant::now());
                Poll::Ready(Some(Ok(Frame::data(piece))))
            }
            Ok(None) => {
                self.end(stream, Ok(()));
                Poll::Ready(None)
            }
            Err(abort) => {
                let message = abort.message.clone();
                self.end(stream, Err(abort));
                // The error resets the stream: the upstream sees no end.
                Poll::Ready(Some(Err(io::Error::other(message))))
            }
        }
    }

    fn end(&mut self, stream: Box<Stream>, outcome: Result<(), BodyAbort>) {
        {
            let mut shared = self.shared();
            shared.stream = Some(stream);
            shared.abort = outcome.as_ref().err().cloned();
        }
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
    }
}

impl Pulled {
    /// Whether the upstream has not taken the last piece for `idle`.
    pub(super) fn stalled(&self, idle: Duration) -> bool {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.handed.is_some_and(|at| at.elapsed() >= idle)
    }

    /// Why the body stopped, if it did.
    pub(super) fn abort(&self) -> Option<BodyAbort> {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.abort.take()
    }

    /// Puts the stream back into `body` once the connection is done with it.
    pub(super) fn restore(&self, body: &mut Outgoing) {
        let stream = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stream
            .take();
        if let Some(stream) = stream {
            *body = Outgoing::Stream(stream);
        }
    }
}
