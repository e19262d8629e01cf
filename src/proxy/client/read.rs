//! Reading a response head and how its body is framed.

use super::*;

/// A response head and how its body is framed.
pub(super) struct Head {
    pub(super) response: Response<()>,
    pub(super) decode: Decode,
    pub(super) reuse: bool,
}

/// Whether `buf` holds the start of a final answer: a complete non-interim
/// head behind any interim ones, or something [`read_head`] will refuse
/// (too many interim heads among them). Interim heads stay in the buffer for
/// `read_head`, which passes early hints on.
pub(super) fn final_answer(buf: &BytesMut) -> bool {
    let mut at = 0;
    let mut interim = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(&buf[at..]) {
            Ok(httparse::Status::Complete(len)) => {
                let is_interim = parsed
                    .code
                    .is_some_and(|c| (100..200).contains(&c) && c != 101);
                if !is_interim {
                    return true;
                }
                interim += 1;
                if interim > MAX_INTERIM {
                    return true;
                }
                at += len;
            }
            Ok(httparse::Status::Partial) => return buf.len() - at > MAX_HEAD,
            Err(_) => return true,
        }
    }
}

/// What an upstream answered a request with.
pub(super) enum Answer {
    /// A final response, its body still to be read.
    Final(Head),
    /// `101 Switching Protocols`: the connection now speaks what the head
    /// says, starting right after it.
    Switched(Response<()>),
}

/// Reads the final response head; early hints before it go to `hints`.
pub(super) async fn read_head(
    conn: &mut Conn,
    head_request: bool,
    hints: Option<&EarlyHints>,
) -> Result<Head, Failure> {
    match read_answer(conn, head_request, false, hints).await? {
        Answer::Final(head) => Ok(head),
        Answer::Switched(_) => unreachable!("a switch is only read when asked for"),
    }
}

/// Reads the answer to a request; a `101` is an answer only when the
/// request asked to switch (`switch`), and a protocol error otherwise.
/// Other interim responses are offered to `hints` (which passes a `103`
/// on), at most [`MAX_INTERIM`] of them: more is an upstream fault.
pub(super) async fn read_answer(
    conn: &mut Conn,
    head_request: bool,
    switch: bool,
    hints: Option<&EarlyHints>,
) -> Result<Answer, Failure> {
    let mut interim = 0;
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            answered = true;
            match parse_head(&mut conn.buf)? {
                None => {}
                Some(response) => {
                    let status = response.status();
                    if status == StatusCode::SWITCHING_PROTOCOLS && switch {
                        return Ok(Answer::Switched(response));
                    }
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(Failure::protocol(
                            "the upstream switched protocols, which credgate never asks for",
                        ));
                    }
                    if status.is_informational() {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(Failure::protocol(format!(
                                "the upstream sent more than {MAX_INTERIM} interim (1xx) responses before its final one"
                            )));
                        }
                        if let Some(hints) = hints {
                            hints.offer(response);
                        }
                        continue;
                    }
                    let (decode, reuse) = framing(&response, head_request)?;
                    return Ok(Answer::Final(Head {
                        response,
                        decode,
                        reuse,
                    }));
                }
            }
            if conn.buf.len() > MAX_HEAD {
                return Err(Failure::protocol(format!(
                    "the upstream's response head is larger than {MAX_HEAD} bytes"
                )));
            }
        }
        match conn.fill().await {
            Ok(0) if answered => {
                return Err(Failure::protocol(
                    "the upstream closed the connection inside a response head",
                ))
            }
            Ok(0) => {
                return Err(Failure {
                    answered: false,
                    message: "the upstream closed the connection without answering".into(),
                    waited: None,
                })
            }
            Ok(_) => {}
            Err(e) => return Err(Failure::io(answered, &e)),
        }
    }
}

/// Parses a complete response head at the start of `buf` and takes it off
/// the buffer; `None` when more bytes are needed. Header values are slices
/// of the head's bytes, not copies.
pub(super) fn parse_head(buf: &mut BytesMut) -> Result<Option<Response<()>>, Failure> {
    // Where each header's name and value sit in the head.
    let mut spans: Vec<(usize, usize, usize, usize)> = Vec::new();
    let (len, version, code) = {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut headers);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                return Err(Failure::protocol(format!(
                    "the upstream's response head is larger than {MAX_HEAD} bytes"
                )))
            }
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => {
                return Err(Failure::protocol(format!(
                    "the upstream's response head is malformed ({e})"
                )))
            }
        };
        let base = buf.as_ptr() as usize;
        spans.reserve_exact(parsed.headers.len());
        for h in parsed.headers.iter() {
            let name = h.name.as_ptr() as usize - base;
            let value = h.value.as_ptr() as usize - base;
            spans.push((name, name + h.name.len(), value, value + h.value.len()));
        }
        (len, parsed.version, parsed.code)
    };
    let version = match version {
        Some(1) => Version::HTTP_11,
        Some(0) => Version::HTTP_10,
        _ => {
            return Err(Failure::protocol(
                "the upstream answered in an unsupported HTTP version",
            ))
        }
    };
    let status = code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| Failure::protocol("the upstream's status code is invalid"))?;
    let head = buf.split_to(len).freeze();
    let mut map = HeaderMap::with_capacity(spans.len());
    for &(name_start, name_end, value_start, value_end) in &spans {
        let name = HeaderName::from_bytes(&head[name_start..name_end])
            .map_err(|_| Failure::protocol("the upstream sent an invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| Failure::protocol("the upstream sent an invalid header value"))?;
        map.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = map;
    Ok(Some(response))
}

/// How a response body is delimited (RFC 9112 §6.3), and whether the
/// connection may carry another request after it.
pub(super) fn framing(
    response: &Response<()>,
    head_request: bool,
) -> Result<(Decode, bool), Failure> {
    let headers = response.headers();
    let status = response.status();
    let mut reuse = response.version() == Version::HTTP_11
        && !headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Decode::Done, reuse));
    }
    let has_length = headers.contains_key(header::CONTENT_LENGTH);
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if has_length {
            return Err(Failure::protocol(
                "the upstream's response has both Transfer-Encoding and Content-Length",
            ));
        }
        let mut codings = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii);
        let only_chunked = codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        if !only_chunked || response.version() != Version::HTTP_11 {
            // Another transfer coding would pass bytes the scrubber cannot read.
            return Err(Failure::protocol(
                "the upstream used a transfer coding other than chunked",
            ));
        }
        return Ok((Decode::Chunked(Chunk::Size), reuse));
    }
    if has_length {
        let mut length = None;
        for value in headers.get_all(header::CONTENT_LENGTH) {
            for part in value.as_bytes().split(|b| *b == b',') {
                let part = part.trim_ascii();
                let n = (!part.is_empty()
                    && part.len() <= 19
                    && part.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| Failure::protocol("the upstream's Content-Length is invalid"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Failure::protocol(
                        "the upstream sent conflicting Content-Length values",
                    ));
                }
                length = Some(n);
            }
        }
        let n = length.expect("a Content-Length header has a value");
        return Ok((
            if n == 0 {
                Decode::Done
            } else {
                Decode::Length(n)
            },
            reuse,
        ));
    }
    // Delimited by the end of the connection, which then cannot be reused.
    reuse = false;
    Ok((Decode::Eof, reuse))
}
