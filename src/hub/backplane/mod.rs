//! The Redis backplane: the hub's deliveries and presence across nodes, on one Redis or a
//! Redis Cluster.
//!
//! - `routes`: the Redis keys and pub/sub channels, one per route (channel, user, session,
//!   unique name), hash-tagged so that a channel lives on one shard.
//! - `envelope`: the wire format of one delivery.
//! - `link`: connections to a server or a cluster, and batches in one round trip.
//! - `outbox`: the bounded outbox and the task that publishes it, pipelined, within the
//!   delivery deadline.
//! - `subscriptions`: which routes this node wants, the task that (un)subscribes them in
//!   batches, and what arrives on them.
//! - `presence`: members in Redis, kept by a task that heals after any failure, and
//!   listed across nodes.
//! - `stream`: channel history on Redis Streams, written by the outbox in the same step
//!   as its publish, and read for joins with a position.
//! - `feeds`: each history channel's live feed on this node, which reads from the stream
//!   what the node missed while its subscription was cut.
//!
//! The guarantees are written out on [`RedisConfig`].

mod envelope;
mod feeds;
mod link;
mod outbox;
mod presence;
mod routes;
mod stream;
mod subscriptions;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::history::Counters as HistoryCounters;
use super::registry::RouteChange;
use super::{ConnId, Hub, HubBuilder, HubError, HubInner, Member, Payload, RouteKind, Target};
pub(crate) use link::redact;
use link::Connector;
use outbox::Outbox;
use presence::{Presence, SharedLink};
use routes::Keys;
use subscriptions::{Inbound, Interest};

/// How a node learns of the deliveries other nodes make.
///
/// ```
/// use estuary::{RedisConfig, Routing};
///
/// let config = RedisConfig::new("redis://127.0.0.1:6379/").with_routing(Routing::Broadcast);
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Routing {
    /// A Redis pub/sub channel per route (channel, user, session, unique name): a node
    /// subscribes to the routes it holds sessions for, and receives only what it
    /// delivers. On a Redis Cluster these are sharded channels, spread over the shards.
    /// The default.
    #[default]
    Interest,
    /// One pub/sub channel for everything: every node receives every delivery and keeps
    /// what it has sessions for. No subscription traffic when sessions come and go, and
    /// every node's load grows with the whole cluster's; kept for comparison and for
    /// clusters of few nodes with much churn.
    Broadcast,
}

/// Where and how a hub reaches the other nodes: one Redis or a Redis Cluster, and the
/// bounds of its delivery.
///
/// # What is guaranteed
///
/// - **Local delivery never waits for Redis.** A send queues for this node's recipients
///   at once; what goes to other nodes waits in a bounded outbox.
/// - **Exactly once and in order per sender and target while connected.** One task
///   publishes a node's outbox in send order, every message queued since the last round
///   trip in one pipeline (one per shard on a cluster), and a receiving node delivers
///   each message once to the sessions it holds. A node never delivers its own messages
///   twice.
/// - **At most once across an outage, and never late.** A message not published within
///   the delivery deadline (default 2 s) is dropped and counted
///   (`estuary_backplane_dropped_total`, with a log line at most every 10 s), and so is
///   one that reaches a node later than the deadline after it was sent (a batch Redis
///   held through a stall), judged by the sender's clock: keep the nodes' clocks in step
///   (NTP) to well within the deadline. The outbox holds at most the deadline's worth of
///   messages and at most its byte limit (default 8 MiB), oldest dropped first.
/// - **Routing by interest.** A node subscribes to a route when its first local session
///   needs it (a join, a connection, a unique name) and unsubscribes after the last, in
///   batches. A join returns once Redis has confirmed the subscription, so a message
///   published after `join` returned reaches the member; one published while the
///   subscription was being set up may not. A new connection's own session and user are
///   subscribed before `on_open` runs. While the subscriber is cut off, a join returns at
///   once (at most once, as above).
/// - **Channels with history** ([`HubBuilder::history`](crate::HubBuilder::history))
///   keep a Redis Stream each: a publication takes its position, goes into the stream and
///   is published in one script, so every node delivers a channel's publications in the
///   stream's order, and the publishing node's own members get them from Redis too. A
///   publication Redis stored is delivered however late (it has a position: skipping it
///   would leave a gap), and one a node missed while its subscription was cut is read from
///   the stream when the next one shows the gap. What the outbox could not hand Redis
///   within the deadline was never stored: it reaches no one, and takes no position.
/// - **Presence heals.** Each node keeps its members of a channel in one Redis hash that
///   expires unless the node refreshes it (every third of the presence TTL, default 6 s):
///   the members of a node that died leave presence within the TTL, with no one listing
///   the channel. Any failed presence write, a reconnection, or a hash found missing (a
///   Redis restarted empty) makes the node write all its members again.
///
/// ```
/// use std::time::Duration;
/// use estuary::RedisConfig;
///
/// let single = RedisConfig::new("redis://:secret@10.0.0.5:6379/0")
///     .with_delivery_deadline(Duration::from_millis(500));
/// let cluster = RedisConfig::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]);
/// assert!(!format!("{single:?}").contains("secret"));
/// # let _ = cluster;
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    urls: Vec<String>,
    cluster: bool,
    prefix: String,
    delivery_deadline: Duration,
    outbox_limit: usize,
    presence_ttl: Duration,
    routing: Routing,
    ca_certificate: Option<Vec<u8>>,
}

