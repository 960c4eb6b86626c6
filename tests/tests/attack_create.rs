//! Hostile room names and settings on the create API (a classic case of
//! issue 12, and finding 4): names with `..`, `/`, NUL, unicode controls,
//! very long ones and ones that look like flags; settings with absurd
//! numbers, wrong types, huge values, deep nesting and huge bodies.
//!
//! Requests are written byte for byte on a TCP connection, so no client
//! library normalises `..` or percent-escapes on the way. Each bad name or
//! setting gets a 4xx with a JSON `message` that says why and does not echo
//! kilobytes of input; nothing is created; names that look like flags make
//! rooms that start; the master and an existing room go on (a witness).
//! Defences: the room-name rule (`shared::room_name`, checked before
//! anything else), the settings validation (`RoomSettings::from_json`),
//! the request body limit (2 MB), and `--room=<name>` on the worker's
//! command line.

mod attack_common;

use std::time::Duration;

use attack_common::Witness;
use chat_tests::Server;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// `POST <path>` with the room API key and `body`, as raw bytes.
async fn post_raw(s: &Server, path: &str, body: &[u8]) -> Answer {
    let mut c = attack_common::tcp(s.port).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.key,
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    // The server may answer (and close) before it read a huge body.
    let _ = c.write_all(&req).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        read.is_ok() || !text.is_empty(),
        "no answer to POST {}",
        &path[..path.len().min(80)]
    );
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {:?}", &text[..text.len().min(200)]));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Answer { status, body }
}

