//! The listener: plain HTTP proxying, CONNECT, and TLS interception.
//!
//! A plain connection speaks HTTP/1 (absolute-form requests, or CONNECT).
//! CONNECT is authenticated and checked against the task's scopes *before*
//! any DNS lookup; then the agent's TLS is terminated with a leaf minted for
//! the CONNECT host, and every request inside is authorised on its own, over
//! HTTP/1.1 or HTTP/2 as ALPN decides. Nothing falls through to a blind
//! tunnel unless a rule says `tunnel: true`.
//!
//! Every wait on the agent is bounded, and a request is admitted (task
//! identified, decision log writable) before its body is read, so a peer
//! without a task token cannot make credgate hold anything for long.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use super::address::AddressPolicy;
use super::admission::{self, Admitted, Ask};
use super::body::ProxyBody;
use super::gateway::Gateway;
use super::h1::{BodyReader, Framing, H1Connection, H1Error, InFlight, RequestHead};
use super::identify::{identify, refused};
use super::interim::{self, InterimQueue};
use super::peer_uid::peer_uid;
use super::pipeline::{self, new_record, ConnContext, Tunnel};
use super::request_body::{BodyAbort, Piece, RequestBody, Streamed, FIRST_PART, PIECES_IN_FLIGHT};
use super::respond::{deny, CloseConnection, Deny};
use super::rewind::Rewind;
use super::upstream::dial;
use crate::audit::RecordGuard;
use crate::policy::normalize_host;
use crate::reason::Reason;
use crate::task::Task;

/// TLS record type of a handshake: the first byte of every ClientHello.
pub(super) const TLS_HANDSHAKE: u8 = 0x16;
/// Connections served at once; further agents wait in the accept queue.
const MAX_CONNECTIONS: usize = 10_000;
/// How long a connection may sit without sending the next request head.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the first part of a request body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a streamed request body may go without a byte.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the TLS handshake after CONNECT may take.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Concurrent HTTP/2 streams per intercepted connection (each may buffer the
/// first part of a body). 100, as most servers allow: an agent that keeps
/// that many in flight gets them answered together, its frames and
/// credgate's writes batched (a fifth less CPU per request than at 32).
const H2_MAX_STREAMS: u32 = 100;
/// A blind tunnel with no traffic either way for this long is closed.
const TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// At shutdown, how long open connections get to finish before they are cut.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Accepts agent connections until `shutdown` resolves, then lets open
/// connections finish (briefly) and cuts the rest, so every record of theirs
/// is emitted before this returns.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    accept(gw, listener, Door::Proxy, shutdown).await;
}

/// Serves the transparent listener (see [`super::transparent`]) until
/// `shutdown` resolves, as [`serve`] does the proxy's.
pub async fn serve_transparent(
    gw: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    accept(gw, listener, Door::Transparent, shutdown).await;
}

/// A task's own port (see [`crate::task::TaskService::open_task_port`]): a
/// listener on `127.0.0.1` whose connections run as `task` with no
/// `Proxy-Authorization`, served until the task ends. With `uid`, only a
/// client socket of that user is the task's; any other caller is an
/// ordinary, unauthenticated one (answered 407 unless it presents a token).
pub(crate) async fn serve_task_port(
    gw: Arc<Gateway>,
    listener: TcpListener,
    task: Arc<Task>,
    uid: Option<u32>,
) {
    let ended = {
        let task = task.clone();
        async move { task.wait_ended().await }
    };
    accept(
        gw,
        listener,
        Door::TaskPort(Arc::new(PortOwner { task, uid })),
        ended,
    )
    .await;
}

/// Which way in a listener is.
#[derive(Clone)]
enum Door {
    /// The proxy port agents are pointed at.
    Proxy,
    /// A task's own port.
    TaskPort(Arc<PortOwner>),
    /// Connections the egress lock-down redirected.
    Transparent,
}

/// Whose port a listener is: the connections of `uid` (any user when
/// `None`) run as `task`.
struct PortOwner {
    task: Arc<Task>,
    uid: Option<u32>,
}

impl PortOwner {
    /// The task a connection from `peer` to `local` runs as, if it is the
    /// owner's.
    fn task_for(&self, peer: SocketAddr, local: Option<SocketAddr>) -> Option<Arc<Task>> {
        let owned = match self.uid {
            None => true,
            Some(uid) => local.and_then(|local| peer_uid(peer, local)) == Some(uid),
        };
        if !owned {
            tracing::warn!(
                task = %self.task.id,
                %peer,
                "a connection to the task's port from another user is not the task's"
            );
        }
        owned.then(|| self.task.clone())
    }
}

