//! The example server's chat, as a client meets its bounds and rules: joins refused at
//! the cap with the server's memory flat, names over the limit, channels only some users
//! may join or speak in (`[hub.channels]`), and errors that never repeat what the client
//! sent.

mod common;

use std::time::Duration;

use common::example::ExampleServer;
use common::load::{basic_auth, next_json};
use common::proc::{rss_kib, settled_rss_kib};
use common::{connect, connect_with, Client};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message as WsMessage;

const ANY_PORT: &[&str] = &["--bind", "127.0.0.1:0"];

fn command(value: serde_json::Value) -> WsMessage {
    WsMessage::text(value.to_string())
}

/// The next event that is not a chat line.
async fn reply(client: &mut Client) -> serde_json::Value {
    loop {
        let event = next_json(client).await;
        if event["type"] != "message" {
            return event;
        }
    }
}

async fn error_for(client: &mut Client, value: serde_json::Value) -> String {
    client.send(command(value)).await.unwrap();
    let event = reply(client).await;
    assert_eq!(event["type"], "error", "{event}");
    event["reason"].as_str().unwrap().to_owned()
}

/// Joins `channel-{first}` and on, `count` of them in one go: how many were refused.
async fn join_batch(client: &mut Client, first: usize, count: usize) -> usize {
    for i in first..first + count {
        let join = serde_json::json!({"type": "join", "channel": format!("channel-{i}")});
        client.feed(command(join)).await.unwrap();
    }
    client.flush().await.unwrap();
    let mut refused = 0;
    for _ in 0..count {
        let event = reply(client).await;
        match event["type"].as_str() {
            Some("joined") => {}
            Some("error") => {
                assert_eq!(
                    event["reason"],
                    "cannot join: at most 100 channels per connection"
                );
                refused += 1;
            }
            _ => panic!("unexpected {event}"),
        }
    }
    refused
}

/// A client that joins channel after channel, with a new name each time, gets each join
/// past the cap refused, and the server's memory does not grow with the attempts.
#[tokio::test]
async fn joins_in_a_loop_are_refused_at_the_cap_and_the_servers_memory_stays_flat() {
    let config = "[hub]\nmax_channels_per_connection = 100\nmax_channel_length = 64";
    let server = ExampleServer::start(config, ANY_PORT);
    let mut client = connect(&server.url("/ws")).await;
    assert_eq!(next_json(&mut client).await["type"], "welcome");
    assert_eq!(
        join_batch(&mut client, 0, 1000).await,
        900,
        "100 joined, the rest refused"
    );
    let pid = server.pid();
    let before = settled_rss_kib(pid, Duration::from_millis(200)).await;
    let mut refused = 0;
    for batch in 1..=20 {
        refused += join_batch(&mut client, batch * 1000, 1000).await;
    }
    assert_eq!(refused, 20_000);
    let after = settled_rss_kib(pid, Duration::from_millis(200)).await;
    assert!(
        after <= before + 1024,
        "RSS went from {before} KiB to {after} KiB over 20,000 refused joins"
    );
    assert!(rss_kib(pid) > 0);
}

#[tokio::test]
async fn channel_rules_decide_who_joins_and_who_speaks_and_refusals_say_which() {
    let config = r#"
[auth]
mode = "basic"
users = { alice = "a", bob = "b" }

[hub.channels."staff-*"]
join = ["alice"]

[hub.channels.announcements]
say = ["alice"]
"#;
    let server = ExampleServer::start(config, ANY_PORT);
    let open = |user: &'static str| {
        let url = server.url("/ws");
        async move {
            let auth = basic_auth(user);
            let mut client = connect_with(&url, &[("authorization", &auth)]).await;
            assert_eq!(next_json(&mut client).await["type"], "welcome");
            client
        }
    };
    let mut alice = open("alice:a").await;
    let mut bob = open("bob:b").await;

    alice
        .send(command(
            serde_json::json!({"type": "join", "channel": "staff-room"}),
        ))
        .await
        .unwrap();
    assert_eq!(reply(&mut alice).await["type"], "joined");
    assert_eq!(
        error_for(
            &mut bob,
            serde_json::json!({"type": "join", "channel": "staff-room"})
        )
        .await,
        "cannot join: refused: this channel is for its members only"
    );

    for client in [&mut alice, &mut bob] {
        let join = serde_json::json!({"type": "join", "channel": "announcements"});
        client.send(command(join)).await.unwrap();
        assert_eq!(reply(client).await["type"], "joined");
    }
    let say =
        |text: &str| serde_json::json!({"type": "say", "channel": "announcements", "text": text});
    assert_eq!(
        error_for(&mut bob, say("me too")).await,
        "cannot send: refused: only some users may speak in this channel"
    );
    alice.send(command(say("hear ye"))).await.unwrap();
    for client in [&mut alice, &mut bob] {
        let event = next_json(client).await;
        assert_eq!(
            (event["type"].as_str(), event["text"].as_str()),
            (Some("message"), Some("hear ye"))
        );
    }
}

