//! Request bodies in the framing, and with the integrity claims, of the AWS
//! SDKs.
//!
//! Since 2025 the AWS SDKs send S3 uploads (`PutObject`, `UploadPart`) as
//! `Content-Encoding: aws-chunked`, `x-amz-content-sha256:
//! STREAMING-UNSIGNED-PAYLOAD-TRAILER`, with the payload's length in
//! `x-amz-decoded-content-length` and its checksum in a trailer after the
//! last chunk that `x-amz-trailer` announces. Older SDKs sign each chunk
//! (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`). Every one of those
//! headers is an `x-amz-*` header, which the agent may not send on: a body
//! forwarded with its framing but without them is stored framing and all.
//!
//! So [`read`] runs before anything else looks at the body. It decodes an
//! aws-chunked body to its payload, checking every chunk's framing and
//! the declared length; checks every checksum the agent declared (in a
//! trailer or a header) against the payload; and takes the framing and
//! integrity headers out of the request. What it learnt is an
//! [`AwsPayload`], which the SigV4 signer puts back as credgate's own,
//! signed headers: the payload's SHA-256 as `x-amz-content-sha256`, its
//! checksum as an ordinary `x-amz-checksum-*` header.
//!
//! Decoding, rather than re-framing the stream with chunk signatures of the
//! task's keys, because:
//! - a body that arrived whole (within the first part the connection reads
//!   before the pipeline runs), or that must be held whole to be hashed, is
//!   scanned for secrets before a byte is forwarded, so a framing or
//!   checksum error is found before anything is sent, and the signature
//!   covers the payload's own SHA-256;
//! - S3 and moto both accept `PutObject` and `UploadPart` with a signed
//!   payload hash and the checksum as a header, and S3 verifies and stores
//!   that checksum as it would the trailer's;
//! - the secret scan must read the payload: the agent chooses the chunk
//!   sizes, so framing could otherwise fall in the middle of a secret.
//!
//! An S3 upload too large to hold streams instead: [`read_streamed`]
//! reads the same headers, and [`PayloadStream`] decodes and checks the
//! body as it flows, with the same checks (see the `streamed` module for
//! how it is forwarded, unhashed, and why).
//!
//! A body in a framing this module does not know is refused, never
//! forwarded as if it were the payload.

mod checksum;
mod chunks;
mod streamed;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, EXPECT};
use http::Method;

use crate::reason::Reason;
use checksum::{checksum_headers, Checksum, Setting};
use chunks::decode_chunks;

pub use checksum::ChecksumAlgorithm;
pub use streamed::{read_streamed, PayloadStream, Reframe, FRAME_CHUNK};

const CONTENT_SHA256: &str = "x-amz-content-sha256";
const DECODED_LENGTH: &str = "x-amz-decoded-content-length";
const TRAILER: &str = "x-amz-trailer";
const TRAILER_SIGNATURE: &str = "x-amz-trailer-signature";
const SDK_ALGORITHM: &str = "x-amz-sdk-checksum-algorithm";
const CHECKSUM_PREFIX: &str = "x-amz-checksum-";

/// Why a body was refused. Never carries a header value or body bytes: the
/// message goes to the agent and into the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The framing is broken: a bad chunk size or line, a body that ends
    /// early or goes on after its end, a length that disagrees.
    #[error("the request body's framing is malformed: {0}")]
    Malformed(String),
    /// A declared checksum does not match the payload.
    #[error(
        "the {algorithm} checksum in the {place} does not match the payload; nothing was forwarded"
    )]
    ChecksumMismatch {
        /// The algorithm's S3 name.
        algorithm: &'static str,
        /// `trailer` or `header` (or `x-amz-content-sha256`).
        place: &'static str,
    },
    /// A framing or integrity header credgate cannot carry faithfully.
    #[error("{0}")]
    Unsupported(String),
}

