//! Lasting moderation: a moderator's `ban` frame is stored (in `bans`,
//! scoped to the room), so the user stays refused after the room's worker
//! is killed and restarted; `unban` (frame or admin route) lifts it. The
//! admin API's DELETE routes for filters and users are in `chatctl.rs`.

use std::time::Duration;

use chat_tests::procs::sigkill;
use chat_tests::{Client, Event, Server, ServerOpts, token, wait_for};
use reqwest::Method;
use serde_json::{Value, json};

/// Bound of waits for the store and for a worker's restart.
const BOUND: Duration = Duration::from_secs(20);

fn query(secret: &str, sub: &str, room: &str, role: &str) -> String {
    format!(
        "token={}",
        chat_tests::client::enc(&token::token(secret, sub, sub, room, role))
    )
}

/// One join attempt: `Ok` with the welcome, `Err(Some(code))` when the room
/// refused it with a close code, `Err(None)` when the room did not answer
/// (its worker is restarting).
async fn attempt(port: u16, q: &str) -> Result<Client, Option<u16>> {
    let Ok(mut c) = Client::try_connect(port, q).await else {
        return Err(None);
    };
    match c.next_event(Duration::from_secs(5)).await {
        Event::Json(v) if v["type"] == "welcome" => {
            c.welcome = v;
            Ok(c)
        }
        Event::Close(Some((code, _))) => Err(Some(code)),
        _ => Err(None),
    }
}

