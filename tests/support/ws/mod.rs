//! A raw WebSocket peer for the tests: frames written and read by hand,
//! a TLS (or plain) upstream that answers the upgrade as told, echoes what
//! it receives and notes it ([`upstream`]), and a credgate set up for it
//! ([`setup`]).

pub mod setup;
pub mod upstream;

use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// One frame as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub masked: bool,
    /// Unmasked.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Encodes a frame; `mask` for frames a client sends.
pub fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, opcode, payload, Some([0x12, 0x34, 0x56, 0x78]))
}

/// `base64(SHA-1(key + GUID))`.
pub fn accept_for(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// A random `Sec-WebSocket-Key`.
pub fn new_key() -> String {
    let mut raw = [0u8; 16];
    aws_lc_rs::rand::fill(&mut raw).unwrap();
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A connection read as HTTP heads and WebSocket frames.
pub struct Wire<S> {
    pub io: S,
    buf: Vec<u8>,
    /// Every byte read, for asserting what never showed.
    pub seen: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub fn new(io: S) -> Self {
        Wire {
            io,
            buf: Vec::new(),
            seen: Vec::new(),
        }
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.seen.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// The next HTTP head, without its final blank line.
    pub async fn head(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Some(String::from_utf8_lossy(&head[..end]).into_owned());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next frame; `None` when the connection closes (or is silent 10 s).
    pub async fn frame(&mut self) -> Option<RawFrame> {
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next data message, fragments joined, answering nothing; control
    /// frames before it are returned instead.
    pub async fn message(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut kind = None;
        let mut data = Vec::new();
        loop {
            let f = self.frame().await?;
            if f.opcode >= CLOSE {
                return Some((f.opcode, f.payload));
            }
            kind.get_or_insert(f.opcode);
            data.extend_from_slice(&f.payload);
            if f.fin {
                return Some((kind.unwrap(), data));
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.unwrap();
        self.io.flush().await.unwrap();
    }

    /// Whether the peer closes the connection (after any frames) within 5 s.
    pub async fn closes(&mut self) -> bool {
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            while self.frame().await.is_some() {}
        });
        ended.await.is_ok()
    }
}

fn parse(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7F {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let key: Option<[u8; 4]> = if masked {
        let key = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(key)
    } else {
        None
    };
    let raw = buf.get(at..at + len)?;
    let payload = match key {
        Some(k) => raw.iter().enumerate().map(|(i, b)| b ^ k[i % 4]).collect(),
        None => raw.to_vec(),
    };
    let frame = RawFrame {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0F,
        masked,
        payload,
    };
    Some((frame, at + len))
}
