//! Users across rooms on one host (issue 13): direct messages between rooms,
//! acks after storage, seq order under concurrent senders, blocks, read
//! receipts and the unread summary in `welcome`, guests refused, bad input
//! refused without losing anything. Each behaviour runs on the embedded
//! store and on MongoDB (nx-27017: `NX27017_BIN`, never skipped).

mod data_common;

use std::collections::BTreeSet;

use chat_tests::{Client, Server, ServerOpts, token};
use data_common::Nx;
use mongodb::bson::doc;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Redb,
    Mongo,
}

/// A master with a JWT secret on the backend; the nx-27017 server with it.
struct Host {
    s: Server,
    secret: String,
    nx: Option<Nx>,
}

const DB: &str = "dm_db";

impl Host {
    async fn start(backend: Backend) -> Host {
        let secret = chat_tests::random_string(32);
        let mut opts = ServerOpts::new().jwt_secret(secret.clone());
        let nx = match backend {
            Backend::Redb => None,
            Backend::Mongo => {
                let nx = Nx::start_memory().await;
                opts = opts.args(["--store", &nx.uri(DB)]);
                Some(nx)
            }
        };
        Host {
            s: Server::start(opts).await,
            secret,
            nx,
        }
    }

    async fn room(&self, name: &str) -> u16 {
        self.s.create_room(name).await
    }

    async fn join(&self, port: u16, room: &str, user: &str) -> Client {
        Client::with_token(port, &token::member(&self.secret, user, room)).await
    }
}

fn dm(to: &str, text: &str, cid: &str) -> Value {
    json!({"type":"dm","to":to,"text":text,"client_id":cid})
}

/// Sends a DM and waits for its ack; the ack.
async fn dm_acked(c: &mut Client, to: &str, text: &str) -> Value {
    let cid = chat_tests::random_string(8);
    c.send_json(dm(to, text, &cid)).await;
    let ack = c.recv_type("ack").await;
    assert_eq!(ack["client_id"], cid.as_str(), "{ack}");
    ack
}

/// The error frame that answers the next frame sent.
async fn error_for(c: &mut Client, frame: Value) -> Value {
    c.send_json(frame).await;
    c.recv_type("error").await
}

async fn dm_history(c: &mut Client, with: &str) -> Vec<Value> {
    c.send_json(json!({"type":"dm_history","with":with,"limit":100}))
        .await;
    let h = c.recv_type("dm_history").await;
    assert_eq!(h["with"], with);
    h["messages"].as_array().cloned().unwrap_or_default()
}

/// Frames of `kind` among `frames`.
fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

// ---------------------------------------------------------------------------

