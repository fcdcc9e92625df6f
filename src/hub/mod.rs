//! The hub: delivery to sessions, users, channels and unique names, from handlers and
//! from plain code, in-process or across nodes through Redis.
//!
//! - `registry`: which connections this node holds, and what they joined.
//! - `policy`: the application's rules ([`HubPolicy`]) and the hub's bounds
//!   ([`HubLimits`]).
//! - `history`: channels that keep their last publications, with positions, and joins
//!   that deliver what a client missed.
//! - `backplane` (feature `redis`): the same deliveries across nodes.

mod error;
mod history;
mod policy;
mod registry;

#[cfg(feature = "redis")]
mod backplane;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use estuary_middleware::Identity;

pub use error::{HubError, Refused};
pub use history::{History, HistoryStats, Recovery};
pub use policy::{Caller, HubLimits, HubPolicy};
pub(crate) use registry::ConnId;
use registry::{Joined, Registrant, Registry, RouteChange};

#[cfg(feature = "redis")]
pub use backplane::{BackplaneStats, RedisConfig, Routing};

use crate::protocol::{Codec, EncodeError, Message, Prepared};
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
    /// The session with this id, when the server drew the id. A session whose id the
    /// authenticator chose (`Identity::with_session_id`) is unique only within its user,
    /// and is reached with [`Target::UserSession`].
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

/// What a node holds sessions for, and so what it wants to hear from other nodes: the
/// kinds of [`Target`], with one session and one user session sharing the session's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RouteKind {
    Channel,
    User,
    Session,
    Name,
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
/// through its `Conn` (or through [`Hub::join`]), and is forgotten when it closes.
/// Fan-out encodes a frame once and queues the same bytes for every recipient; a slow
/// recipient meets its slow-consumer policy without slowing the others.
///
/// What connections may do is bounded by [`HubLimits`] and decided by the application's
/// [`HubPolicy`], both set with [`Hub::builder`]. With a Redis backplane
/// ([`Hub::with_redis`], feature `redis`) the same calls reach every node; see
/// [`RedisConfig`](crate::RedisConfig) for what is guaranteed.
///
/// ```
/// use estuary::{Conn, Handler, Hub, Message, Target, WebSocketService};
///
/// #[derive(Clone)]
/// struct Chat;
///
/// impl Handler for Chat {
///     async fn on_open(&mut self, conn: &mut Conn) {
///         let _ = conn.join("lobby").await;
///     }
///
///     async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
///         let _ = conn.send_to(Target::channel("lobby"), msg);
///     }
/// }
///
/// let hub = Hub::new();
/// let service = WebSocketService::new(Chat).with_hub(hub.clone());
/// // Elsewhere, e.g. in a REST handler:
/// let delivered = hub.send(Target::user("alice"), "you have mail").unwrap();
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
    limits: HubLimits,
    policy: Option<Box<dyn HubPolicy>>,
    history: history::Histories,
    #[cfg(feature = "redis")]
    backplane: Option<backplane::Backplane>,
}

/// Builds a [`Hub`] with limits and a policy: in-process with [`HubBuilder::build`], on
/// Redis with `HubBuilder::redis` (feature `redis`).
///
/// ```
/// use estuary::{Hub, HubLimits};
///
/// let hub = Hub::builder()
///     .limits(HubLimits::default().with_max_channels_per_connection(8))
///     .build();
/// # let _ = hub;
/// ```
#[derive(Default)]
#[must_use]
pub struct HubBuilder {
    limits: HubLimits,
    policy: Option<Box<dyn HubPolicy>>,
    history: history::Rules,
    history_memory: Option<usize>,
}

