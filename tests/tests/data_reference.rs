//! Reference data (bans, filters, users) that a platform writes straight
//! into MongoDB or through the admin API, obeyed by running rooms.
//!
//! The MongoDB tests need nx-27017 (`NX27017_BIN`, else
//! `<workspace>/.venv/bin/nx-27017`; `tests/run` installs it). They fail when
//! it cannot start: they are never skipped.

mod data_common;
mod data_obey;

use std::time::{Duration, Instant};

use chat_tests::{Client, Server, ServerOpts};
use data_common::{Nx, history};
use data_obey::*;
use mongodb::bson::{DateTime, doc};
use reqwest::Method;
use serde_json::json;

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
