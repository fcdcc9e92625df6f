//! The client over HTTP/2 (RFC 8441) against the library's server: several clients on
//! one shared connection, h2c and wss:// chosen by ALPN, a server that does not offer it,
//! the connection cap counting each stream as a socket, and graceful shutdown.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::client::{next, next_message, recorder, Seen};
use common::example::ExampleServer;
use common::pki::make_pki;
use common::{serve_with, within, TestServer};
use estuary::client::{Client, ClientConfig, ConnectError, Http2Connection};
use estuary::middleware::conn_limit::ConnectionLimitLayer;
use estuary::{CloseReason, Conn, Handler, Message, Server, ServerBuilder, WebSocketService};
use tower::Layer;

type Peers = Arc<Mutex<Vec<(http::Version, Option<SocketAddr>)>>>;

/// Echoes, and notes each session's HTTP version and peer address, and why it closed.
#[derive(Clone, Default)]
struct Echo(Peers, Arc<Mutex<Vec<CloseReason>>>);

impl Handler for Echo {
    async fn on_close(&mut self, _conn: &mut Conn, reason: CloseReason) {
        self.1.lock().unwrap().push(reason);
    }

    async fn on_open(&mut self, conn: &mut Conn) {
        let session = conn.session();
        let seen = (session.http_version(), session.peer_addr());
        self.0.lock().unwrap().push(seen);
    }

    async fn on_message(&mut self, conn: &mut Conn, message: Message) {
        let _ = conn.send(message);
    }
}

fn h2c() -> ServerBuilder {
    Server::builder()
        .h2c(true)
        .websockets_over_http2(true)
        .drain_timeout(Duration::from_secs(5))
}

fn quick() -> ClientConfig {
    ClientConfig::default().with_connect_timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn several_clients_share_one_h2c_connection() {
    let echo = Echo::default();
    let (peers, closes) = (echo.0.clone(), echo.1.clone());
    let server = serve_with(h2c(), WebSocketService::new(echo)).await;
    let shared = Http2Connection::new();
    let mut clients = Vec::new();
    for i in 0..5 {
        let (handler, rx) = recorder(false);
        let client = within(
            "connect over HTTP/2",
            Client::builder(server.url(&format!("/echo/{i}")))
                .http2(&shared)
                .config(quick())
                .connect(handler),
        )
        .await
        .unwrap_or_else(|e| panic!("client {i}: {e}"));
        clients.push((client, rx));
    }
    assert!(shared.is_connected().await);
    for (i, (client, rx)) in clients.iter_mut().enumerate() {
        assert!(matches!(next(rx).await, Seen::Connected(None)));
        let big = Message::binary(vec![i as u8; 300_000]);
        client.send(format!("hello {i}")).unwrap();
        client.send(big.clone()).unwrap();
        assert_eq!(
            next_message(rx).await.as_text(),
            Some(&*format!("hello {i}"))
        );
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
    let closes = closes.lock().unwrap().clone();
    assert_eq!(closes.len(), 5);
    for reason in closes {
        assert!(
            matches!(&reason, CloseReason::Remote { code: 1000, .. }),
            "{reason:?}"
        );
    }
    let peers = peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 5);
    assert!(peers.iter().all(|(v, _)| *v == http::Version::HTTP_2));
    let addresses: HashSet<_> = peers.iter().map(|(_, addr)| *addr).collect();
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
    let echo = Echo::default();
    let peers = echo.0.clone();
    let builder = Server::builder()
        .tls(tls)
        .websockets_over_http2(true)
        .drain_timeout(Duration::from_secs(5));
    let server = serve_with(builder, WebSocketService::new(echo)).await;
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
        client.send("over h2").unwrap();
        assert_eq!(next_message(&mut rx).await.as_text(), Some("over h2"));
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
    plain.send("over 1.1").unwrap();
    assert_eq!(next_message(&mut rx).await.as_text(), Some("over 1.1"));

    let peers = peers.lock().unwrap().clone();
    let versions: Vec<_> = peers.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        versions,
        [
            http::Version::HTTP_2,
            http::Version::HTTP_2,
            http::Version::HTTP_11
        ]
    );
    assert_eq!(
        peers[0].1, peers[1].1,
        "the two HTTP/2 sockets share a connection"
    );
    assert_ne!(peers[0].1, peers[2].1);
    server.stop().await;
}