/// The accept loop of [`serve`] and [`serve_task_port`].
async fn accept(
    gw: Arc<Gateway>,
    listener: TcpListener,
    door: Door,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let local = listener.local_addr().ok();
    loop {
        tokio::select! {
            permit = slots.clone().acquire_owned() => {
                let Ok(permit) = permit else { break };
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            let gw = gw.clone();
                            let door = door.clone();
                            connections.spawn(async move {
                                match door {
                                    Door::Proxy => handle_connection(gw, stream, peer, None).await,
                                    Door::TaskPort(owner) => {
                                        // Looked up here, not in the accept
                                        // loop: it reads the kernel's socket table.
                                        let port_task = owner.task_for(peer, local);
                                        handle_connection(gw, stream, peer, port_task).await;
                                    }
                                    Door::Transparent => super::transparent::handle(gw, stream, peer).await,
                                }
                                drop(permit);
                            });
                            // A finished connection's task stays allocated
                            // until it is reaped; when connections keep
                            // arriving, the branch below is not enough.
                            while connections.try_join_next().is_some() {}
                        }
                        Err(e) => {
                            // Out of file descriptors and the like: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    () = &mut shutdown => break,
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        // Aborting drops each connection's futures, and with them their
        // record guards: the records are emitted now, before the log closes.
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

async fn handle_connection(
    gw: Arc<Gateway>,
    stream: TcpStream,
    peer: SocketAddr,
    port_task: Option<Arc<Task>>,
) {
    let _ = stream.set_nodelay(true);
    let ctx = ConnContext::plain(peer, port_task);
    let mut conn = H1Connection::new(stream, BytesMut::new());
    // A CONNECT answered with a 407 challenge gives the connection back: the
    // client retries on it with credentials.
    while let Some((open, head)) = serve_h1(&gw, conn, &ctx).await {
        match handle_connect(gw.clone(), open, head, &ctx).await {
            Some(open) => conn = open,
            None => return,
        }
    }
}

/// Bounds each wait of a connection for its next message by `period`. One
/// timer serves the whole connection and is pushed back before each wait:
/// moving a pending timer's deadline later is one atomic update, where a
/// timer per wait is an insertion into the timer wheel and a removal.
struct IdleTimer {
    period: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimer {
    fn new(period: Duration) -> IdleTimer {
        IdleTimer {
            period,
            timer: Box::pin(tokio::time::sleep(period)),
        }
    }

    /// `wait`'s output, or `None` when it takes longer than the period.
    async fn bound<F: Future>(&mut self, wait: F) -> Option<F::Output> {
        self.timer
            .as_mut()
            .reset(tokio::time::Instant::now() + self.period);
        tokio::select! {
            biased;
            out = wait => Some(out),
            () = &mut self.timer => None,
        }
    }
}

/// Serves HTTP/1 requests until the connection closes. On a plain connection
/// a CONNECT ends this loop and is handed back with the connection.
pub(super) async fn serve_h1<IO>(
    gw: &Gateway,
    mut conn: H1Connection<IO>,
    ctx: &ConnContext,
) -> Option<(H1Connection<IO>, RequestHead)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut idle = IdleTimer::new(IDLE_TIMEOUT);
    loop {
        // A connection idle for too long closes quietly.
        let head = match idle.bound(conn.read_head()).await? {
            Err(H1Error::Closed) => return None,
            Ok(head) => head,
            Err(e) => {
                // No answer to a challenge held for the connection: that
                // one is the deny it was, recorded before this one.
                drop(ctx.take_challenge());
                let response = deny(new_record(gw), Deny::new(e.reason(), e.to_string()));
                if e.reason() != Reason::ClientDisconnected {
                    let _ = conn.write_response(response, false, false).await;
                }
                return None;
            }
        };
        let _in_flight = InFlight::enter();
        if head.parts.method == Method::CONNECT {
            if ctx.tunnel.is_none() {
                return Some((conn, head));
            }
            let mut rec = new_record(gw);
            rec.method("CONNECT");
            let d = Deny::new(
                Reason::MethodRefused,
                "CONNECT inside an intercepted tunnel is refused",
            );
            let _ = conn.write_response(deny(rec, d), false, false).await;
            return None;
        }

        // The record exists from here on, so a client that disconnects while
        // sending its body still leaves one.
        let mut rec = new_record(gw);
        rec.method(head.parts.method.as_str());
        let target = pipeline::target_of(ctx, &head.parts, &mut rec);
        // identify before the body is read: nothing is buffered for a caller
        // that is not a live task. The unread body makes the connection
        // unusable afterwards, so it closes.
        let who = match identify(gw, ctx, &head.parts.headers) {
            Ok(who) => who,
            Err(d) => {
                let keep_alive = head.keep_alive && head.framing == Framing::Empty;
                let (response, _) = refused(ctx, rec, d, keep_alive);
                let _ = conn.write_response(response, false, keep_alive).await;
                if keep_alive {
                    continue;
                }
                return None;
            }
        };
        // A body larger than max_body is refused from its Content-Length,
        // before any byte of it is read and without a 100 Continue.
        let max_body = gw.snapshot().config.sanitizer.max_body();
        if let Framing::Length(len) = head.framing {
            if len > max_body {
                let d = Deny::new(
                    Reason::BodyTooLarge,
                    format!("the request body ({len} bytes) is larger than sanitize.max_body ({max_body} bytes)"),
                );
                rec.task(&who.task.id, &who.task.agent, &who.task.labels);
                refuse(&mut conn, rec, d).await;
                return None;
            }
        }
        if head.expect_continue
            && head.framing != Framing::Empty
            && conn.write_continue().await.is_err()
        {
            return None;
        }
        let start =
            tokio::time::timeout(BODY_TIMEOUT, conn.read_body_start(head.framing, FIRST_PART))
                .await;
        let start = match start {
            Ok(Ok(start)) => start,
            Ok(Err(e)) => {
                let reason = e.reason();
                let response = deny(rec, Deny::new(reason, e.to_string()));
                if reason != Reason::ClientDisconnected {
                    let _ = conn.write_response(response, false, false).await;
                }
                return None;
            }
            Err(_) => {
                let d = Deny::new(
                    Reason::BadRequest,
                    "the request body did not arrive in time",
                );
                let _ = conn.write_response(deny(rec, d), false, false).await;
                return None;
            }
        };
        let head_only = head.parts.method == Method::HEAD;
        let mut parts = head.parts;
        // An HTTP/1.1 agent gets the upstream's early hints; an HTTP/1.0
        // one must not be sent interim responses (RFC 9110 §15.2).
        let mut interim = None;
        if parts.version == http::Version::HTTP_11 {
            let (sink, queue) = interim::channel();
            parts.extensions.insert(sink);
            interim = Some((queue, who.task.clone()));
        }
        let (response, body_read) = match start.rest {
            None => {
                let body = RequestBody::Full(start.first);
                let handled = pipeline::handle(gw, who, target, parts, body, rec);
                let response = with_interim(&mut conn, handled, interim.as_mut()).await?;
                (response, true)
            }
            Some(reader) => {
                // The rest of the body is read as the pipeline forwards it.
                let length = match head.framing {
                    Framing::Length(len) => Some(len),
                    _ => None,
                };
                let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT);
                let body = RequestBody::Streamed(Streamed::new(start.first, rx, length));
                let handled = pipeline::handle(gw, who, target, parts, body, rec);
                tokio::pin!(handled);
                let mut body_read = None;
                // While the body is read, the connection is the pump's: early
                // hints wait in their queue until it has been read.
                let early = {
                    let pumped = pump_h1(&mut conn, reader, tx);
                    tokio::pin!(pumped);
                    tokio::select! {
                        response = &mut handled => Some(response),
                        read = &mut pumped => {
                            body_read = Some(read);
                            None
                        }
                    }
                };
                let queue = interim.as_mut();
                let response = match early {
                    Some(response) => {
                        with_interim(&mut conn, std::future::ready(response), queue).await?
                    }
                    None => with_interim(&mut conn, handled, queue).await?,
                };
                // A body not read to its end leaves the connection unusable.
                (response, body_read == Some(true))
            }
        };
        // The request is done with its sink: nothing more can be queued.
        drop(interim);
        let response = match response.into_parts() {
            // A switched WebSocket takes the connection over for good.
            (_, ProxyBody::WebSocket(switch)) => {
                let (io, buffered) = conn.into_parts();
                switch.run(gw, io, buffered).await;
                return None;
            }
            (parts, body) => Response::from_parts(parts, body),
        };
        let keep_alive = body_read
            && head.keep_alive
            && response.extensions().get::<CloseConnection>().is_none();
        // Ending a task also cuts a response still streaming for it.
        let task = response.body().task().cloned();
        let written = match task {
            Some(task) => tokio::select! {
                written = conn.write_response(response, head_only, keep_alive) => written,
                () = task.wait_ended() => return None,
            },
            None => conn.write_response(response, head_only, keep_alive).await,
        };
        match written {
            Ok(true) => continue,
            _ => return None,
        }
    }
}

/// Waits for `handled` while writing each early hint the upstream sends
/// meanwhile to the agent, so it comes before the final response; any still
/// queued when the response is ready go out first. `None` when the agent
/// went away or the task ended during a write: the connection is then done.
async fn with_interim<IO, F>(
    conn: &mut H1Connection<IO>,
    handled: F,
    interim: Option<&mut (InterimQueue, Arc<Task>)>,
) -> Option<Response<ProxyBody>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Response<ProxyBody>>,
{
    let Some((queue, task)) = interim else {
        return Some(handled.await);
    };
    tokio::pin!(handled);
    let response = loop {
        let hints = tokio::select! {
            biased;
            response = &mut handled => break response,
            Some(hints) = queue.next() => hints,
        };
        if !write_early_hints(conn, hints, task).await {
            if task.ended().is_some() {
                // The pipeline sees the end at once and records it as the
                // reason; dropped unfinished, it would say the agent went away.
                drop(handled.await);
            }
            return None;
        }
    };
    while let Some(hints) = queue.ready() {
        // Dropping the response records why (its body knows the task's end).
        if !write_early_hints(conn, hints, task).await {
            return None;
        }
    }
    Some(response)
}

/// Writes a `103 Early Hints` with `headers` (already cleaned); `false`
/// when it could not be. While it is written the pipeline waits, so the
/// task's end is watched here: an agent that stops reading cannot hold the
/// request past it.
async fn write_early_hints<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut H1Connection<IO>,
    headers: http::HeaderMap,
    task: &Task,
) -> bool {
    let mut response = Response::new(ProxyBody::full(Bytes::new()));
    *response.status_mut() = http::StatusCode::EARLY_HINTS;
    *response.headers_mut() = headers;
    tokio::select! {
        written = conn.write_response(response, false, true) => written.is_ok(),
        () = task.wait_ended() => false,
    }
}

/// Reads the rest of a streamed body from the agent into `tx`, piece by
/// piece, each wait bounded. Returns whether the body was read to its end
/// (only then can the connection carry another request).
async fn pump_h1<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut H1Connection<IO>,
    mut reader: BodyReader,
    tx: mpsc::Sender<Piece>,
) -> bool {
    loop {
        let (piece, done) =
            match tokio::time::timeout(BODY_IDLE_TIMEOUT, conn.next_piece(&mut reader)).await {
                Ok(Ok(Some(data))) => (Piece::Data(data), None),
                Ok(Ok(None)) => (Piece::End, Some(true)),
                Ok(Err(e)) => (
                    Piece::Failed(BodyAbort::new(e.reason(), e.to_string())),
                    Some(false),
                ),
                Err(_) => (Piece::Failed(body_stalled()), Some(false)),
            };
        // A pipeline that stopped reading (a denial, an early answer) has
        // dropped its end: the rest of the body stays unread.
        if tx.send(piece).await.is_err() {
            return false;
        }
        if let Some(done) = done {
            return done;
        }
    }
}

fn body_stalled() -> BodyAbort {
    BodyAbort::new(
        Reason::BadRequest,
        format!(
            "the request body stalled: no byte for {}s",
            BODY_IDLE_TIMEOUT.as_secs()
        ),
    )
}

/// Writes a denial on a connection that then closes.
async fn refuse<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut H1Connection<IO>,
    rec: RecordGuard,
    d: Deny,
) {
    let _ = conn.write_response(deny(rec, d), false, false).await;
}

