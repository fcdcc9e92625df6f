//! The wire format of one cross-node delivery.
//!
//! ```text
//! version  u8     2
//! flags    u8     bit 0: a history position follows the target; others unused
//! node     u128   the sending node
//! sent_at  u64    the sender's wall clock when the delivery was made, ms since 1970
//! kind     u8     0 text frame, 1 binary frame, 2 JSON event
//! target   u8     0 session, 1 user, 2 user's session, 3 channel, 4 name
//!          then each of the target's strings: u16 length, UTF-8 bytes
//! position (with flag bit 0) offset: u8 length, decimal ASCII digits;
//!          epoch: u8 length, bytes
//! payload  the rest
//! ```
//!
//! `sent_at` lets the receiver drop what arrives later than the delivery deadline (a batch
//! Redis held through a stall), so that nothing is delivered late. The position is a
//! channel history's: the node encodes everything but the position (`head`, then the
//! payload), and the Redis script that gives the publication its offset puts the
//! position between them, in text, the form a script can write. A receiver rejects flags
//! it does not know rather than misread what follows.
//!
//! The script publishes a batch's publications to one channel as one bundle:
//!
//! ```text
//! tag      u8     0xB5 (no envelope starts so)
//! then, for each envelope: u32 length, the envelope
//! ```

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::super::{Payload, Target};
use crate::protocol::{Message, Prepared, Utf8Bytes};
use crate::queue::Position;

const VERSION: u8 = 2;
/// A history position follows the target.
const FLAG_POSITION: u8 = 1;
const KNOWN_FLAGS: u8 = FLAG_POSITION;

const KIND_TEXT: u8 = 0;
const KIND_BINARY: u8 = 1;
const KIND_EVENT: u8 = 2;

/// The first byte of a bundle of envelopes.
const BUNDLE: u8 = 0xB5;

/// The fixed part: version, flags, node, sent_at, kind, target tag.
const HEADER: usize = 1 + 1 + 16 + 8 + 1 + 1;

/// A delivery as it crosses nodes.
#[derive(Debug, Clone)]
pub(super) struct Envelope {
    pub(super) node: u128,
    /// Milliseconds since the Unix epoch, on the sender's clock.
    pub(super) sent_at: u64,
    pub(super) target: Target,
    /// A channel history's position, for a publication on a channel with history.
    pub(super) position: Option<Position>,
    pub(super) payload: Payload,
}

/// Encodes a delivery. Every target string must be at most 65,535 bytes, which
/// `HubLimits::check_target` has made sure of before anything is sent.
pub(super) fn encode(node: u128, sent_at: u64, target: &Target, payload: &Payload) -> Bytes {
    let body = body(payload);
    let mut out = head(0, node, sent_at, target, payload, body.len());
    out.put_slice(body);
    out.freeze()
}

/// A publication's envelope but its position: the head (with the position flag set) and
/// the payload, between which the Redis script writes the position.
pub(super) fn encode_unpositioned(
    node: u128,
    sent_at: u64,
    target: &Target,
    payload: &Payload,
) -> (Bytes, Bytes) {
    let head = head(FLAG_POSITION, node, sent_at, target, payload, 0).freeze();
    let body = match payload {
        Payload::Frame(frame) => frame.payload().clone(),
        Payload::Event(json) => json.clone(),
    };
    (head, body)
}

/// The position as the script writes it between head and payload.
#[cfg(test)]
pub(super) fn position_bytes(position: &Position) -> Vec<u8> {
    let offset = position.offset.to_string();
    let mut out = vec![offset.len() as u8];
    out.extend_from_slice(offset.as_bytes());
    out.push(position.epoch.len() as u8);
    out.extend_from_slice(position.epoch.as_bytes());
    out
}

fn body(payload: &Payload) -> &[u8] {
    match payload {
        Payload::Frame(frame) => frame.message_payload().1,
        Payload::Event(json) => json,
    }
}

/// Everything before the position (or the payload): header and target, with room for
/// `body_len` more.
fn head(
    flags: u8,
    node: u128,
    sent_at: u64,
    target: &Target,
    payload: &Payload,
    body_len: usize,
) -> BytesMut {
    let kind = match payload {
        Payload::Frame(frame) => match frame.message_payload() {
            (true, _) => KIND_TEXT,
            (false, _) => KIND_BINARY,
        },
        Payload::Event(_) => KIND_EVENT,
    };
    let (tag, strings): (u8, [Option<&str>; 2]) = match target {
        Target::Session(s) => (0, [Some(s), None]),
        Target::User(u) => (1, [Some(u), None]),
        Target::UserSession { user, session } => (2, [Some(user), Some(session)]),
        Target::Channel(c) => (3, [Some(c), None]),
        Target::Name(n) => (4, [Some(n), None]),
    };
    let strings_len: usize = strings.iter().flatten().map(|s| 2 + s.len()).sum();
    let mut out = BytesMut::with_capacity(HEADER + strings_len + body_len);
    out.put_u8(VERSION);
    out.put_u8(flags);
    out.put_u128(node);
    out.put_u64(sent_at);
    out.put_u8(kind);
    out.put_u8(tag);
    for s in strings.into_iter().flatten() {
        let len = u16::try_from(s.len()).expect("targets were checked against the 64 KiB bound");
        out.put_u16(len);
        out.put_slice(s.as_bytes());
    }
    out
}

