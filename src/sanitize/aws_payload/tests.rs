use super::*;
use crate::sanitize::tests::headers;

pub(super) const CHECK: &[u8] = b"123456789";

/// The base64 checksums of [`CHECK`], from the CRC catalogue's check values
/// and the SHA standards (computed elsewhere, not by this module).
pub(super) const CHECK_SUMS: [(ChecksumAlgorithm, &str); 6] = [
    (ChecksumAlgorithm::Crc32, "y/Q5Jg=="),
    (ChecksumAlgorithm::Crc32c, "4waSgw=="),
    (ChecksumAlgorithm::Crc64Nvme, "rosUhgp5mIg="),
    (ChecksumAlgorithm::Sha1, "98O8HYCOBHMq32eZZczDTKeuNEE="),
    (
        ChecksumAlgorithm::Sha256,
        "FeKw08M4keuw8e9gnsQZQgwg4yDOlMZfvIwzEkSOsiU=",
    ),
    (
        ChecksumAlgorithm::Sha512,
        "2eZ2LdHI6vbWGzxhkvxAjU1tXxF20MKRabwk5xw/J0rSf81YEbMT1oH35V7ALXPUmclUVba1u1A6z1dPuo/+hQ==",
    ),
];

const SIG: &str = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648";

/// An aws-chunked body of `chunks`, with `trailers` after the last one;
/// `signed` adds chunk signatures (and a trailer signature when there are
/// trailers).
pub(super) fn frame(chunks: &[&[u8]], trailers: &[(&str, &str)], signed: bool) -> Vec<u8> {
    let ext = if signed {
        format!(";chunk-signature={SIG}")
    } else {
        String::new()
    };
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(format!("{:x}{ext}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("0{ext}\r\n").as_bytes());
    for (name, value) in trailers {
        out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
    }
    if signed && !trailers.is_empty() {
        out.extend_from_slice(format!("x-amz-trailer-signature:{SIG}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The headers botocore sends with an aws-chunked upload of `len` bytes.
pub(super) fn sdk_headers(len: usize, algorithm: ChecksumAlgorithm) -> HeaderMap {
    let trailer = algorithm.header();
    headers(&[
        ("content-encoding", "aws-chunked"),
        ("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        ("x-amz-decoded-content-length", &len.to_string()),
        ("x-amz-trailer", trailer.as_str()),
        ("x-amz-sdk-checksum-algorithm", algorithm.name()),
        ("content-type", "text/plain"),
        ("expect", "100-continue"),
    ])
}

type Read = Result<(Bytes, AwsPayload), PayloadError>;

/// [`read`] for a `PUT` (an upload).
fn read_bytes(headers: &mut HeaderMap, body: &[u8]) -> Read {
    read(headers, Bytes::copy_from_slice(body), &Method::PUT, None)
}

#[test]
fn checksums_match_independent_values() {
    for (algorithm, expected) in CHECK_SUMS {
        assert_eq!(
            algorithm.encode(CHECK).as_deref(),
            Some(expected),
            "{}",
            algorithm.name()
        );
    }
}

#[test]
fn an_sdk_upload_is_decoded_for_every_algorithm_and_its_checksum_carried() {
    for (algorithm, sum) in CHECK_SUMS {
        let mut h = sdk_headers(CHECK.len(), algorithm);
        let body = frame(&[CHECK], &[(algorithm.header().as_str(), sum)], false);
        let (payload, aws) = read_bytes(&mut h, &body).unwrap();
        assert_eq!(&payload[..], CHECK);
        // Only the headers that are not AWS framing are left.
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"], "{}", algorithm.name());
        let mut signed = HeaderMap::new();
        aws.apply(&mut signed);
        assert_eq!(signed[algorithm.header()], sum);
        assert_eq!(signed["x-amz-sdk-checksum-algorithm"], algorithm.name());
        assert_eq!(signed.len(), 2);
    }
}

#[test]
fn chunks_of_any_size_are_joined_and_the_other_codings_kept() {
    let chunks: [&[u8]; 5] = [b"a", b"bc", &[b'x'; 300], b"\r\n0\r\n", b"end"];
    let payload: Vec<u8> = chunks.concat();
    let sum = ChecksumAlgorithm::Crc32.encode(&payload).unwrap();
    for (encoding, left) in [
        (vec!["gzip,aws-chunked"], vec!["gzip"]),
        (vec!["aws-chunked", "gzip"], vec!["gzip"]),
        (vec!["br, AWS-Chunked , gzip"], vec!["br", "gzip"]),
        (vec!["aws-chunked"], vec![]),
    ] {
        let mut h = sdk_headers(payload.len(), ChecksumAlgorithm::Crc32);
        h.remove(CONTENT_ENCODING);
        for e in &encoding {
            h.append(CONTENT_ENCODING, HeaderValue::from_str(e).unwrap());
        }
        let body = frame(&chunks, &[("x-amz-checksum-crc32", &sum)], false);
        let (decoded, _) = read_bytes(&mut h, &body).unwrap();
        assert_eq!(decoded, payload);
        let codings: Vec<_> = h
            .get_all(CONTENT_ENCODING)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(codings, left, "{encoding:?}");
    }
}

#[test]
fn an_empty_upload_and_the_streaming_header_without_a_content_encoding() {
    let mut h = sdk_headers(0, ChecksumAlgorithm::Crc32);
    let body = b"0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n";
    let (payload, aws) = read_bytes(&mut h, body).unwrap();
    assert!(payload.is_empty());
    assert_eq!(aws.checksum_algorithm(), Some(ChecksumAlgorithm::Crc32));
    // Some clients frame without saying so in Content-Encoding.
    let mut h = sdk_headers(CHECK.len(), ChecksumAlgorithm::Crc32);
    h.remove(CONTENT_ENCODING);
    let body = frame(&[CHECK], &[("x-amz-checksum-crc32", "y/Q5Jg==")], false);
    assert_eq!(&read_bytes(&mut h, &body).unwrap().0[..], CHECK);
}

#[test]
fn signed_chunk_framings_are_decoded() {
    for sha in [
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
    ] {
        let mut h = headers(&[
            ("x-amz-content-sha256", sha),
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "9"),
        ]);
        let body = frame(&[b"1234", b"56789"], &[], true);
        let (payload, aws) = read_bytes(&mut h, &body).unwrap();
        assert_eq!(&payload[..], CHECK);
        assert_eq!(aws, AwsPayload::default());
        assert!(h.is_empty(), "{h:?}");
    }
    for sha in [
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
    ] {
        let mut h = headers(&[
            ("x-amz-content-sha256", sha),
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "9"),
            ("x-amz-trailer", "x-amz-checksum-sha256"),
        ]);
        let sum = CHECK_SUMS[4].1;
        let body = frame(
            &[b"12345678", b"9"],
            &[("x-amz-checksum-sha256", sum)],
            true,
        );
        let (payload, aws) = read_bytes(&mut h, &body).unwrap();
        assert_eq!(&payload[..], CHECK);
        assert_eq!(aws.checksum_algorithm(), Some(ChecksumAlgorithm::Sha256));
    }
}

#[test]
fn a_plain_body_is_untouched_and_its_declared_hashes_are_checked() {
    let body = Bytes::from_static(b"plain body");
    let mut h = headers(&[("content-type", "text/plain"), ("expect", "100-Continue")]);
    let (same, aws) = read(&mut h, body.clone(), &Method::PUT, None).unwrap();
    assert_eq!(same.as_ptr(), body.as_ptr(), "no copy");
    assert_eq!(aws, AwsPayload::default());
    assert_eq!(h.len(), 1, "only Expect goes: the body is in hand");

    // A SHA-256 in hex, and UNSIGNED-PAYLOAD.
    let hex = crate::hex::lower(&crate::secret::sha256(CHECK));
    for value in [hex.as_str(), &hex.to_uppercase(), "UNSIGNED-PAYLOAD"] {
        let mut h = headers(&[("x-amz-content-sha256", value)]);
        assert_eq!(&read_bytes(&mut h, CHECK).unwrap().0[..], CHECK);
        assert!(h.is_empty());
    }
    let mut h = headers(&[("x-amz-content-sha256", &hex)]);
    assert_eq!(
        read_bytes(&mut h, b"123456780").unwrap_err(),
        PayloadError::ChecksumMismatch {
            algorithm: "SHA256",
            place: "x-amz-content-sha256"
        }
    );

    // A checksum header, for every algorithm; settings carried.
    for (algorithm, sum) in CHECK_SUMS {
        let mut h = headers(&[
            (algorithm.header().as_str(), sum),
            ("x-amz-checksum-type", "full_object"),
            ("x-amz-checksum-mode", "ENABLED"),
        ]);
        let (_, aws) = read_bytes(&mut h, CHECK).unwrap();
        // The response-side setting is left for the strip list.
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-amz-checksum-mode"]);
        let mut signed = HeaderMap::new();
        aws.apply(&mut signed);
        assert_eq!(signed[algorithm.header()], sum);
        assert_eq!(signed["x-amz-checksum-type"], "FULL_OBJECT");
        assert!(!signed.contains_key("x-amz-checksum-mode"));
        let err = read_bytes(
            &mut headers(&[(algorithm.header().as_str(), sum)]),
            b"12345678",
        )
        .unwrap_err();
        assert_eq!(
            err,
            PayloadError::ChecksumMismatch {
                algorithm: algorithm.name(),
                place: "header"
            }
        );
        assert_eq!(err.reason(), Reason::PayloadChecksumMismatch);
    }
    // CreateMultipartUpload's choice of algorithm.
    let mut h = headers(&[("x-amz-checksum-algorithm", "crc64nvme")]);
    let (_, aws) = read_bytes(&mut h, b"").unwrap();
    let mut signed = HeaderMap::new();
    aws.apply(&mut signed);
    assert_eq!(signed["x-amz-checksum-algorithm"], "CRC64NVME");
}

#[test]
fn a_wrong_trailer_checksum_is_refused_for_every_algorithm() {
    for (algorithm, _) in CHECK_SUMS {
        let wrong = algorithm.encode(b"something else").unwrap();
        let mut h = sdk_headers(CHECK.len(), algorithm);
        let body = frame(&[CHECK], &[(algorithm.header().as_str(), &wrong)], false);
        assert_eq!(
            read_bytes(&mut h, &body).unwrap_err(),
            PayloadError::ChecksumMismatch {
                algorithm: algorithm.name(),
                place: "trailer"
            }
        );
    }
}

/// Every way the framing can be broken, each refused as malformed.
#[test]
fn broken_framing_is_refused() {
    let crc = ChecksumAlgorithm::Crc32;
    let sum = "y/Q5Jg==";
    let good = String::from_utf8(frame(&[CHECK], &[("x-amz-checksum-crc32", sum)], false)).unwrap();
    assert_eq!(
        good,
        "9\r\n123456789\r\n0\r\nx-amz-checksum-crc32:y/Q5Jg==\r\n\r\n"
    );
    let cases: Vec<(&str, String)> = vec![
        ("size not hex", good.replacen("9\r\n", "g\r\n", 1)),
        ("size with 0x", good.replacen("9\r\n", "0x9\r\n", 1)),
        ("size empty", good.replacen("9\r\n", "\r\n", 1)),
        ("size negative", good.replacen("9\r\n", "-9\r\n", 1)),
        ("size with space", good.replacen("9\r\n", "9 \r\n", 1)),
        (
            "size too long",
            good.replacen("9\r\n", "0000000000000009\r\n", 1),
        ),
        (
            "size larger than the data",
            good.replacen("9\r\n", "a\r\n", 1),
        ),
        (
            "size smaller than the data",
            good.replacen("9\r\n", "8\r\n", 1),
        ),
        (
            "size huge",
            good.replacen("9\r\n", "fffffffffffffff\r\n", 1),
        ),
        ("bare LF after size", good.replacen("9\r\n", "9\n", 1)),
        (
            "bare CR in size line",
            good.replacen("9\r\n", "9\r9\r\n", 1),
        ),
        (
            "no CRLF after data",
            good.replacen("123456789\r\n", "123456789", 1),
        ),
        (
            "LF only after data",
            good.replacen("123456789\r\n", "123456789\n", 1),
        ),
        (
            "extension on unsigned",
            good.replacen("9\r\n", "9;chunk-signature=ab\r\n", 1),
        ),
        ("other extension", good.replacen("9\r\n", "9;x=1\r\n", 1)),
        ("no last chunk", "9\r\n123456789\r\n".to_string()),
        ("ends in the data", "9\r\n1234".to_string()),
        ("empty body", String::new()),
        (
            "no final CRLF",
            good.trim_end_matches("\r\n").to_string() + "\r\n",
        ),
        ("bytes after the end", good.clone() + "x"),
        ("a second message after the end", good.clone() + &good),
        (
            "trailer without colon",
            good.replacen("x-amz-checksum-crc32:", "x-amz-checksum-crc32 ", 1),
        ),
        (
            "unannounced trailer",
            good.replacen("\r\n\r\n", "\r\nx-amz-meta-a:b\r\n\r\n", 1),
        ),
        (
            "repeated trailer",
            good.replacen("\r\n\r\n", "\r\nx-amz-checksum-crc32:y/Q5Jg==\r\n\r\n", 1),
        ),
        ("trailer missing", "9\r\n123456789\r\n0\r\n\r\n".to_string()),
        ("trailer not base64", good.replacen(sum, "y/Q5Jg=", 1)),
        ("trailer too long", good.replacen(sum, "y/Q5JgAA", 1)),
        (
            "trailer signature on unsigned",
            good.replacen(
                "\r\n\r\n",
                &format!("\r\nx-amz-trailer-signature:{SIG}\r\n\r\n"),
                1,
            ),
        ),
    ];
    for (what, body) in cases {
        let mut h = sdk_headers(CHECK.len(), crc);
        let err = read_bytes(&mut h, body.as_bytes()).unwrap_err();
        assert!(matches!(err, PayloadError::Malformed(_)), "{what}: {err:?}");
        assert_eq!(err.reason(), Reason::PayloadMalformed);
    }
}

#[test]
fn broken_signed_framing_is_refused() {
    let signed = |sha: &str, body: Vec<u8>, trailer: Option<&str>| {
        let mut h = headers(&[
            ("x-amz-content-sha256", sha),
            ("x-amz-decoded-content-length", "9"),
        ]);
        if let Some(t) = trailer {
            h.insert("x-amz-trailer", HeaderValue::from_str(t).unwrap());
        }
        read_bytes(&mut h, &body)
    };
    let plain = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
    let with_trailer = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
    let sum = CHECK_SUMS[0].1;
    let unsigned_chunks = frame(&[CHECK], &[], false);
    let good = String::from_utf8(frame(&[CHECK], &[], true)).unwrap();
    let no_sig_trailer = frame(&[CHECK], &[("x-amz-checksum-crc32", sum)], false);
    let cases: Vec<(&str, Read)> = vec![
        (
            "chunk without signature",
            signed(plain, unsigned_chunks, None),
        ),
        (
            "signature not hex",
            signed(plain, good.replace(SIG, "zz").into_bytes(), None),
        ),
        (
            "signature empty",
            signed(plain, good.replace(SIG, "").into_bytes(), None),
        ),
        (
            "trailer on a framing without",
            signed(
                plain,
                good.clone().into_bytes(),
                Some("x-amz-checksum-crc32"),
            ),
        ),
        (
            "trailer framing without x-amz-trailer",
            signed(with_trailer, good.clone().into_bytes(), None),
        ),
        (
            "signed trailer without its signature",
            signed(
                with_trailer,
                {
                    let mut b = String::from_utf8(no_sig_trailer).unwrap();
                    b = b.replacen("9\r\n", &format!("9;chunk-signature={SIG}\r\n"), 1);
                    b.replacen("0\r\n", &format!("0;chunk-signature={SIG}\r\n"), 1)
                        .into_bytes()
                },
                Some("x-amz-checksum-crc32"),
            ),
        ),
    ];
    for (what, result) in cases {
        let err = result.unwrap_err();
        assert!(matches!(err, PayloadError::Malformed(_)), "{what}: {err:?}");
    }
    assert!(signed(plain, good.into_bytes(), None).is_ok());
}

#[test]
fn inconsistent_framing_headers_are_refused() {
    let body = frame(&[CHECK], &[("x-amz-checksum-crc32", "y/Q5Jg==")], false);
    let base = || sdk_headers(CHECK.len(), ChecksumAlgorithm::Crc32);
    let cases: Vec<(&str, HeaderMap)> = vec![
        ("decoded length not a number", {
            let mut h = base();
            h.insert(DECODED_LENGTH, HeaderValue::from_static("9 bytes"));
            h
        }),
        ("decoded length negative", {
            let mut h = base();
            h.insert(DECODED_LENGTH, HeaderValue::from_static("-9"));
            h
        }),
        ("decoded length too small", {
            let mut h = base();
            h.insert(DECODED_LENGTH, HeaderValue::from_static("8"));
            h
        }),
        ("decoded length too large", {
            let mut h = base();
            h.insert(DECODED_LENGTH, HeaderValue::from_static("10"));
            h
        }),
        ("two decoded lengths", {
            let mut h = base();
            h.append(DECODED_LENGTH, HeaderValue::from_static("9"));
            h
        }),
        ("two content hashes", {
            let mut h = base();
            h.append(CONTENT_SHA256, HeaderValue::from_static("UNSIGNED-PAYLOAD"));
            h
        }),
        ("aws-chunked twice", {
            let mut h = base();
            h.append(CONTENT_ENCODING, HeaderValue::from_static("aws-chunked"));
            h
        }),
        ("aws-chunked with a plain hash", {
            let mut h = base();
            h.insert(CONTENT_SHA256, HeaderValue::from_static("UNSIGNED-PAYLOAD"));
            h
        }),
        ("aws-chunked without any hash", {
            let mut h = base();
            h.remove(CONTENT_SHA256);
            h
        }),
        ("the sdk names another algorithm", {
            let mut h = base();
            h.insert(SDK_ALGORITHM, HeaderValue::from_static("SHA256"));
            h
        }),
        ("a header checksum besides the trailer", {
            let mut h = base();
            h.insert("x-amz-checksum-crc32", HeaderValue::from_static("y/Q5Jg=="));
            h
        }),
        ("two checksum headers", {
            let mut h = base();
            h.insert(
                "x-amz-checksum-sha1",
                HeaderValue::from_static(CHECK_SUMS[3].1),
            );
            h.insert(
                "x-amz-checksum-sha256",
                HeaderValue::from_static(CHECK_SUMS[4].1),
            );
            h
        }),
    ];
    for (what, mut h) in cases {
        let err = read_bytes(&mut h, &body).unwrap_err();
        assert!(matches!(err, PayloadError::Malformed(_)), "{what}: {err:?}");
    }
    // Framing headers on a body that is not aws-chunked.
    for name in [DECODED_LENGTH, TRAILER] {
        let mut h = headers(&[(name, "9")]);
        let err = read_bytes(&mut h, CHECK).unwrap_err();
        assert!(matches!(err, PayloadError::Malformed(_)), "{name}: {err:?}");
    }
}

#[test]
fn framings_and_headers_credgate_cannot_carry_are_refused() {
    let body = frame(&[CHECK], &[("x-amz-checksum-crc32", "y/Q5Jg==")], false);
    let with = |name: &str, value: &str| {
        let mut h = sdk_headers(CHECK.len(), ChecksumAlgorithm::Crc32);
        h.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        read_bytes(&mut h, &body)
    };
    let cases = [
        with("x-amz-content-sha256", "STREAMING-AWS5-FUTURE-PAYLOAD"),
        with("x-amz-content-sha256", "streaming-unsigned-payload-trailer"),
        with("x-amz-content-sha256", "not a hash"),
        with("x-amz-content-sha256", &"a".repeat(63)),
        with("x-amz-trailer", "x-amz-checksum-blake3"),
        with("x-amz-trailer", "x-amz-checksum-crc32, x-amz-checksum-sha1"),
        with("x-amz-trailer", "x-amz-meta-note"),
        with("x-amz-sdk-checksum-algorithm", "BLAKE3"),
        with("x-amz-checksum-blake3", "AAAA"),
        with("x-amz-checksum-type", "PARTIAL"),
        with("expect", "something-else"),
    ];
    for (i, result) in cases.into_iter().enumerate() {
        let err = result.unwrap_err();
        assert!(
            matches!(err, PayloadError::Unsupported(_)),
            "case {i}: {err:?}"
        );
        assert_eq!(err.reason(), Reason::PayloadUnsupported);
    }
}

#[test]
fn a_masked_body_gets_the_checksum_of_what_is_forwarded() {
    let mut h = headers(&[("x-amz-checksum-crc32", "y/Q5Jg==")]);
    let (_, mut aws) = read_bytes(&mut h, CHECK).unwrap();
    let mut forwarded = headers(&[
        ("content-md5", "JfnnlDI7RTiF9RgfG2JNCw=="),
        ("content-digest", "sha-256=:abc=:"),
        ("repr-digest", "sha-256=:abc=:"),
        ("digest", "SHA-256=abc="),
        ("content-type", "text/plain"),
    ]);
    aws.body_changed(&mut forwarded, b"12345****");
    // The digests of the body as sent would no longer match it.
    let left: Vec<_> = forwarded.keys().map(|k| k.as_str()).collect();
    assert_eq!(left, ["content-type"]);
    let mut signed = HeaderMap::new();
    aws.apply(&mut signed);
    assert_eq!(
        signed["x-amz-checksum-crc32"],
        ChecksumAlgorithm::Crc32
            .encode(b"12345****")
            .unwrap()
            .as_str()
    );
    // One credgate cannot compute goes, with the algorithm that named it.
    let mut h = headers(&[
        ("x-amz-checksum-xxhash64", "AAAAAAAAAAA="),
        ("x-amz-sdk-checksum-algorithm", "XXHASH64"),
    ]);
    let (_, mut aws) = read_bytes(&mut h, CHECK).unwrap();
    aws.body_changed(&mut HeaderMap::new(), b"12345****");
    let mut signed = HeaderMap::new();
    aws.apply(&mut signed);
    assert!(signed.is_empty(), "{signed:?}");
}

/// SHA-512 is checked like the others; MD5 and the XXH family, which
/// credgate does not compute, are carried as sent (of the right size) for
/// S3 to check.
#[test]
fn checksums_credgate_cannot_compute_are_carried_for_s3_to_check() {
    let sha512 = ChecksumAlgorithm::Sha512.encode(CHECK).unwrap();
    let mut h = headers(&[("x-amz-checksum-sha512", &sha512)]);
    assert!(read_bytes(&mut h, CHECK).is_ok());
    let wrong = ChecksumAlgorithm::Sha512.encode(b"other").unwrap();
    let mut h = headers(&[("x-amz-checksum-sha512", &wrong)]);
    assert!(matches!(
        read_bytes(&mut h, CHECK),
        Err(PayloadError::ChecksumMismatch { .. })
    ));
    for (name, value) in [
        ("x-amz-checksum-md5", "AAAAAAAAAAAAAAAAAAAAAA=="),
        ("x-amz-checksum-xxhash64", "AAAAAAAAAAA="),
        ("x-amz-checksum-xxhash3", "AAAAAAAAAAA="),
        ("x-amz-checksum-xxhash128", "AAAAAAAAAAAAAAAAAAAAAA=="),
    ] {
        let mut h = sdk_headers(CHECK.len(), ChecksumAlgorithm::Crc32);
        h.insert(TRAILER, HeaderValue::from_static(name));
        h.remove(SDK_ALGORITHM);
        let body = frame(&[CHECK], &[(name, value)], false);
        let (payload, aws) = read_bytes(&mut h, &body).unwrap();
        assert_eq!(&payload[..], CHECK);
        let mut signed = HeaderMap::new();
        aws.apply(&mut signed);
        assert_eq!(signed[name], value, "{name}");
        // The wrong size is refused all the same.
        let mut h = headers(&[(name, "AAAA")]);
        assert!(matches!(
            read_bytes(&mut h, CHECK),
            Err(PayloadError::Malformed(_))
        ));
    }
}

/// On CompleteMultipartUpload the checksum header is of the whole object,
/// not of the XML body: it is carried, with the object's size and type.
#[test]
fn a_completed_multipart_upload_carries_the_objects_checksum() {
    let object_sum = ChecksumAlgorithm::Crc32
        .encode(b"the whole object")
        .unwrap();
    let xml = b"<CompleteMultipartUpload></CompleteMultipartUpload>";
    let h = || {
        headers(&[
            ("x-amz-checksum-crc32", &object_sum),
            ("x-amz-checksum-type", "FULL_OBJECT"),
            ("x-amz-mp-object-size", "16"),
        ])
    };
    let body = Bytes::from_static(xml);
    let (_, aws) = read(&mut h(), body.clone(), &Method::POST, Some("uploadId=abc")).unwrap();
    let mut signed = HeaderMap::new();
    aws.apply(&mut signed);
    assert_eq!(signed["x-amz-checksum-crc32"], object_sum.as_str());
    assert_eq!(signed["x-amz-checksum-type"], "FULL_OBJECT");
    assert_eq!(signed["x-amz-mp-object-size"], "16");
    // Anywhere else the same header is the body's, and does not match.
    for (method, query) in [
        (Method::POST, Some("delete")),
        (Method::PUT, Some("partNumber=1&uploadId=abc")),
        (Method::POST, Some("uploads")),
        (Method::POST, None),
    ] {
        let result = read(&mut h(), body.clone(), &method, query);
        assert!(
            matches!(result, Err(PayloadError::ChecksumMismatch { .. })),
            "{method} {query:?}"
        );
    }
    let mut bad = headers(&[("x-amz-mp-object-size", "sixteen")]);
    assert!(read(&mut bad, body, &Method::POST, Some("uploadId=abc")).is_err());
}

/// A body framed without x-amz-decoded-content-length is decoded all the
/// same: the payload's length is what is forwarded.
#[test]
fn the_decoded_length_is_optional() {
    let mut h = sdk_headers(CHECK.len(), ChecksumAlgorithm::Crc32);
    h.remove(DECODED_LENGTH);
    let body = frame(
        &[b"1234", b"56789"],
        &[("x-amz-checksum-crc32", "y/Q5Jg==")],
        false,
    );
    assert_eq!(&read_bytes(&mut h, &body).unwrap().0[..], CHECK);
}

/// No error message carries a header value or body bytes.
#[test]
fn messages_never_echo_what_the_agent_sent() {
    let marker = "test-secret-c0ffee";
    let mut h = headers(&[("x-amz-content-sha256", &format!("STREAMING-{marker}"))]);
    let mut messages = vec![read_bytes(&mut h, b"").unwrap_err().to_string()];
    let mut h = headers(&[("x-amz-checksum-crc32", marker)]);
    messages.push(read_bytes(&mut h, b"").unwrap_err().to_string());
    let mut h = sdk_headers(3, ChecksumAlgorithm::Crc32);
    messages.push(
        read_bytes(&mut h, format!("{marker}\r\n").as_bytes())
            .unwrap_err()
            .to_string(),
    );
    let mut h = headers(&[("expect", marker)]);
    messages.push(read_bytes(&mut h, b"").unwrap_err().to_string());
    // Header names are the agent's to choose too.
    let unknown = format!("x-amz-checksum-{marker}");
    let mut h = headers(&[(unknown.as_str(), "a"), (unknown.as_str(), "b")]);
    messages.push(read_bytes(&mut h, b"").unwrap_err().to_string());
    for m in messages {
        assert!(!m.contains(marker), "{m}");
    }
}
