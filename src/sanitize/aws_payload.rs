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
//! - the body is held whole already (it is scanned for secrets before a byte
//!   is forwarded), so a framing or checksum error is found before anything
//!   is sent, and the signature covers the payload's own SHA-256;
//! - S3 and moto both accept `PutObject` and `UploadPart` with a signed
//!   payload hash and the checksum as a header, and S3 verifies and stores
//!   that checksum as it would the trailer's;
//! - the secret scan must read the payload: the agent chooses the chunk
//!   sizes, so framing could otherwise fall in the middle of a secret.
//!
//! A body in a framing this module does not know is refused, never
//! forwarded as if it were the payload.

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, EXPECT};
use http::Method;

use super::crc::{CRC32, CRC32C, CRC64_NVME};
use crate::reason::Reason;

const CONTENT_SHA256: &str = "x-amz-content-sha256";
const DECODED_LENGTH: &str = "x-amz-decoded-content-length";
const TRAILER: &str = "x-amz-trailer";
const TRAILER_SIGNATURE: &str = "x-amz-trailer-signature";
const SDK_ALGORITHM: &str = "x-amz-sdk-checksum-algorithm";
const CHECKSUM_PREFIX: &str = "x-amz-checksum-";

/// The longest chunk-size line or trailer line accepted (a chunk signature
/// of SigV4a is the longest thing one holds, about 150 bytes).
const MAX_LINE: usize = 1024;

/// A checksum algorithm S3 accepts for a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// CRC-32 (ISO-HDLC).
    Crc32,
    /// CRC-32C (Castagnoli).
    Crc32c,
    /// CRC-64/NVME.
    Crc64Nvme,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// SHA-512.
    Sha512,
    /// MD5 (carried, not checked: credgate has no MD5).
    Md5,
    /// XXH64 (carried, not checked).
    Xxhash64,
    /// XXH3, 64 bits (carried, not checked).
    Xxhash3,
    /// XXH3, 128 bits (carried, not checked).
    Xxhash128,
}

/// Each algorithm: its S3 name, its header, its size in bytes.
const ALGORITHMS: [(ChecksumAlgorithm, &str, &str, usize); 10] = [
    (ChecksumAlgorithm::Crc32, "CRC32", "x-amz-checksum-crc32", 4),
    (
        ChecksumAlgorithm::Crc32c,
        "CRC32C",
        "x-amz-checksum-crc32c",
        4,
    ),
    (
        ChecksumAlgorithm::Crc64Nvme,
        "CRC64NVME",
        "x-amz-checksum-crc64nvme",
        8,
    ),
    (ChecksumAlgorithm::Sha1, "SHA1", "x-amz-checksum-sha1", 20),
    (
        ChecksumAlgorithm::Sha256,
        "SHA256",
        "x-amz-checksum-sha256",
        32,
    ),
    (
        ChecksumAlgorithm::Sha512,
        "SHA512",
        "x-amz-checksum-sha512",
        64,
    ),
    (ChecksumAlgorithm::Md5, "MD5", "x-amz-checksum-md5", 16),
    (
        ChecksumAlgorithm::Xxhash64,
        "XXHASH64",
        "x-amz-checksum-xxhash64",
        8,
    ),
    (
        ChecksumAlgorithm::Xxhash3,
        "XXHASH3",
        "x-amz-checksum-xxhash3",
        8,
    ),
    (
        ChecksumAlgorithm::Xxhash128,
        "XXHASH128",
        "x-amz-checksum-xxhash128",
        16,
    ),
];

impl ChecksumAlgorithm {
    fn entry(self) -> (ChecksumAlgorithm, &'static str, &'static str, usize) {
        *ALGORITHMS
            .iter()
            .find(|entry| entry.0 == self)
            .expect("every algorithm is in the table")
    }

    /// The name S3 uses (`CRC32`, `CRC64NVME`, …).
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// The header (and trailer) carrying a checksum of this kind.
    pub fn header(self) -> HeaderName {
        HeaderName::from_static(self.entry().2)
    }

    /// The algorithm S3 calls `name`, in any case.
    fn from_name(name: &str) -> Option<ChecksumAlgorithm> {
        ALGORITHMS
            .iter()
            .find(|entry| entry.1.eq_ignore_ascii_case(name))
            .map(|entry| entry.0)
    }

    /// The algorithm whose header (or trailer) is `name` (lowercase).
    fn from_header(name: &str) -> Option<ChecksumAlgorithm> {
        ALGORITHMS
            .iter()
            .find(|entry| entry.2 == name)
            .map(|entry| entry.0)
    }

