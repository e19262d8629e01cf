//! S3 uploads too large to hold, read as they stream.
//!
//! [`read_streamed`] reads what the headers declare, as [`read`](super::read)
//! does; [`PayloadStream`] then decodes the body piece by piece with the
//! same framing checks ([`ChunkStream`]) and computes the declared hashes
//! as the payload goes by; [`PayloadStream::finish`] makes the checks
//! [`read`](super::read) makes on a whole body, once the last byte is in.
//!
//! Forwarded to S3, the payload is signed `UNSIGNED-PAYLOAD` (its hash is
//! known only at its end, after its first bytes were sent). With a declared
//! checksum it is re-framed ([`Reframe`]) as aws-chunked
//! `STREAMING-UNSIGNED-PAYLOAD-TRAILER`, chunks of credgate's own size,
//! with the checksum in a trailer, rather than sent plain:
//! - the checksum is known only at the end, and a header goes before the
//!   body: only a trailer can carry it, and S3 needs it (it stores it with
//!   the object; a multipart upload created with a checksum algorithm
//!   needs every part's);
//! - the trailer is the last thing sent, so holding it back until the
//!   checksum is verified keeps the upstream's request incomplete when it
//!   fails: S3 stores nothing;
//! - credgate's chunk size makes the framed length known before the first
//!   byte: S3 takes no `Transfer-Encoding: chunked`, so `Content-Length`
//!   must be right from the start.
//!
//! Without a checksum the payload goes plain, its `Content-Length` the
//! decoded length, and the caller holds its last bytes back until the
//! framing has ended where it should.

use aws_lc_rs::digest;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING};
use http::Method;

use super::checksum::{ChecksumAlgorithm, Running};
use super::chunks::ChunkStream;
use super::{
    check_sdk_algorithm, malformed, read_head, two_checksums, AwsPayload, Declared, Head,
    PayloadError, DECODED_LENGTH, SDK_ALGORITHM, TRAILER,
};

/// The chunk size of a re-framed body. S3 asks at least 8 KiB of every
/// chunk but the last; larger ones cost more memory per upload.
pub const FRAME_CHUNK: usize = 64 << 10;

/// Reads what `headers` declare about the body of a request whose body
/// will stream (its first part has arrived, `length` is the agent's
/// `Content-Length`), and takes those headers out as [`read`](super::read)
/// does. `Ok(None)`, with `headers` untouched, for a body that cannot
/// stream and must be held whole instead: not a `PUT` (`PutObject` and
/// `UploadPart` are the large bodies; `CompleteMultipartUpload`'s
/// checksum is of the object), a payload whose length is not declared
/// (S3 takes no chunked transfer coding), or one with a content coding
/// besides aws-chunked (the scan reads it decoded, so it is held whole).
/// An error is what [`read`](super::read) would refuse the body for.
pub fn read_streamed(
    headers: &mut HeaderMap,
    method: &Method,
    query: Option<&str>,
    length: Option<u64>,
) -> Result<Option<PayloadStream>, PayloadError> {
    if method != Method::PUT {
        return Ok(None);
    }
    let mut trial = headers.clone();
    let head = read_head(&mut trial, method, query)?;
    let (chunks, length) = match head.declared {
        Declared::Chunked { signed, .. } => match head.decoded_length {
            Some(decoded) => (
                Some(ChunkStream::new(signed, head.announced, Some(decoded))),
                decoded,
            ),
            None => return Ok(None),
        },
        _ => match length {
            Some(length) => (None, length),
            None => return Ok(None),
        },
    };
    let coded = trial
        .get_all(CONTENT_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case(b"identity"));
    if coded {
        return Ok(None);
    }
    if head.announced.is_some() && head.header_checksum.is_some() {
        return Err(two_checksums());
    }
    let algorithm = head.algorithm();
    if let Some(algorithm) = algorithm {
        check_sdk_algorithm(algorithm, &head.settings)?;
    }
    *headers = trial;
    Ok(Some(PayloadStream {
        sha256: matches!(head.declared, Declared::Sha256(_))
            .then(|| digest::Context::new(&digest::SHA256)),
        checksum: algorithm.and_then(ChecksumAlgorithm::running),
        head,
        chunks,
        length,
    }))
}