impl PayloadError {
    /// The message for a body stopped mid-stream, part of it forwarded:
    /// [`Display`](std::fmt::Display) but for the claim that nothing was.
    pub fn streamed(&self) -> String {
        match self {
            PayloadError::ChecksumMismatch { algorithm, place } => {
                format!("the {algorithm} checksum in the {place} does not match the payload")
            }
            e => e.to_string(),
        }
    }

    /// The stable reason the request is refused with (all are 400).
    pub fn reason(&self) -> Reason {
        match self {
            PayloadError::Malformed(_) => Reason::PayloadMalformed,
            PayloadError::ChecksumMismatch { .. } => Reason::PayloadChecksumMismatch,
            PayloadError::Unsupported(_) => Reason::PayloadUnsupported,
        }
    }
}

fn malformed(what: impl Into<String>) -> PayloadError {
    PayloadError::Malformed(what.into())
}

/// What the agent declared about its payload, checked, for a request that
/// credgate re-signs to carry as its own headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsPayload {
    /// The checksum the agent declared (trailer or header), with the value
    /// that matched the payload.
    checksum: Option<Checksum>,
    /// Checksum settings carried unchanged, validated:
    /// `x-amz-sdk-checksum-algorithm`, `x-amz-checksum-algorithm`
    /// (`CreateMultipartUpload`), `x-amz-checksum-type` and
    /// `x-amz-mp-object-size` (`CompleteMultipartUpload`).
    settings: Vec<Setting>,
}

impl AwsPayload {
    /// The declared checksum's algorithm, if the agent declared one.
    pub fn checksum_algorithm(&self) -> Option<ChecksumAlgorithm> {
        self.checksum.as_ref().map(|(a, _)| *a)
    }

    /// After the body was changed (secrets masked by an `on_secret: strip`
    /// rule): the checksum is of the body as forwarded, in the algorithm the
    /// agent chose, or none where credgate cannot compute that one; and the
    /// digests of the body as the agent sent it (`Content-MD5`,
    /// `Content-Digest`, `Repr-Digest`, `Digest`) leave `headers`: they no
    /// longer match, and would tell the upstream what was masked.
    pub fn body_changed(&mut self, headers: &mut HeaderMap, body: &[u8]) {
        for name in ["content-md5", "content-digest", "repr-digest", "digest"] {
            headers.remove(name);
        }
        if let Some((algorithm, value)) = &mut self.checksum {
            match algorithm.encode(body) {
                Some(fresh) => *value = fresh,
                None => {
                    self.checksum = None;
                    self.settings.retain(|(name, _)| name != SDK_ALGORITHM);
                }
            }
        }
    }

    /// Puts the checksum and the checksum settings into `headers` (of a
    /// request about to be signed, so they are signed too). With a
    /// checksum, `x-amz-sdk-checksum-algorithm` names its algorithm: it is
    /// how moto, and S3 for some operations, find which header holds it.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.settings {
            headers.insert(name.clone(), value.clone());
        }
        if let Some((algorithm, value)) = &self.checksum {
            headers.insert(
                algorithm.header(),
                HeaderValue::from_str(value).expect("base64 is a valid header value"),
            );
            headers.insert(
                HeaderName::from_static(SDK_ALGORITHM),
                HeaderValue::from_static(algorithm.name()),
            );
        }
    }
}

/// How `x-amz-content-sha256` says the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    /// No such header.
    Absent,
    /// `UNSIGNED-PAYLOAD`: the body is the payload.
    Unsigned,
    /// The payload's SHA-256 in hex.
    Sha256([u8; 32]),
    /// aws-chunked: with chunk signatures or not, with trailers or not.
    Chunked { signed: bool, trailer: bool },
}

/// Whether `headers` say anything about the body that [`read`] must check
/// on the whole payload: an `x-amz-*` header (framing, a declared checksum
/// or hash) or an `aws-chunked` content coding. A streamed body that they
/// describe is read through [`read_streamed`] when it is an S3 upload that
/// may stream, and otherwise held whole (within `max_buffered_body`) first.
pub fn describes_body(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| name.as_str().starts_with("x-amz-"))
        || headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"aws-chunked"))
}

