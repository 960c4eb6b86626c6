//! Tokens, multi-device users and moderation (server with `JWT_SECRET`).

use chat_tests::client::enc;
use chat_tests::token::{self, alg_none, sign};
use chat_tests::{Client, Server, ServerOpts, now_secs};
use serde_json::json;

async fn jwt_room(name: &str, settings: Option<serde_json::Value>) -> (Server, u16, String) {
    let s = Server::start(ServerOpts::new().with_jwt()).await;
    let port = s.create_room_settings(name, settings).await;
    let secret = s.jwt_secret.clone().unwrap();
    (s, port, secret)
}

async fn refused(port: u16, query: &str) -> (u16, String) {
    let mut c = Client::connect(port, query).await;
    let (code, reason) = c.expect_close().await;
    assert!(
        !c.skipped.iter().any(|f| f["type"] == "welcome"),
        "refused client got a welcome: {:?}",
        c.skipped
    );
    (code, reason)
}

#[tokio::test]
async fn token_join_and_failures() {
    let (_s, port, secret) = jwt_room("vip", None).await;
    let t = token::token(&secret, "u1", "Ann", "vip", "member");
    let c = Client::with_token(port, &t).await;
    assert_eq!(
        c.welcome["you"],
        json!({"id":"u1","name":"Ann","role":"member","connections":1})
    );
    // A wildcard room works too.
    let t = token::token(&secret, "u2", "Bo", "*", "member");
    Client::with_token(port, &t).await;

    let exp = now_secs() + 3600;
    let cases = [
        (
            "wrong signature",
            sign(
                "not-the-secret",
                &json!({"sub":"u3","room":"vip","exp":exp}),
            ),
            4001,
        ),
        (
            "expired",
            sign(
                &secret,
                &json!({"sub":"u3","room":"vip","exp":now_secs() - 30}),
            ),
            4002,
        ),
        (
            "wrong room",
            sign(&secret, &json!({"sub":"u3","room":"other","exp":exp})),
            4003,
        ),
        (
            "alg none",
            alg_none(&json!({"sub":"u3","room":"vip","exp":exp})),
            4001,
        ),
        ("garbage", "not.a.token".to_owned(), 4001),
        (
            "guest subject",
            sign(&secret, &json!({"sub":"guest:1","room":"vip","exp":exp})),
            4001,
        ),
    ];
    for (what, tok, code) in cases {
        let (got, reason) = refused(port, &format!("token={}", enc(&tok))).await;
        assert_eq!(got, code, "{what}: reason {reason:?}");
    }
    // A guest where guests are not allowed.
    let (code, _) = refused(port, "name=alice").await;
    assert_eq!(code, 4004);
    // Nothing at all.
    let (code, _) = refused(port, "").await;
    assert_eq!(code, 4001);
}

#[tokio::test]
async fn guests_allowed_by_room_setting() {
    let (_s, port, _secret) = jwt_room("open", Some(json!({"guests": true}))).await;
    let c = Client::guest(port, "visitor").await;
    assert_eq!(c.welcome["you"]["role"], "guest");
}

#[tokio::test]
async fn several_devices_are_one_member() {
    let (_s, port, secret) = jwt_room("devices", None).await;
    let mut w = Client::with_token(port, &token::member(&secret, "watcher", "devices")).await;
    let u1 = token::token(&secret, "u1", "Uma", "devices", "member");
    let mut d1 = Client::with_token(port, &u1).await;
    let j = w.recv_type("joined").await;
    assert_eq!(j["user"]["id"], "u1");

    let mut d2 = Client::with_token(port, &u1).await;
    assert_eq!(d2.welcome["you"]["connections"], 2);
    let members = d2.welcome["members"].as_array().unwrap();
    let mine: Vec<_> = members.iter().filter(|m| m["id"] == "u1").collect();
    assert_eq!(mine.len(), 1, "{members:?}");
    assert_eq!(mine[0]["connections"], 2);
    assert_eq!(members.len(), 2, "{members:?}");

    // No second `joined`: the next frame the watcher sees is a message
    // sent after the second device joined.
    d2.say_acked("from d2").await;
    let (m, skipped) = w.recv_type_collect("message").await;
    assert_eq!(m["text"], "from d2");
    assert!(skipped.is_empty(), "unexpected frames: {skipped:?}");
    // The user's other device gets the message too.
    let m = d1.recv_type("message").await;
    assert_eq!(m["text"], "from d2");
    assert_eq!(m["from"], json!({"id":"u1","name":"Uma"}));

    // Whispers reach every device of the target, and the sender's other
    // devices get a copy.
    let mut v1 = Client::with_token(port, &token::member(&secret, "v", "devices")).await;
    let mut v2 = Client::with_token(port, &token::member(&secret, "v", "devices")).await;
    d1.send_json(json!({"type":"whisper","to":"v","text":"psst"}))
        .await;
    for c in [&mut v1, &mut v2, &mut d2] {
        let wh = c.recv_type("whisper").await;
        assert_eq!(wh["text"], "psst");
        assert_eq!(wh["from"]["id"], "u1");
        assert_eq!(wh["to"]["id"], "v");
    }
    let skipped = w.sync().await;
    assert!(
        !skipped.iter().any(|f| f["type"] == "whisper"),
        "{skipped:?}"
    );
    let skipped = d1.sync().await;
    assert!(
        !skipped.iter().any(|f| f["type"] == "whisper"),
        "{skipped:?}"
    );

    // `left` only after the last device is gone.
    w.sync().await;
    assert!(d1.close().await);
    v1.say_acked("marker").await;
    let (_, skipped) = w.recv_type_collect("message").await;
    assert!(
        !skipped.iter().any(|f| f["type"] == "left"),
        "left after the first device: {skipped:?}"
    );
    assert!(d2.close().await);
    let left = w.recv_type("left").await;
    assert_eq!(left["user"], json!({"id":"u1","name":"Uma"}));
}

