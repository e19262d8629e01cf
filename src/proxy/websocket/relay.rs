//! The frame relay of a switched WebSocket: one task, both directions.
//!
//! - From the upstream, every text and binary payload goes through the same
//!   scrubbers as a response body (the credentials in play and the task
//!   token), streamed within the message: a fragment goes on at once, less
//!   only the tail that could still begin a secret, which waits for the next
//!   fragment of the same message. Ping, pong and close payloads are
//!   scrubbed whole (they are at most 125 bytes).
//! - From the agent, each message is reassembled and screened by the
//!   request-side secret detector before any of it is forwarded (re-framed
//!   as one frame, masked afresh). A finding closes the agent's socket with
//!   1008 and the message goes nowhere, unless the rule strips secrets:
//!   then it is masked in place and forwarded, as a request body would be.
//!   A close reason with a finding is dropped, the code relayed.
//! - A protocol error on either side closes both with 1002 (1009 for a
//!   message too big); the task ending closes both with 1001; so does
//!   `upstream.idle_timeout` without a frame either way.
//!
//! The upgrade's record is held here and written when the socket closes,
//! with what was relayed ([`crate::audit::WebSocketInfo`]) and how it ended.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::frame::{self, close_payload, encode, Opcode};
use super::message::{Reassembler, Sequence};
use crate::audit::{RecordGuard, WebSocketInfo};
use crate::proxy::body::ScrubChain;
use crate::proxy::gateway::{Gateway, Snapshot};
use crate::reason::Reason;
use crate::scrub::Scrubber;
use crate::stream::Io;
use crate::task::Task;

/// How long, after one side's close frame was relayed, the other side has
/// to answer it before the connections are cut.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a close frame credgate sends of its own may take to write.
const CLOSE_WRITE: Duration = Duration::from_secs(1);
/// 1001: going away (the task ended, the socket idled out, the peer left).
pub(super) const GOING_AWAY: u16 = 1001;
/// 1008: policy violation (the agent sent a secret).
pub(super) const POLICY_VIOLATION: u16 = 1008;

/// A switched upgrade, waiting for the connection layer to run it with the
/// agent's connection.
pub(crate) struct Switch {
    /// The `101` for the agent, head only.
    pub(super) head: Vec<u8>,
    /// The switched upstream connection.
    pub(super) upstream: Io,
    /// What the upstream sent right behind its `101`.
    pub(super) upstream_buf: BytesMut,
    /// The configuration the upgrade was admitted under.
    pub(super) snapshot: Arc<Snapshot>,
    /// The task token's scrubber, when the agent presented one.
    pub(super) token: Option<Arc<Scrubber>>,
    /// The rule strips secrets instead of refusing them.
    pub(super) strip_secrets: bool,
    /// The longest the socket may go without a frame either way: the
    /// rule's `idle_timeout`, or `upstream.idle_timeout`.
    pub(super) idle: Duration,
    /// The task the socket belongs to: its end closes the socket.
    pub(super) task: Arc<Task>,
    /// The upgrade's record, written when the socket closes.
    pub(super) rec: RecordGuard,
}

/// One end of the socket.
#[derive(Clone, Copy)]
pub(super) enum Peer {
    /// The agent (the client).
    Agent,
    /// The upstream (the server).
    Upstream,
}

/// Whether the relay goes on.
#[derive(PartialEq, Eq)]
pub(super) enum Flow {
    /// Keep relaying.
    Go,
    /// The socket is done; the record says why.
    Stop,
}