/// Joins until the room answers, then says whether it refused (the close
/// code) or welcomed.
async fn join_answer(port: u16, q: &str) -> Result<Client, u16> {
    let mut last = None;
    let deadline = tokio::time::Instant::now() + BOUND;
    while tokio::time::Instant::now() < deadline {
        match attempt(port, q).await {
            Ok(c) => return Ok(c),
            Err(Some(code)) => return Err(code),
            Err(None) => last = Some("no answer"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the room never answered a join: {last:?}");
}

/// Joins until welcomed (a lifted ban reaches the room a moment later).
async fn join_until_welcomed(port: u16, q: &str) -> Client {
    wait_for(BOUND, "a welcome", || async { attempt(port, q).await.ok() }).await
}

/// The stored bans of `user` in `room`.
async fn stored_room_bans(s: &Server, user: &str, room: &str) -> Vec<Value> {
    let r = s.admin(Method::GET, "/api/v1/bans").await;
    r.expect(200);
    r.data()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b["user_id"] == user && b["room"] == room)
        .collect()
}

async fn wait_stored(s: &Server, user: &str, room: &str, present: bool) {
    wait_for(BOUND, "the ban in the store", || async {
        (stored_room_bans(s, user, room).await.is_empty() != present).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderators_ban_outlasts_the_worker_and_unban_lifts_it() {
    let mut opts = ServerOpts::new().with_jwt();
    opts.room_ports = 10;
    let s = Server::start(opts).await;
    let secret = s.jwt_secret.clone().expect("a JWT secret");
    let room = "lasting";
    let port = s.create_room(room).await;
    let q = |sub: &str, role: &str| query(&secret, sub, room, role);

    let mut m = Client::join(port, &q("mod", "moderator")).await;
    let mut y = Client::join(port, &q("y", "member")).await;
    m.send_json(json!({"type":"ban","user":"y","reason":"spam"}))
        .await;
    let (code, reason) = y.expect_close().await;
    assert_eq!(code, 4006, "{reason}");
    wait_stored(&s, "y", room, true).await;
    let stored = stored_room_bans(&s, "y", room).await;
    assert_eq!(stored[0]["reason"], "spam", "{stored:?}");
    assert!(stored[0]["until_ms"].is_null(), "{stored:?}");

    // The worker dies (SIGKILL) and is restarted: still refused.
    let pid = s.room_pid(room).await;
    sigkill(pid);
    wait_for(BOUND, "a new worker", || async {
        let r = s.room_info(room).await;
        let now = r.data()["pid"].as_i64().unwrap_or(0) as i32;
        (r.status == 200 && now != 0 && now != pid && r.data()["status"] == "ready").then_some(())
    })
    .await;
    assert_eq!(join_answer(port, &q("y", "member")).await.err(), Some(4006));
    // Only in that room: a ban by a room's moderator is scoped to it.
    let other = s.create_room("elsewhere").await;
    let y_there = Client::join(other, &query(&secret, "y", "elsewhere", "member")).await;
    assert_eq!(y_there.welcome["you"]["id"], "y");

    // A member may not unban; a moderator may (the user need not be here).
    let mut m = join_until_welcomed(port, &q("mod", "moderator")).await;
    let mut x = Client::join(port, &q("x", "member")).await;
    x.send_json(json!({"type":"unban","user":"y"})).await;
    let e = x.recv_type("error").await;
    assert_eq!(e["code"], "forbidden", "{e}");
    m.send_json(json!({"type":"unban","user":"y"})).await;
    wait_stored(&s, "y", room, false).await;
    let mut y = join_until_welcomed(port, &q("y", "member")).await;
    y.say_acked("back again").await;

    // Banned again, and lifted by the admin route scoped to the room; an
    // operator's ban of every room is not touched by it.
    m.send_json(json!({"type":"ban","user":"y"})).await;
    let (code, _) = y.expect_close().await;
    assert_eq!(code, 4006);
    wait_stored(&s, "y", room, true).await;
    let r = s
        .request(
            Method::POST,
            &s.admin_url("/api/v1/bans"),
            Some(&s.admin_key),
            Some(r#"{"user":"z"}"#),
        )
        .await;
    r.expect(201);
    let r = s
        .admin(Method::DELETE, &format!("/api/v1/bans/y?room={room}"))
        .await;
    r.expect(200);
    assert_eq!(r.data()["removed"], 1, "{}", r.text);
    let r = s
        .admin(Method::DELETE, &format!("/api/v1/bans/z?room={room}"))
        .await;
    assert_eq!(r.data()["removed"], 0, "{}", r.text);
    join_until_welcomed(port, &q("y", "member")).await;
    assert_eq!(join_answer(port, &q("z", "member")).await.err(), Some(4006));
    let r = s
        .admin(Method::DELETE, "/api/v1/bans/y?room=bad%20name!")
        .await;
    r.expect(400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moderators_ban_outlasts_a_master_restart() {
    let mut opts = ServerOpts::new().with_jwt();
    opts.room_ports = 10;
    let s = Server::start(opts).await;
    let secret = s.jwt_secret.clone().expect("a JWT secret");
    let room = "restarted";
    let port = s.create_room(room).await;
    let q = |sub: &str, role: &str| query(&secret, sub, room, role);
    let mut m = Client::join(port, &q("mod", "moderator")).await;
    let mut y = Client::join(port, &q("y", "member")).await;
    m.send_json(json!({"type":"ban","user":"y","reason":"flood"}))
        .await;
    let (code, _) = y.expect_close().await;
    assert_eq!(code, 4006);
    wait_stored(&s, "y", room, true).await;

    // The master re-executes itself (a new image, a cache loaded anew from
    // the store), then the room's worker dies and the new master starts
    // another: the ban is still there.
    let before = s.started_at().await.expect("startedAt");
    s.admin(Method::POST, "/api/v1/restart").await.expect(202);
    wait_for(BOUND, "the restarted master", || async {
        let now = s.started_at().await?;
        (now != before).then_some(())
    })
    .await;
    // The running worker is adopted by the new image.
    let pid: i32 = wait_for(BOUND, "the room adopted", || async {
        let r = s.room_info(room).await;
        let pid = r.data()["pid"].as_i64().unwrap_or(0) as i32;
        (r.status == 200 && pid != 0 && r.data()["status"] == "ready").then_some(pid)
    })
    .await;
    sigkill(pid);
    wait_for(BOUND, "a new worker", || async {
        let r = s.room_info(room).await;
        let now = r.data()["pid"].as_i64().unwrap_or(0) as i32;
        (r.status == 200 && now != 0 && now != pid && r.data()["status"] == "ready").then_some(())
    })
    .await;
    assert_eq!(join_answer(port, &q("y", "member")).await.err(), Some(4006));
    let stored = stored_room_bans(&s, "y", room).await;
    assert_eq!(stored[0]["reason"], "flood", "{stored:?}");
}
