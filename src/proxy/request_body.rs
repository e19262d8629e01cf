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
//!
//! A streamed S3 upload is read through its AWS framing
//! ([`PayloadStream`]): each piece is decoded before it is scanned, the
//! payload goes on plain or re-framed ([`Reframe`]), and its last bytes are
//! held back until the body's end has been checked (framing, declared
//! length, hash and checksum), so a body that fails a check stops the send
//! the same way.

use bytes::Bytes;
use http::header::{self, HeaderMap};
use tokio::sync::mpsc;

use crate::decode::{parse_codings, BodyDecoder, DecodeError, DecodeLimits};
use crate::reason::Reason;
use crate::sanitize::aws_payload::{AwsPayload, PayloadError, PayloadStream, Reframe};
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
    /// The first part, read before the pipeline ran (decoded, when `aws`
    /// decodes the body).
    first: Bytes,
    /// How many bytes of the agent's body the first part was.
    first_received: u64,
    rest: mpsc::Receiver<Piece>,
    /// The agent's `Content-Length`, when it sent one.
    length: Option<u64>,
    /// The AWS framing and checksums the body is read through.
    aws: Option<Box<PayloadStream>>,
}

impl Streamed {
    pub(crate) fn new(first: Bytes, rest: mpsc::Receiver<Piece>, length: Option<u64>) -> Self {
        Streamed {
            first_received: first.len() as u64,
            first,
            rest,
            length,
            aws: None,
        }
    }

    /// The first part, read before the pipeline ran: the payload it
    /// carries, once [`decode_with`](Streamed::decode_with) ran.
    pub(crate) fn first(&self) -> &Bytes {
        &self.first
    }

    /// The agent's `Content-Length`, when it sent one.
    pub(crate) fn length(&self) -> Option<u64> {
        self.length
    }

    /// From here on the body is read through `aws`: its first part is
    /// decoded now, the rest as it arrives.
    pub(crate) fn decode_with(&mut self, mut aws: PayloadStream) -> Result<(), PayloadError> {
        self.first = aws.push(std::mem::take(&mut self.first))?;
        self.aws = Some(Box::new(aws));
        Ok(())
    }

    /// The AWS framing and checksums the body is read through.
    pub(crate) fn aws(&self) -> Option<&PayloadStream> {
        self.aws.as_deref()
    }

    /// Replaces the first part (same length: secrets masked in place).
    pub(crate) fn set_first(&mut self, first: Bytes) {
        debug_assert_eq!(first.len(), self.first.len());
        self.first = first;
    }