/// A body being decoded and checked as it streams.
pub struct PayloadStream {
    head: Head,
    /// The aws-chunked decoder; `None` for a plain body.
    chunks: Option<ChunkStream>,
    /// The payload's length: declared (aws-chunked) or the body's own.
    length: u64,
    /// The payload's SHA-256, when `x-amz-content-sha256` declared one.
    sha256: Option<digest::Context>,
    /// The declared checksum, computed (when credgate computes its kind).
    checksum: Option<Running>,
}

impl PayloadStream {
    /// How long the payload is (what a plain forwarded body's
    /// `Content-Length` is).
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The algorithm of the checksum declared, in a trailer or a header.
    pub fn checksum_algorithm(&self) -> Option<ChecksumAlgorithm> {
        self.head.algorithm()
    }

    /// Decodes the next piece of the body to the payload it carries
    /// (possibly none), adding it to the hashes being computed.
    pub fn push(&mut self, piece: Bytes) -> Result<Bytes, PayloadError> {
        let payload = match &mut self.chunks {
            Some(chunks) => {
                let mut out = Vec::with_capacity(piece.len());
                chunks.push(&piece, &mut out)?;
                Bytes::from(out)
            }
            None => piece,
        };
        if let Some(sha256) = &mut self.sha256 {
            sha256.update(&payload);
        }
        if let Some(checksum) = &mut self.checksum {
            checksum.update(&payload);
        }
        Ok(payload)
    }

    /// The body has ended: checks that it ended where its framing says, and
    /// every hash and checksum declared; what is left to carry into a
    /// re-signed request comes back.
    pub fn finish(self) -> Result<AwsPayload, PayloadError> {
        let trailer_checksum = match self.chunks {
            Some(chunks) => {
                let decoded = chunks.decoded();
                let checksum = chunks.finish()?;
                debug_assert_eq!(
                    decoded, self.length,
                    "the decoder checks the declared length"
                );
                checksum
            }
            None => None,
        };
        let sha256 = self.sha256;
        let computed = self.checksum.map(Running::finish);
        self.head.conclude(
            || {
                let digest = sha256.expect("computed when declared").finish();
                digest.as_ref().try_into().expect("32 bytes")
            },
            |_| computed,
            trailer_checksum,
        )
    }

    /// Sets the headers of the body as it goes to S3, unhashed, into those
    /// of a request about to be signed (so they are signed too): the
    /// checksum settings, and with a checksum the aws-chunked framing of
    /// [`Reframe`]. Returns the `x-amz-content-sha256` to sign with, and the
    /// re-framer to send the payload through (`None`: sent plain).
    /// `recompute`: a secret may be masked on the way (the rule strips
    /// secrets), so the trailer's checksum is computed over what is sent.
    pub fn unsigned_framing(
        &self,
        headers: &mut HeaderMap,
        recompute: bool,
    ) -> (&'static str, Option<Reframe>) {
        for (name, value) in &self.head.settings {
            headers.insert(name.clone(), value.clone());
        }
        let Some(algorithm) = self.checksum_algorithm() else {
            return ("UNSIGNED-PAYLOAD", None);
        };
        let reframe = Reframe::new(algorithm, self.length, recompute);
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("aws-chunked"));
        headers.insert(HeaderName::from_static(DECODED_LENGTH), self.length.into());
        headers.insert(
            HeaderName::from_static(TRAILER),
            HeaderValue::from_static(algorithm.entry().2),
        );
        headers.insert(
            HeaderName::from_static(SDK_ALGORITHM),
            HeaderValue::from_static(algorithm.name()),
        );
        ("STREAMING-UNSIGNED-PAYLOAD-TRAILER", Some(reframe))
    }
}

