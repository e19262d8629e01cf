//! A request body on its way upstream: held whole when small, streamed and
//! scanned when large.
//!
//! The connection layer reads a body's first part before the pipeline runs
//! ([`FIRST_PART`]). A body that ends within it is [`RequestBody::Full`] and
//! is sanitized, signed and sent as one piece. A longer one is
//! [`RequestBody::Streamed`]: its first part, and a channel the connection
//! layer feeds with the rest as the agent sends it. The pipeline wraps it in
//! an [`Outgoing`], which scans every piece ([`BodyStreamScan`]) before the
//! upstream client sends it. A finding, a body past `max_body`, or a body
//! that breaks off stops the send: the upstream gets a request that never
//! ends (its connection is dropped), never a complete one.

use bytes::Bytes;
use http::header::{self, HeaderMap};
use tokio::sync::mpsc;

use crate::decode::{parse_codings, BodyDecoder, DecodeError, DecodeLimits};
use crate::reason::Reason;
use crate::sanitize::{BodyStopped, BodyStreamScan, Finding};

/// How much of a body is read before the pipeline runs. A body that ends
/// within it is held whole (and scanned whole); a longer one is streamed.
pub(crate) const FIRST_PART: usize = 1 << 20;

/// Pieces waiting between the agent's connection and the upstream's.
pub(crate) const PIECES_IN_FLIGHT: usize = 4;

/// Why a request body stopped before it was all sent. The message goes to
/// the agent and into the record: never a body byte.
#[derive(Debug, Clone)]
pub(crate) struct BodyAbort {
    pub(crate) reason: Reason,
    pub(crate) message: String,
}

impl BodyAbort {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> BodyAbort {
        BodyAbort {
            reason,
            message: message.into(),
        }
    }

    /// The body exceeded `max_body`.
    pub(crate) fn too_large(max: u64) -> BodyAbort {
        BodyAbort::new(
            Reason::BodyTooLarge,
            format!("the request body is larger than sanitize.max_body ({max} bytes)"),
        )
    }
}

/// One message from the agent's connection to the pipeline.
#[derive(Debug)]
pub(crate) enum Piece {
    /// The next bytes of the body.
    Data(Bytes),
    /// The body ended where its framing says.
    End,
    /// The body could not be read to its end.
    Failed(BodyAbort),
}

/// A request body as the connection layer hands it to the pipeline.
pub(crate) enum RequestBody {
    /// The whole body.
    Full(Bytes),
    /// The first part of a longer body, and the rest to come.
    Streamed(Streamed),
}

impl RequestBody {
    /// The bytes received so far.
    pub(crate) fn received(&self) -> u64 {
        match self {
            RequestBody::Full(body) => body.len() as u64,
            RequestBody::Streamed(s) => s.first.len() as u64,
        }
    }
}

/// A body being streamed from the agent.
pub(crate) struct Streamed {
    first: Bytes,
    rest: mpsc::Receiver<Piece>,
    /// The agent's `Content-Length`, when it sent one.
    length: Option<u64>,
}

impl Streamed {
    pub(crate) fn new(first: Bytes, rest: mpsc::Receiver<Piece>, length: Option<u64>) -> Self {
        Streamed {
            first,
            rest,
            length,
        }
    }

    /// The first part, read before the pipeline ran.
    pub(crate) fn first(&self) -> &Bytes {
        &self.first
    }

    /// Replaces the first part (same length: secrets masked in place).
    pub(crate) fn set_first(&mut self, first: Bytes) {
        debug_assert_eq!(first.len(), self.first.len());
        self.first = first;
    }

    /// Reads the rest of the body into memory, for a request that must be
    /// held whole; `what` says why, for the 413 past `limit` bytes.
    pub(crate) async fn spool(mut self, limit: usize, what: &str) -> Result<Bytes, BodyAbort> {
        let too_large = || {
            BodyAbort::new(
                Reason::BodyTooLarge,
                format!("{what} is held whole, and this one is larger than sanitize.max_buffered_body ({limit} bytes)"),
            )
        };
        if self.length.is_some_and(|len| len > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::from(self.first);
        loop {
            match self.rest.recv().await {
                Some(Piece::Data(piece)) => {
                    if body.len() + piece.len() > limit {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&piece);
                }
                Some(Piece::End) => return Ok(Bytes::from(body)),
                Some(Piece::Failed(abort)) => return Err(abort),
                None => return Err(cut_off()),
            }
        }
    }
}

fn cut_off() -> BodyAbort {
    BodyAbort::new(
        Reason::ClientDisconnected,
        "the request body was cut off before its end",
    )
}

/// The body as the upstream client sends it.
pub(crate) enum Outgoing {
    /// Sent as one piece.
    Whole(Bytes),
    /// Sent piece by piece, each scanned first.
    Stream(Box<Stream>),
}

/// The state of a streamed body on its way out.
pub(crate) struct Stream {
    first: Option<Bytes>,
    rest: mpsc::Receiver<Piece>,
    length: Option<u64>,
    scan: BodyStreamScan,
    max: u64,
    received: u64,
    ended: bool,
}

impl Outgoing {
    /// A streamed body, scanned with `scan` and cut at `max` bytes.
    pub(crate) fn stream(body: Streamed, scan: BodyStreamScan, max: u64) -> Outgoing {
        Outgoing::Stream(Box::new(Stream {
            received: body.first.len() as u64,
            first: Some(body.first),
            rest: body.rest,
            length: body.length,
            scan,
            max,
            ended: false,
        }))
    }

