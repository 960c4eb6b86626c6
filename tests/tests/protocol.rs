//! The client WebSocket protocol, with guests (no token secret).

use std::time::Duration;

use chat_tests::{Client, Server};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn room(name: &str) -> (Server, u16) {
    let s = Server::default_server().await;
    let port = s.create_room(name).await;
    (s, port)
}

fn types(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|f| f["type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test]
async fn welcome_joined_left() {
    let (_s, port) = room("lobby").await;
    let mut alice = Client::guest(port, "alice").await;
    let w = &alice.welcome;
    assert_eq!(w["room"], "lobby");
    assert_eq!(w["you"]["name"], "alice");
    assert_eq!(w["you"]["role"], "guest");
    assert_eq!(w["you"]["connections"], 1);
    assert!(
        w["you"]["id"].as_str().unwrap().starts_with("guest:"),
        "{w}"
    );
    assert_eq!(w["members"].as_array().unwrap().len(), 1, "{w}");
    assert_eq!(w["members"][0]["id"], w["you"]["id"]);
    assert_eq!(w["history"], json!([]));
    assert_eq!(w["seq"], 0);
    assert!(w["epoch"].as_u64().unwrap() > 0, "{w}");
    assert_eq!(w["resumed"], false);

    let mut bob = Client::guest(port, "bob").await;
    let members = bob.welcome["members"].as_array().unwrap().clone();
    let mut names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["alice", "bob"]);
    assert_eq!(bob.welcome["epoch"], alice.welcome["epoch"]);

    let joined = alice.recv_json().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["user"]["id"], bob.id().as_str());
    assert_eq!(joined["user"]["name"], "bob");
    assert_eq!(joined["user"]["role"], "guest");
    assert_eq!(joined["user"]["connections"], 1);

    let bob_id = bob.id();
    assert!(bob.close().await);
    let left = alice.recv_json().await;
    assert_eq!(left["type"], "left", "{left}");
    assert_eq!(
        left["user"],
        json!({"id": bob_id, "name": "bob", "guest": true})
    );
}

#[tokio::test]
async fn guest_names_are_checked() {
    let (_s, port) = room("names").await;
    // No name, empty name, too long: refused with 4000.
    for q in [
        "",
        "name=",
        "name=%20%20",
        &format!("name={}", "n".repeat(65)),
    ] {
        let mut c = Client::connect(port, q).await;
        let (code, _) = c.expect_close().await;
        assert_eq!(code, 4000, "query {q:?}");
    }
    // Names are trimmed.
    let c = Client::join(port, "name=%20carol%20").await;
    assert_eq!(c.welcome["you"]["name"], "carol");
}

#[tokio::test]
async fn say_reaches_others_and_acks_the_sender() {
    let (_s, port) = room("talk").await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    let mut carol = Client::guest(port, "carol").await;
    alice.recv_type("joined").await;
    alice.recv_type("joined").await;
    bob.recv_type("joined").await;

    alice.say("hello", "c-1").await;
    let ack = alice.recv_json().await;
    assert_eq!(ack, json!({"type":"ack","client_id":"c-1","seq":1}));
    for c in [&mut bob, &mut carol] {
        let m = c.recv_type("message").await;
        assert_eq!(m["seq"], 1);
        assert_eq!(m["text"], "hello");
        assert_eq!(
            m["from"],
            json!({"id": alice.id(), "name": "alice", "guest": true})
        );
        assert!(m["ts"].as_u64().unwrap() > 1_600_000_000_000, "{m}");
    }
    // The sender does not get its own message back.
    let skipped = alice.sync().await;
    assert!(
        !skipped.iter().any(|f| f["type"] == "message"),
        "{skipped:?}"
    );

    // Without a client id the ack has none.
    bob.send_json(json!({"type":"say","text":"second"})).await;
    let ack = bob.recv_json().await;
    assert_eq!(ack, json!({"type":"ack","seq":2}));
    let third = carol.say_acked("third").await;
    assert_eq!(third, 3);
    let m = alice.recv_type("message").await;
    assert_eq!(
        (m["seq"].as_u64(), m["text"].as_str()),
        (Some(2), Some("second"))
    );
    let m = alice.recv_type("message").await;
    assert_eq!(
        (m["seq"].as_u64(), m["text"].as_str()),
        (Some(3), Some("third"))
    );

    // Empty text is refused.
    alice.send_json(json!({"type":"say","text":"   "})).await;
    let e = alice.recv_type("error").await;
    assert_eq!(e["code"], "bad_request", "{e}");
}

