use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::protocol::{Message, Prepared};

/// Where a publication sits in its channel's stream: its offset, counted from 1 and one
/// more for each publication, and the epoch of the stream, which changes when the stream
/// is lost (a Redis restarted empty, an in-process stream evicted or expired) and its
/// offsets start again.
///
/// A client keeps the position of the last publication it saw and hands it back when it
/// joins again ([`Conn::join_since`](crate::Conn::join_since)), to be sent what it missed.
/// It serializes as `{"offset":42,"epoch":"9f3c..."}`.
///
/// ```
/// use estuary::Position;
///
/// let seen = Position::new(41, "9f3c1a7e0b2d4c68");
/// let json = serde_json::to_string(&seen).unwrap();
/// assert_eq!(json, r#"{"offset":41,"epoch":"9f3c1a7e0b2d4c68"}"#);
/// let back: Position = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, seen);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// The publication's offset in its stream: 1 for the first, then one more each time.
    /// 0 is the position of a stream before its first publication.
    pub offset: u64,
    /// The stream's epoch: offsets of different epochs are of different streams.
    pub epoch: String,
}

impl Position {
    /// The position `offset` in the stream of `epoch`.
    pub fn new(offset: u64, epoch: impl Into<String>) -> Self {
        Self {
            offset,
            epoch: epoch.into(),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.offset, self.epoch)
    }
}

/// A message published to a channel with history, as it reaches one of the channel's
/// members: the message, its channel, its [`Position`] in the channel's stream, and
/// whether it is live or recovered from history.
///
/// Publications arrive in the handler's
/// [`on_publication`](crate::Handler::on_publication), which puts them on the wire; by
/// default the message goes as it was published. A handler that wants the position on
/// the wire formats the message with [`Publication::frame_with`]: formatted once on this
/// node for every member whose handler formats it with the same function, the way a
/// plain channel message is encoded once for all its recipients.
///
/// A clone shares the message and the formatted frames.
///
/// ```
/// use estuary::{Conn, Handler, Message, Publication};
///
/// /// Sends each line as `42 text`: its offset, then the text.
/// fn numbered(publication: &Publication) -> Message {
///     let text = publication.message().as_text().unwrap_or_default();
///     Message::text(format!("{} {text}", publication.position().offset))
/// }
///
/// #[derive(Clone)]
/// struct Numbered;
///
/// impl Handler for Numbered {
///     async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}
///
///     fn on_publication(&mut self, conn: &mut Conn, publication: Publication) {
///         let _ = conn.send_prepared(&publication.frame_with(numbered));
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Publication(Arc<Inner>);

struct Inner {
    channel: Arc<str>,
    position: Position,
    frame: Prepared,
    recovered: bool,
    /// The frame made by the first `frame_with` on this node, and the function that made
    /// it (by address).
    formatted: OnceLock<(usize, Prepared)>,
}

impl Publication {
    /// A publication of `frame` at `position` in `channel`'s stream; `recovered` when it
    /// comes from history rather than live.
    pub(crate) fn new(
        channel: Arc<str>,
        position: Position,
        frame: Prepared,
        recovered: bool,
    ) -> Self {
        Publication(Arc::new(Inner {
            channel,
            position,
            frame,
            recovered,
            formatted: OnceLock::new(),
        }))
    }

    /// The channel it was published to.
    pub fn channel(&self) -> &str {
        &self.0.channel
    }

    pub(crate) fn channel_arc(&self) -> &Arc<str> {
        &self.0.channel
    }

    /// Its position in the channel's stream.
    pub fn position(&self) -> &Position {
        &self.0.position
    }

    /// The message as it was published.
    pub fn message(&self) -> &Message {
        self.0.frame.message()
    }

    /// The message as it was published, as a frame encoded once for every recipient.
    pub fn frame(&self) -> &Prepared {
        &self.0.frame
    }

    /// True if it was sent from the channel's history, to a member that joined with a
    /// position from before it ([`Conn::join_since`](crate::Conn::join_since)); false if
    /// it was delivered live.
    pub fn is_recovered(&self) -> bool {
        self.0.recovered
    }

    /// The publication as `format` puts it on the wire, as a frame.
    ///
    /// The first call formats it and keeps the frame; a later call with the same function,
    /// from any member's handler on this node, gets that frame back without formatting
    /// (or compressing) it again. A call with another function formats afresh.
    pub fn frame_with(&self, format: fn(&Publication) -> Message) -> Prepared {
        let id = format as usize;
        let (made_by, frame) = self
            .0
            .formatted
            .get_or_init(|| (id, Prepared::new(format(self))));
        if *made_by == id {
            frame.clone()
        } else {
            Prepared::new(format(self))
        }
    }

    /// What it counts against a connection's queue bound: its frame, and 64 for the
    /// queue's bookkeeping.
    pub(crate) fn cost(&self) -> usize {
        64 + self.0.frame.len()
    }
}

impl fmt::Debug for Publication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publication")
            .field("channel", &self.0.channel)
            .field("position", &self.0.position)
            .field("len", &self.0.frame.message().len())
            .field("recovered", &self.0.recovered)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static FORMATTED: AtomicUsize = AtomicUsize::new(0);

    fn counted(publication: &Publication) -> Message {
        FORMATTED.fetch_add(1, Ordering::Relaxed);
        Message::text(format!(
            "{}:{}",
            publication.position(),
            publication.channel()
        ))
    }

    fn other(_: &Publication) -> Message {
        Message::text("other")
    }

    #[test]
    fn a_publication_is_formatted_once_per_function_for_every_clone() {
        let publication = Publication::new(
            Arc::from("lobby"),
            Position::new(7, "e1"),
            Prepared::new(Message::text("hi")),
            false,
        );
        let copies: Vec<Publication> = (0..10).map(|_| publication.clone()).collect();
        let frames: Vec<Prepared> = copies.iter().map(|p| p.frame_with(counted)).collect();
        assert_eq!(FORMATTED.load(Ordering::Relaxed), 1);
        assert!(frames
            .iter()
            .all(|f| f.message().as_text() == Some("7@e1:lobby")));
        // Shared bytes, not copies.
        assert_eq!(frames[0].payload().as_ptr(), frames[9].payload().as_ptr());
        assert_eq!(
            publication.frame_with(other).message().as_text(),
            Some("other")
        );
        assert_eq!(publication.message().as_text(), Some("hi"));
    }
}
