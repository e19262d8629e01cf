//! The RFC 6455 frame codec: strict decoding, one side at a time.
//!
//! A frame is refused (a [`ProtocolError`], which closes the socket) when
//! its masking does not fit the side that sent it (§5.1), a reserved bit is
//! set (no extension is ever negotiated, §5.2), the opcode is unknown, a
//! control frame is fragmented or longer than 125 bytes (§5.5), the 64-bit
//! length has its top bit set, or the payload is longer than the message
//! limit: the length is checked before anything of the payload is buffered.

use bytes::{Buf, BytesMut};

/// The largest message (all fragments together) relayed either way; a
/// longer one closes the socket with 1009.
pub(crate) const MAX_MESSAGE: usize = 16 << 20;
/// The longest payload of a control frame (§5.5).
const MAX_CONTROL: usize = 125;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opcode {
    /// The next fragment of a message.
    Continuation,
    /// The start of a text message.
    Text,
    /// The start of a binary message.
    Binary,
    /// The closing handshake.
    Close,
    /// A keep-alive question.
    Ping,
    /// Its answer.
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: never fragmented, at most 125 bytes.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// Which side sent the bytes being decoded: it decides the masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sender {
    /// The agent (a client): every frame must be masked.
    Client,
    /// The upstream (a server): no frame may be masked.
    Server,
}

/// One decoded frame, its payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The last fragment of its message (always set on a control frame).
    pub(crate) fin: bool,
    /// What it carries.
    pub(crate) opcode: Opcode,
    /// The payload, unmasked.
    pub(crate) payload: BytesMut,
}

/// Why a peer's bytes are not a valid frame sequence; each closes the socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// A client frame without a mask.
    #[error("an unmasked frame from the client")]
    Unmasked,
    /// A server frame with a mask.
    #[error("a masked frame from the server")]
    Masked,
    /// RSV1-3 set, though no extension was negotiated.
    #[error("a frame with a reserved bit set (no extension was negotiated)")]
    ReservedBits,
    /// An opcode RFC 6455 does not define.
    #[error("a frame with the unknown opcode {0:#x}")]
    BadOpcode(u8),
    /// A control frame with more than 125 bytes.
    #[error("a control frame longer than 125 bytes")]
    ControlTooLong,
    /// A control frame without FIN.
    #[error("a fragmented control frame")]
    ControlFragmented,
    /// A 64-bit length with its most significant bit set.
    #[error("a frame length with the most significant bit set")]
    LengthTopBit,
    /// A length in a longer form than it needs (§5.2: the minimal form).
    #[error("a frame length not in its shortest form")]
    LengthNotMinimal,
    /// A message longer than [`MAX_MESSAGE`].
    #[error("a message longer than {MAX_MESSAGE} bytes")]
    TooBig,
    /// A continuation frame with no message started.
    #[error("a continuation frame without a message to continue")]
    ContinuationWithoutStart,
    /// A new text or binary frame inside an unfinished message.
    #[error("a new message before the previous one was finished")]
    MessageInterleaved,
    /// A close payload of one byte, or with a code no endpoint may send.
    #[error("an invalid close frame")]
    BadClose,
}

impl ProtocolError {
    /// The close code the socket is closed with: 1009 for a message too
    /// big, 1002 for everything else.
    pub(crate) fn close_code(&self) -> u16 {
        match self {
            ProtocolError::TooBig => 1009,
            _ => 1002,
        }
    }
}

/// Decodes the frame at the start of `buf` and takes it off, or `None` when
/// `buf` does not hold a whole frame yet. The announced length is checked
/// against `max_payload` before the payload arrives.
pub(crate) fn decode(
    buf: &mut BytesMut,
    sender: Sender,
    max_payload: usize,
) -> Result<Option<Frame>, ProtocolError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(ProtocolError::BadOpcode(b0 & 0x0F))?;
    let masked = b1 & 0x80 != 0;
    match (sender, masked) {
        (Sender::Client, false) => return Err(ProtocolError::Unmasked),
        (Sender::Server, true) => return Err(ProtocolError::Masked),
        _ => {}
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            let len = u64::from(u16::from_be_bytes([buf[2], buf[3]]));
            if len < 126 {
                return Err(ProtocolError::LengthNotMinimal);
            }
            (len, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let len = u64::from_be_bytes(buf[2..10].try_into().expect("eight bytes"));
            if len >> 63 != 0 {
                return Err(ProtocolError::LengthTopBit);
            }
            if len <= u64::from(u16::MAX) {
                return Err(ProtocolError::LengthNotMinimal);
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::ControlFragmented);
        }
        if len > MAX_CONTROL as u64 {
            return Err(ProtocolError::ControlTooLong);
        }
    }
    if len > max_payload as u64 {
        return Err(ProtocolError::TooBig);
    }
    let len = len as usize;
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let key: [u8; 4] = buf[at..at + 4].try_into().expect("four bytes");
        at += 4;
        Some(key)
    } else {
        None
    };
    if buf.len() < at + len {
        // Room for what is announced, but a piece at a time: a length is
        // only a claim until the bytes arrive.
        buf.reserve((at + len - buf.len()).min(64 * 1024));
        return Ok(None);
    }
    buf.advance(at);
    let mut payload = buf.split_to(len);
    if let Some(key) = mask {
        apply_mask(&mut payload, key);
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload,
    }))
}

/// Masks (or unmasks: it is its own inverse) `data` with `key` (§5.3).
pub(crate) fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// Appends one frame to `out`: masked with `mask` when given (frames to a
/// server), unmasked otherwise (frames to a client). The length takes the
/// shortest form that holds it.
pub(crate) fn encode(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: Opcode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    out.push(if fin { 0x80 } else { 0 } | opcode.bits());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(mask_bit | 126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let start = match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.len()
        }
        None => out.len(),
    };
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key);
    }
}

/// The payload of a close frame with `code` and no reason.
pub(crate) fn close_payload(code: u16) -> [u8; 2] {
    code.to_be_bytes()
}

/// The code of a close payload (`None` for an empty one). A one-byte
/// payload, or a code that no endpoint may send (§7.4), is an error.
pub(crate) fn close_code(payload: &[u8]) -> Result<Option<u16>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::BadClose),
        [a, b, ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if sendable {
                Ok(Some(code))
            } else {
                Err(ProtocolError::BadClose)
            }
        }
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
