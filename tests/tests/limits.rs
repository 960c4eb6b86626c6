//! Room capacity, slow mode, flood control and slow consumers.

use std::time::Duration;

use chat_tests::{Client, Event, Server, ServerOpts};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn max_members_refuses_the_next_user() {
    let s = Server::default_server().await;
    let port = s
        .create_room_settings("tiny", Some(json!({"max_members": 1})))
        .await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::connect(port, "name=bob").await;
    let (code, _) = bob.expect_close().await;
    assert_eq!(code, 4005);
    assert!(
        !bob.skipped.iter().any(|f| f["type"] == "welcome"),
        "{:?}",
        bob.skipped
    );
    // Alice saw nobody join.
    let skipped = alice.sync().await;
    assert!(skipped.is_empty(), "{skipped:?}");
    // Once she leaves, there is room again.
    assert!(alice.close().await);
    let mut carol = None;
    for _ in 0..100 {
        let mut c = Client::connect(port, "name=carol").await;
        match c.next_event(Duration::from_secs(5)).await {
            Event::Json(v) if v["type"] == "welcome" => {
                carol = Some(c);
                break;
            }
            // Alice's leave may not be processed yet.
            Event::Close(Some((4005, _))) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("carol: {other:?}"),
        }
    }
    assert!(carol.is_some(), "the room stayed full after alice left");
}

