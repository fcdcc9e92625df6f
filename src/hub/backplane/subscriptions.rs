//! Which routes this node wants to hear, the task that subscribes to them in batches,
//! and what arrives on them.
//!
//! The hub notes each route that gains its first local holder or loses its last
//! (`Interest::note`, under the registry's lock, so in the registry's order); the task
//! takes every change noted since its last round trip, subscribes to the routes newly
//! wanted in one command and unsubscribes the others in another. A route is *active*
//! once Redis confirmed its subscription; a join waits for that. When the connection is
//! lost, nothing is active until the task has reconnected and subscribed again to every
//! route the registry holds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::{PushInfo, PushKind, RedisError, Value};
use tokio::sync::{watch, Notify};

use super::super::{Hub, HubInner, Payload, Target};
use super::envelope;
use super::link::{Link, PushHandler};
use super::{reconnect, wall_clock_ms, Backoff, Counters, Routing, Shared, Throttle};
use crate::queue::{Position, Publication};

/// How often the subscriber checks that Redis still answers, so that a connection that
/// died without a word (a stalled server, a lost network) is replaced.
const PING_EVERY: Duration = Duration::from_secs(1);

/// How long the subscriber's commands may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The routes this node wants, and those Redis has confirmed.
pub(super) struct Interest {
    state: Mutex<State>,
    /// Wakes the task: a change was noted.
    changed: Notify,
    /// Wakes waiters: routes became active, or the connection was lost.
    progress: watch::Sender<()>,
}

#[derive(Default)]
struct State {
    /// The latest wish for each route changed since the task last looked.
    pending: HashMap<Arc<str>, bool>,
    /// Subscribed, as Redis confirmed.
    active: HashSet<Arc<str>>,
    connected: bool,
}

impl Interest {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            progress: watch::Sender::new(()),
        }
    }

    /// Records that this node now wants `route`, or no longer does.
    pub(super) fn note(&self, route: Arc<str>, wanted: bool) {
        self.lock().pending.insert(route, wanted);
        self.changed.notify_one();
    }

    /// Returns once every route in `routes` is active, the subscriber is cut off from
    /// Redis, or `bound` has passed.
    pub(super) async fn until_active(&self, routes: &[Arc<str>], bound: Duration) {
        let mut progress = self.progress.subscribe();
        let wait = async {
            loop {
                {
                    let state = self.lock();
                    if !state.connected || routes.iter().all(|r| state.active.contains(r)) {
                        return;
                    }
                }
                if progress.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(bound, wait).await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change leaves the sets consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_connected(&self, active: HashSet<Arc<str>>, counters: &Counters) {
        let count = active.len() as u64;
        {
            let mut state = self.lock();
            state.active = active;
            state.connected = true;
        }
        counters
            .subscriptions
            .store(count, std::sync::atomic::Ordering::Relaxed);
        self.progress.send_replace(());
    }

    fn set_disconnected(&self, counters: &Counters) {
        {
            let mut state = self.lock();
            state.active.clear();
            state.connected = false;
        }
        counters
            .subscriptions
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.progress.send_replace(());
    }
}

/// Receives what Redis pushes on the subscriber's connection: deliveries, and word that
/// the connection is gone.
pub(super) struct Inbound {
    hub: OnceLock<Weak<HubInner>>,
    shared: Arc<Shared>,
    disconnected: Notify,
    malformed: Mutex<Throttle>,
}

impl Inbound {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            hub: OnceLock::new(),
            shared,
            disconnected: Notify::new(),
            malformed: Mutex::new(Throttle::new(Duration::from_secs(10))),
        }
    }

    /// The hub deliveries go to; until then (while the hub is being made) nothing is
    /// subscribed that could arrive.
    pub(super) fn attach(&self, hub: Weak<HubInner>) {
        let _ = self.hub.set(hub);
    }

    /// One delivery from Redis: dropped if it is this node's own, or later than the
    /// deadline; otherwise queued for the local sessions it names.
    fn receive(&self, bytes: Bytes) {
        let counters = &self.shared.counters;
        Counters::add(&counters.received, 1);
        let envelope = match envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(why) => return self.note_malformed(why),
        };
        if let Some(position) = envelope.position {
            return self.receive_publication(envelope.target, position, envelope.payload);
        }
        if envelope.node == self.shared.node {
            Counters::add(&counters.echoes, 1);
            return;
        }
        let age = wall_clock_ms().saturating_sub(envelope.sent_at);
        if u128::from(age) > self.shared.deadline.as_millis() {
            Counters::add(&counters.stale, 1);
            return;
        }
        let Some(inner) = self.hub.get().and_then(Weak::upgrade) else {
            return;
        };
        let delivered = Hub { inner }.deliver_local(&envelope.target, &envelope.payload);
        match delivered {
            0 => Counters::add(&counters.unneeded, 1),
            _ => Counters::add(&counters.delivered, 1),
        }
    }
}

