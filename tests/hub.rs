//! Delivery through the hub with real clients: every target, join/leave, unique names,
//! server-side events, presence, cleanup, and a slow recipient that slows no one else.

mod common;

use std::time::Duration;

use common::{TestServer, STEP};
use estuary::testing::TestClient;
use estuary::{
    Caller, Conn, Event, Handler, Hub, HubError, HubLimits, HubPolicy, Member, Message, Refused,
    Target, WebSocketConfig, WebSocketService,
};
use tower::ServiceBuilder;

/// Greets with its session id; "join:x", "leave:x", "name:x" act on the hub and answer
/// how it went, "say:c:text" sends text to channel c as this connection (answering only a
/// refusal); events come back to the client as "event:<json>".
#[derive(Clone)]
struct Member_;

impl Handler for Member_ {
    async fn on_open(&mut self, conn: &mut Conn) {
        let id = conn.session().id().to_string();
        let _ = conn.send(format!("session:{id}"));
    }

    async fn on_message(&mut self, conn: &mut Conn, msg: Message) {
        let text = msg.as_text().unwrap_or_default().to_string();
        let reply = match text.split_once(':') {
            Some(("join", channel)) => match conn.join(channel).await {
                Ok(joined) => format!("joined:{joined}"),
                Err(e) => format!("refused:{e}"),
            },
            Some(("leave", channel)) => format!("left:{}", conn.leave(channel)),
            Some(("name", name)) => format!("named:{}", conn.register_name(name).await.is_ok()),
            Some(("say", line)) => match line.split_once(':') {
                Some((channel, text)) => {
                    match conn.send_to(Target::channel(channel), text.to_owned()) {
                        Ok(_) => return,
                        Err(e) => format!("refused:{e}"),
                    }
                }
                None => return,
            },
            _ => return,
        };
        let _ = conn.send(reply);
    }

    async fn on_event(&mut self, conn: &mut Conn, event: Event) {
        let json = String::from_utf8_lossy(event.as_json().unwrap_or_default()).into_owned();
        let _ = conn.send(format!("event:{json}"));
    }
}

/// A server whose sessions take their user id from `?user=` and, as an authenticator
/// that lets clients choose might, their session id from `&session=`.
async fn hub_server(hub: &Hub, config: WebSocketConfig) -> TestServer {
    let ws = WebSocketService::new(Member_)
        .with_hub(hub.clone())
        .with_config(config);
    let service = ServiceBuilder::new()
        .map_request(common::nodes::identity_from_query)
        .service(ws);
    estuary::testing::TestServer::builder()
        .hub(hub.clone())
        .timeout(STEP)
        .start(service)
        .await
        .into()
}

struct Peer {
    client: TestClient,
    session: String,
}

impl Peer {
    async fn connect(server: &TestServer, user: &str) -> Peer {
        Self::connect_to(server, &format!("/?user={user}")).await
    }

    /// Connects with a session id of the client's choosing.
    async fn connect_as(server: &TestServer, user: &str, session: &str) -> Peer {
        Self::connect_to(server, &format!("/?user={user}&session={session}")).await
    }

    async fn connect_to(server: &TestServer, path: &str) -> Peer {
        let mut client = server.connect(path).await;
        let greeting = client.recv_text().await;
        let session = greeting
            .strip_prefix("session:")
            .expect("greeting")
            .to_string();
        Peer { client, session }
    }

    async fn say(&mut self, line: &str) -> String {
        self.client.send(line.to_owned()).await;
        self.client.recv_text().await
    }

    async fn next(&mut self) -> String {
        self.client.recv_text().await
    }

    /// Asserts nothing arrives within a short wait.
    async fn nothing(&mut self) {
        self.client.expect_silence(Duration::from_millis(150)).await;
    }
}