impl RedisConfig {
    /// One Redis: `redis://[:password@]host:port/db`, or `rediss://` for TLS.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            cluster: false,
            prefix: "estuary".into(),
            delivery_deadline: Duration::from_secs(2),
            outbox_limit: 8 << 20,
            presence_ttl: Duration::from_secs(6),
            routing: Routing::Interest,
            ca_certificate: None,
        }
    }

    /// A Redis Cluster (Redis 7 or later, for sharded pub/sub), found through any of
    /// these nodes.
    pub fn cluster<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            urls: urls.into_iter().map(Into::into).collect(),
            cluster: true,
            ..Self::new("")
        }
    }

    /// Puts every key and pub/sub channel under `prefix` (default "estuary"), so that
    /// several clusters can share one Redis. No `{` or `}`: they would change which
    /// shard a key lives on.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a delivery may take to reach another node before it is dropped instead
    /// (default 2 s).
    pub fn with_delivery_deadline(mut self, deadline: Duration) -> Self {
        self.delivery_deadline = deadline;
        self
    }

    /// The most bytes the outbox holds while Redis is slow or away (default 8 MiB).
    pub fn with_outbox_limit(mut self, bytes: usize) -> Self {
        self.outbox_limit = bytes;
        self
    }

    /// How long a node's members stay in presence after it stops refreshing them
    /// (default 6 s): how soon a dead node's members leave.
    pub fn with_presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl;
        self
    }

    /// How deliveries reach the other nodes (default [`Routing::Interest`]).
    pub fn with_routing(mut self, routing: Routing) -> Self {
        self.routing = routing;
        self
    }

    /// Trusts this PEM certificate (a private CA) for `rediss://`, instead of the
    /// system's roots.
    pub fn with_ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificate = Some(pem.into());
        self
    }

    fn check(&self) -> Result<(), HubError> {
        let invalid = |why: String| Err(HubError::InvalidConfig(why));
        if self.urls.is_empty() || self.urls.iter().any(String::is_empty) {
            return invalid("a Redis URL is needed".into());
        }
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return invalid("the key prefix must be non-empty, without '{' or '}'".into());
        }
        if self.delivery_deadline.is_zero() {
            return invalid("the delivery deadline must be longer than zero".into());
        }
        if self.presence_ttl < Duration::from_millis(300) {
            return invalid("the presence TTL must be at least 300 ms".into());
        }
        Ok(())
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| redact(u)).collect();
        f.debug_struct("RedisConfig")
            .field("urls", &urls)
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("delivery_deadline", &self.delivery_deadline)
            .field("outbox_limit", &self.outbox_limit)
            .field("presence_ttl", &self.presence_ttl)
            .field("routing", &self.routing)
            .field("ca_certificate", &self.ca_certificate.is_some())
            .finish()
    }
}

/// What a node's backplane did since it started, to watch routing and outages; the same
/// counts go to the `metrics` facade (see the crate's metrics table).
///
/// ```no_run
/// # async fn run() -> Result<(), estuary::HubError> {
/// let hub = estuary::Hub::with_redis("redis://127.0.0.1:6379/").await?;
/// let stats = hub.backplane_stats().expect("a hub on Redis");
/// assert_eq!(stats.unneeded, 0, "interest routing sends a node only what it needs");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackplaneStats {
    /// Deliveries this node published to Redis.
    pub published: u64,
    /// Deliveries dropped for the deadline before Redis took them.
    pub dropped_deadline: u64,
    /// Deliveries dropped because the outbox was full.
    pub dropped_outbox_full: u64,
    /// Deliveries Redis did not take (a failed connection or command).
    pub dropped_failed: u64,
    /// Deliveries received from Redis, this node's own included.
    pub received: u64,
    /// Deliveries received from other nodes and queued for at least one local session.
    pub delivered: u64,
    /// Deliveries received from other nodes with no local recipient: routing waste, zero
    /// with [`Routing::Interest`] unless a session left as the delivery arrived.
    pub unneeded: u64,
    /// This node's own deliveries, back from Redis on a route it is subscribed to (its
    /// local recipients had them already).
    pub echoes: u64,
    /// Deliveries received later than the deadline after they were sent, dropped.
    pub stale: u64,
    /// Received messages that were not deliveries (wrong version, corrupt).
    pub malformed: u64,
    /// Publications of channels with history that this node missed live (its
    /// subscription was cut) and read from the channel's stream instead, for its members.
    pub refilled: u64,
    /// Times this node wrote all its presence again.
    pub presence_resyncs: u64,
    /// Routes this node is subscribed to now.
    pub subscriptions: u64,
}