#[tokio::test]
async fn slow_mode_limits_say() {
    let s = Server::default_server().await;
    let port = s
        .create_room_settings("slow", Some(json!({"slow_mode_ms": 1000})))
        .await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    alice.say_acked("first").await;
    alice.say("second", "c2").await;
    let e = alice.recv_type("error").await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    let wait = e["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!(wait > 0 && wait <= 1000, "retry_after_ms {wait}");
    // Bob is not slowed by alice.
    bob.say_acked("bob's").await;
    // After the window, alice may talk again.
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    alice.say_acked("third").await;
    let m = bob.recv_type("message").await;
    assert_eq!(m["text"], "third");
    let texts: Vec<&str> = bob
        .skipped
        .iter()
        .filter(|f| f["type"] == "message")
        .filter_map(|f| f["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["first"], "the refused say was delivered?");
}

#[tokio::test]
async fn burst_over_the_frame_bucket_is_rate_limited() {
    let s = Server::default_server().await;
    let port = s.create_room("burst").await;
    let mut c = Client::guest(port, "alice").await;
    // 130 frames at once: the first ~100 pass (burst), the rest are refused
    // with rate_limited; 30 strikes do not close the connection.
    let n = c
        .feed_many((0..130).map(|_| Message::text(r#"{"type":"ping"}"#)))
        .await;
    assert_eq!(n, 130);
    let mut pongs = 0;
    let mut limited = 0;
    let mut retry_after = Duration::ZERO;
    while pongs + limited < 130 {
        let f = c.recv_json().await;
        match f["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(f["code"], "rate_limited", "{f}");
                assert!(
                    f["retry_after_ms"].as_u64().is_some_and(|ms| ms >= 1),
                    "{f}"
                );
                let ms = f["retry_after_ms"].as_u64().unwrap_or(1);
                retry_after = retry_after.max(Duration::from_millis(ms));
                limited += 1;
            }
            _ => panic!("{f}"),
        }
    }
    assert!(
        (100..=110).contains(&pongs),
        "pongs {pongs}, limited {limited}"
    );
    assert!(limited >= 20, "pongs {pongs}, limited {limited}");
    // Still open once the bucket refilled: after the wait the server named.
    tokio::time::sleep(retry_after).await;
    c.sync().await;
}

#[tokio::test]
async fn client_backing_off_on_retry_after_is_never_closed() {
    // docs/PROTOCOL.md §9: "a well-behaved client that backs off on
    // retry_after_ms is never closed". This client sends 200 messages as
    // fast as the server lets it, waiting retry_after_ms after every
    // rate_limited error.
    let s = Server::default_server().await;
    let port = s.create_room("polite").await;
    let mut c = Client::guest(port, "polite").await;
    let mut refused = 0;
    for i in 0..200 {
        let text = format!("m{i}");
        loop {
            c.say(&text, "x").await;
            let f = match c.next_event(Duration::from_secs(5)).await {
                Event::Json(f) => f,
                other => panic!(
                    "message {i}: the connection ended with {other:?} after {refused} rate_limited errors"
                ),
            };
            match f["type"].as_str() {
                Some("ack") => break,
                Some("error") if f["code"] == "rate_limited" => {
                    refused += 1;
                    let ms = f["retry_after_ms"].as_u64().expect("retry_after_ms");
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                _ => panic!("{f}"),
            }
        }
    }
}

#[tokio::test]
async fn flooding_client_is_rate_limited_then_closed() {
    let s = Server::default_server().await;
    let port = s.create_room("flood").await;
    let mut watcher = Client::guest(port, "watcher").await;
    let mut c = Client::guest(port, "flooder").await;
    let id = c.id();
    let frames = (0..2000).map(|_| Message::text(r#"{"type":"ping"}"#));
    c.feed_many(frames).await;
    let close = c.expect_close_or_end(Duration::from_secs(10)).await;
    let limited = c
        .skipped
        .iter()
        .filter(|f| f["type"] == "error" && f["code"] == "rate_limited")
        .count();
    assert!(
        limited > 0,
        "no rate_limited error before the close ({close:?}); got {} frames",
        c.skipped.len()
    );
    assert!(
        c.skipped
            .iter()
            .filter(|f| f["type"] == "error")
            .all(|f| f["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0)),
        "rate_limited without retry_after_ms"
    );
    assert_eq!(
        close.as_ref().map(|c| c.0),
        Some(1008),
        "closed with {close:?}"
    );
    let left = watcher.recv_type("left").await;
    assert_eq!(left["user"]["id"], id.as_str());
}

#[tokio::test]
async fn slow_consumer_is_dropped_and_others_get_everything() {
    let s = Server::start(ServerOpts::new().args(["--outbound-queue-bytes", "65536"])).await;
    let port = s.create_room("firehose").await;
    let mut reader = Client::guest(port, "reader").await;
    let mut sleeper = Client::connect_small_rcvbuf(port, "name=sleeper").await;
    let welcome = sleeper.recv_json().await;
    assert_eq!(welcome["type"], "welcome");
    let sleeper_id = welcome["you"]["id"].as_str().unwrap().to_owned();
    sleeper.welcome = welcome;
    // Several senders: the kernel's socket buffers of the sleeper absorb
    // megabytes before the server's queue fills, and one user may send only
    // 30 messages a second.
    const SENDERS: usize = 6;
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        senders.push(Client::guest(port, &format!("sender{i}")).await);
    }
    let skipped = reader.sync().await;
    assert!(skipped.iter().all(|f| f["type"] == "joined"), "{skipped:?}");

    let body = "z".repeat(2000);
    let mut sent: std::collections::HashMap<u64, String> = Default::default();
    let mut n = 0usize;
    let mut next_read = 1u64;
    let mut saw_left = false;
    let mut rounds_after_left = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut pace = tokio::time::interval(Duration::from_millis(36));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while rounds_after_left < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sleeper was not dropped after {n} messages ({} KB)",
            n * 2
        );
        // Each user stays under its message rate (30/s).
        pace.tick().await;
        let mut texts = Vec::new();
        for (i, c) in senders.iter_mut().enumerate() {
            n += 1;
            let text = format!("{n:06}-{i}-{body}");
            c.say(&text, &n.to_string()).await;
            texts.push(text);
        }
        for (c, text) in senders.iter_mut().zip(texts) {
            loop {
                let f = c.recv_json().await;
                match f["type"].as_str() {
                    Some("ack") => {
                        sent.insert(f["seq"].as_u64().unwrap(), text);
                        break;
                    }
                    Some("message") | Some("joined") | Some("left") => {}
                    _ => panic!("a sender got {f}"),
                }
            }
        }
        if saw_left {
            rounds_after_left += 1;
        }
        // The reader keeps up, in order, with no gap.
        let last = sent.keys().max().copied().unwrap();
        while next_read <= last {
            let f = reader.recv_json().await;
            match f["type"].as_str() {
                Some("message") => {
                    let seq = f["seq"].as_u64().unwrap();
                    assert_eq!(seq, next_read, "gap or reorder at the reader");
                    assert_eq!(f["text"].as_str(), sent.get(&seq).map(String::as_str));
                    next_read += 1;
                }
                Some("left") => {
                    assert_eq!(f["user"]["id"], sleeper_id.as_str(), "{f}");
                    saw_left = true;
                }
                _ => panic!("reader got {f}"),
            }
        }
    }
    eprintln!("the sleeper was dropped after about {n} messages");
    // The sleeper's connection ends (after whatever was already buffered).
    let mut frames = 0;
    loop {
        match sleeper.next_event(Duration::from_secs(10)).await {
            Event::Json(_) => frames += 1,
            Event::Close(c) => {
                if let Some((code, _)) = c {
                    assert_eq!(code, 1008);
                }
                break;
            }
            Event::Ended | Event::Error(_) => break,
            other => panic!("sleeper: {other:?} after {frames} frames"),
        }
    }
    assert!(frames < n, "the sleeper got every message ({frames})");
}