#[tokio::test]
async fn a_server_that_does_not_offer_extended_connect_is_named_as_the_reason() {
    let builder = Server::builder().h2c(true);
    let server = serve_with(builder, WebSocketService::new(Echo::default())).await;
    let (handler, _rx) = recorder(false);
    let error = within(
        "connect",
        Client::builder(server.url("/echo"))
            .http2(&Http2Connection::new())
            .config(quick())
            .connect(handler),
    )
    .await
    .unwrap_err();
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
    let server = serve_with(h2c(), cap.layer(WebSocketService::new(Echo::default()))).await;
    let shared = Http2Connection::new();
    let mut open = Vec::new();
    for _ in 0..2 {
        let (handler, mut rx) = recorder(false);
        let client = within(
            "connect",
            Client::builder(server.url("/echo"))
                .http2(&shared)
                .config(quick())
                .connect(handler),
        )
        .await
        .unwrap();
        next(&mut rx).await;
        open.push((client, rx));
    }
    let (handler, _rx) = recorder(false);
    let refused = within(
        "third connect",
        Client::builder(server.url("/echo"))
            .http2(&shared)
            .config(quick())
            .connect(handler),
    )
    .await
    .unwrap_err();
    match &refused {
        ConnectError::Rejected { status, .. } => {
            assert_eq!(*status, http::StatusCode::SERVICE_UNAVAILABLE)
        }
        other => panic!("expected 503, got {other}"),
    }
    assert!(shared.is_connected().await, "the connection goes on");
    for (client, rx) in &mut open {
        client.send("still here").unwrap();
        assert_eq!(next_message(rx).await.as_text(), Some("still here"));
    }
    // A stream that closes gives its place back.
    let (client, mut rx) = open.pop().unwrap();
    client.close(1000, "").unwrap();
    next(&mut rx).await;
    within("closed", client.closed()).await;
    within("the cap has a place again", async {
        while cap.live() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (handler, mut rx) = recorder(false);
    let again = within(
        "connect again",
        Client::builder(server.url("/echo"))
            .http2(&shared)
            .config(quick())
            .connect(handler),
    )
    .await
    .unwrap();
    next(&mut rx).await;
    again.send("in").unwrap();
    assert_eq!(next_message(&mut rx).await.as_text(), Some("in"));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_http2_socket_with_1001_and_ends_the_connection() {
    let server: TestServer = serve_with(h2c(), WebSocketService::new(Echo::default())).await;
    let shared = Http2Connection::new();
    let mut open = Vec::new();
    for _ in 0..3 {
        let (handler, mut rx) = recorder(false);
        let client = within(
            "connect",
            Client::builder(server.url("/echo"))
                .http2(&shared)
                .config(quick())
                .connect(handler),
        )
        .await
        .unwrap();
        next(&mut rx).await;
        open.push((client, rx));
    }
    let stopped = tokio::spawn(server.stop());
    for (client, mut rx) in open {
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
    let (handler, mut rx) = recorder(false);
    let client = within(
        "h2c to the example server",
        Client::builder(&url)
            .header("authorization", "Bearer s3cret")
            .http2(&shared)
            .config(quick())
            .connect(handler),
    )
    .await
    .unwrap_or_else(|e| panic!("h2c to the example server: {e}"));
    next(&mut rx).await;
    client.send("over h2c").unwrap();
    assert_eq!(next_message(&mut rx).await.as_text(), Some("over h2c"));

    let (handler, _rx) = recorder(false);
    let refused = within(
        "a second stream without the token",
        Client::builder(&url)
            .http2(&shared)
            .config(quick())
            .connect(handler),
    )
    .await
    .unwrap_err();
    match refused {
        ConnectError::Rejected { status, .. } => {
            assert_eq!(status, http::StatusCode::UNAUTHORIZED)
        }
        other => panic!("expected 401, got {other}"),
    }
    client.send("still open").unwrap();
    assert_eq!(next_message(&mut rx).await.as_text(), Some("still open"));
    client.close(1000, "").unwrap();
    within("client stops", client.closed()).await;
}

#[tokio::test]
async fn mounted_in_axum_the_stack_works_the_same_over_http2() {
    use estuary::middleware::auth::{AuthLayer, BearerTokens};
    let cap = ConnectionLimitLayer::new(1);
    let websocket = cap.layer(
        AuthLayer::new(BearerTokens::new("axum").with_token("t0ken", "alice"))
            .layer(WebSocketService::new(Echo::default())),
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
    let shared = Http2Connection::new();

    let (handler, _rx) = recorder(false);
    let anonymous = within(
        "no token",
        Client::builder(&url)
            .http2(&shared)
            .config(quick())
            .connect(handler),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&anonymous, ConnectError::Rejected { status, .. } if *status == http::StatusCode::UNAUTHORIZED),
        "{anonymous}"
    );

    let (handler, mut rx) = recorder(false);
    let client = within(
        "with the token",
        Client::builder(&url)
            .header("authorization", "Bearer t0ken")
            .http2(&shared)
            .config(quick())
            .connect(handler),
    )
    .await
    .unwrap_or_else(|e| panic!("through axum over HTTP/2: {e}"));
    next(&mut rx).await;
    client.send("through axum").unwrap();
    assert_eq!(next_message(&mut rx).await.as_text(), Some("through axum"));

    let (handler, _rx) = recorder(false);
    let over_cap = within(
        "over the cap",
        Client::builder(&url)
            .header("authorization", "Bearer t0ken")
            .http2(&shared)
            .config(quick())
            .connect(handler),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&over_cap, ConnectError::Rejected { status, .. } if *status == http::StatusCode::SERVICE_UNAVAILABLE),
        "{over_cap}"
    );
    client.send("still open").unwrap();
    assert_eq!(next_message(&mut rx).await.as_text(), Some("still open"));
    client.close(1000, "").unwrap();
    within("client stops", client.closed()).await;
    served.abort();
}
