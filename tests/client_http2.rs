//! The client over HTTP/2 (RFC 8441) against the library's server: several clients on
//! one shared connection, h2c and wss:// chosen by ALPN, a server that does not offer it,
//! the connection cap counting each stream as a socket, and graceful shutdown.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::client::{next, next_message, recorder, Seen};
use common::example::ExampleServer;
use common::pki::make_pki;
use common::sessions::SessionEcho;
use common::{serve_with, within, TestServer};
use estuary::client::{Client, ClientConfig, ConnectError, Http2Connection};
use estuary::middleware::conn_limit::ConnectionLimitLayer;
use estuary::{CloseReason, Message, Server, ServerBuilder, WebSocketService};
use tokio::sync::mpsc::UnboundedReceiver;
use tower::Layer;

fn h2c() -> ServerBuilder {
    Server::builder()
        .h2c(true)
        .websockets_over_http2(true)
        .drain_timeout(Duration::from_secs(5))
}

/// A recording client connecting to `url` over `shared`, with `headers`: the client, or
/// why it could not connect.
async fn try_open(
    shared: &Http2Connection,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, UnboundedReceiver<Seen>), ConnectError> {
    let (handler, rx) = recorder(false);
    let mut builder = Client::builder(url)
        .http2(shared)
        .config(ClientConfig::default().with_connect_timeout(Duration::from_secs(5)));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let client = within("connect over HTTP/2", builder.connect(handler)).await?;
    Ok((client, rx))
}

/// Like [`try_open`], for a client that must connect; its `on_open` has been seen.
async fn open(
    shared: &Http2Connection,
    url: &str,
    headers: &[(&str, &str)],
) -> (Client, UnboundedReceiver<Seen>) {
    let (client, mut rx) = try_open(shared, url, headers)
        .await
        .unwrap_or_else(|e| panic!("connect to {url} over HTTP/2: {e}"));
    assert!(matches!(next(&mut rx).await, Seen::Connected(_)));
    (client, rx)
}

/// The status a refused connect got.
fn refused_with(error: ConnectError) -> http::StatusCode {
    match error {
        ConnectError::Rejected { status, .. } => status,
        other => panic!("expected a refusal with a status, got {other}"),
    }
}

/// Closes `client` with 1000 and waits for it to stop.
async fn close(client: Client) {
    client.close(1000, "").unwrap();
    within("the client stops", client.closed()).await;
}

/// Sends `text` and checks it comes back.
async fn echoes(client: &Client, rx: &mut UnboundedReceiver<Seen>, text: &str) {
    client.send(text.to_owned()).unwrap();
    assert_eq!(next_message(rx).await.as_text(), Some(text));
}

