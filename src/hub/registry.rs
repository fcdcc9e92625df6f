//! The in-process registry: which connections exist, which user owns them, which
//! channels they joined and which unique names they hold.
//!
//! Connections are keyed by a [`ConnId`] the hub makes, never by session id: a session id
//! may come from an authenticator (and so from a client), and two connections must never
//! share an entry. A session id is live on at most one connection of a node; an id the
//! authenticator chose is reached only together with its user ([`Target::UserSession`]),
//! so that no user can pick another user's id and receive their deliveries.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use estuary_middleware::Identity;

use super::{Caller, HubError, Member, RouteKind, Target};
use crate::queue::SessionHandle;

/// A connection's key in the registry: unique for the life of the process.
pub(crate) type ConnId = u64;

/// A connection as it registers.
pub(crate) struct Registrant {
    pub(crate) session_id: Arc<str>,
    pub(crate) user_id: Arc<str>,
    pub(crate) identity: Option<Identity>,
    /// Whether the authenticator chose the session id (rather than the server drawing
    /// 128 random bits).
    pub(crate) chosen_id: bool,
    pub(crate) handle: SessionHandle,
}

struct Entry {
    session_id: Arc<str>,
    user_id: Arc<str>,
    identity: Option<Identity>,
    chosen_id: bool,
    handle: SessionHandle,
    /// A list, not a set: it is bounded by `HubLimits::max_channels_per_connection`, and
    /// a list costs an idle connection 24 bytes.
    channels: Vec<Arc<str>>,
    names: Vec<Arc<str>>,
}

/// A route of this node that gained its first local holder, or lost its last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteChange {
    pub(crate) kind: RouteKind,
    pub(crate) name: Arc<str>,
    pub(crate) wanted: bool,
}

/// What forgetting a connection changed.
pub(crate) struct Removed {
    pub(crate) routes: Vec<RouteChange>,
    /// The channels it was in, and whether it was the last local member of each.
    pub(crate) channels: Vec<(Arc<str>, bool)>,
}

/// What a join did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Joined {
    /// It was a member already.
    Already,
    /// It is a member now; `first` if no other local connection was.
    Now { channel: Arc<str>, first: bool },
}

#[derive(Default)]
pub(crate) struct Registry {
    conns: HashMap<ConnId, Entry>,
    by_session: HashMap<Arc<str>, ConnId>,
    /// A set, not a list: a user with many sessions (a service account, a load test) must
    /// not make each disconnect a scan of all of them.
    by_user: HashMap<Arc<str>, HashSet<ConnId>>,
    channels: HashMap<Arc<str>, HashMap<ConnId, SessionHandle>>,
    names: HashMap<Arc<str>, ConnId>,
}

impl Registry {
    /// Adds a connection; refused if its session id is live on another connection here.
    pub(crate) fn insert(
        &mut self,
        id: ConnId,
        who: Registrant,
    ) -> Result<Vec<RouteChange>, HubError> {
        let session = match self.by_session.entry(who.session_id.clone()) {
            MapEntry::Occupied(_) => return Err(HubError::SessionIdInUse),
            MapEntry::Vacant(vacant) => {
                vacant.insert(id);
                RouteChange {
                    kind: RouteKind::Session,
                    name: who.session_id.clone(),
                    wanted: true,
                }
            }
        };
        let mut routes = vec![session];
        let sessions = self.by_user.entry(who.user_id.clone()).or_default();
        if sessions.is_empty() {
            routes.push(RouteChange {
                kind: RouteKind::User,
                name: who.user_id.clone(),
                wanted: true,
            });
        }
        sessions.insert(id);
        self.conns.insert(
            id,
            Entry {
                session_id: who.session_id,
                user_id: who.user_id,
                identity: who.identity,
                chosen_id: who.chosen_id,
                handle: who.handle,
                channels: Vec::new(),
                names: Vec::new(),
            },
        );
        Ok(routes)
    }

