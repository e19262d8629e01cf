//! The body credgate sends back to the agent.
//!
//! An upstream body flows through a [`StreamScrubber`] so every credential in
//! play is masked, even when it is split across chunks; a compressed one is
//! decoded first ([`super::decoded`]), so the scrubber reads what the agent will. The request's
//! [`RecordGuard`] travels inside the body: the record is written when the
//! body is finished or dropped, so it carries the bytes actually sent, and a
//! client that disconnects mid-body still yields exactly one record.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::decoded::{DecodeFailure, UpstreamSource};
use super::trailers::TrailerScrub;
use super::websocket::Switch;
use crate::audit::RecordGuard;
use crate::reason::Reason;
use crate::scrub::StreamScrubber;
use crate::task::Task;

/// Several scrubbers applied one after the other (the credentials of every
/// task, then the requesting task's token).
pub(crate) struct ScrubChain {
    stages: Vec<StreamScrubber>,
}

impl ScrubChain {
    /// Chains `stages` in order.
    pub(crate) fn new(stages: Vec<StreamScrubber>) -> Self {
        ScrubChain { stages }
    }

    /// Feeds a chunk through every stage; returns what is safe to emit and
    /// the number of masked occurrences.
    pub(crate) fn push(&mut self, mut data: Bytes) -> (Bytes, usize) {
        let mut count = 0;
        for stage in &mut self.stages {
            let (out, n) = stage.push(data);
            data = out;
            count += n;
        }
        (data, count)
    }

    /// Feeds the chunk that ends the body through every stage; returns all
    /// that is left to emit and the number of masked occurrences.
    pub(crate) fn push_last(&mut self, mut data: Bytes) -> (Bytes, usize) {
        let mut count = 0;
        for stage in &mut self.stages {
            let (out, n) = stage.push_last(data);
            data = out;
            count += n;
        }
        (data, count)
    }

    /// Flushes every stage's held-back tail through the stages after it.
    fn finish(&mut self) -> (Bytes, usize) {
        let mut out = Vec::new();
        let mut count = 0;
        for i in 0..self.stages.len() {
            let (mut data, n) = self.stages[i].finish();
            count += n;
            for later in &mut self.stages[i + 1..] {
                let (next, n) = later.push(data);
                data = next;
                count += n;
            }
            out.extend_from_slice(&data);
        }
        (Bytes::from(out), count)
    }
}

/// A response body: either fixed bytes made by credgate, or a scrubbed
/// upstream stream.
pub(crate) enum ProxyBody {
    /// A body credgate wrote (errors, denials). The record was already
    /// completed by the pipeline.
    Full(Option<Bytes>),
    /// An upstream body being scrubbed on its way through.
    Upstream(Box<UpstreamBody>),
    /// No body: the response is a `101` and the connection switches to
    /// WebSocket, which the connection layer relays (see
    /// [`super::websocket`]). It holds the request's record.
    WebSocket(Box<Switch>),
}

/// The state of a streaming upstream body.
pub(crate) struct UpstreamBody {
    inner: UpstreamSource,
    scrubber: ScrubChain,
    task: Arc<Task>,
    record: RecordGuard,
    /// When the whole body must have arrived, if ever.
    total_deadline: Option<Instant>,
    /// The longest the upstream may pause between two frames.
    idle: Duration,
    /// When the upstream has paused too long, unless a frame comes first;
    /// counted from when credgate began to wait for it, so an agent that
    /// reads slowly does not make a flowing upstream look idle.
    idle_deadline: Instant,
    /// The last poll found the upstream with nothing to give.
    waiting: bool,
    /// Wakes the body at the earlier deadline; armed only once the upstream
    /// makes it wait, so a body that is already there costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
    tail: Option<Bytes>,
    finished: bool,
    /// How trailers are cleaned, or `None`: the agent cannot read them.
    trailer_scrub: Option<TrailerScrub>,
    /// Cleaned trailers, sent after the last of the body.
    trailers: Option<http::HeaderMap>,
}