    /// The checksum of `data`, base64 as S3 writes it; `None` for the
    /// algorithms credgate does not compute (MD5, the XXH family), whose
    /// value it carries as sent for S3 to check.
    pub fn encode(self, data: &[u8]) -> Option<String> {
        use aws_lc_rs::digest;
        let digest: Vec<u8> = match self {
            ChecksumAlgorithm::Crc32 => (CRC32.checksum(data) as u32).to_be_bytes().to_vec(),
            ChecksumAlgorithm::Crc32c => (CRC32C.checksum(data) as u32).to_be_bytes().to_vec(),
            ChecksumAlgorithm::Crc64Nvme => CRC64_NVME.checksum(data).to_be_bytes().to_vec(),
            ChecksumAlgorithm::Sha1 => digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, data)
                .as_ref()
                .to_vec(),
            ChecksumAlgorithm::Sha256 => crate::credential::secret::sha256(data).to_vec(),
            ChecksumAlgorithm::Sha512 => digest::digest(&digest::SHA512, data).as_ref().to_vec(),
            ChecksumAlgorithm::Md5
            | ChecksumAlgorithm::Xxhash64
            | ChecksumAlgorithm::Xxhash3
            | ChecksumAlgorithm::Xxhash128 => return None,
        };
        Some(base64::engine::general_purpose::STANDARD.encode(digest))
    }

    /// How many bytes a checksum of this kind has.
    fn digest_len(self) -> usize {
        self.entry().3
    }
}

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
    // The body is in credgate's hands whole before anything is forwarded:
    // nothing upstream has to wait for a 100 Continue.
    for value in headers.get_all(EXPECT) {
        if !value.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            return Err(PayloadError::Unsupported(
                "Expect names an expectation other than 100-continue".into(),
            ));
        }
    }
    headers.remove(EXPECT);
    let declared = declared_framing(headers)?;
    let aws_chunked = take_aws_chunked_coding(headers)?;
    let mut payload = AwsPayload::default();
    let (body, trailer_checksum) = match declared {
        Declared::Chunked { signed, trailer } => {
            // Optional: the forwarded payload's own length is what counts,
            // but a declared one must agree with the chunks.
            let decoded_length = decoded_length(headers)?;
            let announced = announced_trailer(headers, trailer)?;
            let decoded = decode_chunks(&body, signed, announced, decoded_length)?;
            (Bytes::from(decoded.payload), decoded.checksum)
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
            (body, None)
        }
    };
    if let Declared::Sha256(expected) = declared {
        if crate::credential::secret::sha256(&body) != expected {
            return Err(PayloadError::ChecksumMismatch {
                algorithm: "SHA256",
                place: "x-amz-content-sha256",
            });
        }
    }
    let (header_checksum, settings) = checksum_headers(headers)?;
    payload.settings = settings;
    let of_the_object = method == Method::POST
        && query.is_some_and(|q| {
            q.split('&')
                .any(|pair| pair.split('=').next() == Some("uploadId"))
        });
    let (checksum, place) = match (trailer_checksum, header_checksum) {
        (Some(_), Some(_)) => {
            return Err(malformed(
                "the body carries a checksum in both a header and a trailer",
            ))
        }
        (Some(c), None) => (Some(c), "trailer"),
        (None, Some(c)) => (Some(c), "header"),
        (None, None) => (None, ""),
    };
    if let Some((algorithm, claimed)) = checksum {
        // What credgate cannot compute it carries for S3 to check; what it
        // can, it checks first, so a mismatch forwards nothing.
        match algorithm.encode(&body) {
            Some(actual) if actual != claimed && !of_the_object => {
                return Err(PayloadError::ChecksumMismatch {
                    algorithm: algorithm.name(),
                    place,
                })
            }
            _ => payload.checksum = Some((algorithm, claimed)),
        }
    }
    if let (Some(algorithm), Some((_, sdk))) = (
        payload.checksum_algorithm(),
        payload.settings.iter().find(|(n, _)| n == SDK_ALGORITHM),
    ) {
        if sdk.as_bytes() != algorithm.name().as_bytes() {
            return Err(malformed(format!(
                "x-amz-sdk-checksum-algorithm disagrees with the {} checksum sent",
                algorithm.name()
            )));
        }
    }
    Ok((body, payload))
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

/// An aws-chunked body, decoded.
struct Decoded {
    payload: Vec<u8>,
    /// The trailer's checksum, as the agent wrote it.
    checksum: Option<Checksum>,
}

