//! The test upstream: answers an upgrade as told, then sends back the
//! credential it received and echoes every frame.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use credgate::tls::{CertificateAuthority, LeafCache};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::*;

/// How the test upstream answers an upgrade.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Answer {
    /// A correct `101`, then: the request's `Authorization` sent back in a
    /// text message of two fragments, 300 ms apart, then an echo; a text
    /// `bye` makes it start the closing handshake.
    Echo,
    /// A `101` with a wrong `Sec-WebSocket-Accept`.
    WrongAccept,
    /// A correct `101` that claims `permessage-deflate`.
    Deflate,
    /// A correct `101`, then a masked frame, which no server may send.
    MaskedFrame,
}

/// What the upstream saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// Each upgrade request's head.
    pub heads: Vec<String>,
    /// Every frame received from credgate.
    pub frames: Vec<RawFrame>,
}

/// A WebSocket upstream on 127.0.0.1; TLS for `host` when `ca` is given.
pub struct WsUpstream {
    pub port: u16,
    pub seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsUpstream {
    pub async fn start(ca: Option<Arc<CertificateAuthority>>, host: &str, answer: Answer) -> Self {
        let acceptor = match ca {
            Some(ca) => Some(tokio_rustls::TlsAcceptor::from(
                LeafCache::new(ca).server_config(host).await.unwrap(),
            )),
            None => None,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let noted = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let noted = noted.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                serve(Wire::new(tls), answer, noted).await;
                            }
                        }
                        None => serve(Wire::new(stream), answer, noted).await,
                    }
                });
            }
        });
        WsUpstream { port, seen, task }
    }

    /// Frames received so far.
    pub fn frames(&self) -> Vec<RawFrame> {
        self.seen.lock().unwrap().frames.clone()
    }

    /// Waits (up to two seconds) until a frame the upstream received
    /// satisfies `pred`.
    pub async fn got(&self, pred: impl Fn(&RawFrame) -> bool) -> bool {
        for _ in 0..100 {
            if self.frames().iter().any(&pred) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Upgrade heads received so far.
    pub fn heads(&self) -> Vec<String> {
        self.seen.lock().unwrap().heads.clone()
    }
}

/// The value of header `name` in `head`, case-insensitively.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut wire: Wire<S>,
    answer: Answer,
    seen: Arc<Mutex<Seen>>,
) {
    let Some(head) = wire.head().await else {
        return;
    };
    seen.lock().unwrap().heads.push(head.clone());
    let key = header(&head, "sec-websocket-key").unwrap_or_default();
    let accept = match answer {
        Answer::WrongAccept => accept_for("AAAAAAAAAAAAAAAAAAAAAA=="),
        _ => accept_for(key),
    };
    let extension = if answer == Answer::Deflate {
        "Sec-WebSocket-Extensions: permessage-deflate\r\n"
    } else {
        ""
    };
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{extension}\r\n"
    );
    wire.send(reply.as_bytes()).await;
    if answer == Answer::MaskedFrame {
        wire.send(&frame(true, TEXT, b"masked", Some([1, 2, 3, 4])))
            .await;
        while let Some(f) = wire.frame().await {
            seen.lock().unwrap().frames.push(f);
        }
        return;
    }
    // The credential the upstream received, echoed in two fragments that
    // leave in separate writes: the split falls inside the secret.
    let auth = header(&head, "authorization").unwrap_or("none").to_string();
    let text = format!("auth={auth}");
    let split = text.len() - auth.len() / 2;
    wire.send(&frame(false, TEXT, &text.as_bytes()[..split], None))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wire.send(&frame(true, CONTINUATION, &text.as_bytes()[split..], None))
        .await;
    while let Some(f) = wire.frame().await {
        seen.lock().unwrap().frames.push(f.clone());
        match f.opcode {
            PING => wire.send(&frame(true, PONG, &f.payload, None)).await,
            CLOSE => {
                wire.send(&frame(true, CLOSE, &f.payload, None)).await;
                return;
            }
            // The upstream starts the closing handshake, and waits for
            // the answer (noted like any frame).
            TEXT if f.payload == b"bye" => {
                let mut close = 1000u16.to_be_bytes().to_vec();
                close.extend_from_slice(b"done");
                wire.send(&frame(true, CLOSE, &close, None)).await;
                if let Some(answer) = wire.frame().await {
                    seen.lock().unwrap().frames.push(answer);
                }
                return;
            }
            op => wire.send(&frame(f.fin, op, &f.payload, None)).await,
        }
    }
}
