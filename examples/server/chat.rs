//! `/ws`: a chat endpoint with a small JSON protocol, on the hub.
//!
//! Client to server, one JSON object per text message:
//!
//! ```text
//! {"type":"join","channel":"lobby"}          join a channel
//! {"type":"join","channel":"lobby","since":{"offset":41,"epoch":"9f3c..."}}
//!                                            join again, and get what was said after
//!                                            the last line seen, on a channel with history
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
//!
//! On a channel with history (`history_size` in `[hub.channels]`) every `message` also
//! carries its position, `offset` and `epoch`; a client keeps the last it saw, and joins
//! with it as `since` after a dropped connection or a reload. The lines it missed come
//! first, each with `"recovered":true`, then `joined` with the channel's position
//! (`offset`, `epoch`) and, for a join with `since`, `recovered`: true if those were all
//! it missed, false if some were lost (older than the history, or the history itself was
//! lost), and how many were `missed`; then live lines.
//!
//! What a connection may do is the hub's to bound and the [`ChatRules`]' to decide (the
//! `[hub]` table of the config): how many channels, how long a name, who may join a
//! channel and who may say something in it. A refusal is an `error` whose reason says
//! which rule; no error repeats what the client sent.

use std::collections::BTreeMap;

use estuary::{
    Caller, Conn, Handler, HubError, HubPolicy, Member, Message, Position, Publication, Refused,
    Target,
};
use serde::{Deserialize, Serialize};

use crate::config::ChannelRule;

/// The longest chat line, in characters.
const MAX_TEXT: usize = 2000;

/// The longest user id a whisper may go to, in bytes.
const MAX_USER: usize = 256;

/// The longest epoch a `since` may carry, in bytes (the hub's are 16).
const MAX_EPOCH: usize = 64;

/// One chat connection.
#[derive(Clone, Default)]
pub struct Chat {
    name: String,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Command {
    Join {
        channel: String,
        since: Option<Position>,
    },
    Leave {
        channel: String,
    },
    Say {
        channel: String,
        text: String,
    },
    Whisper {
        user: String,
        text: String,
    },
    Members {
        channel: String,
    },
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
        /// The channel's position, on a channel with history.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        /// For a join with `since`: whether every line said after it was sent.
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// For a join with `since`: how many lines were sent.
        #[serde(skip_serializing_if = "Option::is_none")]
        missed: Option<usize>,
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

    /// Joins `channel`, sends what was said after `since`, and says so; or says why not.
    async fn join(&mut self, conn: &mut Conn, channel: &str, since: Option<Position>) {
        if since.as_ref().is_some_and(|p| p.epoch.len() > MAX_EPOCH) {
            return Self::error(
                conn,
                "cannot join: that position is not one of this server's",
            );
        }
        let recovery = match conn.join_since(channel, since.as_ref()).await {
            Ok(recovery) => recovery,
            Err(e) => return Self::error(conn, &format!("cannot join: {e}")),
        };
        let missed = recovery.publications.len();
        for publication in recovery.publications {
            self.on_publication(conn, publication);
        }
        let position = recovery.position.as_ref();
        let asked = since.is_some();
        Self::reply(
            conn,
            &Event::Joined {
                channel,
                offset: position.map(|p| p.offset),
                epoch: position.map(|p| p.epoch.as_str()),
                recovered: asked.then_some(recovery.complete),
                missed: asked.then_some(missed),
            },
        );
    }

    /// Sends `event` to `to` as this connection, or says why not.
    fn send_to(conn: &mut Conn, to: Target, event: &Event<'_>) {
        let message = Message::json(event).expect("chat events serialize");
        if let Err(e) = conn.send_to(to, message) {
            Self::error(conn, &format!("cannot send: {e}"));
        }
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
            self.join(conn, &channel, None).await;
        }
    }

