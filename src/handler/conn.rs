use crate::hub::{Hub, HubError, HubRegistration, Payload, Recovery, Target};
use crate::protocol::codec::{OpCode, Role};
use crate::protocol::deflate::Negotiated;
use crate::protocol::{validate_outgoing, CloseError, CloseReason, Codec, Message, Prepared};
use crate::queue::{Position, SendError, SessionHandle, SlowConsumerPolicy};
use crate::session::Session;
use crate::transport::Writer;

/// The handler's view of its connection: the session, and ways to send and close.
///
/// Sends from inside a handler go straight into the connection's write buffer; the engine
/// writes everything that accumulated with one write when the callback returns. To send
/// from another task, take a [`SessionHandle`] with [`Conn::handle`].
///
/// ```
/// use estuary::{Conn, Handler, Message};
///
/// #[derive(Clone)]
/// struct Polite;
///
/// impl Handler for Polite {
///     async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
///         if msg.as_text() == Some("bye") {
///             conn.close(1000, "see you").expect("1000 is a valid close code");
///         } else {
///             let _ = conn.send(msg);
///         }
///     }
/// }
/// ```
pub struct Conn {
    session: Session,
    writer: Writer,
    handle: SessionHandle,
    hub: HubRegistration,
    max_buffered: usize,
    policy: SlowConsumerPolicy,
    sent: u64,
}

impl Conn {
    pub(crate) fn new(
        session: Session,
        handle: SessionHandle,
        hub: HubRegistration,
        max_buffered: usize,
        policy: SlowConsumerPolicy,
        deflate: Option<&Negotiated>,
    ) -> Self {
        Self {
            session,
            writer: Writer::new(Role::Server).with_deflate(deflate),
            handle,
            hub,
            max_buffered,
            policy,
            sent: 0,
        }
    }

    /// The session: ids, peer address, request headers and query, identity.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The session, mutably (to keep values in its extensions).
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Sends a message to the client.
    ///
    /// The payload is not copied when it is large: the message's bytes go to the socket
    /// as they are, so echoing a message received costs no copy at all.
    pub fn send(&mut self, message: impl Into<Message>) -> Result<(), SendError> {
        self.check_room()?;
        self.writer.message(&message.into());
        self.sent += 1;
        Ok(())
    }

    /// Sends `value` encoded with `codec`: JSON text, or MessagePack binary.
    ///
    /// ```
    /// use estuary::{Codec, Conn, Handler, Message};
    ///
    /// #[derive(serde::Serialize)]
    /// struct Welcome<'a> { user: &'a str }
    ///
    /// #[derive(Clone)]
    /// struct Greeter;
    ///
    /// impl Handler for Greeter {
    ///     async fn on_open(&mut self, conn: &mut Conn) {
    ///         let codec = conn.codec().unwrap_or(Codec::Json);
    ///         let user = conn.session().user_id().to_owned();
    ///         let _ = conn.send_value(codec, &Welcome { user: &user });
    ///     }
    ///
    ///     async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}
    /// }
    /// ```
    pub fn send_value<T: serde::Serialize + ?Sized>(
        &mut self,
        codec: Codec,
        value: &T,
    ) -> Result<(), SendError> {
        self.send(codec.encode(value)?)
    }

    /// The codec the client negotiated as its subprotocol (`json`, `msgpack`), if the
    /// handler's [`select_protocol`](crate::Handler::select_protocol) picked one.
    ///
    /// ```
    /// use estuary::{Codec, Conn, Handler, Message};
    ///
    /// #[derive(Clone)]
    /// struct Typed;
    ///
    /// impl Handler for Typed {
    ///     fn select_protocol<'a>(&self, offered: &[&'a str]) -> Option<&'a str> {
    ///         Codec::select(offered)
    ///     }
    ///
    ///     async fn on_open(&mut self, conn: &mut Conn) {
    ///         if conn.codec().is_none() {
    ///             let _ = conn.close(1002, "offer the json or msgpack subprotocol");
    ///         }
    ///     }
    ///
    ///     async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}
    /// }
    /// ```
    pub fn codec(&self) -> Option<Codec> {
        self.session.protocol().and_then(Codec::from_protocol)
    }

