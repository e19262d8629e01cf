//! The aws-chunked framing: chunk-size lines (with chunk signatures in the
//! signed forms), chunk data, and the trailers after the last chunk.

use super::checksum::{checked_base64, Checksum, ChecksumAlgorithm};
use super::{malformed, PayloadError, TRAILER_SIGNATURE};

/// The longest chunk-size line or trailer line accepted (a chunk signature
/// of SigV4a is the longest thing one holds, about 150 bytes).
const MAX_LINE: usize = 1024;

/// An aws-chunked body, decoded.
pub(super) struct Decoded {
    pub(super) payload: Vec<u8>,
    /// The trailer's checksum, as the agent wrote it.
    pub(super) checksum: Option<Checksum>,
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

pub(super) fn decode_chunks(
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
