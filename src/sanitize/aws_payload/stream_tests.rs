//! The streaming decoder against the whole-body one: every framing, split
//! every way, decodes to the same payload, or fails with the same message.

use super::chunks::{decode_chunks, ChunkStream};
use super::tests::{frame, sdk_headers, CHECK, CHECK_SUMS};
use super::*;
use crate::sanitize::tests::headers;

/// One framing: its body and how it is declared.
struct Framing {
    name: &'static str,
    body: Vec<u8>,
    signed: bool,
    announced: Option<ChecksumAlgorithm>,
    decoded_length: Option<u64>,
}

/// Every framing credgate decodes: unsigned with a trailer (the SDKs'
/// default), signed without and with trailers, chunks of one byte, of
/// many, an empty payload, a declared length or none.
fn framings() -> Vec<Framing> {
    let crc = ChecksumAlgorithm::Crc32;
    let crc_of = |data: &[u8]| crc.encode(data).unwrap();
    let data: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8).collect();
    let (a, rest) = data.split_at(300);
    let (b, c) = rest.split_at(1);
    let mut out = vec![
        Framing {
            name: "sdk",
            body: frame(&[CHECK], &[("x-amz-checksum-crc32", &crc_of(CHECK))], false),
            signed: false,
            announced: Some(crc),
            decoded_length: Some(CHECK.len() as u64),
        },
        Framing {
            name: "sdk, three chunks (one of one byte), CRLF in the data",
            body: frame(
                &[a, b, c, b"\r\n0\r\n"],
                &[(
                    "x-amz-checksum-crc32",
                    &crc_of(&[a, b, c, b"\r\n0\r\n"].concat()),
                )],
                false,
            ),
            signed: false,
            announced: Some(crc),
            decoded_length: Some(data.len() as u64 + 5),
        },
        Framing {
            name: "sdk, no declared length",
            body: frame(
                &[b"1234", b"56789"],
                &[("x-amz-checksum-crc32", &crc_of(CHECK))],
                false,
            ),
            signed: false,
            announced: Some(crc),
            decoded_length: None,
        },
        Framing {
            name: "sdk, empty",
            body: frame(&[], &[("x-amz-checksum-crc32", &crc_of(b""))], false),
            signed: false,
            announced: Some(crc),
            decoded_length: Some(0),
        },
        Framing {
            name: "signed",
            body: frame(&[b"1234", b"56789"], &[], true),
            signed: true,
            announced: None,
            decoded_length: Some(9),
        },
        Framing {
            name: "signed, trailer",
            body: frame(
                &[b"12345678", b"9"],
                &[("x-amz-checksum-sha256", CHECK_SUMS[4].1)],
                true,
            ),
            signed: true,
            announced: Some(ChecksumAlgorithm::Sha256),
            decoded_length: Some(9),
        },
    ];
    for (algorithm, sum) in CHECK_SUMS {
        out.push(Framing {
            name: algorithm.name(),
            body: frame(&[CHECK], &[(algorithm.header().as_str(), sum)], false),
            signed: false,
            announced: Some(algorithm),
            decoded_length: Some(9),
        });
    }
    out
}

type Outcome = Result<(Vec<u8>, Option<(ChecksumAlgorithm, String)>), PayloadError>;

fn whole(f: &Framing, body: &[u8]) -> Outcome {
    decode_chunks(body, f.signed, f.announced, f.decoded_length).map(|d| (d.payload, d.checksum))
}

/// Decodes `body` with the streaming decoder, in pieces that end at `cuts`.
fn streamed(f: &Framing, body: &[u8], cuts: &[usize]) -> Outcome {
    let mut decoder = ChunkStream::new(f.signed, f.announced, f.decoded_length);
    let mut payload = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
        decoder.push(&body[from..cut], &mut payload)?;
        from = cut;
    }
    let checksum = decoder.finish()?;
    Ok((payload, checksum))
}

/// Cut points of pieces of pseudo-random sizes (1 to 40 bytes).
fn random_cuts(len: usize, seed: u64) -> Vec<usize> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut cuts = Vec::new();
    let mut at = 0;
    loop {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        at += 1 + (state >> 33) as usize % 40;
        if at >= len {
            return cuts;
        }
        cuts.push(at);
    }
}

