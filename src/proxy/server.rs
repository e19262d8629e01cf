//! The listener: plain HTTP proxying, CONNECT, and TLS interception.
//!
//! A plain connection speaks HTTP/1 (absolute-form requests, or CONNECT).
//! CONNECT is authenticated and checked against the task's scopes *before*
//! any DNS lookup; then the agent's TLS is terminated with a leaf minted for
//! the CONNECT host, and every request inside is authorised on its own, over
//! HTTP/1.1 or HTTP/2 as ALPN decides. Nothing falls through to a blind
//! tunnel unless a rule says `tunnel: true`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use http::{Method, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use super::address::AddressPolicy;
use super::gateway::Gateway;
use super::h1::{Framing, H1Connection, H1Error, RequestHead};
use super::pipeline::{self, auth_message, authenticate, ConnContext, Deny, Tunnel};
use super::rewind::Rewind;
use super::upstream::dial;
use crate::audit::{DecisionRecord, RecordGuard, Verdict as RecordVerdict};
use crate::policy::normalize_host;
use crate::reason::Reason;
use crate::task::Task;

/// TLS record type of a handshake: the first byte of every ClientHello.
const TLS_HANDSHAKE: u8 = 0x16;

/// Accepts agent connections until `shutdown` resolves.
pub async fn serve(gw: Arc<Gateway>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(handle_connection(gw.clone(), stream, peer));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return,
        }
    }
}

fn new_record(gw: &Gateway) -> RecordGuard {
    RecordGuard::new(gw.audit.clone(), DecisionRecord::request(SystemTime::now()))
}

async fn handle_connection(gw: Arc<Gateway>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let ctx = ConnContext::plain(peer);
    let conn = H1Connection::new(stream, BytesMut::new());
    if let Some((conn, head)) = serve_h1(&gw, conn, &ctx).await {
        handle_connect(gw, conn, head, peer).await;
    }
}

/// Serves HTTP/1 requests until the connection closes. On a plain connection
/// a CONNECT ends this loop and is handed back with the connection.
async fn serve_h1<IO>(
    gw: &Gateway,
    mut conn: H1Connection<IO>,
    ctx: &ConnContext,
) -> Option<(H1Connection<IO>, RequestHead)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let head = match conn.read_head().await {
            Ok(head) => head,
            Err(H1Error::Closed) => return None,
            Err(e) => {
                let response = pipeline::deny(new_record(gw), Deny::new(e.reason(), e.to_string()));
                if e.reason() != Reason::ClientDisconnected {
                    let _ = conn.write_response(response, false, false).await;
                }
                return None;
            }
        };
        if head.parts.method == Method::CONNECT {
            if ctx.tunnel.is_none() {
                return Some((conn, head));
            }
            let mut rec = new_record(gw);
            rec.record().method = Some("CONNECT".into());
            let response = pipeline::deny(
                rec,
                Deny::new(
                    Reason::MethodRefused,
                    "CONNECT inside an intercepted tunnel is refused",
                ),
            );
            let _ = conn.write_response(response, false, false).await;
            return None;
        }

        // The record exists from here on, so a client that disconnects while
        // sending its body still leaves one.
        let mut rec = new_record(gw);
        rec.record().method = Some(head.parts.method.to_string());
        if head.expect_continue
            && head.framing != Framing::Empty
            && conn.write_continue().await.is_err()
        {
            return None;
        }
        let limit = gw.snapshot().config.sanitizer.max_body_scan();
        let body = match conn.read_body(head.framing, limit).await {
            Ok(body) => body,
            Err(e) => {
                let reason = e.reason();
                let response = pipeline::deny(rec, Deny::new(reason, e.to_string()));
                if reason != Reason::ClientDisconnected {
                    let _ = conn.write_response(response, false, false).await;
                }
                return None;
            }
        };
        let head_only = head.parts.method == Method::HEAD;
        let keep_alive = head.keep_alive;
        let response = pipeline::handle(gw, ctx, head.parts, body, rec).await;
        // Ending a task also cuts a response still streaming for it.
        let task = response.extensions().get::<Arc<Task>>().cloned();
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