/// A `CONNECT`: identify, then admit on `host:port` alone, before any DNS
/// lookup; then a blind tunnel where the rule says so, or interception,
/// where every request inside goes through the pipeline on its own.
/// Returns the connection when it carries on as plain HTTP/1: after a 407
/// challenge, for the client's retry with credentials.
async fn handle_connect(
    gw: Arc<Gateway>,
    mut conn: H1Connection<TcpStream>,
    head: RequestHead,
    ctx: &ConnContext,
) -> Option<H1Connection<TcpStream>> {
    let mut rec = new_record(&gw);
    rec.method("CONNECT");
    // Named before identify, so a refused CONNECT still says where it went.
    let target = connect_target(&head);
    if let Some((host, port)) = &target {
        rec.target("https", host, *port, None);
    }
    let who = match identify(&gw, ctx, &head.parts.headers) {
        Ok(who) => who,
        Err(d) => {
            let (mut response, challenge) = refused(ctx, rec, d, head.keep_alive);
            if !challenge {
                let _ = conn.write_response(response, false, false).await;
                return None;
            }
            // A CONNECT has no body, so the connection can wait for the
            // retry; the 407 has none either, for clients that read no
            // body after a refused CONNECT.
            *response.body_mut() = ProxyBody::full(Bytes::new());
            response.headers_mut().remove(http::header::CONTENT_TYPE);
            return match conn.write_response(response, false, true).await {
                Ok(true) => Some(conn),
                _ => None,
            };
        }
    };
    let task = who.task.clone();
    rec.task(&task.id, &task.agent, &task.labels);
    let Some((host, port)) = target else {
        let d = Deny::new(Reason::BadRequest, "CONNECT needs a host:port target");
        refuse(&mut conn, rec, d).await;
        return None;
    };
    // The head shares the bytes it was read from, Proxy-Authorization
    // included: it goes now, not when the tunnel closes.
    drop(head);

    // Admitted before any DNS lookup: a target outside every scope of the
    // task never reaches the resolver.
    let snapshot = gw.snapshot();
    let ask = Ask::Tunnel { host: &host, port };
    let admitted = match admission::admit(
        &gw,
        &snapshot,
        &task,
        ask,
        &admission::Seen::TUNNEL,
        &mut rec,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(d) => {
            refuse(&mut conn, rec, d).await;
            return None;
        }
    };
    let blind = admitted.rule().tunnel;
    drop(snapshot);

    if blind {
        // Ending the task closes its tunnel, blind or not.
        blind_tunnel(&gw, conn, rec, &host, port, &admitted, &task).await;
        return None;
    }
    if conn
        .write_raw(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return None; // the record says the agent went away
    }
    let (stream, buffered) = conn.into_parts();
    let tunnel = Tunnel {
        task,
        token: who.token,
        host,
        port,
    };
    intercept_tunnel(gw, stream, buffered, tunnel, &admitted, rec, ctx.peer).await;
    None
}

