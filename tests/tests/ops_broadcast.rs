//! Operator notices through the admin API: broadcasts to every room or to
//! one, and the bodies that are refused.

mod ops_common;

use chat_tests::{Client, Event, Server};
use ops_common::*;
use reqwest::Method;
use serde_json::json;

// ---- broadcast ----

#[tokio::test]
async fn broadcast_reaches_every_room_and_room_broadcast_only_one() {
    let s = Server::default_server().await;
    let pa = s.create_room("north").await;
    let pb = s.create_room("south").await;
    let mut a1 = Client::guest(pa, "a1").await;
    let mut a2 = Client::guest(pa, "a2").await;
    let mut b1 = Client::guest(pb, "b1").await;

    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/broadcast",
        Some(r#"{"text":"maintenance at 22:00"}"#),
    )
    .await;
    r.expect(200);
    assert_eq!(r.data()["rooms"], 2, "{}", r.text);
    for c in [&mut a1, &mut a2, &mut b1] {
        let n = c.recv_type("notice").await;
        assert_eq!(n, json!({"type":"notice","text":"maintenance at 22:00"}));
    }

    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/north/broadcast",
        Some(r#"{"text":"north only"}"#),
    )
    .await;
    r.expect(200);
    assert_eq!(
        r.json,
        json!({"data":{"name":"north","message":"Broadcast sent"}})
    );
    for c in [&mut a1, &mut a2] {
        let n = c.recv_type("notice").await;
        assert_eq!(n, json!({"type":"notice","text":"north only"}));
    }
    // South got nothing: a ping round trip shows no notice, and the next
    // notice south gets is its own.
    assert_nothing_from_operators(&b1.sync().await);
    admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/south/broadcast",
        Some(r#"{"text":"south only"}"#),
    )
    .await
    .expect(200);
    let (n, before) = b1.recv_type_collect("notice").await;
    assert_eq!(n["text"], "south only", "{n}");
    assert_nothing_from_operators(&before);
    assert_nothing_from_operators(&a1.sync().await);

    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/ghost/broadcast",
        Some(r#"{"text":"anyone?"}"#),
    )
    .await;
    assert_error(&r, 404, "no room ghost");
}

#[tokio::test]
async fn broadcast_bad_bodies_are_refused_and_send_nothing() {
    let s = Server::default_server().await;
    let port = s.create_room("quiet").await;
    let mut c = Client::guest(port, "ann").await;
    let too_long = json!({"text": "x".repeat(4001)}).to_string();
    let bad: Vec<(&str, Option<&str>)> = vec![
        ("missing text", Some("{}")),
        ("unknown field", Some(r#"{"text":"hi","urgent":true}"#)),
        ("empty text", Some(r#"{"text":""}"#)),
        ("blank text", Some(r#"{"text":"   "}"#)),
        ("text not a string", Some(r#"{"text":5}"#)),
        ("null text", Some(r#"{"text":null}"#)),
        ("not JSON", Some("text=hi")),
        ("no body", None),
        ("4001 characters", Some(too_long.as_str())),
    ];
    for path in ["/api/v1/broadcast", "/api/v1/rooms/quiet/broadcast"] {
        for (what, body) in &bad {
            let r = admin_body(&s, Method::POST, path, *body).await;
            assert_eq!(r.status, 400, "{path} with {what}: {}", r.text);
            assert!(
                r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{path} with {what}: no message: {}",
                r.text
            );
        }
    }
    // 4000 characters are fine.
    let max = "y".repeat(4000);
    admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/quiet/broadcast",
        Some(&json!({"text": max}).to_string()),
    )
    .await
    .expect(200);
    let (n, before) = c.recv_type_collect("notice").await;
    assert_eq!(n["text"].as_str().map(str::len), Some(4000));
    // No refused body produced a notice.
    assert_nothing_from_operators(&before);
    assert_nothing_from_operators(&c.sync().await);
}

/// The admin bodies are JSON objects; an array carrying the fields in order
/// (serde's default for structs) must be refused like any other non-object.
#[tokio::test]
async fn array_bodies_are_refused() {
    let s = Server::default_server().await;
    let port = s.create_room("arr").await;
    let mut c = Client::guest(port, "ann").await;
    let uid = c.id();
    let cases = [
        (Method::POST, "/api/v1/broadcast", json!(["array notice"])),
        (
            Method::POST,
            "/api/v1/rooms/arr/broadcast",
            json!(["array notice"]),
        ),
        (
            Method::POST,
            "/api/v1/rooms/arr/kick",
            json!([uid, "array kick"]),
        ),
        (Method::POST, "/api/v1/drain", json!([true])),
        (Method::PUT, "/api/v1/log-level", json!(["debug"])),
    ];
    let mut accepted = Vec::new();
    for (method, path, body) in cases {
        let r = admin_body(&s, method.clone(), path, Some(&body.to_string())).await;
        if r.status != 400 {
            accepted.push(format!("{method} {path} {body} -> {} {}", r.status, r.text));
        }
    }
    // What the accepted bodies did to the client.
    c.send_json(json!({"type": "ping"})).await;
    let mut effects = Vec::new();
    loop {
        match c.next_event(chat_tests::TIMEOUT).await {
            Event::Json(v) if v["type"] == "pong" => break,
            Event::Timeout => panic!("no pong; frames {effects:?}"),
            ev => {
                let end = matches!(ev, Event::Close(_) | Event::Ended | Event::Error(_));
                effects.push(format!("{ev:?}"));
                if end {
                    break;
                }
            }
        }
    }
    assert!(
        accepted.is_empty(),
        "array bodies accepted as objects:\n{}\nthe client got: {effects:?}",
        accepted.join("\n")
    );
}
