//! Negotiating permessage-deflate in `Sec-WebSocket-Extensions` (RFC 7692 5 and 7.1),
//! for a server answering offers and for a client making one and checking the answer.

use std::fmt;

use super::{DeflateConfig, DeflateMode, Direction, Negotiated};

/// The extension's registered name.
const NAME: &str = "permessage-deflate";

/// A `Sec-WebSocket-Extensions` header that does not follow the RFC 6455 9.1 grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MalformedExtensions(pub(crate) String);

impl fmt::Display for MalformedExtensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed Sec-WebSocket-Extensions header: {}", self.0)
    }
}

/// One extension of a header: its name and its parameters, values unquoted.
#[derive(Debug, PartialEq, Eq)]
struct Extension<'a> {
    name: &'a str,
    params: Vec<(&'a str, Option<String>)>,
}

/// Parses every `Sec-WebSocket-Extensions` value, in order, into extensions.
fn parse<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Extension<'a>>, MalformedExtensions> {
    let mut extensions = Vec::new();
    for value in values {
        for item in split_outside_quotes(value, ',') {
            let item = item.trim();
            if item.is_empty() {
                // `1#` lists allow empty elements (RFC 7230 7).
                continue;
            }
            let mut parts = split_outside_quotes(item, ';').into_iter();
            let name = parts.next().unwrap_or_default().trim();
            if !is_token(name) {
                return Err(MalformedExtensions(format!(
                    "{name:?} is not an extension name"
                )));
            }
            let mut params = Vec::new();
            for param in parts {
                let param = param.trim();
                let (key, value) = match param.split_once('=') {
                    Some((key, value)) => (key.trim(), Some(unquote(value.trim())?)),
                    None => (param, None),
                };
                if !is_token(key) {
                    return Err(MalformedExtensions(format!(
                        "{param:?} is not an extension parameter"
                    )));
                }
                params.push((key, value));
            }
            extensions.push(Extension { name, params });
        }
    }
    Ok(extensions)
}

/// `text` split at `separator`, except inside quoted strings.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A parameter value: a token, or a quoted string whose contents become the value.
fn unquote(value: &str) -> Result<String, MalformedExtensions> {
    if let Some(inner) = value.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| MalformedExtensions(format!("unterminated quoted string {value:?}")))?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            out.push(if c == '\\' {
                chars.next().unwrap_or('\\')
            } else {
                c
            });
        }
        return Ok(out);
    }
    if is_token(value) {
        Ok(value.to_owned())
    } else {
        Err(MalformedExtensions(format!(
            "{value:?} is not a parameter value"
        )))
    }
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The parameters of one permessage-deflate offer or response, checked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value (allowed in an offer only).
    client_max_window_bits: Option<Option<u8>>,
}

impl Params {
    /// The parameters, or why they are not valid ones: unknown, repeated, a value where
    /// none belongs or none where one does, a window outside 8 to 15.
    fn read(params: &[(&str, Option<String>)], in_offer: bool) -> Result<Params, String> {
        let mut read = Params::default();
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in params {
            let key_lower = key.to_ascii_lowercase();
            if seen.iter().any(|s| s.eq_ignore_ascii_case(key)) {
                return Err(format!("{key} appears twice"));
            }
            seen.push(key);
            match (key_lower.as_str(), value) {
                ("server_no_context_takeover", None) => read.server_no_context_takeover = true,
                ("client_no_context_takeover", None) => read.client_no_context_takeover = true,
                ("server_max_window_bits", Some(value)) => {
                    read.server_max_window_bits = Some(window_bits(key, value)?)
                }
                ("client_max_window_bits", Some(value)) => {
                    read.client_max_window_bits = Some(Some(window_bits(key, value)?))
                }
                ("client_max_window_bits", None) if in_offer => {
                    read.client_max_window_bits = Some(None)
                }
                ("server_no_context_takeover" | "client_no_context_takeover", Some(value)) => {
                    return Err(format!("{key} takes no value, got {value:?}"))
                }
                ("server_max_window_bits" | "client_max_window_bits", None) => {
                    return Err(format!("{key} needs a value"))
                }
                _ => return Err(format!("unknown parameter {key}")),
            }
        }
        Ok(read)
    }
}

