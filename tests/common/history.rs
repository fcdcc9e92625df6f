//! A server whose clients join channels with history, and the client side that keeps its
//! position and rejoins from it, for the history tests (in-process and on Redis).
//!
//! `/?channel=C` joins C on open; with `&offset=N&epoch=E`, from that position. The join's
//! recovered publications come first, then `joined complete=BOOL offset=N epoch=E
//! missed=N` (`offset=- epoch=-` when the channel keeps no history), then live ones.
//! Every publication arrives as `pub OFFSET EPOCH r|l TEXT` (recovered or live); a
//! message on a channel without history as it was sent. `say:TEXT` sends TEXT to the
//! connection's channel.

use estuary::{Conn, Handler, Hub, Message, Position, Publication, Target, WebSocketService};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::nodes::next_text;
use super::{connect, serve, Client, TestServer};

#[derive(Clone, Default)]
pub struct Historian {
    channel: String,
}

/// A publication as the client sees it.
fn line(publication: &Publication) -> Message {
    let position = publication.position();
    let kind = if publication.is_recovered() { "r" } else { "l" };
    let text = publication.message().as_text().unwrap_or_default();
    Message::text(format!(
        "pub {} {} {kind} {text}",
        position.offset, position.epoch
    ))
}

impl Handler for Historian {
    async fn on_open(&mut self, conn: &mut Conn) {
        let session = conn.session();
        self.channel = session
            .query_param("channel")
            .map(|c| c.into_owned())
            .unwrap_or_default();
        let since = match (session.query_param("offset"), session.query_param("epoch")) {
            (Some(offset), Some(epoch)) => {
                Some(Position::new(offset.parse().unwrap(), epoch.into_owned()))
            }
            _ => None,
        };
        let recovery = conn
            .join_since(&self.channel, since.as_ref())
            .await
            .expect("the test's channels may be joined");
        let missed = recovery.publications.len();
        for publication in recovery.publications {
            self.on_publication(conn, publication);
        }
        let (offset, epoch) = match &recovery.position {
            Some(position) => (position.offset.to_string(), position.epoch.clone()),
            None => ("-".into(), "-".into()),
        };
        let _ = conn.send(format!(
            "joined complete={} offset={offset} epoch={epoch} missed={missed}",
            recovery.complete
        ));
    }

    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        let text = msg.as_text().unwrap_or_default();
        if let Some(line) = text.strip_prefix("say:") {
            let _ = conn.send_to(Target::channel(self.channel.as_str()), line.to_owned());
        }
    }

    fn on_publication(&mut self, conn: &mut Conn, publication: Publication) {
        let _ = conn.send_prepared(&publication.frame_with(line));
    }
}

/// A server for [`Historian`]s on `hub`.
pub async fn historian(hub: &Hub) -> TestServer {
    serve(WebSocketService::new(Historian::default()).with_hub(hub.clone())).await
}

/// What a `joined` line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub complete: bool,
    pub position: Option<Position>,
    pub missed: usize,
}

/// A publication as the client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub position: Position,
    pub recovered: bool,
    pub text: String,
}

/// What the server sends a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    Joined(Joined),
    Pub(Line),
    Plain(String),
}

pub fn parse(text: &str) -> Said {
    if let Some(rest) = text.strip_prefix("joined ") {
        let field = |name: &str| {
            rest.split(' ')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("{name} in {text:?}"))
                .to_owned()
        };
        let position = match (field("offset").as_str(), field("epoch")) {
            ("-", _) => None,
            (offset, epoch) => Some(Position::new(offset.parse().unwrap(), epoch)),
        };
        return Said::Joined(Joined {
            complete: field("complete") == "true",
            position,
            missed: field("missed").parse().unwrap(),
        });
    }
    if let Some(rest) = text.strip_prefix("pub ") {
        let mut parts = rest.splitn(4, ' ');
        let offset = parts.next().unwrap().parse().unwrap();
        let epoch = parts.next().unwrap().to_owned();
        let recovered = parts.next().unwrap() == "r";
        let text = parts.next().unwrap_or_default().to_owned();
        return Said::Pub(Line {
            position: Position::new(offset, epoch),
            recovered,
            text,
        });
    }
    Said::Plain(text.to_owned())
}

/// A client in `channel` on `server`, from `since` (or from now): it and what the join
/// recovered, in order, and the `joined` line.
pub async fn join(
    server: &TestServer,
    channel: &str,
    since: Option<&Position>,
) -> (Client, Vec<Line>, Joined) {
    let path = match since {
        Some(p) => format!("/?channel={channel}&offset={}&epoch={}", p.offset, p.epoch),
        None => format!("/?channel={channel}"),
    };
    let mut client = connect(&server.url(&path)).await;
    let mut recovered = Vec::new();
    loop {
        match parse(&next_text(&mut client).await) {
            Said::Pub(line) => {
                assert!(line.recovered, "a live line before `joined`: {line:?}");
                recovered.push(line);
            }
            Said::Joined(joined) => return (client, recovered, joined),
            Said::Plain(text) => panic!("expected a publication or `joined`, got {text:?}"),
        }
    }
}

/// The next publication.
pub async fn next_line(client: &mut Client) -> Line {
    match parse(&next_text(client).await) {
        Said::Pub(line) => line,
        other => panic!("expected a publication, got {other:?}"),
    }
}

/// Says `text` in the client's channel.
pub async fn say(client: &mut Client, text: &str) {
    client
        .send(WsMessage::text(format!("say:{text}")))
        .await
        .unwrap();
}

/// Publishes `lines` numbered lines (`0`, `1`, ...) to `channel` through `hub`, pausing
/// 1 ms after every `pause_every`th, so that a member's rejoins land mid-stream.
pub fn publish_numbered(
    hub: &Hub,
    channel: &'static str,
    lines: u64,
    pause_every: u64,
) -> tokio::task::JoinHandle<()> {
    let hub = hub.clone();
    tokio::spawn(async move {
        for i in 0..lines {
            hub.send(Target::channel(channel), i.to_string()).unwrap();
            if i % pause_every == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    })
}