/// Asserts a refusal: a 4xx, a JSON message of bounded size.
#[track_caller]
fn assert_refused(what: &str, a: &Answer, statuses: &[u16]) {
    assert!(
        statuses.contains(&a.status),
        "{what}: status {} (expected one of {statuses:?}): {}",
        a.status,
        &a.body[..a.body.len().min(300)]
    );
    assert!(
        a.body.len() < 2048,
        "{what}: the answer echoes {} bytes",
        a.body.len()
    );
    if a.status != 404 && a.status != 405 {
        assert!(
            a.json()["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: no JSON message: {}",
            a.body
        );
    }
}

#[tokio::test]
async fn hostile_room_names_are_refused() {
    let s = Server::default_server().await;
    let port = s.create_room("lobby").await;
    let mut w = Witness::guest(&s, "lobby", port).await;
    let long = "n".repeat(10_000);
    let cases: Vec<(&str, String, &[u16])> = vec![
        ("..", "/api/v1/room/..".into(), &[400, 404]),
        ("%2E%2E", "/api/v1/room/%2E%2E".into(), &[400, 404]),
        ("../rooms", "/api/v1/room/../rooms".into(), &[400, 404, 405]),
        ("a/b", "/api/v1/room/a/b".into(), &[400, 404, 405]),
        ("a%2Fb", "/api/v1/room/a%2Fb".into(), &[400]),
        ("..%2F..%2Fetc", "/api/v1/room/..%2F..%2Fetc".into(), &[400]),
        ("NUL", "/api/v1/room/a%00b".into(), &[400]),
        ("a newline", "/api/v1/room/a%0Ab".into(), &[400]),
        ("RLO", "/api/v1/room/ab%E2%80%AEcd".into(), &[400]),
        (
            "zero width space",
            "/api/v1/room/ad%E2%80%8Bmin".into(),
            &[400],
        ),
        ("Cyrillic a", "/api/v1/room/%D0%B0dmin".into(), &[400]),
        ("invalid UTF-8", "/api/v1/room/a%FF%FEb".into(), &[400]),
        ("a space", "/api/v1/room/a%20b".into(), &[400]),
        ("a dot", "/api/v1/room/a.b".into(), &[400]),
        (
            "10,000 characters",
            format!("/api/v1/room/{long}"),
            &[400, 414, 431],
        ),
        (
            "65 characters",
            format!("/api/v1/room/{}", "x".repeat(65)),
            &[400],
        ),
    ];
    for (what, path, statuses) in &cases {
        let a = post_raw(&s, path, b"").await;
        assert_refused(what, &a, statuses);
    }
    // Names that look like flags are names: their rooms start.
    for name in ["-rf", "--help", "-", "--room=evil", "_"] {
        let enc = name.replace('=', "%3D");
        let a = post_raw(&s, &format!("/api/v1/room/{enc}"), b"").await;
        if name.contains('=') {
            assert_refused(name, &a, &[400]);
            continue;
        }
        assert_eq!(a.status, 200, "{name}: {}", a.body);
        let p = a.json()["data"]["port"].as_u64().expect("a port") as u16;
        let text = attack_common::raw_get(p, "/", None, chat_tests::TIMEOUT)
            .await
            .unwrap_or_default();
        assert!(text.ends_with(name), "room {name} answers {text:?}");
    }
    let mut names = s.room_names().await;
    names.sort();
    assert_eq!(
        names,
        ["-", "--help", "-rf", "_", "lobby"],
        "rooms: {names:?}"
    );
    w.survived(&s).await;
}

#[tokio::test]
async fn hostile_room_settings_are_refused() {
    let s = Server::default_server().await;
    let port = s.create_room("lobby").await;
    let mut w = Witness::guest(&s, "lobby", port).await;
    let big_key = "K".repeat(60_000);
    let fields: String = (0..10_000).map(|i| format!("\"f{i}\":1,")).collect();
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        (
            "negative max_members",
            json!({"max_members": -1}).to_string().into(),
            &[400],
        ),
        (
            "max_members past u64",
            br#"{"max_members": 18446744073709551616}"#.to_vec(),
            &[400],
        ),
        (
            "max_members 1e300",
            br#"{"max_members": 1e300}"#.to_vec(),
            &[400],
        ),
        (
            "max_members NaN",
            br#"{"max_members": NaN}"#.to_vec(),
            &[400],
        ),
        (
            "max_members as text",
            json!({"max_members": "10"}).to_string().into(),
            &[400],
        ),
        (
            "history_size 2^32",
            json!({"history_size": 4_294_967_296u64}).to_string().into(),
            &[400],
        ),
        (
            "time_limit_secs of centuries",
            json!({"time_limit_secs": 9_000_000_000u64})
                .to_string()
                .into(),
            &[400],
        ),
        (
            "negative slow_mode_ms",
            json!({"slow_mode_ms": -5}).to_string().into(),
            &[400],
        ),
        (
            "max_text_len of a million",
            json!({"max_text_len": 1_000_000}).to_string().into(),
            &[400],
        ),
        (
            "guests as text",
            json!({"guests": "yes"}).to_string().into(),
            &[400],
        ),
        (
            "mode as a number",
            json!({"mode": 5}).to_string().into(),
            &[400],
        ),
        (
            "mode as an object",
            json!({"mode": {"chat": true}}).to_string().into(),
            &[400],
        ),
        ("settings as an array", b"[1,2,3]".to_vec(), &[400]),
        ("settings as a string", b"\"chat\"".to_vec(), &[400]),
        (
            "a duplicate field",
            br#"{"max_members": 5, "max_members": 6}"#.to_vec(),
            &[400],
        ),
        (
            "a 60 KB unknown field",
            format!("{{\"{big_key}\":1}}").into_bytes(),
            &[400],
        ),
        (
            "10,000 unknown fields",
            format!("{{{fields}\"x\":1}}").into_bytes(),
            &[400],
        ),
        (
            "nesting 100,000 deep",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            &[400],
        ),
        (
            "a 3 MB body",
            format!("{{\"pad\":\"{}\"}}", "p".repeat(3_000_000)).into_bytes(),
            &[413],
        ),
        ("not UTF-8", b"{\"mode\":\"\xff\xfe\"}".to_vec(), &[400]),
        (
            "a NUL in the body",
            b"{\"mode\":\"chat\0\"}".to_vec(),
            &[400],
        ),
    ];
    for (what, body, statuses) in &cases {
        let a = post_raw(&s, "/api/v1/room/settled", body).await;
        assert_refused(what, &a, statuses);
    }
    assert_eq!(
        s.room_names().await,
        ["lobby"],
        "a hostile body created a room"
    );
    w.survived(&s).await;
}
