//! The codec on bytes in memory: every length encoding, masked and unmasked, both roles,
//! and input split at every boundary (small cases) or at random ones (properties).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// What the peer of a decoder in `role` sends: masked frames to a server, unmasked ones
/// to a client.
fn peer_mask(role: Role) -> Option<[u8; 4]> {
    match role {
        Role::Server => Some(MASK),
        Role::Client => None,
    }
}

/// One frame as the peer of `role` encodes it, with FIN as given.
fn frame(role: Role, fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mask = peer_mask(role);
    let mut out = BytesMut::new();
    encode_header(&mut out, fin, opcode, payload.len(), mask);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        fastwebsockets::unmask(&mut out[start..], mask);
    }
    out.to_vec()
}

/// Decodes `chunks` fed one after another, as reads would deliver them; every frame, or
/// the first error.
fn decode_chunks(role: Role, max: usize, chunks: &[&[u8]]) -> Result<Vec<Frame>, DecodeError> {
    let mut decoder = Decoder::new(role, max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    assert!(buf.is_empty(), "bytes left over: {buf:?}");
    Ok(frames)
}

fn text(s: &str) -> Frame {
    Frame::Message(Message::text(s.to_owned()))
}

fn binary(data: &[u8]) -> Frame {
    Frame::Message(Message::binary(data.to_vec()))
}

/// A stream with every kind of frame: short and both extended lengths, a fragmented
/// text message with a ping between its fragments, binary, a pong and a close.
fn mixed_stream(role: Role) -> (Vec<u8>, Vec<Frame>) {
    let long: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    let medium = "é".repeat(100); // 200 bytes: a 16-bit length
    let mut bytes = Vec::new();
    bytes.extend(frame(role, true, OpCode::Text, b"hi"));
    bytes.extend(frame(role, true, OpCode::Text, medium.as_bytes()));
    bytes.extend(frame(role, true, OpCode::Binary, &long));
    // "κόσμε" split inside a code point, with a ping between the fragments.
    let kosme = "κόσμε".as_bytes();
    bytes.extend(frame(role, false, OpCode::Text, &kosme[..3]));
    bytes.extend(frame(role, true, OpCode::Ping, b"p"));
    bytes.extend(frame(role, false, OpCode::Continuation, &kosme[3..7]));
    bytes.extend(frame(role, true, OpCode::Continuation, &kosme[7..]));
    bytes.extend(frame(role, true, OpCode::Binary, b""));
    bytes.extend(frame(role, true, OpCode::Pong, b""));
    bytes.extend(frame(role, true, OpCode::Close, b"\x03\xe8bye"));
    let frames = vec![
        text("hi"),
        text(&medium),
        binary(&long),
        Frame::Ping(Bytes::from_static(b"p")),
        text("κόσμε"),
        binary(b""),
        Frame::Pong(Bytes::new()),
        Frame::Close(Some((1000, Utf8Bytes::from("bye")))),
    ];
    (bytes, frames)
}

#[test]
fn every_frame_kind_decodes_in_both_roles() {
    for role in [Role::Server, Role::Client] {
        let (bytes, expected) = mixed_stream(role);
        assert_eq!(decode_chunks(role, 1 << 20, &[&bytes]).unwrap(), expected);
    }
}

#[test]
fn a_stream_split_at_every_boundary_decodes_the_same() {
    // Small enough to try every split point of the stream in two, and every byte alone.
    for role in [Role::Server, Role::Client] {
        let mut bytes = Vec::new();
        bytes.extend(frame(role, true, OpCode::Text, "héllo".as_bytes()));
        bytes.extend(frame(role, false, OpCode::Binary, &[7; 130]));
        bytes.extend(frame(role, true, OpCode::Ping, b"ping"));
        bytes.extend(frame(role, true, OpCode::Continuation, &[8; 3]));
        bytes.extend(frame(role, true, OpCode::Close, b""));
        let mut joined = vec![7; 130];
        joined.extend([8; 3]);
        let expected = vec![
            text("héllo"),
            Frame::Ping(Bytes::from_static(b"ping")),
            binary(&joined),
            Frame::Close(None),
        ];
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(
                decode_chunks(role, 1 << 20, &[a, b]).unwrap(),
                expected,
                "{role:?}, split at {split}"
            );
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode_chunks(role, 1 << 20, &bytewise).unwrap(), expected);
    }
}

#[test]
fn each_length_encoding_round_trips_at_its_edges() {
    for role in [Role::Server, Role::Client] {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 65_537] {
            let payload = vec![0x5a; len];
            let bytes = frame(role, true, OpCode::Binary, &payload);
            let header = match len {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            } + if role == Role::Server { 4 } else { 0 };
            assert_eq!(bytes.len(), header + len, "{role:?} {len}");
            assert_eq!(
                decode_chunks(role, 1 << 20, &[&bytes]).unwrap(),
                vec![binary(&payload)],
                "{role:?} {len}"
            );
        }
    }
}

