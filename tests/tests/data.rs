//! Stored data: durable history across restarts of the server, of a room and
//! of the store (embedded redb and MongoDB through nx-27017), history older
//! than a room's memory, and the reference data (bans, filters, users) that a
//! platform writes into MongoDB or through the admin API.
//!
//! The MongoDB tests need nx-27017 (`NX27017_BIN`, else
//! `<workspace>/.venv/bin/nx-27017`; `tests/run` installs it). They fail when
//! it cannot start: they are never skipped.

mod data_common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chat_tests::client::enc;
use chat_tests::{Client, Event, Server, ServerOpts, procs, token};
use data_common::{
    Master, MasterSpec, Nx, history, history_all, recv_type_within, seq_of, seq_texts,
};
use mongodb::bson::{DateTime, doc};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Bound for a running room to obey reference data written to the store,
/// with `--cache-refresh 500ms` (one refresh, plus the load and the push to
/// rooms on a busy machine).
const OBEY_BOUND: Duration = Duration::from_millis(2500);
/// Bound for reference data written through the admin API (which refreshes
/// the cache at once, whatever `--cache-refresh`).
const ADMIN_BOUND: Duration = Duration::from_secs(2);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A member token valid in every room.
fn tok(secret: &str, sub: &str, name: &str) -> String {
    token::token(secret, sub, name, "*", "member")
}

fn tok_query(secret: &str, sub: &str, name: &str) -> String {
    format!("token={}", enc(&tok(secret, sub, name)))
}

/// Connects and returns the refusal's close code and reason, or `None` when
/// the join was accepted (the client is then closed).
async fn try_join(port: u16, query: &str) -> Result<Client, (u16, String)> {
    let mut c = Client::connect(port, query).await;
    match c.next_event(Duration::from_secs(5)).await {
        Event::Json(v) if v["type"] == "welcome" => {
            c.welcome = v;
            Ok(c)
        }
        Event::Close(Some(cr)) => Err(cr),
        other => panic!("join ?{query}: expected a welcome or a close, got {other:?}"),
    }
}

