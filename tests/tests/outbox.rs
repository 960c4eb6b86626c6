//! A room's outbox: a backlog made while the master is dead, larger than
//! one IPC frame, is stored and acknowledged once a new master adopts the
//! room; then read back from the store after a restart of the room.

mod fault_common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chat_tests::{Client, Event, Server, ServerOpts};
use fault_common::{Api, assert_no_leftovers, pid_of, wait_room};
use serde_json::{Value, json};

/// Users saying messages at once (each user has its own rate bucket).
const USERS: usize = 10;
/// Messages per user: 3000 in all.
const PER_USER: usize = 300;
/// Characters per message: 3000 of them are about 21 MB, more than the
/// 16 MiB IPC frame limit.
const TEXT_LEN: usize = 7000;
/// Shortest time between two `say` + `ping` rounds of one client. A round
/// is two frames, and a connection may send 50 frames a second: a client
/// going faster would see one of its frames refused (`too many frames`),
/// and a refused `ping` is never answered. 45 ms keeps each client under
/// both the connection's frame rate and the user's message rate.
const ROUND: Duration = Duration::from_millis(45);

fn text(user: usize, k: usize) -> String {
    let head = format!("{user}-{k}:");
    let fill = char::from(b'a' + u8::try_from((user + k) % 26).unwrap_or(0));
    let mut t = head.clone();
    t.extend(std::iter::repeat_n(fill, TEXT_LEN - head.len()));
    t
}

/// Frames until the `pong` answering a `ping` sent after `frame`.
async fn round_trip(c: &mut Client, frame: Value, who: &str) -> Vec<Value> {
    c.send_json(frame).await;
    c.send_json(json!({"type":"ping"})).await;
    let mut seen = Vec::new();
    loop {
        match c.next_event(Duration::from_secs(10)).await {
            Event::Json(v) if v["type"] == "pong" => return seen,
            Event::Json(v) => seen.push(v),
            other => panic!("{who}: waiting for pong, got {other:?}"),
        }
    }
}

/// Says every message of one user, waiting out rate limits; no ack may
/// arrive (there is no master to store anything).
async fn say_all(mut c: Client, user: usize) -> Client {
    let who = format!("user {user}");
    let mut next = tokio::time::Instant::now();
    for k in 0..PER_USER {
        loop {
            tokio::time::sleep_until(next).await;
            next = tokio::time::Instant::now() + ROUND;
            let frame =
                json!({"type":"say","text":text(user, k),"client_id":format!("{user}-{k}")});
            let seen = round_trip(&mut c, frame, &who).await;
            for f in &seen {
                assert_ne!(f["type"], "ack", "{who}: an ack without a master: {f}");
            }
            let refused = seen.iter().find(|f| f["type"] == "error");
            match refused {
                None => break,
                Some(e) if e["code"] == "rate_limited" => {
                    let ms = e["retry_after_ms"].as_u64().unwrap_or(50);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Some(e) => panic!("{who}: message {k} refused: {e}"),
            }
        }
    }
    c
}

/// Reads until every message of `user` is acked; client id → seq.
async fn await_acks(mut c: Client, user: usize) -> HashMap<String, u64> {
    let mut acked = HashMap::new();
    while acked.len() < PER_USER {
        match c.next_event(Duration::from_secs(30)).await {
            Event::Json(v) if v["type"] == "ack" => {
                let cid = v["client_id"].as_str().expect("ack.client_id").to_owned();
                let seq = v["seq"].as_u64().expect("ack.seq");
                assert!(
                    acked.insert(cid.clone(), seq).is_none(),
                    "user {user}: {cid} acked twice"
                );
            }
            Event::Json(_) => {}
            other => panic!(
                "user {user}: {} of {PER_USER} acked, then {other:?}",
                acked.len()
            ),
        }
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_a_frame_is_stored_and_acked_after_the_master_returns() {
    let args: Vec<String> = [
        "--shutdown-grace",
        "5s",
        "--outbound-queue-bytes",
        "8388608",
    ]
    .map(String::from)
    .to_vec();
    let mut s = Server::start(ServerOpts::new().args(args)).await;
    let api = Api::new(&s);
    let port = s
        .create_room_settings("backlog", Some(json!({"max_text_len": 8000})))
        .await;
    let mut clients = Vec::new();
    for u in 0..USERS {
        clients.push(Client::guest(port, &format!("user{u}")).await);
    }

    s.kill_master().await;
    let mut tasks = Vec::new();
    for (u, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(say_all(c, u)));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("a sender failed"));
    }

    // History older than the room's memory needs the store: while the
    // master is away it is refused at once, not queued.
    let seen = round_trip(
        &mut clients[0],
        json!({"type":"history","before":1500,"limit":10}),
        "user 0",
    )
    .await;
    let e = seen
        .iter()
        .find(|f| f["type"] == "error" || f["type"] == "history")
        .unwrap_or_else(|| panic!("no answer to history: {seen:?}"));
    assert_eq!(e["code"], "unavailable", "{e}");

    s.start_again("master2").await;
    let mut tasks = Vec::new();
    for (u, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(await_acks(c, u)));
    }
    let mut seqs: BTreeMap<u64, String> = BTreeMap::new();
    for t in tasks {
        for (cid, seq) in t.await.expect("waiting for acks failed") {
            assert!(seqs.insert(seq, cid).is_none(), "seq {seq} acked twice");
        }
    }
    assert_eq!(seqs.len(), USERS * PER_USER);

    // Read everything back from the store: a restarted room holds only
    // what the master hands it from the store.
    let room = wait_room(&api, "backlog", Duration::from_secs(10), "adopted", |r| {
        r["status"] == "ready"
    })
    .await;
    let old = pid_of(&room);
    let (status, body, _) = api
        .try_request(
            reqwest::Method::POST,
            true,
            "/api/v1/rooms/backlog/restart",
            None,
        )
        .await
        .expect("restart answered");
    assert_eq!(status, 202, "{body}");
    wait_room(&api, "backlog", Duration::from_secs(20), "restarted", |r| {
        fault_common::restarted_from(r, old)
    })
    .await;
    let mut reader = Client::guest(port, "reader").await;
    let mut stored: BTreeMap<u64, String> = BTreeMap::new();
    for m in reader.welcome["history"].as_array().expect("history") {
        stored.insert(
            m["seq"].as_u64().expect("seq"),
            m["text"].as_str().expect("text").to_owned(),
        );
    }
    loop {
        let before = *stored.keys().next().expect("some history");
        reader
            .send_json(json!({"type":"history","before":before,"limit":100}))
            .await;
        // Pages older than the room's memory come from the store, later.
        let page = loop {
            match reader.next_event(Duration::from_secs(10)).await {
                Event::Json(v) if v["type"] == "history" => break v,
                Event::Json(v) => assert_ne!(v["type"], "error", "history before {before}: {v}"),
                other => panic!("waiting for history before {before}: {other:?}"),
            }
        };
        for m in page["messages"].as_array().expect("messages") {
            stored.insert(
                m["seq"].as_u64().expect("seq"),
                m["text"].as_str().expect("text").to_owned(),
            );
        }
        if page["more"] != true {
            break;
        }
    }
    for (seq, cid) in &seqs {
        let (u, k) = cid.split_once('-').expect("client id");
        let want = text(u.parse().expect("user"), k.parse().expect("k"));
        let got = stored
            .get(seq)
            .unwrap_or_else(|| panic!("acked message {seq} ({cid}) is not in the history"));
        assert!(*got == want, "message {seq} ({cid}) was stored differently");
    }
    drop(reader);

    let status = s.stop_within(Duration::from_secs(20)).await;
    assert!(status.success(), "the new master exited with {status}");
    assert_no_leftovers(&mut s).await;
}

