//! The in-process registry: which sessions exist, which user owns them, which channels
//! they joined and which unique names they hold.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{Member, NameTaken, Target};
use crate::queue::SessionHandle;

/// A connection's key in the registry: unique for the life of the process, unlike a
/// session id, which an authenticator may reuse.
pub(crate) type ConnId = u64;

struct Entry {
    session_id: Arc<str>,
    user_id: Arc<str>,
    handle: SessionHandle,
    channels: Vec<Arc<str>>,
    names: Vec<Arc<str>>,
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
    pub(crate) fn insert(
        &mut self,
        id: ConnId,
        session_id: Arc<str>,
        user_id: Arc<str>,
        handle: SessionHandle,
    ) {
        // A reused session id points at the newest connection.
        self.by_session.insert(session_id.clone(), id);
        self.by_user.entry(user_id.clone()).or_default().insert(id);
        self.conns.insert(
            id,
            Entry {
                session_id,
                user_id,
                handle,
                channels: Vec::new(),
                names: Vec::new(),
            },
        );
    }

    /// Forgets a connection: its channels, names, user and session entries.
    pub(crate) fn remove(&mut self, id: ConnId) {
        let Some(entry) = self.conns.remove(&id) else {
            return;
        };
        if self.by_session.get(&entry.session_id) == Some(&id) {
            self.by_session.remove(&entry.session_id);
        }
        if let MapEntry::Occupied(mut sessions) = self.by_user.entry(entry.user_id) {
            sessions.get_mut().remove(&id);
            if sessions.get().is_empty() {
                sessions.remove();
            }
        }
        for channel in entry.channels {
            self.remove_member(&channel, id);
        }
        for name in entry.names {
            self.names.remove(&name);
        }
    }

    /// Adds a connection to a channel; false if it was already a member.
    pub(crate) fn join(&mut self, id: ConnId, channel: &str) -> bool {
        let Some(entry) = self.conns.get_mut(&id) else {
            return false;
        };
        if entry.channels.iter().any(|c| &**c == channel) {
            return false;
        }
        let channel: Arc<str> = match self.channels.get_key_value(channel) {
            Some((key, _)) => key.clone(),
            None => Arc::from(channel),
        };
        entry.channels.push(channel.clone());
        self.channels
            .entry(channel)
            .or_default()
            .insert(id, entry.handle.clone());
        true
    }

    /// Removes a connection from a channel; false if it was not a member.
    pub(crate) fn leave(&mut self, id: ConnId, channel: &str) -> bool {
        let Some(entry) = self.conns.get_mut(&id) else {
            return false;
        };
        let Some(at) = entry.channels.iter().position(|c| &**c == channel) else {
            return false;
        };
        entry.channels.swap_remove(at);
        self.remove_member(channel, id);
        true
    }

    fn remove_member(&mut self, channel: &str, id: ConnId) {
        if let Some(members) = self.channels.get_mut(channel) {
            members.remove(&id);
            if members.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    /// Registers `name` for the connection, if no one holds it.
    pub(crate) fn register_name(&mut self, id: ConnId, name: &str) -> Result<(), NameTaken> {
        let Some(entry) = self.conns.get_mut(&id) else {
            return Err(NameTaken(name.to_owned()));
        };
        match self.names.get(name) {
            Some(&holder) if holder == id => Ok(()),
            Some(_) => Err(NameTaken(name.to_owned())),
            None => {
                let name: Arc<str> = Arc::from(name);
                entry.names.push(name.clone());
                self.names.insert(name, id);
                Ok(())
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

    /// The connection id of a session, for delivering by session id.
    pub(crate) fn conn_of_session(&self, session_id: &str) -> Option<ConnId> {
        self.by_session.get(session_id).copied()
    }

    /// Calls `f` with the handle of every local recipient of `target`.
    pub(crate) fn for_each(&self, target: &Target, mut f: impl FnMut(&SessionHandle)) {
        let handle = |id: &ConnId| self.conns.get(id).map(|e| &e.handle);
        match target {
            Target::Session(session) => {
                if let Some(h) = self.by_session.get(&**session).and_then(handle) {
                    f(h);
                }
            }
            Target::User(user) => {
                for h in self
                    .by_user
                    .get(&**user)
                    .into_iter()
                    .flatten()
                    .filter_map(handle)
                {
                    f(h);
                }
            }
            Target::UserSession { user, session } => {
                let entry = self
                    .by_session
                    .get(&**session)
                    .and_then(|id| self.conns.get(id));
                if let Some(entry) = entry.filter(|e| e.user_id == *user) {
                    f(&entry.handle);
                }
            }
            Target::Channel(channel) => {
                for h in self
                    .channels
                    .get(&**channel)
                    .into_iter()
                    .flat_map(|m| m.values())
                {
                    f(h);
                }
            }
            Target::Name(name) => {
                if let Some(h) = self.names.get(&**name).and_then(handle) {
                    f(h);
                }
            }
        }
    }

    /// The local members of a channel.
    pub(crate) fn members(&self, channel: &str) -> Vec<Member> {
        let Some(members) = self.channels.get(channel) else {
            return Vec::new();
        };
        members
            .keys()
            .filter_map(|id| self.conns.get(id))
            .map(|e| Member {
                session_id: e.session_id.to_string(),
                user_id: e.user_id.to_string(),
            })
            .collect()
    }

    /// The session and user of a connection.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn member(&self, id: ConnId) -> Option<Member> {
        self.conns.get(&id).map(|e| Member {
            session_id: e.session_id.to_string(),
            user_id: e.user_id.to_string(),
        })
    }

    /// Every (channel, member) pair on this node.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn memberships(&self) -> Vec<(String, Member)> {
        self.channels
            .iter()
            .flat_map(|(channel, members)| {
                members
                    .keys()
                    .filter_map(|id| self.member(*id))
                    .map(move |m| (channel.to_string(), m))
            })
            .collect()
    }

    pub(crate) fn channels_of(&self, id: ConnId) -> Vec<String> {
        self.conns
            .get(&id)
            .map(|e| e.channels.iter().map(|c| c.to_string()).collect())
            .unwrap_or_default()
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
