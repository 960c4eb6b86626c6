//! Keys on both HTTP APIs (a classic case of issue 12): every route of the
//! admin API, taken from its OpenAPI document (docs/openapi/admin-api.json,
//! so a new route is covered without touching this file), is called with no
//! key, an empty key, a wrong key, the admin key with a byte changed, and
//! the room API's key; every keyed route of the room API
//! (docs/openapi/room-api.json) with no key, a wrong key and the admin key.
//!
//! Each answers 401 `{"message":"Unauthorized"}`, nothing happens (the room
//! keeps its worker, the master keeps running, no room is created), and a
//! witness in a room still chats and lost nothing.
//! Defence: `require_admin_key` / `require_key`, middleware that runs before
//! any handler. Without it a keyed route answers 2xx/4xx of its own and the
//! test fails, naming the route.

mod attack_common;

use attack_common::Witness;
use chat_tests::Server;
use reqwest::Method;
use serde_json::{Value, json};

/// One documented operation: method, path with its parameters filled in,
/// an example body, and whether it needs a key.
struct Op {
    method: Method,
    path: String,
    body: Option<String>,
    keyed: bool,
}

/// The OpenAPI document `docs/openapi/<file>` of this repository.
fn document(file: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/openapi")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether an operation needs a key: its `security`, or the document's,
/// names a scheme.
fn keyed(doc: &Value, op: &Value) -> bool {
    let sec = op.get("security").unwrap_or(&doc["security"]);
    sec.as_array().is_some_and(|a| {
        a.iter()
            .any(|r| r.as_object().is_some_and(|o| !o.is_empty()))
    })
}

/// A body the operation would accept: its example, or its first example.
fn example_body(op: &Value) -> Option<String> {
    let media = op
        .get("requestBody")?
        .get("content")?
        .get("application/json")?;
    let example = media
        .get("example")
        .cloned()
        .or_else(|| {
            media
                .get("examples")?
                .as_object()?
                .values()
                .next()?
                .get("value")
                .cloned()
        })
        .unwrap_or_else(|| json!({}));
    Some(example.to_string())
}

/// Every operation of `doc`, `{name}` filled with `room` and any other
/// parameter with `u1`.
fn operations(doc: &Value, room: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let filled = path.replace("{name}", room);
        let filled = fill_params(&filled);
        for (method, op) in item.as_object().expect("a path item") {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !["GET", "PUT", "POST", "DELETE", "PATCH"].contains(&m.as_str()) {
                continue;
            }
            ops.push(Op {
                method: m,
                path: filled.clone(),
                body: example_body(op),
                keyed: keyed(doc, op),
            });
        }
    }
    ops
}

/// Replaces every remaining `{param}` with `u1`.
fn fill_params(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                out.push_str("u1");
                rest = &rest[open + close + 1..];
            }
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Asserts every keyed op of `ops` answers 401 with each of `keys`, and
/// every open op answers without a key. Returns how many keyed ops there are.
async fn check(
    s: &Server,
    ops: &[Op],
    base: impl Fn(&str) -> String,
    keys: &[(&str, Option<String>)],
) -> usize {
    let mut keyed = 0;
    for op in ops {
        let url = base(&op.path);
        if !op.keyed {
            let r = s
                .request(op.method.clone(), &url, None, op.body.as_deref())
                .await;
            assert_ne!(
                r.status, 401,
                "{} {}: an open route wants a key",
                op.method, op.path
            );
            continue;
        }
        keyed += 1;
        for (what, key) in keys {
            let r = s
                .request(op.method.clone(), &url, key.as_deref(), op.body.as_deref())
                .await;
            assert_eq!(
                r.status, 401,
                "{} {} with {what}: {}",
                op.method, op.path, r.text
            );
            assert_eq!(
                r.json,
                json!({"message":"Unauthorized"}),
                "{} {} with {what}",
                op.method,
                op.path
            );
        }
    }
    keyed
}

/// `key` with its last byte changed.
fn off_by_one(key: &str) -> String {
    let mut k = key.to_owned();
    let last = k.pop().unwrap_or('a');
    k.push(if last == 'x' { 'y' } else { 'x' });
    k
}

#[tokio::test]
async fn every_admin_route_refuses_a_missing_wrong_or_room_key() {
    let s = Server::default_server().await;
    let room = "target";
    let port = s.create_room(room).await;
    let mut w = Witness::guest(&s, room, port).await;
    let ops = operations(&document("admin-api.json"), room);
    let keys = [
        ("no key", None),
        ("an empty key", Some(String::new())),
        ("a wrong key", Some("wrong-key".to_owned())),
        (
            "the admin key with a byte changed",
            Some(off_by_one(&s.admin_key)),
        ),
        ("the admin key twice", Some(s.admin_key.repeat(2))),
        (
            "a prefix of the admin key",
            Some(s.admin_key[..8].to_owned()),
        ),
        ("the room API key", Some(s.key.clone())),
    ];
    let keyed = check(&s, &ops, |p| s.admin_url(p), &keys).await;
    assert!(keyed >= 20, "only {keyed} keyed admin routes documented");
    // Nothing happened: no restart, no shutdown, no drain, no ban.
    w.survived(&s).await;
    let bans = s.admin(Method::GET, "/api/v1/bans").await;
    assert_eq!(bans.status, 200, "{}", bans.text);
    assert!(!bans.text.contains("u1"), "a ban was stored: {}", bans.text);
    assert_eq!(s.room_names().await, vec![room.to_owned()]);
}

#[tokio::test]
async fn every_room_api_route_refuses_a_missing_wrong_or_admin_key() {
    let s = Server::default_server().await;
    let room = "target";
    let port = s.create_room(room).await;
    let mut w = Witness::guest(&s, room, port).await;
    let keys = [
        ("no key", None),
        ("an empty key", Some(String::new())),
        ("a wrong key", Some("wrong-key".to_owned())),
        ("the key with a byte changed", Some(off_by_one(&s.key))),
        ("the admin key", Some(s.admin_key.clone())),
    ];
    // Existing room for reads; a new name for the create.
    let doc = document("room-api.json");
    let mut ops = operations(&doc, room);
    for op in &mut ops {
        if op.method == Method::POST {
            op.path = op.path.replace(room, "intruder");
        }
    }
    let keyed = check(&s, &ops, |p| s.api_url(p), &keys).await;
    assert!(keyed >= 3, "only {keyed} keyed room API routes documented");
    assert_eq!(
        s.room_names().await,
        vec![room.to_owned()],
        "a room was created"
    );
    w.survived(&s).await;
}