impl HubBuilder {
    /// Bounds what one connection may hold (default: [`HubLimits::default`]).
    pub fn limits(mut self, limits: HubLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Who may join which channel and send where (default: everyone, everything).
    pub fn policy(mut self, policy: impl HubPolicy) -> Self {
        self.policy = Some(Box::new(policy));
        self
    }

    /// Keeps history for the channels `pattern` names: one channel by its name, or every
    /// channel starting with a prefix, written with a `*` at its end (`"room-*"`; `"*"` is
    /// every channel). `None` keeps none, to leave channels out of a wider pattern. The
    /// exact name wins, then the longest prefix; a channel no pattern names keeps no
    /// history, and its sends cost nothing more for it.
    ///
    /// On a channel with history every message sent gets a [`Position`] and reaches the
    /// members through their handler's `on_publication`, and
    /// [`Conn::join_since`](crate::Conn::join_since) sends a client what it missed. The
    /// store is this process's memory, or, on Redis, a Redis Stream per channel shared by
    /// every node: every node must have the same rules. Server-side events sent to a
    /// channel are not kept.
    ///
    /// [`Position`]: crate::Position
    pub fn history(mut self, pattern: &str, history: impl Into<Option<History>>) -> Self {
        self.history.insert(pattern, history.into());
        self
    }

    /// Bounds the in-process store (a hub without Redis): every channel's history together
    /// holds at most `bytes` (default 64 MiB); past it, the streams published to least
    /// recently are forgotten, and a client joining one again is told its recovery was
    /// incomplete.
    pub fn history_memory(mut self, bytes: usize) -> Self {
        self.history_memory = Some(bytes);
        self
    }

    /// An in-process hub.
    pub fn build(self) -> Hub {
        Hub {
            inner: Arc::new(self.into_inner()),
        }
    }

    fn into_inner(self) -> HubInner {
        let memory = self
            .history_memory
            .map(history::MemoryStore::new)
            .unwrap_or_default();
        HubInner {
            limits: self.limits,
            policy: self.policy,
            history: history::Histories {
                rules: self.history,
                memory,
                ..Default::default()
            },
            ..HubInner::default()
        }
    }
}

impl fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubBuilder")
            .field("limits", &self.limits)
            .field("policy", &self.policy.is_some())
            .field("history", &self.history)
            .finish()
    }
}

impl Hub {
    /// An in-process hub with the default limits and no policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder, for limits and a policy.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// The limits connections meet.
    pub fn limits(&self) -> &HubLimits {
        &self.inner.limits
    }

    /// Sends a message to `to`; returns how many local sessions it was queued for.
    ///
    /// With a Redis backplane it also goes to the other nodes. Sent from the
    /// application's own code, it is not checked by the [`HubPolicy`]; a target longer
    /// than the [`HubLimits`] allow (no session could be registered under it) is refused.
    ///
    /// To a channel with history ([`HubBuilder::history`]) it is a publication: it gets
    /// its position and reaches the members through their handler's `on_publication`. On
    /// Redis the local members get it, like everyone else, once Redis has given it its
    /// position; the count is of the local members it is for.
    pub fn send(&self, to: Target, message: impl Into<Message>) -> Result<usize, HubError> {
        self.send_prepared(to, &Prepared::new(message))
    }

    /// Sends `value` encoded with `codec` (encoded once, whatever the number of
    /// recipients); returns how many local sessions it was queued for.
    ///
    /// Every recipient gets the same bytes: in a channel whose members negotiated
    /// different codecs, send to each group its own way (a channel per codec, say).
    ///
    /// ```
    /// use estuary::{Codec, Hub, Target};
    ///
    /// #[derive(serde::Serialize)]
    /// struct Notice<'a> { text: &'a str }
    ///
    /// let hub = Hub::new();
    /// let queued = hub.send_value(Target::channel("lobby"), Codec::Json, &Notice { text: "hi" });
    /// assert_eq!(queued.unwrap(), 0); // nobody is in the lobby yet
    /// ```
    pub fn send_value<T: serde::Serialize + ?Sized>(
        &self,
        to: Target,
        codec: Codec,
        value: &T,
    ) -> Result<usize, HubError> {
        self.send(to, codec.encode(value)?)
    }

    /// Sends `value` as a JSON text message: the short form of
    /// [`Hub::send_value`]`(to, Codec::Json, value)`.
    pub fn send_json<T: serde::Serialize + ?Sized>(
        &self,
        to: Target,
        value: &T,
    ) -> Result<usize, HubError> {
        self.send_value(to, Codec::Json, value)
    }

    /// Sends a frame encoded once: every recipient's queue shares its bytes.
    pub fn send_prepared(&self, to: Target, frame: &Prepared) -> Result<usize, HubError> {
        self.deliver(to, Payload::Frame(frame.clone()))
    }

    /// Sends a server-side event, serialized as JSON, to the handlers' `on_event`.
    pub fn send_event<T: serde::Serialize + ?Sized>(
        &self,
        to: Target,
        event: &T,
    ) -> Result<usize, HubError> {
        let json = serde_json::to_vec(event).map_err(|e| EncodeError::new(Codec::Json, e))?;
        let json = Bytes::from(json);
        self.deliver(to, Payload::Event(json))
    }

    /// Adds every session of this node that `who` reaches to `channel`, e.g. from a REST
    /// handler, on the same path as `Conn::join` (limits, policy, presence); returns how
    /// many joined (sessions already in the channel do not count).
    ///
    /// Fails with the first refusal if `who` reaches sessions and none of them may join,
    /// and with [`HubError::NoSuchSession`] if it reaches none.
    pub async fn join(&self, who: Target, channel: &str) -> Result<usize, HubError> {
        let ids = self.read().conns_of(&who);
        if ids.is_empty() {
            return Err(HubError::NoSuchSession);
        }
        let (mut joined, mut allowed, mut refusal) = (0, 0, None);
        for id in ids {
            match self.join_conn(id, channel).await {
                Ok(new) => {
                    allowed += 1;
                    joined += new as usize;
                }
                Err(e) => {
                    refusal.get_or_insert(e);
                }
            }
        }
        match refusal {
            Some(refusal) if allowed == 0 => Err(refusal),
            _ => Ok(joined),
        }
    }