impl Inbound {
    /// Counts and logs (at most every 10 s) a message that is not a delivery.
    fn note_malformed(&self, why: &'static str) {
        Counters::add(&self.shared.counters.malformed, 1);
        let mut throttle = self.malformed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(unlogged) = throttle.ready() {
            tracing::warn!(why, unlogged, "ignoring a malformed backplane message");
        }
    }

    /// A publication on a channel with history, from its stream's script: delivered on
    /// every node with members, the one that published it included (its members get it
    /// only now, in the stream's order), and however late (it is in the stream: skipping
    /// it would leave a gap its members could not see), through the channel's feed,
    /// which reads first what the node missed.
    fn receive_publication(&self, target: Target, position: Position, payload: Payload) {
        let counters = &self.shared.counters;
        let (Target::Channel(channel), Payload::Frame(frame)) = (target, payload) else {
            Counters::add(&counters.malformed, 1);
            return;
        };
        let Some(inner) = self.hub.get().and_then(Weak::upgrade) else {
            return;
        };
        let hub = Hub { inner };
        let publication = Publication::new(channel, position, frame, false);
        let delivered = match hub.inner.history.rules.find(publication.channel()).copied() {
            Some(history) => self
                .shared
                .feeds
                .receive(&self.shared, &hub, &history, publication),
            // Another node keeps history for a channel this one does not: delivered as it
            // comes.
            None => hub.deliver_publication(&publication),
        };
        match delivered {
            0 => Counters::add(&counters.unneeded, 1),
            _ => Counters::add(&counters.delivered, 1),
        }
    }
}

impl PushHandler for Inbound {
    fn push(&self, info: PushInfo) {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                // [channel, payload]
                if let Some(Value::BulkString(payload)) = info.data.into_iter().nth(1) {
                    let (envelopes, whole) = envelope::split(Bytes::from(payload));
                    for envelope in envelopes {
                        self.receive(envelope);
                    }
                    if let Err(why) = whole {
                        self.note_malformed(why);
                    }
                }
            }
            PushKind::Disconnection => self.disconnected.notify_one(),
            _ => {}
        }
    }
}

/// The subscriber's connection, subscribed to the one route of broadcast routing (with
/// interest routing there is nothing to subscribe to before the first session).
pub(super) async fn connect(shared: &Shared, inbound: &Arc<Inbound>) -> Result<Link, RedisError> {
    let push: Arc<dyn PushHandler> = inbound.clone();
    let mut link = shared
        .connector
        .connect(RESPONSE_TIMEOUT, Some(push))
        .await?;
    if shared.routing == Routing::Broadcast {
        let route: Arc<str> = Arc::from(shared.keys.broadcast());
        link.subscribe(&[route], false).await?;
    }
    Ok(link)
}

/// Marks the first connection's subscriptions (none, or broadcast routing's one) active,
/// before the hub is handed out: a join made at once waits for its own subscription
/// rather than finding the subscriber "cut off".
pub(super) fn connected(shared: &Shared) {
    let active = match shared.routing {
        Routing::Broadcast => HashSet::from([Arc::from(shared.keys.broadcast())]),
        Routing::Interest => HashSet::new(),
    };
    shared.interest.set_connected(active, &shared.counters);
}

