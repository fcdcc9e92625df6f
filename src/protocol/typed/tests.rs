use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Say {
    channel: String,
    text: String,
    tags: Vec<String>,
}

fn say() -> Say {
    Say {
        channel: "lobby".into(),
        text: "héllo".into(),
        tags: vec!["a".into(), "b".into()],
    }
}

#[test]
fn json_round_trips_in_a_text_message() {
    let msg = Codec::Json.encode(&say()).unwrap();
    assert_eq!(
        msg.as_text(),
        Some(r#"{"channel":"lobby","text":"héllo","tags":["a","b"]}"#)
    );
    assert_eq!(Codec::Json.decode::<Say>(&msg).unwrap(), say());
}

#[test]
fn json_of_the_wrong_type_names_the_field() {
    let msg = Message::text(r#"{"channel":"lobby","text":"hi","tags":["a",3]}"#);
    let error = Codec::Json.decode::<Say>(&msg).unwrap_err();
    assert_eq!(error.kind(), DecodeErrorKind::Data);
    assert_eq!(error.path(), Some("tags[1]"));
    assert_eq!(error.close_code(), 1007);
    assert_eq!(
        error.to_string(),
        "json: tags[1]: invalid type: integer `3`, expected a string at line 1 column 44"
    );
}

#[test]
fn json_missing_a_field_says_which() {
    let error = Codec::Json
        .decode::<Say>(&Message::text(r#"{"channel":"lobby","tags":[]}"#))
        .unwrap_err();
    assert_eq!(error.kind(), DecodeErrorKind::Data);
    assert_eq!(
        error.to_string(),
        "json: missing field `text` at line 1 column 29"
    );
}

#[test]
fn json_cut_short_is_truncated() {
    let error = Codec::Json
        .decode::<Say>(&Message::text(r#"{"channel":"lob"#))
        .unwrap_err();
    assert_eq!(error.kind(), DecodeErrorKind::Truncated);
    assert_eq!(error.path(), Some("channel"));
}

#[test]
fn json_that_is_not_json_is_a_syntax_error() {
    let error = Codec::Json
        .decode::<Say>(&Message::text("hello"))
        .unwrap_err();
    assert_eq!(error.kind(), DecodeErrorKind::Syntax);
    assert_eq!(error.to_string(), "json: expected value at line 1 column 1");
}

#[test]
fn json_with_more_after_the_value_is_refused() {
    let error = Codec::Json
        .decode::<u32>(&Message::text("1 2"))
        .unwrap_err();
    assert_eq!(error.kind(), DecodeErrorKind::TrailingBytes);
    assert_eq!(
        error.to_string(),
        "json: trailing characters at line 1 column 3"
    );
}

#[test]
fn json_in_a_binary_message_is_the_wrong_kind() {
    let error = Codec::Json
        .decode::<u32>(&Message::binary(b"1".to_vec()))
        .unwrap_err();
    assert_eq!(error.kind(), DecodeErrorKind::WrongKind);
    assert_eq!(error.close_code(), 1003);
    assert_eq!(
        error.to_string(),
        "json: expected a text message, got a binary one"
    );
}

#[test]
fn json_nested_past_serde_json_s_limit_is_an_error_not_a_stack_overflow() {
    let deep = "[".repeat(100_000);
    let error = Codec::Json
        .decode::<serde_json::Value>(&Message::text(deep))
        .unwrap_err();
    assert_eq!(error.kind(), DecodeErrorKind::Syntax);
    assert!(error.to_string().contains("recursion limit"), "{error}");
}

#[test]
fn close_reasons_fit_a_close_frame_at_a_character_boundary() {
    // Each `é` is two bytes, so a cut at byte 123 would split one.
    let msg = Message::text(format!(r#"{{"channel":1,"é{}":0}}"#, "é".repeat(100)));
    let error = Codec::Json.decode::<Say>(&msg).unwrap_err();
    let reason = error.close_reason();
    assert!(reason.len() <= crate::MAX_CLOSE_REASON);
    assert!(error.to_string().starts_with(&reason));
    crate::protocol::validate_outgoing(error.close_code(), &reason).unwrap();
}

#[test]
fn subprotocols_name_the_codecs() {
    assert_eq!(Codec::from_protocol("json"), Some(Codec::Json));
    assert_eq!(Codec::from_protocol("JSON"), None);
    assert_eq!(Codec::select(&["v2.chat", "json"]), Some("json"));
    assert_eq!(Codec::select(&[]), None);
    for codec in Codec::ALL {
        assert_eq!(Codec::from_protocol(codec.protocol()), Some(*codec));
    }
}

#[cfg(feature = "msgpack")]
mod msgpack {
    use super::*;

    fn encoded() -> Vec<u8> {
        Codec::MsgPack.encode(&say()).unwrap().as_bytes().to_vec()
    }

    #[test]
    fn msgpack_round_trips_in_a_binary_message_with_field_names() {
        let msg = Codec::MsgPack.encode(&say()).unwrap();
        assert!(matches!(msg, Message::Binary(_)));
        // A map of three (0x83), whose first key is "channel" (0xa7 + 7 bytes).
        assert_eq!(&msg.as_bytes()[..9], b"\x83\xa7channel");
        assert_eq!(Codec::MsgPack.decode::<Say>(&msg).unwrap(), say());
        assert_eq!(Codec::select(&["msgpack", "json"]), Some("msgpack"));
    }

    #[test]
    fn msgpack_cut_anywhere_is_truncated_and_never_a_panic() {
        let bytes = encoded();
        for len in 0..bytes.len() {
            let msg = Message::binary(bytes[..len].to_vec());
            let error = Codec::MsgPack.decode::<Say>(&msg).unwrap_err();
            assert_eq!(
                error.kind(),
                DecodeErrorKind::Truncated,
                "cut at {len}: {error}"
            );
            assert_eq!(error.close_code(), 1007);
        }
        let error = Codec::MsgPack
            .decode::<Say>(&Message::binary(bytes[..20].to_vec()))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "msgpack: text: the message ends inside a value"
        );
    }

    #[test]
    fn msgpack_claiming_more_than_it_holds_is_truncated_without_allocating_it() {
        // A str32 of 4 GiB, then three bytes; an array32 of 4 billion elements, then one.
        for bytes in [
            &b"\xdb\xff\xff\xff\xffabc"[..],
            &b"\xdd\xff\xff\xff\xff\x01"[..],
        ] {
            let error = Codec::MsgPack
                .decode::<serde_json::Value>(&Message::binary(bytes.to_vec()))
                .unwrap_err();
            assert_eq!(error.kind(), DecodeErrorKind::Truncated, "{error}");
        }
    }

    #[test]
    fn msgpack_of_the_wrong_type_names_the_field() {
        #[derive(Serialize)]
        struct Wrong {
            channel: u32,
        }
        let msg = Codec::MsgPack.encode(&Wrong { channel: 7 }).unwrap();
        let error = Codec::MsgPack.decode::<Say>(&msg).unwrap_err();
        assert_eq!(error.kind(), DecodeErrorKind::Data);
        assert_eq!(error.path(), Some("channel"));
        assert_eq!(
            error.to_string(),
            "msgpack: channel: invalid type: integer `7`, expected a string"
        );
    }

    #[test]
    fn msgpack_with_bytes_after_the_value_is_refused() {
        let mut bytes = encoded();
        bytes.extend_from_slice(b"\x01\x02");
        let error = Codec::MsgPack
            .decode::<Say>(&Message::binary(bytes))
            .unwrap_err();
        assert_eq!(error.kind(), DecodeErrorKind::TrailingBytes);
        assert_eq!(error.to_string(), "msgpack: 2 bytes after the value");
    }

    #[test]
    fn msgpack_reserved_byte_is_a_syntax_error() {
        let error = Codec::MsgPack
            .decode::<serde_json::Value>(&Message::binary(b"\xc1".to_vec()))
            .unwrap_err();
        assert_eq!(error.kind(), DecodeErrorKind::Syntax, "{error}");
    }

    #[test]
    fn msgpack_nested_deeply_is_an_error_not_a_stack_overflow() {
        let deep = vec![0x91u8; 100_000]; // arrays of one, nested
        let error = Codec::MsgPack
            .decode::<serde_json::Value>(&Message::binary(deep))
            .unwrap_err();
        assert_eq!(error.kind(), DecodeErrorKind::Syntax, "{error}");
    }

    #[test]
    fn the_wrong_subprotocol_is_the_wrong_kind_both_ways() {
        // A client that negotiated msgpack but sends JSON text, and the other way round.
        let json = Codec::Json.encode(&say()).unwrap();
        let error = Codec::MsgPack.decode::<Say>(&json).unwrap_err();
        assert_eq!(error.kind(), DecodeErrorKind::WrongKind);
        assert_eq!(error.close_code(), 1003);
        assert_eq!(
            error.to_string(),
            "msgpack: expected a binary message, got a text one"
        );
        let msgpack = Codec::MsgPack.encode(&say()).unwrap();
        let error = Codec::Json.decode::<Say>(&msgpack).unwrap_err();
        assert_eq!(error.kind(), DecodeErrorKind::WrongKind);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_bytes_decode_to_a_value_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let msg = Message::binary(bytes);
            let _ = Codec::MsgPack.decode::<Say>(&msg);
            let _ = Codec::MsgPack.decode::<serde_json::Value>(&msg);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_decodes_to_a_value_or_an_error(text in ".{0,64}") {
        let msg = Message::text(text);
        let _ = Codec::Json.decode::<Say>(&msg);
        if let Err(error) = Codec::Json.decode::<serde_json::Value>(&msg) {
            prop_assert!(error.close_reason().len() <= crate::MAX_CLOSE_REASON);
        }
    }
}