/// The rest of an admitted tunnel to `tunnel.host` (a CONNECT answered 200,
/// or a transparently captured TLS connection): takes the agent's TLS with
/// a leaf for that host, completes the tunnel's record, and serves every
/// request inside, each authorised on its own, until the connection or the
/// task ends.
pub(super) async fn intercept_tunnel(
    gw: Arc<Gateway>,
    stream: TcpStream,
    buffered: BytesMut,
    tunnel: Tunnel,
    admitted: &Admitted,
    mut rec: RecordGuard,
    peer: SocketAddr,
) {
    let Ok(intercepted) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        intercept(&gw, stream, buffered, &tunnel.host, admitted, &mut rec),
    )
    .await
    else {
        let message = "the agent did not complete TLS in time".to_string();
        rec.deny(Reason::ClientDisconnected, message);
        return;
    };
    let Some(mut tls) = intercepted else { return };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let message = format!(
        "tunnel intercepted ({})",
        if h2 { "h2" } else { "http/1.1" }
    );
    rec.allow(Some(message));
    // Its duration is the tunnel's setting up, as for any other CONNECT.
    rec.stop_clock();

    let task = tunnel.task.clone();
    let ctx = Arc::new(ConnContext::tunnel(peer, tunnel));
    // Ending the task closes its tunnels.
    let serve = async {
        // The CONNECT's own record is complete once the agent uses the
        // tunnel; each request inside gets its own.
        let Some(first) = first_bytes(&mut tls, rec).await else {
            return;
        };
        if h2 {
            serve_h2(gw.clone(), Rewind::new(first, tls), ctx.clone()).await;
        } else {
            serve_h1(&gw, H1Connection::new(tls, first), &ctx).await;
        }
    };
    tokio::select! {
        // The connection first, so a WebSocket gets to send its close frame.
        biased;
        () = serve => {}
        () = task.wait_ended() => {}
    }
}