/// A window size parameter: a number from 8 to 15, digits only (no sign, no leading
/// zero).
fn window_bits(key: &str, value: &str) -> Result<u8, String> {
    let valid = !value.starts_with('0') && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u8>() {
        Ok(bits @ 8..=15) if valid => Ok(bits),
        _ => Err(format!("{key}={value:?} is not a window size from 8 to 15")),
    }
}

/// The server's side: picks the first permessage-deflate offer, in the client's order of
/// preference, that it can accept, and answers it. Offers it cannot accept (an unknown,
/// repeated or out-of-range parameter) are declined, as RFC 7692 5 asks; `Ok(None)` when
/// none is left. Only a header that does not parse at all is an error (400).
pub(crate) fn accept<'a>(
    config: &DeflateConfig,
    offers: impl IntoIterator<Item = &'a str>,
) -> Result<Option<Negotiated>, MalformedExtensions> {
    for extension in parse(offers)? {
        if !extension.name.eq_ignore_ascii_case(NAME) {
            continue;
        }
        let Ok(offer) = Params::read(&extension.params, true) else {
            continue;
        };
        return Ok(Some(answer(config, offer)));
    }
    Ok(None)
}

/// The answer to an acceptable offer, and what it agrees on.
fn answer(config: &DeflateConfig, offer: Params) -> Negotiated {
    let shared = config.mode == DeflateMode::Shared;
    let mut header = String::from(NAME);
    // What the server sends: without context when asked or when it keeps none; within
    // the window the client allows, which the answer states when it was asked or is
    // smaller than the default.
    let server_no_context = offer.server_no_context_takeover || shared;
    if server_no_context {
        header.push_str("; server_no_context_takeover");
    }
    let server_bits = offer
        .server_max_window_bits
        .map_or(config.window_bits, |allowed| {
            allowed.min(config.window_bits)
        });
    if offer.server_max_window_bits.is_some() || server_bits < 15 {
        header.push_str(&format!("; server_max_window_bits={server_bits}"));
    }
    // What the client sends: without context when the server keeps none (it inflates
    // each message with a fresh inflater) or when the client said it would anyway;
    // within a smaller window only if the client said it can be told one.
    let client_no_context = shared || offer.client_no_context_takeover;
    if client_no_context {
        header.push_str("; client_no_context_takeover");
    }
    let client_bits = match offer.client_max_window_bits {
        Some(limit) => {
            let bits = limit.unwrap_or(15).min(config.window_bits);
            if bits < 15 || limit.is_some() {
                header.push_str(&format!("; client_max_window_bits={bits}"));
            }
            bits
        }
        None => 15,
    };
    Negotiated {
        outgoing: Direction {
            no_context_takeover: server_no_context,
            window_bits: server_bits,
        },
        incoming: Direction {
            no_context_takeover: client_no_context,
            window_bits: client_bits,
        },
        threshold: config.threshold,
        level: config.level,
        header,
    }
}

/// The client's offer for `config`.
///
/// It always says the server may limit the client's window (`client_max_window_bits`);
/// in [`DeflateMode::Shared`] it asks for no context takeover either way, so that
/// neither side keeps a window between messages; below 15 window bits it asks the
/// server for that window too.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) fn offer(config: &DeflateConfig) -> String {
    let mut offer = String::from(NAME);
    if config.mode == DeflateMode::Shared {
        offer.push_str("; server_no_context_takeover; client_no_context_takeover");
    }
    if config.window_bits < 15 {
        offer.push_str(&format!("; server_max_window_bits={}", config.window_bits));
    }
    offer.push_str("; client_max_window_bits");
    offer
}