/// Joins until the join is refused (at most `bound`); the refusal.
async fn join_until_refused(port: u16, query: &str, bound: Duration, what: &str) -> (u16, String) {
    let start = Instant::now();
    loop {
        match try_join(port, query).await {
            Err(cr) => return cr,
            Ok(mut c) => {
                c.close().await;
            }
        }
        assert!(
            start.elapsed() < bound,
            "{what}: joins were still accepted {:?} later",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Joins until the join is accepted (at most `bound`).
async fn join_until_accepted(port: u16, query: &str, bound: Duration, what: &str) -> Client {
    let start = Instant::now();
    loop {
        match try_join(port, query).await {
            Ok(c) => return c,
            Err(cr) => assert!(
                start.elapsed() < bound,
                "{what}: joins still refused {:?} later: {cr:?}",
                start.elapsed()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Joins until `welcome.you.name` is `name` (at most `bound`).
async fn join_until_named(port: u16, query: &str, name: &str, bound: Duration) -> Client {
    let start = Instant::now();
    loop {
        let mut c = Client::join(port, query).await;
        if c.welcome["you"]["name"] == name {
            return c;
        }
        assert!(
            start.elapsed() < bound,
            "joins still show the name {} instead of {name:?} {:?} later",
            c.welcome["you"]["name"],
            start.elapsed()
        );
        c.close().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Says `text` until it is refused with `filtered` (at most `bound`); a
/// `say` accepted before the filter applies is acked (and broadcast).
async fn say_until_filtered(c: &mut Client, text: &str, bound: Duration) -> Duration {
    let start = Instant::now();
    for i in 0.. {
        let cid = format!("f{i}");
        c.say(text, &cid).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match c.next_event(left).await {
                Event::Json(v) if v["type"] == "error" => {
                    assert_eq!(v["code"], "filtered", "say {text:?}: {v}");
                    return start.elapsed();
                }
                Event::Json(v) if v["type"] == "ack" && v["client_id"] == cid.as_str() => break,
                Event::Json(_) => {}
                other => panic!("say {text:?}: expected an ack or an error, got {other:?}"),
            }
        }
        assert!(
            start.elapsed() < bound,
            "{text:?} was still accepted {:?} after the reject filter was written",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// `sender` says `text` until `observer` receives it as `masked` (at most
/// `bound`).
async fn say_until_masked(
    sender: &mut Client,
    observer: &mut Client,
    text: &str,
    masked: &str,
    bound: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let seq = sender.say_acked(text).await;
        let m = loop {
            let m = observer.recv_type("message").await;
            if seq_of(&m) == seq {
                break m;
            }
        };
        if m["text"] == masked {
            return start.elapsed();
        }
        assert_eq!(m["text"], text, "neither masked nor intact: {m}");
        assert!(
            start.elapsed() < bound,
            "{text:?} was still not masked {:?} after the mask filter was written",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /api/v1/cache` data.
async fn cache_info(s: &Server) -> Value {
    let r = s.admin(Method::GET, "/api/v1/cache").await;
    r.expect(200);
    r.data().clone()
}

async fn admin_json(s: &Server, method: Method, path: &str, body: &Value) -> chat_tests::Resp {
    s.request(
        method,
        &s.admin_url(path),
        Some(&s.admin_key),
        Some(&body.to_string()),
    )
    .await
}

/// `GET /api/v1/rooms/{name}` on the admin API.
async fn admin_room(s: &Server, name: &str) -> Value {
    let r = s.admin(Method::GET, &format!("/api/v1/rooms/{name}")).await;
    assert_eq!(r.status, 200, "GET /api/v1/rooms/{name}: {}", r.text);
    r.data().clone()
}

/// Waits (at most `bound`) until the room is ready with a worker other than
/// `old_pid`; its info.
async fn wait_new_worker(s: &Server, name: &str, old_pid: i64, bound: Duration) -> Value {
    let start = Instant::now();
    loop {
        let info = admin_room(s, name).await;
        let pid = info["pid"].as_i64().unwrap_or(0);
        if info["status"] == "ready" && pid > 0 && pid != old_pid {
            // Remember it for the cleanup.
            s.remember_workers().await;
            return info;
        }
        assert!(
            start.elapsed() < bound,
            "room {name} did not come back with a new worker within {bound:?}: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(seq, text)` said and acked, in order.
async fn say_n(c: &mut Client, prefix: &str, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for i in 1..=n {
        let text = format!("{prefix} {i}");
        let seq = c.say_acked(&text).await;
        out.push((seq, text));
    }
    out
}

// ---------------------------------------------------------------------------
// 1. History survives a restart of the whole server

enum Backend {
    Redb,
    Mongo,
}

async fn history_survives_a_server_restart(backend: Backend) {
    let dir = tempfile::Builder::new()
        .prefix("chat-tests-data-")
        .tempdir()
        .unwrap();
    let mut spec = MasterSpec::new(dir.path());
    let nx = match backend {
        Backend::Redb => None,
        Backend::Mongo => {
            let nx = Nx::start_file().await;
            spec.args = vec!["--store".into(), nx.uri("restart_db")];
            Some(nx)
        }
    };

    let mut m1 = Master::start(&spec, 1).await;
    let port = m1.create_room("keep").await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    alice.recv_type("joined").await;
    let mut said = say_n(&mut alice, "before restart, alice", 4).await;
    said.extend(say_n(&mut bob, "before restart, bob", 2).await);
    said.extend(say_n(&mut alice, "before restart, alice again", 1).await);
    let seqs: Vec<u64> = said.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>(), "acked seqs");
    let last = 7;

    // SIGTERM: rooms close (1001), the master exits cleanly.
    m1.stop_gracefully().await;
    let (code, reason) = alice
        .expect_close_or_end(Duration::from_secs(5))
        .await
        .unwrap_or((0, "no close frame".into()));
    assert_eq!(code, 1001, "alice's close at shutdown: {reason}");

    // A new master on the same data (same run dir, data dir, ports, store).
    let m2 = Master::start(&spec, 2).await;
    let port2 = m2.create_room("keep").await;
    let mut carol = Client::guest(port2, "carol").await;
    let w = &carol.welcome;
    assert_eq!(w["resumed"], false, "{w}");
    assert_eq!(
        w["seq"].as_u64(),
        Some(last),
        "welcome.seq after restart: {w}"
    );
    let hist = w["history"].as_array().expect("welcome.history").clone();
    assert_eq!(
        seq_texts(&hist),
        said,
        "welcome.history after the restart: {w}"
    );
    assert_eq!(hist[4]["from"]["name"], "bob", "{}", hist[4]);
    assert_eq!(hist[0]["from"]["name"], "alice", "{}", hist[0]);

    // seq continues.
    let next = carol.say_acked("after restart").await;
    assert_eq!(next, last + 1, "first seq after the restart");
    said.push((next, "after restart".into()));
    let mut dave = Client::guest(port2, "dave").await;
    assert_eq!(dave.welcome["seq"].as_u64(), Some(next));

    // History paging returns everything, once, in order.
    let all = history_all(&mut dave, 3).await;
    assert_eq!(seq_texts(&all), said, "paged history after the restart");
    let (page, more) = history(&mut dave, Some(4), 2).await;
    assert_eq!(seq_texts(&page), said[1..3].to_vec());
    assert!(more);

    drop(m2);
    drop(nx);
}

#[tokio::test]
async fn history_survives_a_server_restart_redb() {
    history_survives_a_server_restart(Backend::Redb).await;
}

#[tokio::test]
async fn history_survives_a_server_restart_mongodb() {
    history_survives_a_server_restart(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------
// 2. Reference data written by a platform straight into MongoDB

#[tokio::test]
async fn platform_writes_to_mongodb_reach_a_running_room() {
    let nx = Nx::start_memory().await;
    let db = "platform";
    let s = Server::start(ServerOpts::new().with_jwt().args([
        "--store",
        &nx.uri(db),
        "--cache-refresh",
        "500ms",
    ]))
    .await;
    let secret = s.jwt_secret.clone().unwrap();
    let port = s.create_room("plat").await;
    let other = s.create_room("other").await;

    let mut alice = Client::with_token(port, &tok(&secret, "u-alice", "Alice")).await;
    let mut bob = Client::with_token(port, &tok(&secret, "u-bob", "Bob")).await;
    let mut mallory = Client::with_token(port, &tok(&secret, "u-mal", "Mallory")).await;
    alice.recv_type("joined").await;
    alice.recv_type("joined").await;
    bob.recv_type("joined").await;
    alice.say_acked("hello before the platform writes").await;

    // A ban of every room, until a BSON date an hour away: the connected
    // user is removed with 4006.
    let t = Instant::now();
    nx.insert(
        db,
        "bans",
        doc! { "user_id": "u-mal", "until": DateTime::from_millis(now_ms() + 3_600_000), "reason": "spam" },
    )
    .await;
    let (code, reason) = mallory
        .expect_close_or_end(OBEY_BOUND + Duration::from_secs(2))
        .await
        .unwrap_or((0, "ended without a close frame".into()));
    let took = t.elapsed();
    // The close above is awaited within a bound; its speed is not asserted.
    assert_eq!(code, 4006, "mallory's close: {reason}");
    eprintln!("ban written in MongoDB applied after {took:?}");
    let left = alice.recv_type("left").await;
    assert_eq!(left["user"]["id"], "u-mal", "{left}");
    // Nor can the user come back, in this room or another.
    let (code, reason) = try_join(port, &tok_query(&secret, "u-mal", "Mallory"))
        .await
        .err()
        .expect("a banned user joined again");
    assert_eq!(code, 4006, "{reason}");
    let (code, _) = join_until_refused(
        other,
        &tok_query(&secret, "u-mal", "Mallory"),
        OBEY_BOUND,
        "global ban in another room",
    )
    .await;
    assert_eq!(code, 4006);

    // An expired ban (loaded, but no longer applying), then a ban of one
    // room (no until: forever): refused there only.
    nx.insert(
        db,
        "bans",
        doc! { "user_id": "u-old", "until": DateTime::from_millis(now_ms() - 60_000) },
    )
    .await;
    nx.insert(db, "bans", doc! { "user_id": "u-eve", "room": "plat" })
        .await;
    let (code, _) = join_until_refused(
        port,
        &tok_query(&secret, "u-eve", "Eve"),
        OBEY_BOUND,
        "room ban",
    )
    .await;
    assert_eq!(code, 4006);
    let mut eve = Client::join(other, &tok_query(&secret, "u-eve", "Eve")).await;
    assert_eq!(eve.welcome["you"]["id"], "u-eve");
    eve.close().await;
    let mut old = Client::join(port, &tok_query(&secret, "u-old", "Old")).await;
    assert_eq!(old.welcome["you"]["id"], "u-old");
    old.close().await;

    // A reject filter: the text is refused with `filtered`.
    nx.insert(
        db,
        "filters",
        doc! { "pattern": "spamword", "action": "reject" },
    )
    .await;
    let took = say_until_filtered(&mut alice, "buy spamword now", OBEY_BOUND).await;
    eprintln!("reject filter written in MongoDB applied after {took:?}");
    // Other texts still pass.
    alice.say_acked("a clean text").await;

    // A mask filter: the word becomes stars.
    nx.insert(db, "filters", doc! { "pattern": "darn", "action": "mask" })
        .await;
    let took = say_until_masked(&mut alice, &mut bob, "oh darn it", "oh **** it", OBEY_BOUND).await;
    eprintln!("mask filter written in MongoDB applied after {took:?}");
    // The stored history holds the masked text, not the original.
    let (page, _) = history(&mut bob, None, 1).await;
    assert_eq!(page[0]["text"], "oh **** it", "{page:?}");

    // A user profile: its name overrides the token's for a new join.
    nx.insert(
        db,
        "users",
        doc! { "_id": "u-dave", "name": "Dave Profile" },
    )
    .await;
    let q = tok_query(&secret, "u-dave", "dave-token-name");
    let dave = join_until_named(port, &q, "Dave Profile", OBEY_BOUND).await;
    assert_eq!(dave.welcome["you"]["id"], "u-dave");

    let info = cache_info(&s).await;
    assert_eq!(info["users"], 1, "{info}");
    assert_eq!(info["bans"], 3, "{info}");
    assert_eq!(info["filters"], 2, "{info}");
    drop(s);
    drop(nx);
}

// ---------------------------------------------------------------------------
// 3. The same through the admin API, on the embedded store

#[tokio::test]
async fn admin_api_reference_data_on_the_embedded_store() {
    // The default refresh (10 s): admin writes must apply at once anyway.
    let s = Server::start(ServerOpts::new().with_jwt()).await;
    let secret = s.jwt_secret.clone().unwrap();
    let port = s.create_room("adm").await;
    let port2 = s.create_room("adm2").await;

    let c0 = cache_info(&s).await;
    let v0 = c0["version"].as_u64().expect("cache version");
    assert_eq!(
        (&c0["users"], &c0["bans"], &c0["filters"]),
        (&json!(0), &json!(0), &json!(0)),
        "{c0}"
    );

    let mut alice = Client::with_token(port, &tok(&secret, "u-alice", "Alice")).await;
    let mut mallory = Client::with_token(port, &tok(&secret, "u-mal", "Mallory")).await;
    alice.recv_type("joined").await;

    // Ban everywhere: the connected user is removed with 4006.
    let t = Instant::now();
    let r = admin_json(
        &s,
        Method::POST,
        "/api/v1/bans",
        &json!({"user": "u-mal", "reason": "spam"}),
    )
    .await;
    assert_eq!(r.status, 201, "POST /api/v1/bans: {}", r.text);
    let v1 = r.data()["cache_version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cache_version: {}", r.text));
    assert!(v1 > v0, "cache version {v0} → {v1}");
    let (code, reason) = mallory
        .expect_close_or_end(ADMIN_BOUND + Duration::from_secs(2))
        .await
        .unwrap_or((0, "ended without a close frame".into()));
    assert_eq!(code, 4006, "mallory's close: {reason}");
    eprintln!("ban applied after {:?}", t.elapsed());
    let (code, _) = try_join(port, &tok_query(&secret, "u-mal", "Mallory"))
        .await
        .err()
        .expect("a banned user joined again");
    assert_eq!(code, 4006);
    let (code, _) = join_until_refused(
        port2,
        &tok_query(&secret, "u-mal", "Mallory"),
        ADMIN_BOUND,
        "global ban in another room",
    )
    .await;
    assert_eq!(code, 4006);
    let c1 = cache_info(&s).await;
    assert_eq!(c1["version"].as_u64(), Some(v1), "{c1}");
    assert_eq!(c1["bans"], 1, "{c1}");
    let listed = s.admin(Method::GET, "/api/v1/bans").await;
    assert!(
        listed.text.contains("u-mal"),
        "GET /api/v1/bans: {}",
        listed.text
    );

    // Unban: the user may join again.
    let r = s.admin(Method::DELETE, "/api/v1/bans/u-mal").await;
    assert_eq!(r.status, 200, "DELETE /api/v1/bans/u-mal: {}", r.text);
    assert_eq!(r.data()["removed"], 1, "{}", r.text);
    let v2 = r.data()["cache_version"].as_u64().expect("cache_version");
    assert!(v2 > v1, "cache version {v1} → {v2}");
    let mut mallory = join_until_accepted(
        port,
        &tok_query(&secret, "u-mal", "Mallory"),
        ADMIN_BOUND,
        "unbanned user",
    )
    .await;
    assert_eq!(mallory.welcome["you"]["id"], "u-mal");
    assert_eq!(cache_info(&s).await["bans"], 0);

    // A room ban with an RFC 3339 end far away: refused in that room only.
    let r = admin_json(
        &s,
        Method::POST,
        "/api/v1/bans",
        &json!({"user": "u-eve", "room": "adm", "until": "2099-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v3 = r.data()["cache_version"].as_u64().expect("cache_version");
    assert!(v3 > v2);
    let (code, _) = join_until_refused(
        port,
        &tok_query(&secret, "u-eve", "Eve"),
        ADMIN_BOUND,
        "room ban",
    )
    .await;
    assert_eq!(code, 4006);
    let mut eve = Client::join(port2, &tok_query(&secret, "u-eve", "Eve")).await;
    eve.close().await;

    // A user profile overrides the token's name.
    let r = admin_json(
        &s,
        Method::PUT,
        "/api/v1/users/u-dave",
        &json!({"name": "Dave Profile"}),
    )
    .await;
    assert_eq!(r.status, 200, "PUT /api/v1/users/u-dave: {}", r.text);
    let v5 = r.data()["cache_version"].as_u64().expect("cache_version");
    assert!(v5 > v3);
    let q = tok_query(&secret, "u-dave", "dave-token-name");
    let dave = join_until_named(port, &q, "Dave Profile", ADMIN_BOUND).await;
    assert_eq!(dave.welcome["you"]["id"], "u-dave");
    // The others see the profile's name too (the last join of u-dave is
    // the accepted one; earlier ones may predate the profile).
    let frames = alice.sync().await;
    let joined = frames
        .iter()
        .rev()
        .find(|f| f["type"] == "joined" && f["user"]["id"] == "u-dave")
        .unwrap_or_else(|| panic!("alice saw no join of u-dave: {frames:?}"));
    assert_eq!(joined["user"]["name"], "Dave Profile", "{joined}");

    // Filters: reject, then mask.
    let r = admin_json(
        &s,
        Method::POST,
        "/api/v1/filters",
        &json!({"pattern": "spamword", "action": "reject"}),
    )
    .await;
    assert_eq!(r.status, 201, "POST /api/v1/filters: {}", r.text);
    let v6 = r.data()["cache_version"].as_u64().expect("cache_version");
    assert!(v6 > v5);
    say_until_filtered(&mut alice, "buy spamword now", ADMIN_BOUND).await;
    let r = admin_json(
        &s,
        Method::POST,
        "/api/v1/filters",
        &json!({"pattern": "darn", "action": "mask"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let v7 = r.data()["cache_version"].as_u64().expect("cache_version");
    assert!(v7 > v6);
    say_until_masked(
        &mut alice,
        &mut mallory,
        "oh darn it",
        "oh **** it",
        ADMIN_BOUND,
    )
    .await;

    // The cache's counts and version.
    let c = cache_info(&s).await;
    assert_eq!(c["version"].as_u64(), Some(v7), "{c}");
    assert_eq!(c["users"], 1, "{c}");
    assert_eq!(c["bans"], 1, "{c}");
    assert_eq!(c["filters"], 2, "{c}");
    // A refresh without changes keeps the version.
    let r = s.admin(Method::POST, "/api/v1/cache/refresh").await;
    assert_eq!(r.status, 200, "POST /api/v1/cache/refresh: {}", r.text);
    assert_eq!(r.data()["version"].as_u64(), Some(v7), "{}", r.text);
}

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
// 5. History older than a room's memory comes from the store

#[tokio::test]
async fn history_beyond_memory_comes_from_the_store() {
    const SENDERS: usize = 20;
    const PER: usize = 55; // within a user's burst of 60 messages
    const TOTAL: u64 = (SENDERS * PER) as u64; // 1100 > the 1000 kept in memory
    let s = Server::default_server().await;
    let port = s.create_room("deep").await;
    let mut observer = Client::guest(port, "observer").await;

    let mut expected: BTreeMap<u64, String> = BTreeMap::new();
    for k in 0..SENDERS {
        let mut c = Client::guest(port, &format!("sender{k}")).await;
        let mut texts = HashMap::new();
        let frames: Vec<Message> = (0..PER)
            .map(|i| {
                let cid = format!("{k}-{i}");
                let text = format!("deep message {k}-{i}");
                let f = json!({"type": "say", "text": text, "client_id": cid});
                texts.insert(cid, text);
                Message::text(f.to_string())
            })
            .collect();
        assert_eq!(c.feed_many(frames).await, PER);
        for _ in 0..PER {
            let (ack, skipped) =
                recv_type_within(&mut c, "ack", Duration::from_secs(10), "sender's ack").await;
            assert!(
                skipped.iter().all(|f| f["type"] != "error"),
                "refused: {skipped:?}"
            );
            let cid = ack["client_id"].as_str().expect("client_id");
            let text = texts.remove(cid).expect("ack of an unknown client_id");
            assert!(expected.insert(seq_of(&ack), text).is_none(), "{ack}");
        }
        c.close().await;
    }
    let expected: Vec<(u64, String)> = expected.into_iter().collect();
    assert_eq!(
        expected.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=TOTAL).collect::<Vec<_>>()
    );
    // The observer saw every message once, in order.
    let mut seen = Vec::new();
    while seen.len() < TOTAL as usize {
        let (m, _) = recv_type_within(
            &mut observer,
            "message",
            Duration::from_secs(10),
            "broadcast",
        )
        .await;
        seen.push(m);
    }
    assert_eq!(seq_texts(&seen), expected, "broadcasts");
    let text_of = |seqs: std::ops::Range<u64>| -> Vec<(u64, String)> {
        seqs.map(|s| expected[s as usize - 1].clone()).collect()
    };

    // The room keeps the latest 1000 (101..=1100): older pages come from
    // the store.
    let (page, more) = history(&mut observer, Some(50), 10).await;
    assert_eq!(seq_texts(&page), text_of(40..50), "before 50");
    assert!(more);
    let (page, more) = history(&mut observer, Some(2), 5).await;
    assert_eq!(seq_texts(&page), text_of(1..2), "before 2");
    assert!(!more, "nothing older than seq 1");
    let (page, more) = history(&mut observer, Some(101), 100).await;
    assert_eq!(seq_texts(&page), text_of(1..101), "before 101");
    assert!(!more);
    let (page, more) = history(&mut observer, Some(105), 10).await;
    assert_eq!(
        seq_texts(&page),
        text_of(95..105),
        "before 105 (store + memory)"
    );
    assert!(more);
    let (page, more) = history(&mut observer, None, 5).await;
    assert_eq!(seq_texts(&page), text_of(1096..1101), "newest");
    assert!(more);
    let all = history_all(&mut observer, 100).await;
    assert_eq!(seq_texts(&all), expected, "paged history (limit 100)");
    let all = history_all(&mut observer, 37).await;
    assert_eq!(seq_texts(&all), expected, "paged history (limit 37)");

    // A restarted room gets its history back from the store.
    let old_pid = admin_room(&s, "deep").await["pid"].as_i64().unwrap();
    let r = s.admin(Method::POST, "/api/v1/rooms/deep/restart").await;
    assert_eq!(r.status, 202, "restart: {}", r.text);
    let (code, reason) = observer.expect_close().await;
    assert_eq!(code, 1012, "observer's close at the restart: {reason}");
    let info = wait_new_worker(&s, "deep", old_pid, Duration::from_secs(15)).await;
    assert_eq!(info["port"].as_u64(), Some(u64::from(port)), "{info}");
    let mut fresh = Client::guest(port, "fresh").await;
    let w = &fresh.welcome;
    assert_eq!(w["seq"].as_u64(), Some(TOTAL), "{w}");
    let hist = w["history"].as_array().expect("history").clone();
    assert_eq!(
        seq_texts(&hist),
        text_of(TOTAL - 49..TOTAL + 1),
        "welcome.history after the restart"
    );
    let (page, more) = history(&mut fresh, Some(5), 3).await;
    assert_eq!(
        seq_texts(&page),
        text_of(2..5),
        "before 5 after the restart"
    );
    assert!(more);
    let (page, more) = history(&mut fresh, Some(1), 3).await;
    assert!(page.is_empty(), "before 1: {page:?}");
    assert!(!more);
    let all = history_all(&mut fresh, 100).await;
    assert_eq!(seq_texts(&all), expected, "paged history after the restart");
    assert_eq!(fresh.say_acked("and more").await, TOTAL + 1);
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

// ---------------------------------------------------------------------------
// 7. A room crash loses no acked message

#[tokio::test]
async fn a_room_crash_loses_no_acked_message() {
    let s = Server::default_server().await;
    let port = s.create_room("crash").await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    alice.recv_type("joined").await;
    let mut said = say_n(&mut alice, "first", 4).await;
    for (seq, _) in &said {
        assert_eq!(seq_of(&bob.recv_type("message").await), *seq);
    }
    let since = 4;
    let epoch = bob.welcome["epoch"].as_u64().expect("epoch");
    assert!(bob.close().await);
    said.extend(say_n(&mut alice, "while bob is away", 5).await);
    let last = said.last().unwrap().0;
    assert_eq!(last, 9);

    // SIGKILL the worker.
    let info = admin_room(&s, "crash").await;
    let old_pid = info["pid"].as_i64().expect("pid");
    assert!(old_pid > 0, "{info}");
    procs::sigkill(old_pid as i32);
    alice.expect_close_or_end(Duration::from_secs(5)).await;
    let info = wait_new_worker(&s, "crash", old_pid, Duration::from_secs(10)).await;
    assert_eq!(info["port"].as_u64(), Some(u64::from(port)), "{info}");

    // Resuming from before the crash replays exactly what came after.
    let mut bob = Client::join(port, &format!("name=bob&since={since}&epoch={epoch}")).await;
    let w = bob.welcome.clone();
    assert_eq!(w["resumed"], true, "resume after the crash: {w}");
    assert_eq!(w["epoch"].as_u64(), Some(epoch), "{w}");
    assert_eq!(w["seq"].as_u64(), Some(last), "{w}");
    assert_eq!(w["history"], json!([]), "{w}");
    let mut replay = Vec::new();
    for _ in since..last {
        replay.push(bob.recv_type("message").await);
    }
    assert_eq!(
        seq_texts(&replay),
        said[since as usize..].to_vec(),
        "replay"
    );
    let extra = bob.sync().await;
    assert!(
        !extra.iter().any(|f| f["type"] == "message"),
        "more than the messages after since: {extra:?}"
    );

    // seq continues after the last acked one.
    let mut carol = Client::guest(port, "carol").await;
    assert_eq!(carol.welcome["seq"].as_u64(), Some(last));
    assert_eq!(
        seq_texts(carol.welcome["history"].as_array().unwrap()),
        said,
        "welcome.history after the crash"
    );
    let seq = carol.say_acked("after the crash").await;
    assert_eq!(seq, last + 1);
    let m = bob.recv_type("message").await;
    assert_eq!(seq_of(&m), last + 1);
    said.push((seq, "after the crash".into()));
    let all = history_all(&mut carol, 4).await;
    assert_eq!(seq_texts(&all), said, "paged history after the crash");
    let info = admin_room(&s, "crash").await;
    assert_eq!(info["restarts"], 1, "{info}");
}
