//! The example server with `[tls]`: wss:// echoes and https:// health with a certificate
//! the test makes, and every bad certificate or key path fails startup naming its key.

mod common;

use std::sync::Arc;

use common::example::{startup_error, ExampleServer};
use common::pki::make_pki;
use common::within;
use estuary::client::rustls::pki_types::ServerName;
use estuary::client::{rustls, Client, ClientHandler, DisconnectReason, Reconnect};
use estuary::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

struct Forward(mpsc::UnboundedSender<Message>);

impl ClientHandler for Forward {
    async fn on_message(&mut self, _client: &Client, message: Message) {
        let _ = self.0.send(message);
    }

    async fn on_close(&mut self, _: &Client, _: &DisconnectReason, _: u32) -> Reconnect {
        Reconnect::Stop
    }
}

/// Writes the test CA's server certificate and key, and a config that uses them.
fn tls_files(dir: &tempfile::TempDir, pki: &common::pki::Pki) -> String {
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &pki.server_cert_pem).unwrap();
    std::fs::write(&key, &pki.server_key_pem).unwrap();
    format!("[tls]\ncert = {:?}\nkey = {:?}\n", cert, key)
}

#[tokio::test]
async fn wss_echoes_and_https_health_answers_with_the_configured_certificate() {
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let server = ExampleServer::start(&tls_files(&dir, &pki), &["--bind", "127.0.0.1:0"]);
    let port = server.addr.port();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = within(
        "wss connect",
        Client::builder(format!("wss://localhost:{port}/echo"))
            .add_root_certificate(pki.root.clone())
            .connect(Forward(tx)),
    )
    .await
    .unwrap_or_else(|e| panic!("wss connect: {e}"));
    for text in ["over TLS", "κόσμε"] {
        client.send(text).unwrap();
        assert_eq!(
            within("echo", rx.recv()).await.unwrap().as_text(),
            Some(text)
        );
    }
    let big = Message::binary(vec![7u8; 200_000]);
    client.send(big.clone()).unwrap();
    assert_eq!(within("big echo", rx.recv()).await.unwrap(), big);
    client.close(1000, "bye").unwrap();
    within("client stop", client.closed()).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    within("https health", tls.read_to_end(&mut response))
        .await
        .ok();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("OK"), "{response}");

    // Plain ws:// on the TLS port gets nowhere.
    let plain = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/echo")).await;
    assert!(plain.is_err(), "a TLS-only server refuses plain WebSocket");
}

#[tokio::test]
async fn wss_goes_over_http2_by_default_with_several_sockets_on_one_connection() {
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let server = ExampleServer::start(&tls_files(&dir, &pki), &["--bind", "127.0.0.1:0"]);
    let url = format!("wss://localhost:{}/echo", server.addr.port());
    let shared = estuary::client::Http2Connection::new();
    let mut clients = Vec::new();
    for i in 0..3 {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let client = within(
            "wss over HTTP/2",
            Client::builder(&url)
                .add_root_certificate(pki.root.clone())
                .http2(&shared)
                .connect(Forward(tx)),
        )
        .await
        .unwrap_or_else(|e| panic!("wss over HTTP/2 to the example server: {e}"));
        client.send(format!("socket {i}")).unwrap();
        let echoed = within("echo", rx.recv()).await.unwrap();
        assert_eq!(echoed.as_text(), Some(&*format!("socket {i}")));
        clients.push(client);
    }
    assert!(shared.is_connected().await);
    for client in clients {
        client.close(1000, "bye").unwrap();
        within("client stop", client.closed()).await;
    }
}

#[test]
fn bad_certificate_or_key_files_fail_startup_naming_the_key() {
    let pki = make_pki();
    let dir = tempfile::tempdir().unwrap();
    let good = tls_files(&dir, &pki);
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let other_key = dir.path().join("other-key.pem");
    std::fs::write(&other_key, make_pki().server_key_pem).unwrap();

    let cases = [
        (
            format!("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = {key:?}"),
            "config: tls.cert: cannot read /nonexistent/cert.pem",
        ),
        (
            format!("[tls]\ncert = {cert:?}\nkey = \"/nonexistent/key.pem\""),
            "config: tls.key: cannot read /nonexistent/key.pem",
        ),
        (
            format!("[tls]\ncert = {garbage:?}\nkey = {key:?}"),
            "config: tls.cert: no CERTIFICATE in",
        ),
        (
            format!("[tls]\ncert = {cert:?}\nkey = {garbage:?}"),
            "config: tls.key: no usable PRIVATE KEY in",
        ),
        (
            format!("[tls]\ncert = {cert:?}\nkey = {other_key:?}"),
            "config: tls.key: does not fit the certificate",
        ),
        (
            format!("[tls]\ncert = {cert:?}"),
            "config: tls: missing field `key`",
        ),
    ];
    for (toml, expected) in cases {
        let stderr = startup_error(&toml);
        assert!(
            stderr.starts_with(expected),
            "{toml}\nexpected {expected}\ngot {stderr}"
        );
    }
    drop(good);
}