/// A payload re-framed as aws-chunked (`STREAMING-UNSIGNED-PAYLOAD-TRAILER`)
/// in chunks of [`FRAME_CHUNK`] bytes, with its checksum as the trailer.
/// Everything but the last chunk goes as it fills; the last chunk and the
/// trailer go in [`finish`](Reframe::finish), once the checksum is known.
pub struct Reframe {
    algorithm: ChecksumAlgorithm,
    /// The payload's length, as announced.
    length: u64,
    /// Payload bytes framed so far (in `pending` or sent).
    framed: u64,
    /// The chunk being filled.
    pending: Vec<u8>,
    /// The checksum of the payload as sent, when it may differ from the
    /// agent's (and credgate computes its kind).
    sent: Option<Running>,
}

impl Reframe {
    fn new(algorithm: ChecksumAlgorithm, length: u64, recompute: bool) -> Reframe {
        Reframe {
            algorithm,
            length,
            framed: 0,
            pending: Vec::with_capacity(FRAME_CHUNK.min(length as usize)),
            sent: recompute.then(|| algorithm.running()).flatten(),
        }
    }

    /// The length of the framed body, trailer and all.
    pub fn framed_length(&self) -> u64 {
        let full = self.length / FRAME_CHUNK as u64;
        let last = self.length % FRAME_CHUNK as u64;
        let chunk = |size: u64| hex_digits(size) + 2 + size + 2;
        let mut total = full * chunk(FRAME_CHUNK as u64);
        if last > 0 {
            total += chunk(last);
        }
        // `0\r\n`, `name:value\r\n`, `\r\n`.
        let value = (self.algorithm.digest_len() as u64).div_ceil(3) * 4;
        total + 3 + self.algorithm.entry().2.len() as u64 + 1 + value + 2 + 2
    }

    /// Frames the next payload bytes: the chunks they complete (possibly
    /// none).
    pub fn push(&mut self, mut payload: &[u8]) -> Bytes {
        if let Some(sent) = &mut self.sent {
            sent.update(payload);
        }
        self.framed += payload.len() as u64;
        let mut out = Vec::new();
        while !payload.is_empty() {
            let take = (FRAME_CHUNK - self.pending.len()).min(payload.len());
            self.pending.extend_from_slice(&payload[..take]);
            payload = &payload[take..];
            if self.pending.len() == FRAME_CHUNK {
                frame_chunk(&self.pending, &mut out);
                self.pending.clear();
            }
        }
        Bytes::from(out)
    }

    /// The end of the framed body: the last chunk, the zero chunk and the
    /// checksum trailer. `payload` is what the agent's body declared (its
    /// checksum verified); `masked`: a secret was masked in what was sent,
    /// so the checksum is of that instead.
    pub fn finish(mut self, payload: &AwsPayload, masked: bool) -> Result<Bytes, PayloadError> {
        if self.framed != self.length {
            return Err(malformed(
                "the payload's length differs from the length it was announced with",
            ));
        }
        let value = match (masked, self.sent.take(), &payload.checksum) {
            (true, Some(sent), _) => sent.finish(),
            (false, _, Some((algorithm, claimed))) if *algorithm == self.algorithm => {
                claimed.clone()
            }
            (true, None, _) => {
                return Err(PayloadError::Unsupported(format!(
                    "a secret was masked in the body, and credgate cannot compute the {} checksum of what is left; send a CRC or SHA checksum",
                    self.algorithm.name()
                )))
            }
            _ => {
                return Err(malformed(
                    "the checksum the body was announced with is missing",
                ))
            }
        };
        let mut out = Vec::with_capacity(self.pending.len() + 128);
        if !self.pending.is_empty() {
            frame_chunk(&self.pending, &mut out);
        }
        out.extend_from_slice(b"0\r\n");
        out.extend_from_slice(self.algorithm.entry().2.as_bytes());
        out.push(b':');
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        Ok(Bytes::from(out))
    }
}

fn frame_chunk(data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// How many hex digits `n` (> 0) is written with.
fn hex_digits(n: u64) -> u64 {
    u64::from((64 - n.leading_zeros()).div_ceil(4)).max(1)
}
