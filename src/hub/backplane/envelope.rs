//! The wire format of one cross-node delivery.
//!
//! ```text
//! version  u8     2
//! flags    u8     0 (bit 0 is kept for a history position, see below; others unused)
//! node     u128   the sending node
//! sent_at  u64    the sender's wall clock when the delivery was made, ms since 1970
//! kind     u8     0 text frame, 1 binary frame, 2 JSON event
//! target   u8     0 session, 1 user, 2 user's session, 3 channel, 4 name
//!          then each of the target's strings: u16 length, UTF-8 bytes
//! payload  the rest
//! ```
//!
//! `sent_at` lets the receiver drop what arrives later than the delivery deadline (a batch
//! Redis held through a stall), so that nothing is delivered late. A flag bit is kept
//! for channel history: a publication's position (offset and epoch) will follow the
//! target when it is set. A receiver rejects flags it does not know rather than misread
//! what follows.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::super::{Payload, Target};
use crate::protocol::{Message, Prepared, Utf8Bytes};

const VERSION: u8 = 2;
/// Reserved: a history position follows the target.
#[allow(dead_code)] // kept for channel history
const FLAG_POSITION: u8 = 1;
const KNOWN_FLAGS: u8 = 0;

const KIND_TEXT: u8 = 0;
const KIND_BINARY: u8 = 1;
const KIND_EVENT: u8 = 2;

/// The fixed part: version, flags, node, sent_at, kind, target tag.
const HEADER: usize = 1 + 1 + 16 + 8 + 1 + 1;

/// A delivery as it crosses nodes.
#[derive(Debug, Clone)]
pub(super) struct Envelope {
    pub(super) node: u128,
    /// Milliseconds since the Unix epoch, on the sender's clock.
    pub(super) sent_at: u64,
    pub(super) target: Target,
    pub(super) payload: Payload,
}

/// Encodes a delivery. Every target string must be at most 65,535 bytes, which
/// `HubLimits::check_target` has made sure of before anything is sent.
pub(super) fn encode(node: u128, sent_at: u64, target: &Target, payload: &Payload) -> Bytes {
    let (kind, body): (u8, &[u8]) = match payload {
        Payload::Frame(frame) => match frame.message_payload() {
            (true, bytes) => (KIND_TEXT, bytes),
            (false, bytes) => (KIND_BINARY, bytes),
        },
        Payload::Event(json) => (KIND_EVENT, json),
    };
    let (tag, strings): (u8, [Option<&str>; 2]) = match target {
        Target::Session(s) => (0, [Some(s), None]),
        Target::User(u) => (1, [Some(u), None]),
        Target::UserSession { user, session } => (2, [Some(user), Some(session)]),
        Target::Channel(c) => (3, [Some(c), None]),
        Target::Name(n) => (4, [Some(n), None]),
    };
    let strings_len: usize = strings.iter().flatten().map(|s| 2 + s.len()).sum();
    let mut out = BytesMut::with_capacity(HEADER + strings_len + body.len());
    out.put_u8(VERSION);
    out.put_u8(0);
    out.put_u128(node);
    out.put_u64(sent_at);
    out.put_u8(kind);
    out.put_u8(tag);
    for s in strings.into_iter().flatten() {
        let len = u16::try_from(s.len()).expect("targets were checked against the 64 KiB bound");
        out.put_u16(len);
        out.put_slice(s.as_bytes());
    }
    out.put_slice(body);
    out.freeze()
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
    if buf.get_u8() & !KNOWN_FLAGS != 0 {
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
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        flagged[1] = FLAG_POSITION;
        assert_eq!(decode(flagged.into()).unwrap_err(), "unknown flags");
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
