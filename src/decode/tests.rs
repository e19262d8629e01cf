use std::io::Write;

use super::*;

const LIMITS: DecodeLimits = DecodeLimits {
    max_decoded: 1 << 30,
    max_ratio: 100,
};

/// Text that compresses like a real API response: a little repetitive,
/// not trivially so.
fn sample(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(
            format!("{{\"id\":{},\"v\":\"{:x}\"}},\n", i % 977, i >> 40).as_bytes(),
        );
    }
    out.truncate(len);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = ::brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        w.write_all(data).unwrap();
    }
    out
}

fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => gzip(data),
        Coding::Deflate => zlib(data),
        Coding::Brotli => brotli(data),
        Coding::Zstd => zstd(data),
    }
}

const ALL: [Coding; 4] = [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd];

/// Feeds `encoded` in `chunk`-byte reads, the way the body would arrive,
/// and collects every piece; checks no piece is larger than [`PIECE`].
fn decode_in(
    codings: &[Coding],
    limits: DecodeLimits,
    encoded: &[u8],
    chunk: usize,
) -> Result<Vec<u8>, DecodeError> {
    let mut decoder = BodyDecoder::new(codings, limits);
    let mut reads = encoded.chunks(chunk);
    let mut out = Vec::new();
    loop {
        match decoder.next_piece()? {
            Some(piece) => {
                assert!(!piece.is_empty() && piece.len() <= PIECE, "{}", piece.len());
                out.extend_from_slice(&piece);
            }
            None if decoder.is_finished() => return Ok(out),
            None => match reads.next() {
                Some(read) => decoder.push(read),
                None => decoder.end(),
            },
        }
    }
}

fn decode(codings: &[Coding], encoded: &[u8]) -> Result<Vec<u8>, DecodeError> {
    decode_in(codings, LIMITS, encoded, 16 * 1024)
}

#[test]
fn every_coding_round_trips_in_any_read_size() {
    let data = sample(300 * 1024);
    for coding in ALL {
        let encoded = encode(coding, &data);
        for chunk in [1, 7, 4096, encoded.len()] {
            let decoded = decode_in(&[coding], LIMITS, &encoded, chunk)
                .unwrap_or_else(|e| panic!("{coding:?} in {chunk}-byte reads: {e}"));
            assert!(decoded == data, "{coding:?} in {chunk}-byte reads");
        }
    }
}

#[test]
fn raw_deflate_and_concatenated_members_are_accepted() {
    let data = sample(10_000);
    assert_eq!(
        decode(&[Coding::Deflate], &raw_deflate(&data)).unwrap(),
        data
    );
    let mut two = gzip(b"first member, ");
    two.extend(gzip(b"second member"));
    assert_eq!(
        decode(&[Coding::Gzip], &two).unwrap(),
        b"first member, second member"
    );
    let mut frames = zstd(b"one frame, ");
    frames.extend(zstd(b"another"));
    assert_eq!(
        decode(&[Coding::Zstd], &frames).unwrap(),
        b"one frame, another"
    );
}

#[test]
fn stacked_codings_are_decoded_in_reverse() {
    let data = sample(200 * 1024);
    // `Content-Encoding: gzip, br`: gzip applied first, then brotli.
    let encoded = brotli(&gzip(&data));
    let codings = parse_codings([&b"gzip, br"[..]].into_iter()).unwrap();
    assert_eq!(codings, [Coding::Gzip, Coding::Brotli]);
    assert_eq!(decode(&codings, &encoded).unwrap(), data);
    let encoded = gzip(&zstd(&data));
    assert_eq!(
        decode(&[Coding::Zstd, Coding::Gzip], &encoded).unwrap(),
        data
    );
}

#[test]
fn codings_are_parsed_across_lines_and_identity_is_no_coding() {
    let lines: [&[u8]; 2] = [b"identity", b" X-GZIP ,identity"];
    assert_eq!(parse_codings(lines.into_iter()).unwrap(), [Coding::Gzip]);
    assert_eq!(parse_codings([&b"identity"[..]].into_iter()).unwrap(), []);
    let unknown = parse_codings([&b"gzip, compress"[..]].into_iter()).unwrap_err();
    assert_eq!(unknown, DecodeError::Unsupported("compress".into()));
    assert_eq!(unknown.reason(), Reason::ResponseUnscannable);
    assert!(unknown.to_string().contains("\"compress\""), "{unknown}");
    let deep = parse_codings([&b"gzip, gzip, gzip"[..]].into_iter()).unwrap_err();
    assert!(matches!(deep, DecodeError::TooDeep(3, _)), "{deep:?}");
    assert!(deep.to_string().contains("gzip, gzip, gzip"), "{deep}");
}

