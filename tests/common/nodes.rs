//! In-process nodes for the backplane tests: a server on a hub, whose clients drive the
//! hub with small text commands, and the helpers that wait on them.

use std::time::Duration;

use estuary::middleware::Identity;
use estuary::{Conn, Event, Handler, Hub, Message, Target, WebSocketService};
use futures_util::{SinkExt, StreamExt};
use http::Request;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tower::ServiceBuilder;

use super::{connect, serve, within, Client, TestServer};

/// Joins the channel in `?channel=` on open, then says "ready"; "join:C" answers
/// "joined:C" once the join returned, "leave:C" answers "left:C", "say:C:TEXT" sends TEXT
/// to channel C as this connection; events come back as "event:JSON".
#[derive(Clone)]
pub struct Node;

impl Handler for Node {
    async fn on_open(&mut self, conn: &mut Conn) {
        let channel = conn
            .session()
            .query_param("channel")
            .map(|c| c.into_owned());
        if let Some(channel) = channel {
            conn.join(&channel)
                .await
                .expect("the test's channels may be joined");
        }
        let _ = conn.send("ready");
    }

    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        let text = msg.as_text().unwrap_or_default().to_owned();
        let reply = match text.split_once(':') {
            Some(("join", channel)) => match conn.join(channel).await {
                Ok(_) => format!("joined:{channel}"),
                Err(e) => format!("refused:{e}"),
            },
            Some(("leave", channel)) => format!("left:{}", conn.leave(channel)),
            Some(("say", rest)) => {
                let (channel, line) = rest.split_once(':').unwrap_or((rest, ""));
                match conn.send_to(Target::channel(channel), line.to_owned()) {
                    Ok(_) => return,
                    Err(e) => format!("refused:{e}"),
                }
            }
            _ => return,
        };
        let _ = conn.send(reply);
    }

    async fn on_event(&mut self, conn: &mut Conn, event: Event) {
        let json = String::from_utf8_lossy(event.as_json().unwrap_or_default()).into_owned();
        let _ = conn.send(format!("event:{json}"));
    }
}

/// A server on `hub` whose sessions take their user from `?user=` (and, as an
/// authenticator that lets clients choose might, their session id from `&session=`).
pub async fn node(hub: &Hub) -> TestServer {
    let ws = WebSocketService::new(Node).with_hub(hub.clone());
    let service = ServiceBuilder::new()
        .map_request(identity_from_query)
        .service(ws);
    serve(service).await
}

/// Puts an [`Identity`] in the request for `?user=`, with the session id of `&session=`
/// when there is one.
pub fn identity_from_query<B>(mut request: Request<B>) -> Request<B> {
    let query = request.uri().query().unwrap_or_default().to_owned();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    if let Some(user) = param("user") {
        let identity = match param("session") {
            Some(session) => Identity::new(user).with_session_id(session),
            None => Identity::new(user),
        };
        request.extensions_mut().insert(identity);
    }
    request
}

/// A client of `server` as `user`, in `channel` (none if empty) once it said "ready".
pub async fn member(server: &TestServer, user: &str, channel: &str) -> Client {
    let path = match channel {
        "" => format!("/?user={user}"),
        channel => format!("/?user={user}&channel={channel}"),
    };
    let mut client = connect(&server.url(&path)).await;
    assert_eq!(next_text(&mut client).await, "ready");
    client
}

/// Sends a command and returns the answer.
pub async fn command(client: &mut Client, line: &str) -> String {
    client.send(WsMessage::text(line)).await.unwrap();
    next_text(client).await
}

pub async fn next_text(client: &mut Client) -> String {
    match within("a message", client.next()).await {
        Some(Ok(WsMessage::Text(text))) => text.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Asserts that nothing arrives for a moment.
pub async fn quiet(client: &mut Client) {
    let next = tokio::time::timeout(Duration::from_millis(300), client.next()).await;
    assert!(next.is_err(), "unexpected extra message: {next:?}");
}

/// Waits until `hub` sees `count` members of `channel` across nodes.
pub async fn members_everywhere(hub: &Hub, channel: &str, count: usize) {
    within("presence converges", async {
        loop {
            if hub.members_everywhere(channel).await.ok().map(|m| m.len()) == Some(count) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Sends markers to `to` through `hub` until `client` receives one: delivery works (again).
pub async fn until_delivered(hub: &Hub, to: Target, client: &mut Client) -> String {
    within("cross-node delivery resumes", async {
        for attempt in 0.. {
            hub.send(to.clone(), format!("marker {attempt}")).unwrap();
            if let Ok(Some(Ok(WsMessage::Text(text)))) =
                tokio::time::timeout(Duration::from_millis(200), client.next()).await
            {
                return text.to_string();
            }
        }
        unreachable!()
    })
    .await
}

/// Reads until a text that is not a marker, skipping markers still in flight.
pub async fn next_after_markers(client: &mut Client) -> String {
    loop {
        let text = next_text(client).await;
        if !text.starts_with("marker ") {
            return text;
        }
    }
}