/// Takes `Expect` out of `headers`: credgate answered it (the agent sent
/// its body), so nothing upstream has to wait for a 100 Continue. Only
/// `100-continue` is understood.
pub fn take_expect(headers: &mut HeaderMap) -> Result<(), PayloadError> {
    for value in headers.get_all(EXPECT) {
        if !value.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            return Err(PayloadError::Unsupported(
                "Expect names an expectation other than 100-continue".into(),
            ));
        }
    }
    headers.remove(EXPECT);
    Ok(())
}

/// Decodes `body` to the payload it carries and checks what `headers`
/// declare about it. Removes the headers it reads (`x-amz-content-sha256`,
/// `x-amz-decoded-content-length`, `x-amz-trailer`, `x-amz-checksum-*` but
/// `x-amz-checksum-mode`, `x-amz-sdk-checksum-algorithm`,
/// `x-amz-mp-object-size`, `Expect`) and `aws-chunked` from
/// `Content-Encoding`; returns the payload and what must be carried into a
/// re-signed request. A body without AWS framing comes back unchanged.
///
/// A checksum header is of the body, except on `CompleteMultipartUpload`
/// (`POST` with an `uploadId` in `query`), where it is of the whole object:
/// there it is checked for its form only, and S3 checks its value.
///
/// Must run before the headers are stripped (it reads `x-amz-*` headers)
/// and before the body is scanned for secrets (the scan reads the payload).
pub fn read(
    headers: &mut HeaderMap,
    body: Bytes,
    method: &Method,
    query: Option<&str>,
) -> Result<(Bytes, AwsPayload), PayloadError> {
    // Most requests carry none of these: one pass over the names, no lookups.
    let relevant = headers.keys().any(|name| {
        name == EXPECT || name == CONTENT_ENCODING || name.as_str().starts_with("x-amz-")
    });
    if !relevant {
        return Ok((body, AwsPayload::default()));
    }
    let head = read_head(headers, method, query)?;
    let (body, trailer_checksum) = match head.declared {
        Declared::Chunked { signed, .. } => {
            let decoded = decode_chunks(&body, signed, head.announced, head.decoded_length)?;
            (Bytes::from(decoded.payload), decoded.checksum)
        }
        _ => (body, None),
    };
    let payload = head.conclude(
        || crate::secret::sha256(&body),
        |algorithm| algorithm.encode(&body),
        trailer_checksum,
    )?;
    Ok((body, payload))
}

/// What a request's headers declare about its body, read and taken out of
/// them: the part of [`read`] that needs no body byte, which a streamed
/// body ([`read_streamed`]) shares.
struct Head {
    declared: Declared,
    /// `x-amz-decoded-content-length`, optional (the forwarded payload's
    /// own length is what counts, but a declared one must agree with the
    /// chunks).
    decoded_length: Option<u64>,
    /// The checksum trailer `x-amz-trailer` announces.
    announced: Option<ChecksumAlgorithm>,
    header_checksum: Option<Checksum>,
    settings: Vec<Setting>,
    /// `CompleteMultipartUpload`: a checksum header is the whole object's.
    of_the_object: bool,
}

fn read_head(
    headers: &mut HeaderMap,
    method: &Method,
    query: Option<&str>,
) -> Result<Head, PayloadError> {
    take_expect(headers)?;
    let declared = declared_framing(headers)?;
    let aws_chunked = take_aws_chunked_coding(headers)?;
    let (decoded_length, announced) = match declared {
        Declared::Chunked { trailer, .. } => {
            (decoded_length(headers)?, announced_trailer(headers, trailer)?)
        }
        _ if aws_chunked => {
            return Err(malformed(
                "Content-Encoding: aws-chunked needs an x-amz-content-sha256 naming a STREAMING- framing",
            ))
        }
        _ => {
            for name in [DECODED_LENGTH, TRAILER] {
                if headers.contains_key(name) {
                    return Err(malformed(format!("{name} is only for an aws-chunked body")));
                }
            }
            (None, None)
        }
    };
    let (header_checksum, settings) = checksum_headers(headers)?;
    let of_the_object = method == Method::POST
        && query.is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.split('=').next() == Some("uploadId"))
        });
    Ok(Head {
        declared,
        decoded_length,
        announced,
        header_checksum,
        settings,
        of_the_object,
    })
}

