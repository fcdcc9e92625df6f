//! A small chat on estuary, written as an application outside the crate would write it:
//! rooms on the hub, typed commands and events in JSON or MessagePack (whichever
//! subprotocol the client offers), and bad input answered, never a panic.
//!
//! `tests/chat.rs` tests it end to end with `estuary::testing` and nothing else.
//!
//! | client sends | the server answers |
//! |---|---|
//! | `{"type":"join","room":"r"}` | `{"type":"joined","room":"r","members":["alice",...]}` |
//! | `{"type":"say","room":"r","text":"t"}` | `{"type":"said","room":"r","from":"alice","text":"t"}` to every member |
//! | `{"type":"leave","room":"r"}` | `{"type":"left","room":"r"}` |
//! | anything else | `{"type":"error","error":"json: ..."}`, or a close with 1003 for a message of the wrong kind |
//!
//! The user is the `?name=` query parameter, through an authenticator that a real app
//! would replace with a token check; a socket without a name gets 401.

use std::future::{ready, Ready};

use estuary::middleware::auth::{auth_fn, Auth, AuthError, AuthFn, AuthLayer, AuthRequest};
use estuary::middleware::Identity;
use estuary::{
    Codec, Conn, DecodeErrorKind, Handler, Hub, HubError, Message, Target, WebSocketService,
};
use serde::{Deserialize, Serialize};
use tower_layer::Layer;

/// The authenticator: the `name` query parameter is the user.
pub type NameFromQuery = AuthFn<fn(&AuthRequest<'_>) -> Ready<Result<Identity, AuthError>>>;

/// The chat as a tower service, registering its sockets in `hub`.
pub fn service(hub: Hub) -> Auth<WebSocketService<Chat>, NameFromQuery> {
    let name_from_query: fn(&AuthRequest<'_>) -> Ready<Result<Identity, AuthError>> = |request| {
        ready(match request.query("name") {
            Some(name) if !name.is_empty() => Ok(Identity::new(name.into_owned())),
            _ => Err(AuthError::new(
                http::StatusCode::UNAUTHORIZED,
                "a chat needs ?name=",
            )),
        })
    };
    AuthLayer::new(auth_fn(name_from_query))
        .layer(WebSocketService::new(Chat::default()).with_hub(hub))
}

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Join a room.
    Join {
        /// The room.
        room: String,
    },
    /// Say something to a room the client is in.
    Say {
        /// The room.
        room: String,
        /// What to say.
        text: String,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: String,
    },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The client is in `room`, with these members (names, sorted).
    Joined {
        /// The room.
        room: String,
        /// Every member's name, this client's included.
        members: Vec<String>,
    },
    /// A member of `room` said `text`.
    Said {
        /// The room.
        room: String,
        /// Who said it.
        from: String,
        /// What they said.
        text: String,
    },
    /// The client left `room`.
    Left {
        /// The room.
        room: String,
    },
    /// The command was refused or could not be read.
    Error {
        /// Why, in words.
        error: String,
    },
}

/// The chat handler: one per connection.
#[derive(Debug, Clone)]
pub struct Chat {
    codec: Codec,
}

impl Default for Chat {
    fn default() -> Self {
        Chat { codec: Codec::Json }
    }
}

/// The hub channel of `room` for members speaking `codec`: every member of a channel
/// gets the same bytes, so each codec has a channel of its own.
fn channel(room: &str, codec: Codec) -> String {
    format!("{room}#{codec}")
}

impl Chat {
    fn reply(&self, conn: &mut Conn, reply: &Reply) {
        let _ = conn.send_value(self.codec, reply);
    }

    async fn join(&mut self, conn: &mut Conn, room: String) -> Reply {
        if let Err(error) = conn.join(&channel(&room, self.codec)).await {
            return error_reply(error);
        }
        let mut members: Vec<String> = Codec::ALL
            .iter()
            .flat_map(|codec| conn.hub().members(&channel(&room, *codec)))
            .map(|member| member.user_id)
            .collect();
        members.sort();
        Reply::Joined { room, members }
    }

    /// Says `text` to every member of `room`, each in its own codec; an error reply if
    /// that cannot be done.
    fn say(&self, conn: &mut Conn, room: String, text: String) -> Option<Reply> {
        if !conn.is_member(&channel(&room, self.codec)) {
            let error = format!("join {room} before you say something there");
            return Some(Reply::Error { error });
        }
        let said = Reply::Said {
            room: room.clone(),
            from: conn.session().user_id().to_owned(),
            text,
        };
        for codec in Codec::ALL {
            let sent = codec
                .encode(&said)
                .map_err(HubError::from)
                .and_then(|message| conn.send_to(Target::channel(channel(&room, *codec)), message));
            if let Err(error) = sent {
                return Some(error_reply(error));
            }
        }
        None
    }
}

fn error_reply(error: impl std::fmt::Display) -> Reply {
    Reply::Error {
        error: error.to_string(),
    }
}

impl Handler for Chat {
    fn select_protocol<'a>(&self, offered: &[&'a str]) -> Option<&'a str> {
        Codec::select(offered)
    }

    async fn on_open(&mut self, conn: &mut Conn) {
        self.codec = conn.codec().unwrap_or(Codec::Json);
    }

    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        let command = match self.codec.decode::<Command>(&msg) {
            Ok(command) => command,
            // Text to a MessagePack client, binary to a JSON one: it speaks another
            // protocol than it negotiated, and nothing it sends will make sense.
            Err(error) if error.kind() == DecodeErrorKind::WrongKind => {
                let _ = conn.close(error.close_code(), &error.close_reason());
                return;
            }
            Err(error) => return self.reply(conn, &error_reply(error)),
        };
        let reply = match command {
            Command::Join { room } => Some(self.join(conn, room).await),
            Command::Say { room, text } => self.say(conn, room, text),
            Command::Leave { room } => {
                conn.leave(&channel(&room, self.codec));
                Some(Reply::Left { room })
            }
        };
        if let Some(reply) = reply {
            self.reply(conn, &reply);
        }
    }
}
