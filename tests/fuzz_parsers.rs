//! Property tests of our own parsers, bounded (`PROPTEST_CASES`, 256 by default): the
//! handshake checks behind `WebSocketService`, the `Authorization` and query parsing of
//! the auth layer, and the example server's config file. Whatever the input, no panic,
//! and an answer a client can act on.

#[allow(dead_code)] // the tests use Config::parse and parse_duration
#[path = "../examples/server/config.rs"]
mod config;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use base64::Engine as _;
use estuary::middleware::auth::{AuthRequest, Authenticate, BasicUsers, BearerTokens, QueryToken};
use estuary::{handler_fn, Conn, Message, Shutdown, WebSocketService};
use http::{HeaderValue, Method, Request, StatusCode, Version};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tower::ServiceExt;

/// `PROPTEST_CASES` cases (256 unless set), and no regression files in the source tree.
fn cases() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs `future` on a runtime of its own (the upgrade spawns the connection task).
fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
    }
    RUNTIME.with(|runtime| runtime.block_on(future))
}

// ---------------------------------------------------------------------------------------
// The handshake

/// A header value: one of the words a handshake is made of, a token list mixing them in
/// any case, visible ASCII, or any bytes at all.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let word = prop_oneof![
        Just("websocket".to_owned()),
        Just("upgrade".to_owned()),
        Just("keep-alive".to_owned()),
        Just("13".to_owned()),
        "[a-zA-Z0-9-]{1,12}",
    ]
    .prop_flat_map(|word| {
        proptest::collection::vec(any::<bool>(), word.len()).prop_map(move |upper| {
            word.chars()
                .zip(upper)
                .map(|(c, up)| if up { c.to_ascii_uppercase() } else { c })
                .collect::<String>()
        })
    });
    prop_oneof![
        3 => proptest::collection::vec(word, 1..4).prop_map(|words| words.join(", ").into_bytes()),
        1 => "[ -~]{0,40}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

/// A `Sec-WebSocket-Key`: valid (16 bytes of base64), another length, not base64, or junk.
fn key() -> impl Strategy<Value = Vec<u8>> {
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    prop_oneof![
        3 => proptest::array::uniform16(any::<u8>()).prop_map(move |k| b64(k.to_vec()).into_bytes()),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(move |k| b64(k).into_bytes()),
        1 => header_value(),
    ]
}

#[derive(Debug, Clone)]
struct Handshake {
    method: Method,
    version: Version,
    upgrade: Vec<Vec<u8>>,
    connection: Vec<Vec<u8>>,
    ws_version: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
    protocols: Option<Vec<u8>>,
    draining: bool,
}

fn handshake() -> impl Strategy<Value = Handshake> {
    let method = prop_oneof![
        4 => Just(Method::GET),
        1 => Just(Method::POST),
        1 => Just(Method::HEAD),
        1 => Just(Method::from_bytes(b"PURGE").expect("a valid method")),
    ];
    let version = prop_oneof![
        4 => Just(Version::HTTP_11),
        1 => Just(Version::HTTP_10),
        1 => Just(Version::HTTP_2),
    ];
    let ws_version = prop_oneof![
        3 => Just(b"13".to_vec()),
        1 => header_value(),
    ];
    (
        method,
        version,
        proptest::collection::vec(header_value(), 0..3),
        proptest::collection::vec(header_value(), 0..3),
        proptest::option::weighted(0.9, ws_version),
        proptest::option::weighted(0.9, key()),
        proptest::option::of(header_value()),
        proptest::bool::weighted(0.1),
    )
        .prop_map(
            |(method, version, upgrade, connection, ws_version, key, protocols, draining)| {
                Handshake {
                    method,
                    version,
                    upgrade,
                    connection,
                    ws_version,
                    key,
                    protocols,
                    draining,
                }
            },
        )
}

impl Handshake {
    /// The request; header values HTTP cannot carry (control bytes) are left out, as a
    /// server would never see them.
    fn request(&self) -> Request<()> {
        let mut request = Request::builder()
            .method(self.method.clone())
            .version(self.version)
            .uri("/ws")
            .body(())
            .expect("a valid request line");
        let headers = request.headers_mut();
        let mut add = |name: &'static str, value: &[u8]| {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(name, value);
            }
        };
        for value in &self.upgrade {
            add("upgrade", value);
        }
        for value in &self.connection {
            add("connection", value);
        }
        if let Some(value) = &self.ws_version {
            add("sec-websocket-version", value);
        }
        if let Some(value) = &self.key {
            add("sec-websocket-key", value);
        }
        if let Some(value) = &self.protocols {
            add("sec-websocket-protocol", value);
        }
        // What hyper puts on every request it serves with upgrades enabled.
        let on_upgrade = hyper::upgrade::on(&mut request);
        request.extensions_mut().insert(on_upgrade);
        request
    }

    /// RFC 6455 4.2.1, read again: the status a server must answer `request` with.
    fn expected_status(request: &Request<()>, draining: bool) -> StatusCode {
        let has_token = |name: &str, token: &str| {
            request.headers().get_all(name).iter().any(|value| {
                value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            })
        };
        if request.method() != Method::GET || request.version() != Version::HTTP_11 {
            return StatusCode::BAD_REQUEST;
        }
        if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
            return StatusCode::UPGRADE_REQUIRED;
        }
        let version = request.headers().get("sec-websocket-version");
        if version.map(HeaderValue::as_bytes) != Some(b"13") {
            return StatusCode::UPGRADE_REQUIRED;
        }
        let key = request.headers().get("sec-websocket-key").and_then(|key| {
            base64::engine::general_purpose::STANDARD
                .decode(key.as_bytes())
                .ok()
        });
        if key.is_none_or(|key| key.len() != 16) {
            return StatusCode::BAD_REQUEST;
        }
        if draining {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
        StatusCode::SWITCHING_PROTOCOLS
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_handshake_gets_101_400_426_or_503_as_the_rfc_says_and_never_a_panic(
        handshake in handshake()
    ) {
        let request = handshake.request();
        let expected = Handshake::expected_status(&request, handshake.draining);
        let key = request.headers().get("sec-websocket-key").cloned();
        let shutdown = Shutdown::new();
        if handshake.draining {
            shutdown.begin();
        }
        let service = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
            let _ = conn.send(msg);
        }))
        .with_shutdown(shutdown);
        let response = block_on(service.oneshot(request)).expect("the service is infallible");
        prop_assert_eq!(response.status(), expected, "{:?}", response);
        if expected == StatusCode::SWITCHING_PROTOCOLS {
            let accept = derive_accept_key(key.expect("checked").as_bytes());
            prop_assert_eq!(
                response.headers().get("sec-websocket-accept").map(|v| v.as_bytes()),
                Some(accept.as_bytes())
            );
        } else {
            let body = block_on(http_body_util::BodyExt::collect(response.into_body()))
                .expect("a full body")
                .to_bytes();
            prop_assert!(body.len() > 1, "a refusal says why");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Authorization and the query

/// An `Authorization` value: Basic with any credentials (well-formed or not), Bearer with
/// any token, another scheme, or any bytes.
fn authorization() -> impl Strategy<Value = Vec<u8>> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let scheme = prop_oneof![
        Just("Basic"),
        Just("basic"),
        Just("BASIC"),
        Just("Bearer"),
        Just("bearer"),
        Just("Digest"),
        Just(""),
    ];
    prop_oneof![
        (scheme.clone(), any::<String>(), any::<String>()).prop_map(move |(s, user, pass)| {
            format!("{s} {}", b64(format!("{user}:{pass}").as_bytes())).into_bytes()
        }),
        (
            scheme.clone(),
            proptest::collection::vec(any::<u8>(), 0..30)
        )
            .prop_map(move |(s, raw)| format!("{s} {}", b64(&raw)).into_bytes()),
        (scheme.clone(), "[ -~]{0,40}").prop_map(|(s, token)| format!("{s} {token}").into_bytes()),
        // A token with the blanks around it a client might get wrong.
        (
            scheme,
            prop_oneof![Just(" "), Just("  "), Just("\t"), Just(" \t"), Just("")],
            "[!-~]{0,20}",
            prop_oneof![Just(""), Just(" "), Just("\t"), Just(" x")],
        )
            .prop_map(|(s, gap, token, end)| format!("{s}{gap}{token}{end}").into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..60),
    ]
}

