//! The chat end to end, through estuary's public API and its test kit only: real
//! sockets, a client that shares no code with the server, every wait bounded.
//!
//! Each test drops its server at the end, which shuts it down in the background; a test
//! of shutdown itself would call `TestServer::stop`.

use estuary::testing::{TestClient, TestServer};
use estuary::{Codec, Hub};
use estuary_example_chat::{service, Command, Reply};

async fn chat() -> TestServer {
    let hub = Hub::new();
    TestServer::builder()
        .hub(hub.clone())
        .start(service(hub))
        .await
}

async fn join(client: &mut TestClient, codec: Codec, room: &str) -> Vec<String> {
    let join = Command::Join { room: room.into() };
    client.send_value(codec, &join).await;
    match client.recv_value(codec).await {
        Reply::Joined {
            room: joined,
            members,
        } if joined == room => members,
        other => panic!("expected to join {room}, got {other:?}"),
    }
}

fn said(room: &str, from: &str, text: &str) -> Reply {
    Reply::Said {
        room: room.into(),
        from: from.into(),
        text: text.into(),
    }
}

#[tokio::test]
async fn members_of_a_room_hear_each_other_and_others_do_not() {
    let server = chat().await;
    let mut alice = server.connect("/?name=alice").await;
    let mut bob = server.connect("/?name=bob").await;
    let mut carol = server.connect("/?name=carol").await;
    assert_eq!(join(&mut alice, Codec::Json, "lobby").await, ["alice"]);
    assert_eq!(join(&mut bob, Codec::Json, "lobby").await, ["alice", "bob"]);
    assert_eq!(join(&mut carol, Codec::Json, "kitchen").await, ["carol"]);
    let hello = Command::Say {
        room: "lobby".into(),
        text: "hello".into(),
    };
    alice.send_value(Codec::Json, &hello).await;
    let heard = said("lobby", "alice", "hello");
    assert_eq!(bob.recv_value::<Reply>(Codec::Json).await, heard);
    assert_eq!(alice.recv_value::<Reply>(Codec::Json).await, heard);
    carol
        .expect_silence(std::time::Duration::from_millis(200))
        .await;
    assert_eq!(server.hub().stats().sessions, 3);
}

#[tokio::test]
async fn json_and_msgpack_clients_share_a_room_each_in_its_own_codec() {
    let server = chat().await;
    let mut web = server.client("/?name=web").protocol("json").connect().await;
    let mut app = server
        .client("/?name=app")
        .protocol("msgpack")
        .protocol("json")
        .connect()
        .await;
    assert_eq!(app.protocol(), Some("msgpack"));
    join(&mut web, Codec::Json, "lobby").await;
    assert_eq!(
        join(&mut app, Codec::MsgPack, "lobby").await,
        ["app", "web"]
    );
    let hi = Command::Say {
        room: "lobby".into(),
        text: "hi from the app".into(),
    };
    app.send_value(Codec::MsgPack, &hi).await;
    let heard = said("lobby", "app", "hi from the app");
    let as_json = web.recv().await;
    assert!(as_json.as_text().is_some(), "{as_json:?}");
    assert_eq!(Codec::Json.decode::<Reply>(&as_json).unwrap(), heard);
    assert_eq!(app.recv_value::<Reply>(Codec::MsgPack).await, heard);
}

#[tokio::test]
async fn a_command_of_the_wrong_shape_gets_an_error_and_the_socket_stays_open() {
    let server = chat().await;
    let mut alice = server.connect("/?name=alice").await;
    alice.send(r#"{"type":"join","room":7}"#).await;
    let error = Reply::Error {
        // Internally tagged enums go through serde's buffer, which keeps neither the path
        // nor the position.
        error: "json: invalid type: integer `7`, expected a string".into(),
    };
    assert_eq!(alice.recv_value::<Reply>(Codec::Json).await, error);
    alice.send(r#"{"type":"dance"}"#).await;
    let Reply::Error { error } = alice.recv_value(Codec::Json).await else {
        panic!("expected an error");
    };
    assert!(
        error.starts_with("json: type: unknown variant `dance`, expected one of `join`"),
        "{error}"
    );
    let say = Command::Say {
        room: "lobby".into(),
        text: "anyone?".into(),
    };
    alice.send_value(Codec::Json, &say).await;
    let error = "join lobby before you say something there";
    assert_eq!(
        alice.recv_value::<Reply>(Codec::Json).await,
        Reply::Error {
            error: error.into()
        }
    );
    assert_eq!(join(&mut alice, Codec::Json, "lobby").await, ["alice"]);
}

#[tokio::test]
async fn truncated_msgpack_gets_an_error_and_the_socket_stays_open() {
    let server = chat().await;
    let mut app = server
        .client("/?name=app")
        .protocol("msgpack")
        .connect()
        .await;
    let join = Codec::MsgPack
        .encode(&Command::Join {
            room: "lobby".into(),
        })
        .unwrap();
    let cut = join.as_bytes()[..join.len() - 3].to_vec();
    app.send(estuary::Message::binary(cut)).await;
    let Reply::Error { error } = app.recv_value(Codec::MsgPack).await else {
        panic!("expected an error");
    };
    assert_eq!(error, "msgpack: room: the message ends inside a value");
    app.send(join).await;
    assert!(matches!(
        app.recv_value(Codec::MsgPack).await,
        Reply::Joined { .. }
    ));
}

#[tokio::test]
async fn a_client_speaking_another_codec_than_it_negotiated_is_closed_with_1003() {
    let server = chat().await;
    let mut app = server
        .client("/?name=app")
        .protocol("msgpack")
        .connect()
        .await;
    let mut bystander = server.connect("/?name=web").await;
    app.send(r#"{"type":"join","room":"lobby"}"#).await;
    assert_eq!(
        app.expect_close(1003).await,
        "msgpack: expected a binary message, got a text one"
    );
    assert_eq!(join(&mut bystander, Codec::Json, "lobby").await, ["web"]);
}

#[tokio::test]
async fn a_socket_without_a_name_is_refused_with_401() {
    let server = chat().await;
    let refused = server.client("/").try_connect().await.unwrap_err();
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body, "a chat needs ?name=");
    assert_eq!(server.hub().stats().sessions, 0);
}

#[tokio::test]
async fn a_member_who_closes_leaves_the_room() {
    let server = chat().await;
    let mut alice = server.connect("/?name=alice").await;
    let mut bob = server.connect("/?name=bob").await;
    join(&mut alice, Codec::Json, "lobby").await;
    join(&mut bob, Codec::Json, "lobby").await;
    bob.close(1000, "bye").await;
    server
        .until_hub("bob left the lobby", |hub| {
            hub.members("lobby#json").len() == 1
        })
        .await;
    let mut carol = server.connect("/?name=carol").await;
    assert_eq!(
        join(&mut carol, Codec::Json, "lobby").await,
        ["alice", "carol"]
    );
}
