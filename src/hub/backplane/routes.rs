//! Where things live in Redis: the pub/sub channel of each route, and the presence keys
//! of each channel.
//!
//! ```text
//! {prefix}:{c:lobby}                      pub/sub: deliveries to channel "lobby"
//! {prefix}:{u:alice}                      pub/sub: deliveries to user "alice"
//! {prefix}:{s:9f2c...}                    pub/sub: deliveries to a session (and to a
//!                                         user's session: the receiver checks the user)
//! {prefix}:{n:referee}                    pub/sub: deliveries to a unique name
//! {prefix}:deliver                        pub/sub: everything, with `Routing::Broadcast`
//! {prefix}:{c:lobby}:members:<node>       hash: one node's members of "lobby",
//!                                         connection id -> [session, user]; expires
//!                                         unless the node refreshes it
//! {prefix}:{c:lobby}:nodes                set: the nodes with members of "lobby"
//! {prefix}:{c:lobby}:stream               stream: the history of "lobby", if it keeps
//!                                         one; entry id = offset, fields e (the
//!                                         envelope as published) and t (Redis's time)
//! {prefix}:{c:lobby}:position             hash: its epoch and last offset
//! ```
//!
//! The part in braces is the Redis Cluster hash tag: a channel's deliveries, its presence
//! keys and its history hash to one slot (so one script can append to the stream and
//! publish), so one shard holds them, and different channels spread
//! over the shards. Names are written as they are, but for `%`, `{` and `}`, which are
//! percent-escaped so that no name can end the tag early or start another.

use std::fmt::Write as _;

use super::super::{RouteKind, Target};

/// The key builder for one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix`, which must not contain `{` or `}` (the config refuses one
    /// that does).
    pub(super) fn new(prefix: &str) -> Self {
        debug_assert!(!prefix.contains(['{', '}']));
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// The pub/sub channel of a route.
    pub(super) fn route(&self, kind: RouteKind, name: &str) -> String {
        let tag = match kind {
            RouteKind::Channel => 'c',
            RouteKind::User => 'u',
            RouteKind::Session => 's',
            RouteKind::Name => 'n',
        };
        let mut key = String::with_capacity(self.prefix.len() + name.len() + 6);
        key.push_str(&self.prefix);
        key.push_str(":{");
        key.push(tag);
        key.push(':');
        escape_into(&mut key, name);
        key.push('}');
        key
    }

    /// The route a delivery to `target` is published on.
    pub(super) fn route_of(&self, target: &Target) -> String {
        match target {
            Target::Channel(c) => self.route(RouteKind::Channel, c),
            Target::User(u) => self.route(RouteKind::User, u),
            Target::Session(s) | Target::UserSession { session: s, .. } => {
                self.route(RouteKind::Session, s)
            }
            Target::Name(n) => self.route(RouteKind::Name, n),
        }
    }

    /// The one pub/sub channel of [`super::Routing::Broadcast`].
    pub(super) fn broadcast(&self) -> String {
        format!("{}:deliver", self.prefix)
    }

    /// One node's members of a channel.
    pub(super) fn members(&self, channel: &str, node: u128) -> String {
        let mut key = self.route(RouteKind::Channel, channel);
        let _ = write!(key, ":members:{node:032x}");
        key
    }

    /// The nodes with members of a channel.
    pub(super) fn nodes(&self, channel: &str) -> String {
        self.channel_key(channel, ":nodes")
    }

    /// A channel's history.
    pub(super) fn stream(&self, channel: &str) -> String {
        self.channel_key(channel, ":stream")
    }

    /// A channel's epoch and last offset.
    pub(super) fn position(&self, channel: &str) -> String {
        self.channel_key(channel, ":position")
    }

    fn channel_key(&self, channel: &str, suffix: &str) -> String {
        let mut key = self.route(RouteKind::Channel, channel);
        key.push_str(suffix);
        key
    }
}

fn escape_into(out: &mut String, name: &str) {
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use redis::cluster_routing::Slot;

    use super::*;

    #[test]
    fn a_channels_deliveries_and_presence_share_one_slot() {
        let keys = Keys::new("estuary");
        let route = keys.route(RouteKind::Channel, "lobby");
        assert_eq!(route, "estuary:{c:lobby}");
        let slot = Slot::for_key(&route);
        assert_eq!(Slot::for_key(keys.members("lobby", 7)), slot);
        assert_eq!(Slot::for_key(keys.nodes("lobby")), slot);
        assert_eq!(keys.stream("lobby"), "estuary:{c:lobby}:stream");
        assert_eq!(Slot::for_key(keys.stream("lobby")), slot);
        assert_eq!(Slot::for_key(keys.position("lobby")), slot);
        assert_ne!(
            Slot::for_key(keys.route(RouteKind::Channel, "kitchen")),
            slot,
            "different channels spread over slots"
        );
    }

    #[test]
    fn braces_in_a_name_cannot_move_the_hash_tag() {
        let keys = Keys::new("estuary");
        let sneaky = keys.route(RouteKind::Channel, "a}b{c%");
        assert_eq!(sneaky, "estuary:{c:a%7Db%7Bc%25}");
        // Two names differing only by an escaped character stay apart.
        assert_ne!(
            keys.route(RouteKind::Channel, "%7D"),
            keys.route(RouteKind::Channel, "}")
        );
        assert_eq!(
            Slot::for_key(keys.members("a}b{c%", 1)),
            Slot::for_key(&sneaky)
        );
    }

    #[test]
    fn a_users_session_is_routed_by_its_session() {
        let keys = Keys::new("p");
        assert_eq!(
            keys.route_of(&Target::user_session("alice", "s1")),
            keys.route_of(&Target::session("s1"))
        );
        assert_ne!(
            keys.route_of(&Target::user("s1")),
            keys.route_of(&Target::session("s1"))
        );
    }
}
