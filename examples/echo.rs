//! The smallest Estuary server: every message echoed back to its sender.
//!
//! `cargo run --example echo`, then connect to ws://127.0.0.1:3000.

use estuary::{handler_fn, Conn, Message, Server, WebSocketService};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let echo = WebSocketService::new(handler_fn(|conn: &mut Conn, msg: Message| {
        let _ = conn.send(msg);
    }));
    Server::bind("127.0.0.1:3000".parse().unwrap())?
        .serve(echo)
        .await
}