/// The client's side: checks the server's answer to [`offer`]. `Ok(None)`: the server
/// declined (no extension in its answer). An error says what the server answered that
/// the client did not offer, and fails the connection (RFC 6455 4.1, RFC 7692 5).
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) fn confirm<'a>(
    config: &DeflateConfig,
    answers: impl IntoIterator<Item = &'a str>,
) -> Result<Option<Negotiated>, String> {
    let extensions = parse(answers).map_err(|e| e.to_string())?;
    let mut extensions = extensions.into_iter();
    let Some(extension) = extensions.next() else {
        return Ok(None);
    };
    if !extension.name.eq_ignore_ascii_case(NAME) {
        return Err(format!(
            "the server accepted extension {:?}, which the client did not offer",
            extension.name
        ));
    }
    if let Some(more) = extensions.next() {
        return Err(format!(
            "the server accepted {:?} besides {NAME}; the client offered one extension",
            more.name
        ));
    }
    let answer = Params::read(&extension.params, false)
        .map_err(|why| format!("the server's {NAME} answer is invalid: {why}"))?;
    let shared = config.mode == DeflateMode::Shared;
    if shared && !answer.server_no_context_takeover {
        return Err(format!(
            "the server's {NAME} answer lacks server_no_context_takeover, which the client asked for"
        ));
    }
    let asked = (config.window_bits < 15).then_some(config.window_bits);
    let server_bits = match (answer.server_max_window_bits, asked) {
        (Some(bits), Some(asked)) if bits > asked => {
            return Err(format!(
                "the server chose server_max_window_bits={bits}, over the {asked} the client asked for"
            ))
        }
        (None, Some(asked)) => {
            return Err(format!(
                "the server's {NAME} answer lacks server_max_window_bits, which the client set to {asked}"
            ))
        }
        (Some(bits), _) => bits,
        (None, None) => 15,
    };
    let client_bits = answer
        .client_max_window_bits
        .flatten()
        .map_or(config.window_bits, |bits| bits.min(config.window_bits));
    Ok(Some(Negotiated {
        outgoing: Direction {
            // A sender may always start each message afresh; in shared mode it does.
            no_context_takeover: answer.client_no_context_takeover || shared,
            window_bits: client_bits,
        },
        incoming: Direction {
            no_context_takeover: answer.server_no_context_takeover,
            window_bits: server_bits,
        },
        threshold: config.threshold,
        level: config.level,
        header: offer(config),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> DeflateConfig {
        DeflateConfig::default()
    }

    fn per_connection() -> DeflateConfig {
        DeflateConfig::default().with_mode(DeflateMode::PerConnection)
    }

    fn answer_to(config: &DeflateConfig, offer: &str) -> Option<Negotiated> {
        accept(config, [offer]).expect("the offer parses")
    }

    #[test]
    fn the_plain_offer_is_answered_without_context_in_shared_mode() {
        let agreed = answer_to(&shared(), "permessage-deflate").unwrap();
        assert_eq!(
            agreed.header,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(agreed.outgoing.no_context_takeover && agreed.incoming.no_context_takeover);
        assert_eq!(
            (agreed.outgoing.window_bits, agreed.incoming.window_bits),
            (15, 15)
        );
    }

    #[test]
    fn a_browser_offer_is_accepted_as_browsers_send_it() {
        // What Chromium and Firefox send.
        let agreed = answer_to(
            &per_connection(),
            "permessage-deflate; client_max_window_bits",
        )
        .unwrap();
        assert_eq!(agreed.header, "permessage-deflate");
        assert!(!agreed.outgoing.no_context_takeover);
        assert!(!agreed.incoming.no_context_takeover);
    }

    #[test]
    fn requested_windows_and_takeovers_are_honoured() {
        let agreed = answer_to(
            &per_connection(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; \
             client_max_window_bits=10",
        )
        .unwrap();
        assert_eq!(
            agreed.header,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=9; \
             client_max_window_bits=10"
        );
        assert_eq!(
            agreed.outgoing,
            Direction {
                no_context_takeover: true,
                window_bits: 9
            }
        );
        assert_eq!(
            agreed.incoming,
            Direction {
                no_context_takeover: false,
                window_bits: 10
            }
        );
        // A smaller configured window is stated even when not asked for, and limits the
        // client only when it said it can be limited.
        let small = per_connection().with_window_bits(11);
        let agreed = answer_to(&small, "permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(
            agreed.header,
            "permessage-deflate; server_max_window_bits=11; client_max_window_bits=11"
        );
        let agreed = answer_to(&small, "permessage-deflate").unwrap();
        assert_eq!(
            agreed.header,
            "permessage-deflate; server_max_window_bits=11"
        );
        assert_eq!(agreed.incoming.window_bits, 15);
    }

    #[test]
    fn offers_go_in_preference_order_and_bad_ones_are_declined() {
        let offers = [
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; mystery=1, permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits=12",
        ];
        let agreed = accept(&per_connection(), offers).unwrap().unwrap();
        assert_eq!(
            agreed.header,
            "permessage-deflate; client_max_window_bits=12"
        );
        for declined in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=yes",
            "permessage-deflate; unknown",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=9",
            "other-extension",
        ] {
            assert_eq!(answer_to(&shared(), declined), None, "{declined}");
        }
    }

    #[test]
    fn quoted_values_count_as_their_contents() {
        let agreed = answer_to(
            &per_connection(),
            r#"permessage-deflate; client_max_window_bits="10""#,
        )
        .unwrap();
        assert_eq!(agreed.incoming.window_bits, 10);
    }

    #[test]
    fn a_header_that_does_not_parse_is_an_error() {
        for bad in [
            "permessage-deflate; =1",
            "; permessage-deflate",
            r#"permessage-deflate; a="1"#,
            "perm essage",
        ] {
            assert!(accept(&shared(), [bad]).is_err(), "{bad}");
        }
        assert_eq!(accept(&shared(), ["", " , "]).unwrap(), None);
    }

    #[test]
    fn the_client_offer_agrees_with_its_own_server() {
        for config in [
            shared(),
            per_connection(),
            per_connection().with_window_bits(9),
        ] {
            let offered = offer(&config);
            let server = answer_to(&config, &offered).expect("our server accepts our offer");
            let client = confirm(&config, [server.header.as_str()]).unwrap().unwrap();
            assert_eq!(client.outgoing, server.incoming, "{offered}");
            assert_eq!(client.incoming, server.outgoing, "{offered}");
        }
    }

    #[test]
    fn the_client_refuses_answers_it_did_not_ask_for() {
        let shared = shared();
        for (answer, says) in [
            ("x-custom", "did not offer"),
            ("permessage-deflate, x-custom", "besides"),
            (
                "permessage-deflate; server_no_context_takeover; client_max_window_bits",
                "needs a value",
            ),
            (
                "permessage-deflate; server_no_context_takeover; mystery",
                "unknown parameter",
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                "lacks server_no_context_takeover",
            ),
        ] {
            let error = confirm(&shared, [answer]).unwrap_err();
            assert!(error.contains(says), "{answer}: {error}");
        }
        let small = per_connection().with_window_bits(10);
        let error = confirm(&small, ["permessage-deflate; server_max_window_bits=12"]).unwrap_err();
        assert!(error.contains("over the 10"), "{error}");
        let error = confirm(&small, ["permessage-deflate"]).unwrap_err();
        assert!(error.contains("lacks server_max_window_bits"), "{error}");
        assert_eq!(
            confirm(&shared, []).unwrap(),
            None,
            "a declined offer is no error"
        );
    }
}