#[tokio::test]
async fn each_target_reaches_exactly_its_sessions() {
    let hub = Hub::new();
    let server = hub_server(&hub, WebSocketConfig::default()).await;
    let mut alice_phone = Peer::connect(&server, "alice").await;
    let mut alice_laptop = Peer::connect(&server, "alice").await;
    let mut bob = Peer::connect(&server, "bob").await;

    assert_eq!(hub.send(Target::user("alice"), "to alice").unwrap(), 2);
    assert_eq!(alice_phone.next().await, "to alice");
    assert_eq!(alice_laptop.next().await, "to alice");
    bob.nothing().await;

    assert_eq!(
        hub.send(Target::session(bob.session.clone()), "to bob's session")
            .unwrap(),
        1
    );
    assert_eq!(bob.next().await, "to bob's session");

    let phone = Target::user_session("alice", alice_phone.session.clone());
    assert_eq!(hub.send(phone, "to the phone").unwrap(), 1);
    assert_eq!(alice_phone.next().await, "to the phone");
    alice_laptop.nothing().await;
    let wrong_user = Target::user_session("bob", alice_phone.session.clone());
    assert_eq!(
        hub.send(wrong_user, "nope").unwrap(),
        0,
        "a session of another user is not reached"
    );

    assert_eq!(alice_laptop.say("join:room").await, "joined:true");
    assert_eq!(bob.say("join:room").await, "joined:true");
    assert_eq!(hub.send(Target::channel("room"), "to the room").unwrap(), 2);
    assert_eq!(alice_laptop.next().await, "to the room");
    assert_eq!(bob.next().await, "to the room");
    alice_phone.nothing().await;

    assert_eq!(bob.say("name:referee").await, "named:true");
    assert_eq!(
        alice_phone.say("name:referee").await,
        "named:false",
        "names are unique"
    );
    assert_eq!(
        hub.send(Target::name("referee"), "to the referee").unwrap(),
        1
    );
    assert_eq!(bob.next().await, "to the referee");

    let json = serde_json::json!({"kind": "kick"});
    assert_eq!(hub.send_event(Target::user("bob"), &json).unwrap(), 1);
    assert_eq!(
        bob.next().await,
        r#"event:{"kind":"kick"}"#,
        "events arrive in on_event"
    );
    server.stop().await;
}

