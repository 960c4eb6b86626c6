//! The room API's user routes (issue 13, "REST for platforms"), on the
//! embedded store and on MongoDB (nx-27017: `NX27017_BIN`, never skipped):
//! a conversation's and a room's stored history paged both ways and searched
//! with `q` (case-insensitive, literal); a user's conversations with unread
//! counts, paged by cursor; `POST …/dm/…` stored, acked with its seq,
//! delivered live, pushed as `dm.offline` to an offline recipient, refused
//! when blocked; every bad input a 400 that stores nothing.

mod data_common;
mod dm_rest_common;

use chat_tests::client::enc;
use dm_rest_common::{Backend, Host, Receiver};
use serde_json::{Value, json};

/// Sends a DM over the room protocol and waits for its ack; the ack.
async fn dm_acked(c: &mut chat_tests::Client, to: &str, text: &str) -> Value {
    let cid = chat_tests::random_string(8);
    c.send_json(json!({"type":"dm","to":to,"text":text,"client_id":cid}))
        .await;
    let ack = c.recv_type("ack").await;
    assert_eq!(ack["client_id"], cid.as_str(), "{ack}");
    ack
}

// ---------------------------------------------------------------------------

const TEXTS: [&str; 7] = [
    "Hello Bob",
    "a.*b literal",
    "x(y",
    "la petite ÉCOLE",
    "nothing here",
    "HELLO again",
    "bye",
];

async fn conversation_paging_and_search(backend: Backend) {
    let h = Host::start(backend).await;
    let port = h.room("hall").await;
    let mut alice = h.join(port, "hall", "alice").await;
    for (i, t) in TEXTS.iter().enumerate() {
        let ack = dm_acked(&mut alice, "bob", t).await;
        assert_eq!(ack["seq"], i as u64 + 1, "{ack}");
    }
    // Either order names the same conversation.
    let (all, texts, next) = h.dm_page("bob", "alice", "").await;
    assert_eq!(all, (1..=7).collect::<Vec<_>>());
    assert_eq!(texts, TEXTS);
    assert_eq!(next, Value::Null);
    let r = h
        .get("/api/v1/conversations/alice/bob/messages?limit=1")
        .await;
    r.expect(200);
    let m = &r.data()["messages"][0];
    assert_eq!(r.data()["conversation"], "alice:bob", "{}", r.text);
    assert_eq!(
        (&m["seq"], &m["from"]["id"], &m["to"], &m["text"]),
        (&json!(7), &json!("alice"), &json!("bob"), &json!("bye")),
        "{}",
        r.text
    );

    // Older pages, following `next`.
    let (p1, _, next) = h.dm_page("alice", "bob", "?limit=3").await;
    assert_eq!((p1, &next), (vec![5, 6, 7], &json!(5)));
    let (p2, _, next) = h.dm_page("alice", "bob", "?limit=3&before=5").await;
    assert_eq!((p2, &next), (vec![2, 3, 4], &json!(2)));
    let (p3, _, next) = h.dm_page("alice", "bob", "?limit=3&before=2").await;
    assert_eq!((p3, &next), (vec![1], &Value::Null));
    // Over the maximum: clamped, not refused.
    let (p, _, _) = h.dm_page("alice", "bob", "?limit=100000").await;
    assert_eq!(p.len(), 7);

    // Search: case-insensitive, literal, inside this conversation only.
    dm_acked(&mut alice, "carol", "hello carol").await;
    let search = |q: &str| format!("?q={}", enc(q));
    assert_eq!(h.dm_page("alice", "bob", &search("hello")).await.0, [1, 6]);
    assert_eq!(h.dm_page("alice", "bob", &search("HeLLo")).await.0, [1, 6]);
    let (p, _, next) = h
        .dm_page("alice", "bob", &format!("{}&limit=1", search("hello")))
        .await;
    assert_eq!((p, &next), (vec![6], &json!(6)));
    let (p, _, _) = h
        .dm_page(
            "alice",
            "bob",
            &format!("{}&limit=1&before=6", search("hello")),
        )
        .await;
    assert_eq!(p, [1]);
    assert_eq!(h.dm_page("alice", "bob", &search(".*")).await.0, [2]);
    assert_eq!(h.dm_page("alice", "bob", &search("(")).await.0, [3]);
    assert_eq!(h.dm_page("alice", "bob", &search("école")).await.0, [4]);
    assert_eq!(
        h.dm_page("alice", "bob", &search("^h")).await.0,
        Vec::<u64>::new()
    );
    let (miss, _, next) = h.dm_page("alice", "bob", &search("zebra")).await;
    assert!(miss.is_empty());
    assert_eq!(next, Value::Null);
    // A pair without messages is an empty page.
    assert!(h.dm_page("alice", "zed", "").await.0.is_empty());
}