/// Both decoders, every way of splitting `body`: one piece, two at every
/// boundary, a byte at a time, random pieces. Returns the whole decoder's
/// outcome.
fn agree(f: &Framing, body: &[u8], what: &str) -> Outcome {
    let mut splits: Vec<Vec<usize>> = (0..=body.len()).map(|i| vec![i]).collect();
    splits.extend((0..8).map(|seed| random_cuts(body.len(), seed)));
    agree_split(f, body, what, splits)
}

/// [`agree`] for one piece, a byte at a time, and `splits`.
fn agree_split(f: &Framing, body: &[u8], what: &str, mut splits: Vec<Vec<usize>>) -> Outcome {
    let expected = whole(f, body);
    splits.extend([vec![], (1..body.len()).collect()]);
    for cuts in splits {
        assert_eq!(
            streamed(f, body, &cuts),
            expected,
            "{}, {what}, cut at {cuts:?}",
            f.name
        );
    }
    expected
}

#[test]
fn every_framing_split_any_way_decodes_as_the_whole_body() {
    for f in framings() {
        let (payload, checksum) = agree(&f, &f.body, "as sent").unwrap();
        assert_eq!(
            payload.len() as u64,
            f.decoded_length.unwrap_or(9),
            "{}",
            f.name
        );
        assert_eq!(checksum.is_some(), f.announced.is_some(), "{}", f.name);
    }
}

#[test]
fn a_body_cut_off_anywhere_or_going_on_is_refused_the_same_way() {
    for f in framings() {
        for end in 0..f.body.len() {
            let e = agree(&f, &f.body[..end], &format!("cut to {end} bytes"));
            assert!(e.is_err(), "{}: cut to {end} bytes decodes", f.name);
        }
        for extra in [&b"\r\n"[..], b"0", b"0\r\n\r\n", b"x"] {
            let body = [&f.body[..], extra].concat();
            assert!(agree(&f, &body, "with more after its end").is_err());
        }
    }
}

/// Every byte of every framing replaced by bytes that break lines, sizes,
/// signatures and trailers: the streaming decoder decides as the whole
/// one, and wherever the byte is framing, not data, that is a refusal.
#[test]
fn a_broken_byte_anywhere_is_decided_as_the_whole_decoder_does() {
    for f in framings() {
        for i in 0..f.body.len() {
            for replacement in [b'\r', b'\n', b'x', b';', b':', b'0', b'f', b' '] {
                if f.body[i] == replacement {
                    continue;
                }
                let mut body = f.body.clone();
                body[i] = replacement;
                let what = format!("byte {i} as {replacement:#x}");
                let random = vec![random_cuts(body.len(), i as u64)];
                agree_split(&f, &body, &what, random)
                    .map(|(payload, _)| {
                        // Only a data byte (or a hex digit that keeps the
                        // size) can be replaced and decode.
                        assert_eq!(payload.len() as u64, f.decoded_length.unwrap_or(9));
                    })
                    .ok();
            }
        }
    }
}

#[test]
fn a_long_line_is_refused_before_it_is_held() {
    let f = Framing {
        name: "long line",
        body: [&b"1"[..], &[b'0'; 2000], b"\r\n"].concat(),
        signed: false,
        announced: None,
        decoded_length: None,
    };
    let e = agree(&f, &f.body, "as sent").unwrap_err();
    assert!(e.to_string().contains("longer than 1024 bytes"), "{e}");
    let mut decoder = ChunkStream::new(false, None, None);
    let e = decoder.push(&[b'1'; 5000], &mut Vec::new()).unwrap_err();
    assert!(e.to_string().contains("longer than 1024 bytes"), "{e}");
}

/// [`read_streamed`] then [`PayloadStream`] in pieces, against [`read`].
fn stream_read(
    h: &mut HeaderMap,
    body: &[u8],
    cuts: &[usize],
) -> Result<(Vec<u8>, AwsPayload), PayloadError> {
    let mut stream =
        read_streamed(h, &Method::PUT, None, Some(body.len() as u64))?.expect("streams");
    let mut payload = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain(std::iter::once(&body.len())) {
        payload.extend_from_slice(&stream.push(Bytes::copy_from_slice(&body[from..cut]))?);
        from = cut;
    }
    Ok((payload, stream.finish()?))
}

