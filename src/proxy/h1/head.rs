//! The request head and chunk-size lines: parsed strictly, and taken off
//! the read buffer whole so header values share its bytes.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};

use super::{Framing, H1Error, RequestHead};

pub(crate) fn parse_chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits_end == 0 || digits_end > 15 {
        return Err(H1Error::Framing("invalid chunk size"));
    }
    match &line[digits_end..] {
        [] => {}
        // A chunk extension: ignored, but it must not hide control bytes.
        [b';', ext @ ..] if ext.iter().all(|&b| b == b'\t' || (b' '..0x7f).contains(&b)) => {}
        _ => return Err(H1Error::Framing("invalid chunk size line")),
    }
    let text = std::str::from_utf8(&line[..digits_end]).expect("hex digits are ASCII");
    u64::from_str_radix(text, 16).map_err(|_| H1Error::Framing("invalid chunk size"))
}

/// Where the parts of a parsed request head sit in its bytes, so the head
/// can be taken off the buffer whole and its values shared, not copied.
pub(super) struct Spans {
    method: (usize, usize),
    target: (usize, usize),
    version: Option<u8>,
    headers: Vec<(usize, usize, usize, usize)>,
}

impl Spans {
    pub(super) fn of(req: &httparse::Request<'_, '_>, base: *const u8) -> Self {
        let base = base as usize;
        let span = |part: &[u8]| {
            let start = part.as_ptr() as usize - base;
            (start, start + part.len())
        };
        let mut spans = Spans {
            method: req.method.map_or((0, 0), |m| span(m.as_bytes())),
            target: req.path.map_or((0, 0), |p| span(p.as_bytes())),
            version: req.version,
            headers: Vec::with_capacity(req.headers.len()),
        };
        for h in req.headers.iter() {
            let (name_start, name_end) = span(h.name.as_bytes());
            let (value_start, value_end) = span(h.value);
            spans
                .headers
                .push((name_start, name_end, value_start, value_end));
        }
        spans
    }
}

pub(super) fn build_head(spans: &Spans, head: &Bytes) -> Result<RequestHead, H1Error> {
    let method = Method::from_bytes(&head[spans.method.0..spans.method.1])
        .map_err(|_| H1Error::Malformed("invalid method".into()))?;
    let version = match spans.version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => return Err(H1Error::Malformed("unsupported HTTP version".into())),
    };

    let mut headers = HeaderMap::with_capacity(spans.headers.len());
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = 0usize;
    let mut chunked = false;
    let mut hosts = 0usize;
    let mut expect_continue = false;
    for &(name_start, name_end, value_start, value_end) in &spans.headers {
        let raw_name = &head[name_start..name_end];
        let name = HeaderName::from_bytes(raw_name).map_err(|_| {
            H1Error::Malformed(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(raw_name)
            ))
        })?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| H1Error::Malformed(format!("invalid value in header {name}")))?;
        if name == header::CONTENT_LENGTH {
            if content_length.is_some() {
                return Err(H1Error::Framing("duplicate Content-Length"));
            }
            let text = value.to_str().unwrap_or_default().trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 18 {
                return Err(H1Error::Framing("invalid Content-Length"));
            }
            content_length = Some(text.parse().expect("checked digits"));
        } else if name == header::TRANSFER_ENCODING {
            transfer_encoding += 1;
            chunked = value.as_bytes().eq_ignore_ascii_case(b"chunked");
        } else if name == header::HOST {
            hosts += 1;
        } else if name == header::EXPECT {
            if !value.as_bytes().eq_ignore_ascii_case(b"100-continue") {
                return Err(H1Error::Malformed("unsupported Expect".into()));
            }
            expect_continue = true;
            // Expect is answered here, hop by hop; it is not forwarded.
            continue;
        }
        headers.append(name, value);
    }

    if hosts > 1 {
        return Err(H1Error::Framing("more than one Host header"));
    }
    if version == Version::HTTP_11 && hosts == 0 {
        return Err(H1Error::Malformed("HTTP/1.1 request without Host".into()));
    }
    let framing = match (transfer_encoding, content_length) {
        (0, None) => Framing::Empty,
        (0, Some(0)) => Framing::Empty,
        (0, Some(n)) => Framing::Length(n),
        (_, Some(_)) => return Err(H1Error::Framing("Content-Length with Transfer-Encoding")),
        (1, None) if chunked && version == Version::HTTP_11 => Framing::Chunked,
        _ => return Err(H1Error::Framing("unsupported Transfer-Encoding")),
    };

    let keep_alive = version == Version::HTTP_11
        && !headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v, "close"));

    let mut builder = http::Request::builder().method(method).version(version);
    if let Some(h) = builder.headers_mut() {
        *h = headers;
    }
    let uri = http::Uri::from_maybe_shared(head.slice(spans.target.0..spans.target.1))
        .map_err(|_| H1Error::Malformed("invalid request target".into()))?;
    let (parts, ()) = builder
        .uri(uri)
        .body(())
        .map_err(|e| H1Error::Malformed(e.to_string()))?
        .into_parts();
    Ok(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue,
    })
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}
