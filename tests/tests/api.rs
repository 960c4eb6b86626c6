//! The main API (`--port`): room creation, listing, errors, headers.

use chat_tests::{Client, Resp, Server, ServerOpts};
use reqwest::Method;
use serde_json::json;

fn assert_json_headers(r: &Resp, what: &str) {
    assert!(
        r.content_type().starts_with("application/json"),
        "{what}: Content-Type is {:?}, body {}",
        r.content_type(),
        r.text
    );
    assert!(
        r.header("x-whom").is_some(),
        "{what}: no X-Whom header; headers {:?}",
        r.headers
    );
    assert!(!r.json.is_null(), "{what}: body is not JSON: {:?}", r.text);
}

#[tokio::test]
async fn root_reports_app_and_version() {
    let s = Server::default_server().await;
    let r = s
        .request(Method::GET, &s.api_url("/api/v1/"), None, None)
        .await;
    r.expect(200);
    assert_eq!(
        r.json,
        json!({"data":{"app":"chatserver","version":"0.1.0"}})
    );
    assert_json_headers(&r, "GET /api/v1/");
}

#[tokio::test]
async fn create_room_then_connect_and_create_again() {
    let s = Server::default_server().await;
    let r = s.create_room_with("testroom", None).await;
    r.expect(200);
    let port = r.data()["port"].as_u64().expect("port") as u16;
    assert_eq!(r.data()["message"], "Room created", "{}", r.text);
    assert!(
        (s.room_ports.0..=s.room_ports.1).contains(&port),
        "port {port} outside {:?}",
        s.room_ports
    );
    assert_json_headers(&r, "POST room");

    // A client can join right away.
    let c = Client::guest(port, "alice").await;
    assert_eq!(c.welcome["room"], "testroom");

    let again = s.create_room_with("testroom", None).await;
    again.expect(200);
    assert_eq!(
        again.json,
        json!({"data":{"port":port,"message":"testroom already exists"}})
    );
    assert_eq!(s.room_names().await, vec!["testroom".to_owned()]);
}