#[test]
fn a_bomb_trips_the_ratio_limit_after_about_a_mebibyte() {
    let zeros = vec![0u8; 64 << 20];
    for coding in ALL {
        let encoded = encode(coding, &zeros);
        let mut decoder = BodyDecoder::new(&[coding], LIMITS);
        decoder.push(&encoded);
        decoder.end();
        let err = loop {
            match decoder.next_piece() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("{coding:?}: a bomb decoded to the end"),
                Err(e) => break e,
            }
        };
        assert_eq!(err, DecodeError::RatioExceeded(100), "{coding:?}");
        assert_eq!(err.reason(), Reason::ResponseTooLarge);
        // Stopped within a piece of the floor, not at the end of the bomb.
        assert!(
            decoder.decoded() <= RATIO_FLOOR + PIECE as u64,
            "{coding:?}"
        );
    }
}

#[test]
fn the_size_limit_trips_even_when_the_ratio_is_fine() {
    let data = sample(3 << 20);
    let limits = DecodeLimits {
        max_decoded: 2 << 20,
        max_ratio: 1000,
    };
    for coding in ALL {
        let err = decode_in(&[coding], limits, &encode(coding, &data), 4096).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge(2 << 20), "{coding:?}");
    }
    // Small, extremely repetitive bodies pass: the ratio waits for the floor.
    let zeros = vec![0u8; 512 * 1024];
    assert_eq!(decode(&[Coding::Gzip], &gzip(&zeros)).unwrap(), zeros);
}

#[test]
fn truncated_streams_are_errors() {
    let data = sample(50_000);
    for coding in ALL {
        let encoded = encode(coding, &data);
        for cut in [1, encoded.len() / 2, encoded.len() - 1] {
            let err = decode(&[coding], &encoded[..cut]).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated(_) | DecodeError::Corrupt { .. }),
                "{coding:?} cut at {cut}: {err:?}"
            );
            assert_eq!(err.reason(), Reason::ResponseUnscannable);
        }
    }
}

#[test]
fn corrupt_streams_are_errors() {
    let data = sample(50_000);
    for coding in ALL {
        let mut encoded = encode(coding, &data);
        let at = encoded.len() / 2;
        encoded[at] ^= 0x55;
        encoded[at + 1] ^= 0xaa;
        let err = decode(&[coding], &encoded).unwrap_err();
        assert!(
            matches!(err, DecodeError::Corrupt { .. } | DecodeError::Truncated(_)),
            "{coding:?}: {err:?}"
        );
        let err = decode(&[coding], b"this is not compressed at all").unwrap_err();
        assert!(
            matches!(err, DecodeError::Corrupt { .. }),
            "{coding:?}: {err:?}"
        );
    }
}

#[test]
fn data_after_the_end_of_the_stream_is_an_error() {
    for coding in ALL {
        let mut encoded = encode(coding, b"complete body");
        encoded.extend_from_slice(b"garbage");
        let err = decode(&[coding], &encoded).unwrap_err();
        assert!(
            err.to_string().contains("data follows the end"),
            "{coding:?}: {err}"
        );
    }
}

#[test]
fn an_empty_body_decodes_to_nothing() {
    for coding in ALL {
        assert_eq!(decode(&[coding], b"").unwrap(), b"");
    }
}

#[test]
fn output_comes_out_as_input_arrives() {
    // A stream whose first part is complete gives it out before the rest
    // of the body exists (a streamed gzip response, flushed per event).
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b"data: first event\n\n").unwrap();
    e.flush().unwrap();
    let first = e.get_ref().clone();
    let mut decoder = BodyDecoder::new(&[Coding::Gzip], LIMITS);
    decoder.push(&first);
    let piece = decoder.next_piece().unwrap().unwrap();
    assert_eq!(&piece[..], b"data: first event\n\n");
    assert_eq!(decoder.next_piece().unwrap(), None);
    assert!(!decoder.is_finished());
}

#[test]
fn zstd_windows_over_8_mib_are_refused() {
    // Frame header: magic, descriptor (no single segment, no checksum),
    // window descriptor exponent 14 → 16 MiB.
    let frame = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 14 << 3, 0x01, 0x00, 0x00];
    let err = decode(&[Coding::Zstd], &frame).unwrap_err();
    assert!(err.to_string().contains("window"), "{err}");
}