#[test]
fn frame_headers_encode_as_the_rfc_lays_them_out() {
    let h = FrameHeader::new(true, false, OpCode::Text, 5, None);
    assert_eq!(h.as_bytes(), [0x81, 0x05]);
    let h = FrameHeader::new(false, true, OpCode::Binary, 300, Some([1, 2, 3, 4]));
    assert_eq!(h.as_bytes(), [0x42, 0x80 | 126, 0x01, 0x2c, 1, 2, 3, 4]);
    let h = FrameHeader::new(true, false, OpCode::Close, 1 << 16, None);
    assert_eq!(h.as_bytes(), [0x88, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
}

/// Decodes `bytes` in one piece and returns the error it must end in.
fn error_of(role: Role, bytes: &[u8]) -> DecodeError {
    let mut decoder = Decoder::new(role, 1 << 20);
    let mut buf = BytesMut::from(bytes);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("{bytes:02x?}: no error, wants more input"),
            Err(e) => return e,
        }
    }
}

#[test]
fn each_protocol_violation_is_its_own_error() {
    let server = Role::Server;
    let p = |e| DecodeError::Protocol(e);
    let mut rsv = frame(server, true, OpCode::Text, b"x");
    rsv[0] |= 0x40;
    assert_eq!(error_of(server, &rsv), p(ProtocolError::ReservedBits));
    let mut op = frame(server, true, OpCode::Text, b"x");
    op[0] = 0x83;
    assert_eq!(error_of(server, &op), p(ProtocolError::ReservedOpcode(3)));
    assert_eq!(
        error_of(server, &frame(Role::Client, true, OpCode::Text, b"x")),
        p(ProtocolError::UnmaskedFrame)
    );
    assert_eq!(
        error_of(Role::Client, &frame(Role::Server, true, OpCode::Text, b"x")),
        p(ProtocolError::MaskedFrame)
    );
    assert_eq!(
        error_of(server, &frame(server, false, OpCode::Ping, b"")),
        p(ProtocolError::FragmentedControl)
    );
    assert_eq!(
        error_of(server, &frame(server, true, OpCode::Ping, &[0; 126])),
        p(ProtocolError::ControlTooLong)
    );
    let mut huge = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
    huge.extend(MASK);
    assert_eq!(error_of(server, &huge), p(ProtocolError::InvalidLength));
    assert_eq!(
        error_of(server, &frame(server, true, OpCode::Continuation, b"x")),
        p(ProtocolError::UnexpectedContinuation)
    );
    let mut twice = frame(server, false, OpCode::Text, b"a");
    twice.extend(frame(server, true, OpCode::Text, b"b"));
    assert_eq!(
        error_of(server, &twice),
        p(ProtocolError::ExpectedContinuation)
    );
    assert_eq!(
        error_of(server, &frame(server, true, OpCode::Close, b"\x03")),
        p(ProtocolError::CloseTooShort)
    );
    assert_eq!(
        error_of(server, &frame(server, true, OpCode::Close, b"\x03\xed")),
        p(ProtocolError::InvalidCloseCode(1005))
    );
    assert_eq!(
        error_of(server, &frame(server, true, OpCode::Close, b"\x03\xe8\xff")),
        p(ProtocolError::InvalidCloseReason)
    );
}

#[test]
fn invalid_utf8_fails_on_the_chunk_that_holds_it_before_the_frame_ends() {
    for role in [Role::Server, Role::Client] {
        let mut payload = b"valid text, then ".to_vec();
        let bad_at = payload.len();
        payload.extend([0xed, 0xa0, 0x80]); // a UTF-16 surrogate: never valid
        payload.extend(vec![b'x'; 1000]);
        let bytes = frame(role, true, OpCode::Text, &payload);
        let header = bytes.len() - payload.len();
        let mut decoder = Decoder::new(role, 1 << 20);
        // Everything up to the byte before the one that makes the sequence invalid: fine.
        let mut buf = BytesMut::from(&bytes[..header + bad_at + 1]);
        assert_eq!(decoder.decode(&mut buf), Ok(None), "{role:?}");
        // The next byte (A0 after ED) is invalid: the frame fails now, 1,000 bytes early.
        buf.extend_from_slice(&bytes[header + bad_at + 1..header + bad_at + 2]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(DecodeError::Protocol(ProtocolError::InvalidUtf8)),
            "{role:?}"
        );
    }
}