impl Head {
    /// The algorithm of the checksum declared, in a trailer or a header.
    fn algorithm(&self) -> Option<ChecksumAlgorithm> {
        self.announced.or(self
            .header_checksum
            .as_ref()
            .map(|(algorithm, _)| *algorithm))
    }

    /// Checks the declarations against the payload, once it is all known:
    /// `sha256` gives its SHA-256 (asked only when `x-amz-content-sha256`
    /// declared one), `computed` its checksum in an algorithm (`None` where
    /// credgate does not compute it), `trailer_checksum` what the trailer
    /// said. What is left to carry into a re-signed request comes back.
    fn conclude(
        self,
        sha256: impl FnOnce() -> [u8; 32],
        computed: impl FnOnce(ChecksumAlgorithm) -> Option<String>,
        trailer_checksum: Option<Checksum>,
    ) -> Result<AwsPayload, PayloadError> {
        if let Declared::Sha256(expected) = self.declared {
            if sha256() != expected {
                return Err(PayloadError::ChecksumMismatch {
                    algorithm: "SHA256",
                    place: "x-amz-content-sha256",
                });
            }
        }
        let mut payload = AwsPayload {
            checksum: None,
            settings: self.settings,
        };
        let (checksum, place) = match (trailer_checksum, self.header_checksum) {
            (Some(_), Some(_)) => return Err(two_checksums()),
            (Some(c), None) => (Some(c), "trailer"),
            (None, Some(c)) => (Some(c), "header"),
            (None, None) => (None, ""),
        };
        if let Some((algorithm, claimed)) = checksum {
            // What credgate cannot compute it carries for S3 to check; what it
            // can, it checks first, so a mismatch forwards nothing.
            match computed(algorithm) {
                Some(actual) if actual != claimed && !self.of_the_object => {
                    return Err(PayloadError::ChecksumMismatch {
                        algorithm: algorithm.name(),
                        place,
                    })
                }
                _ => payload.checksum = Some((algorithm, claimed)),
            }
        }
        if let Some(algorithm) = payload.checksum_algorithm() {
            check_sdk_algorithm(algorithm, &payload.settings)?;
        }
        Ok(payload)
    }
}

fn two_checksums() -> PayloadError {
    malformed("the body carries a checksum in both a header and a trailer")
}

/// `x-amz-sdk-checksum-algorithm`, when sent, names the checksum's
/// algorithm.
fn check_sdk_algorithm(
    algorithm: ChecksumAlgorithm,
    settings: &[Setting],
) -> Result<(), PayloadError> {
    match settings.iter().find(|(n, _)| n == SDK_ALGORITHM) {
        Some((_, sdk)) if sdk.as_bytes() != algorithm.name().as_bytes() => Err(malformed(format!(
            "x-amz-sdk-checksum-algorithm disagrees with the {} checksum sent",
            algorithm.name()
        ))),
        _ => Ok(()),
    }
}

/// The one value of header `name`, as text; `None` when absent. `name` is
/// one credgate knows (it goes into the message), never one the agent chose.
fn single<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, PayloadError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(malformed(format!("the request has more than one {name}")));
    }
    value
        .to_str()
        .map(|v| Some(v.trim()))
        .map_err(|_| malformed(format!("{name} is not plain text")))
}

