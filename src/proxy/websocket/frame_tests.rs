use super::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn encoded(fin: bool, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) -> BytesMut {
    let mut out = Vec::new();
    encode(&mut out, fin, opcode, payload, mask);
    BytesMut::from(&out[..])
}

fn decode_all(mut buf: BytesMut, sender: Sender) -> Result<Option<Frame>, ProtocolError> {
    decode(&mut buf, sender, MAX_MESSAGE)
}

#[test]
fn every_length_form_round_trips_masked_and_unmasked() {
    // 7-bit up to 125, 16-bit from 126 to 65535, 64-bit above.
    for (len, header) in [
        (0usize, 2usize),
        (125, 2),
        (126, 4),
        (65_535, 4),
        (65_536, 10),
        (200_000, 10),
    ] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let plain = encoded(true, Opcode::Binary, &payload, None);
        assert_eq!(plain.len(), header + len, "unmasked {len}");
        let frame = decode_all(plain, Sender::Server).unwrap().unwrap();
        assert_eq!(&frame.payload[..], &payload[..]);
        assert!(frame.fin);

        let masked = encoded(false, Opcode::Text, &payload, Some(KEY));
        assert_eq!(masked.len(), header + 4 + len, "masked {len}");
        if len > 0 {
            // Masking keeps the length, and the bytes on the wire differ.
            assert_ne!(&masked[header + 4..], &payload[..]);
        }
        let frame = decode_all(masked, Sender::Client).unwrap().unwrap();
        assert_eq!(&frame.payload[..], &payload[..]);
        assert_eq!(frame.opcode, Opcode::Text);
        assert!(!frame.fin);
    }
}

#[test]
fn the_rfc_examples_decode() {
    // RFC 6455 §5.7: a single-frame unmasked and a masked text "Hello".
    let mut buf = BytesMut::from(&b"\x81\x05\x48\x65\x6c\x6c\x6f"[..]);
    let frame = decode(&mut buf, Sender::Server, 1024).unwrap().unwrap();
    assert_eq!(&frame.payload[..], b"Hello");
    let mut buf = BytesMut::from(&b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"[..]);
    let frame = decode(&mut buf, Sender::Client, 1024).unwrap().unwrap();
    assert_eq!(&frame.payload[..], b"Hello");
    assert!(buf.is_empty());
    // Fragmented: "Hel" then "lo".
    let mut buf = BytesMut::from(&b"\x01\x03\x48\x65\x6c\x80\x02\x6c\x6f"[..]);
    let first = decode(&mut buf, Sender::Server, 1024).unwrap().unwrap();
    let second = decode(&mut buf, Sender::Server, 1024).unwrap().unwrap();
    assert!(!first.fin && second.fin);
    assert_eq!(first.opcode, Opcode::Text);
    assert_eq!(second.opcode, Opcode::Continuation);
    assert_eq!([&first.payload[..], &second.payload[..]].concat(), b"Hello");
}

#[test]
fn a_partial_frame_waits_for_more_bytes() {
    let whole = encoded(true, Opcode::Binary, &[7u8; 300], Some(KEY));
    for cut in 0..whole.len() {
        let mut buf = BytesMut::from(&whole[..cut]);
        assert_eq!(decode(&mut buf, Sender::Client, MAX_MESSAGE).unwrap(), None);
        assert_eq!(buf.len(), cut, "nothing is taken from a partial frame");
    }
}

#[test]
fn masking_is_checked_by_side() {
    let unmasked = encoded(true, Opcode::Text, b"hi", None);
    assert_eq!(
        decode_all(unmasked, Sender::Client),
        Err(ProtocolError::Unmasked)
    );
    let masked = encoded(true, Opcode::Text, b"hi", Some(KEY));
    assert_eq!(
        decode_all(masked, Sender::Server),
        Err(ProtocolError::Masked)
    );
    assert_eq!(ProtocolError::Unmasked.close_code(), 1002);
}

#[test]
fn reserved_bits_and_unknown_opcodes_are_errors() {
    for rsv in [0x40u8, 0x20, 0x10] {
        let mut frame = encoded(true, Opcode::Text, b"x", None);
        frame[0] |= rsv;
        assert_eq!(
            decode_all(frame, Sender::Server),
            Err(ProtocolError::ReservedBits)
        );
    }
    for op in [0x3u8, 0x7, 0xB, 0xF] {
        let frame = BytesMut::from(&[0x80 | op, 0x00][..]);
        assert_eq!(
            decode_all(frame, Sender::Server),
            Err(ProtocolError::BadOpcode(op))
        );
    }
}

#[test]
fn control_frames_are_short_and_whole() {
    let long = encoded(true, Opcode::Ping, &[0u8; 126], None);
    assert_eq!(
        decode_all(long, Sender::Server),
        Err(ProtocolError::ControlTooLong)
    );
    let ok = encoded(true, Opcode::Ping, &[0u8; 125], None);
    assert!(decode_all(ok, Sender::Server).unwrap().is_some());
    for opcode in [Opcode::Ping, Opcode::Pong, Opcode::Close] {
        let fragmented = encoded(false, opcode, b"", Some(KEY));
        assert_eq!(
            decode_all(fragmented, Sender::Client),
            Err(ProtocolError::ControlFragmented)
        );
    }
}

#[test]
fn lengths_must_be_minimal_and_without_the_top_bit() {
    let mut top = BytesMut::from(&[0x82u8, 127][..]);
    top.extend_from_slice(&(1u64 << 63).to_be_bytes());
    assert_eq!(
        decode_all(top, Sender::Server),
        Err(ProtocolError::LengthTopBit)
    );
    let mut short16 = BytesMut::from(&[0x82u8, 126][..]);
    short16.extend_from_slice(&5u16.to_be_bytes());
    assert_eq!(
        decode_all(short16, Sender::Server),
        Err(ProtocolError::LengthNotMinimal)
    );
    let mut short64 = BytesMut::from(&[0x82u8, 127][..]);
    short64.extend_from_slice(&300u64.to_be_bytes());
    assert_eq!(
        decode_all(short64, Sender::Server),
        Err(ProtocolError::LengthNotMinimal)
    );
}

#[test]
fn a_frame_over_the_limit_is_refused_from_its_header_alone() {
    let mut head = BytesMut::from(&[0x82u8, 127][..]);
    head.extend_from_slice(&((MAX_MESSAGE as u64) + 1).to_be_bytes());
    // Only the header has arrived: the length alone decides.
    assert_eq!(decode_all(head, Sender::Server), Err(ProtocolError::TooBig));
    let frame = encoded(true, Opcode::Binary, &[1u8; 11], None);
    let mut buf = frame;
    assert_eq!(
        decode(&mut buf, Sender::Server, 10),
        Err(ProtocolError::TooBig)
    );
    assert_eq!(ProtocolError::TooBig.close_code(), 1009);
}

#[test]
fn close_codes_are_read_and_checked() {
    assert_eq!(close_code(b""), Ok(None));
    assert_eq!(close_code(&close_payload(1000)), Ok(Some(1000)));
    assert_eq!(close_code(b"\x0f\xa0bye"), Ok(Some(4000)));
    assert_eq!(close_code(b"\x03"), Err(ProtocolError::BadClose));
    for reserved in [999u16, 1004, 1005, 1006, 1015, 2999, 5000] {
        assert_eq!(
            close_code(&close_payload(reserved)),
            Err(ProtocolError::BadClose),
            "{reserved}"
        );
    }
}