    /// Reads the rest of the body into memory, for a request that must be
    /// held whole; `what` says why, for the 413 past `limit` bytes.
    /// A body read through AWS framing is spooled through its
    /// [`Stream`] ([`Stream::collect`]) instead.
    pub(crate) async fn spool(mut self, limit: usize, what: &str) -> Result<Bytes, BodyAbort> {
        debug_assert!(self.aws.is_none(), "spooled before it is decoded");
        let too_large = || held_too_large(limit, what);
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

fn held_too_large(limit: usize, what: &str) -> BodyAbort {
    BodyAbort::new(
        Reason::BodyTooLarge,
        format!("{what} is held whole, and this one is larger than sanitize.max_buffered_body ({limit} bytes)"),
    )
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
    /// The agent's `Content-Length`.
    length: Option<u64>,
    scan: BodyStreamScan,
    max: u64,
    received: u64,
    ended: bool,
    aws: Option<Box<AwsStream>>,
    /// Whether what the stream gives goes upstream as it comes (unset
    /// while it is [collected](Stream::collect)): what a stop says.
    forwarding: bool,
}

/// A body read through AWS framing on its way out: decoded (in
/// [`Stream::next`]), scanned, then sent plain or re-framed, its last bytes
/// held back until its end has been checked.
struct AwsStream {
    /// Taken when the body ends, to check what it declared.
    payload: Option<PayloadStream>,
    reframe: Option<Reframe>,
    /// The last bytes ready to go, held until the next are (or the end
    /// has been checked): a body whose framing or checksum turns out wrong
    /// never reaches the upstream complete.
    held: Option<Bytes>,
    /// What the upstream is told the length is.
    out_length: u64,
    /// What went out so far.
    sent: u64,
    /// The checksum the body declared, verified, once it has ended.
    declared: Option<AwsPayload>,
}

impl AwsStream {
    /// Passes scanned payload on: framed (when re-framed), and behind
    /// what was held.
    fn forward(&mut self, scanned: Bytes) -> Bytes {
        let ready = match &mut self.reframe {
            Some(reframe) => reframe.push(&scanned),
            None => scanned,
        };
        if ready.is_empty() {
            return ready;
        }
        let out = self.held.replace(ready).unwrap_or_default();
        self.sent += out.len() as u64;
        out
    }

    /// The body has ended and its last scanned bytes are `rest`: checks
    /// its framing and checksums, then lets the held bytes go (with the
    /// trailer, re-framed).
    fn close(&mut self, rest: Bytes, masked: bool, forwarding: bool) -> Result<Bytes, BodyAbort> {
        let before = self.forward(rest);
        let payload = self.payload.take().expect("closed once");
        let stopped = |e| payload_abort(e, forwarding);
        let declared = payload.finish().map_err(stopped)?;
        let mut out = before.to_vec();
        out.extend_from_slice(&self.held.take().unwrap_or_default());
        if let Some(reframe) = self.reframe.take() {
            let tail = reframe.finish(&declared, masked).map_err(stopped)?;
            out.extend_from_slice(&tail);
        }
        self.sent += (out.len() - before.len()) as u64;
        if self.sent != self.out_length {
            let e = PayloadError::Malformed(
                "the payload came to another length than it was announced with".into(),
            );
            return Err(payload_abort(e, forwarding));
        }
        self.declared = Some(declared);
        Ok(Bytes::from(out))
    }
}

/// A body stopped for its framing or checksum: the same reason as a whole
/// body's, and, when it was `forwarding`, what the upstream got.
fn payload_abort(e: PayloadError, forwarding: bool) -> BodyAbort {
    let message = if forwarding {
        format!(
            "{}; the upload was stopped before its end, so the upstream got an incomplete request",
            e.streamed()
        )
    } else {
        e.to_string()
    };
    BodyAbort::new(e.reason(), message)
}

impl Outgoing {
    /// A streamed body, scanned with `scan` and cut at `max` bytes. A body
    /// read through AWS framing goes as its payload, plain or through
    /// `reframe`.
    pub(crate) fn stream(
        body: Streamed,
        scan: BodyStreamScan,
        max: u64,
        reframe: Option<Reframe>,
    ) -> Outgoing {
        Outgoing::Stream(Box::new(Stream::new(body, scan, max, reframe)))
    }

    /// Body bytes received from the agent so far, for a streamed body (a
    /// whole one was counted as received, before any decoding).
    pub(crate) fn streamed_in(&self) -> Option<u64> {
        match self {
            Outgoing::Whole(_) => None,
            Outgoing::Stream(s) => Some(s.received()),
        }
    }

    /// The rules the scan of a streamed body found, for the record.
    pub(crate) fn findings(&self) -> Vec<Finding> {
        match self {
            Outgoing::Whole(_) => Vec::new(),
            Outgoing::Stream(s) => s.findings(),
        }
    }
}

impl Stream {
    /// A streamed body, scanned with `scan` and cut at `max` bytes (see
    /// [`Outgoing::stream`]).
    pub(crate) fn new(
        body: Streamed,
        scan: BodyStreamScan,
        max: u64,
        reframe: Option<Reframe>,
    ) -> Stream {
        let aws = body.aws.map(|payload| {
            let out_length = match &reframe {
                Some(reframe) => reframe.framed_length(),
                None => payload.length(),
            };
            Box::new(AwsStream {
                payload: Some(*payload),
                reframe,
                held: None,
                out_length,
                sent: 0,
                declared: None,
            })
        });
        Stream {
            received: body.first_received,
            first: Some(body.first),
            rest: body.rest,
            length: body.length,
            scan,
            max,
            ended: false,
            aws,
            forwarding: true,
        }
    }

    /// The length the upstream is told: the agent's `Content-Length` (the
    /// scan keeps lengths), or `None`, and the body goes chunked; for a
    /// body read through AWS framing, that of its payload as sent.
    pub(crate) fn length(&self) -> Option<u64> {
        match &self.aws {
            Some(aws) => Some(aws.out_length),
            None => self.length,
        }
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
                        match &mut self.aws {
                            Some(aws) => {
                                let payload = aws.payload.as_mut().expect("open until the end");
                                let forwarding = self.forwarding;
                                let decoded = payload
                                    .push(piece)
                                    .map_err(|e| payload_abort(e, forwarding))?;
                                self.scan.push(&decoded)
                            }
                            None => self.scan.push(&piece),
                        }
                    }
                    Some(Piece::End) => {
                        if self.length.is_some_and(|len| len != self.received) {
                            return Err(cut_off());
                        }
                        self.ended = true;
                        let rest = self.scan.finish().map_err(|s| self.secret_abort(s))?;
                        let masked = self.scan.masked() > 0;
                        let last = match &mut self.aws {
                            Some(aws) => aws.close(rest, masked, self.forwarding)?,
                            None => rest,
                        };
                        return Ok(Some(last).filter(|last| !last.is_empty()));
                    }
                    Some(Piece::Failed(abort)) => return Err(abort),
                    None => return Err(cut_off()),
                },
            };
            let bytes = scanned.map_err(|s| self.secret_abort(s))?;
            let bytes = match &mut self.aws {
                Some(aws) => aws.forward(bytes),
                None => bytes,
            };
            if !bytes.is_empty() {
                return Ok(Some(bytes));
            }
        }
    }

    /// Reads the whole body, as it would be sent, into memory, for a
    /// request that must be held whole after all; `what` says why, for the
    /// 413 past `limit` bytes.
    pub(crate) async fn collect(&mut self, limit: usize, what: &str) -> Result<Bytes, BodyAbort> {
        self.forwarding = false;
        debug_assert!(
            self.aws.as_ref().is_none_or(|aws| aws.reframe.is_none()),
            "collected as its payload"
        );
        if self.length().is_some_and(|len| len > limit as u64) {
            return Err(held_too_large(limit, what));
        }
        let mut body = Vec::new();
        while let Some(piece) = self.next().await? {
            if body.len() + piece.len() > limit {
                return Err(held_too_large(limit, what));
            }
            body.extend_from_slice(&piece);
        }
        Ok(Bytes::from(body))
    }

    /// Body bytes received from the agent so far.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// The rules the scan found so far, for the record.
    pub(crate) fn findings(&self) -> Vec<Finding> {
        self.scan.findings()
    }

    /// Whether a secret was masked (under a stripping rule).
    pub(crate) fn masked(&self) -> bool {
        self.scan.masked() > 0
    }

    /// What the body's AWS framing declared, checked, once it has ended.
    pub(crate) fn declared(&mut self) -> Option<AwsPayload> {
        self.aws.as_mut().and_then(|aws| aws.declared.take())
    }
}

impl Stream {
    fn secret_abort(&self, stopped: BodyStopped) -> BodyAbort {
        let rules: Vec<&str> = stopped.findings.iter().map(|f| f.rule).collect();
        let what = if stopped.open_too_long {
            "what looks like the start of a secret that does not end"
        } else {
            "what looks like a secret"
        };
        let sent = if self.forwarding {
            "The upload was stopped before it: the upstream got an incomplete request"
        } else {
            "Nothing was forwarded"
        };
        BodyAbort {
            reason: Reason::SecretInRequest,
            message: format!(
                "the request body carries {what} ({} in the body); credgate injects credentials itself, send none. {sent}",
                rules.join(", ")
            ),
        }
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
