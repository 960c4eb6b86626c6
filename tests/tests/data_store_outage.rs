//! The store going away: acks wait during an outage and nothing is lost;
//! readiness waits until the store was reached once.
//!
//! The MongoDB tests need nx-27017 (`NX27017_BIN`, else
//! `<workspace>/.venv/bin/nx-27017`; `tests/run` installs it). They fail when
//! it cannot start: they are never skipped.

mod data_common;
mod data_obey;

use std::time::{Duration, Instant};

use chat_tests::{Client, Server, ServerOpts, procs};
use data_common::{Nx, history_all, recv_type_within, seq_of, seq_texts};
use data_obey::*;
use mongodb::bson::doc;
use reqwest::Method;
use serde_json::json;

// ---------------------------------------------------------------------------
// 4. The store goes away during a chat and comes back

#[tokio::test]
async fn a_store_outage_holds_acks_and_loses_nothing() {
    let mut nx = Nx::start_file().await;
    let db = "outage_db";
    let s = Server::start(ServerOpts::new().args(["--store", &nx.uri(db)])).await;
    let port = s.create_room("out").await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    alice.recv_type("joined").await;
    let mut said = say_n(&mut alice, "stored", 3).await;
    for (seq, _) in &said {
        assert_eq!(seq_of(&bob.recv_type("message").await), *seq);
    }

    // The store dies.
    nx.kill();
    let held: Vec<(String, String)> = (1..=5)
        .map(|i| (format!("held-{i}"), format!("during the outage {i}")))
        .collect();
    for (cid, text) in &held {
        alice.say(text, cid).await;
    }
    // Broadcasts still arrive...
    for (i, (_, text)) in held.iter().enumerate() {
        let m = bob.recv_type("message").await;
        assert_eq!(seq_of(&m), 4 + i as u64, "{m}");
        assert_eq!(m["text"], text.as_str(), "{m}");
    }
    // ... the master holds what it could not write ...
    let sr = &s;
    let load = chat_tests::wait_for(
        Duration::from_secs(10),
        "pendingWrites > 0",
        || async move {
            let r = sr.admin(Method::GET, "/api/v1/load").await;
            (r.status == 200 && r.data()["pendingWrites"].as_u64().unwrap_or(0) > 0)
                .then(|| r.data().clone())
        },
    )
    .await;
    assert_eq!(load["storeReached"], true, "{load}");
    // ... stays ready (the store was reached once) ...
    let r = s
        .request(Method::GET, &s.admin_url("/readyz"), None, None)
        .await;
    assert_eq!(r.status, 200, "/readyz during the outage: {}", r.text);
    // ... and acks nothing yet (everything queued before the pong has been
    // delivered).
    let frames = alice.sync().await;
    assert!(
        !frames.iter().any(|f| f["type"] == "ack"),
        "acks while the store is down: {frames:?}"
    );
    // A room keeps chatting: bob's text reaches alice, unacked too.
    bob.say("bob during the outage", "bob-1").await;
    let (m, _) = recv_type_within(&mut alice, "message", Duration::from_secs(5), "bob's").await;
    assert_eq!(seq_of(&m), 9);
    let load = s.admin(Method::GET, "/api/v1/load").await;
    assert!(
        load.data()["pendingWrites"].as_u64().unwrap_or(0) > 0,
        "{}",
        load.text
    );

    // The store comes back on the same port and file: the held acks arrive,
    // in order.
    nx.restart().await;
    let t = Instant::now();
    for (i, (cid, text)) in held.iter().enumerate() {
        let (ack, _) =
            recv_type_within(&mut alice, "ack", Duration::from_secs(30), "held ack").await;
        assert_eq!(ack["client_id"], cid.as_str(), "{ack}");
        let seq = 4 + i as u64;
        assert_eq!(ack["seq"].as_u64(), Some(seq), "{ack}");
        said.push((seq, text.clone()));
    }
    let (ack, _) = recv_type_within(&mut bob, "ack", Duration::from_secs(30), "bob's ack").await;
    assert_eq!(ack, json!({"type": "ack", "client_id": "bob-1", "seq": 9}));
    said.push((9, "bob during the outage".into()));
    eprintln!(
        "held acks arrived {:?} after the store restarted",
        t.elapsed()
    );
    chat_tests::wait_for(
        Duration::from_secs(10),
        "pendingWrites = 0",
        || async move {
            let r = sr.admin(Method::GET, "/api/v1/load").await;
            (r.data()["pendingWrites"].as_u64() == Some(0)).then_some(())
        },
    )
    .await;
    let seq = alice.say_acked("after the outage").await;
    assert_eq!(seq, 10);
    said.push((10, "after the outage".into()));

    // Every acked message is stored exactly once, in seq order...
    let docs = nx
        .find(db, "messages", doc! { "room": "out" }, doc! { "seq": 1 })
        .await;
    let stored: Vec<(u64, String)> = docs
        .iter()
        .map(|d| {
            let seq = d
                .get_i64("seq")
                .or_else(|_| d.get_i32("seq").map(i64::from))
                .unwrap_or_else(|e| panic!("stored seq: {e}: {d}"));
            (seq as u64, d.get_str("text").unwrap_or("").to_owned())
        })
        .collect();
    assert_eq!(stored, said, "the messages collection");
    // ... and history pages return them once, in order.
    let all = history_all(&mut alice, 4).await;
    assert_eq!(seq_texts(&all), said, "paged history");
    drop(s);
    drop(nx);
}

// ---------------------------------------------------------------------------
// 6. Readiness waits for the store

#[tokio::test]
async fn readyz_waits_for_the_store_to_be_reached_once() {
    let store_port = procs::free_port();
    let uri = format!("mongodb://127.0.0.1:{store_port}/ready_db?serverSelectionTimeoutMS=300");
    let s =
        Server::start(ServerOpts::new().args(["--store", &uri, "--cache-refresh", "500ms"])).await;
    let sr = &s;
    let readyz = move || async move {
        sr.request(Method::GET, &sr.admin_url("/readyz"), None, None)
            .await
    };
    // Never reached: not ready (checked over a few refreshes).
    for _ in 0..4 {
        let r = readyz().await;
        assert_eq!(r.status, 503, "/readyz without a store: {}", r.text);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let load = s.admin(Method::GET, "/api/v1/load").await;
    assert_eq!(load.data()["storeReached"], false, "{}", load.text);
    // Alive all the same.
    let r = s
        .request(Method::GET, &s.admin_url("/livez"), None, None)
        .await;
    assert_eq!(r.status, 200, "/livez: {}", r.text);

    // The store appears on that port: ready.
    let nx = Nx::start_on(store_port, false).await;
    let t = Instant::now();
    chat_tests::wait_for(Duration::from_secs(20), "/readyz 200", || async {
        (readyz().await.status == 200).then_some(())
    })
    .await;
    eprintln!("ready {:?} after the store started", t.elapsed());
    let load = s.admin(Method::GET, "/api/v1/load").await;
    assert_eq!(load.data()["storeReached"], true, "{}", load.text);
    // And rooms work.
    let port = s.create_room("afterwards").await;
    let mut c = Client::guest(port, "alice").await;
    assert_eq!(c.say_acked("stored").await, 1);
    drop(s);
    drop(nx);
}