/// The credentials after `scheme` and one space (RFC 7235: the scheme is
/// case-insensitive), with further leading blanks skipped: read off the value by hand, not
/// by the parser under test.
fn after_scheme<'a>(value: &'a [u8], scheme: &str) -> Option<&'a [u8]> {
    let head = value.get(..scheme.len())?;
    let rest = value.get(scheme.len()..)?.strip_prefix(b" ")?;
    let start = rest
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(rest.len());
    head.eq_ignore_ascii_case(scheme.as_bytes())
        .then_some(&rest[start..])
}

/// The user and password `value` holds as Basic credentials (RFC 7617): base64 of
/// UTF-8 "user:password", split at the first colon.
fn basic_credentials(value: &[u8]) -> Option<(String, String)> {
    let encoded = after_scheme(value, "basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The token `value` holds as a Bearer token, as `AuthRequest::bearer` documents it: not
/// empty, and visible ASCII without spaces (the whole value visible ASCII).
fn bearer_token(value: &[u8]) -> Option<String> {
    let visible = value.iter().all(|&b| matches!(b, b' '..=b'~' | b'\t'));
    let token = after_scheme(value, "bearer").filter(|_| visible)?;
    let clean = !token.is_empty() && !token.iter().any(|b| matches!(b, b' ' | b'\t'));
    clean.then(|| String::from_utf8(token.to_vec()).expect("visible ASCII"))
}

fn with_authorization(value: &[u8], query: Option<&str>) -> Option<Request<()>> {
    let uri = match query {
        Some(query) => format!("/ws?{query}"),
        None => "/ws".to_owned(),
    };
    let mut request = Request::get(uri.as_str()).body(()).ok()?;
    let value = HeaderValue::from_bytes(value).ok()?;
    request.headers_mut().insert("authorization", value);
    Some(request)
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_authorization_parses_to_credentials_it_really_holds_or_to_none(
        value in authorization()
    ) {
        let Some(request) = with_authorization(&value, None) else {
            return Ok(()); // not a header value HTTP can carry
        };
        let auth = AuthRequest::new(&request);
        let basic = auth
            .basic()
            .map(|basic| (basic.username().to_owned(), basic.password().to_owned()));
        let text = String::from_utf8_lossy(&value);
        prop_assert_eq!(basic, basic_credentials(&value), "{}", text);
        let bearer = auth.bearer().map(|bearer| bearer.token().to_owned());
        prop_assert_eq!(bearer, bearer_token(&value), "{}", text);
    }

    #[test]
    fn well_formed_basic_credentials_are_read_back_exactly(
        user in "[^:\\x00-\\x1f\\x7f]{0,20}",
        password in "[^\\x00-\\x1f\\x7f]{0,20}",
    ) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let request = with_authorization(format!("Basic {encoded}").as_bytes(), None)
            .expect("base64 is a header value");
        let auth = AuthRequest::new(&request);
        let basic = auth.basic().expect("well-formed credentials");
        prop_assert_eq!((basic.username(), basic.password()), (user.as_str(), password.as_str()));
    }

    #[test]
    fn query_parameters_are_read_back_decoded_and_the_first_one_wins(
        pairs in proptest::collection::vec((any::<String>(), any::<String>()), 0..6)
    ) {
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        let request = Request::get(format!("/ws?{query}")).body(()).expect("an encoded query");
        let auth = AuthRequest::new(&request);
        let read: Vec<(String, String)> = auth
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        prop_assert_eq!(&read, &pairs);
        for (name, _) in &pairs {
            let first = pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
            let value = auth.query(name);
            prop_assert_eq!(value.as_deref(), first);
        }
    }

    #[test]
    fn any_credentials_get_the_user_they_name_or_401_403_never_a_panic(
        offered in offered()
    ) {
        let Some(request) = with_authorization(&offered.authorization, Some(&offered.query)) else {
            return Ok(()); // not a request HTTP can carry (only junk is not)
        };
        let users = BasicUsers::new("fuzz").with_user("alice", "wonder:land");
        let tokens = BearerTokens::new("fuzz").with_token("s3cret", "bob");
        let query_tokens = QueryToken::new("fuzz").with_param("t").with_token("q3cret", "carol");
        let auth = AuthRequest::new(&request);
        let verdicts = [
            (block_on(users.authenticate(&auth)), offered.basic),
            (
                block_on(tokens.clone().or(query_tokens).authenticate(&auth)),
                offered.bearer.or(offered.query_user),
            ),
        ];
        for (verdict, expected) in verdicts {
            match verdict {
                Ok(identity) => prop_assert_eq!(Some(identity.user_id()), expected),
                Err(error) => {
                    prop_assert_eq!(expected, None, "refused: {:?}", error);
                    prop_assert!(
                        matches!(error.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                        "{:?}", error.status()
                    );
                    if error.status() == StatusCode::UNAUTHORIZED {
                        prop_assert!(error.headers().contains_key("www-authenticate"));
                    }
                }
            }
        }
    }
}

/// Credentials a client offers, and whom they name, known from how they were made (not
/// from the parser under test): alice's password (Basic), bob's token (Bearer), carol's
/// query token (`t=`), in the spellings the RFCs allow, near misses of each, and
/// anything at all.
#[derive(Debug, Clone)]
struct Offered {
    authorization: Vec<u8>,
    query: String,
    basic: Option<&'static str>,
    bearer: Option<&'static str>,
    query_user: Option<&'static str>,
}

fn offered() -> impl Strategy<Value = Offered> {
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let basic_scheme = prop_oneof![Just("Basic"), Just("basic"), Just("BASIC")];
    let bearer_scheme = prop_oneof![Just("Bearer"), Just("bearer"), Just("BEARER")];
    let gap = prop_oneof![Just(" "), Just("   ")];
    // (Authorization, Basic user, Bearer user)
    let header = prop_oneof![
        2 => (basic_scheme.clone(), gap.clone()).prop_map(move |(s, gap)| {
            (format!("{s}{gap}{}", b64("alice:wonder:land")), Some("alice"), None)
        }),
        1 => (
            basic_scheme,
            prop_oneof![
                Just("alice:wonderland"),
                Just("Alice:wonder:land"),
                Just("alice:wonder:land "),
                Just("alice:wonder:lan"),
                Just("alice"),
            ]
        )
            .prop_map(move |(s, wrong)| (format!("{s} {}", b64(wrong)), None, None)),
        2 => (bearer_scheme.clone(), gap)
            .prop_map(|(s, gap)| (format!("{s}{gap}s3cret"), None, Some("bob"))),
        1 => (
            bearer_scheme,
            prop_oneof![Just("s3cret2"), Just("S3CRET"), Just("s3cre"), Just("s3cret x"), Just("s3cret ")]
        )
            .prop_map(|(s, wrong)| (format!("{s} {wrong}"), None, None)),
        1 => Just(("Basic s3cret".to_owned(), None, None)),
        1 => Just((String::new(), None, None)),
        // Random credentials name no one (the odds of hitting a valid one are nil).
        2 => authorization().prop_map(|value| (String::from_utf8_lossy(&value).into_owned(), None, None)),
    ];
    let query = prop_oneof![
        1 => Just(("t=q3cret".to_owned(), Some("carol"))),
        1 => Just(("room=1&t=q3cret".to_owned(), Some("carol"))),
        1 => Just(("t=q3cret&t=other".to_owned(), Some("carol"))),
        1 => Just(("t=q%33cret".to_owned(), Some("carol"))),
        1 => prop_oneof![
            Just("t=other&t=q3cret"),
            Just("t=q3cre"),
            Just("T=q3cret"),
            Just("t=q3cret%20"),
            Just("tt=q3cret"),
        ]
        .prop_map(|wrong| (wrong.to_owned(), None)),
        4 => "[ -~]{0,60}"
            .prop_filter("junk names no one", |junk| !junk.contains("q3cret"))
            .prop_map(|junk| (junk, None)),
    ];
    (header, query).prop_map(
        |((authorization, basic, bearer), (query, query_user))| Offered {
            authorization: authorization.into_bytes(),
            query,
            basic,
            bearer,
            query_user,
        },
    )
}

// ---------------------------------------------------------------------------------------
// The example server's config

/// A value as it might appear in a config file, right or wrong.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            0u64..100_000,
            prop_oneof![
                Just("ms"),
                Just("s"),
                Just("m"),
                Just("h"),
                Just("d"),
                Just("x"),
                Just("")
            ]
        )
            .prop_map(|(n, unit)| format!("\"{n}{unit}\"")),
        Just("\"infinity\"".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "\"[ -!#-\\[\\]-~]{0,20}\"",
        "\"/[a-z/?# ]{0,10}\"",
        Just("[]".to_owned()),
        Just("[\"http://localhost:3000\", \"ftp://x\", \"*\"]".to_owned()),
        Just("{ alice = \"wonderland\", \"b:ob\" = \"x\" }".to_owned()),
        Just("{ \"\" = \"nobody\" }".to_owned()),
        "[ -~]{0,12}",
    ]
}

