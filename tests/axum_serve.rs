//! examples/rest_and_ws.rs under `axum::serve`: the peer address reaches the session
//! through `PeerAddrLayer`, and the shutdown signal closes every socket with 1001 and
//! waits for them, as estuary's `Server` does.

#[path = "../examples/rest_and_ws.rs"]
mod rest_and_ws;

use std::net::{IpAddr, Ipv4Addr};

use estuary::testing::{within, Received, TestClient, DEFAULT_TIMEOUT};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct App {
    addr: std::net::SocketAddr,
    url: String,
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("ws://{addr}/ws?access_token=t-alice");
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(rest_and_ws::serve(listener, async {
        let _ = stopped.await;
    }));
    App {
        addr,
        url,
        stop,
        serving,
    }
}

#[tokio::test]
async fn the_session_sees_the_address_axum_accepted_the_socket_from() {
    let app = start().await;
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
    let mut client = TestClient::builder(&app.url).from_ip(from).connect().await;
    client.send("hello").await;
    client.expect_text("alice@127.0.0.7: hello").await;
}

#[tokio::test]
async fn the_shutdown_signal_closes_every_socket_with_1001_and_serve_waits_for_them() {
    let app = start().await;
    let mut first = TestClient::connect(&app.url).await;
    let mut second = TestClient::connect(&app.url).await;
    first.send("before").await;
    first.expect_text("alice@127.0.0.1: before").await;
    app.stop.send(()).unwrap();
    for client in [&mut first, &mut second] {
        assert_eq!(client.expect_close(1001).await, "going away");
        assert!(matches!(client.recv_any().await, Received::Gone(_)));
    }
    within("serve returns", DEFAULT_TIMEOUT, app.serving)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(app.addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}
