//! Graceful shutdown with a thousand sockets open: each gets 1001 "going away", each
//! connection's `on_close` runs, and the example server's process exits 0 within its
//! `shutdown_timeout`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::example::ExampleServer;
use common::load::eventually;
use common::proc::need_open_files;
use common::scrape::Scrape;
use common::{connect, next_close, serve, within, Client};
use estuary::{CloseReason, Conn, Handler, Message, WebSocketService};
use futures_util::StreamExt;
use tokio::task::JoinSet;

const SOCKETS: usize = 1000;

/// Connects `SOCKETS` clients to `url`, 50 at a time.
async fn connect_all(url: &str) -> Vec<Client> {
    let mut connecting = JoinSet::new();
    let mut clients = Vec::new();
    for _ in 0..SOCKETS {
        if connecting.len() == 50 {
            clients.push(connecting.join_next().await.unwrap().unwrap());
        }
        let url = url.to_owned();
        connecting.spawn(async move { connect(&url).await });
    }
    while let Some(client) = connecting.join_next().await {
        clients.push(client.unwrap());
    }
    clients
}

/// Each client reads to its close frame, answers it, and reads to the end: the codes.
fn await_closes(clients: Vec<Client>) -> JoinSet<(u16, String)> {
    let mut closes = JoinSet::new();
    for mut client in clients {
        closes.spawn(async move {
            let close = next_close(&mut client).await;
            while within("end of stream", client.next()).await.is_some() {}
            close
        });
    }
    closes
}

async fn all_going_away(mut closes: JoinSet<(u16, String)>) {
    let mut count = 0;
    while let Some(close) = closes.join_next().await {
        assert_eq!(close.unwrap(), (1001, "going away".to_owned()));
        count += 1;
    }
    assert_eq!(count, SOCKETS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_1000_sockets_open_closes_each_with_1001_and_exits_0_in_time() {
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
    need_open_files(SOCKETS as u64 + 100);
    let server = ExampleServer::start("shutdown_timeout = \"10s\"", &["--bind", "127.0.0.1:0"]);
    let (addr, url) = (server.addr, server.url("/echo"));
    let clients = connect_all(&url).await;
    eventually("every socket open", Duration::from_secs(10), || async {
        let scrape = Scrape::get(addr, "/metrics").await;
        (scrape.value("estuary_connections") == SOCKETS as f64).then_some(())
    })
    .await;
    let closes = await_closes(clients);

    let started = Instant::now();
    let exit = tokio::task::spawn_blocking(move || server.terminate());
    all_going_away(closes).await;
    let status = exit.await.unwrap();
    let took = started.elapsed();
    println!("shutdown: {SOCKETS} sockets closed with 1001 and the process exited in {took:.2?}");
    assert!(status.success(), "{status}");
    assert!(took < SHUTDOWN_TIMEOUT, "exit took {took:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens after shutdown"
    );
}

/// Echoes; its `on_close` takes a moment (a cleanup that awaits), then counts why.
#[derive(Clone, Default)]
struct Counting {
    shutdowns: Arc<AtomicUsize>,
    others: Arc<AtomicUsize>,
}

impl Handler for Counting {
    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        let _ = conn.send(msg);
    }

    async fn on_close(&mut self, _conn: &mut Conn, reason: CloseReason) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match reason {
            CloseReason::Shutdown => self.shutdowns.fetch_add(1, Ordering::SeqCst),
            _ => self.others.fetch_add(1, Ordering::SeqCst),
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_runs_on_close_for_every_one_of_1000_sockets_before_it_returns() {
    need_open_files(2 * SOCKETS as u64 + 100);
    let handler = Counting::default();
    let server = serve(WebSocketService::new(handler.clone())).await;
    let clients = connect_all(&server.url("/")).await;
    eventually(
        "every socket registered",
        Duration::from_secs(10),
        || async { (server.shutdown.connections() == SOCKETS).then_some(()) },
    )
    .await;
    let closes = await_closes(clients);

    let started = Instant::now();
    server.stop().await;
    let took = started.elapsed();
    // `stop` returned: every connection task is over, its on_close included.
    assert_eq!(handler.shutdowns.load(Ordering::SeqCst), SOCKETS);
    assert_eq!(handler.others.load(Ordering::SeqCst), 0);
    all_going_away(closes).await;
    println!("shutdown: {SOCKETS} on_close calls ran in the {took:.2?} shutdown took");
}
