//! `wss://` with `estuary::client`: servers with a certificate made for the test run
//! (a throwaway certificate authority signs one for `localhost`), trusted through
//! `add_root_certificate`; estuary's `WebSocketService` and a tokio-tungstenite server,
//! each behind a tokio-rustls acceptor.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::peers::tungstenite_echo;
use common::pki::{make_pki, Pki};
use common::within;
use estuary::client::{Client, ClientHandler, ConnectError, DisconnectReason, Reconnect};
use estuary::{handler_fn, Conn, Message, WebSocketService};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

fn acceptor(pki: &Pki) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// Which server sits behind the TLS acceptor.
#[derive(Clone, Copy)]
enum Behind {
    Estuary,
    Tungstenite,
}

/// Accepts TLS on a free port and hands each connection to the chosen echo server.
async fn serve_tls(pki: &Pki, behind: Behind) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = acceptor(pki);
    let echo = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
        let _ = conn.send(msg);
    }));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let echo = echo.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                match behind {
                    Behind::Tungstenite => tungstenite_echo(tls).await,
                    Behind::Estuary => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), TowerToHyperService::new(echo))
                            .with_upgrades()
                            .await;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// Forwards every message to a channel.
struct Forward(mpsc::UnboundedSender<Message>);

impl ClientHandler for Forward {
    async fn on_message(&mut self, _client: &Client, message: Message) {
        let _ = self.0.send(message);
    }

    async fn on_close(&mut self, _: &Client, _: &DisconnectReason, _: u32) -> Reconnect {
        Reconnect::Stop
    }
}

async fn echoes_over_wss_with_a_custom_root(behind: Behind) {
    let pki = make_pki();
    let (addr, server) = serve_tls(&pki, behind).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = within(
        "wss connect",
        Client::builder(format!("wss://localhost:{}/echo", addr.port()))
            .add_root_certificate(pki.root.clone())
            .connect(Forward(tx)),
    )
    .await
    .unwrap_or_else(|e| panic!("wss connect: {e}"));
    for text in ["over TLS", "κόσμε"] {
        client.send(text).unwrap();
        let back = within("echo", rx.recv()).await.unwrap();
        assert_eq!(back.as_text(), Some(text));
    }
    let big = Message::binary(vec![42u8; 300_000]);
    client.send(big.clone()).unwrap();
    assert_eq!(within("big echo", rx.recv()).await.unwrap(), big);
    client.close(1000, "bye").unwrap();
    within("client stop", client.closed()).await;
    server.abort();
}

#[tokio::test]
async fn wss_to_the_estuary_server_trusts_a_custom_root() {
    echoes_over_wss_with_a_custom_root(Behind::Estuary).await;
}

#[tokio::test]
async fn wss_to_a_tungstenite_server_trusts_a_custom_root() {
    echoes_over_wss_with_a_custom_root(Behind::Tungstenite).await;
}

#[tokio::test]
async fn wss_without_the_custom_root_fails_with_a_certificate_error() {
    let pki = make_pki();
    let (addr, server) = serve_tls(&pki, Behind::Estuary).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let error = within(
        "wss connect",
        Client::connect(&format!("wss://localhost:{}/", addr.port()), Forward(tx)),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ConnectError::Tls(_)), "{error}");
    assert!(
        error.to_string().contains("UnknownIssuer"),
        "the error names the cause: {error}"
    );
    server.abort();
}