async fn dm_crosses_rooms(backend: Backend) {
    let h = Host::start(backend).await;
    let (pa, pb) = (h.room("ra").await, h.room("rb").await);
    let mut alice = h.join(pa, "ra", "alice").await;
    let mut alice2 = h.join(pb, "rb", "alice").await;
    let mut bob = h.join(pb, "rb", "bob").await;
    // A token user's welcome carries the read state.
    assert_eq!(bob.welcome["dms"]["unread"], 0, "{}", bob.welcome);
    assert_eq!(bob.welcome["last_read"], 0, "{}", bob.welcome);

    let ack = dm_acked(&mut alice, "bob", "hello from ra").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    assert_eq!(ack["conversation"], "alice:bob", "{ack}");
    // Acked means stored: the store has it now.
    if let Some(nx) = &h.nx {
        let stored = nx
            .database(DB)
            .await
            .collection::<mongodb::bson::Document>("direct_messages")
            .find_one(doc! { "conversation": "alice:bob", "seq": 1_i64 })
            .await
            .expect("read direct_messages");
        let stored = stored.expect("the acked DM is in direct_messages");
        assert_eq!(stored.get_str("text").ok(), Some("hello from ra"));
    }

    let got = bob.recv_type("dm").await;
    assert_eq!(got["from"]["id"], "alice", "{got}");
    assert_eq!(got["from"]["name"], "alice", "{got}");
    assert_eq!(got["to"], "bob");
    assert_eq!(got["text"], "hello from ra");
    assert_eq!(got["seq"], 1);
    assert_eq!(got["conversation"], "alice:bob");
    assert!(got["ts"].as_u64().is_some_and(|t| t > 0), "{got}");
    // The sender's other connection (another room) gets it too...
    let copy = alice2.recv_type("dm").await;
    assert_eq!(copy["text"], "hello from ra");
    assert_eq!(copy["seq"], 1);
    // ...but not the sending connection (it got the ack).
    let rest = alice.sync().await;
    assert!(of_type(&rest, "dm").is_empty(), "{rest:?}");

    // The reply, from room rb, reaches alice in both rooms.
    let ack = dm_acked(&mut bob, "alice", "hi back").await;
    assert_eq!(ack["seq"], 2);
    assert_eq!(alice.recv_type("dm").await["text"], "hi back");
    assert_eq!(alice2.recv_type("dm").await["text"], "hi back");

    // Both sides read the same conversation.
    let from_bob = dm_history(&mut bob, "alice").await;
    let from_alice = dm_history(&mut alice, "bob").await;
    assert_eq!(from_bob, from_alice);
    let texts: Vec<_> = from_bob.iter().map(|m| m["text"].clone()).collect();
    assert_eq!(texts, vec![json!("hello from ra"), json!("hi back")]);

    // Presence for platforms: alice is in both rooms of this host.
    let p = h.s.api(Method::GET, "/api/v1/users/alice/presence").await;
    p.expect(200);
    assert_eq!(p.data()["online"], true, "{}", p.text);
    let mut rooms: Vec<String> = p.data()["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .map(|r| r["name"].as_str().expect("name").to_owned())
        .collect();
    rooms.sort();
    assert_eq!(rooms, vec!["ra", "rb"]);
    assert_eq!(p.data()["last_seen"], Value::Null);
    // Offline once the last connection closed (the rooms report it).
    alice.close().await;
    alice2.close().await;
    let deadline = tokio::time::Instant::now() + chat_tests::TIMEOUT;
    loop {
        let p = h.s.api(Method::GET, "/api/v1/users/alice/presence").await;
        if p.data()["online"] == false {
            assert_eq!(p.data()["rooms"], json!([]));
            assert!(p.data()["last_seen"].as_u64().is_some(), "{}", p.text);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still online: {}",
            p.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let bad = h.s.api(Method::GET, "/api/v1/users/%01/presence").await;
    bad.expect(400);
}

#[tokio::test]
async fn dm_crosses_rooms_redb() {
    dm_crosses_rooms(Backend::Redb).await;
}

#[tokio::test]
async fn dm_crosses_rooms_mongodb() {
    dm_crosses_rooms(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------

async fn concurrent_senders(backend: Backend) {
    const N: usize = 10;
    let h = Host::start(backend).await;
    let (pa, pb) = (h.room("ca").await, h.room("cb").await);
    let mut alice = h.join(pa, "ca", "alice").await;
    let mut bob = h.join(pb, "cb", "bob").await;
    // Both send without waiting, interleaved.
    for i in 0..N {
        alice
            .send_json(dm("bob", &format!("a{i}"), &format!("a{i}")))
            .await;
        bob.send_json(dm("alice", &format!("b{i}"), &format!("b{i}")))
            .await;
    }
    let mut seqs = BTreeSet::new();
    for c in [&mut alice, &mut bob] {
        let mut received = Vec::new();
        let mut acks = 0;
        while acks < N || received.len() < N {
            let f = c.recv_json().await;
            match f["type"].as_str() {
                Some("ack") => {
                    acks += 1;
                    assert!(
                        seqs.insert(f["seq"].as_u64().expect("seq")),
                        "seq twice: {f}"
                    );
                }
                Some("dm") => received.push(f["seq"].as_u64().expect("seq")),
                _ => {}
            }
        }
        // What each one receives arrives in seq order.
        let mut sorted = received.clone();
        sorted.sort_unstable();
        assert_eq!(received, sorted, "DMs out of order");
    }
    assert_eq!(seqs, (1..=2 * N as u64).collect(), "every seq once");
    let stored: Vec<u64> = dm_history(&mut alice, "bob")
        .await
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(stored, (1..=2 * N as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn concurrent_senders_redb() {
    concurrent_senders(Backend::Redb).await;
}

#[tokio::test]
async fn concurrent_senders_mongodb() {
    concurrent_senders(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------

async fn block_and_unblock(backend: Backend) {
    let h = Host::start(backend).await;
    let port = h.room("bl").await;
    let mut alice = h.join(port, "bl", "alice").await;
    let mut bob = h.join(port, "bl", "bob").await;
    bob.send_json(json!({"type":"block","user":"alice"})).await;
    let b = bob.recv_type("blocked").await;
    assert_eq!(b, json!({"type":"blocked","user":"alice","blocked":true}));

    let e = error_for(&mut alice, dm("bob", "let me in", "x1")).await;
    assert_eq!(e["code"], "forbidden", "{e}");
    assert_eq!(e["client_id"], "x1", "{e}");
    let seen = bob.sync().await;
    assert!(of_type(&seen, "dm").is_empty(), "{seen:?}");
    assert!(
        dm_history(&mut bob, "alice").await.is_empty(),
        "stored anyway"
    );
    // Bob may still write to alice.
    assert_eq!(dm_acked(&mut bob, "alice", "I can").await["seq"], 1);

    bob.send_json(json!({"type":"unblock","user":"alice"}))
        .await;
    assert_eq!(bob.recv_type("blocked").await["blocked"], false);
    assert_eq!(dm_acked(&mut alice, "bob", "thanks").await["seq"], 2);
    assert_eq!(bob.recv_type("dm").await["text"], "thanks");
}

#[tokio::test]
async fn block_and_unblock_redb() {
    block_and_unblock(Backend::Redb).await;
}

#[tokio::test]
async fn block_and_unblock_mongodb() {
    block_and_unblock(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------

async fn read_state(backend: Backend) {
    let h = Host::start(backend).await;
    let (pa, pb) = (h.room("ka").await, h.room("kb").await);
    let mut alice = h.join(pa, "ka", "alice").await;
    // Bob is away: the DMs wait for him in the store.
    for t in ["one", "two", "three"] {
        dm_acked(&mut alice, "bob", t).await;
    }
    dm_acked(&mut alice, "carol", "hi carol").await;
    let mut bob = h.join(pb, "kb", "bob").await;
    let dms = &bob.welcome["dms"];
    assert_eq!(dms["unread"], 3, "{}", bob.welcome);
    assert_eq!(dms["conversations"][0]["with"], "alice", "{dms}");
    assert_eq!(dms["conversations"][0]["unread"], 3, "{dms}");
    assert_eq!(dms["conversations"][0]["last"]["text"], "three", "{dms}");
    // The sender has nothing unread in what it sent.
    let alice_again = h.join(pa, "ka", "alice").await;
    assert_eq!(alice_again.welcome["dms"]["unread"], 0);
    assert_eq!(
        alice_again.welcome["dms"]["conversations"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // A receipt: to the other party, and to the reader's connections.
    bob.send_json(json!({"type":"read","with":"alice","seq":2}))
        .await;
    let r = alice.recv_type("read").await;
    assert_eq!(
        r,
        json!({"type":"read","by":"bob","conversation":"alice:bob","seq":2})
    );
    assert_eq!(bob.recv_type("read").await["seq"], 2);
    // A read marker never goes back.
    bob.send_json(json!({"type":"read","with":"alice","seq":1}))
        .await;
    assert_eq!(alice.recv_type("read").await["seq"], 2);
    // No conversation: not_found.
    let e = error_for(&mut bob, json!({"type":"read","with":"zed","seq":1})).await;
    assert_eq!(e["code"], "not_found", "{e}");

    // The room marker.
    let seq = bob.say_acked("in the room").await;
    bob.send_json(json!({"type":"read","seq":seq})).await;
    let r = bob.recv_type("read").await;
    assert_eq!(r, json!({"type":"read","room":"kb","seq":seq}));
    let e = error_for(&mut bob, json!({"type":"read","seq":seq + 100})).await;
    assert_eq!(e["code"], "bad_request", "{e}");

    let bob2 = h.join(pb, "kb", "bob").await;
    assert_eq!(bob2.welcome["last_read"], seq, "{}", bob2.welcome);
    assert_eq!(bob2.welcome["dms"]["unread"], 1, "{}", bob2.welcome);
    assert_eq!(bob2.welcome["dms"]["conversations"][0]["unread"], 1);
}

#[tokio::test]
async fn read_state_redb() {
    read_state(Backend::Redb).await;
}

#[tokio::test]
async fn read_state_mongodb() {
    read_state(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn guests_and_bad_input_are_refused_and_lose_nothing() {
    let h = Host::start(Backend::Redb).await;
    let port =
        h.s.create_room_settings("gb", Some(json!({"guests": true})))
            .await;
    let mut guest = Client::guest(port, "gus").await;
    assert!(guest.welcome.get("dms").is_none(), "{}", guest.welcome);
    for frame in [
        dm("bob", "hi", "g1"),
        json!({"type":"dm_history","with":"bob"}),
        json!({"type":"block","user":"bob"}),
        json!({"type":"read","with":"bob","seq":1}),
    ] {
        let e = error_for(&mut guest, frame.clone()).await;
        assert_eq!(e["code"], "forbidden", "{frame}: {e}");
    }

    let mut alice = h.join(port, "gb", "alice").await;
    let mut bob = h.join(port, "gb", "bob").await;
    let long = "x".repeat(129);
    let cases = [
        (dm("", "hi", "b1"), "bad_request"),
        (dm(&long, "hi", "b2"), "bad_request"),
        (dm("guest:gus", "hi", "b3"), "bad_request"),
        (dm("bo\u{200b}b", "hi", "b4"), "bad_request"),
        (dm("alice", "to myself", "b5"), "bad_request"),
        (dm("bob", "", "b6"), "bad_request"),
        (dm("bob", &"y".repeat(5000), "b7"), "too_long"),
        (
            json!({"type":"dm","to":"bob","text":"hi","client_id":"b8","extra":1}),
            "bad_request",
        ),
        (json!({"type":"dm","text":"no recipient"}), "bad_request"),
        (
            json!({"type":"dm_history","with":"bob","limit":0}),
            "bad_request",
        ),
        (json!({"type":"dm_history","with":&long}), "bad_request"),
        (json!({"type":"block","user":""}), "bad_request"),
        (json!({"type":"read","with":"bob"}), "bad_request"),
    ];
    for (frame, code) in cases {
        let e = error_for(&mut alice, frame.clone()).await;
        assert_eq!(e["code"], code, "{frame}: {e}");
    }
    // Nothing reached bob, nothing was stored, and the connection serves on.
    let seen = bob.sync().await;
    assert!(of_type(&seen, "dm").is_empty(), "{seen:?}");
    assert!(dm_history(&mut bob, "alice").await.is_empty());
    assert_eq!(dm_acked(&mut alice, "bob", "still here").await["seq"], 1);
    assert_eq!(bob.recv_type("dm").await["text"], "still here");
}

// ---------------------------------------------------------------------------

/// The next `presence` frame about `user`.
async fn presence_of(c: &mut Client, user: &str) -> Value {
    loop {
        let p = c.recv_type("presence").await;
        if p["user"] == user {
            return p;
        }
    }
}

/// Waits until the master's index holds `user` in `n` rooms.
async fn rooms_reported(h: &Host, user: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + chat_tests::TIMEOUT;
    loop {
        let p =
            h.s.api(Method::GET, &format!("/api/v1/users/{user}/presence"))
                .await;
        if p.data()["rooms"].as_array().map(Vec::len) == Some(n) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", p.text);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn watch_follows_presence_across_rooms() {
    let h = Host::start(Backend::Redb).await;
    let (pa, pb) = (h.room("wa").await, h.room("wb").await);
    let mut carol = h.join(pa, "wa", "carol").await;
    let mut bob = h.join(pb, "wb", "bob").await;
    carol
        .send_json(json!({"type":"watch","users":["alice","bob"]}))
        .await;
    // At once: one frame per user.
    let a = presence_of(&mut carol, "alice").await;
    assert_eq!(
        a,
        json!({"type":"presence","user":"alice","online":false,"last_seen":null})
    );
    let mut b = carol.recv_type("presence").await;
    assert_eq!(b["user"], "bob");
    if b["online"] == false {
        // Bob's room reported him after the watch was answered: the change
        // follows.
        b = presence_of(&mut carol, "bob").await;
    }
    assert_eq!(b["online"], true, "{b}");

    // Alice comes online (another room), then a second connection: one change.
    let mut alice = h.join(pb, "wb", "alice").await;
    assert_eq!(presence_of(&mut carol, "alice").await["online"], true);
    let mut alice2 = h.join(pa, "wa", "alice").await;
    // Both rooms have reported her before she leaves (so that no room's
    // report overtakes another's).
    rooms_reported(&h, "alice", 2).await;
    // Offline only once her last connection is gone.
    alice.close().await;
    alice2.close().await;
    let off = presence_of(&mut carol, "alice").await;
    assert_eq!(off["online"], false, "{off}");
    assert!(off["last_seen"].as_u64().is_some(), "{off}");
    let rest = carol.sync().await;
    assert!(
        of_type(&rest, "presence").is_empty(),
        "one change per transition: {rest:?}"
    );

    // Bob leaves; a watch replaced by an empty list hears nothing more.
    bob.close().await;
    assert_eq!(presence_of(&mut carol, "bob").await["online"], false);
    carol.send_json(json!({"type":"watch","users":[]})).await;
    let _bob = h.join(pb, "wb", "bob").await;
    let rest = carol.sync().await;
    assert!(of_type(&rest, "presence").is_empty(), "{rest:?}");

    // Bad input.
    let many: Vec<String> = (0..201).map(|i| format!("u{i}")).collect();
    let e = error_for(&mut carol, json!({"type":"watch","users":many})).await;
    assert_eq!(e["code"], "too_long", "{e}");
    let e = error_for(&mut carol, json!({"type":"watch","users":["ok",""]})).await;
    assert_eq!(e["code"], "bad_request", "{e}");
    let e = error_for(&mut carol, json!({"type":"watch","users":"bob"})).await;
    assert_eq!(e["code"], "bad_request", "{e}");
}

// ---------------------------------------------------------------------------

/// The rooms the master's index holds `user` in, or `None` while the room
/// API does not answer (e.g. during a restart).
async fn indexed_rooms(h: &Host, user: &str) -> Option<Vec<String>> {
    let url = h.s.api_url(&format!("/api/v1/users/{user}/presence"));
    let res = reqwest::Client::new()
        .get(url)
        .header("X-API-Key", &h.s.key)
        .timeout(std::time::Duration::from_secs(1))
        .send()
        .await
        .ok()?;
    let v: Value = res.json().await.ok()?;
    let rooms = v["data"]["rooms"].as_array()?;
    Some(
        rooms
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect(),
    )
}

#[tokio::test]
async fn a_restarted_master_learns_who_is_where_again() {
    let h = Host::start(Backend::Redb).await;
    let (pa, pb) = (h.room("ma").await, h.room("mb").await);
    let mut alice = h.join(pa, "ma", "alice").await;
    let mut bob = h.join(pb, "mb", "bob").await;
    rooms_reported(&h, "bob", 1).await;
    let before = h.s.master_json["pid"].clone();
    let started = h.s.started_at().await.expect("startedAt");
    let r = h.s.admin(Method::POST, "/api/v1/restart").await;
    assert_eq!(r.status, 202, "{}", r.text);
    // The new image answers (a new start time).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while h.s.started_at().await.is_none_or(|s| s == started) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the master did not come back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The new image starts with an empty index; the rooms' lists after
    // their relink fill it again (no client reconnects).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let a = indexed_rooms(&h, "alice").await;
        let b = indexed_rooms(&h, "bob").await;
        if a == Some(vec!["ma".to_owned()]) && b == Some(vec!["mb".to_owned()]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not indexed again: {a:?} {b:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(h.s.master_json["pid"], before);
    let ack = dm_acked(&mut alice, "bob", "after the restart").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    assert_eq!(bob.recv_type("dm").await["text"], "after the restart");
}
