//! The admin API (`--admin-port`).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use chat_tests::procs::{pid_alive, port_bindable};
use chat_tests::{Client, Server, ServerOpts, wait_for};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn admin_root_needs_the_admin_key() {
    let s = Server::default_server().await;
    let r = s.admin(Method::GET, "/api/v1/").await;
    r.expect(200);
    assert_eq!(
        r.json,
        json!({"data":{"app":"Admin chatserver","version":"0.1.0"}})
    );
    assert!(r.content_type().starts_with("application/json"));
    assert!(r.header("x-whom").is_some(), "no X-Whom: {:?}", r.headers);
    let url = s.admin_url("/api/v1/");
    for key in [None, Some("wrong"), Some(s.key.as_str())] {
        let r = s.request(Method::GET, &url, key, None).await;
        assert_eq!(r.status, 401, "key {key:?}: {}", r.text);
        assert_eq!(r.json, json!({"message":"Unauthorized"}));
        assert!(r.content_type().starts_with("application/json"));
        assert!(r.header("x-whom").is_some());
    }
}

#[tokio::test]
async fn load_reports_the_machine_and_rooms() {
    let s = Server::default_server().await;
    s.create_room("alpha").await;
    s.create_room("beta").await;
    let r = s.admin(Method::GET, "/api/v1/load").await;
    r.expect(200);
    let d = r.data();
    for f in [
        "loadAvg",
        "totalMemory",
        "freeMemory",
        "percentage",
        "cpus",
        "rooms",
        "capacity",
        "osUpTime",
        "upTime",
        "acceptingConnections",
    ] {
        assert!(d.get(f).is_some(), "load has no {f}: {d}");
    }
    let rooms = d["rooms"].as_str().expect("rooms is a string");
    let mut names: Vec<&str> = rooms.split(',').map(str::trim).collect();
    names.sort();
    assert_eq!(names, vec!["alpha", "beta"], "rooms: {rooms:?}");
    let r = s
        .request(Method::GET, &s.admin_url("/api/v1/load"), Some("x"), None)
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn shutdown_room_closes_clients_and_ends_the_worker() {
    let s = Server::default_server().await;
    let port = s.create_room("doomed").await;
    let pid = s.room_pid("doomed").await;
    let mut a = Client::guest(port, "alice").await;
    let mut b = Client::guest(port, "bob").await;

    let r = s.shutdown_room("doomed").await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"data":{"name":"doomed","message":"Shutting down"}})
    );
    for c in [&mut a, &mut b] {
        let (code, _reason) = c.expect_close().await;
        assert_eq!(code, 1001);
        assert!(
            c.skipped.iter().any(|f| f["type"] == "closing"),
            "no closing frame before the close: {:?}",
            c.skipped
        );
    }
    wait_for(Duration::from_secs(10), "the worker to exit", || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    wait_for(Duration::from_secs(5), "the port to be free", || async {
        port_bindable(port).then_some(())
    })
    .await;
    wait_for(
        Duration::from_secs(5),
        "the room to leave the list",
        || async { (!s.room_names().await.contains(&"doomed".to_owned())).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn shutdown_unknown_room() {
    let s = Server::default_server().await;
    let r = s.shutdown_room("ghost").await;
    r.expect(200);
    assert_eq!(
        r.data()["message"],
        "Either shutdown already or doesn't exist",
        "{}",
        r.text
    );
}

#[tokio::test]
async fn shutdown_room_with_wrong_key_does_nothing() {
    let s = Server::default_server().await;
    let port = s.create_room("kept").await;
    let pid = s.room_pid("kept").await;
    let mut a = Client::guest(port, "alice").await;
    let url = s.admin_url("/api/v1/room/kept/shutdown");
    for key in [None, Some("wrong"), Some(s.key.as_str())] {
        let r = s.request(Method::DELETE, &url, key, None).await;
        assert_eq!(r.status, 401, "key {key:?}: {}", r.text);
        assert_eq!(r.json, json!({"message":"Unauthorized"}));
    }
    // Still connected and served: a ping round trip proves it, and nothing
    // (no closing frame) came before the pong.
    let skipped = a.sync().await;
    assert!(skipped.is_empty(), "unexpected frames: {skipped:?}");
    assert!(pid_alive(pid));
    assert!(s.room_names().await.contains(&"kept".to_owned()));
    let mut b = Client::guest(port, "bob").await;
    b.sync().await;
}

#[tokio::test]
async fn shutdown_master_via_admin_api() {
    let mut s = Server::default_server().await;
    let p1 = s.create_room("r1").await;
    s.create_room("r2").await;
    let mut c = Client::guest(p1, "alice").await;
    let pids = s.remember_workers().await;
    assert_eq!(pids.len(), 2, "{pids:?}");

    let r = s.admin(Method::DELETE, "/api/v1/shutdown").await;
    assert_eq!(r.status, 202, "{}", r.text);
    let (code, _) = c.expect_close().await;
    assert_eq!(code, 1001);
    s.wait_exit(Duration::from_secs(15)).await;
    wait_for(Duration::from_secs(10), "every worker to exit", || async {
        pids.iter().all(|&p| !pid_alive(p)).then_some(())
    })
    .await;
    let left = s.leftover_processes();
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[tokio::test]
async fn shutdown_master_with_wrong_key_does_nothing() {
    let mut s = Server::default_server().await;
    let port = s.create_room("stay").await;
    let mut c = Client::guest(port, "alice").await;
    let url = s.admin_url("/api/v1/shutdown");
    for key in [None, Some("wrong"), Some(s.key.as_str())] {
        let r = s.request(Method::DELETE, &url, key, None).await;
        assert_eq!(r.status, 401, "key {key:?}: {}", r.text);
    }
    assert!(s.master_running());
    s.admin(Method::GET, "/api/v1/").await.expect(200);
    s.api(Method::GET, "/api/v1/rooms").await.expect(200);
    let skipped = c.sync().await;
    assert!(skipped.is_empty(), "{skipped:?}");
    assert!(s.master_running());
}

#[tokio::test]
async fn generated_keys_are_written_and_work() {
    let s = Server::start(ServerOpts::new().generated_keys()).await;
    let path = s.run_dir.join("keys.json");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "keys.json mode {mode:o}");
    let keys = s.read_keys_json();
    let key = keys["key"].as_str().unwrap();
    let admin_key = keys["admin_key"].as_str().unwrap();
    assert!(key.len() >= 16, "weak key {key:?}");
    assert!(admin_key.len() >= 16, "weak admin key {admin_key:?}");
    assert_ne!(key, admin_key);

    // `s.key`/`s.admin_key` were read from keys.json.
    s.create_room("gen").await;
    s.admin(Method::GET, "/api/v1/").await.expect(200);
    // The main key is not an admin key.
    let r = s
        .request(Method::GET, &s.admin_url("/api/v1/"), Some(key), None)
        .await;
    assert_eq!(r.status, 401);
}