#[tokio::test]
async fn conversation_paging_and_search_redb() {
    conversation_paging_and_search(Backend::Redb).await;
}

#[tokio::test]
async fn conversation_paging_and_search_mongodb() {
    conversation_paging_and_search(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------

async fn room_paging_and_search(backend: Backend) {
    let h = Host::start(backend).await;
    let port = h.room("lobby").await;
    let mut ann = h.join(port, "lobby", "ann").await;
    let mut acked = Vec::new();
    for t in ["Hello room", "second", "third (3)", "say HELLO", "five"] {
        acked.push(ann.say_acked(t).await);
    }
    // Acked means stored: the route reads the store.
    let (all, texts, next) = h.room_page("lobby", "").await;
    assert_eq!(all, acked);
    assert_eq!(texts[2], "third (3)");
    assert_eq!(next, Value::Null);
    let r = h.get("/api/v1/room/lobby/messages?limit=1").await;
    r.expect(200);
    let m = &r.data()["messages"][0];
    assert_eq!(r.data()["room"], "lobby");
    assert_eq!(
        (&m["from"]["id"], &m["text"]),
        (&json!("ann"), &json!("five"))
    );

    let (p1, _, next) = h.room_page("lobby", "?limit=2").await;
    assert_eq!(p1, acked[3..]);
    assert_eq!(next, json!(acked[3]));
    let (p2, _, _) = h
        .room_page("lobby", &format!("?limit=2&before={}", acked[3]))
        .await;
    assert_eq!(p2, acked[1..3]);

    assert_eq!(
        h.room_page("lobby", "?q=hello").await.0,
        [acked[0], acked[3]]
    );
    assert_eq!(h.room_page("lobby", "?q=%283%29").await.0, [acked[2]]);
    assert!(h.room_page("lobby", "?q=absent").await.0.is_empty());
    // Unknown room.
    let r = h.get("/api/v1/room/nosuchroom/messages").await;
    r.expect(404);
    assert!(r.message().contains("nosuchroom"), "{}", r.text);
}

#[tokio::test]
async fn room_paging_and_search_redb() {
    room_paging_and_search(Backend::Redb).await;
}

#[tokio::test]
async fn room_paging_and_search_mongodb() {
    room_paging_and_search(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------

async fn conversations_with_unread_counts(backend: Backend) {
    let h = Host::start(backend).await;
    for (from, n) in [("alice", 2), ("carol", 1), ("dave", 3), ("erin", 1)] {
        for i in 0..n {
            h.post_dm(from, "bob", &format!("{from} {i}")).await;
        }
    }
    let port = h.room("desk").await;
    let mut bob = h.join(port, "desk", "bob").await;
    // Bob reads dave's conversation up to 2 (his own connection gets the
    // receipt once it is stored).
    bob.send_json(json!({"type":"read","with":"dave","seq":2}))
        .await;
    assert_eq!(bob.recv_type("read").await["seq"], 2);

    let list = h.all_conversations("bob", 3).await;
    let got: Vec<(&str, u64)> = list
        .iter()
        .map(|c| {
            (
                c["with"].as_str().unwrap_or(""),
                c["unread"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    let mut sorted_by_with = got.clone();
    sorted_by_with.sort();
    assert_eq!(
        sorted_by_with,
        [("alice", 2), ("carol", 1), ("dave", 1), ("erin", 1)],
        "{list:?}"
    );
    // Newest last message first (ties by conversation id, descending).
    let keys: Vec<(u64, String)> = list
        .iter()
        .map(|c| {
            (
                c["last"]["ts"].as_u64().unwrap_or(0),
                c["conversation"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let mut expected = keys.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, expected);
    let dave = list.iter().find(|c| c["with"] == "dave").expect("dave");
    assert_eq!(dave["last"]["text"], "dave 2", "{dave}");
    assert_eq!(dave["last"]["from"]["id"], "dave", "{dave}");
    // One page holding everything has no `next`; the sender sees nothing
    // unread in what it sent.
    let r = h.get("/api/v1/users/bob/conversations").await;
    r.expect(200);
    assert_eq!(r.data()["conversations"].as_array().map(Vec::len), Some(4));
    assert_eq!(r.data()["next"], Value::Null);
    let alice = h.all_conversations("alice", 10).await;
    assert_eq!(alice.len(), 1);
    assert_eq!(
        (&alice[0]["with"], &alice[0]["unread"]),
        (&json!("bob"), &json!(0))
    );
    assert!(h.all_conversations("nobody", 10).await.is_empty());
}

#[tokio::test]
async fn conversations_with_unread_counts_redb() {
    conversations_with_unread_counts(Backend::Redb).await;
}

#[tokio::test]
async fn conversations_with_unread_counts_mongodb() {
    conversations_with_unread_counts(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------

async fn posted_dm_is_stored_and_delivered_live(backend: Backend) {
    let h = Host::start(backend).await;
    let (pa, pb) = (h.room("front").await, h.room("back").await);
    let mut support = h.join(pa, "front", "support").await;
    let mut bob = h.join(pb, "back", "bob").await;
    let mut bob2 = h.join(pa, "front", "bob").await;

    let sent = h.post_dm("support", "bob", "your ticket is solved").await;
    assert_eq!(sent["conversation"], "bob:support", "{sent}");
    assert_eq!(sent["seq"], 1, "{sent}");
    // Every connection of both users, in any room.
    for c in [&mut bob, &mut bob2, &mut support] {
        let dm = c.recv_type("dm").await;
        assert_eq!(
            (&dm["seq"], &dm["from"]["id"], &dm["to"], &dm["text"]),
            (
                &json!(1),
                &json!("support"),
                &json!("bob"),
                &json!("your ticket is solved")
            ),
            "{dm}"
        );
        assert_eq!(dm["conversation"], "bob:support");
        assert_eq!(dm["ts"], sent["ts"]);
    }
    // One numbering with the room protocol's DMs.
    let ack = dm_acked(&mut bob, "support", "thanks").await;
    assert_eq!(ack["seq"], 2, "{ack}");
    assert_eq!(h.post_dm("support", "bob", "welcome").await["seq"], 3);
    assert_eq!(bob.recv_type("dm").await["text"], "welcome");
    let (all, texts, _) = h.dm_page("bob", "support", "").await;
    assert_eq!(all, [1, 2, 3]);
    assert_eq!(texts, ["your ticket is solved", "thanks", "welcome"]);

    // The sender's profile name, when the platform set one (the PUT
    // refreshes the master's cache before it answers).
    h.s.request(
        reqwest::Method::PUT,
        &h.s.admin_url("/api/v1/users/support"),
        Some(&h.s.admin_key),
        Some(r#"{"name":"Support Desk"}"#),
    )
    .await
    .expect(200);
    h.post_dm("support", "bob", "named").await;
    let dm = bob.recv_type("dm").await;
    assert_eq!(
        (&dm["text"], &dm["from"]["name"]),
        (&json!("named"), &json!("Support Desk")),
        "{dm}"
    );
}

#[tokio::test]
async fn posted_dm_is_stored_and_delivered_live_redb() {
    posted_dm_is_stored_and_delivered_live(Backend::Redb).await;
}

#[tokio::test]
async fn posted_dm_is_stored_and_delivered_live_mongodb() {
    posted_dm_is_stored_and_delivered_live(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------

async fn posted_dm_to_an_offline_user_is_pushed(backend: Backend) {
    let mut rx = Receiver::start().await;
    let secret = chat_tests::random_string(32);
    let h = Host::start_with(
        backend,
        &[
            "--webhook-url".to_string(),
            rx.url.clone(),
            "--webhook-secret".into(),
            secret.clone(),
        ],
    )
    .await;
    let sent = h.post_dm("clinic", "carol", "your results are in").await;
    let hook = rx.next_of("dm.offline").await;
    assert!(hook.signed_with(&secret), "the signature does not verify");
    let data = &hook.json["data"];
    assert_eq!(
        (&data["to"], &data["from"], &data["text"]),
        (
            &json!("carol"),
            &json!("clinic"),
            &json!("your results are in")
        ),
        "{}",
        hook.json
    );
    assert_eq!(data["seq"], sent["seq"], "{}", hook.json);
    assert_eq!(data["conversation"], sent["conversation"], "{}", hook.json);

    // Carol online: delivered live, not pushed (the next dm.offline is the
    // one to dan, sent after).
    let port = h.room("ward").await;
    let mut carol = h.join(port, "ward", "carol").await;
    h.post_dm("clinic", "carol", "see you").await;
    assert_eq!(carol.recv_type("dm").await["text"], "see you");
    h.post_dm("clinic", "dan", "for dan").await;
    let next = rx.next_of("dm.offline").await;
    assert_eq!(next.json["data"]["to"], "dan", "{}", next.json);
}

#[tokio::test]
async fn posted_dm_to_an_offline_user_is_pushed_redb() {
    posted_dm_to_an_offline_user_is_pushed(Backend::Redb).await;
}

#[tokio::test]
async fn posted_dm_to_an_offline_user_is_pushed_mongodb() {
    posted_dm_to_an_offline_user_is_pushed(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------

async fn a_blocked_sender_is_refused(backend: Backend) {
    let h = Host::start(backend).await;
    let port = h.room("quiet").await;
    let mut bob = h.join(port, "quiet", "bob").await;
    bob.send_json(json!({"type":"block","user":"spammer"}))
        .await;
    assert_eq!(bob.recv_type("blocked").await["blocked"], true);

    let r = h
        .post_dm_raw("spammer", "bob", r#"{"text":"buy now"}"#)
        .await;
    r.expect(403);
    assert!(r.message().contains("spammer"), "{}", r.text);
    // Nothing stored, nothing delivered.
    assert!(h.dm_page("spammer", "bob", "").await.0.is_empty());
    assert!(h.all_conversations("bob", 10).await.is_empty());
    let seen = bob.sync().await;
    assert!(seen.iter().all(|f| f["type"] != "dm"), "{seen:?}");

    bob.send_json(json!({"type":"unblock","user":"spammer"}))
        .await;
    assert_eq!(bob.recv_type("blocked").await["blocked"], false);
    assert_eq!(h.post_dm("spammer", "bob", "sorry").await["seq"], 1);
    assert_eq!(bob.recv_type("dm").await["text"], "sorry");
}

#[tokio::test]
async fn a_blocked_sender_is_refused_redb() {
    a_blocked_sender_is_refused(Backend::Redb).await;
}

#[tokio::test]
async fn a_blocked_sender_is_refused_mongodb() {
    a_blocked_sender_is_refused(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------

/// Every bad input is a 400 with a message (never a 500), and nothing is
/// stored. Checked before the store, so one backend is enough.
#[tokio::test]
async fn bad_input_is_refused_and_stores_nothing() {
    let h = Host::start(Backend::Redb).await;
    h.room("real").await;
    let long = "x".repeat(129);
    let long_q = "q".repeat(201);
    let gets = [
        format!("/api/v1/users/{long}/conversations"),
        "/api/v1/users/a%01b/conversations".to_owned(),
        "/api/v1/users/a%E2%80%8Bb/conversations".to_owned(),
        "/api/v1/users/guest%3A12/conversations".to_owned(),
        "/api/v1/users/bob/conversations?before=garbage".to_owned(),
        "/api/v1/users/bob/conversations?before=12".to_owned(),
        "/api/v1/users/bob/conversations?limit=ten".to_owned(),
        "/api/v1/users/bob/conversations?q=hi".to_owned(),
        format!("/api/v1/conversations/{long}/bob/messages"),
        "/api/v1/conversations/bob/a%00b/messages".to_owned(),
        "/api/v1/conversations/bob/bob/messages".to_owned(),
        "/api/v1/conversations/a/b/messages?before=0".to_owned(),
        "/api/v1/conversations/a/b/messages?before=-1".to_owned(),
        "/api/v1/conversations/a/b/messages?before=1e3".to_owned(),
        "/api/v1/conversations/a/b/messages?before=99999999999999999999".to_owned(),
        "/api/v1/conversations/a/b/messages?limit=-5".to_owned(),
        "/api/v1/conversations/a/b/messages?limit=".to_owned(),
        format!("/api/v1/conversations/a/b/messages?q={long_q}"),
        "/api/v1/conversations/a/b/messages?q=".to_owned(),
        "/api/v1/conversations/a/b/messages?q=a%0Ab".to_owned(),
        "/api/v1/conversations/a/b/messages?sort=seq".to_owned(),
        "/api/v1/conversations/a/b/messages?limit=1&limit=2".to_owned(),
        "/api/v1/room/bad%20name/messages".to_owned(),
        format!("/api/v1/room/{}/messages", "r".repeat(65)),
        "/api/v1/room/real/messages?before=x".to_owned(),
        format!("/api/v1/room/real/messages?q={long_q}"),
        "/api/v1/room/real/messages?user=u1".to_owned(),
    ];
    for path in &gets {
        let r = h.get(path).await;
        assert_eq!(r.status, 400, "GET {path}: {}", r.text);
        assert!(
            !r.message().is_empty(),
            "GET {path}: no message: {}",
            r.text
        );
    }
    let text_4001 = json!({"text": "é".repeat(4001)}).to_string();
    let posts: [(&str, &str, &str); 13] = [
        ("alice", "bob", "hello"),
        ("alice", "bob", ""),
        ("alice", "bob", "[]"),
        ("alice", "bob", "{}"),
        ("alice", "bob", r#"{"text":"hi","to":"carol"}"#),
        ("alice", "bob", r#"{"text":42}"#),
        ("alice", "bob", r#"{"text":"   "}"#),
        ("alice", "bob", &text_4001),
        ("alice", "alice", r#"{"text":"me"}"#),
        (&long, "bob", r#"{"text":"hi"}"#),
        ("alice", "guest:9", r#"{"text":"hi"}"#),
        ("alice", "b\u{1}b", r#"{"text":"hi"}"#),
        ("alice", "bob", r#"{"text":"hi""#),
    ];
    for (from, to, body) in posts {
        let r = h.post_dm_raw(from, to, body).await;
        assert_eq!(r.status, 400, "POST {from:?} → {to:?} {body:?}: {}", r.text);
        assert!(!r.message().is_empty(), "no message: {}", r.text);
    }
    // Nothing was stored, and the master still answers.
    assert!(h.all_conversations("alice", 10).await.is_empty());
    assert!(h.all_conversations("bob", 10).await.is_empty());
    assert!(h.dm_page("alice", "bob", "").await.0.is_empty());
    assert_eq!(h.post_dm("alice", "bob", "fine").await["seq"], 1);
}
