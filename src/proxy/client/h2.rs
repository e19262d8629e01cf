//! HTTP/2 to upstreams that choose it in TLS (ALPN).
//!
//! An HTTP/2 connection carries many requests at once, so there is one per
//! destination (the client is already per address policy), opened by the
//! first request that needs it and shared by every later one as streams.
//! A connection that has gone away (closed, `GOAWAY`) is replaced by the
//! next request. The choice of protocol is made per request: a rule may
//! force HTTP/1.1 or HTTP/2 (`upstream_http`), and a request asking for an
//! `Upgrade` always goes HTTP/1.1, which is the only version that has one.
//!
//! A streamed request body is pulled from its [`Stream`] by the connection
//! as the upstream's flow control lets it; a [`BodyAbort`] (a secret found
//! in it, a body too large, an agent gone) ends the body with an error, so
//! the stream is reset and the upstream never sees a complete request. The
//! abort itself comes back to the caller through a shared slot.

use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::oneshot;

use super::*;
use crate::policy::UpstreamHttp;

/// What a request goes over.
pub(super) enum Route {
    /// A stream of this HTTP/2 connection.
    H2(SendRequest<H2Body>),
    /// HTTP/1.1: this fresh connection, or (`None`) one from the pool.
    H1(Option<Conn>),
}

/// What is known about a destination's HTTP/2 connection.
enum Slot {
    /// Nothing yet.
    Empty,
    /// A connection, maybe since gone away.
    H2(SendRequest<H2Body>),
    /// The upstream chose HTTP/1.1 at this time: requests that leave the
    /// choice to it go HTTP/1.1 for a while without asking again.
    Http1Since(Instant),
}

/// HTTP/2 connections by destination.
#[derive(Default)]
pub(super) struct H2Pool {
    slots: Mutex<HashMap<Destination, Arc<tokio::sync::Mutex<Slot>>>>,
}

/// The HTTP version `parts` asks for: the rule's choice, carried as a
/// request extension, except that an `Upgrade` needs HTTP/1.1.
pub(super) fn wanted(parts: &request::Parts) -> UpstreamHttp {
    if parts.headers.contains_key(header::UPGRADE) {
        return UpstreamHttp::Http1;
    }
    parts
        .extensions
        .get::<UpstreamHttp>()
        .copied()
        .unwrap_or_default()
}

impl H2Pool {
    /// How a TLS request to `to` goes when `http` is not `Http1`. The slot's
    /// lock is held while connecting, so requests that arrive together
    /// share the one connection the first of them opens.
    pub(super) async fn route(
        &self,
        to: &Destination,
        http: UpstreamHttp,
        connector: &GuardedConnector,
    ) -> Result<Route, SendError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots
                .entry(to.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Slot::Empty)))
                .clone()
        };
        let mut slot = slot.lock().await;
        if let Slot::H2(sender) = &*slot {
            // A connection that went away says so here, before any of the
            // request is taken: it is replaced below.
            let mut sender = sender.clone();
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(Route::H2(sender));
            }
        }
        match &*slot {
            Slot::Http1Since(at) if http == UpstreamHttp::Auto && at.elapsed() < IDLE_TIMEOUT => {
                return Ok(Route::H1(None))
            }
            _ => {}
        }
        let connect = connector.connect_offering(&to.host, to.port, true, http);
        let io = match tokio::time::timeout(connector.connect_timeout, connect).await {
            Err(_) => return Err(ConnectError::Timeout(to.host.clone()).into()),
            Ok(Err(ConnectError::Tls { host, source })) if http == UpstreamHttp::Http2 => {
                // Usually the upstream refusing every protocol offered.
                return Err(ConnectError::NoHttp2 {
                    host,
                    detail: format!(" (TLS failed: {source})"),
                }
                .into());
            }
            Ok(io) => io?,
        };
        if !io.is_h2() {
            if http == UpstreamHttp::Http2 {
                return Err(ConnectError::NoHttp2 {
                    host: to.host.clone(),
                    detail: String::new(),
                }
                .into());
            }
            *slot = Slot::Http1Since(Instant::now());
            return Ok(Route::H1(Some(Conn::new(io))));
        }
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| SendError::Broken(format!("the HTTP/2 handshake failed: {e}")))?;
        // The connection runs on its own: its streams belong to many requests.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        *slot = Slot::H2(sender.clone());
        Ok(Route::H2(sender))
    }
}

