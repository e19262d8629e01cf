//! Draining what each side has sent: decode its frames, apply the rules of
//! its direction (scrub from the upstream, screen from the agent) and write
//! them on to the other side.

use bytes::BytesMut;

use super::frame::{close_code, decode, encode, Opcode, Sender};
use super::relay::{mask_key, Flow, Peer, Relay, GOING_AWAY, POLICY_VIOLATION};
use crate::proxy::body::ScrubChain;
use crate::reason::Reason;
use crate::scrub::Scrubber;
use tokio::io::{AsyncRead, AsyncWrite};

impl<A: AsyncRead + AsyncWrite + Unpin> Relay<'_, A> {
    /// Relays every whole frame the upstream has sent.
    pub(super) async fn drain_upstream(&mut self) -> Flow {
        let mut out = Vec::new();
        let flow = loop {
            let room = self.from_upstream.room().max(125);
            let frame = match decode(&mut self.upstream_buf, Sender::Server, room) {
                Ok(Some(frame)) => frame,
                Ok(None) => break Flow::Go,
                Err(e) => {
                    self.send(Peer::Agent, &out).await;
                    return self.protocol_error(Peer::Upstream, &e).await;
                }
            };
            if self.upstream_closed {
                continue; // nothing follows a close (§5.5.1)
            }
            let mut payload = frame.payload;
            let (fin, opcode) = match frame.opcode {
                Opcode::Close | Opcode::Ping | Opcode::Pong => {
                    if frame.opcode == Opcode::Close {
                        match close_code(&payload) {
                            Ok(code) => self.info.close_code = code,
                            Err(e) => {
                                self.send(Peer::Agent, &out).await;
                                return self.protocol_error(Peer::Upstream, &e).await;
                            }
                        }
                        self.upstream_closed = true;
                        self.agent_told = true;
                    }
                    let masked = self
                        .scrubbers()
                        .map(|s| s.scrub_in_place(&mut payload))
                        .sum::<usize>();
                    self.rec.sent(0, masked as u64);
                    (true, frame.opcode)
                }
                data => {
                    let place = match self.from_upstream.place(frame.fin, data, payload.len()) {
                        Ok(place) => place,
                        Err(e) => {
                            self.send(Peer::Agent, &out).await;
                            return self.protocol_error(Peer::Upstream, &e).await;
                        }
                    };
                    if place.first {
                        // Fresh per message: credentials issued since the
                        // last one are scrubbed too.
                        let credentials = self.gw.credential_scrubber();
                        let stages = std::iter::once(&credentials)
                            .chain(self.token.as_ref())
                            .map(Scrubber::stream)
                            .collect();
                        self.chain = Some(ScrubChain::new(stages));
                    }
                    let chain = self
                        .chain
                        .as_mut()
                        .expect("a message in progress has scrubbers");
                    let (safe, masked) = if place.last {
                        chain.push_last(payload.freeze())
                    } else {
                        chain.push(payload.freeze())
                    };
                    self.rec.sent(0, masked as u64);
                    if safe.is_empty() && !place.last {
                        continue; // all of it could still begin a secret
                    }
                    let opcode = if self.continuing {
                        Opcode::Continuation
                    } else {
                        place.kind
                    };
                    self.continuing = !place.last;
                    if place.last {
                        self.chain = None;
                    }
                    payload = BytesMut::from(&safe[..]);
                    (place.last, opcode)
                }
            };
            encode(&mut out, fin, opcode, &payload, None);
            self.info.frames_out += 1;
            self.info.bytes_out += payload.len() as u64;
        };
        if !self.send(Peer::Agent, &out).await {
            let message = "the agent went away during the WebSocket";
            self.rec.ended(Reason::ClientDisconnected, message.into());
            return Flow::Stop;
        }
        flow
    }

    /// Relays every whole message (and control frame) the agent has sent,
    /// once screened.
    pub(super) async fn drain_agent(&mut self) -> Flow {
        let mut out = Vec::new();
        let flow = loop {
            let room = self.from_agent.room().max(125);
            let frame = match decode(&mut self.agent_buf, Sender::Client, room) {
                Ok(Some(frame)) => frame,
                Ok(None) => break Flow::Go,
                Err(e) => {
                    self.send(Peer::Upstream, &out).await;
                    return self.protocol_error(Peer::Agent, &e).await;
                }
            };
            self.info.frames_in += 1;
            self.info.bytes_in += frame.payload.len() as u64;
            if self.agent_closed {
                continue;
            }
            let (opcode, mut payload) = match frame.opcode {
                Opcode::Close => {
                    match close_code(&frame.payload) {
                        Ok(code) => self.info.close_code = code,
                        Err(e) => {
                            self.send(Peer::Upstream, &out).await;
                            return self.protocol_error(Peer::Agent, &e).await;
                        }
                    }
                    self.agent_closed = true;
                    self.upstream_told = true;
                    let mut payload = frame.payload;
                    if !self.screen(&payload).is_empty() {
                        payload.truncate(2); // the reason goes, the code stays
                    }
                    (Opcode::Close, payload)
                }
                Opcode::Ping | Opcode::Pong => (frame.opcode, frame.payload),
                _ => match self.from_agent.push(frame) {
                    Ok(None) => continue,
                    Ok(Some(message)) => message,
                    Err(e) => {
                        self.send(Peer::Upstream, &out).await;
                        return self.protocol_error(Peer::Agent, &e).await;
                    }
                },
            };
            if opcode != Opcode::Close {
                let findings = self.screen(&payload);
                if !findings.is_empty() {
                    if !self.strip_secrets {
                        self.send(Peer::Upstream, &out).await;
                        return self.refuse_secret(findings).await;
                    }
                    self.snapshot.config.sanitizer.redact_body(&mut payload);
                    self.rec.found_in_body(findings);
                }
            }
            encode(&mut out, true, opcode, &payload, Some(mask_key()));
            payload.fill(0);
        };
        if !self.send(Peer::Upstream, &out).await {
            let message = "the upstream went away during the WebSocket";
            self.rec.ended(Reason::UpstreamError, message.into());
            return Flow::Stop;
        }
        flow
    }

    /// The detection rules that match `payload`, by id.
    fn screen(&self, payload: &[u8]) -> Vec<String> {
        let mut ids: Vec<String> = self
            .snapshot
            .config
            .sanitizer
            .scan_body(payload)
            .into_iter()
            .map(|f| f.rule.to_string())
            .collect();
        ids.dedup();
        ids
    }

    /// The agent sent a secret: 1008 to the agent, 1001 to the upstream,
    /// the message goes nowhere.
    async fn refuse_secret(&mut self, findings: Vec<String>) -> Flow {
        let message = format!(
            "the agent sent what looks like a secret ({}) in a WebSocket message; it was not forwarded and the socket was closed with 1008",
            findings.join(", ")
        );
        self.rec.found_in_body(findings);
        self.info.close_code = Some(POLICY_VIOLATION);
        self.send_close(Peer::Agent, POLICY_VIOLATION).await;
        self.send_close(Peer::Upstream, GOING_AWAY).await;
        self.rec.ended(Reason::SecretInRequest, message);
        Flow::Stop
    }
}