fn toml_line() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("bind"),
        Just("echo_path"),
        Just("chat_path"),
        Just("health_path"),
        Just("metrics_path"),
        Just("reuse_port"),
        Just("max_connections"),
        Just("max_connections_per_ip"),
        Just("max_pending_handshakes_per_ip"),
        Just("ipv6_prefix"),
        Just("max_connection_age"),
        Just("max_connection_age_jitter"),
        Just("idle_timeout"),
        Just("max_message_size"),
        Just("show_debug_logs"),
        Just("allowed_origins"),
        Just("shutdown_timeout"),
        Just("header_read_timeout"),
        Just("http2"),
        Just("h2c"),
        Just("capacity"),
        Just("duration"),
        Just("per_second"),
        Just("burst"),
        Just("mode"),
        Just("realm"),
        Just("users"),
        Just("tokens"),
        Just("query_param"),
        Just("url"),
        Just("cert"),
        Just("key"),
        Just("idle_timout"),
    ];
    let table = prop_oneof![
        Just("[auth]"),
        Just("[rate_limit]"),
        Just("[transmission_limit]"),
        Just("[redis]"),
        Just("[tls]"),
        Just("[nonsense]"),
        Just("[[auth]]"),
    ];
    prop_oneof![
        6 => (key, toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => table.prop_map(str::to_owned),
        1 => "[ -~]{0,30}",
        1 => Just("# a comment".to_owned()),
    ]
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_config_text_loads_or_fails_with_a_message_starting_config(
        lines in proptest::collection::vec(toml_line(), 0..12)
    ) {
        let text = lines.join("\n");
        if let Err(error) = config::Config::parse(&text) {
            let message = error.to_string();
            prop_assert!(message.starts_with("config: "), "{message}");
            prop_assert!(!message.contains('\n'), "one line: {message}");
        }
    }

    #[test]
    fn durations_read_back_exactly_and_anything_else_is_refused(
        n in 0u64..5_000_000_000,
        unit in prop_oneof![Just("ms"), Just("s"), Just("m"), Just("h"), Just("d"), Just("us"), Just("")],
        junk in duration_junk(),
    ) {
        let scale: HashMap<&str, Duration> = [
            ("ms", Duration::from_millis(1)),
            ("s", Duration::from_secs(1)),
            ("m", Duration::from_secs(60)),
            ("h", Duration::from_secs(3600)),
            ("d", Duration::from_secs(86_400)),
        ]
        .into();
        let expected = scale
            .get(unit)
            .and_then(|scale| scale.checked_mul(u32::try_from(n).ok()?));
        prop_assert_eq!(config::parse_duration(&format!("{n}{unit}")), expected);
        prop_assert_eq!(config::parse_duration(&junk), None, "{:?}", junk);

        let text = format!("idle_timeout = \"{n}{unit}\"");
        match (config::Config::parse(&text), expected) {
            (Ok(config), Some(duration)) => prop_assert_eq!(config.idle_timeout, Some(duration)),
            (Err(error), Some(Duration::ZERO)) => {
                prop_assert!(error.to_string().starts_with("config: idle_timeout: "), "{error}")
            }
            (Err(error), None) => prop_assert!(
                error.to_string().starts_with("config: idle_timeout: invalid duration"),
                "{error}"
            ),
            (result, expected) => prop_assert!(false, "{text}: {result:?}, expected {expected:?}"),
        }
    }
}