/// The envelopes in a message from Redis: the envelopes of a bundle, in order, or the
/// message itself; `Err` for a bundle cut short (what came before the cut is given).
pub(super) fn split(message: Bytes) -> (Vec<Bytes>, Result<(), &'static str>) {
    if message.first() != Some(&BUNDLE) {
        return (vec![message], Ok(()));
    }
    let mut rest = message.slice(1..);
    let mut envelopes = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return (envelopes, Err("truncated bundle"));
        }
        let len = rest.get_u32() as usize;
        if rest.len() < len {
            return (envelopes, Err("truncated bundle"));
        }
        envelopes.push(rest.split_to(len));
    }
    (envelopes, Ok(()))
}

/// Decodes what [`encode`] made; `bytes` becomes the payload without a copy.
pub(super) fn decode(bytes: Bytes) -> Result<Envelope, &'static str> {
    let mut buf = bytes;
    if buf.remaining() < HEADER {
        return Err("truncated header");
    }
    if buf.get_u8() != VERSION {
        return Err("unknown version");
    }
    let flags = buf.get_u8();
    if flags & !KNOWN_FLAGS != 0 {
        return Err("unknown flags");
    }
    let node = buf.get_u128();
    let sent_at = buf.get_u64();
    let kind = buf.get_u8();
    let tag = buf.get_u8();
    let mut string = || -> Result<Arc<str>, &'static str> {
        if buf.remaining() < 2 {
            return Err("truncated target");
        }
        let len = buf.get_u16() as usize;
        if buf.remaining() < len {
            return Err("truncated target");
        }
        let s = std::str::from_utf8(&buf[..len]).map_err(|_| "target is not UTF-8")?;
        let s = Arc::from(s);
        buf.advance(len);
        Ok(s)
    };
    let target = match tag {
        0 => Target::Session(string()?),
        1 => Target::User(string()?),
        2 => Target::UserSession {
            user: string()?,
            session: string()?,
        },
        3 => Target::Channel(string()?),
        4 => Target::Name(string()?),
        _ => return Err("unknown target"),
    };
    let position = match flags & FLAG_POSITION {
        0 => None,
        _ => Some(position(&mut buf)?),
    };
    let payload = match kind {
        KIND_TEXT => {
            let text = Utf8Bytes::try_from(buf).map_err(|_| "text is not UTF-8")?;
            Payload::Frame(Prepared::new(Message::Text(text)))
        }
        KIND_BINARY => Payload::Frame(Prepared::new(Message::Binary(buf))),
        KIND_EVENT => Payload::Event(buf),
        _ => return Err("unknown payload kind"),
    };
    Ok(Envelope {
        node,
        sent_at,
        target,
        position,
        payload,
    })
}