/// Sends `parts` with `body` as one stream of `sender`'s connection. As on
/// HTTP/1.1, the wait for the answer (`first_byte`) starts once the body
/// is sent, and the upstream may take no more of it for `idle`.
pub(super) async fn send(
    mut sender: SendRequest<H2Body>,
    parts: &request::Parts,
    body: &mut Outgoing,
    waits: Waits,
) -> Result<Response<ResponseBody>, SendError> {
    let (request_body, pulled) = match body {
        Outgoing::Whole(whole) => (H2Body::Whole(Some(whole.clone())), None),
        Outgoing::Stream(_) => {
            let Outgoing::Stream(stream) = std::mem::replace(body, Outgoing::Whole(Bytes::new()))
            else {
                unreachable!("matched above")
            };
            let (pull, pulled) = Pull::new(stream);
            (H2Body::Stream(Box::new(pull)), Some(pulled))
        }
    };
    let request = h2_request(parts, request_body)?;
    let mut response = std::pin::pin!(sender.send_request(request));
    if let Some(mut pulled) = pulled {
        let check = (waits.idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let early = loop {
            tokio::select! {
                biased;
                ended = &mut pulled.done => match ended {
                    Ok(Err(abort)) => {
                        pulled.restore(body);
                        return Err(SendError::Body(abort));
                    }
                    // Sent, or dropped by a connection that answered or broke.
                    _ => break None,
                },
                answered = &mut response => break Some(answered),
                () = tokio::time::sleep(check) => {
                    if pulled.stalled(waits.idle) {
                        return Err(SendError::Stalled);
                    }
                }
            }
        };
        pulled.restore(body);
        if let Some(abort) = pulled.abort() {
            return Err(SendError::Body(abort));
        }
        if let Some(answered) = early {
            return answer(answered);
        }
    }
    let answered = tokio::time::timeout(waits.first_byte, response)
        .await
        .map_err(|_| SendError::FirstByteTimeout)?;
    answer(answered)
}

fn answer(
    answered: Result<Response<Incoming>, hyper::Error>,
) -> Result<Response<ResponseBody>, SendError> {
    answered
        .map(|response| response.map(ResponseBody::H2))
        .map_err(|e| SendError::Broken(format!("the HTTP/2 stream failed: {e}")))
}

/// Headers that belong to one HTTP/1.1 connection and have no place in
/// HTTP/2 (RFC 9113 §8.2.2); the authority travels as `:authority`.
const CONNECTION_SPECIFIC: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "host",
    "content-length",
];

/// The request as HTTP/2 sends it. The length comes from the body's size.
fn h2_request(parts: &request::Parts, body: H2Body) -> Result<http::Request<H2Body>, SendError> {
    let mut request = http::Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = Version::HTTP_2;
    let headers = request.headers_mut();
    headers.reserve(parts.headers.len() + 1);
    for (name, value) in &parts.headers {
        if !CONNECTION_SPECIFIC.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    // credgate reads trailers itself (scrubbed, forwarded or dropped), and
    // gRPC servers require this.
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    if request.uri().authority().is_none() {
        return Err(ConnectError::NoHost.into());
    }
    Ok(request)
}

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

/// The sender's side of a [`Pull`].
struct Pulled {
    shared: Arc<Mutex<Shared>>,
    done: oneshot::Receiver<Result<(), BodyAbort>>,
}

impl Pull {
    fn new(stream: Box<Stream>) -> (Pull, Pulled) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (tx, rx) = oneshot::channel();
        let pull = Pull {
            length: stream.length(),
            stream: Some(stream),
            next: None,
            shared: shared.clone(),
            done: Some(tx),
        };
        (pull, Pulled { shared, done: rx })
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poll_piece(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.shared().handed = None;
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
    fn stalled(&self, idle: Duration) -> bool {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.handed.is_some_and(|at| at.elapsed() >= idle)
    }

    /// Why the body stopped, if it did.
    fn abort(&self) -> Option<BodyAbort> {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared.abort.take()
    }

    /// Puts the stream back into `body` once the connection is done with it.
    fn restore(&self, body: &mut Outgoing) {
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