/// Whatever a client sends, the error it gets back says what was wrong in the server's
/// own words, never with the client's bytes in it.
#[tokio::test]
async fn errors_never_repeat_what_the_client_sent() {
    let server = ExampleServer::start("[hub]\nmax_channel_length = 64", ANY_PORT);
    let mut client = connect(&server.url("/ws")).await;
    assert_eq!(next_json(&mut client).await["type"], "welcome");
    let sneaky = "<img src=x onerror=alert(1)>";
    let long = format!("{sneaky}{}", "x".repeat(1000));
    let cases = [
        (serde_json::json!({"type": sneaky}), "bad command"),
        (
            serde_json::json!({"type": "join", "channel": long}),
            "at most 64 bytes",
        ),
        (
            serde_json::json!({"type": "leave", "channel": sneaky}),
            "not a member",
        ),
        (
            serde_json::json!({"type": "say", "channel": sneaky, "text": "hi"}),
            "join the channel",
        ),
        (
            serde_json::json!({"type": "members", "channel": long}),
            "at most 64 bytes",
        ),
        (
            serde_json::json!({"type": "whisper", "user": long, "text": "hi"}),
            "no such user",
        ),
        (
            serde_json::json!({"type": "join", "channel": 7}),
            "bad command",
        ),
    ];
    for (sent, expected) in cases {
        let reason = error_for(&mut client, sent.clone()).await;
        assert!(reason.contains(expected), "{sent} -> {reason}");
        assert!(
            !reason.contains("img") && !reason.contains("xxx"),
            "{sent} -> {reason}"
        );
    }
    client
        .send(WsMessage::text("not json at all: <b>"))
        .await
        .unwrap();
    let reason = reply(&mut client).await["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!reason.contains("<b>"), "{reason}");
}

/// On a channel with history, every line carries its position; a client that comes back
/// with the last position it saw gets the lines it missed first, marked as recovered,
/// then `joined` saying whether that was all, then live lines; a position the server
/// cannot recover from says that some were lost.
#[tokio::test]
async fn a_client_that_rejoins_with_its_last_position_gets_the_lines_it_missed_marked_recovered() {
    let config = "[hub.channels.\"*\"]\nhistory_size = 100\nhistory_ttl = \"1m\"\n\n[hub.channels.\"plain-*\"]\njoin = []";
    let server = ExampleServer::start(config, ANY_PORT);
    let open = || async {
        let mut client = connect(&server.url("/ws")).await;
        assert_eq!(next_json(&mut client).await["type"], "welcome");
        client
    };
    let join = |since: serde_json::Value| {
        command(serde_json::json!({"type": "join", "channel": "lobby", "since": since}))
    };
    let say =
        |text: &str| command(serde_json::json!({"type": "say", "channel": "lobby", "text": text}));
    let mut alice = open().await;
    let mut bob = open().await;
    for client in [&mut alice, &mut bob] {
        client.send(join(serde_json::Value::Null)).await.unwrap();
        let joined = next_json(client).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        assert_eq!(joined["offset"], 0, "{joined}");
        assert!(joined.get("recovered").is_none(), "nothing asked: {joined}");
    }
    alice.send(say("seen by bob")).await.unwrap();
    let seen = next_json(&mut bob).await;
    assert_eq!(
        (seen["type"].as_str(), seen["offset"].as_u64()),
        (Some("message"), Some(1))
    );
    assert!(seen.get("recovered").is_none(), "live: {seen}");
    let epoch = seen["epoch"].as_str().unwrap().to_owned();
    drop(bob);

    // Bob's socket is gone; wait until alice's next line is said without him.
    for i in 0..3 {
        alice.send(say(&format!("missed {i}"))).await.unwrap();
    }
    for _ in 0..4 {
        assert_eq!(next_json(&mut alice).await["type"], "message");
    }
    let mut bob = open().await;
    bob.send(join(serde_json::json!({"offset": 1, "epoch": epoch})))
        .await
        .unwrap();
    for i in 0..3 {
        let line = next_json(&mut bob).await;
        assert_eq!(line["text"], format!("missed {i}"), "{line}");
        assert_eq!(line["offset"], i + 2, "{line}");
        assert_eq!(line["recovered"], true, "{line}");
    }
    let joined = next_json(&mut bob).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(
        (joined["recovered"].as_bool(), joined["missed"].as_u64()),
        (Some(true), Some(3))
    );
    assert_eq!(joined["offset"], 4);
    alice.send(say("live again")).await.unwrap();
    let live = next_json(&mut bob).await;
    assert_eq!(
        (live["text"].as_str(), live["offset"].as_u64()),
        (Some("live again"), Some(5))
    );
    assert!(live.get("recovered").is_none(), "{live}");

    // A position the server never gave: told that some were lost.
    let mut carol = open().await;
    carol
        .send(join(
            serde_json::json!({"offset": 3, "epoch": "not-this-one"}),
        ))
        .await
        .unwrap();
    let joined = reply(&mut carol).await;
    assert_eq!(joined["recovered"], false, "{joined}");
    assert_eq!(
        joined["missed"], 5,
        "it is sent what the channel keeps: {joined}"
    );
}