#[tokio::test]
async fn leaving_a_channel_stops_delivery_and_presence_lists_members() {
    let hub = Hub::new();
    let server = hub_server(&hub, WebSocketConfig::default()).await;
    let mut alice = Peer::connect(&server, "alice").await;
    let mut bob = Peer::connect(&server, "bob").await;
    assert_eq!(alice.say("join:room").await, "joined:true");
    assert_eq!(
        alice.say("join:room").await,
        "joined:false",
        "already a member"
    );
    assert_eq!(bob.say("join:room").await, "joined:true");

    let mut members = hub.members("room");
    members.sort();
    let mut expected = vec![
        Member {
            session_id: alice.session.clone(),
            user_id: "alice".into(),
        },
        Member {
            session_id: bob.session.clone(),
            user_id: "bob".into(),
        },
    ];
    expected.sort();
    assert_eq!(members, expected);

    assert_eq!(bob.say("leave:room").await, "left:true");
    assert_eq!(bob.say("leave:room").await, "left:false");
    assert_eq!(
        hub.send(Target::channel("room"), "after bob left").unwrap(),
        1
    );
    assert_eq!(alice.next().await, "after bob left");
    bob.nothing().await;
    assert_eq!(hub.members("room").len(), 1);

    drop(alice);
    server
        .until_hub("alice forgotten", |hub| hub.members("room").is_empty())
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_connect_join_close_cycles_leave_nothing_behind() {
    let hub = Hub::new();
    let server = hub_server(&hub, WebSocketConfig::default()).await;
    for round in 0..1000 {
        let mut peer = Peer::connect(&server, &format!("user{}", round % 7)).await;
        assert_eq!(peer.say("join:churn").await, "joined:true");
        assert_eq!(peer.say(&format!("name:n{round}")).await, "named:true");
        if round % 2 == 0 {
            peer.client.close(1000, "").await;
        }
        // Odd rounds just vanish without a close frame.
    }
    server
        .until_hub("the hub empties", |hub| {
            hub.stats() == estuary::HubStats::default()
        })
        .await;
    assert!(hub.members("churn").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_slow_recipient_is_disconnected_without_holding_up_the_others() {
    let hub = Hub::new();
    // The slow socket is let go this long after it is found slow (its close frame cannot
    // be written to a socket nobody reads).
    const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
    let config = WebSocketConfig::default()
        .with_max_queued_bytes(64 * 1024)
        .with_close_timeout(CLOSE_TIMEOUT);
    let server = hub_server(&hub, config).await;
    let mut readers = Vec::new();
    for i in 0..10 {
        let mut peer = Peer::connect(&server, &format!("reader{i}")).await;
        assert_eq!(peer.say("join:feed").await, "joined:true");
        readers.push(peer);
    }
    // The slow one joins from a raw socket and then never reads.
    let mut slow = common::RawWs::connect(server.addr, "/?user=slow").await;
    slow.send_frame(true, 0x1, b"join:feed").await;
    server
        .until_hub("slow joined", |hub| hub.members("feed").len() == 11)
        .await;

    let payload = "x".repeat(16 * 1024);
    let messages = 400; // 6.4 MiB per recipient: far more than the slow socket buffers
    let mut handles = Vec::new();
    for mut reader in readers {
        handles.push(tokio::spawn(async move {
            for _ in 0..messages {
                assert_eq!(reader.next().await.len(), 16 * 1024);
            }
            reader
        }));
    }
    let started = tokio::time::Instant::now();
    for _ in 0..messages {
        hub.send(Target::channel("feed"), payload.clone()).unwrap();
        tokio::task::yield_now().await;
    }
    let delivered = async {
        let mut readers = Vec::new();
        for handle in handles {
            readers.push(handle.await.unwrap());
        }
        readers
    };
    // 0.1 to 0.2 s with this binary alone (debug build, two cores), up to 3.3 s with the
    // suite and other builds running; the rest is slack. Well under the close timeout,
    // so a delivery that waited for the server to let the slow socket go fails.
    let deadline = Duration::from_secs(6);
    let readers = tokio::time::timeout_at(started + deadline, delivered)
        .await
        .unwrap_or_else(|_| {
            panic!("the fast readers did not get every message within {deadline:?}")
        });
    println!(
        "the fast readers got 6.4 MiB each in {:?}",
        started.elapsed()
    );
    // And they did while the slow one, unread, was still a member.
    assert!(
        hub.members("feed").iter().any(|m| m.user_id == "slow"),
        "the slow socket was let go before the others were served"
    );
    // It starts reading at last: what the socket buffers held, then the server's reason.
    assert_eq!(slow.read_close().await, (1008, "slow consumer".to_owned()));
    slow.send_frame(true, 0x8, &1008u16.to_be_bytes()).await;
    // The readers are still connected: the one to leave the channel is the slow one.
    server
        .until_hub("slow consumer dropped from the channel", |hub| {
            hub.members("feed").iter().all(|m| m.user_id != "slow")
        })
        .await;
    let members = hub.members("feed");
    assert_eq!(members.len(), 10, "{members:?}");
    drop(readers);
    server.stop().await;
}

/// Only `alice` may join `staff-*` channels; nobody speaks in `quiet`.
struct Rules;

impl HubPolicy for Rules {
    fn may_join(&self, who: &Caller<'_>, channel: &str) -> Result<(), Refused> {
        if channel.starts_with("staff-") && who.user_id != "alice" {
            return Err(Refused::new("staff only"));
        }
        Ok(())
    }

    fn may_send(&self, _who: &Caller<'_>, to: &Target) -> Result<(), Refused> {
        match to {
            Target::Channel(c) if &**c == "quiet" => Err(Refused::new("this channel is quiet")),
            _ => Ok(()),
        }
    }
}

#[tokio::test]
async fn the_policy_decides_joins_and_sends_and_the_refusal_says_why() {
    let hub = Hub::builder().policy(Rules).build();
    let server = hub_server(&hub, WebSocketConfig::default()).await;
    let mut alice = Peer::connect(&server, "alice").await;
    let mut bob = Peer::connect(&server, "bob").await;
    assert_eq!(alice.say("join:staff-room").await, "joined:true");
    assert_eq!(
        bob.say("join:staff-room").await,
        "refused:refused: staff only"
    );
    assert_eq!(hub.members("staff-room").len(), 1);

    assert_eq!(alice.say("join:quiet").await, "joined:true");
    assert_eq!(bob.say("join:quiet").await, "joined:true");
    assert_eq!(
        bob.say("say:quiet:hello").await,
        "refused:refused: this channel is quiet"
    );
    alice.nothing().await;
    // The application's own sends are not the policy's to refuse.
    assert_eq!(
        hub.send(Target::channel("quiet"), "from the server")
            .unwrap(),
        2
    );
    assert_eq!(alice.next().await, "from the server");
    assert_eq!(bob.next().await, "from the server");

    // Joins from plain code take the same path.
    let err = hub
        .join(Target::user("bob"), "staff-lounge")
        .await
        .unwrap_err();
    assert!(matches!(err, HubError::Refused(_)), "{err}");
    assert_eq!(
        hub.join(Target::user("alice"), "staff-lounge")
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        hub.join(Target::user("nobody"), "lobby").await,
        Err(HubError::NoSuchSession)
    ));
    server.stop().await;
}

#[tokio::test]
async fn joins_stop_at_the_cap_and_long_names_are_refused_with_clear_errors() {
    let limits = HubLimits::default()
        .with_max_channels_per_connection(3)
        .with_max_channel_len(16)
        .with_max_name_len(8);
    let hub = Hub::builder().limits(limits).build();
    let server = hub_server(&hub, WebSocketConfig::default()).await;
    let mut alice = Peer::connect(&server, "alice").await;
    for i in 0..3 {
        assert_eq!(alice.say(&format!("join:c{i}")).await, "joined:true");
    }
    assert_eq!(
        alice.say("join:c3").await,
        "refused:at most 3 channels per connection"
    );
    assert_eq!(
        alice.say("join:c0").await,
        "joined:false",
        "a member already"
    );
    assert_eq!(alice.say("leave:c0").await, "left:true");
    assert_eq!(alice.say("join:c3").await, "joined:true", "room again");
    assert_eq!(
        alice.say(&format!("join:{}", "x".repeat(17))).await,
        "refused:a channel name may be at most 16 bytes long, this one is 17"
    );
    assert_eq!(alice.say("name:123456789").await, "named:false");
    assert_eq!(hub.stats().channels, 3);
    let err = hub
        .send(
            Target::channel("x".repeat(17)),
            "to a channel no one can be in",
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            HubError::TooLong {
                what: "channel name",
                ..
            }
        ),
        "{err}"
    );
    server.stop().await;
}

#[tokio::test]
async fn joins_from_plain_code_reach_every_session_of_a_user_and_leaves_undo_them() {
    let hub = Hub::new();
    let server = hub_server(&hub, WebSocketConfig::default()).await;
    let mut phone = Peer::connect(&server, "alice").await;
    let mut laptop = Peer::connect(&server, "alice").await;
    assert_eq!(hub.join(Target::user("alice"), "news").await.unwrap(), 2);
    assert_eq!(hub.join(Target::user("alice"), "news").await.unwrap(), 0);
    assert_eq!(hub.members("news").len(), 2);
    assert_eq!(hub.send(Target::channel("news"), "extra").unwrap(), 2);
    assert_eq!(phone.next().await, "extra");
    assert_eq!(laptop.next().await, "extra");
    let phone_only = Target::user_session("alice", phone.session.clone());
    assert_eq!(hub.leave(phone_only, "news"), 1);
    assert_eq!(hub.members("news").len(), 1);
    assert_eq!(laptop.say("leave:news").await, "left:true");
    assert!(hub.members("news").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_chosen_session_id_can_neither_be_taken_over_nor_reached_by_another_user() {
    let hub = Hub::new();
    let server = hub_server(&hub, WebSocketConfig::default()).await;
    let mut alice = Peer::connect_as(&server, "alice", "tab-1").await;
    assert_eq!(alice.session, "tab-1");
    // Mallory's authenticator lets her pick the same id: refused, not a takeover.
    let taken = common::raw_request(
        server.addr,
        common::handshake_request("/?user=mallory&session=tab-1", ""),
    )
    .await;
    assert_eq!(taken.status, 409, "{}", taken.body);
    assert_eq!(
        taken.body,
        "the session id is in use by another connection\n"
    );
    assert_eq!(
        hub.send(Target::user_session("alice", "tab-1"), "for alice")
            .unwrap(),
        1
    );
    assert_eq!(alice.next().await, "for alice");
    // An id a client chose is reached only together with its user.
    assert_eq!(hub.send(Target::session("tab-1"), "to whoever").unwrap(), 0);
    assert_eq!(
        hub.send(Target::user_session("mallory", "tab-1"), "no")
            .unwrap(),
        0
    );
    alice.nothing().await;
    server.stop().await;
}
