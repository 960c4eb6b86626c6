//! The admin API's room listing (port, pid, counts, memory, settings) and
//! kicks, against a real server.

mod ops_common;

use chat_tests::procs::pid_alive;
use chat_tests::{Client, Server, ServerOpts, token, wait_for};
use ops_common::*;
use reqwest::Method;
use serde_json::json;

// ---- rooms ----

#[tokio::test]
async fn rooms_report_port_pid_counts_memory_and_settings() {
    let s = Server::default_server().await;
    let started = std::time::Instant::now();
    let port = s
        .create_room_settings("alpha", Some(json!({"max_members": 7, "history_size": 50})))
        .await;
    let beta_port = s.create_room("beta").await;
    let mut a = Client::guest(port, "ann").await;
    let mut b = Client::guest(port, "bob").await;
    chat(&mut a, &mut b, "hello").await;
    chat(&mut b, &mut a, "hi ann").await;

    // Counts arrive with the rooms' periodic reports: poll, bounded.
    let alpha = wait_for(REPORT_WAIT, "alpha's counts in the list", || async {
        let rooms = admin_rooms(&s).await;
        let r = rooms.get("alpha")?.clone();
        (r["connections"] == 2
            && r["members"] == 2
            && r["messages_in"].as_u64() >= Some(2)
            && r["messages_out"].as_u64() >= Some(2))
        .then_some(r)
    })
    .await;
    assert_eq!(alpha["name"], "alpha");
    assert_eq!(u64_of(&alpha, "port"), u64::from(port), "{alpha}");
    let pid = u64_of(&alpha, "pid");
    assert!(pid > 0 && pid_alive(pid as i32), "pid {pid} is not alive");
    assert_ne!(pid, s.pid as u64, "the room runs in the master: {alpha}");
    assert_eq!(alpha["status"], "ready", "{alpha}");
    assert_eq!(u64_of(&alpha, "restarts"), 0, "{alpha}");
    assert!(u64_of(&alpha, "rss_bytes") > 0, "{alpha}");
    assert!(
        u64_of(&alpha, "uptime_secs") <= started.elapsed().as_secs() + 1,
        "uptime longer than the test: {alpha}"
    );
    assert_eq!(alpha["settings"]["max_members"], 7, "{alpha}");
    assert_eq!(alpha["settings"]["history_size"], 50, "{alpha}");
    assert!(alpha.get("error").is_none(), "{alpha}");

    // The one-room route agrees.
    let one = admin_room(&s, "alpha").await;
    for f in [
        "name", "port", "pid", "status", "settings", "epoch", "created",
    ] {
        assert_eq!(one[f], alpha[f], "{f}: {one} vs {alpha}");
    }
    assert!(u64_of(&one, "messages_in") >= u64_of(&alpha, "messages_in"));
    assert!(u64_of(&one, "rss_bytes") > 0, "{one}");

    // The idle room: its own port and pid, no traffic.
    let beta = admin_room(&s, "beta").await;
    assert_eq!(u64_of(&beta, "port"), u64::from(beta_port), "{beta}");
    assert_ne!(beta["pid"], alpha["pid"]);
    assert_eq!(beta["connections"], 0, "{beta}");
    assert_eq!(beta["members"], 0, "{beta}");
    assert_eq!(beta["messages_in"], 0, "{beta}");
    assert!(u64_of(&beta, "rss_bytes") > 0, "{beta}");
    assert_eq!(admin_rooms(&s).await.len(), 2);

    // Counts go down once clients leave.
    assert!(b.close().await);
    wait_for(REPORT_WAIT, "alpha's connections to drop", || async {
        let r = admin_room(&s, "alpha").await;
        (r["connections"] == 1 && r["members"] == 1).then_some(())
    })
    .await;

    // Unknown rooms: 404 with a JSON message.
    for name in ["ghost", "no-such-room"] {
        let r = s.admin(Method::GET, &format!("/api/v1/rooms/{name}")).await;
        assert_error(&r, 404, name);
        assert_eq!(r.json, json!({"message": format!("no room {name}")}));
    }
}

// ---- kick ----

#[tokio::test]
async fn kick_closes_every_connection_of_the_user_with_4007() {
    let s = Server::start(ServerOpts::new().with_jwt()).await;
    let secret = s.jwt_secret.clone().unwrap();
    let port = s.create_room("class").await;
    let t1 = token::member(&secret, "u1", "class");
    let t2 = token::member(&secret, "u2", "class");
    let mut phone = Client::with_token(port, &t1).await;
    let mut laptop = Client::with_token(port, &t1).await;
    let mut other = Client::with_token(port, &t2).await;
    assert_eq!(phone.id(), laptop.id());

    // Bad bodies first: nobody is kicked.
    for (what, body) in [
        ("missing user", r#"{"reason":"spam"}"#),
        ("unknown field", r#"{"user":"u1","ban":true}"#),
        ("user not a string", r#"{"user":1}"#),
        ("not JSON", "u1"),
    ] {
        let r = admin_body(&s, Method::POST, "/api/v1/rooms/class/kick", Some(body)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
    }
    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/ghost/kick",
        Some(r#"{"user":"u1"}"#),
    )
    .await;
    assert_error(&r, 404, "no room ghost");
    for c in [&mut phone, &mut laptop, &mut other] {
        c.sync().await;
    }

    let uid = phone.id();
    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/class/kick",
        Some(&json!({"user": uid, "reason": "spamming the class"}).to_string()),
    )
    .await;
    r.expect(200);
    assert_eq!(
        r.json,
        json!({"data":{"name":"class","user":uid,"message":"Kicked"}})
    );
    for c in [&mut phone, &mut laptop] {
        let (code, reason) = c.expect_close().await;
        assert_eq!(code, 4007, "reason {reason:?}");
        assert!(reason.contains("spamming the class"), "reason {reason:?}");
    }
    // The other member sees u1 leave and stays.
    let left = other.recv_type("left").await;
    assert_eq!(left["user"]["id"], uid.as_str(), "{left}");
    other.sync().await;
    wait_for(REPORT_WAIT, "the room to report one member", || async {
        let r = admin_room(&s, "class").await;
        (r["connections"] == 1 && r["members"] == 1).then_some(())
    })
    .await;

    // Without a reason: still 4007, with the default reason.
    let mut again = Client::with_token(port, &t1).await;
    admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/class/kick",
        Some(&json!({"user": uid}).to_string()),
    )
    .await
    .expect(200);
    let (code, reason) = again.expect_close().await;
    assert_eq!(code, 4007, "reason {reason:?}");
    assert!(!reason.is_empty());
    assert_nothing_from_operators(&other.sync().await);
}