#[tokio::test]
async fn create_room_requires_the_key() {
    let s = Server::default_server().await;
    let url = s.api_url("/api/v1/room/secretroom");
    for key in [None, Some("wrong-key"), Some("")] {
        let r = s.request(Method::POST, &url, key, None).await;
        assert_eq!(r.status, 401, "key {key:?}: {}", r.text);
        assert_eq!(r.json, json!({"message":"Unauthorized"}), "key {key:?}");
        assert_json_headers(&r, "401");
    }
    // Nothing was created.
    assert!(s.rooms().await.is_empty());
    let info = s.room_info("secretroom").await;
    assert_eq!(info.status, 404, "{}", info.text);

    // The listing needs the key too.
    let r = s
        .request(Method::GET, &s.api_url("/api/v1/rooms"), None, None)
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = s
        .request(
            Method::GET,
            &s.api_url("/api/v1/room/secretroom"),
            Some("nope"),
            None,
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn bad_room_names_are_refused() {
    let s = Server::default_server().await;
    let long = "x".repeat(65);
    for (path_name, why) in [
        ("a%20b", vec!["letters", "' '", "character", "invalid"]),
        (long.as_str(), vec!["64", "long"]),
        ("%C3%A9", vec!["letters", "'é'", "character", "invalid"]),
        ("a.b", vec!["letters", "'.'", "character", "invalid"]),
    ] {
        let r = s.create_room_with(path_name, None).await;
        assert_eq!(r.status, 400, "name {path_name:?}: {}", r.text);
        assert_json_headers(&r, "400");
        let msg = r.message().to_lowercase();
        assert!(
            why.iter().any(|w| msg.contains(w)),
            "name {path_name:?}: the message does not say why: {:?}",
            r.text
        );
    }
    assert!(s.rooms().await.is_empty(), "a bad name created a room");
    // 64 characters is fine.
    s.create_room(&"y".repeat(64)).await;
}

#[tokio::test]
async fn room_settings_body() {
    let s = Server::default_server().await;
    let settings = json!({
        "max_members": 5, "guests": true, "history_size": 10,
        "time_limit_secs": 3600, "slow_mode_ms": 0, "max_text_len": 100, "mode": "chat"
    });
    let port = s.create_room_settings("withsettings", Some(settings)).await;
    Client::guest(port, "x").await;

    for (body, field) in [
        (json!({"nope": 1}), "nope"),
        (json!({"max_members": 0}), "max_members"),
        (json!({"history_size": 100000}), "history_size"),
        (json!({"max_text_len": 0}), "max_text_len"),
        (json!({"mode": "other"}), "other"),
        (json!({"guests": "yes"}), "boolean"),
        (json!([1, 2]), ""),
    ] {
        let r = s.create_room_with("badsettings", Some(&body)).await;
        assert_eq!(r.status, 400, "body {body}: {}", r.text);
        assert_json_headers(&r, "400 settings");
        assert!(
            r.message().contains(field),
            "body {body}: message does not name {field:?}: {}",
            r.text
        );
    }
    // Not JSON at all.
    let r = s
        .request(
            Method::POST,
            &s.api_url("/api/v1/room/badsettings"),
            Some(&s.key),
            Some("{not json"),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(s.room_names().await, vec!["withsettings".to_owned()]);
}

#[tokio::test]
async fn capacity_is_reported_with_port_zero() {
    let s = Server::start(ServerOpts::new().args(["--max-rooms", "1"])).await;
    s.create_room("first").await;
    let r = s.create_room_with("second", None).await;
    r.expect(200);
    assert_eq!(
        r.json,
        json!({"data":{"port":0,"message":"No more rooms can be created"}})
    );
    assert_eq!(s.room_names().await, vec!["first".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_make_one_room() {
    let s = Server::default_server().await;
    let futs = (0..20).map(|_| s.create_room_with("race", None));
    let answers: Vec<Resp> = futures_util::future::join_all(futs).await;
    let ports: Vec<u64> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.data()["port"].as_u64().expect("port")
        })
        .collect();
    assert!(ports[0] > 0, "{ports:?}");
    assert!(
        ports.iter().all(|&p| p == ports[0]),
        "ports differ: {ports:?}"
    );
    let created = answers
        .iter()
        .filter(|r| r.data()["message"] == "Room created")
        .count();
    assert_eq!(created, 1, "answers: {answers:?}");
    let rooms = s.rooms().await;
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    // Exactly one worker process.
    let pids = s.remember_workers().await;
    let alive: Vec<_> = pids
        .iter()
        .filter(|&&p| chat_tests::procs::pid_alive(p))
        .collect();
    assert_eq!(alive.len(), 1, "worker pids: {pids:?}");
    Client::guest(ports[0] as u16, "a").await;
}

#[tokio::test]
async fn room_info_and_list() {
    let s = Server::default_server().await;
    let p1 = s.create_room("one").await;
    let p2 = s.create_room("two").await;
    assert_ne!(p1, p2);

    let r = s.room_info("one").await;
    r.expect(200);
    assert_json_headers(&r, "GET room");
    let d = r.data();
    assert_eq!(d["name"], "one", "{d}");
    assert_eq!(d["port"], p1, "{d}");
    let pid = d["pid"].as_i64().expect("pid") as i32;
    assert!(chat_tests::procs::pid_alive(pid), "pid {pid} not running");
    assert!(d["status"].is_string(), "status: {d}");

    let r = s.room_info("nosuchroom").await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_json_headers(&r, "404");
    assert!(!r.message().is_empty(), "404 without message: {}", r.text);

    let rooms = s.rooms().await;
    let mut names: Vec<(String, u64)> = rooms
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["port"].as_u64().unwrap(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![("one".into(), u64::from(p1)), ("two".into(), u64::from(p2))]
    );
}

#[tokio::test]
async fn every_answer_has_json_and_x_whom() {
    let s = Server::default_server().await;
    let cases: Vec<(Method, String, Option<String>, u16)> = vec![
        (Method::GET, "/api/v1/".into(), None, 200),
        (
            Method::GET,
            "/api/v1/rooms".into(),
            Some(s.key.clone()),
            200,
        ),
        (Method::GET, "/api/v1/rooms".into(), None, 401),
        (
            Method::GET,
            "/api/v1/room/nothere".into(),
            Some(s.key.clone()),
            404,
        ),
        (
            Method::POST,
            "/api/v1/room/a%20b".into(),
            Some(s.key.clone()),
            400,
        ),
        (
            Method::POST,
            "/api/v1/room/x".into(),
            Some("bad".into()),
            401,
        ),
    ];
    for (m, path, key, status) in cases {
        let r = s
            .request(m.clone(), &s.api_url(&path), key.as_deref(), None)
            .await;
        assert_eq!(r.status, status, "{m} {path}: {}", r.text);
        assert_json_headers(&r, &format!("{m} {path}"));
    }
    // An unknown route is a JSON 404 as well.
    let r = s
        .request(Method::GET, &s.api_url("/nope"), Some(&s.key), None)
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_json_headers(&r, "unknown route");
}

#[tokio::test]
async fn room_port_answers_plain_http_with_its_name() {
    let s = Server::default_server().await;
    let port = s.create_room("plainroom").await;
    let r = s
        .request(
            Method::GET,
            &format!("http://127.0.0.1:{port}/"),
            None,
            None,
        )
        .await;
    r.expect(200);
    assert_eq!(r.text, "plainroom");
    assert!(
        r.content_type().starts_with("text/plain"),
        "{:?}",
        r.content_type()
    );
}
