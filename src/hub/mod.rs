//! The hub: delivery to sessions, users, channels and unique names, from handlers and
//! from plain code, in-process or across nodes through Redis.

mod registry;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

pub(crate) use registry::ConnId;
use registry::Registry;

use crate::protocol::{Message, Prepared};
use crate::queue::{Event, SessionHandle};

/// Who a delivery goes to.
///
/// ```
/// use estuary::Target;
///
/// let everyone_in_lobby = Target::channel("lobby");
/// let alices_phone = Target::user_session("alice", "phone-1");
/// assert_ne!(everyone_in_lobby, alices_phone);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// The session with this id.
    Session(Arc<str>),
    /// Every session of this user.
    User(Arc<str>),
    /// One session of a user: delivered only if that session belongs to that user.
    UserSession {
        /// The user id.
        user: Arc<str>,
        /// The session id.
        session: Arc<str>,
    },
    /// Every member of a channel.
    Channel(Arc<str>),
    /// The session registered under a unique name.
    Name(Arc<str>),
}

impl Target {
    /// The session with this id.
    pub fn session(id: impl Into<Arc<str>>) -> Self {
        Target::Session(id.into())
    }

    /// Every session of a user.
    pub fn user(id: impl Into<Arc<str>>) -> Self {
        Target::User(id.into())
    }

    /// One session of a user.
    pub fn user_session(user: impl Into<Arc<str>>, session: impl Into<Arc<str>>) -> Self {
        Target::UserSession {
            user: user.into(),
            session: session.into(),
        }
    }

    /// Every member of a channel.
    pub fn channel(name: impl Into<Arc<str>>) -> Self {
        Target::Channel(name.into())
    }

    /// The holder of a unique name.
    pub fn name(name: impl Into<Arc<str>>) -> Self {
        Target::Name(name.into())
    }
}

/// A member of a channel, as presence reports it.
///
/// ```
/// let hub = estuary::Hub::new();
/// let members: Vec<estuary::Member> = hub.members("lobby");
/// assert!(members.is_empty());
/// ```
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Member {
    /// The member's session id.
    pub session_id: String,
    /// The member's user id.
    pub user_id: String,
}

/// A unique name is already held by another session.
///
/// ```
/// let err = estuary::NameTaken("game:42".into());
/// assert_eq!(err.to_string(), "the name \"game:42\" is already registered");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTaken(pub String);

impl fmt::Display for NameTaken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the name {:?} is already registered", self.0)
    }
}

impl std::error::Error for NameTaken {}

/// A failure of the hub's backplane: Redis unreachable, or a command failed.
///
/// ```
/// # async fn run() {
/// if let Err(e) = estuary::Hub::new().members_everywhere("lobby").await {
///     eprintln!("{e}"); // never happens without a backplane
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct HubError {
    context: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl HubError {
    #[cfg(feature = "redis")]
    pub(crate) fn redis(context: String, source: redis::RedisError) -> Self {
        Self {
            context,
            source: Box::new(source),
        }
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis: {}: {}", self.context, self.source)
    }
}

impl std::error::Error for HubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Counts of what the hub holds on this node, to watch for leaks.
///
/// ```
/// let stats = estuary::Hub::new().stats();
/// assert_eq!(stats, estuary::HubStats::default());
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Registered connections.
    pub sessions: usize,
    /// Users with at least one connection.
    pub users: usize,
    /// Channels with at least one member.
    pub channels: usize,
    /// Unique names held.
    pub names: usize,
}

/// What a delivery carries: a frame for the client, or an event for `on_event`.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Frame(Prepared),
    Event(Bytes),
}

/// Delivery to connections from anywhere: to a session, every session of a user, one
/// session of a user, every member of a channel, or the holder of a unique name.
///
/// A `Hub` is a cheap clone. Give the same hub to `WebSocketService::with_hub` and to
/// your REST handlers; every connection registers itself, joins and leaves channels
/// through its `Conn`, and is forgotten when it closes. Fan-out encodes a frame once and
/// queues the same bytes for every recipient; a slow recipient meets its slow-consumer
/// policy without slowing the others.
///
/// ```
/// use estuary::{Conn, Handler, Hub, Message, Target, WebSocketService};
///
/// #[derive(Clone)]
/// struct Chat;
///
/// impl Handler for Chat {
///     async fn on_open(&mut self, conn: &mut Conn) {
///         conn.join("lobby");
///     }
///
///     async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
///         conn.hub().send(Target::channel("lobby"), msg);
///     }
/// }
///
/// let hub = Hub::new();
/// let service = WebSocketService::new(Chat).with_hub(hub.clone());
/// // Elsewhere, e.g. in a REST handler:
/// let delivered = hub.send(Target::user("alice"), "you have mail");
/// assert_eq!(delivered, 0); // nobody is connected yet
/// # let _ = service;
/// ```
#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<HubInner>,
}

#[derive(Default)]
struct HubInner {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    #[cfg(feature = "redis")]
    backplane: Option<redis_backplane::Backplane>,
}

#[cfg(feature = "redis")]
mod redis_backplane;

impl Hub {
    /// An in-process hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends a message to `to`; returns how many local sessions it was queued for.
    ///
    /// With a Redis backplane it also goes to the other nodes.
    pub fn send(&self, to: Target, message: impl Into<Message>) -> usize {
        self.send_prepared(to, &Prepared::new(message))
    }