impl ProxyBody {
    /// A fixed body.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        ProxyBody::Full(Some(bytes.into()))
    }

    /// Streams `inner` through `scrubber`, filling and finally emitting
    /// `record`. The upstream may pause at most `idle` between frames, and
    /// the whole body must arrive within `remaining` when that is given.
    /// Trailers go through `trailer_scrub`, or are dropped without one.
    pub(crate) fn upstream(
        inner: UpstreamSource,
        scrubber: ScrubChain,
        record: RecordGuard,
        remaining: Option<Duration>,
        idle: Duration,
        task: Arc<Task>,
        trailer_scrub: Option<TrailerScrub>,
    ) -> Self {
        let now = Instant::now();
        ProxyBody::Upstream(Box::new(UpstreamBody {
            inner,
            scrubber,
            task,
            record,
            // A timeout too long to add is as good as none.
            total_deadline: remaining.and_then(|r| now.checked_add(r)),
            idle,
            idle_deadline: later(now, idle),
            waiting: false,
            timer: None,
            tail: None,
            finished: false,
            trailer_scrub,
            trailers: None,
        }))
    }

    /// A `101` that switches to WebSocket.
    pub(crate) fn websocket(switch: Box<Switch>) -> Self {
        ProxyBody::WebSocket(switch)
    }

    /// The task an upstream body streams for: the connection layer stops
    /// streaming when it ends.
    pub(crate) fn task(&self) -> Option<&Arc<Task>> {
        match self {
            ProxyBody::Full(_) | ProxyBody::WebSocket(_) => None,
            ProxyBody::Upstream(body) => Some(&body.task),
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(body) => body.poll_next(cx),
            ProxyBody::WebSocket(_) => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Upstream(body) => {
                body.finished && body.tail.is_none() && body.trailers.is_none()
            }
            ProxyBody::WebSocket(_) => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            // Scrubbing keeps lengths, so the upstream's length still holds
            // (a decoded body has none).
            ProxyBody::Upstream(body) => body.inner.size_hint(),
            ProxyBody::WebSocket(_) => SizeHint::with_exact(0),
        }
    }
}

impl UpstreamBody {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(tail) = self.tail.take() {
            return Poll::Ready(Some(Ok(Frame::data(tail))));
        }
        if self.finished {
            return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
        }
        let now = Instant::now();
        if self.total_deadline.is_some_and(|d| now >= d) {
            return self.timed_out("the response did not complete within upstream.total_timeout");
        }
        if !self.waiting {
            self.idle_deadline = later(now, self.idle);
        }
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => {
                    if now >= self.idle_deadline {
                        return self.timed_out(
                            "the upstream paused the response longer than its idle_timeout (the rule's, or upstream.idle_timeout)",
                        );
                    }
                    self.waiting = true;
                    let deadline = self
                        .total_deadline
                        .map_or(self.idle_deadline, |total| total.min(self.idle_deadline));
                    let timer = match &mut self.timer {
                        Some(timer) => {
                            if timer.deadline() != deadline {
                                timer.as_mut().reset(deadline);
                            }
                            timer
                        }
                        None => self
                            .timer
                            .insert(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                    if timer.as_mut().poll(cx).is_ready() {
                        // Due: the next poll reports the timeout.
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    self.waiting = false;
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => {
                            self.take_trailers(frame);
                            continue;
                        }
                    };
                    let last = self.inner.is_end_stream();
                    let (out, count) = if last {
                        // Usually the whole body: scrubbed in one pass.
                        self.finished = true;
                        self.scrubber.push_last(data)
                    } else {
                        self.scrubber.push(data)
                    };
                    self.record.sent(out.len() as u64, count as u64);
                    if out.is_empty() {
                        if last {
                            return Poll::Ready(None);
                        }
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(None) => {
                    self.finished = true;
                    let (out, count) = self.scrubber.finish();
                    self.record.sent(out.len() as u64, count as u64);
                    if out.is_empty() {
                        return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
                    }
                    // Trailers, if any, follow on the next poll.
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Poll::Ready(Some(Err(e))) => {
                    self.finished = true;
                    // A decoded body that failed (corrupt, too large) says why.
                    match e.get_ref().and_then(|e| e.downcast_ref::<DecodeFailure>()) {
                        Some(failure) => self.record.ended(failure.reason, failure.message.clone()),
                        None => self.record.ended(
                            Reason::UpstreamError,
                            format!("the upstream body broke off: {e}"),
                        ),
                    }
                    return Poll::Ready(Some(Err(io::Error::other("upstream body failed"))));
                }
            }
        }
    }
}

impl UpstreamBody {
    /// Keeps the trailers of `frame`, cleaned, for after the body; without
    /// a [`TrailerScrub`] (an agent that cannot read them) they are dropped.
    fn take_trailers(&mut self, frame: Frame<Bytes>) {
        let (Ok(mut trailers), Some(scrub)) = (frame.into_trailers(), &self.trailer_scrub) else {
            return;
        };
        let masked = scrub.clean(&mut trailers);
        self.record.sent(0, masked as u64);
        if !trailers.is_empty() {
            self.trailers = Some(trailers);
        }
    }

    /// Ends the body with a timeout, recorded with `message`.
    fn timed_out(&mut self, message: &str) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.finished = true;
        self.record.ended(Reason::UpstreamTimeout, message.into());
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "upstream response timed out",
        ))))
    }
}

/// `at + wait`, or a time too far to matter when that overflows.
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .unwrap_or_else(|| at + Duration::from_secs(1 << 30))
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if !self.finished {
            let (reason, message) = if self.task.ended().is_some() {
                (
                    Reason::TaskEnded,
                    "the task ended while the response was streaming",
                )
            } else {
                (
                    Reason::ClientDisconnected,
                    "the agent went away before the response was complete",
                )
            };
            self.record.ended(reason, message.into());
        }
    }
}