#[test]
fn a_streamed_upload_is_read_as_the_whole_body_is() {
    let plain = |sha: &str, extra: &[(&str, &str)]| {
        let mut h = headers(&[
            ("x-amz-content-sha256", sha),
            ("content-type", "text/plain"),
        ]);
        for (name, value) in extra {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        h
    };
    let sha = crate::hex::lower(&crate::secret::sha256(CHECK));
    let mut cases: Vec<(HeaderMap, Vec<u8>)> = vec![
        (plain("UNSIGNED-PAYLOAD", &[]), CHECK.to_vec()),
        (plain(&sha, &[]), CHECK.to_vec()),
        (
            plain(
                "UNSIGNED-PAYLOAD",
                &[("x-amz-checksum-sha1", CHECK_SUMS[3].1)],
            ),
            CHECK.to_vec(),
        ),
    ];
    for (algorithm, sum) in CHECK_SUMS {
        cases.push((
            sdk_headers(CHECK.len(), algorithm),
            frame(
                &[b"1234", b"5", b"6789"],
                &[(algorithm.header().as_str(), sum)],
                false,
            ),
        ));
    }
    for (h, body) in cases {
        let mut whole_headers = h.clone();
        let expected = read(
            &mut whole_headers,
            Bytes::from(body.clone()),
            &Method::PUT,
            None,
        )
        .map(|(payload, aws)| (payload.to_vec(), aws));
        assert_eq!(&expected.as_ref().unwrap().0[..], CHECK);
        for cuts in [
            vec![],
            (1..body.len()).collect(),
            random_cuts(body.len(), 3),
        ] {
            let mut streamed_headers = h.clone();
            assert_eq!(stream_read(&mut streamed_headers, &body, &cuts), expected);
            assert_eq!(streamed_headers, whole_headers);
        }
    }
}

#[test]
fn a_wrong_checksum_or_hash_fails_only_at_the_end() {
    let sha = crate::hex::lower(&crate::secret::sha256(b"something else"));
    let mut h = headers(&[("x-amz-content-sha256", sha.as_str())]);
    let e = stream_read(&mut h, CHECK, &[4]).unwrap_err();
    assert_eq!(e.reason(), Reason::PayloadChecksumMismatch);
    for (algorithm, _) in CHECK_SUMS {
        let mut h = sdk_headers(CHECK.len(), algorithm);
        let wrong = algorithm.encode(b"something else").unwrap();
        let body = frame(&[CHECK], &[(algorithm.header().as_str(), &wrong)], false);
        let mut stream = read_streamed(&mut h, &Method::PUT, None, None)
            .unwrap()
            .unwrap();
        // Every piece decodes; the end is where the checksum is known.
        assert_eq!(&stream.push(Bytes::from(body)).unwrap()[..], CHECK);
        let e = stream.finish().unwrap_err();
        assert_eq!(
            e.reason(),
            Reason::PayloadChecksumMismatch,
            "{}",
            algorithm.name()
        );
        assert!(!e.streamed().contains("nothing was forwarded"), "{e}");
    }
}

#[test]
fn bodies_that_cannot_stream_are_left_to_be_held_whole() {
    let sdk = || sdk_headers(CHECK.len(), ChecksumAlgorithm::Crc32);
    // A POST, an undeclared decoded length, another content coding.
    let mut h = sdk();
    assert!(read_streamed(&mut h, &Method::POST, None, None)
        .unwrap()
        .is_none());
    let mut undeclared = sdk();
    undeclared.remove("x-amz-decoded-content-length");
    let mut gzip = sdk();
    gzip.insert(CONTENT_ENCODING, "aws-chunked, gzip".parse().unwrap());
    let mut no_length = headers(&[("x-amz-content-sha256", "UNSIGNED-PAYLOAD")]);
    for h in [&mut undeclared, &mut gzip, &mut no_length] {
        let before = h.clone();
        assert!(read_streamed(h, &Method::PUT, None, None)
            .unwrap()
            .is_none());
        assert_eq!(*h, before, "left untouched");
    }
    // Headers the whole-body read refuses are refused here too.
    let mut both = sdk();
    both.insert("x-amz-checksum-crc32", "y/Q5Jg==".parse().unwrap());
    assert!(read_streamed(&mut both, &Method::PUT, None, None).is_err());
    let mut future = sdk();
    future.insert(
        "x-amz-content-sha256",
        "STREAMING-AWS4-FUTURE".parse().unwrap(),
    );
    assert!(read_streamed(&mut future, &Method::PUT, None, None).is_err());
}

/// The re-framed body, decoded again: the payload and the checksum, in
/// exactly the length announced before the first byte.
#[test]
fn a_reframed_body_is_the_payload_with_its_checksum_in_the_announced_length() {
    for len in [
        0,
        1,
        FRAME_CHUNK - 1,
        FRAME_CHUNK,
        FRAME_CHUNK + 1,
        3 * FRAME_CHUNK + 17,
    ] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        for (algorithm, _) in CHECK_SUMS {
            let sum = algorithm.encode(&payload).unwrap();
            let mut h = sdk_headers(len, algorithm);
            let chunks: &[&[u8]] = if len == 0 { &[] } else { &[&payload] };
            let body = frame(chunks, &[(algorithm.header().as_str(), &sum)], false);
            let mut stream = read_streamed(&mut h, &Method::PUT, None, None)
                .unwrap()
                .unwrap();
            let mut signed = HeaderMap::new();
            let (hash, reframe) = stream.unsigned_framing(&mut signed, false);
            assert_eq!(hash, "STREAMING-UNSIGNED-PAYLOAD-TRAILER");
            let mut reframe = reframe.unwrap();
            assert_eq!(signed["x-amz-trailer"], algorithm.header().as_str());
            assert_eq!(
                signed["x-amz-decoded-content-length"],
                len.to_string().as_str()
            );
            assert_eq!(signed[CONTENT_ENCODING], "aws-chunked");
            let announced = reframe.framed_length();
            let mut out = Vec::new();
            for piece in body.chunks(7000) {
                let decoded = stream.push(Bytes::copy_from_slice(piece)).unwrap();
                out.extend_from_slice(&reframe.push(&decoded));
            }
            let declared = stream.finish().unwrap();
            out.extend_from_slice(&reframe.finish(&declared, false).unwrap());
            assert_eq!(
                out.len() as u64,
                announced,
                "{len} bytes, {}",
                algorithm.name()
            );
            let decoded = decode_chunks(&out, false, Some(algorithm), Some(len as u64)).unwrap();
            assert_eq!(decoded.payload, payload);
            assert_eq!(decoded.checksum, Some((algorithm, sum)));
        }
    }
}