    /// Sends `value` as a JSON text message.
    pub fn send_json<T: serde::Serialize + ?Sized>(
        &self,
        to: Target,
        value: &T,
    ) -> Result<usize, serde_json::Error> {
        Ok(self.send(to, Message::json(value)?))
    }

    /// Sends a frame encoded once: every recipient's queue shares its bytes.
    pub fn send_prepared(&self, to: Target, frame: &Prepared) -> usize {
        self.deliver(to, Payload::Frame(frame.clone()))
    }

    /// Sends a server-side event, serialized as JSON, to the handlers' `on_event`.
    pub fn send_event<T: serde::Serialize + ?Sized>(
        &self,
        to: Target,
        event: &T,
    ) -> Result<usize, serde_json::Error> {
        let json = Bytes::from(serde_json::to_vec(event)?);
        Ok(self.deliver(to, Payload::Event(json)))
    }

    /// Adds a session (by id) to a channel, e.g. from a REST handler; false if there is
    /// no such session here or it already was a member.
    pub fn join(&self, session_id: &str, channel: &str) -> bool {
        let mut registry = self.write();
        match registry.conn_of_session(session_id) {
            Some(id) => registry.join(id, channel),
            None => false,
        }
    }

    /// Removes a session (by id) from a channel; false if it was not a member.
    pub fn leave(&self, session_id: &str, channel: &str) -> bool {
        let mut registry = self.write();
        match registry.conn_of_session(session_id) {
            Some(id) => registry.leave(id, channel),
            None => false,
        }
    }

    /// The members of a channel on this node.
    pub fn members(&self, channel: &str) -> Vec<Member> {
        self.read().members(channel)
    }

    /// The members of a channel on every node of the cluster; without a Redis backplane,
    /// on this node.
    pub async fn members_everywhere(&self, channel: &str) -> Result<Vec<Member>, HubError> {
        #[cfg(feature = "redis")]
        if let Some(backplane) = &self.inner.backplane {
            return self.redis_members(backplane, channel).await;
        }
        Ok(self.members(channel))
    }

    /// What the hub holds on this node.
    pub fn stats(&self) -> HubStats {
        let (sessions, users, channels, names) = self.read().counts();
        HubStats {
            sessions,
            users,
            channels,
            names,
        }
    }

    fn deliver(&self, to: Target, payload: Payload) -> usize {
        let delivered = self.deliver_local(&to, &payload);
        #[cfg(feature = "redis")]
        if let Some(backplane) = &self.inner.backplane {
            backplane.publish(to, payload);
        }
        delivered
    }

    /// Queues `payload` for every recipient on this node.
    pub(crate) fn deliver_local(&self, to: &Target, payload: &Payload) -> usize {
        let mut delivered = 0;
        self.read().for_each(to, |handle| {
            let queued = match payload {
                Payload::Frame(frame) => handle.send_prepared(frame),
                Payload::Event(json) => handle.send_event(Event::json_bytes(json.clone())),
            };
            delivered += queued.is_ok() as usize;
        });
        crate::metrics::hub_delivered(delivered);
        delivered
    }

    /// Registers a new connection; it is forgotten when the guard drops.
    pub(crate) fn register(
        &self,
        session_id: Arc<str>,
        user_id: Arc<str>,
        handle: SessionHandle,
    ) -> HubRegistration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.write().insert(id, session_id, user_id, handle);
        HubRegistration {
            hub: self.clone(),
            id,
        }
    }

    pub(crate) fn join_conn(&self, id: ConnId, channel: &str) -> bool {
        let joined = self.write().join(id, channel);
        #[cfg(feature = "redis")]
        if joined {
            self.presence_changed(id, channel, true);
        }
        joined
    }

    pub(crate) fn leave_conn(&self, id: ConnId, channel: &str) -> bool {
        let left = self.write().leave(id, channel);
        #[cfg(feature = "redis")]
        if left {
            self.presence_changed(id, channel, false);
        }
        left
    }

    pub(crate) fn register_name(&self, id: ConnId, name: &str) -> Result<(), NameTaken> {
        self.write().register_name(id, name)
    }

    pub(crate) fn unregister_name(&self, id: ConnId, name: &str) -> bool {
        self.write().unregister_name(id, name)
    }

    pub(crate) fn channels_of(&self, id: ConnId) -> Vec<String> {
        self.read().channels_of(id)
    }

    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        // Every registry operation leaves it consistent, so a panic elsewhere while the
        // lock was held does not make the data unusable.
        self.inner
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub").field("stats", &self.stats()).finish()
    }
}

/// A connection's place in the hub; dropping it leaves every channel and releases every
/// name.
pub(crate) struct HubRegistration {
    hub: Hub,
    id: ConnId,
}

impl HubRegistration {
    pub(crate) fn hub(&self) -> &Hub {
        &self.hub
    }

    pub(crate) fn id(&self) -> ConnId {
        self.id
    }
}

impl Drop for HubRegistration {
    fn drop(&mut self) {
        #[cfg(feature = "redis")]
        for channel in self.hub.channels_of(self.id) {
            self.hub.presence_changed(self.id, &channel, false);
        }
        self.hub.write().remove(self.id);
    }
}