/// Writes a denial on a connection that then closes.
async fn refuse<IO: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut H1Connection<IO>,
    rec: RecordGuard,
    d: Deny,
) {
    let response = pipeline::deny(rec, d);
    let _ = conn.write_response(response, false, false).await;
}

async fn handle_connect(
    gw: Arc<Gateway>,
    mut conn: H1Connection<TcpStream>,
    head: RequestHead,
    peer: SocketAddr,
) {
    let mut rec = new_record(&gw);
    rec.record().method = Some("CONNECT".into());
    if !gw.audit.healthy() {
        let d = Deny::new(
            Reason::AuditUnavailable,
            "the decision log cannot be written",
        );
        return refuse(&mut conn, rec, d).await;
    }
    let (task, token) = match authenticate(&gw, peer, &head.parts.headers, SystemTime::now()) {
        Ok(found) => found,
        Err(e) => return refuse(&mut conn, rec, Deny::new(e.reason(), auth_message(&e))).await,
    };
    {
        let r = rec.record();
        r.task = Some(task.id.clone());
        r.agent = Some(task.agent.clone());
        r.labels = task.labels.clone();
        r.scheme = Some("https".into());
    }
    let Some((host, port)) = connect_target(&head) else {
        let d = Deny::new(Reason::BadRequest, "CONNECT needs a host:port target");
        return refuse(&mut conn, rec, d).await;
    };
    {
        let r = rec.record();
        r.host = Some(host.clone());
        r.port = Some(port);
    }

    // Authorised before any DNS lookup: a target outside every scope of the
    // task never reaches the resolver.
    let snapshot = gw.snapshot();
    let decision = snapshot
        .config
        .policy
        .connect_decision(&task.scopes, &host, port);
    rec.record().rule = decision.rule.as_ref().map(|r| r.id.to_string());
    if decision.verdict != crate::policy::Verdict::Allow {
        return refuse(&mut conn, rec, Deny::new(decision.reason, decision.message)).await;
    }
    let blind = decision.rule.as_ref().is_some_and(|r| r.tunnel);
    let allow_private = decision.rule.as_ref().is_some_and(|r| r.allow_private);
    drop(snapshot);

    if blind {
        return blind_tunnel(&gw, conn, rec, &host, port, allow_private).await;
    }
    if conn
        .write_raw(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return; // the record says client_disconnected via the guard's defaults
    }
    let (mut stream, mut buffered) = conn.into_parts();

    // Only a TLS handshake may follow: anything else would be traffic that
    // no rule has looked at.
    while buffered.is_empty() {
        match stream.read_buf(&mut buffered).await {
            Ok(0) | Err(_) => {
                let r = rec.record();
                r.decision = Some(RecordVerdict::Allow);
                r.reason = Some(Reason::ClientDisconnected);
                r.message = Some("the agent closed the tunnel before TLS".into());
                return;
            }
            Ok(_) => {}
        }
    }
    if buffered[0] != TLS_HANDSHAKE {
        let r = rec.record();
        r.decision = Some(RecordVerdict::Deny);
        r.reason = Some(Reason::TunnelRefused);
        r.message = Some(
            "bytes after CONNECT are not a TLS handshake; no rule allows a blind tunnel".into(),
        );
        return;
    }
    let io = Rewind::new(buffered, stream);
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match acceptor.await {
        Ok(start) => start,
        Err(e) => {
            let r = rec.record();
            r.decision = Some(RecordVerdict::Deny);
            r.reason = Some(Reason::BadRequest);
            r.message = Some(format!("invalid TLS ClientHello: {e}"));
            return;
        }
    };
    if let Some(sni) = start.client_hello().server_name() {
        if normalize_host(sni).ok().as_deref() != Some(host.as_str()) {
            let r = rec.record();
            r.decision = Some(RecordVerdict::Deny);
            r.reason = Some(Reason::HostMismatch);
            r.message = Some(format!(
                "TLS server name {sni:?} differs from the CONNECT target {host}"
            ));
            return;
        }
    }
    let server_config = match gw.leaves.server_config(&host).await {
        Ok(c) => c,
        Err(e) => {
            let r = rec.record();
            r.decision = Some(RecordVerdict::Deny);
            r.reason = Some(Reason::Internal);
            r.message = Some(format!("no certificate for {host}: {e}"));
            return;
        }
    };
    let tls = match start.into_stream(server_config).await {
        Ok(tls) => tls,
        Err(e) => {
            let r = rec.record();
            r.decision = Some(RecordVerdict::Deny);
            r.reason = Some(Reason::ClientDisconnected);
            r.message = Some(format!(
                "TLS handshake with the agent failed (does it trust the credgate CA?): {e}"
            ));
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    {
        let r = rec.record();
        r.decision = Some(RecordVerdict::Allow);
        r.reason = Some(Reason::Allowed);
        r.message = Some(format!(
            "tunnel intercepted ({})",
            if h2 { "h2" } else { "http/1.1" }
        ));
    }
    // The CONNECT's own record is complete; each request inside gets its own.
    drop(rec);

    let ctx = Arc::new(ConnContext::tunnel(
        peer,
        Tunnel {
            task: task.clone(),
            token,
            host,
            port,
        },
    ));
    // Ending the task closes its tunnels.
    let serve = async {
        if h2 {
            serve_h2(gw.clone(), tls, ctx.clone()).await;
        } else {
            serve_h1(&gw, H1Connection::new(tls, BytesMut::new()), &ctx).await;
        }
    };
    tokio::select! {
        () = serve => {}
        () = task.wait_ended() => {}
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
            rec.record().method = Some(req.method().to_string());
            let (parts, body) = req.into_parts();
            let limit = gw.snapshot().config.sanitizer.max_body_scan();
            let body = match Limited::new(body, limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => {
                    let d = if e
                        .downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        Deny::new(
                            Reason::BodyTooLarge,
                            format!("request body larger than {limit} bytes"),
                        )
                    } else {
                        Deny::new(
                            Reason::ClientDisconnected,
                            "the request body did not arrive",
                        )
                    };
                    return Ok::<_, Infallible>(pipeline::deny(rec, d));
                }
            };
            Ok(pipeline::handle(&gw, &ctx, parts, body, rec).await)
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A `tunnel: true` rule: bytes are relayed without inspection, so no
/// credential can be injected; the record says so.
async fn blind_tunnel(
    gw: &Gateway,
    mut conn: H1Connection<TcpStream>,
    mut rec: RecordGuard,
    host: &str,
    port: u16,
    allow_private: bool,
) {
    let policy = if allow_private {
        AddressPolicy::AllowPrivate
    } else {
        AddressPolicy::PublicOnly
    };
    rec.record().tunnel = true;
    let mut upstream = match dial(gw.resolver.as_ref(), host, port, policy).await {
        Ok(s) => s,
        Err(e) => return refuse(&mut conn, rec, Deny::new(e.reason(), e.to_string())).await,
    };
    if conn
        .write_raw(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    {
        let r = rec.record();
        r.decision = Some(RecordVerdict::Allow);
        r.reason = Some(Reason::Allowed);
        r.message = Some("blind tunnel: not inspected, no credential injected".into());
    }
    let (stream, buffered) = conn.into_parts();
    let mut agent = Rewind::new(buffered, stream);
    if let Ok((to_upstream, to_agent)) =
        tokio::io::copy_bidirectional(&mut agent, &mut upstream).await
    {
        let r = rec.record();
        r.bytes_in = to_upstream;
        r.bytes_out = to_agent;
    }
}