#[test]
fn invalid_utf8_across_fragments_fails_on_the_fragment_that_holds_it() {
    let role = Role::Server;
    let mut bytes = frame(role, false, OpCode::Text, "ok \u{e9}".as_bytes());
    bytes.extend(frame(role, false, OpCode::Continuation, &[0xf4]));
    bytes.extend(frame(role, true, OpCode::Continuation, &[0x90, 0x80, 0x80]));
    assert_eq!(
        error_of(role, &bytes),
        DecodeError::Protocol(ProtocolError::InvalidUtf8)
    );
    // A code point cut off at the end of the message is invalid too.
    let cut = frame(role, true, OpCode::Text, &[b'a', 0xe2, 0x82]);
    assert_eq!(
        error_of(role, &cut),
        DecodeError::Protocol(ProtocolError::InvalidUtf8)
    );
}

#[test]
fn a_message_over_the_limit_fails_at_the_header_before_its_payload() {
    let role = Role::Server;
    let mut decoder = Decoder::new(role, 1000);
    let bytes = frame(role, true, OpCode::Binary, &[0; 1001]);
    // The header alone (2 + 2 length + 4 mask) is enough to refuse it.
    let mut buf = BytesMut::from(&bytes[..8]);
    assert_eq!(decoder.decode(&mut buf), Err(DecodeError::TooBig));
    // Fragments count together: 600 + 600 > 1000 fails at the second header.
    let mut decoder = Decoder::new(role, 1000);
    let mut fragments = frame(role, false, OpCode::Binary, &[0; 600]);
    fragments.extend(&frame(role, true, OpCode::Continuation, &[0; 600])[..8]);
    let mut buf = BytesMut::from(&fragments[..]);
    assert_eq!(decoder.decode(&mut buf), Err(DecodeError::TooBig));
}

#[test]
fn a_frame_declaring_60_mb_is_waited_for_without_being_allocated() {
    let role = Role::Server;
    let mut decoder = Decoder::new(role, 64 << 20);
    let mut header = BytesMut::new();
    encode_header(&mut header, true, OpCode::Binary, 60 << 20, Some(MASK));
    header.extend_from_slice(b"first bytes");
    assert_eq!(decoder.decode(&mut header), Ok(None));
    assert!(decoder.is_mid_frame());
    assert_eq!(decoder.wanted(11), (60 << 20) - 11);
    assert!(header.capacity() < 1024, "{}", header.capacity());
}

/// A message of the peer of `role`, cut into `pieces` fragments, as bytes.
fn fragmented(role: Role, text: bool, payload: &[u8], pieces: usize) -> Vec<u8> {
    let pieces = pieces.clamp(1, payload.len().max(1));
    let size = payload.len().div_ceil(pieces).max(1);
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(size).collect()
    };
    let mut bytes = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = match (i, text) {
            (0, true) => OpCode::Text,
            (0, false) => OpCode::Binary,
            _ => OpCode::Continuation,
        };
        bytes.extend(frame(role, i + 1 == chunks.len(), opcode, chunk));
    }
    bytes
}

proptest! {
    #[test]
    fn any_messages_split_anywhere_decode_to_themselves(
        server in any::<bool>(),
        messages in proptest::collection::vec(
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300), 1usize..4),
            1..6,
        ),
        // 70,000 bytes exercise the 64-bit length now and then.
        long in proptest::option::of(65_530usize..70_000),
        cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for (text, data, pieces) in &messages {
            let message = if *text {
                let s = String::from_utf8_lossy(data).into_owned();
                bytes.extend(fragmented(role, true, s.as_bytes(), *pieces));
                Message::text(s)
            } else {
                bytes.extend(fragmented(role, false, data, *pieces));
                Message::binary(data.clone())
            };
            expected.push(Frame::Message(message));
        }
        if let Some(len) = long {
            let data = vec![0xab; len];
            bytes.extend(frame(role, true, OpCode::Binary, &data));
            expected.push(Frame::Message(Message::binary(data)));
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut at = 0;
        for point in points {
            chunks.push(&bytes[at..point]);
            at = point;
        }
        chunks.push(&bytes[at..]);
        prop_assert_eq!(decode_chunks(role, 1 << 20, &chunks).unwrap(), expected);
    }

    #[test]
    fn any_bytes_end_in_frames_an_error_or_a_wait_never_a_panic(
        server in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        max in 0usize..2000,
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let mut decoder = Decoder::new(role, max);
        let mut buf = BytesMut::from(&bytes[..]);
        let mut seen = 0;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Frame::Message(m))) => {
                    prop_assert!(m.len() <= max, "a message over the limit got through");
                    seen += 1;
                }
                Ok(Some(_)) => seen += 1,
                Ok(None) | Err(_) => break,
            }
            prop_assert!(seen <= bytes.len(), "more frames than bytes");
        }
    }
}