    /// Forgets a connection: its channels, names, user and session entries.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Removed> {
        let entry = self.conns.remove(&id)?;
        let mut routes = Vec::new();
        if self.by_session.get(&entry.session_id) == Some(&id) {
            self.by_session.remove(&entry.session_id);
            routes.push(RouteChange {
                kind: RouteKind::Session,
                name: entry.session_id.clone(),
                wanted: false,
            });
        }
        if let MapEntry::Occupied(mut sessions) = self.by_user.entry(entry.user_id.clone()) {
            sessions.get_mut().remove(&id);
            if sessions.get().is_empty() {
                sessions.remove();
                routes.push(RouteChange {
                    kind: RouteKind::User,
                    name: entry.user_id.clone(),
                    wanted: false,
                });
            }
        }
        let mut channels = Vec::with_capacity(entry.channels.len());
        for channel in entry.channels {
            let last = self.remove_member(&channel, id);
            if last {
                routes.push(RouteChange {
                    kind: RouteKind::Channel,
                    name: channel.clone(),
                    wanted: false,
                });
            }
            channels.push((channel, last));
        }
        for name in entry.names {
            self.names.remove(&name);
            routes.push(RouteChange {
                kind: RouteKind::Name,
                name,
                wanted: false,
            });
        }
        Some(Removed { routes, channels })
    }

    /// Adds a connection to a channel, if it is in fewer than `max` channels.
    pub(crate) fn join(
        &mut self,
        id: ConnId,
        channel: &str,
        max: usize,
    ) -> Result<Joined, HubError> {
        let entry = self.conns.get_mut(&id).ok_or(HubError::NoSuchSession)?;
        if entry.channels.iter().any(|c| &**c == channel) {
            return Ok(Joined::Already);
        }
        if entry.channels.len() >= max {
            return Err(HubError::TooManyChannels { max });
        }
        let (channel, members) = match self.channels.get_key_value(channel) {
            Some((key, _)) => (key.clone(), None),
            None => (Arc::from(channel), Some(HashMap::new())),
        };
        let first = members.is_some();
        entry.channels.push(channel.clone());
        self.channels
            .entry(channel.clone())
            .or_insert_with(|| members.unwrap_or_default())
            .insert(id, entry.handle.clone());
        Ok(Joined::Now { channel, first })
    }

    /// Removes a connection from a channel: `None` if it was not a member, else whether it
    /// was the last local member.
    pub(crate) fn leave(&mut self, id: ConnId, channel: &str) -> Option<(Arc<str>, bool)> {
        let entry = self.conns.get_mut(&id)?;
        let at = entry.channels.iter().position(|c| &**c == channel)?;
        let channel = entry.channels.swap_remove(at);
        let last = self.remove_member(&channel, id);
        Some((channel, last))
    }

    /// True if `id` was the channel's last local member.
    fn remove_member(&mut self, channel: &str, id: ConnId) -> bool {
        if let Some(members) = self.channels.get_mut(channel) {
            members.remove(&id);
            if members.is_empty() {
                self.channels.remove(channel);
                return true;
            }
        }
        false
    }

    /// Registers `name` for the connection, if no one holds it; true if it is new.
    pub(crate) fn register_name(&mut self, id: ConnId, name: &str) -> Result<bool, HubError> {
        let entry = self.conns.get_mut(&id).ok_or(HubError::NoSuchSession)?;
        match self.names.get(name) {
            Some(&holder) if holder == id => Ok(false),
            Some(_) => Err(HubError::NameTaken {
                name: name.to_owned(),
            }),
            None => {
                let name: Arc<str> = Arc::from(name);
                entry.names.push(name.clone());
                self.names.insert(name, id);
                Ok(true)
            }
        }
    }

    /// Releases a name the connection holds; false if it did not hold it.
    pub(crate) fn unregister_name(&mut self, id: ConnId, name: &str) -> bool {
        if self.names.get(name) != Some(&id) {
            return false;
        }
        self.names.remove(name);
        if let Some(entry) = self.conns.get_mut(&id) {
            entry.names.retain(|n| &**n != name);
        }
        true
    }

    /// The connection a session target names, if it is here.
    fn session_entry(&self, target: &Target) -> Option<(ConnId, &Entry)> {
        let (session, user) = match target {
            Target::Session(session) => (session, None),
            Target::UserSession { user, session } => (session, Some(user)),
            _ => return None,
        };
        let id = *self.by_session.get(&**session)?;
        let entry = self.conns.get(&id)?;
        let matches = match user {
            Some(user) => entry.user_id == *user,
            // An id the authenticator chose is unique only within its user.
            None => !entry.chosen_id,
        };
        matches.then_some((id, entry))
    }

    /// Calls `f` with the id and handle of every local recipient of `target`.
    pub(crate) fn for_each(&self, target: &Target, mut f: impl FnMut(ConnId, &SessionHandle)) {
        match target {
            Target::Session(_) | Target::UserSession { .. } => {
                if let Some((id, entry)) = self.session_entry(target) {
                    f(id, &entry.handle);
                }
            }
            Target::User(user) => {
                for id in self.by_user.get(&**user).into_iter().flatten() {
                    if let Some(entry) = self.conns.get(id) {
                        f(*id, &entry.handle);
                    }
                }
            }
            Target::Channel(channel) => {
                for (id, handle) in self.channels.get(&**channel).into_iter().flatten() {
                    f(*id, handle);
                }
            }
            Target::Name(name) => {
                if let Some(id) = self.names.get(&**name) {
                    if let Some(entry) = self.conns.get(id) {
                        f(*id, &entry.handle);
                    }
                }
            }
        }
    }

    /// The connections `target` reaches here.
    pub(crate) fn conns_of(&self, target: &Target) -> Vec<ConnId> {
        let mut ids = Vec::new();
        self.for_each(target, |id, _| ids.push(id));
        ids
    }

    /// Calls `f` with the connection as a policy sees it.
    pub(crate) fn caller<R>(&self, id: ConnId, f: impl FnOnce(&Caller<'_>) -> R) -> Option<R> {
        let entry = self.conns.get(&id)?;
        Some(f(&Caller {
            user_id: &entry.user_id,
            session_id: &entry.session_id,
            identity: entry.identity.as_ref(),
        }))
    }

    /// The local members of a channel.
    pub(crate) fn members(&self, channel: &str) -> Vec<Member> {
        let Some(members) = self.channels.get(channel) else {
            return Vec::new();
        };
        members.keys().filter_map(|id| self.member(*id)).collect()
    }

    /// The queue of a connection.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn handle(&self, id: ConnId) -> Option<&SessionHandle> {
        self.conns.get(&id).map(|e| &e.handle)
    }

    /// The session and user of a connection.
    pub(crate) fn member(&self, id: ConnId) -> Option<Member> {
        self.conns.get(&id).map(|e| Member {
            session_id: e.session_id.to_string(),
            user_id: e.user_id.to_string(),
        })
    }

    /// Every channel with a local member, and its members' connection ids.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn channel_members(&self) -> Vec<(Arc<str>, Vec<ConnId>)> {
        self.channels
            .iter()
            .map(|(channel, members)| (channel.clone(), members.keys().copied().collect()))
            .collect()
    }

    /// The local connection ids in one channel.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn members_of(&self, channel: &str) -> Vec<ConnId> {
        self.channels
            .get(channel)
            .map(|members| members.keys().copied().collect())
            .unwrap_or_default()
    }

    /// How many local members a channel has.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn member_count(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, HashMap::len)
    }

    /// Whether a channel has a local member.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn has_channel(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    /// Every route this node holds a session for: its channels, users, sessions, names.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn routes(&self) -> Vec<(RouteKind, Arc<str>)> {
        let channels = self
            .channels
            .keys()
            .map(|c| (RouteKind::Channel, c.clone()));
        let users = self.by_user.keys().map(|u| (RouteKind::User, u.clone()));
        let sessions = self
            .by_session
            .keys()
            .map(|s| (RouteKind::Session, s.clone()));
        let names = self.names.keys().map(|n| (RouteKind::Name, n.clone()));
        channels.chain(users).chain(sessions).chain(names).collect()
    }

    /// The routes a connection needs before anything can reach it: its session's and its
    /// user's.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn own_routes(&self, id: ConnId) -> Vec<(RouteKind, Arc<str>)> {
        self.conns
            .get(&id)
            .map(|e| {
                vec![
                    (RouteKind::Session, e.session_id.clone()),
                    (RouteKind::User, e.user_id.clone()),
                ]
            })
            .unwrap_or_default()
    }

    pub(crate) fn channels_of(&self, id: ConnId) -> Vec<String> {
        self.conns
            .get(&id)
            .map(|e| e.channels.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default()
    }

    pub(crate) fn is_member(&self, id: ConnId, channel: &str) -> bool {
        self.conns
            .get(&id)
            .is_some_and(|e| e.channels.iter().any(|c| &**c == channel))
    }

    pub(crate) fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.conns.len(),
            self.by_user.len(),
            self.channels.len(),
            self.names.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::SlowConsumerPolicy;

    fn registrant(session: &str, user: &str, chosen_id: bool) -> Registrant {
        Registrant {
            session_id: session.into(),
            user_id: user.into(),
            identity: None,
            chosen_id,
            handle: SessionHandle::new(1 << 20, SlowConsumerPolicy::Disconnect).0,
        }
    }

    fn reached(registry: &Registry, target: &Target) -> Vec<ConnId> {
        let mut ids = registry.conns_of(target);
        ids.sort_unstable();
        ids
    }

    #[test]
    fn a_live_session_id_cannot_be_registered_twice() {
        let mut registry = Registry::default();
        registry
            .insert(1, registrant("tab-1", "alice", true))
            .unwrap();
        let err = registry
            .insert(2, registrant("tab-1", "mallory", true))
            .unwrap_err();
        assert!(matches!(err, HubError::SessionIdInUse), "{err}");
        assert_eq!(
            reached(&registry, &Target::user_session("alice", "tab-1")),
            [1]
        );
        assert!(reached(&registry, &Target::user("mallory")).is_empty());
        // Once the first is gone, the id is free again.
        registry.remove(1);
        registry
            .insert(2, registrant("tab-1", "mallory", true))
            .unwrap();
        assert!(reached(&registry, &Target::user_session("alice", "tab-1")).is_empty());
    }

    #[test]
    fn a_chosen_session_id_is_reached_only_with_its_user() {
        let mut registry = Registry::default();
        registry
            .insert(1, registrant("tab-1", "alice", true))
            .unwrap();
        registry
            .insert(2, registrant("f00d", "bob", false))
            .unwrap();
        assert!(reached(&registry, &Target::session("tab-1")).is_empty());
        assert_eq!(
            reached(&registry, &Target::user_session("alice", "tab-1")),
            [1]
        );
        assert!(reached(&registry, &Target::user_session("bob", "tab-1")).is_empty());
        assert_eq!(reached(&registry, &Target::session("f00d")), [2]);
        assert_eq!(
            reached(&registry, &Target::user_session("bob", "f00d")),
            [2]
        );
    }

    #[test]
    fn routes_change_on_the_first_holder_and_after_the_last() {
        let mut registry = Registry::default();
        let routes = registry
            .insert(1, registrant("s1", "alice", false))
            .unwrap();
        assert_eq!(routes.len(), 2, "session and user: {routes:?}");
        let routes = registry
            .insert(2, registrant("s2", "alice", false))
            .unwrap();
        assert_eq!(routes.len(), 1, "the user is routed already: {routes:?}");
        let first = registry.join(1, "room", 10).unwrap();
        assert!(matches!(first, Joined::Now { first: true, .. }));
        assert!(matches!(
            registry.join(2, "room", 10).unwrap(),
            Joined::Now { first: false, .. }
        ));
        assert_eq!(registry.join(2, "room", 10).unwrap(), Joined::Already);
        assert_eq!(registry.leave(1, "room").map(|(_, last)| last), Some(false));
        let removed = registry.remove(2).unwrap();
        assert_eq!(removed.channels.len(), 1);
        assert!(removed.channels[0].1, "the last member left");
        let kinds: Vec<RouteKind> = removed.routes.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [RouteKind::Session, RouteKind::Channel]);
        let removed = registry.remove(1).unwrap();
        let kinds: Vec<RouteKind> = removed.routes.iter().map(|r| r.kind).collect();
        assert_eq!(kinds, [RouteKind::Session, RouteKind::User]);
        assert_eq!(registry.counts(), (0, 0, 0, 0));
    }

    #[test]
    fn joins_stop_at_the_cap() {
        let mut registry = Registry::default();
        registry
            .insert(1, registrant("s1", "alice", false))
            .unwrap();
        for i in 0..3 {
            registry.join(1, &format!("c{i}"), 3).unwrap();
        }
        let err = registry.join(1, "one more", 3).unwrap_err();
        assert!(matches!(err, HubError::TooManyChannels { max: 3 }), "{err}");
        assert_eq!(registry.join(1, "c0", 3).unwrap(), Joined::Already);
        registry.leave(1, "c0");
        registry.join(1, "one more", 3).unwrap();
    }
}