/// Waits for the first bytes the agent sends in an intercepted tunnel (the
/// start of its first request, or the HTTP/2 preface), then emits the
/// CONNECT's record `rec`, which says allowed. A tunnel that ends before
/// that byte is a client that refused credgate's certificate after the
/// handshake: wget (GnuTLS) completes the handshake, then checks the
/// certificate, and closes without an alert or close_notify when it does
/// not trust the CA. The record then says `agent_tls_failed`: no request
/// went through, and a client that opens a tunnel only to close it unused
/// has nothing else to show for it. A client that keeps the tunnel open
/// without using it accepted the certificate; it closes idle, allowed.
async fn first_bytes<IO: AsyncRead + Unpin>(
    tls: &mut IO,
    mut rec: RecordGuard,
) -> Option<BytesMut> {
    let mut first = BytesMut::with_capacity(1024);
    let read = tokio::time::timeout(IDLE_TIMEOUT, tls.read_buf(&mut first)).await;
    let failed = match read {
        Ok(Ok(n)) if n > 0 => return Some(first),
        // Idle: the record stays allowed, and the tunnel closes.
        Err(_) => return None,
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e),
    };
    let when = "after the TLS handshake, before any request";
    agent_tls_failed(&mut rec, failed.as_ref(), when);
    None
}