#[tokio::test]
async fn moderation() {
    let (_s, port, secret) = jwt_room("modroom", None).await;
    let tok = |sub: &str, role: &str| token::token(&secret, sub, sub, "modroom", role);
    let mut owner = Client::with_token(port, &tok("owner", "owner")).await;
    let mut m = Client::with_token(port, &tok("mod", "moderator")).await;
    let mut x = Client::with_token(port, &tok("x", "member")).await;
    let mut y = Client::with_token(port, &tok("y", "member")).await;
    assert_eq!(m.welcome["you"]["role"], "moderator");

    // A member may not moderate.
    for frame in [
        json!({"type":"kick","user":"y"}),
        json!({"type":"mute","user":"y","secs":60}),
        json!({"type":"ban","user":"y"}),
        json!({"type":"delete","seq":1}),
    ] {
        x.send_json(frame.clone()).await;
        let e = x.recv_type("error").await;
        assert_eq!(e["code"], "forbidden", "{frame}: {e}");
    }
    // A moderator may not moderate the owner.
    m.send_json(json!({"type":"kick","user":"owner"})).await;
    assert_eq!(m.recv_type("error").await["code"], "forbidden");
    m.send_json(json!({"type":"kick","user":"nobody"})).await;
    assert_eq!(m.recv_type("error").await["code"], "not_found");

    // delete: everyone gets `deleted`.
    let seq = y.say_acked("rude words").await;
    m.send_json(json!({"type":"delete","seq":seq})).await;
    for c in [&mut owner, &mut m, &mut x, &mut y] {
        let d = c.recv_type("deleted").await;
        assert_eq!(d["seq"], seq);
        assert_eq!(d["by"]["id"], "mod");
    }
    x.send_json(json!({"type":"history"})).await;
    let h = x.recv_type("history").await;
    let msg = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mm| mm["seq"] == seq)
        .cloned()
        .unwrap();
    assert_eq!(msg["deleted"], true, "{msg}");
    assert_ne!(msg["text"], "rude words");

    // mute: the target's say is refused.
    m.send_json(json!({"type":"mute","user":"x","secs":60}))
        .await;
    let muted = owner.recv_type("muted").await;
    assert_eq!(muted["user"]["id"], "x");
    assert_eq!(muted["secs"], 60);
    x.say("am I muted?", "q").await;
    let e = x.recv_type("error").await;
    assert_eq!(e["code"], "muted", "{e}");
    assert!(e["retry_after_ms"].as_u64().unwrap() > 50_000, "{e}");
    let skipped = owner.sync().await;
    assert!(
        !skipped
            .iter()
            .any(|f| f["type"] == "message" && f["text"] == "am I muted?"),
        "{skipped:?}"
    );

    // kick: 4007, the user may come back.
    m.send_json(json!({"type":"kick","user":"x","reason":"calm down"}))
        .await;
    let (code, reason) = x.expect_close().await;
    assert_eq!(code, 4007, "{reason}");
    let left = owner.recv_type("left").await;
    assert_eq!(left["user"]["id"], "x");
    Client::with_token(port, &tok("x", "member")).await;

    // ban: 4006, and again on rejoin.
    m.send_json(json!({"type":"ban","user":"y","reason":"spam"}))
        .await;
    let (code, _) = y.expect_close().await;
    assert_eq!(code, 4006);
    let mut again = Client::connect(port, &format!("token={}", enc(&tok("y", "member")))).await;
    let (code, _) = again.expect_close().await;
    assert_eq!(code, 4006);
    assert!(
        !again.skipped.iter().any(|f| f["type"] == "welcome"),
        "{:?}",
        again.skipped
    );
}

#[tokio::test]
async fn kick_and_ban_reasons_are_bounded() {
    let (_s, port, secret) = jwt_room("reasons", None).await;
    let tok = |sub: &str, role: &str| token::token(&secret, sub, sub, "reasons", role);
    let mut m = Client::with_token(port, &tok("mod", "moderator")).await;
    let mut x = Client::with_token(port, &tok("x", "member")).await;
    let long = "r".repeat(257);
    for kind in ["kick", "ban"] {
        m.send_json(json!({"type":kind,"user":"x","reason":long}))
            .await;
        let e = m.recv_type("error").await;
        assert_eq!(e["code"], "too_long", "{kind}: {e}");
    }
    // Refused: the member is still here and may still chat.
    let skipped = x.sync().await;
    assert!(!x.closed, "{skipped:?}");
    x.say_acked("still here").await;
    // At the bound, the reason is taken.
    m.send_json(json!({"type":"kick","user":"x","reason":"r".repeat(256)}))
        .await;
    let (code, reason) = x.expect_close().await;
    assert_eq!(code, 4007, "{reason}");
}