/// A position as the script writes it: the offset's decimal digits and the epoch, each
/// after a one-byte length.
fn position(buf: &mut Bytes) -> Result<Position, &'static str> {
    let mut field = || -> Result<Bytes, &'static str> {
        if buf.remaining() < 1 {
            return Err("truncated position");
        }
        let len = buf.get_u8() as usize;
        if buf.remaining() < len {
            return Err("truncated position");
        }
        Ok(buf.split_to(len))
    };
    let offset = field()?;
    let epoch = field()?;
    let offset = std::str::from_utf8(&offset)
        .ok()
        .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .ok_or("the position's offset is not a number")?;
    let epoch = std::str::from_utf8(&epoch).map_err(|_| "the position's epoch is not UTF-8")?;
    Ok(Position::new(offset, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_splits_into_its_envelopes_in_order() {
        let one = encode(
            1,
            2,
            &Target::channel("c"),
            &Payload::Event(Bytes::from_static(b"1")),
        );
        let two = encode(
            1,
            2,
            &Target::channel("c"),
            &Payload::Event(Bytes::from_static(b"22")),
        );
        let mut bundle = vec![BUNDLE];
        for envelope in [&one, &two] {
            bundle.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
            bundle.extend_from_slice(envelope);
        }
        let (envelopes, result) = split(Bytes::from(bundle.clone()));
        assert_eq!(envelopes, [one.clone(), two]);
        assert!(result.is_ok());
        let (envelopes, result) = split(Bytes::from(bundle[..bundle.len() - 1].to_vec()));
        assert_eq!(envelopes, std::slice::from_ref(&one));
        assert_eq!(result, Err("truncated bundle"));
        let (alone, result) = split(one.clone());
        assert_eq!((alone, result), (vec![one], Ok(())));
    }

    #[test]
    fn a_position_written_between_head_and_payload_decodes_with_the_publication() {
        let payload = Payload::Frame(Prepared::new(Message::text("héllo")));
        let (head, body) = encode_unpositioned(9, 5, &Target::channel("lobby"), &payload);
        for position in [
            Position::new(1, "9f3c1a7e0b2d4c68"),
            Position::new(u64::MAX, ""),
        ] {
            let whole = [&head[..], &position_bytes(&position), &body[..]].concat();
            let back = decode(whole.into()).unwrap();
            assert_eq!(back.position.as_ref(), Some(&position));
            assert_eq!(back.target, Target::channel("lobby"));
            match back.payload {
                Payload::Frame(frame) => assert_eq!(frame.message().as_text(), Some("héllo")),
                Payload::Event(_) => panic!("kind changed"),
            }
        }
        let plain = decode(encode(9, 5, &Target::channel("lobby"), &payload)).unwrap();
        assert_eq!(plain.position, None);
    }

    #[test]
    fn envelopes_round_trip_every_target_and_kind() {
        let targets = [
            Target::session("s1"),
            Target::user("alice"),
            Target::user_session("alice", "s2"),
            Target::channel("lobby"),
            Target::name("referee"),
            Target::channel("x".repeat(u16::MAX as usize)),
        ];
        let payloads = [
            Payload::Frame(Prepared::new(Message::text("héllo"))),
            Payload::Frame(Prepared::new(Message::binary(vec![0u8; 70_000]))),
            Payload::Event(Bytes::from_static(br#"{"k":1}"#)),
        ];
        for target in &targets {
            for payload in &payloads {
                let back = decode(encode(42, 1_700_000_000_123, target, payload)).unwrap();
                assert_eq!((back.node, back.sent_at), (42, 1_700_000_000_123));
                assert_eq!(&back.target, target);
                match (payload, back.payload) {
                    (Payload::Frame(a), Payload::Frame(b)) => assert_eq!(a, &b),
                    (Payload::Event(a), Payload::Event(b)) => assert_eq!(a, &b),
                    _ => panic!("kind changed"),
                }
            }
        }
    }

    #[test]
    fn malformed_envelopes_are_rejected_not_panicked_on() {
        let body = br#"{"k":1}"#;
        let good = encode(
            7,
            1,
            &Target::channel("c"),
            &Payload::Event(Bytes::from_static(body)),
        );
        for target in [
            Target::session("s1"),
            Target::user("alice"),
            Target::user_session("alice", "s2"),
            Target::channel("lobby"),
            Target::name("referee"),
        ] {
            let whole = encode(7, 1, &target, &Payload::Event(Bytes::from_static(body)));
            assert!(decode(whole.clone()).is_ok(), "{target:?}");
            // The body runs to the end of the envelope, so a cut inside it cannot show;
            // a cut anywhere before it (header, kind, target) must.
            let framing = whole.len() - body.len();
            for cut in 0..framing {
                assert!(
                    decode(whole.slice(..cut)).is_err(),
                    "{target:?}: the first {cut} of {} bytes decoded",
                    whole.len()
                );
            }
        }
        assert!(decode(Bytes::from_static(&[9; 40])).is_err());
        let mut flagged = good.to_vec();
        flagged[1] = 0x80;
        assert_eq!(decode(flagged.into()).unwrap_err(), "unknown flags");
        let (head, body) = encode_unpositioned(
            7,
            1,
            &Target::channel("c"),
            &Payload::Frame(Prepared::new(Message::text("ok"))),
        );
        let whole = [&head[..], b"\x02x1\x01e", &body[..]].concat();
        assert_eq!(
            decode(whole.into()).unwrap_err(),
            "the position's offset is not a number"
        );
        let cut = [&head[..], b"\x0212"].concat();
        assert_eq!(decode(cut.into()).unwrap_err(), "truncated position");
        let mut bad_text = encode(
            7,
            1,
            &Target::channel("c"),
            &Payload::Frame(Prepared::new(Message::text("ok"))),
        )
        .to_vec();
        let last = bad_text.len() - 1;
        bad_text[last] = 0xff;
        assert_eq!(decode(bad_text.into()).unwrap_err(), "text is not UTF-8");
    }
}
