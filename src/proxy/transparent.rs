//! Transparent capture: the connections `credgate init`'s lock-down
//! redirected here, from clients that ignore `HTTP_PROXY`.
//!
//! A redirected connection says only where it was going (its original
//! destination, `SO_ORIGINAL_DST`). For TLS the target is the server name
//! the client asked for (SNI) on the original port: the connection then
//! takes exactly the CONNECT path, authorised before any DNS lookup and
//! intercepted, and credgate dials the address it resolved and checked for
//! that name, never the agent's original destination IP (an allowed name
//! paired with an internal IP gets nowhere). Identity is the pod's ambient
//! task.
//!
//! Plain HTTP is served request by request, each to its `Host` on the
//! original port, under the cleartext rules of the proxy path.
//!
//! A blind tunnel (`tunnel: true`) carries what cannot be intercepted. For
//! TLS its rule is found by the server name, as for CONNECT. A stream with
//! no name of its own (SSH, a database protocol, or a server that speaks
//! first) goes only where a tunnel rule for the original port names a host
//! that resolves, for credgate, to the original address; it is relayed to
//! an address credgate resolves for that host, and recorded as a tunnel.
//!
//! Refused, each with a record: a connection that was not redirected (a
//! direct connect to this port), a ClientHello without a server name, a
//! name outside every scope, and anything that is neither TLS nor HTTP
//! with no tunnel rule for where it was going (closed, never relayed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::HeaderMap;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use super::admission::{self, Ask};
use super::gateway::Gateway;
use super::h1::H1Connection;
use super::identify::identify;
use super::pipeline::{new_record, ConnContext, Tunnel};
use super::respond::{deny, Deny};
use super::rewind::Rewind;
use super::server::{
    dial_blind, intercept_tunnel, relay_blind, serve_h1, HANDSHAKE_TIMEOUT, TLS_HANDSHAKE,
};
use crate::audit::RecordGuard;
use crate::policy::normalize_host;
use crate::reason::Reason;
use crate::task::Task;

/// The most of a ClientHello read before its server name is known.
const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// How long a redirected client may stay silent before the protocol is
/// taken to be one where the server speaks first (SMTP, MySQL): only a
/// `tunnel` rule can carry such a stream.
const CLIENT_FIRST_WAIT: Duration = Duration::from_secs(1);

/// What the agent sent first on a redirected connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    Http,
    Tls,
    /// Bytes that are neither TLS nor HTTP (SSH, a database protocol).
    Other,
    /// Nothing yet: maybe the server speaks first.
    Silent,
    Closed,
}

/// Serves one redirected connection.
pub(super) async fn handle(gw: Arc<Gateway>, mut stream: TcpStream, peer: SocketAddr) {
    let Some(original) = original_destination(&stream) else {
        let mut rec = new_record(&gw);
        rec.method("CONNECT");
        return rec.deny(
            Reason::TunnelRefused,
            "a direct connection to the transparent listener: it serves only connections \
             the egress lock-down redirected"
                .into(),
        );
    };
    // The ambient task is the pod's; with none, every capture is refused.
    let ctx = ConnContext::plain(peer, gw.tasks.ambient());
    let mut buffered = BytesMut::with_capacity(2048);
    let mut opening = read_opening(&mut stream, &mut buffered, CLIENT_FIRST_WAIT).await;
    if opening == Opening::Silent {
        // A stream the server opens goes only where a tunnel rule names
        // the host it was dialled for; a slow client gets the rest of the
        // handshake time to speak.
        if let Ok(who) = identify(&gw, &ctx, &HeaderMap::new()) {
            if let Some(host) = tunnel_host(&gw, &who.task, original).await {
                let mut rec = new_record(&gw);
                rec.method("CONNECT");
                rec.task(&who.task.id, &who.task.agent, &who.task.labels);
                rec.target("https", &host, original.port(), None);
                return blind(
                    &gw,
                    stream,
                    buffered,
                    rec,
                    &host,
                    original.port(),
                    &who.task,
                )
                .await;
            }
        }
        let rest = HANDSHAKE_TIMEOUT.saturating_sub(CLIENT_FIRST_WAIT);
        opening = read_opening(&mut stream, &mut buffered, rest).await;
    }
    if opening == Opening::Http {
        return serve_plain(&gw, stream, buffered, ctx, original.port()).await;
    }
    let mut rec = new_record(&gw);
    rec.method("CONNECT");
    let who = match identify(&gw, &ctx, &HeaderMap::new()) {
        Ok(who) => who,
        Err(d) => {
            let (reason, message) = d.into_parts();
            return rec.deny(
                reason,
                format!("transparent capture runs as the ambient task: {message}"),
            );
        }
    };
    let task = who.task.clone();
    rec.task(&task.id, &task.agent, &task.labels);
    match opening {
        Opening::Tls => {}
        Opening::Other => {
            return match tunnel_host(&gw, &task, original).await {
                Some(host) => {
                    rec.target("https", &host, original.port(), None);
                    blind(&gw, stream, buffered, rec, &host, original.port(), &task).await
                }
                None => Refusal::NotTls.record(&mut rec, original),
            };
        }
        Opening::Silent => {
            return rec.deny(
                Reason::ClientDisconnected,
                "the agent sent nothing in time".into(),
            )
        }
        Opening::Closed | Opening::Http => return Refusal::Closed.record(&mut rec, original),
    }
    let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, read_client_hello(stream, buffered)).await;
    let (stream, buffered, sni) = match hello {
        Ok(Ok(hello)) => hello,
        Ok(Err(refusal)) => return refusal.record(&mut rec, original),
        Err(_) => {
            return rec.deny(
                Reason::ClientDisconnected,
                "the agent did not send its TLS ClientHello in time".into(),
            )
        }
    };
    let host = match normalize_host(&sni) {
        Ok(host) => host,
        Err(_) => {
            return rec.deny(
                Reason::BadRequest,
                format!("TLS server name {sni:?} is not a host name"),
            )
        }
    };
    let port = original.port();
    rec.target("https", &host, port, None);

    // Admitted before any DNS lookup, as a CONNECT to host:port would be.
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
            let (reason, message) = d.into_parts();
            return rec.deny(reason, message);
        }
    };
    drop(snapshot);
    if admitted.rule().tunnel {
        // A client that pins its certificate, say: its TLS goes through as
        // it is, to the address credgate resolves for the server name.
        rec.tunnel();
        return match dial_blind(&gw, &host, port, &admitted).await {
            Ok(upstream) => relay_blind(Rewind::new(buffered, stream), upstream, rec, &task).await,
            Err(d) => {
                let (reason, message) = d.into_parts();
                rec.deny(reason, message)
            }
        };
    }
    let tunnel = Tunnel {
        task,
        token: None,
        host,
        port,
    };
    intercept_tunnel(gw, stream, buffered, tunnel, &admitted, rec, peer).await;
}