    /// Body bytes received from the agent so far, for a streamed body (a
    /// whole one was counted as received, before any decoding).
    pub(crate) fn streamed_in(&self) -> Option<u64> {
        match self {
            Outgoing::Whole(_) => None,
            Outgoing::Stream(s) => Some(s.received),
        }
    }

    /// The rules the scan of a streamed body found, for the record.
    pub(crate) fn findings(&self) -> Vec<Finding> {
        match self {
            Outgoing::Whole(_) => Vec::new(),
            Outgoing::Stream(s) => s.scan.findings(),
        }
    }
}

impl Stream {
    /// The length the upstream is told: the agent's `Content-Length` (the
    /// scan keeps lengths), or `None`, and the body goes chunked.
    pub(crate) fn length(&self) -> Option<u64> {
        self.length
    }

    /// The next bytes to send (never empty), or `None` once the body has
    /// ended and all of it was sent.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, BodyAbort> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let scanned = match self.first.take() {
                Some(first) => self.scan.push(&first),
                None => match self.rest.recv().await {
                    Some(Piece::Data(piece)) => {
                        self.received += piece.len() as u64;
                        if self.received > self.max {
                            return Err(BodyAbort::too_large(self.max));
                        }
                        self.scan.push(&piece)
                    }
                    Some(Piece::End) => {
                        if self.length.is_some_and(|len| len != self.received) {
                            return Err(cut_off());
                        }
                        self.ended = true;
                        self.scan.finish()
                    }
                    Some(Piece::Failed(abort)) => return Err(abort),
                    None => return Err(cut_off()),
                },
            };
            match scanned {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Ok(Some(bytes)),
                Err(stopped) => return Err(secret_abort(stopped)),
            }
        }
    }
}

fn secret_abort(stopped: BodyStopped) -> BodyAbort {
    let rules: Vec<&str> = stopped.findings.iter().map(|f| f.rule).collect();
    let what = if stopped.open_too_long {
        "what looks like the start of a secret that does not end"
    } else {
        "what looks like a secret"
    };
    BodyAbort {
        reason: Reason::SecretInRequest,
        message: format!(
            "the request body carries {what} ({} in the body); credgate injects credentials itself, send none. The upload was stopped before it: the upstream got an incomplete request",
            rules.join(", ")
        ),
    }
}

/// Whether the request body has a content coding (other than `identity`):
/// the scan must then read it decoded, so it is held whole.
pub(crate) fn has_content_coding(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|coding| {
            let coding = coding.trim_ascii();
            !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity")
        })
}

/// A request body with a content coding, decoded so the secret scan reads
/// what the upstream will (at most `max` bytes, and `max_ratio` times its
/// encoded size); `None` when it has no coding. A coding credgate cannot
/// decode is refused: a body it cannot read is a body it cannot scan.
pub(crate) fn decoded_for_scan(
    headers: &HeaderMap,
    body: &[u8],
    max: usize,
    max_ratio: u64,
) -> Result<Option<Vec<u8>>, BodyAbort> {
    if !has_content_coding(headers) {
        return Ok(None);
    }
    let lines = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .map(|v| v.as_bytes());
    let codings = parse_codings(lines).map_err(|e| {
        let what = match e {
            DecodeError::Unsupported(coding) => format!("Content-Encoding {coding:?}"),
            DecodeError::TooDeep(n, codings) => format!("{n} stacked content codings ({codings})"),
            e => e.to_string(),
        };
        BodyAbort::new(
            Reason::PayloadUnsupported,
            format!(
                "the request body has {what}, which credgate cannot decode to scan for secrets"
            ),
        )
    })?;
    let limits = DecodeLimits {
        max_decoded: max as u64,
        max_ratio,
    };
    let mut decoder = BodyDecoder::new(&codings, limits);
    decoder.push(body);
    decoder.end();
    let mut decoded = Vec::new();
    loop {
        match decoder.next_piece() {
            Ok(Some(piece)) => decoded.extend_from_slice(&piece),
            Ok(None) if decoder.is_finished() => return Ok(Some(decoded)),
            Ok(None) => {
                return Err(BodyAbort::new(
                    Reason::PayloadMalformed,
                    "the request body ended before its encoded stream did",
                ))
            }
            Err(DecodeError::TooLarge(_) | DecodeError::RatioExceeded(_)) => {
                return Err(BodyAbort::new(
                    Reason::BodyTooLarge,
                    format!("the request body decodes to more than sanitize.max_buffered_body ({max} bytes) or upstream.max_decode_ratio ({max_ratio}) times its size"),
                ))
            }
            Err(e) => {
                return Err(BodyAbort::new(
                    Reason::PayloadMalformed,
                    format!("the request body cannot be decoded: {e}"),
                ))
            }
        }
    }
}