/// Reads the lines and chunks of an aws-chunked body.
struct Cursor<'b> {
    body: &'b [u8],
    pos: usize,
}

impl<'b> Cursor<'b> {
    /// The next line, without its CRLF.
    fn line(&mut self, what: &str) -> Result<&'b [u8], PayloadError> {
        let rest = &self.body[self.pos..];
        let window = &rest[..rest.len().min(MAX_LINE + 2)];
        let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
            return Err(if rest.len() > MAX_LINE {
                malformed(format!("a {what} line is longer than {MAX_LINE} bytes"))
            } else {
                malformed(format!("the body ends inside a {what} line"))
            });
        };
        let line = &rest[..end];
        if line.contains(&b'\n') || line.contains(&b'\r') {
            return Err(malformed(format!("a {what} line holds a bare CR or LF")));
        }
        self.pos += end + 2;
        Ok(line)
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], PayloadError> {
        let rest = &self.body[self.pos..];
        if rest.len() < n {
            return Err(malformed("the body ends inside a chunk"));
        }
        self.pos += n;
        Ok(&rest[..n])
    }
}

fn decode_chunks(
    body: &[u8],
    signed: bool,
    announced: Option<ChecksumAlgorithm>,
    decoded_length: Option<u64>,
) -> Result<Decoded, PayloadError> {
    // The payload is shorter than its framing; a declared length bigger
    // than the body is caught by the checks below, not allocated.
    let capacity = decoded_length
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(body.len())
        .min(body.len());
    let mut payload = Vec::with_capacity(capacity);
    let mut cursor = Cursor { body, pos: 0 };
    loop {
        let line = cursor.line("chunk-size")?;
        let size = chunk_size(line, signed)?;
        if size == 0 {
            break;
        }
        let declared_left = decoded_length.map(|n| n - payload.len() as u64);
        if declared_left.is_some_and(|left| size > left) {
            return Err(malformed(
                "the chunks hold more than x-amz-decoded-content-length says",
            ));
        }
        let size = usize::try_from(size).map_err(|_| malformed("the body ends inside a chunk"))?;
        payload.extend_from_slice(cursor.take(size)?);
        if cursor.take(2).ok() != Some(b"\r\n".as_slice()) {
            return Err(malformed("a chunk's data is not followed by CRLF"));
        }
    }
    if decoded_length.is_some_and(|n| payload.len() as u64 != n) {
        return Err(malformed(
            "the chunks hold less than x-amz-decoded-content-length says",
        ));
    }
    let mut checksum = None;
    let mut trailer_signature = false;
    loop {
        let line = cursor.line("trailer")?;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err(malformed("a trailer line has no ':'"));
        };
        let name = String::from_utf8_lossy(&line[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = std::str::from_utf8(&line[colon + 1..])
            .map_err(|_| malformed("a trailer value is not plain text"))?
            .trim();
        if name == TRAILER_SIGNATURE && signed && announced.is_some() {
            if trailer_signature || !is_hex(value) {
                return Err(malformed("the trailer signature is malformed or repeated"));
            }
            trailer_signature = true;
        } else if let Some(algorithm) = announced.filter(|a| a.header() == name.as_str()) {
            if checksum.is_some() {
                return Err(malformed("the checksum trailer is repeated"));
            }
            checksum = Some((algorithm, checked_base64(value, algorithm, "trailer")?));
        } else {
            return Err(malformed(
                "the body carries a trailer that x-amz-trailer did not announce",
            ));
        }
    }
    if cursor.pos != body.len() {
        return Err(malformed(
            "the body goes on after its last chunk and trailers",
        ));
    }
    if announced.is_some() && checksum.is_none() {
        return Err(malformed(
            "the checksum trailer x-amz-trailer announced is missing",
        ));
    }
    if signed && announced.is_some() && !trailer_signature {
        return Err(malformed(
            "a signed framing with a trailer needs x-amz-trailer-signature",
        ));
    }
    Ok(Decoded { payload, checksum })
}

/// The size on a chunk-size line: hex digits, and for a signed framing
/// `;chunk-signature=<hex>` (the agent's own signature, which credgate
/// neither can nor needs to check: it signs the whole payload itself).
fn chunk_size(line: &[u8], signed: bool) -> Result<u64, PayloadError> {
    let (digits, extension) = match line.iter().position(|b| *b == b';') {
        Some(i) => (&line[..i], Some(&line[i + 1..])),
        None => (line, None),
    };
    match (extension, signed) {
        (None, false) => {}
        (Some(ext), true)
            if ext
                .strip_prefix(b"chunk-signature=")
                .is_some_and(|sig| std::str::from_utf8(sig).is_ok_and(is_hex)) => {}
        (None, true) => {
            return Err(malformed(
                "a chunk of a signed framing has no chunk-signature",
            ))
        }
        (Some(_), _) => {
            return Err(malformed(
                "a chunk-size line has an extension credgate does not know",
            ))
        }
    }
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(malformed("a chunk size is not a hexadecimal number"));
    }
    let text = std::str::from_utf8(digits).expect("hex digits are ASCII");
    Ok(u64::from_str_radix(text, 16).expect("at most 15 hex digits"))
}

fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `value` if it is the base64 of a checksum of `algorithm`'s size.
fn checked_base64(
    value: &str,
    algorithm: ChecksumAlgorithm,
    place: &str,
) -> Result<String, PayloadError> {
    match base64::engine::general_purpose::STANDARD.decode(value) {
        Ok(bytes) if bytes.len() == algorithm.digest_len() => Ok(value.to_string()),
        _ => Err(malformed(format!(
            "the {} checksum in the {place} is not the base64 of {} bytes",
            algorithm.name(),
            algorithm.digest_len()
        ))),
    }
}

/// A checksum as declared: its algorithm and base64 value.
type Checksum = (ChecksumAlgorithm, String);

/// A checksum setting carried into the re-signed request.
type Setting = (HeaderName, HeaderValue);

/// The integrity headers credgate reads (the checksums come from
/// [`ALGORITHMS`]); `x-amz-checksum-mode` is not among them: it asks S3 for
/// checksums in the response, and is stripped like any other `x-amz-*`.
const SETTINGS: [&str; 4] = [
    SDK_ALGORITHM,
    "x-amz-checksum-algorithm",
    "x-amz-checksum-type",
    "x-amz-mp-object-size",
];

/// The header checksum and the checksum settings, checked and removed from
/// `headers`.
fn checksum_headers(
    headers: &mut HeaderMap,
) -> Result<(Option<Checksum>, Vec<Setting>), PayloadError> {
    // The names are the agent's to choose: only known ones go on, and no
    // message repeats one.
    let mut names: Vec<&'static str> = Vec::new();
    for name in headers.keys() {
        let name = name.as_str();
        if let Some(known) = SETTINGS.iter().find(|s| **s == name) {
            names.push(known);
        } else if let Some(algorithm) = ChecksumAlgorithm::from_header(name) {
            names.push(algorithm.entry().2);
        } else if name.starts_with(CHECKSUM_PREFIX) && name != "x-amz-checksum-mode" {
            return Err(PayloadError::Unsupported(
                "the request carries an x-amz-checksum-* header credgate does not know".into(),
            ));
        }
    }
    let mut checksum = None;
    let mut settings = Vec::new();
    for name in names {
        let value = single(headers, name)?.unwrap_or_default();
        let header = HeaderName::from_static(name);
        let setting = |value: HeaderValue| (header.clone(), value);
        match name {
            SDK_ALGORITHM | "x-amz-checksum-algorithm" => {
                let algorithm = ChecksumAlgorithm::from_name(value).ok_or_else(|| {
                    PayloadError::Unsupported(format!("{name} names an algorithm S3 does not take"))
                })?;
                settings.push(setting(HeaderValue::from_static(algorithm.name())));
            }
            "x-amz-checksum-type" => {
                let kind = ["FULL_OBJECT", "COMPOSITE"]
                    .into_iter()
                    .find(|k| k.eq_ignore_ascii_case(value))
                    .ok_or_else(|| {
                        PayloadError::Unsupported(
                            "x-amz-checksum-type is neither FULL_OBJECT nor COMPOSITE".into(),
                        )
                    })?;
                settings.push(setting(HeaderValue::from_static(kind)));
            }
            "x-amz-mp-object-size" => {
                let size: u64 = Some(value)
                    .filter(|v| {
                        !v.is_empty() && v.len() <= 19 && v.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| malformed("x-amz-mp-object-size is not a number"))?;
                settings.push(setting(HeaderValue::from(size)));
            }
            _ => {
                let algorithm =
                    ChecksumAlgorithm::from_header(name).expect("a name from the table");
                if checksum.is_some() {
                    return Err(malformed(
                        "the request carries more than one checksum header",
                    ));
                }
                checksum = Some((algorithm, checked_base64(value, algorithm, "header")?));
            }
        }
        headers.remove(name);
    }
    Ok((checksum, settings))
}

#[cfg(test)]
mod tests;
