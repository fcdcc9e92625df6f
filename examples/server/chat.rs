//! `/ws`: a chat endpoint with a small JSON protocol, on the hub.
//!
//! Client to server, one JSON object per text message:
//!
//! ```text
//! {"type":"join","channel":"lobby"}          join a channel
//! {"type":"leave","channel":"lobby"}         leave it
//! {"type":"say","channel":"lobby","text":"hi"}   to every member of a channel
//! {"type":"whisper","user":"bob","text":"hi"}    to every session of a user
//! {"type":"members","channel":"lobby"}       who is in a channel, on every node
//! ```
//!
//! Server to client: `welcome` (your session and user id), `joined`, `left`, `message`
//! (`channel`, `from`, `text`), `whisper` (`from`, `text`), `members`, and `error` with a
//! reason for anything it could not do. `/ws?join=lobby` joins a channel on connect, and
//! `?name=` sets the display name of an anonymous user.

use estuary::{Conn, Handler, Member, Message, Target};
use serde::{Deserialize, Serialize};

/// The longest chat line, in characters.
const MAX_TEXT: usize = 2000;

/// One chat connection.
#[derive(Clone, Default)]
pub struct Chat {
    name: String,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Command {
    Join { channel: String },
    Leave { channel: String },
    Say { channel: String, text: String },
    Whisper { user: String, text: String },
    Members { channel: String },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event<'a> {
    Welcome {
        session: &'a str,
        user: &'a str,
        name: &'a str,
    },
    Joined {
        channel: &'a str,
    },
    Left {
        channel: &'a str,
    },
    Message {
        channel: &'a str,
        from: &'a str,
        text: &'a str,
    },
    Whisper {
        from: &'a str,
        text: &'a str,
    },
    Members {
        channel: &'a str,
        members: Vec<Member>,
    },
    Error {
        reason: &'a str,
    },
}

impl Chat {
    fn reply(conn: &mut Conn, event: &Event<'_>) {
        let message = Message::json(event).expect("chat events serialize");
        let _ = conn.send(message);
    }

    fn error(conn: &mut Conn, reason: &str) {
        Self::reply(conn, &Event::Error { reason });
    }
}

impl Handler for Chat {
    async fn on_open(&mut self, conn: &mut Conn) {
        let session = conn.session();
        self.name = match (session.identity(), session.query_param("name")) {
            (Some(identity), _) => identity.user_id().to_owned(),
            (None, Some(name)) if valid_name(&name) => name.into_owned(),
            _ => format!("guest-{}", &session.id()[..6]),
        };
        let join = session.query_param("join").map(|c| c.into_owned());
        let (id, user) = (session.id().to_owned(), session.user_id().to_owned());
        Self::reply(
            conn,
            &Event::Welcome {
                session: &id,
                user: &user,
                name: &self.name,
            },
        );
        if let Some(channel) = join {
            conn.join(&channel);
            Self::reply(conn, &Event::Joined { channel: &channel });
        }
    }

    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        let command = match msg.parse_json::<Command>() {
            Ok(command) => command,
            Err(e) => return Self::error(conn, &format!("bad command: {e}")),
        };
        match command {
            Command::Join { channel } => {
                conn.join(&channel);
                Self::reply(conn, &Event::Joined { channel: &channel });
            }
            Command::Leave { channel } => {
                if conn.leave(&channel) {
                    Self::reply(conn, &Event::Left { channel: &channel });
                } else {
                    Self::error(conn, &format!("not a member of {channel:?}"));
                }
            }
            Command::Say { channel, text } => {
                if text.chars().count() > MAX_TEXT {
                    return Self::error(conn, "text too long");
                }
                if !conn.channels().contains(&channel) {
                    return Self::error(
                        conn,
                        &format!("join {channel:?} before you say something there"),
                    );
                }
                let event = Event::Message {
                    channel: &channel,
                    from: &self.name,
                    text: &text,
                };
                let _ = conn
                    .hub()
                    .send_json(Target::channel(channel.as_str()), &event);
            }
            Command::Whisper { user, text } => {
                if text.chars().count() > MAX_TEXT {
                    return Self::error(conn, "text too long");
                }
                let event = Event::Whisper {
                    from: &self.name,
                    text: &text,
                };
                let _ = conn.hub().send_json(Target::user(user.as_str()), &event);
            }
            Command::Members { channel } => match conn.hub().members_everywhere(&channel).await {
                Ok(members) => Self::reply(
                    conn,
                    &Event::Members {
                        channel: &channel,
                        members,
                    },
                ),
                Err(e) => Self::error(conn, &format!("presence unavailable: {e}")),
            },
        }
    }
}

/// Display names: 1 to 32 letters, digits, `-`, `_` or `.`.
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