#[tokio::test]
async fn whisper_goes_to_the_target_only() {
    let (_s, port) = room("psst").await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    let mut carol = Client::guest(port, "carol").await;
    alice
        .send_json(json!({"type":"whisper","to": bob.id(),"text":"secret"}))
        .await;
    let w = bob.recv_type("whisper").await;
    assert_eq!(
        w["from"],
        json!({"id": alice.id(), "name": "alice", "guest": true})
    );
    assert_eq!(
        w["to"],
        json!({"id": bob.id(), "name": "bob", "guest": true})
    );
    assert_eq!(w["text"], "secret");
    assert!(w["ts"].is_u64());
    let skipped = carol.sync().await;
    assert!(
        !skipped.iter().any(|f| f["type"] == "whisper"),
        "{skipped:?}"
    );
    let skipped = alice.sync().await;
    assert!(
        !skipped.iter().any(|f| f["type"] == "whisper"),
        "{skipped:?}"
    );

    alice
        .send_json(json!({"type":"whisper","to":"guest:nobody","text":"hi"}))
        .await;
    let e = alice.recv_type("error").await;
    assert_eq!(e["code"], "not_found", "{e}");
}

#[tokio::test]
async fn history_paging() {
    let s = Server::default_server().await;
    let port = s
        .create_room_settings("hist", Some(json!({"history_size": 10})))
        .await;
    let mut alice = Client::guest(port, "alice").await;
    for i in 1..=15 {
        let seq = alice.say_acked(&format!("m{i}")).await;
        assert_eq!(seq, i);
    }
    // A newcomer gets the last `history_size` messages.
    let mut bob = Client::guest(port, "bob").await;
    let h = bob.welcome["history"].as_array().unwrap();
    let seqs: Vec<u64> = h.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (6..=15).collect::<Vec<_>>());
    assert_eq!(h[0]["text"], "m6");
    assert_eq!(bob.welcome["seq"], 15);

    let page = |before: Option<u64>, limit: Option<u64>| {
        let mut v = json!({"type":"history"});
        if let Some(b) = before {
            v["before"] = json!(b);
        }
        if let Some(l) = limit {
            v["limit"] = json!(l);
        }
        v
    };
    bob.send_json(page(None, Some(5))).await;
    let r = bob.recv_type("history").await;
    let seqs: Vec<u64> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![11, 12, 13, 14, 15]);
    assert_eq!(r["more"], true);

    bob.send_json(page(Some(11), Some(5))).await;
    let r = bob.recv_type("history").await;
    let seqs: Vec<u64> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![6, 7, 8, 9, 10]);
    assert_eq!(r["more"], true);

    bob.send_json(page(Some(3), Some(5))).await;
    let r = bob.recv_type("history").await;
    let seqs: Vec<u64> = r["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(r["more"], false);
    assert_eq!(r["messages"][0]["text"], "m1");

    for bad in [101, 0] {
        bob.send_json(page(None, Some(bad))).await;
        let e = bob.recv_type("error").await;
        assert_eq!(e["code"], "bad_request", "limit {bad}: {e}");
    }
}

