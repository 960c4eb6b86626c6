//! The admin API's log level, its open routes, and wrong keys that change
//! nothing.

mod ops_common;

use chat_tests::procs::pid_alive;
use chat_tests::{Client, Server};
use ops_common::*;
use reqwest::Method;
use serde_json::json;

// ---- log level ----

#[tokio::test]
async fn log_level_can_be_read_and_changed() {
    let s = Server::default_server().await;
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    r.expect(200);
    assert!(r.data()["filter"].is_string(), "{}", r.text);

    let r = admin_body(
        &s,
        Method::PUT,
        "/api/v1/log-level",
        Some(r#"{"filter":"debug"}"#),
    )
    .await;
    r.expect(200);
    assert_eq!(r.json, json!({"data":{"filter":"debug"}}));
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    r.expect(200);
    assert_eq!(r.data()["filter"], "debug");

    for (what, body) in [
        ("unknown level", r#"{"filter":"chatserver=loud"}"#),
        ("bad syntax", r#"{"filter":"[{"}"#),
        ("missing filter", "{}"),
        ("unknown field", r#"{"filter":"info","level":"info"}"#),
        ("not JSON", "debug"),
    ] {
        let r = admin_body(&s, Method::PUT, "/api/v1/log-level", Some(body)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert!(r.json["message"].is_string(), "{what}: {}", r.text);
    }
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    assert_eq!(r.data()["filter"], "debug", "changed by a refused PUT");

    let r = s
        .request(
            Method::PUT,
            &s.admin_url("/api/v1/log-level"),
            Some("wrong"),
            Some(r#"{"filter":"error"}"#),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    assert_eq!(r.data()["filter"], "debug", "changed with a wrong key");

    admin_body(
        &s,
        Method::PUT,
        "/api/v1/log-level",
        Some(r#"{"filter":"info"}"#),
    )
    .await
    .expect(200);
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    assert_eq!(r.data()["filter"], "info");
}

// ---- open routes and wrong keys ----

#[tokio::test]
async fn open_routes_need_no_key_and_wrong_keys_do_nothing() {
    let s = Server::default_server().await;
    let port = s.create_room("guarded").await;
    let mut a = Client::guest(port, "ann").await;
    let mut b = Client::guest(port, "bob").await;
    let pid = s.room_pid("guarded").await;
    let started_at = s.admin(Method::GET, "/api/v1/load").await.data()["startedAt"].clone();

    let r = s
        .request(Method::GET, &s.admin_url("/livez"), None, None)
        .await;
    r.expect(200);
    assert_eq!(r.json, json!({"data":{"status":"alive"}}));
    readyz_becomes(&s, 200).await;
    s.request(Method::GET, &s.admin_url("/metrics"), None, None)
        .await
        .expect(200);
    // A wrong key does not matter on open routes.
    s.request(Method::GET, &s.admin_url("/livez"), Some("wrong"), None)
        .await
        .expect(200);

    let kick = json!({"user": a.id(), "reason": "x"}).to_string();
    let calls: Vec<(Method, &str, Option<&str>)> = vec![
        (Method::GET, "/api/v1/rooms", None),
        (Method::GET, "/api/v1/rooms/guarded", None),
        (
            Method::POST,
            "/api/v1/broadcast",
            Some(r#"{"text":"should not arrive"}"#),
        ),
        (
            Method::POST,
            "/api/v1/rooms/guarded/broadcast",
            Some(r#"{"text":"nor this"}"#),
        ),
        (Method::POST, "/api/v1/rooms/guarded/kick", Some(&kick)),
        (Method::POST, "/api/v1/rooms/guarded/restart", None),
        (
            Method::POST,
            "/api/v1/drain",
            Some(r#"{"connections":true}"#),
        ),
        (Method::POST, "/api/v1/resume", None),
        (
            Method::PUT,
            "/api/v1/log-level",
            Some(r#"{"filter":"trace"}"#),
        ),
        (Method::GET, "/api/v1/log-level", None),
        (Method::POST, "/api/v1/restart", None),
    ];
    for key in [None, Some("wrong"), Some(s.key.as_str())] {
        for (method, path, body) in &calls {
            let r = s
                .request(method.clone(), &s.admin_url(path), key, *body)
                .await;
            assert_eq!(
                r.status, 401,
                "{method} {path} with key {key:?}: {}",
                r.text
            );
            assert_eq!(r.json, json!({"message":"Unauthorized"}), "{method} {path}");
        }
    }

    // Nothing was done: no notice, no close for either client (a ping
    // round trip proves every earlier frame was delivered), same worker,
    // still accepting, same log filter, same master.
    for c in [&mut a, &mut b] {
        assert_nothing_from_operators(&c.sync().await);
    }
    chat(&mut a, &mut b, "all quiet").await;
    assert_eq!(s.room_pid("guarded").await, pid);
    assert!(pid_alive(pid));
    readyz_becomes(&s, 200).await;
    let load = s.admin(Method::GET, "/api/v1/load").await;
    assert_eq!(load.data()["acceptingConnections"], true);
    assert_eq!(load.data()["startedAt"], started_at, "the master restarted");
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    assert_ne!(r.data()["filter"], "trace");
    let mut c = Client::guest(port, "cat").await;
    c.sync().await;
}