/// The counters behind [`BackplaneStats`], kept with plain atomics on the hot paths and
/// handed to the `metrics` facade once a second.
#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    dropped_deadline: AtomicU64,
    dropped_outbox_full: AtomicU64,
    dropped_failed: AtomicU64,
    received: AtomicU64,
    delivered: AtomicU64,
    unneeded: AtomicU64,
    echoes: AtomicU64,
    stale: AtomicU64,
    malformed: AtomicU64,
    refilled: AtomicU64,
    presence_resyncs: AtomicU64,
    subscriptions: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> BackplaneStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BackplaneStats {
            published: get(&self.published),
            dropped_deadline: get(&self.dropped_deadline),
            dropped_outbox_full: get(&self.dropped_outbox_full),
            dropped_failed: get(&self.dropped_failed),
            received: get(&self.received),
            delivered: get(&self.delivered),
            unneeded: get(&self.unneeded),
            echoes: get(&self.echoes),
            stale: get(&self.stale),
            malformed: get(&self.malformed),
            refilled: get(&self.refilled),
            presence_resyncs: get(&self.presence_resyncs),
            subscriptions: get(&self.subscriptions),
        }
    }
}

/// Backoff between reconnection attempts: 100 ms, doubling, at most 1 s, so that a Redis
/// that comes back is found again within about a second.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Self(Self::FIRST)
    }

    pub(super) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    /// Sleeps for the current delay (or until cancelled), then doubles it.
    pub(super) async fn wait(&mut self, cancel: &CancellationToken) {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(self.0) => {}
        }
        self.0 = (self.0 * 2).min(Self::MAX);
    }
}

/// Connects with `connect` until it works, with backoff, logging failures at most every
/// 10 s with what waits meanwhile (`waiting`); `None` once the hub is dropped.
async fn reconnect<F, Fut>(
    shared: &Shared,
    backoff: &mut Backoff,
    failures: &mut Throttle,
    waiting: &str,
    mut connect: F,
) -> Option<link::Link>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<link::Link, redis::RedisError>>,
{
    loop {
        match connect().await {
            Ok(link) => return Some(link),
            Err(e) => {
                if let Some(unlogged) = failures.ready() {
                    tracing::warn!(error = %e, unlogged, redis = shared.connector.shown(), "cannot connect to redis; {waiting}");
                }
                backoff.wait(&shared.cancel).await;
                if shared.cancel.is_cancelled() {
                    return None;
                }
            }
        }
    }
}