#[tokio::test]
async fn several_clients_share_one_h2c_connection() {
    let echo = SessionEcho::default();
    let server = serve_with(h2c(), WebSocketService::new(echo.clone())).await;
    let shared = Http2Connection::new();
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(open(&shared, &server.url(&format!("/echo/{i}")), &[]).await);
    }
    assert!(shared.is_connected().await);
    for (i, (client, rx)) in clients.iter_mut().enumerate() {
        let big = Message::binary(vec![i as u8; 300_000]);
        echoes(client, rx, &format!("hello {i}")).await;
        client.send(big.clone()).unwrap();
        assert_eq!(next_message(rx).await, big);
    }
    for (client, mut rx) in clients {
        client.close(1000, "bye").unwrap();
        match next(&mut rx).await {
            Seen::Terminated(reason) => assert_eq!(reason, "connection closed: bye (1000)"),
            other => panic!("expected the close, got {other:?}"),
        }
        within("client stops", client.closed()).await;
    }
    within("every session ends", async {
        while server.shutdown.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The server saw each close frame: the close handshake ran over the streams.
    let closes = echo.closed();
    assert_eq!(closes.len(), 5);
    for reason in closes {
        assert!(
            matches!(&reason, CloseReason::Remote { code: 1000, .. }),
            "{reason:?}"
        );
    }
    let opened = echo.opened();
    assert_eq!(opened.len(), 5);
    assert!(opened.iter().all(|(v, _)| *v == http::Version::HTTP_2));
    let addresses: HashSet<_> = opened.iter().map(|(_, addr)| *addr).collect();
    assert_eq!(addresses.len(), 1, "one TCP connection: {addresses:?}");
    server.stop().await;
}

#[tokio::test]
async fn wss_picks_http2_by_alpn_and_the_server_sees_it() {
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &pki.server_cert_pem).unwrap();
    std::fs::write(&key, &pki.server_key_pem).unwrap();
    let tls = estuary::tls_from_pem(&cert, &key).unwrap();
    let echo = SessionEcho::default();
    let builder = Server::builder()
        .tls(tls)
        .websockets_over_http2(true)
        .drain_timeout(Duration::from_secs(5));
    let server = serve_with(builder, WebSocketService::new(echo.clone())).await;
    let url = format!("wss://localhost:{}/echo", server.addr.port());

    let shared = Http2Connection::new();
    let mut opened = Vec::new();
    for _ in 0..2 {
        let (handler, mut rx) = recorder(false);
        let client = within(
            "wss over HTTP/2",
            Client::builder(&url)
                .add_root_certificate(pki.root.clone())
                .http2(&shared)
                .connect(handler),
        )
        .await
        .unwrap_or_else(|e| panic!("wss over HTTP/2: {e}"));
        next(&mut rx).await;
        echoes(&client, &mut rx, "over h2").await;
        opened.push((client, rx));
    }
    // The same server still speaks HTTP/1.1 to a client that does not share a connection.
    let (handler, mut rx) = recorder(false);
    let plain = within(
        "wss over HTTP/1.1",
        Client::builder(&url)
            .add_root_certificate(pki.root.clone())
            .connect(handler),
    )
    .await
    .unwrap();
    next(&mut rx).await;
    echoes(&plain, &mut rx, "over 1.1").await;

    let sessions = echo.opened();
    let versions: Vec<_> = sessions.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        [
            http::Version::HTTP_2,
            http::Version::HTTP_2,
            http::Version::HTTP_11
        ]
    );
    assert_eq!(
        sessions[0].1, sessions[1].1,
        "the two HTTP/2 sockets share a connection"
    );
    assert_ne!(sessions[0].1, sessions[2].1);
    server.stop().await;
}

#[tokio::test]
async fn a_server_that_does_not_offer_extended_connect_is_named_as_the_reason() {
    let builder = Server::builder().h2c(true);
    let server = serve_with(builder, WebSocketService::new(SessionEcho::default())).await;
    let error = try_open(&Http2Connection::new(), &server.url("/echo"), &[])
        .await
        .expect_err("no WebSockets over HTTP/2 without the setting");
    assert!(
        matches!(error, ConnectError::Http2NotOffered(_)),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("does not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL"),
        "{error}"
    );
    server.stop().await;
}