/// Denies `rec` as `agent_tls_failed`: the agent's TLS ended `when`, by
/// the alert it sent, by `failed`, or (`None`) by a clean close.
fn agent_tls_failed(rec: &mut RecordGuard, failed: Option<&io::Error>, when: &str) {
    const REFUSED: &str =
        "the client refused credgate's certificate: does it trust the credgate CA?";
    let tls = failed
        .and_then(io::Error::get_ref)
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let message = match (tls, failed) {
        (Some(rustls::Error::AlertReceived(alert)), _) => {
            format!("{REFUSED} (it sent the TLS alert {alert:?} {when})")
        }
        (Some(other), _) => format!("the client's TLS failed {when}: {other}"),
        (None, Some(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            format!(
                "{REFUSED} (it closed the connection {when}, without a TLS alert or close_notify)"
            )
        }
        (None, Some(e)) => format!("{REFUSED} (it closed the connection {when}: {e})"),
        (None, None) => format!("{REFUSED} (it closed the TLS connection {when})"),
    };
    rec.deny(Reason::AgentTlsFailed, message);
}

/// Accepts the agent's TLS for `host` after a CONNECT that was `admitted`.
/// `None` when it is not TLS, names another server, or fails; the record
/// says which.
async fn intercept(
    gw: &Gateway,
    mut stream: TcpStream,
    mut buffered: BytesMut,
    host: &str,
    _admitted: &Admitted,
    rec: &mut RecordGuard,
) -> Option<tokio_rustls::server::TlsStream<Rewind<TcpStream>>> {
    let fail = |rec: &mut RecordGuard, reason: Reason, message: String| {
        rec.deny(reason, message);
        None
    };
    // Only a TLS handshake may follow: anything else would be traffic that
    // no rule has looked at.
    while buffered.is_empty() {
        match stream.read_buf(&mut buffered).await {
            Ok(0) | Err(_) => {
                let message = "the agent closed the tunnel before TLS".to_string();
                return fail(rec, Reason::ClientDisconnected, message);
            }
            Ok(_) => {}
        }
    }
    if buffered[0] != TLS_HANDSHAKE {
        let message = "bytes after CONNECT are not a TLS handshake; no rule allows a blind tunnel"
            .to_string();
        return fail(rec, Reason::TunnelRefused, message);
    }
    let io = Rewind::new(buffered, stream);
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match acceptor.await {
        Ok(start) => start,
        Err(e) => {
            return fail(
                rec,
                Reason::BadRequest,
                format!("invalid TLS ClientHello: {e}"),
            )
        }
    };
    if let Some(sni) = start.client_hello().server_name() {
        if normalize_host(sni).ok().as_deref() != Some(host) {
            let message = format!("TLS server name {sni:?} differs from the CONNECT target {host}");
            return fail(rec, Reason::HostMismatch, message);
        }
    }
    let config = match gw.leaves.server_config(host).await {
        Ok(c) => c,
        Err(e) => {
            return fail(
                rec,
                Reason::Internal,
                format!("no certificate for {host}: {e}"),
            )
        }
    };
    match start.into_stream(config).await {
        Ok(tls) => Some(tls),
        Err(e) => {
            agent_tls_failed(rec, Some(&e), "during the TLS handshake");
            None
        }
    }
}

fn connect_target(head: &RequestHead) -> Option<(String, u16)> {
    let uri = &head.parts.uri;
    if uri.scheme().is_some() || !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return None;
    }
    let authority = uri.authority()?;
    let port = authority.port_u16()?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((normalize_host(host).ok()?, port))
}

