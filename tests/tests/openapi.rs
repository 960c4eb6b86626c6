//! The OpenAPI documents the master serves at `GET /api/v1/openapi.json` on
//! both ports: served as is, and true to what the server answers.

use chat_tests::{Resp, Server, ServerOpts};
use reqwest::Method;
use serde_json::Value;

/// The documents in the repository, as the master embeds them.
const ROOM_API_DOC: &str = include_str!("../../docs/openapi/room-api.json");
const ADMIN_API_DOC: &str = include_str!("../../docs/openapi/admin-api.json");

/// Fetches `/api/v1/openapi.json` without a key and checks it is the
/// repository's OpenAPI 3 document.
async fn fetch_doc(s: &Server, url: &str, expected: &str, what: &str) -> Value {
    let r = s.request(Method::GET, url, None, None).await;
    assert_eq!(r.status, 200, "{what}: {}", r.text);
    assert!(
        r.content_type().starts_with("application/json"),
        "{what}: Content-Type is {:?}",
        r.content_type()
    );
    assert!(
        r.header("x-whom").is_some(),
        "{what}: no X-Whom: {:?}",
        r.headers
    );
    let doc = &r.json;
    assert!(doc.is_object(), "{what}: not a JSON object: {:?}", r.text);
    let version = doc["openapi"].as_str().unwrap_or("");
    assert!(version.starts_with("3."), "{what}: openapi is {version:?}");
    assert!(doc["paths"].is_object(), "{what}: no paths");
    let file: Value = serde_json::from_str(expected).expect("the repository's document is JSON");
    assert_eq!(
        doc, &file,
        "{what}: the served document is not the repository's"
    );
    doc.clone()
}

/// Whether an operation needs no key: its `security` (or the document's) is
/// empty or lists an empty requirement.
fn is_open(doc: &Value, op: &Value) -> bool {
    let security = op.get("security").unwrap_or(&doc["security"]);
    match security.as_array() {
        None => true,
        Some(reqs) => {
            reqs.is_empty()
                || reqs
                    .iter()
                    .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
        }
    }
}

/// (path, operation) of every documented GET whose path has no parameter.
fn plain_gets(doc: &Value) -> Vec<(String, Value)> {
    doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| !path.contains('{'))
        .filter_map(|(path, item)| item.get("get").map(|op| (path.clone(), op.clone())))
        .collect()
}

/// Checks an answer against its documented operation: a documented status,
/// a documented media type, `X-Whom`.
fn check_documented(r: &Resp, op: &Value, what: &str) {
    let status = r.status.to_string();
    let response = op["responses"]
        .get(&status)
        .unwrap_or_else(|| panic!("{what}: status {status} is not documented; body {}", r.text));
    assert!(
        r.header("x-whom").is_some(),
        "{what}: no X-Whom: {:?}",
        r.headers
    );
    if let Some(content) = response["content"].as_object() {
        let essence = |t: &str| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        };
        let got = essence(r.content_type());
        assert!(
            content.keys().any(|k| essence(k) == got),
            "{what}: Content-Type {:?} is not among the documented {:?}",
            r.content_type(),
            content.keys().collect::<Vec<_>>()
        );
        if got == "application/json" {
            assert!(!r.json.is_null(), "{what}: body is not JSON: {:?}", r.text);
        }
    }
}

/// Every documented GET without parameters: open ones answer (not 404) a
/// documented status without a key; keyed ones refuse a request without one.
async fn check_gets(s: &Server, doc: &Value, base: impl Fn(&str) -> String, api: &str) {
    let gets = plain_gets(doc);
    assert!(!gets.is_empty(), "{api}: no GET documented");
    let mut open = 0;
    for (path, op) in gets {
        let what = format!("{api} GET {path}");
        let r = s.request(Method::GET, &base(&path), None, None).await;
        if is_open(doc, &op) {
            open += 1;
            assert_ne!(r.status, 404, "{what} (open): {}", r.text);
            check_documented(&r, &op, &what);
        } else {
            assert_eq!(r.status, 401, "{what} without a key: {}", r.text);
            assert_eq!(r.json["message"], "Unauthorized", "{what}: {}", r.text);
            assert!(
                op["responses"].get("401").is_some(),
                "{what}: 401 is not documented"
            );
        }
    }
    assert!(open > 0, "{api}: no open GET documented");
}

#[tokio::test]
async fn both_ports_serve_their_openapi_document() {
    let s = Server::start(ServerOpts::new()).await;
    let room = fetch_doc(
        &s,
        &s.api_url("/api/v1/openapi.json"),
        ROOM_API_DOC,
        "room API",
    )
    .await;
    let admin = fetch_doc(
        &s,
        &s.admin_url("/api/v1/openapi.json"),
        ADMIN_API_DOC,
        "admin API",
    )
    .await;
    assert_ne!(room, admin, "both ports serve the same document");
}

#[tokio::test]
async fn documented_open_gets_answer_without_a_key() {
    let s = Server::start(ServerOpts::new()).await;
    let room: Value = serde_json::from_str(ROOM_API_DOC).unwrap();
    let admin: Value = serde_json::from_str(ADMIN_API_DOC).unwrap();
    check_gets(&s, &room, |p| s.api_url(p), "room API").await;
    check_gets(&s, &admin, |p| s.admin_url(p), "admin API").await;
}