/// Keeps the subscriptions in step with the registry until the hub is dropped,
/// reconnecting (and subscribing to everything again) whenever the connection is lost.
pub(super) async fn subscribe_loop(
    hub: Weak<HubInner>,
    shared: Arc<Shared>,
    inbound: Arc<Inbound>,
    link: Link,
) {
    let mut link = Some(link);
    let mut backoff = Backoff::new();
    let mut failures = Throttle::new(Duration::from_secs(10));
    let mut first = true;
    loop {
        let mut connected = match link.take() {
            Some(connected) => connected,
            None => {
                let waiting = "deliveries from other nodes wait";
                let made = reconnect(&shared, &mut backoff, &mut failures, waiting, || {
                    connect(&shared, &inbound)
                });
                match made.await {
                    Some(made) => made,
                    None => return,
                }
            }
        };
        // The first connection was made with the hub, which marked it connected; the
        // changes noted since are pending, and `follow` applies them.
        let subscribed = match std::mem::take(&mut first) {
            true => Ok(()),
            false => resubscribe(&hub, &shared, &mut connected).await,
        };
        let result = match subscribed {
            Ok(()) => {
                backoff.reset();
                follow(&hub, &shared, &inbound, &mut connected).await
            }
            Err(e) => Err(e),
        };
        shared.interest.set_disconnected(&shared.counters);
        match result {
            Ok(()) => return,
            Err(e) => {
                if let Some(unlogged) = failures.ready() {
                    tracing::warn!(error = %e, unlogged, redis = shared.connector.shown(), "lost the subscription to redis; local delivery goes on, reconnecting");
                }
            }
        }
        if hub.strong_count() == 0 {
            return;
        }
        backoff.wait(&shared.cancel).await;
    }
}

/// Subscribes to every route the registry holds now (and forgets the changes noted
/// before: the registry has them).
async fn resubscribe(
    hub: &Weak<HubInner>,
    shared: &Shared,
    link: &mut Link,
) -> Result<(), RedisError> {
    let routes: Vec<Arc<str>> = match shared.routing {
        Routing::Broadcast => vec![Arc::from(shared.keys.broadcast())],
        Routing::Interest => {
            shared.interest.lock().pending.clear();
            let Some(inner) = hub.upgrade() else {
                return Ok(());
            };
            let held = Hub { inner }.read().routes();
            let routes: Vec<Arc<str>> = held
                .iter()
                .map(|(kind, name)| shared.route(*kind, name))
                .collect();
            link.subscribe(&routes, shared.sharded).await?;
            routes
        }
    };
    shared
        .interest
        .set_connected(routes.into_iter().collect(), &shared.counters);
    tracing::info!(
        redis = shared.connector.shown(),
        "subscribed on redis again; deliveries from other nodes resume"
    );
    Ok(())
}

/// Applies the noted changes as they come and checks that Redis answers; returns `Ok`
/// when the hub is dropped, or the error that lost the connection.
async fn follow(
    hub: &Weak<HubInner>,
    shared: &Shared,
    inbound: &Inbound,
    link: &mut Link,
) -> Result<(), RedisError> {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => return Ok(()),
            _ = shared.interest.changed.notified() => apply_changes(shared, link).await?,
            _ = inbound.disconnected.notified() => {
                return Err(RedisError::from((redis::ErrorKind::Io, "the subscriber's connection closed")));
            }
            _ = ping.tick(), if !shared.connector.is_cluster() => {
                let _: Value = redis::cmd("PING").query_async(link).await?;
            }
        }
        if hub.strong_count() == 0 {
            return Ok(());
        }
    }
}

/// Subscribes to the routes newly wanted and unsubscribes from those no longer wanted,
/// each set in one batch.
async fn apply_changes(shared: &Shared, link: &mut Link) -> Result<(), RedisError> {
    let (subscribe, unsubscribe) = {
        let mut state = shared.interest.lock();
        let pending = std::mem::take(&mut state.pending);
        let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
        for (route, wanted) in pending {
            match (wanted, state.active.contains(&route)) {
                (true, false) => subscribe.push(route),
                (false, true) => {
                    // Inactive from now: a join that comes while the unsubscribe is on its
                    // way waits for the next subscribe.
                    state.active.remove(&route);
                    unsubscribe.push(route);
                }
                _ => {}
            }
        }
        (subscribe, unsubscribe)
    };
    if !unsubscribe.is_empty() {
        link.unsubscribe(&unsubscribe, shared.sharded).await?;
    }
    if !subscribe.is_empty() {
        link.subscribe(&subscribe, shared.sharded).await?;
        {
            let mut state = shared.interest.lock();
            state.active.extend(subscribe);
        }
        shared.interest.progress.send_replace(());
    }
    let count = shared.interest.lock().active.len() as u64;
    shared
        .counters
        .subscriptions
        .store(count, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}