fn declared_framing(headers: &mut HeaderMap) -> Result<Declared, PayloadError> {
    let declared = match single(headers, CONTENT_SHA256)? {
        None => Declared::Absent,
        Some("UNSIGNED-PAYLOAD") => Declared::Unsigned,
        Some("STREAMING-UNSIGNED-PAYLOAD-TRAILER") => Declared::Chunked {
            signed: false,
            trailer: true,
        },
        Some("STREAMING-AWS4-HMAC-SHA256-PAYLOAD" | "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD") => {
            Declared::Chunked {
                signed: true,
                trailer: false,
            }
        }
        Some(
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
            | "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
        ) => Declared::Chunked {
            signed: true,
            trailer: true,
        },
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            let mut digest = [0u8; 32];
            for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
                let text = std::str::from_utf8(pair).expect("hex digits are ASCII");
                digest[i] = u8::from_str_radix(text, 16).expect("checked hex digits");
            }
            Declared::Sha256(digest)
        }
        Some(other) if other.starts_with("STREAMING-") => {
            return Err(PayloadError::Unsupported(
                "x-amz-content-sha256 names a STREAMING- framing credgate cannot decode and re-sign; \
                 use STREAMING-UNSIGNED-PAYLOAD-TRAILER (the SDKs' default) or a plain body"
                    .into(),
            ))
        }
        Some(_) => {
            return Err(PayloadError::Unsupported(
                "x-amz-content-sha256 is neither a hex SHA-256, UNSIGNED-PAYLOAD nor a STREAMING- framing credgate decodes"
                    .into(),
            ))
        }
    };
    headers.remove(CONTENT_SHA256);
    Ok(declared)
}

/// Removes `aws-chunked` from `Content-Encoding` (keeping every other
/// coding, in order); whether it was there.
fn take_aws_chunked_coding(headers: &mut HeaderMap) -> Result<bool, PayloadError> {
    let mut codings: Vec<HeaderValue> = Vec::new();
    let mut found = 0;
    for value in headers.get_all(CONTENT_ENCODING) {
        for coding in value.as_bytes().split(|b| *b == b',') {
            let coding = coding.trim_ascii();
            if coding.eq_ignore_ascii_case(b"aws-chunked") {
                found += 1;
            } else if !coding.is_empty() {
                codings.push(HeaderValue::from_bytes(coding).expect("part of a header value"));
            }
        }
    }
    if found == 0 {
        return Ok(false);
    }
    if found > 1 {
        return Err(malformed("Content-Encoding names aws-chunked twice"));
    }
    headers.remove(CONTENT_ENCODING);
    for coding in codings {
        headers.append(CONTENT_ENCODING, coding);
    }
    Ok(true)
}

fn decoded_length(headers: &mut HeaderMap) -> Result<Option<u64>, PayloadError> {
    let length = match single(headers, DECODED_LENGTH)? {
        None => return Ok(None),
        Some(text)
            if !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit()) =>
        {
            text.parse().expect("checked digits")
        }
        Some(_) => return Err(malformed("x-amz-decoded-content-length is not a number")),
    };
    headers.remove(DECODED_LENGTH);
    Ok(Some(length))
}

/// The checksum trailer `x-amz-trailer` announces, for a framing with
/// trailers; none is allowed without.
fn announced_trailer(
    headers: &mut HeaderMap,
    trailer: bool,
) -> Result<Option<ChecksumAlgorithm>, PayloadError> {
    let announced = single(headers, TRAILER)?.map(str::to_ascii_lowercase);
    headers.remove(TRAILER);
    match (announced, trailer) {
        (None, false) => Ok(None),
        (Some(_), false) => Err(malformed(
            "x-amz-trailer is announced, but x-amz-content-sha256 names a framing without trailers",
        )),
        (None, true) => Err(malformed(
            "x-amz-content-sha256 names a framing with a trailer, but x-amz-trailer announces none",
        )),
        (Some(name), true) => match ChecksumAlgorithm::from_header(&name) {
            Some(algorithm) => Ok(Some(algorithm)),
            None if name.contains(',') => Err(PayloadError::Unsupported(
                "x-amz-trailer announces more than one trailer; S3 takes one checksum".into(),
            )),
            None => Err(PayloadError::Unsupported(
                "x-amz-trailer announces a trailer other than an x-amz-checksum-* checksum credgate knows \
                 (crc32, crc32c, crc64nvme, sha1, sha256)"
                    .into(),
            )),
        },
    }
}

#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod tests;