    /// Removes every session of this node that `who` reaches from `channel`; returns how
    /// many left.
    pub fn leave(&self, who: Target, channel: &str) -> usize {
        let ids = self.read().conns_of(&who);
        ids.into_iter()
            .filter(|&id| self.leave_conn(id, channel))
            .count()
    }

    /// The members of a channel on this node.
    pub fn members(&self, channel: &str) -> Vec<Member> {
        self.read().members(channel)
    }

    /// The members of a channel on every node of the cluster; without a Redis backplane,
    /// on this node. A name longer than the hub allows is refused (no one can be in it).
    pub async fn members_everywhere(&self, channel: &str) -> Result<Vec<Member>, HubError> {
        self.inner.limits.check_channel(channel)?;
        #[cfg(feature = "redis")]
        if let Some(backplane) = &self.inner.backplane {
            return backplane.members(self, channel).await;
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

    fn deliver(&self, to: Target, payload: Payload) -> Result<usize, HubError> {
        self.inner.limits.check_target(&to)?;
        if let (Target::Channel(channel), Payload::Frame(frame)) = (&to, &payload) {
            if let Some(history) = self.inner.history.rules.find(channel) {
                return Ok(self.publish(channel, history, frame));
            }
        }
        let delivered = self.deliver_local(&to, &payload);
        #[cfg(feature = "redis")]
        if let Some(backplane) = &self.inner.backplane {
            // A session id the server drew is unique everywhere: found here, it is nowhere
            // else.
            let only_here = matches!(to, Target::Session(_)) && delivered > 0;
            if !only_here {
                backplane.publish(&to, &payload);
            }
        }
        Ok(delivered)
    }

    /// Queues `payload` for every recipient on this node.
    pub(crate) fn deliver_local(&self, to: &Target, payload: &Payload) -> usize {
        let mut delivered = 0;
        self.read().for_each(to, |_, handle| {
            let queued = match payload {
                Payload::Frame(frame) => handle.send_prepared(frame),
                Payload::Event(json) => handle.send_event(Event::json_bytes(json.clone())),
            };
            delivered += queued.is_ok() as usize;
        });
        crate::metrics::hub_delivered(delivered);
        delivered
    }

    /// Registers a new connection; it is forgotten when the guard drops. Refused if its
    /// session id is live on another connection of this node.
    pub(crate) fn register(
        &self,
        session_id: Arc<str>,
        user_id: Arc<str>,
        identity: Option<Identity>,
        handle: SessionHandle,
    ) -> Result<HubRegistration, HubError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let chosen_id = identity.as_ref().is_some_and(|i| i.session_id().is_some());
        let who = Registrant {
            session_id,
            user_id,
            identity,
            chosen_id,
            handle,
        };
        let mut registry = self.write();
        let routes = registry.insert(id, who)?;
        self.routes_changed(&routes);
        drop(registry);
        Ok(HubRegistration {
            hub: self.clone(),
            id,
        })
    }

    /// Waits, within a bound, until deliveries to the connection's session and user from
    /// other nodes reach this node.
    pub(crate) async fn until_routed(&self, id: ConnId) {
        #[cfg(feature = "redis")]
        if let Some(backplane) = &self.inner.backplane {
            let routes = self.read().own_routes(id);
            backplane.until_routed(&routes).await;
        }
        #[cfg(not(feature = "redis"))]
        let _ = id;
    }

    /// The one path of every join: limits, policy, registry, presence, routing. True if
    /// the connection was not a member before. Returns once deliveries to the channel
    /// from other nodes reach this node (or Redis is out of reach).
    pub(crate) async fn join_conn(&self, id: ConnId, channel: &str) -> Result<bool, HubError> {
        self.may_join(id, channel)?;
        match self.add_member(id, channel)? {
            Joined::Already => Ok(false),
            Joined::Now { channel, .. } => {
                #[cfg(feature = "redis")]
                if let Some(backplane) = &self.inner.backplane {
                    backplane
                        .until_routed(&[(RouteKind::Channel, channel)])
                        .await;
                }
                #[cfg(not(feature = "redis"))]
                let _ = channel;
                Ok(true)
            }
        }
    }

    /// A join's checks: the channel name's length and the policy.
    fn may_join(&self, id: ConnId, channel: &str) -> Result<(), HubError> {
        self.inner.limits.check_channel(channel)?;
        if let Some(policy) = &self.inner.policy {
            self.read()
                .caller(id, |who| policy.may_join(who, channel))
                .ok_or(HubError::NoSuchSession)??;
        }
        Ok(())
    }

    /// A join's changes, once checked: the registry, presence, routing.
    fn add_member(&self, id: ConnId, channel: &str) -> Result<Joined, HubError> {
        let max = self.inner.limits.max_channels_per_connection;
        let mut registry = self.write();
        let joined = registry.join(id, channel, max)?;
        if let Joined::Now { channel, first } = &joined {
            self.presence_joined(&registry, id, channel);
            if *first {
                self.routes_changed(&[RouteChange {
                    kind: RouteKind::Channel,
                    name: channel.clone(),
                    wanted: true,
                }]);
            }
        }
        Ok(joined)
    }

    /// The one path of every leave; false if the connection was not a member.
    pub(crate) fn leave_conn(&self, id: ConnId, channel: &str) -> bool {
        let mut registry = self.write();
        let Some((channel, last)) = registry.leave(id, channel) else {
            return false;
        };
        self.inner.history.catch_up.forget(id, Some(&channel));
        self.presence_left(id, &channel, last);
        if last {
            self.routes_changed(&[RouteChange {
                kind: RouteKind::Channel,
                name: channel,
                wanted: false,
            }]);
        }
        true
    }

    pub(crate) async fn register_name(&self, id: ConnId, name: &str) -> Result<(), HubError> {
        self.inner.limits.check_name(name)?;
        let new = self.write().register_name(id, name)?;
        if new {
            let route: Arc<str> = Arc::from(name);
            self.routes_changed(&[RouteChange {
                kind: RouteKind::Name,
                name: route.clone(),
                wanted: true,
            }]);
            #[cfg(feature = "redis")]
            if let Some(backplane) = &self.inner.backplane {
                backplane.until_routed(&[(RouteKind::Name, route)]).await;
            }
        }
        Ok(())
    }

    pub(crate) fn unregister_name(&self, id: ConnId, name: &str) -> bool {
        let released = self.write().unregister_name(id, name);
        if released {
            self.routes_changed(&[RouteChange {
                kind: RouteKind::Name,
                name: Arc::from(name),
                wanted: false,
            }]);
        }
        released
    }

    /// Asks the policy whether the connection may send to `to`, then sends.
    pub(crate) fn send_as(
        &self,
        id: ConnId,
        to: Target,
        payload: Payload,
    ) -> Result<usize, HubError> {
        if let Some(policy) = &self.inner.policy {
            self.read()
                .caller(id, |who| policy.may_send(who, &to))
                .ok_or(HubError::NoSuchSession)??;
        }
        self.deliver(to, payload)
    }

    pub(crate) fn channels_of(&self, id: ConnId) -> Vec<String> {
        self.read().channels_of(id)
    }

    pub(crate) fn is_member(&self, id: ConnId, channel: &str) -> bool {
        self.read().is_member(id, channel)
    }

    /// Tells the backplane which routes this node now wants. Called with the registry
    /// locked, so that the backplane sees changes in the order the registry made them.
    fn routes_changed(&self, changes: &[RouteChange]) {
        #[cfg(feature = "redis")]
        if let Some(backplane) = &self.inner.backplane {
            backplane.routes_changed(changes);
        }
        #[cfg(not(feature = "redis"))]
        let _ = changes;
    }

    /// Tells the backplane's presence that a connection joined a channel. Called with the
    /// registry locked, for the order.
    fn presence_joined(&self, registry: &Registry, id: ConnId, channel: &Arc<str>) {
        #[cfg(feature = "redis")]
        if let (Some(backplane), Some(member)) = (&self.inner.backplane, registry.member(id)) {
            backplane.presence_joined(channel, id, &member);
        }
        #[cfg(not(feature = "redis"))]
        let _ = (registry, id, channel);
    }

    /// Tells the backplane's presence that a connection left a channel (`last`: as its
    /// last local member). Called with the registry locked, for the order.
    fn presence_left(&self, id: ConnId, channel: &Arc<str>, last: bool) {
        #[cfg(feature = "redis")]
        if let Some(backplane) = &self.inner.backplane {
            backplane.presence_left(channel, id, last);
        }
        #[cfg(not(feature = "redis"))]
        let _ = (id, channel, last);
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
        let mut registry = self.hub.write();
        self.hub.inner.history.catch_up.forget(self.id, None);
        if let Some(removed) = registry.remove(self.id) {
            for (channel, last) in &removed.channels {
                self.hub.presence_left(self.id, channel, *last);
            }
            self.hub.routes_changed(&removed.routes);
        }
    }
}