#[tokio::test]
async fn resume_replays_missed_messages() {
    let (_s, port) = room("resume").await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    let epoch = alice.welcome["epoch"].as_u64().unwrap();
    for i in 1..=3 {
        bob.say_acked(&format!("b{i}")).await;
    }
    let m = alice.recv_type("message").await;
    assert_eq!(m["seq"], 1);
    assert!(alice.close().await);
    for i in 4..=5 {
        bob.say_acked(&format!("b{i}")).await;
    }
    // Alice saw seq 1; she comes back and gets 2..=5.
    let mut again = Client::join(port, &format!("name=alice&since=1&epoch={epoch}")).await;
    assert_eq!(again.welcome["resumed"], true, "{}", again.welcome);
    assert_eq!(again.welcome["seq"], 5);
    for seq in 2..=5u64 {
        let m = again.recv_json().await;
        assert_eq!(m["type"], "message", "{m}");
        assert_eq!(m["seq"], seq, "{m}");
        assert_eq!(m["text"], format!("b{seq}"));
    }

    // A wrong epoch: no resume, the history comes in welcome instead.
    let c = Client::join(port, &format!("name=alice2&since=1&epoch={}", epoch + 1)).await;
    assert_eq!(c.welcome["resumed"], false, "{}", c.welcome);
    assert_eq!(c.welcome["history"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn typing_is_relayed_to_others() {
    let (_s, port) = room("typing").await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    alice.recv_type("joined").await;
    alice.send_json(json!({"type":"typing"})).await;
    let t = bob.recv_type("typing").await;
    assert_eq!(
        t["user"],
        json!({"id": alice.id(), "name": "alice", "guest": true})
    );
    let skipped = alice.sync().await;
    assert!(
        !skipped.iter().any(|f| f["type"] == "typing"),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn signal_is_relayed() {
    let (_s, port) = room("signal").await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    let data = json!({"sdp": "v=0", "candidates": [1, 2, 3]});
    alice
        .send_json(json!({"type":"signal","to": bob.id(),"data": data}))
        .await;
    let sig = bob.recv_type("signal").await;
    assert_eq!(
        sig["from"],
        json!({"id": alice.id(), "name": "alice", "guest": true})
    );
    assert_eq!(sig["data"], data);

    let big = "x".repeat(17 * 1024);
    alice
        .send_json(json!({"type":"signal","to": bob.id(),"data": {"blob": big}}))
        .await;
    let e = alice.recv_type("error").await;
    assert_eq!(e["code"], "too_long", "{e}");

    alice
        .send_json(json!({"type":"signal","to":"guest:nobody","data": 1}))
        .await;
    let e = alice.recv_type("error").await;
    assert_eq!(e["code"], "not_found", "{e}");
    let skipped = bob.sync().await;
    assert!(
        !skipped.iter().any(|f| f["type"] == "signal"),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn ping_pong() {
    let (_s, port) = room("pp").await;
    let mut alice = Client::guest(port, "alice").await;
    alice.send_json(json!({"type":"ping"})).await;
    assert_eq!(alice.recv_json().await, json!({"type":"pong"}));
}

#[tokio::test]
async fn bad_frames_get_errors() {
    let s = Server::default_server().await;
    let port = s
        .create_room_settings("errs", Some(json!({"max_text_len": 10})))
        .await;
    let mut c = Client::guest(port, "alice").await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::text("{not json"), "bad_json"),
        (Message::text(r#"{"type":"dance"}"#), "unknown_type"),
        (Message::text(r#"{"text":"no type"}"#), "bad_request"),
        (Message::text(r#"{"type":"say"}"#), "bad_request"),
        (
            Message::text(r#"{"type":"say","text":"hi","extra":1}"#),
            "bad_request",
        ),
        (Message::binary(vec![1u8, 2, 3]), "binary_not_supported"),
        (
            Message::text(r#"{"type":"say","text":"12345678901"}"#),
            "too_long",
        ),
        (
            Message::text(r#"{"type":"whisper","to":"x","text":"12345678901"}"#),
            "too_long",
        ),
    ];
    for (frame, code) in cases {
        let shown = format!("{frame:?}");
        c.send(frame).await;
        let e = c.recv_json().await;
        assert_eq!(e["type"], "error", "{shown}: {e}");
        assert_eq!(e["code"], code, "{shown}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    // Exactly max_text_len characters (multi-byte) is fine.
    let seq = c.say_acked("éééééééééé").await;
    assert_eq!(seq, 1);
    // Still connected.
    let skipped = c.sync().await;
    assert!(skipped.is_empty(), "{}", types(&skipped).join(","));
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let (_s, port) = room("big").await;
    let mut watcher = Client::guest(port, "watcher").await;
    let mut c = Client::guest(port, "alice").await;
    let id = c.id();
    let text = json!({"type":"say","text":"x".repeat(70 * 1024)}).to_string();
    let _ = c.try_send(Message::text(text)).await;
    // Either a 1009 close frame, or the connection is closed without one.
    if let Some((code, _)) = c.expect_close_or_end(Duration::from_secs(5)).await {
        assert_eq!(code, 1009);
    }
    let left = watcher.recv_type("left").await;
    assert_eq!(left["user"]["id"], id.as_str());
    // The room is fine.
    let skipped = watcher.sync().await;
    assert!(
        !skipped.iter().any(|f| f["type"] == "message"),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn long_multibyte_text_up_to_max_text_len() {
    let s = Server::default_server().await;
    let port = s
        .create_room_settings("big2", Some(json!({"max_text_len": 8000})))
        .await;
    let mut c = Client::guest(port, "alice").await;
    // 8000 characters of 3 bytes: a 24 KB frame, accepted.
    let seq = c.say_acked(&"€".repeat(8000)).await;
    assert_eq!(seq, 1);
    c.say(&"€".repeat(8001), "long").await;
    let e = c.recv_type("error").await;
    assert_eq!(e["code"], "too_long", "{e}");
}

#[tokio::test]
async fn shootout_mode() {
    let s = Server::default_server().await;
    let port = s
        .create_room_settings("bench", Some(json!({"mode":"shootout"})))
        .await;
    let mut a = Client::connect(port, "").await;
    let mut b = Client::connect(port, "").await;
    let echo = r#"{"type":"echo","payload":{"a":[1,2.50,"x"]}}"#;
    a.send_text(echo).await;
    // No welcome: the first frame is the echo, byte for byte.
    assert_eq!(a.recv_text().await, echo);
    // Make sure b is registered before the broadcast (its echo came back).
    b.send_text(r#"{"type":"echo","payload":0}"#).await;
    assert_eq!(b.recv_json().await, json!({"type":"echo","payload":0}));

    a.send_text(r#"{"type":"broadcast","payload":{"n":7}}"#)
        .await;
    assert_eq!(
        a.recv_json().await,
        json!({"type":"broadcast","payload":{"n":7}})
    );
    assert_eq!(
        a.recv_json().await,
        json!({"type":"broadcastResult","payload":{"n":7}})
    );
    assert_eq!(
        b.recv_json().await,
        json!({"type":"broadcast","payload":{"n":7}})
    );
    b.expect_silence(Duration::from_millis(200)).await;
}

/// A client's close gets the room's close in reply (the closing handshake),
/// echoing its code; a code that may not be sent back is answered with 1000.
#[tokio::test]
async fn a_clients_close_is_answered_with_a_close() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    let (_s, port) = room("handshake").await;
    for (sent, want) in [(Some(1000u16), 1000u16), (Some(4000), 4000), (None, 1000)] {
        let mut c = Client::guest(port, "leaver").await;
        let frame = sent.map(|code| CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        });
        c.ws()
            .send(Message::Close(frame))
            .await
            .expect("send the close");
        match c.next_event(Duration::from_secs(5)).await {
            chat_tests::Event::Close(Some((code, _))) => assert_eq!(code, want, "sent {sent:?}"),
            other => panic!("sent {sent:?}: expected the room's close, got {other:?}"),
        }
    }
}