/// Logs a repeated failure at most once per `every`, saying how many were not logged.
#[derive(Debug)]
struct Throttle {
    every: Duration,
    last: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl Throttle {
    pub(super) fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when it is time to log, with `n` occurrences unlogged since the last
    /// line; `None` to stay quiet.
    pub(super) fn ready(&mut self) -> Option<u64> {
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|last| now < last + self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Milliseconds since the Unix epoch, for `Envelope::sent_at`.
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What the backplane's tasks share with the hub.
struct Shared {
    node: u128,
    keys: Keys,
    routing: Routing,
    /// Sharded pub/sub: interest routing on a cluster.
    sharded: bool,
    deadline: Duration,
    presence_ttl: Duration,
    connector: Connector,
    counters: Counters,
    outbox: Outbox,
    interest: Interest,
    presence: Presence,
    /// Channel history's counters, the hub's.
    history: Arc<HistoryCounters>,
    feeds: feeds::Feeds,
    /// The connection for presence and queries.
    commands: SharedLink,
    cancel: CancellationToken,
}

impl Shared {
    /// The pub/sub channel of a route, or the one channel of broadcast routing.
    fn route(&self, kind: RouteKind, name: &str) -> Arc<str> {
        match self.routing {
            Routing::Interest => Arc::from(self.keys.route(kind, name)),
            Routing::Broadcast => Arc::from(self.keys.broadcast()),
        }
    }
}

/// A node's link to Redis: what the hub holds. Dropping it stops the tasks.
pub(crate) struct Backplane {
    shared: Arc<Shared>,
}

impl Drop for Backplane {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

impl Backplane {
    /// Queues a delivery for the other nodes.
    pub(crate) fn publish(&self, to: &Target, payload: &Payload) {
        let shared = &self.shared;
        let route = match shared.routing {
            Routing::Interest => shared.keys.route_of(to),
            Routing::Broadcast => shared.keys.broadcast(),
        };
        let bytes = envelope::encode(shared.node, wall_clock_ms(), to, payload);
        shared.outbox.push(route, bytes, &shared.counters);
    }

    /// Routes this node now wants, or no longer wants.
    pub(crate) fn routes_changed(&self, changes: &[RouteChange]) {
        for change in changes {
            if change.kind == RouteKind::Channel && !change.wanted {
                self.shared.feeds.forget(change.name.clone());
            }
        }
        if self.shared.routing == Routing::Broadcast {
            return;
        }
        for change in changes {
            let route = self.shared.route(change.kind, &change.name);
            self.shared.interest.note(route, change.wanted);
        }
    }

    /// Waits until Redis has confirmed the subscriptions to `routes`, the subscriber is
    /// cut off, or the delivery deadline passed.
    pub(crate) async fn until_routed(&self, routes: &[(RouteKind, Arc<str>)]) {
        let routes: Vec<Arc<str>> = routes
            .iter()
            .map(|(kind, name)| self.shared.route(*kind, name))
            .collect();
        self.shared
            .interest
            .until_active(&routes, self.shared.deadline)
            .await;
    }

    pub(crate) fn presence_joined(&self, channel: &Arc<str>, id: ConnId, member: &Member) {
        self.shared.presence.joined(channel, id, member);
    }

    pub(crate) fn presence_left(&self, channel: &Arc<str>, id: ConnId, last: bool) {
        self.shared.presence.left(channel, id, last);
    }

    /// A channel's members on every node.
    pub(crate) async fn members(&self, hub: &Hub, channel: &str) -> Result<Vec<Member>, HubError> {
        presence::members(&self.shared, hub, channel).await
    }

    pub(crate) fn stats(&self) -> BackplaneStats {
        self.shared.counters.snapshot()
    }
}

impl Hub {
    /// A hub whose deliveries also reach sessions on every other node connected to the
    /// same Redis (`redis://host:port/db`, or `rediss://` for TLS), with the default
    /// limits and [`RedisConfig`]. Fails if Redis cannot be reached now; later outages
    /// are survived (see [`RedisConfig`] for what is guaranteed).
    pub async fn with_redis(url: &str) -> Result<Hub, HubError> {
        Hub::builder().redis(RedisConfig::new(url)).await
    }

    /// What the backplane did since this hub started; `None` for an in-process hub.
    pub fn backplane_stats(&self) -> Option<BackplaneStats> {
        self.inner.backplane.as_ref().map(Backplane::stats)
    }
}

impl HubBuilder {
    /// A hub on Redis (feature `redis`): connects, subscribes, and starts the tasks that
    /// publish, subscribe and keep presence. Fails if Redis cannot be reached now.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), estuary::HubError> {
    /// use estuary::{Hub, HubLimits, RedisConfig};
    ///
    /// let hub = Hub::builder()
    ///     .limits(HubLimits::default().with_max_channels_per_connection(32))
    ///     .redis(RedisConfig::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]))
    ///     .await?;
    /// # let _ = hub;
    /// # Ok(()) }
    /// ```
    pub async fn redis(self, config: RedisConfig) -> Result<Hub, HubError> {
        config.check()?;
        let connector = Connector::new(&config)?;
        let shown = connector.shown().to_owned();
        let node: u128 = rand::random();
        let sharded = connector.is_cluster() && config.routing == Routing::Interest;
        let mut inner = self.into_inner();
        let commands = SharedLink::new();
        // Reachable, and the password right, before anything else.
        commands
            .get(&connector)
            .await
            .map_err(|e| HubError::redis(format!("connecting to {shown}"), e))?;
        let shared = Arc::new(Shared {
            node,
            keys: Keys::new(&config.prefix),
            routing: config.routing,
            sharded,
            deadline: config.delivery_deadline,
            presence_ttl: config.presence_ttl,
            connector,
            counters: Counters::default(),
            outbox: Outbox::new(config.delivery_deadline, config.outbox_limit),
            interest: Interest::new(),
            presence: Presence::new(),
            history: inner.history.counters.clone(),
            feeds: feeds::Feeds::new(),
            commands,
            cancel: CancellationToken::new(),
        });
        // The subscriber is connected before the hub exists: a delivery sent to a route
        // once its join returned reaches this node.
        let inbound = Arc::new(Inbound::new(shared.clone()));
        let subscriber = subscriptions::connect(&shared, &inbound)
            .await
            .map_err(|e| HubError::redis(format!("subscribing on {shown}"), e))?;
        subscriptions::connected(&shared);
        let publisher = outbox::connect(&shared)
            .await
            .map_err(|e| HubError::redis(format!("connecting to {shown}"), e))?;
        inner.backplane = Some(Backplane {
            shared: shared.clone(),
        });
        let inner = Arc::new(inner);
        let weak: Weak<HubInner> = Arc::downgrade(&inner);
        inbound.attach(weak.clone());
        tokio::spawn(outbox::publish_loop(shared.clone(), publisher));
        tokio::spawn(subscriptions::subscribe_loop(
            weak.clone(),
            shared.clone(),
            inbound,
            subscriber,
        ));
        tokio::spawn(presence::presence_loop(weak, shared.clone()));
        tokio::spawn(report_loop(shared));
        tracing::info!(node = %format!("{node:032x}"), redis = %shown, "hub joined the redis backplane");
        Ok(Hub { inner })
    }
}

/// The counts since `before`, as the `estuary_backplane_*` metrics (listed in
/// `crate::metrics`).
fn report_metrics(before: &BackplaneStats, now: &BackplaneStats) {
    let reason = |reason| Some(("reason", reason));
    let counters = [
        (
            "estuary_backplane_published_total",
            None,
            before.published,
            now.published,
        ),
        (
            "estuary_backplane_received_total",
            None,
            before.received,
            now.received,
        ),
        (
            "estuary_backplane_delivered_total",
            None,
            before.delivered,
            now.delivered,
        ),
        (
            "estuary_backplane_unneeded_total",
            None,
            before.unneeded,
            now.unneeded,
        ),
        (
            "estuary_backplane_echoes_total",
            None,
            before.echoes,
            now.echoes,
        ),
        (
            "estuary_backplane_malformed_total",
            None,
            before.malformed,
            now.malformed,
        ),
        (
            "estuary_backplane_refilled_total",
            None,
            before.refilled,
            now.refilled,
        ),
        (
            "estuary_backplane_presence_resyncs_total",
            None,
            before.presence_resyncs,
            now.presence_resyncs,
        ),
        (
            "estuary_backplane_dropped_total",
            reason("deadline"),
            before.dropped_deadline,
            now.dropped_deadline,
        ),
        (
            "estuary_backplane_dropped_total",
            reason("outbox_full"),
            before.dropped_outbox_full,
            now.dropped_outbox_full,
        ),
        (
            "estuary_backplane_dropped_total",
            reason("failed"),
            before.dropped_failed,
            now.dropped_failed,
        ),
        (
            "estuary_backplane_dropped_total",
            reason("late"),
            before.stale,
            now.stale,
        ),
    ];
    for (name, label, then, now) in counters {
        if now > then {
            crate::metrics::count(name, label, now - then);
        }
    }
    crate::metrics::gauge("estuary_backplane_subscriptions", now.subscriptions as f64);
}

/// Hands the counters to the `metrics` facade once a second, and logs drops at most every
/// [`DROP_LOG_EVERY`].
async fn report_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reported = BackplaneStats::default();
    let mut logged = BackplaneStats::default();
    let mut last_log: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = shared.counters.snapshot();
        report_metrics(&reported, &now);
        reported = now;
        let dropped = |s: &BackplaneStats| {
            s.dropped_deadline + s.dropped_outbox_full + s.dropped_failed + s.stale
        };
        let due = last_log.is_none_or(|at| at.elapsed() >= DROP_LOG_EVERY);
        if dropped(&now) > dropped(&logged) && due {
            tracing::warn!(
                past_deadline = now.dropped_deadline - logged.dropped_deadline,
                outbox_full = now.dropped_outbox_full - logged.dropped_outbox_full,
                redis_failed = now.dropped_failed - logged.dropped_failed,
                arrived_late = now.stale - logged.stale,
                deadline = ?shared.deadline,
                "cross-node deliveries dropped (at most once across an outage)"
            );
            logged = now;
            last_log = Some(tokio::time::Instant::now());
        }
    }
}

/// How often a node says that it dropped cross-node deliveries, at most.
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