async fn serve_h2<IO>(gw: Arc<Gateway>, io: IO, ctx: Arc<ConnContext>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let gw = gw.clone();
        let ctx = ctx.clone();
        async move {
            let mut rec = new_record(&gw);
            rec.method(req.method().as_str());
            let (parts, body) = req.into_parts();
            let target = pipeline::target_of(&ctx, &parts, &mut rec);
            let who = match identify(&gw, &ctx, &parts.headers) {
                Ok(who) => who,
                Err(d) => return Ok::<_, Infallible>(deny(rec, d)),
            };
            let max_body = gw.snapshot().config.sanitizer.max_body();
            let length = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if let Some(len) = length.filter(|len| *len > max_body) {
                let d = Deny::new(
                    Reason::BodyTooLarge,
                    format!("the request body ({len} bytes) is larger than sanitize.max_body ({max_body} bytes)"),
                );
                rec.task(&who.task.id, &who.task.agent, &who.task.labels);
                return Ok(deny(rec, d));
            }
            let eager = is_grpc(&parts.headers);
            let body = match tokio::time::timeout(BODY_TIMEOUT, h2_body_start(body, eager)).await {
                Ok(Ok(body)) => body,
                Ok(Err(abort)) => return Ok(deny(rec, Deny::new(abort.reason, abort.message))),
                Err(_) => {
                    let d = Deny::new(
                        Reason::BadRequest,
                        "the request body did not arrive in time",
                    );
                    return Ok(deny(rec, d));
                }
            };
            let body = match body {
                (first, None) => RequestBody::Full(first),
                (first, Some(rest)) => {
                    let (tx, rx) = mpsc::channel(PIECES_IN_FLIGHT);
                    // Ends when the body does, or when the pipeline stops reading.
                    tokio::spawn(pump_h2(rest, tx));
                    RequestBody::Streamed(Streamed::new(first, rx, length))
                }
            };
            Ok(pipeline::handle(&gw, who, target, parts, body, rec).await)
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// The first part of an HTTP/2 request body, and the rest when there is
/// more (trailers are dropped, as on HTTP/1). An `eager` start ends at the
/// first data: a gRPC call may stream messages both ways, and the upstream
/// must see the first before the agent sends the next.
async fn h2_body_start(
    mut body: Incoming,
    eager: bool,
) -> Result<(Bytes, Option<Incoming>), BodyAbort> {
    let mut first = BytesMut::new();
    while first.len() <= FIRST_PART && (!eager || first.is_empty()) {
        match body.frame().await {
            None => return Ok((first.freeze(), None)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    first.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return Err(body_lost()),
        }
    }
    if http_body::Body::is_end_stream(&body) {
        return Ok((first.freeze(), None));
    }
    Ok((first.freeze(), Some(body)))
}

/// Whether a request is a gRPC call (`application/grpc`, `+proto`, …).
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// [`pump_h1`] for an HTTP/2 stream.
async fn pump_h2(mut body: Incoming, tx: mpsc::Sender<Piece>) {
    loop {
        let piece = match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame()).await {
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if data.is_empty() => continue,
                Ok(data) => Piece::Data(data),
                Err(_) => continue,
            },
            Ok(None) => Piece::End,
            Ok(Some(Err(_))) => Piece::Failed(body_lost()),
            Err(_) => Piece::Failed(body_stalled()),
        };
        let last = !matches!(piece, Piece::Data(_));
        if tx.send(piece).await.is_err() || last {
            return;
        }
    }
}

fn body_lost() -> BodyAbort {
    BodyAbort::new(
        Reason::ClientDisconnected,
        "the request body did not arrive: the stream was reset",
    )
}

/// A CONNECT `admitted` by a `tunnel: true` rule: bytes are relayed
/// without inspection, so no credential can be injected; the record says so.
async fn blind_tunnel(
    gw: &Gateway,
    mut conn: H1Connection<TcpStream>,
    mut rec: RecordGuard,
    host: &str,
    port: u16,
    admitted: &Admitted,
    task: &Task,
) {
    rec.tunnel();
    let upstream = match dial_blind(gw, host, port, admitted).await {
        Ok(s) => s,
        Err(d) => return refuse(&mut conn, rec, d).await,
    };
    if conn
        .write_raw(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let (stream, buffered) = conn.into_parts();
    relay_blind(Rewind::new(buffered, stream), upstream, rec, task).await;
}

/// Dials `host:port` for a blind tunnel `admitted` by a `tunnel` rule, at
/// an address credgate resolved and checked itself.
pub(super) async fn dial_blind(
    gw: &Gateway,
    host: &str,
    port: u16,
    admitted: &Admitted,
) -> Result<TcpStream, Deny> {
    let policy = if admitted.rule().allow_private {
        AddressPolicy::AllowPrivate
    } else {
        AddressPolicy::PublicOnly
    };
    dial(gw.resolver.as_ref(), host, port, policy)
        .await
        .map_err(|e| Deny::new(e.reason(), e.to_string()))
}

/// Relays a blind tunnel (its record marked as one) until either side
/// closes, it idles out or the task ends, and completes the record.
pub(super) async fn relay_blind(
    mut agent: Rewind<TcpStream>,
    mut upstream: TcpStream,
    mut rec: RecordGuard,
    task: &Task,
) {
    rec.allow(Some(
        "blind tunnel: not inspected, no credential injected".into(),
    ));
    let (to_upstream, to_agent, task_ended) = relay(&mut agent, &mut upstream, task).await;
    rec.relayed(to_upstream, to_agent);
    if task_ended {
        rec.ended(
            Reason::TaskEnded,
            "blind tunnel closed because its task ended".into(),
        );
    }
}

/// Copies both ways until either side closes, nothing moves for
/// [`TUNNEL_IDLE_TIMEOUT`], or the task ends; returns the bytes copied each
/// way and whether the task's end closed it.
async fn relay(
    agent: &mut Rewind<TcpStream>,
    upstream: &mut TcpStream,
    task: &Task,
) -> (u64, u64, bool) {
    use tokio::io::AsyncWriteExt;
    let (mut to_upstream, mut to_agent) = (0u64, 0u64);
    let mut from_agent = [0u8; 16 * 1024];
    let mut from_upstream = [0u8; 16 * 1024];
    let mut idle = IdleTimer::new(TUNNEL_IDLE_TIMEOUT);
    loop {
        if task.ended().is_some() {
            return (to_upstream, to_agent, true);
        }
        let copy = async {
            tokio::select! {
                n = agent.read(&mut from_agent) => match n {
                    Ok(0) | Err(_) => None,
                    Ok(n) => upstream.write_all(&from_agent[..n]).await.ok().map(|()| (n as u64, 0)),
                },
                n = upstream.read(&mut from_upstream) => match n {
                    Ok(0) | Err(_) => None,
                    Ok(n) => agent.write_all(&from_upstream[..n]).await.ok().map(|()| (0, n as u64)),
                },
                () = task.wait_ended() => None,
            }
        };
        let step = idle.bound(copy).await;
        match step {
            Some(Some((up, down))) => {
                to_upstream += up;
                to_agent += down;
            }
            _ => return (to_upstream, to_agent, task.ended().is_some()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_timer_bounds_each_wait_not_the_connection() {
        let mut idle = IdleTimer::new(Duration::from_secs(120));
        let started = tokio::time::Instant::now();
        // Three waits of 100 s each: 300 s in all, none of them too long.
        for _ in 0..3 {
            let wait = tokio::time::sleep(Duration::from_secs(100));
            assert_eq!(idle.bound(wait).await, Some(()));
        }
        // Time spent between waits (serving a request) does not count.
        tokio::time::sleep(Duration::from_secs(200)).await;
        assert_eq!(idle.bound(std::future::ready(7)).await, Some(7));
        let wait = tokio::time::sleep(Duration::from_secs(119));
        assert_eq!(idle.bound(wait).await, Some(()));
        // A wait longer than the period ends at the period.
        let before = tokio::time::Instant::now();
        let wait = tokio::time::sleep(Duration::from_secs(130));
        assert_eq!(idle.bound(wait).await, None);
        assert_eq!(before.elapsed(), Duration::from_secs(120));
        // And the timer works again afterwards.
        let wait = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(idle.bound(wait).await, Some(()));
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(300 + 200 + 119 + 120 + 5)
        );
    }
}