/// Joins with `token` until the welcome shows `name` (at most `bound`).
async fn join_until_named(port: u16, token: &str, name: &str, bound: Duration) -> Client {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let mut c = Client::with_token(port, token).await;
        if c.welcome["you"]["name"] == name {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "joins still show {} instead of {name:?}",
            c.welcome["you"]["name"]
        );
        c.close().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn put_name(api: &Api, id: &str, name: &str) {
    let body = json!({ "name": name }).to_string();
    let (status, text, _) = api
        .try_request(
            reqwest::Method::PUT,
            true,
            &format!("/api/v1/users/{id}"),
            Some(&body),
        )
        .await
        .expect("PUT /api/v1/users answered");
    assert_eq!(status, 200, "{text}");
}

/// Reference data reaches a room as deltas on top of the full data it got
/// when it linked: a new master (whose versions start over) still reaches
/// a room that saw more versions from the old one.
#[tokio::test]
async fn reference_changes_reach_a_room_adopted_by_a_new_master() {
    let args: Vec<String> = ["--shutdown-grace", "5s"].map(String::from).to_vec();
    let mut s = Server::start(ServerOpts::new().with_jwt().args(args)).await;
    let api = Api::new(&s);
    let port = s.create_room("names").await;
    let secret = s.jwt_secret.clone().expect("jwt secret");
    let token = chat_tests::token::token(&secret, "u-x", "token name", "names", "member");
    for i in 0..3 {
        put_name(&api, "u-x", &format!("X{i}")).await;
    }
    drop(join_until_named(port, &token, "X2", Duration::from_secs(10)).await);

    s.kill_master().await;
    s.start_again("master2").await;
    wait_room(&api, "names", Duration::from_secs(10), "adopted", |r| {
        r["status"] == "ready"
    })
    .await;
    put_name(&api, "u-x", "X after").await;
    drop(join_until_named(port, &token, "X after", Duration::from_secs(10)).await);

    let status = s.stop_within(Duration::from_secs(20)).await;
    assert!(status.success(), "the new master exited with {status}");
    assert_no_leftovers(&mut s).await;
}