#[test]
fn a_masked_reframed_body_carries_the_checksum_of_what_was_sent() {
    let mut h = sdk_headers(CHECK.len(), ChecksumAlgorithm::Crc32);
    let body = frame(
        &[CHECK],
        &[("x-amz-checksum-crc32", CHECK_SUMS[0].1)],
        false,
    );
    let mut stream = read_streamed(&mut h, &Method::PUT, None, None)
        .unwrap()
        .unwrap();
    let (_, reframe) = stream.unsigned_framing(&mut HeaderMap::new(), true);
    let mut reframe = reframe.unwrap();
    stream.push(Bytes::from(body)).unwrap();
    let mut out = reframe.push(b"123***789").to_vec();
    out.extend_from_slice(&reframe.finish(&stream.finish().unwrap(), true).unwrap());
    let decoded = decode_chunks(&out, false, Some(ChecksumAlgorithm::Crc32), Some(9)).unwrap();
    assert_eq!(
        decoded.checksum.unwrap().1,
        ChecksumAlgorithm::Crc32.encode(b"123***789").unwrap()
    );
    // One credgate cannot compute cannot follow a masked body.
    let mut h = sdk_headers(CHECK.len(), ChecksumAlgorithm::Xxhash64);
    let body = frame(
        &[CHECK],
        &[("x-amz-checksum-xxhash64", "AAAAAAAAAAA=")],
        false,
    );
    let mut stream = read_streamed(&mut h, &Method::PUT, None, None)
        .unwrap()
        .unwrap();
    let (_, reframe) = stream.unsigned_framing(&mut HeaderMap::new(), true);
    let mut reframe = reframe.unwrap();
    stream.push(Bytes::from(body)).unwrap();
    reframe.push(b"123***789");
    let declared = stream.finish().unwrap();
    assert_eq!(
        reframe.finish(&declared, true).unwrap_err().reason(),
        Reason::PayloadUnsupported
    );
}

#[test]
fn a_body_without_a_checksum_goes_plain_and_unsigned() {
    let mut h = headers(&[
        ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
        ("content-encoding", "aws-chunked"),
        ("x-amz-decoded-content-length", "9"),
    ]);
    let stream = read_streamed(&mut h, &Method::PUT, None, None)
        .unwrap()
        .unwrap();
    let mut signed = HeaderMap::new();
    let (hash, reframe) = stream.unsigned_framing(&mut signed, false);
    assert_eq!(hash, "UNSIGNED-PAYLOAD");
    assert!(reframe.is_none());
    assert!(signed.is_empty(), "{signed:?}");
    assert_eq!(stream.length(), 9);
}
