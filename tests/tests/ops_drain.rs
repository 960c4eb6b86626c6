//! Drain and resume through the admin API: readiness, refused rooms and
//! joins, and the way back.

mod ops_common;

use std::time::Duration;

use chat_tests::metrics::scrape;
use chat_tests::{Client, Server, wait_for};
use ops_common::*;
use reqwest::Method;
use serde_json::json;

// ---- drain and resume ----

#[tokio::test]
async fn drain_flips_readiness_refuses_rooms_then_joins_and_resume_undoes_it() {
    let s = Server::default_server().await;
    let port = s.create_room("live").await;
    let mut a = Client::guest(port, "ann").await;
    let mut b = Client::guest(port, "bob").await;
    readyz_becomes(&s, 200).await;
    s.request(Method::GET, &s.api_url("/api/v1/health"), None, None)
        .await
        .expect(200);

    // A bad drain body is refused and drains nothing.
    for body in [r#"{"connections":"yes"}"#, r#"{"sockets":true}"#, "drain"] {
        let r = admin_body(&s, Method::POST, "/api/v1/drain", Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
    readyz_becomes(&s, 200).await;

    // Drain rooms only.
    let r = s.admin(Method::POST, "/api/v1/drain").await;
    r.expect(200);
    assert_eq!(r.data()["acceptingConnections"], false, "{}", r.text);
    assert_eq!(r.data()["refusingJoins"], false, "{}", r.text);
    let r = s.create_room_with("later", None).await;
    r.expect(200);
    assert_eq!(r.data()["port"], 0, "{}", r.text);
    assert_eq!(r.message(), "No more rooms can be created", "{}", r.text);
    let load = s.admin(Method::GET, "/api/v1/load").await;
    assert_eq!(load.data()["acceptingConnections"], false, "{}", load.text);
    let ready = readyz_becomes(&s, 503).await;
    assert_eq!(ready.data()["status"], "draining", "{}", ready.text);
    let health = s
        .request(Method::GET, &s.api_url("/api/v1/health"), None, None)
        .await;
    assert_eq!(health.status, 503, "{}", health.text);
    assert_eq!(health.data()["status"], "draining", "{}", health.text);
    assert_eq!(health.data()["freeSlots"], 0, "{}", health.text);
    assert_eq!(
        scrape(&s).await.value("chat_accepting_rooms", &[]),
        Some(0.0)
    );
    // Existing clients keep chatting, and new joins still work.
    chat(&mut a, &mut b, "still here").await;
    let mut c = Client::guest(port, "cid").await;
    chat(&mut c, &mut a, "me too").await;
    assert!(c.close().await);
    assert!(!s.room_names().await.contains(&"later".to_owned()));

    // Drain connections too: new joins are refused with 1013 (the rooms
    // learn it from a snapshot; poll, bounded).
    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/drain",
        Some(r#"{"connections":true}"#),
    )
    .await;
    r.expect(200);
    assert_eq!(r.data()["refusingJoins"], true, "{}", r.text);
    let (code, reason) = wait_for(
        Duration::from_secs(10),
        "a join refused with 1013",
        || async {
            match try_join(port, "dora").await {
                Ok(mut late) => {
                    late.close().await;
                    None
                }
                Err(cr) => Some(cr),
            }
        },
    )
    .await;
    assert_eq!(code, 1013, "reason {reason:?}");
    assert!(!reason.is_empty());
    readyz_becomes(&s, 503).await;
    chat(&mut b, &mut a, "we stay").await;

    // Resume: everything back.
    let r = s.admin(Method::POST, "/api/v1/resume").await;
    r.expect(200);
    assert_eq!(r.json, json!({"data":{"acceptingConnections":true}}));
    let ready = readyz_becomes(&s, 200).await;
    assert_eq!(ready.data()["status"], "ready", "{}", ready.text);
    s.request(Method::GET, &s.api_url("/api/v1/health"), None, None)
        .await
        .expect(200);
    let load = s.admin(Method::GET, "/api/v1/load").await;
    assert_eq!(load.data()["acceptingConnections"], true, "{}", load.text);
    let mut e = wait_for(Duration::from_secs(10), "a join to work again", || async {
        try_join(port, "eve").await.ok()
    })
    .await;
    chat(&mut e, &mut a, "back").await;
    let later = s.create_room("later").await;
    assert!(later > 0);
    assert_eq!(
        scrape(&s).await.value("chat_accepting_rooms", &[]),
        Some(1.0)
    );
}