/// Text that is not a duration: a good one spoiled (blanks, a sign, a fraction, a unit in
/// capitals, doubled or unknown, no number, no unit, too large), or anything without a
/// digit (a duration starts with one).
fn duration_junk() -> impl Strategy<Value = String> {
    let unit = prop_oneof![Just("ms"), Just("s"), Just("m"), Just("h"), Just("d")];
    let spoiled = (0u32..100_000, unit, 0..10u8).prop_map(|(n, unit, how)| match how {
        0 => format!(" {n}{unit}"),
        1 => format!("{n}{unit} "),
        2 => format!("{n} {unit}"),
        3 => format!("-{n}{unit}"),
        4 => format!("+{n}{unit}"),
        5 => format!("{n}.5{unit}"),
        6 => format!("{n}{}", unit.to_uppercase()),
        7 => format!("{n}{unit}{unit}"),
        8 => format!("{n}{unit}x"),
        _ => unit.to_owned(),
    });
    prop_oneof![
        3 => spoiled,
        1 => (0u64..1_000_000).prop_map(|n| n.to_string()),
        1 => Just(format!("{}d", u64::from(u32::MAX) + 1)),
        1 => Just("5us".to_owned()),
        1 => Just("infinity".to_owned()),
        2 => "[ -/:-~]{0,12}",
    ]
}