impl Switch {
    /// Writes the `101` to the agent and relays frames until the socket
    /// closes. `agent_buf` holds what the agent sent past its request head.
    pub(crate) async fn run<A>(self: Box<Self>, gw: &Gateway, agent: A, agent_buf: BytesMut)
    where
        A: AsyncRead + AsyncWrite + Unpin,
    {
        let switch = *self;
        let mut relay = Relay {
            gw,
            agent,
            agent_buf,
            upstream: switch.upstream,
            upstream_buf: switch.upstream_buf,
            snapshot: switch.snapshot,
            token: switch.token,
            strip_secrets: switch.strip_secrets,
            idle: switch.idle,
            task: switch.task,
            rec: switch.rec,
            from_agent: Reassembler::default(),
            from_upstream: Sequence::default(),
            chain: None,
            continuing: false,
            agent_closed: false,
            upstream_closed: false,
            agent_told: false,
            upstream_told: false,
            info: WebSocketInfo::default(),
            finished: false,
        };
        if relay.agent.write_all(&switch.head).await.is_err() || relay.agent.flush().await.is_err()
        {
            return;
        }
        relay.pump().await;
        relay.finished = true;
        let _ = tokio::time::timeout(CLOSE_WRITE, relay.agent.shutdown()).await;
        let _ = tokio::time::timeout(CLOSE_WRITE, relay.upstream.shutdown()).await;
    }
}

/// A running relay: both connections, each direction's state, the record.
pub(super) struct Relay<'g, A> {
    /// For the credentials in play, current at each message.
    pub(super) gw: &'g Gateway,
    /// The agent's connection.
    pub(super) agent: A,
    /// Read from the agent, not yet a whole frame.
    pub(super) agent_buf: BytesMut,
    /// The switched upstream connection.
    pub(super) upstream: Io,
    /// Read from the upstream, not yet a whole frame.
    pub(super) upstream_buf: BytesMut,
    /// The sanitizer the upgrade was admitted under.
    pub(super) snapshot: Arc<Snapshot>,
    /// The task token's scrubber.
    pub(super) token: Option<Arc<Scrubber>>,
    /// The rule strips secrets instead of refusing them.
    pub(super) strip_secrets: bool,
    /// The longest the socket may go without a frame either way.
    pub(super) idle: Duration,
    /// The socket's task.
    pub(super) task: Arc<Task>,
    /// The upgrade's record.
    pub(super) rec: RecordGuard,
    /// The agent's message in progress.
    pub(super) from_agent: Reassembler,
    /// Where the upstream's data frames are in their message.
    pub(super) from_upstream: Sequence,
    /// The scrubbers of the upstream message in progress.
    pub(super) chain: Option<ScrubChain>,
    /// Part of the current upstream message has gone to the agent, so the
    /// next frame of it is a continuation.
    pub(super) continuing: bool,
    /// The agent sent its close frame: nothing it sends later is relayed.
    pub(super) agent_closed: bool,
    /// The upstream sent its close frame: nothing it sends later is relayed.
    pub(super) upstream_closed: bool,
    /// A close frame went to the agent (relayed or credgate's): never a second.
    pub(super) agent_told: bool,
    /// A close frame went to the upstream: never a second.
    pub(super) upstream_told: bool,
    /// What was relayed, for the record.
    pub(super) info: WebSocketInfo,
    /// The relay ended on its own (not dropped from outside).
    pub(super) finished: bool,
}