/// Plain HTTP: every request gets its own record, as through the proxy,
/// each to its `Host` on the original `port`.
async fn serve_plain(
    gw: &Arc<Gateway>,
    stream: TcpStream,
    buffered: BytesMut,
    mut ctx: ConnContext,
    port: u16,
) {
    ctx.captured_port = Some(port);
    let conn = H1Connection::new(stream, buffered);
    if let Some((mut conn, _connect)) = serve_h1(gw, conn, &ctx).await {
        let mut rec = new_record(gw);
        rec.method("CONNECT");
        let d = Deny::new(
            Reason::MethodRefused,
            "CONNECT on a captured connection is refused: use HTTP_PROXY",
        );
        let _ = conn.write_response(deny(rec, d), false, false).await;
    }
}

/// Reads the first bytes of a redirected connection, waiting at most
/// `wait`, and says what they begin.
async fn read_opening(stream: &mut TcpStream, buffered: &mut BytesMut, wait: Duration) -> Opening {
    if buffered.is_empty() {
        match tokio::time::timeout(wait, stream.read_buf(buffered)).await {
            Err(_) => return Opening::Silent,
            Ok(Ok(0) | Err(_)) => return Opening::Closed,
            Ok(Ok(_)) => {}
        }
    }
    if looks_like_http(buffered) {
        Opening::Http
    } else if buffered[0] == TLS_HANDSHAKE {
        Opening::Tls
    } else {
        Opening::Other
    }
}

/// The host a stream without a name of its own was going to: the first
/// host that a `tunnel` rule of `task` names for the original port and
/// that resolves, for credgate, to the original address. `None` when no
/// rule's host does.
async fn tunnel_host(gw: &Gateway, task: &Task, original: SocketAddr) -> Option<String> {
    let hosts: Vec<String> = {
        let snapshot = gw.snapshot();
        let policy = &snapshot.config.policy;
        let hosts = policy.tunnel_hosts(&task.scopes, original.port());
        hosts.into_iter().map(str::to_owned).collect()
    };
    for host in hosts {
        let Ok(Ok(addrs)) = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            gw.resolver.resolve(&host, original.port()),
        )
        .await
        else {
            continue;
        };
        if addrs.iter().any(|a| a.ip().to_canonical() == original.ip()) {
            return Some(host);
        }
    }
    None
}

/// A stream admitted (by [`admission::admit`], so every phase has its say)
/// as a blind tunnel to `host:port`: relayed as it is, with the bytes the
/// agent already sent, to the address credgate resolves for `host`.
async fn blind(
    gw: &Arc<Gateway>,
    stream: TcpStream,
    buffered: BytesMut,
    mut rec: RecordGuard,
    host: &str,
    port: u16,
    task: &Task,
) {
    rec.tunnel();
    let snapshot = gw.snapshot();
    let ask = Ask::Tunnel { host, port };
    let admitted = match admission::admit(
        gw,
        &snapshot,
        task,
        ask,
        &admission::Seen::TUNNEL,
        &mut rec,
    )
    .await
    {
        Ok(admitted) => admitted,
        Err(d) => {
            let (reason, message) = d.into_parts();
            return rec.deny(reason, message);
        }
    };
    drop(snapshot);
    if !admitted.rule().tunnel {
        return rec.deny(
            Reason::TunnelRefused,
            format!(
                "rule {} intercepts {host}:{port}, but this stream is not TLS: nothing in it \
                 can be authorised",
                admitted.rule().id
            ),
        );
    }
    match dial_blind(gw, host, port, &admitted).await {
        Ok(upstream) => relay_blind(Rewind::new(buffered, stream), upstream, rec, task).await,
        Err(d) => {
            let (reason, message) = d.into_parts();
            rec.deny(reason, message)
        }
    }
}