#[tokio::test]
async fn each_stream_counts_against_the_connection_cap_and_a_refused_one_leaves_the_rest() {
    let cap = ConnectionLimitLayer::new(2);
    let websocket = cap.layer(WebSocketService::new(SessionEcho::default()));
    let server = serve_with(h2c(), websocket).await;
    let url = server.url("/echo");
    let shared = Http2Connection::new();
    let mut open_now = vec![
        open(&shared, &url, &[]).await,
        open(&shared, &url, &[]).await,
    ];
    let third = try_open(&shared, &url, &[])
        .await
        .expect_err("over the cap");
    assert_eq!(refused_with(third), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(shared.is_connected().await, "the connection goes on");
    for (client, rx) in &mut open_now {
        echoes(client, rx, "still here").await;
    }
    // A stream that closes gives its place back.
    let (client, _rx) = open_now.pop().unwrap();
    close(client).await;
    within("the cap has a place again", async {
        while cap.live() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (again, mut rx) = open(&shared, &url, &[]).await;
    echoes(&again, &mut rx, "in").await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_http2_socket_with_1001_and_ends_the_connection() {
    let server: TestServer = serve_with(h2c(), WebSocketService::new(SessionEcho::default())).await;
    let shared = Http2Connection::new();
    let mut open_now = Vec::new();
    for _ in 0..3 {
        open_now.push(open(&shared, &server.url("/echo"), &[]).await);
    }
    let stopped = tokio::spawn(server.stop());
    for (client, mut rx) in open_now {
        match next(&mut rx).await {
            Seen::Disconnected { closed, .. } => {
                assert_eq!(closed.map(|c| c.code()), Some(1001), "going away")
            }
            other => panic!("expected the shutdown close, got {other:?}"),
        }
        within("client stops", client.closed()).await;
    }
    within("server stops", stopped).await.unwrap();
    within("the connection ends", async {
        while shared.is_connected().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_example_server_speaks_h2c_behind_its_config_key_with_auth_on_each_stream() {
    let server = ExampleServer::start(
        "h2c = true\n[auth]\nmode = \"bearer\"\ntokens = { \"s3cret\" = \"alice\" }\n",
        &["--bind", "127.0.0.1:0"],
    );
    let url = format!("ws://{}/echo", server.addr);
    let shared = Http2Connection::new();
    let (client, mut rx) = open(&shared, &url, &[("authorization", "Bearer s3cret")]).await;
    echoes(&client, &mut rx, "over h2c").await;
    let anonymous = try_open(&shared, &url, &[]).await.expect_err("no token");
    assert_eq!(refused_with(anonymous), http::StatusCode::UNAUTHORIZED);
    echoes(&client, &mut rx, "still open").await;
    close(client).await;
}

#[tokio::test]
async fn mounted_in_axum_the_stack_works_the_same_over_http2() {
    use estuary::middleware::auth::{AuthLayer, BearerTokens};
    let cap = ConnectionLimitLayer::new(1);
    let websocket = cap.layer(
        AuthLayer::new(BearerTokens::new("axum").with_token("t0ken", "alice"))
            .layer(WebSocketService::new(SessionEcho::default())),
    );
    // `route_service` takes every method, CONNECT included; axum::serve speaks h2c and
    // advertises extended CONNECT.
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "OK" }))
        .route_service("/ws", websocket);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("ws://{addr}/ws");
    let token = [("authorization", "Bearer t0ken")];
    let shared = Http2Connection::new();

    let anonymous = try_open(&shared, &url, &[]).await.expect_err("no token");
    assert_eq!(refused_with(anonymous), http::StatusCode::UNAUTHORIZED);
    let (client, mut rx) = open(&shared, &url, &token).await;
    echoes(&client, &mut rx, "through axum").await;
    let over_cap = try_open(&shared, &url, &token).await.expect_err("cap");
    assert_eq!(
        refused_with(over_cap),
        http::StatusCode::SERVICE_UNAVAILABLE
    );
    echoes(&client, &mut rx, "still open").await;
    close(client).await;
    served.abort();
}

#[tokio::test]
async fn an_http2_connection_gives_its_pending_place_back_while_it_carries_a_websocket() {
    // One place for connections in their HTTP phase: the HTTP/2 connection takes it until
    // its WebSocket opens, then an HTTP/1.1 client can have it.
    let builder = h2c().max_pending_handshakes(1);
    let server = serve_with(builder, WebSocketService::new(SessionEcho::default())).await;
    let shared = Http2Connection::new();
    let (over_h2, mut rx) = open(&shared, &server.url("/echo"), &[]).await;

    let (handler, mut rx1) = recorder(false);
    let over_h1 = within(
        "over HTTP/1.1, in the place the HTTP/2 connection gave back",
        Client::builder(server.url("/echo")).connect(handler),
    )
    .await
    .unwrap_or_else(|e| panic!("the place was not given back: {e}"));
    next(&mut rx1).await;
    echoes(&over_h2, &mut rx, "both").await;
    echoes(&over_h1, &mut rx1, "both").await;
    close(over_h1).await;
    close(over_h2).await;
    server.stop().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_header_read_timeout() {
    let builder = h2c().header_read_timeout(Duration::from_millis(300));
    let server = serve_with(builder, WebSocketService::new(SessionEcho::default())).await;
    let shared = Http2Connection::new();
    let (client, mut rx) = open(&shared, &server.url("/echo"), &[]).await;
    // A WebSocket open is not idle, however quiet.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(shared.is_connected().await, "closed with a WebSocket open");
    echoes(&client, &mut rx, "awake").await;
    close(client).await;
    within("the idle connection is closed", async {
        while shared.is_connected().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.stop().await;
}