impl<A: AsyncRead + AsyncWrite + Unpin> Relay<'_, A> {
    /// Relays until the closing handshake completes, a side goes away or
    /// breaks the protocol, the task ends or the socket idles out; the
    /// record says which.
    async fn pump(&mut self) {
        let idle = self.idle;
        loop {
            if self.drain_upstream().await == Flow::Stop || self.drain_agent().await == Flow::Stop {
                return;
            }
            if self.agent_closed && self.upstream_closed {
                return; // the closing handshake is complete
            }
            let wait = if self.agent_closed || self.upstream_closed {
                CLOSE_GRACE
            } else {
                idle
            };
            // Room to read into: a full buffer would be read a few bytes
            // at a time.
            for buf in [&mut self.agent_buf, &mut self.upstream_buf] {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(16 * 1024);
                }
            }
            tokio::select! {
                biased;
                () = self.task.wait_ended() => {
                    self.close_both(GOING_AWAY).await;
                    let message = "the task ended; the WebSocket was closed with 1001";
                    return self.rec.ended(Reason::TaskEnded, message.into());
                }
                read = self.agent.read_buf(&mut self.agent_buf) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        if !self.agent_closed {
                            let message = "the agent closed the WebSocket without a closing handshake";
                            self.rec.ended(Reason::ClientDisconnected, message.into());
                        }
                        return;
                    }
                }
                read = self.upstream.read_buf(&mut self.upstream_buf) => {
                    if !matches!(read, Ok(n) if n > 0) {
                        if !self.upstream_closed {
                            let message = "the upstream closed the WebSocket without a closing handshake";
                            self.rec.ended(Reason::UpstreamError, message.into());
                        }
                        return;
                    }
                }
                () = tokio::time::sleep(wait) => {
                    self.close_both(GOING_AWAY).await;
                    let message = if wait == CLOSE_GRACE {
                        "the closing handshake was not answered in time"
                    } else {
                        "no frame either way for its idle_timeout (the rule's, or upstream.idle_timeout); closed with 1001"
                    };
                    return self.rec.ended(Reason::UpstreamTimeout, message.into());
                }
            }
        }
    }

    /// `from` broke RFC 6455: both sides get the error's close code.
    pub(super) async fn protocol_error(&mut self, from: Peer, e: &frame::ProtocolError) -> Flow {
        let code = e.close_code();
        self.close_both(code).await;
        let (reason, who) = match from {
            Peer::Agent => (Reason::BadRequest, "the agent"),
            Peer::Upstream => (Reason::UpstreamError, "the upstream"),
        };
        let message = format!("WebSocket protocol error: {who} sent {e}; closed with {code}");
        self.rec.ended(reason, message);
        Flow::Stop
    }

    /// Sends a close frame with `code` to each side that has not had one.
    pub(super) async fn close_both(&mut self, code: u16) {
        self.info.close_code = Some(code);
        self.send_close(Peer::Agent, code).await;
        self.send_close(Peer::Upstream, code).await;
    }

    /// Sends credgate's own close frame with `code` to `to`, unless a close
    /// frame went there already.
    pub(super) async fn send_close(&mut self, to: Peer, code: u16) {
        let told = match to {
            Peer::Agent => &mut self.agent_told,
            Peer::Upstream => &mut self.upstream_told,
        };
        if std::mem::replace(told, true) {
            return;
        }
        let mut out = Vec::with_capacity(8);
        let mask = matches!(to, Peer::Upstream).then(mask_key);
        encode(&mut out, true, Opcode::Close, &close_payload(code), mask);
        if matches!(to, Peer::Agent) {
            self.info.frames_out += 1;
        }
        let _ = tokio::time::timeout(CLOSE_WRITE, self.send(to, &out)).await;
    }

    /// Writes `bytes` (whole frames) to `to`; `false` when that side is gone.
    pub(super) async fn send(&mut self, to: Peer, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        let written = match to {
            Peer::Agent => write_flush(&mut self.agent, bytes).await,
            Peer::Upstream => write_flush(&mut self.upstream, bytes).await,
        };
        written.is_ok()
    }

    /// The scrubbers of everything that flows back, current now.
    pub(super) fn scrubbers(&self) -> impl Iterator<Item = Arc<Scrubber>> {
        std::iter::once(self.gw.credential_scrubber()).chain(self.token.clone())
    }
}

impl<A> Drop for Relay<'_, A> {
    fn drop(&mut self) {
        self.rec.websocket(self.info);
        if !self.finished {
            // Cut from outside: the connection was dropped (the task's end
            // closing its tunnel, or shutdown).
            let (reason, message) = if self.task.ended().is_some() {
                (Reason::TaskEnded, "the task ended; the WebSocket was cut")
            } else {
                (Reason::ClientDisconnected, "the WebSocket was cut")
            };
            self.rec.ended(reason, message.into());
        }
    }
}

async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// A fresh masking key for a frame to the upstream (§5.3: unpredictable).
pub(super) fn mask_key() -> [u8; 4] {
    let mut key = [0u8; 4];
    // Should the system generator ever fail, a fixed key still frames
    // correctly; masking protects intermediaries, not the payload.
    let _ = aws_lc_rs::rand::fill(&mut key);
    key
}