/// Why a redirected connection was refused before its server name was known.
enum Refusal {
    Closed,
    NotTls,
    BadHello(String),
    NoServerName,
}

impl Refusal {
    fn record(self, rec: &mut RecordGuard, original: SocketAddr) {
        let port = original.port();
        let (reason, message) = match self {
            Refusal::Closed => (
                Reason::ClientDisconnected,
                "the agent closed the connection before TLS".to_owned(),
            ),
            Refusal::NotTls => (
                Reason::TunnelRefused,
                format!(
                    "a connection to port {port} that is neither TLS nor HTTP: no rule allows \
                     a blind tunnel here"
                ),
            ),
            Refusal::BadHello(e) => (Reason::BadRequest, format!("invalid TLS ClientHello: {e}")),
            Refusal::NoServerName => (
                Reason::TunnelRefused,
                format!(
                    "a TLS ClientHello to port {port} without a server name (SNI): there is \
                     no host to authorise"
                ),
            ),
        };
        rec.deny(reason, message);
    }
}

/// Whether `bytes` begin like an HTTP/1 request: an upper-case method token
/// and a space (enough to tell it from TLS, SSH and database protocols).
fn looks_like_http(bytes: &[u8]) -> bool {
    let method = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (3..=10).contains(&method) && bytes.get(method) == Some(&b' ')
}

/// Reads, after the bytes already `buffered`, until the ClientHello is
/// whole and returns its server name, with every byte read, to be handed to
/// the handshake.
async fn read_client_hello(
    mut stream: TcpStream,
    mut buffered: BytesMut,
) -> Result<(TcpStream, BytesMut, String), Refusal> {
    loop {
        if buffered.first().is_some_and(|b| *b != TLS_HANDSHAKE) {
            return Err(Refusal::NotTls);
        }
        if !buffered.is_empty() {
            // Parsed from a copy: the bytes stay for the handshake itself.
            let mut acceptor = rustls::server::Acceptor::default();
            let mut copy: &[u8] = &buffered;
            while !copy.is_empty() {
                if acceptor.read_tls(&mut copy).is_err() {
                    break;
                }
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    return match accepted.client_hello().server_name() {
                        Some(name) => {
                            let name = name.to_owned();
                            Ok((stream, buffered, name))
                        }
                        None => Err(Refusal::NoServerName),
                    };
                }
                Ok(None) if buffered.len() < MAX_CLIENT_HELLO => {}
                Ok(None) => return Err(Refusal::BadHello("longer than 16 KiB".into())),
                Err((e, _)) => return Err(Refusal::BadHello(e.to_string())),
            }
        }
        match stream.read_buf(&mut buffered).await {
            Ok(0) | Err(_) => return Err(Refusal::Closed),
            Ok(_) => {}
        }
    }
}

/// Where the connection was going before the lock-down redirected it;
/// `None` when it was not redirected (it came to this port itself).
fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let local = canonical(stream.local_addr().ok()?);
    // An IPv4 client of a dual-stack listener was redirected by IPv4 rules.
    let ipv4 = stream.peer_addr().ok()?.ip().to_canonical().is_ipv4();
    let original = canonical(original_dst(stream, ipv4)?);
    // Without a redirect the kernel reports the address it was sent to:
    // this listener's own.
    (original != local).then_some(original)
}

#[cfg(target_os = "linux")]
fn original_dst(stream: &TcpStream, ipv4: bool) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt, SockaddrIn, SockaddrIn6};
    if ipv4 {
        let raw = getsockopt(stream, sockopt::OriginalDst).ok()?;
        Some(SocketAddr::V4(SockaddrIn::from(raw).into()))
    } else {
        let raw = getsockopt(stream, sockopt::Ip6tOriginalDst).ok()?;
        Some(SocketAddr::V6(SockaddrIn6::from(raw).into()))
    }
}

#[cfg(not(target_os = "linux"))]
fn original_dst(_stream: &TcpStream, _ipv4: bool) -> Option<SocketAddr> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_told_from_other_protocols() {
        for http in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"POST /x HTTP/1.1",
            b"OPTIONS * HTTP/1.1",
            b"PROPFIND / ",
        ] {
            assert!(looks_like_http(http), "{http:?}");
        }
        for other in [
            &b"\x16\x03\x01\x02\x00"[..],
            b"SSH-2.0-OpenSSH_9.2\r\n",
            b"get / HTTP/1.1",
            b"GET",
            b"G / HTTP/1.1",
            b"",
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
            b"PING\r\n",
        ] {
            assert!(!looks_like_http(other), "{other:?}");
        }
    }

    #[tokio::test]
    async fn a_direct_connection_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(original_destination(&server), None);
    }
}
