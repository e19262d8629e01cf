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

use super::h2_body::{H2Body, Pull};
use super::*;
use crate::policy::UpstreamHttp;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What a request goes over.
pub(super) enum Route {
    /// A stream of this HTTP/2 connection (and its number in the pool).
    H2(SendRequest<H2Body>, u64),
    /// HTTP/1.1: this fresh connection, or (`None`) one from the pool.
    H1(Option<Conn>),
}

/// What is known about a destination's HTTP/2 connection.
enum Slot {
    /// Nothing yet.
    Empty,
    /// A connection, maybe since gone away, and its number.
    H2(SendRequest<H2Body>, u64),
    /// The upstream chose HTTP/1.1 at this time: requests that leave the
    /// choice to it go HTTP/1.1 for a while without asking again.
    Http1Since(Instant),
}

/// HTTP/2 connections by destination.
#[derive(Default)]
pub(super) struct H2Pool {
    slots: Mutex<HashMap<Destination, Arc<tokio::sync::Mutex<Slot>>>>,
    /// Numbers connections, so a retry replaces the one that failed and
    /// not one another request has opened since.
    opened: std::sync::atomic::AtomicU64,
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
        self.route_replacing(to, http, connector, None).await
    }

    /// [`H2Pool::route`], replacing connection number `failed` (it gave a
    /// request back unsent) if it is still in the slot.
    async fn route_replacing(
        &self,
        to: &Destination,
        http: UpstreamHttp,
        connector: &GuardedConnector,
        failed: Option<u64>,
    ) -> Result<Route, SendError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots
                .entry(to.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Slot::Empty)))
                .clone()
        };
        let mut slot = slot.lock().await;
        if let Slot::H2(_, id) = &*slot {
            if failed == Some(*id) {
                *slot = Slot::Empty;
            }
        }
        if let Slot::H2(sender, id) = &*slot {
            // A connection that went away says so here, before any of the
            // request is taken: it is replaced below.
            let mut sender = sender.clone();
            if !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(Route::H2(sender, *id));
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
        let id = self
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *slot = Slot::H2(sender.clone(), id);
        Ok(Route::H2(sender, id))
    }
}

/// Sends `parts` with `body` as one stream of `sender`'s connection. As on
/// HTTP/1.1, the wait for the answer (`first_byte`) starts once the body
/// is sent, and the upstream may take no more of it for `idle`.
pub(super) async fn send(
    sender: SendRequest<H2Body>,
    retry: Retry<'_>,
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
    let mut response = std::pin::pin!(retrying(sender, request, retry));
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
            pulled.answered = answered.is_ok();
            return answer(answered);
        }
    }
    let answered = tokio::time::timeout(waits.first_byte, response)
        .await
        .map_err(|_| SendError::FirstByteTimeout)?;
    answer(answered)
}

/// Where a request that a connection refused before sending it (it was
/// going away: `GOAWAY`, closed) can go instead.
pub(super) struct Retry<'a> {
    pub(super) pool: &'a H2Pool,
    pub(super) to: &'a Destination,
    pub(super) http: UpstreamHttp,
    pub(super) connector: &'a GuardedConnector,
    /// The number of the connection the request is first sent on.
    pub(super) connection: u64,
}

/// Sends `request` on `sender`'s connection, or, if that connection gave it
/// back unsent, once more on a new one. Nothing of it reached the upstream,
/// so this is safe for any method and body.
async fn retrying(
    mut sender: SendRequest<H2Body>,
    request: http::Request<H2Body>,
    retry: Retry<'_>,
) -> Result<Response<Incoming>, SendError> {
    let mut refused = match sender.try_send_request(request).await {
        Ok(response) => return Ok(response),
        Err(refused) => refused,
    };
    let Some(request) = refused.take_message() else {
        return Err(broken(&refused.into_error()));
    };
    let route = retry
        .pool
        .route_replacing(
            retry.to,
            retry.http,
            retry.connector,
            Some(retry.connection),
        )
        .await?;
    let Route::H2(mut sender, _) = route else {
        return Err(broken(&refused.into_error()));
    };
    sender.send_request(request).await.map_err(|e| broken(&e))
}

fn broken(e: &hyper::Error) -> SendError {
    SendError::Broken(format!("the HTTP/2 stream failed: {e}"))
}

fn answer(
    answered: Result<Response<Incoming>, SendError>,
) -> Result<Response<ResponseBody>, SendError> {
    answered.map(|response| response.map(ResponseBody::H2))
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
