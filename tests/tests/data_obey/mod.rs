//! Shared helpers of the data tests (`data_*.rs`): waits for a room to obey
//! reference data (joins until refused, accepted or renamed; says until
//! filtered or masked), member tokens, the admin calls they use, and acked
//! messages in a row.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use chat_tests::client::enc;
use chat_tests::{Client, Event, Server, token};

use crate::data_common::seq_of;
use reqwest::Method;
use serde_json::Value;

/// Bound for a running room to obey reference data written to the store,
/// with `--cache-refresh 500ms` (one refresh, plus the load and the push to
/// rooms on a busy machine).
pub const OBEY_BOUND: Duration = Duration::from_millis(2500);
/// Bound for reference data written through the admin API (which refreshes
/// the cache at once, whatever `--cache-refresh`).
pub const ADMIN_BOUND: Duration = Duration::from_secs(2);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A member token valid in every room.
pub fn tok(secret: &str, sub: &str, name: &str) -> String {
    token::token(secret, sub, name, "*", "member")
}

pub fn tok_query(secret: &str, sub: &str, name: &str) -> String {
    format!("token={}", enc(&tok(secret, sub, name)))
}

/// Connects and returns the refusal's close code and reason, or `None` when
/// the join was accepted (the client is then closed).
pub async fn try_join(port: u16, query: &str) -> Result<Client, (u16, String)> {
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
pub async fn join_until_refused(
    port: u16,
    query: &str,
    bound: Duration,
    what: &str,
) -> (u16, String) {
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
pub async fn join_until_accepted(port: u16, query: &str, bound: Duration, what: &str) -> Client {
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
pub async fn join_until_named(port: u16, query: &str, name: &str, bound: Duration) -> Client {
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
pub async fn say_until_filtered(c: &mut Client, text: &str, bound: Duration) -> Duration {
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
pub async fn say_until_masked(
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
pub async fn cache_info(s: &Server) -> Value {
    let r = s.admin(Method::GET, "/api/v1/cache").await;
    r.expect(200);
    r.data().clone()
}

pub async fn admin_json(s: &Server, method: Method, path: &str, body: &Value) -> chat_tests::Resp {
    s.request(
        method,
        &s.admin_url(path),
        Some(&s.admin_key),
        Some(&body.to_string()),
    )
    .await
}

/// `GET /api/v1/rooms/{name}` on the admin API.
pub async fn admin_room(s: &Server, name: &str) -> Value {
    let r = s.admin(Method::GET, &format!("/api/v1/rooms/{name}")).await;
    assert_eq!(r.status, 200, "GET /api/v1/rooms/{name}: {}", r.text);
    r.data().clone()
}

/// Waits (at most `bound`) until the room is ready with a worker other than
/// `old_pid`; its info.
pub async fn wait_new_worker(s: &Server, name: &str, old_pid: i64, bound: Duration) -> Value {
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
pub async fn say_n(c: &mut Client, prefix: &str, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for i in 1..=n {
        let text = format!("{prefix} {i}");
        let seq = c.say_acked(&text).await;
        out.push((seq, text));
    }
    out
}