    /// A line in a channel with history: with its position on the wire, formatted once
    /// for every member on this node.
    fn on_publication(&mut self, conn: &mut Conn, publication: Publication) {
        let _ = conn.send_prepared(&publication.frame_with(with_position));
    }

    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        let Ok(command) = msg.parse_json::<Command>() else {
            return Self::error(
                conn,
                "bad command: expected a JSON object with a known \"type\" and its fields",
            );
        };
        match command {
            Command::Join { channel, since } => self.join(conn, &channel, since).await,
            Command::Leave { channel } => {
                if conn.leave(&channel) {
                    Self::reply(conn, &Event::Left { channel: &channel });
                } else {
                    Self::error(conn, "not a member of that channel");
                }
            }
            Command::Say { channel, text } => {
                if text.chars().count() > MAX_TEXT {
                    return Self::error(conn, "text too long");
                }
                if !conn.is_member(&channel) {
                    return Self::error(conn, "join the channel before you say something there");
                }
                let event = Event::Message {
                    channel: &channel,
                    from: &self.name,
                    text: &text,
                };
                Self::send_to(conn, Target::channel(channel.as_str()), &event);
            }
            Command::Whisper { user, text } => {
                if text.chars().count() > MAX_TEXT {
                    return Self::error(conn, "text too long");
                }
                if user.len() > MAX_USER {
                    return Self::error(conn, "no such user: user ids are at most 256 bytes");
                }
                let event = Event::Whisper {
                    from: &self.name,
                    text: &text,
                };
                Self::send_to(conn, Target::user(user.as_str()), &event);
            }
            Command::Members { channel } => match conn.hub().members_everywhere(&channel).await {
                Ok(members) => Self::reply(
                    conn,
                    &Event::Members {
                        channel: &channel,
                        members,
                    },
                ),
                Err(e @ HubError::TooLong { .. }) => {
                    Self::error(conn, &format!("cannot list: {e}"))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing members failed");
                    Self::error(conn, "presence is unavailable right now");
                }
            },
        }
    }
}

/// Who may join a channel and who may say something in it: the `[hub.channels]` table
/// of the config, by exact name or by a prefix ending in `*` (the longest match wins).
/// A channel no rule matches is open to everyone.
#[derive(Debug, Clone, Default)]
pub struct ChatRules {
    exact: BTreeMap<String, ChannelRule>,
    /// By prefix, longest first.
    prefixes: Vec<(String, ChannelRule)>,
}

impl ChatRules {
    /// The rules of `[hub.channels]`.
    pub fn new(channels: &BTreeMap<String, ChannelRule>) -> Self {
        let mut rules = ChatRules::default();
        for (pattern, rule) in channels {
            match pattern.strip_suffix('*') {
                Some(prefix) => rules.prefixes.push((prefix.to_owned(), rule.clone())),
                None => {
                    rules.exact.insert(pattern.clone(), rule.clone());
                }
            }
        }
        rules
            .prefixes
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        rules
    }

    fn rule(&self, channel: &str) -> Option<&ChannelRule> {
        self.exact.get(channel).or_else(|| {
            self.prefixes
                .iter()
                .find(|(prefix, _)| channel.starts_with(prefix.as_str()))
                .map(|(_, rule)| rule)
        })
    }
}

impl HubPolicy for ChatRules {
    fn may_join(&self, who: &Caller<'_>, channel: &str) -> Result<(), Refused> {
        match self.rule(channel).and_then(|rule| rule.join.as_ref()) {
            Some(users) if !users.iter().any(|u| u == who.user_id) => {
                Err(Refused::new("this channel is for its members only"))
            }
            _ => Ok(()),
        }
    }

    fn may_send(&self, who: &Caller<'_>, to: &Target) -> Result<(), Refused> {
        let Target::Channel(channel) = to else {
            return Ok(());
        };
        match self.rule(channel).and_then(|rule| rule.say.as_ref()) {
            Some(users) if !users.iter().any(|u| u == who.user_id) => {
                Err(Refused::new("only some users may speak in this channel"))
            }
            _ => Ok(()),
        }
    }
}

/// A chat line as published (a `message` event) with its position added: `offset`,
/// `epoch`, and `"recovered":true` when it comes from history. Anything else goes as it
/// was published.
fn with_position(publication: &Publication) -> Message {
    let message = publication.message();
    let Some(object) = message
        .as_text()
        .and_then(|text| text.strip_suffix('}'))
        .filter(|body| body.starts_with('{') && body.len() > 1)
    else {
        return message.clone();
    };
    let position = publication.position();
    let epoch = serde_json::to_string(&position.epoch).expect("a string serializes");
    let recovered = if publication.is_recovered() {
        ",\"recovered\":true"
    } else {
        ""
    };
    Message::text(format!(
        "{object},\"offset\":{},\"epoch\":{epoch}{recovered}}}",
        position.offset
    ))
}

/// Display names: 1 to 32 letters, digits, `-`, `_` or `.`.
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
