//! Shared helpers of the admin API tests (`ops_*.rs`): admin requests,
//! room listings, error answers, readiness, joins and one acked message.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use chat_tests::{Client, Event, Resp, Server, wait_for};
use reqwest::Method;
use serde_json::Value;

/// Bound of the waits for the rooms' periodic reports (every 500 ms).
pub const REPORT_WAIT: Duration = Duration::from_secs(10);

/// An admin request with the admin key and an optional JSON body.
pub async fn admin_body(s: &Server, method: Method, path: &str, body: Option<&str>) -> Resp {
    s.request(method, &s.admin_url(path), Some(&s.admin_key), body)
        .await
}

/// `GET /api/v1/rooms/{name}` on the admin API, expecting 200: its `data`.
pub async fn admin_room(s: &Server, name: &str) -> Value {
    let r = s.admin(Method::GET, &format!("/api/v1/rooms/{name}")).await;
    r.expect(200);
    r.data().clone()
}

/// `GET /api/v1/rooms` on the admin API: rooms by name.
pub async fn admin_rooms(s: &Server) -> BTreeMap<String, Value> {
    let r = s.admin(Method::GET, "/api/v1/rooms").await;
    r.expect(200);
    r.data()
        .as_array()
        .unwrap_or_else(|| panic!("rooms is not an array: {}", r.text))
        .iter()
        .map(|room| (room["name"].as_str().unwrap_or("").to_owned(), room.clone()))
        .collect()
}

pub fn u64_of(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned integer: {v}"))
}

/// Asserts a JSON error answer with `status` whose message contains `part`.
#[track_caller]
pub fn assert_error(r: &Resp, status: u16, part: &str) {
    assert_eq!(r.status, status, "body: {}", r.text);
    assert!(
        r.content_type().starts_with("application/json"),
        "content type {:?}: {}",
        r.content_type(),
        r.text
    );
    let msg = r.json["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in the error answer: {}", r.text));
    assert!(msg.contains(part), "message {msg:?} lacks {part:?}");
}

/// Polls `/readyz` until it answers `status`; returns the answer.
pub async fn readyz_becomes(s: &Server, status: u16) -> Resp {
    let url = s.admin_url("/readyz");
    wait_for(
        Duration::from_secs(10),
        &format!("/readyz to answer {status}"),
        || async {
            let r = s.request(Method::GET, &url, None, None).await;
            (r.status == status).then_some(r)
        },
    )
    .await
}

/// Asserts that the frames a client got before a `pong` hold no notice and
/// no `closing`.
#[track_caller]
pub fn assert_nothing_from_operators(frames: &[Value]) {
    assert!(
        frames
            .iter()
            .all(|f| f["type"] != "notice" && f["type"] != "closing"),
        "unexpected frames: {frames:?}"
    );
}

/// A new guest connection's fate: `Ok(client)` after a `welcome`, or
/// `Err((code, reason))` when the server closed it instead.
pub async fn try_join(port: u16, name: &str) -> Result<Client, (u16, String)> {
    let mut c = Client::try_connect(port, &format!("name={name}"))
        .await
        .unwrap_or_else(|e| panic!("connecting to room port {port}: {e}"));
    match c.next_event(chat_tests::TIMEOUT).await {
        Event::Json(v) if v["type"] == "welcome" => {
            c.welcome = v;
            Ok(c)
        }
        Event::Close(Some(cr)) => Err(cr),
        other => panic!("join as {name}: expected welcome or a close frame, got {other:?}"),
    }
}

/// One `say` from `from`, acked, and received by `to`.
pub async fn chat(from: &mut Client, to: &mut Client, text: &str) -> u64 {
    let seq = from.say_acked(text).await;
    let m = to.recv_type("message").await;
    assert_eq!(m["text"], text, "{m}");
    assert_eq!(m["seq"], seq, "{m}");
    seq
}