    /// Sends a frame encoded once for many connections.
    pub fn send_prepared(&mut self, frame: &Prepared) -> Result<(), SendError> {
        self.check_room()?;
        self.writer.prepared(frame);
        self.sent += 1;
        Ok(())
    }

    /// Sends a ping; the client's pong is handled by the engine.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        if payload.len() > 125 {
            return Err(SendError::PingTooLong);
        }
        self.check_room()?;
        self.writer.control(OpCode::Ping, payload);
        Ok(())
    }

    /// Starts the close handshake with `code` and `reason`.
    ///
    /// The code must be one a peer may receive (1000-1003, 1007-1014, 3000-4999; see
    /// [`close_code`](crate::close_code)) and the reason at most 123 bytes. Messages sent
    /// after this fail with `SendError::Closed`; `on_close` runs once the client answers or
    /// the close timeout passes.
    pub fn close(&mut self, code: u16, reason: &str) -> Result<(), CloseError> {
        validate_outgoing(code, reason)?;
        let reason = CloseReason::Local {
            code,
            reason: reason.to_owned(),
        };
        if !self.writer.close(reason) {
            return Err(CloseError::AlreadyClosing);
        }
        Ok(())
    }

    /// Whether the close handshake has begun (either side's close frame).
    pub fn is_closing(&self) -> bool {
        !self.writer.state().is_open()
    }

    /// A handle to send to this connection from other tasks.
    pub fn handle(&self) -> SessionHandle {
        self.handle.clone()
    }

    /// The hub this connection is registered in, to deliver to other connections.
    pub fn hub(&self) -> &Hub {
        self.hub.hub()
    }

    /// Joins a channel; `Ok(false)` if already a member. Channels are left when the socket
    /// closes.
    ///
    /// Refused when the name is longer than the hub's `max_channel_len`, when the
    /// connection is in `max_channels_per_connection` channels already, or when the hub's
    /// [`HubPolicy`](crate::HubPolicy) says no. With a Redis backplane it returns once
    /// deliveries to the channel from other nodes reach this connection.
    pub async fn join(&mut self, channel: &str) -> Result<bool, HubError> {
        self.hub.hub().join_conn(self.hub.id(), channel).await
    }

    /// Joins a channel and, if it keeps history, gets what was published after `since`:
    /// the position of the last publication the client saw (from an earlier connection),
    /// or `None` to start from now. Refused as [`Conn::join`] is.
    ///
    /// Send the [`Recovery`]'s publications to the client before this callback returns,
    /// through [`Handler::on_publication`](crate::Handler::on_publication) as live ones
    /// go: the live publications wait in the connection's queue behind them, with no gap
    /// and none twice. The recovery says whether it got everything after `since` (not if
    /// history no longer holds some of it, or the channel's stream was lost and started a
    /// new epoch), so that the application can fetch its state afresh, and the channel's
    /// position to start from next time. A member already, or a channel without history,
    /// recovers nothing.
    ///
    /// The publications go into the connection's write buffer at once: a history bigger
    /// than the connection's queue bound
    /// ([`WebSocketConfig::max_queued_bytes`](crate::WebSocketConfig::max_queued_bytes))
    /// meets the slow-consumer policy, as any burst would. Keep the history's size within
    /// it.
    ///
    /// ```
    /// use estuary::{Conn, Handler, Message, Position};
    ///
    /// #[derive(Clone)]
    /// struct Feed;
    ///
    /// impl Handler for Feed {
    ///     async fn on_open(&mut self, conn: &mut Conn) {
    ///         // The client says where it was, e.g. `?offset=41&epoch=9f3c...`.
    ///         let session = conn.session();
    ///         let since = match (session.query_param("offset"), session.query_param("epoch")) {
    ///             (Some(offset), Some(epoch)) => offset
    ///                 .parse()
    ///                 .ok()
    ///                 .map(|offset| Position::new(offset, epoch.into_owned())),
    ///             _ => None,
    ///         };
    ///         match conn.join_since("news", since.as_ref()).await {
    ///             Ok(recovery) => {
    ///                 for publication in recovery.publications {
    ///                     self.on_publication(conn, publication);
    ///                 }
    ///                 if !recovery.complete {
    ///                     let _ = conn.send("some news was lost: reload");
    ///                 }
    ///             }
    ///             Err(e) => {
    ///                 let _ = conn.send(format!("cannot join: {e}"));
    ///             }
    ///         }
    ///     }
    ///
    ///     async fn on_message(&mut self, _conn: &mut Conn, _msg: Message) {}
    /// }
    /// ```
    pub async fn join_since(
        &mut self,
        channel: &str,
        since: Option<&Position>,
    ) -> Result<Recovery, HubError> {
        self.hub
            .hub()
            .join_since_conn(self.hub.id(), channel, since)
            .await
    }

    /// Leaves a channel; false if not a member.
    pub fn leave(&mut self, channel: &str) -> bool {
        self.hub.hub().leave_conn(self.hub.id(), channel)
    }

    /// The channels this connection is a member of.
    pub fn channels(&self) -> Vec<String> {
        self.hub.hub().channels_of(self.hub.id())
    }

    /// Whether this connection is a member of `channel`.
    pub fn is_member(&self, channel: &str) -> bool {
        self.hub.hub().is_member(self.hub.id(), channel)
    }

    /// Sends a message through the hub as this connection: the hub's
    /// [`HubPolicy`](crate::HubPolicy) decides whether it may send to `to`. Returns how
    /// many sessions on this node it was queued for (with a Redis backplane, the other
    /// nodes get it too).
    pub fn send_to(&mut self, to: Target, message: impl Into<Message>) -> Result<usize, HubError> {
        let frame = Prepared::new(message);
        self.hub
            .hub()
            .send_as(self.hub.id(), to, Payload::Frame(frame))
    }

    /// Registers this connection under a unique name, so `Target::name` reaches it.
    /// Released when the socket closes.
    pub async fn register_name(&mut self, name: &str) -> Result<(), HubError> {
        self.hub.hub().register_name(self.hub.id(), name).await
    }

    /// Releases a unique name; false if this connection did not hold it.
    pub fn unregister_name(&mut self, name: &str) -> bool {
        self.hub.hub().unregister_name(self.hub.id(), name)
    }

    /// Waits, within a bound, until deliveries from other nodes to this session and its
    /// user reach this node.
    pub(crate) async fn until_routed(&self) {
        self.hub.hub().until_routed(self.hub.id()).await;
    }

    /// Starts the close handshake for `reason`, once; later sends fail.
    pub(crate) fn start_close(&mut self, reason: CloseReason) {
        self.writer.close(reason);
    }

    /// Answers a ping, unless the connection is closing.
    pub(crate) fn write_pong(&mut self, payload: &[u8]) {
        if self.writer.state().is_open() {
            self.writer.control(OpCode::Pong, payload);
        }
    }

    pub(crate) fn writer(&mut self) -> &mut Writer {
        &mut self.writer
    }

    /// Messages sent since the last call, for the metrics.
    pub(crate) fn take_sent(&mut self) -> u64 {
        std::mem::take(&mut self.sent)
    }

    fn check_room(&mut self) -> Result<(), SendError> {
        if !self.writer.state().is_open() {
            return Err(SendError::Closed);
        }
        // Full means a backlog at the limit already; one message larger than the limit
        // still goes out when the peer has kept up.
        if self.writer.len() < self.max_buffered {
            return Ok(());
        }
        match self.policy {
            SlowConsumerPolicy::DropNewest => Err(SendError::QueueFull),
            SlowConsumerPolicy::Disconnect => {
                self.start_close(CloseReason::SlowConsumer);
                Err(SendError::SlowConsumer)
            }
        }
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("session", &self.session)
            .field("buffered", &self.writer.len())
            .field("closing", &self.writer.state().reason())
            .finish()
    }
}
