//! A room created again right after it was shut down: the create waits for
//! the old worker to stop and answers the port of a fresh room that accepts
//! connections, never the port of the room being stopped.

use std::time::Duration;

use chat_tests::procs::{pid_alive, signal};
use chat_tests::{Client, Server, ServerOpts, within};
use nix::sys::signal::Signal;

/// Shuts a room down through the admin API and creates the same name at
/// once, many times; every answer's port must take a WebSocket join.
#[tokio::test]
async fn create_right_after_shutdown_answers_a_live_port() {
    let s = Server::default_server().await;
    let name = "again";
    let mut port = s.create_room(name).await;
    within(
        Duration::from_secs(120),
        "20 shutdown + create rounds",
        async {
            for round in 0..20 {
                let mut c = Client::guest(port, &format!("u{round}")).await;
                let r = s.shutdown_room(name).await;
                assert_eq!(r.status, 202, "round {round}: shutdown: {}", r.text);
                let r = s.create_room_with(name, None).await;
                assert_eq!(r.status, 200, "round {round}: create: {}", r.text);
                let answered = r.data()["port"].as_u64().unwrap_or(0);
                assert!(answered > 0, "round {round}: no port: {}", r.text);
                port = answered as u16;
                // The old room's client is closed (the room really stopped).
                let (code, _) = c.expect_close().await;
                assert_eq!(code, 1001, "round {round}: old room's close code");
                let fresh = Client::try_connect(port, &format!("name=n{round}")).await;
                let mut fresh = fresh.unwrap_or_else(|e| {
                    panic!(
                        "round {round}: the create answered port {port} ({}), which refuses: {e}",
                        r.text
                    )
                });
                let welcome = fresh.recv_json().await;
                assert_eq!(welcome["type"], "welcome", "round {round}: {welcome}");
                let listed = s.room_names().await;
                assert!(
                    listed.iter().any(|n| n == name),
                    "round {round}: the room created is not listed: {listed:?}"
                );
            }
        },
    )
    .await;
}

/// The same, waiting for the old port to close before creating again (the
/// measured case: the room is gone from the listing, its port is closed).
#[tokio::test]
async fn create_after_the_port_closed_starts_a_fresh_room() {
    let s = Server::default_server().await;
    let name = "later";
    let mut port = s.create_room(name).await;
    within(
        Duration::from_secs(120),
        "10 shutdown, wait, create rounds",
        async {
            for round in 0..10 {
                let old_pid = s.room_pid(name).await;
                let mut c = Client::guest(port, &format!("u{round}")).await;
                let r = s.shutdown_room(name).await;
                assert_eq!(r.status, 202, "round {round}: shutdown: {}", r.text);
                let _ = c.expect_close_or_end(Duration::from_secs(10)).await;
                let r = s.create_room_with(name, None).await;
                assert_eq!(r.status, 200, "round {round}: create: {}", r.text);
                port = r.data()["port"].as_u64().unwrap_or(0) as u16;
                assert!(port > 0, "round {round}: no port: {}", r.text);
                let fresh = Client::try_connect(port, &format!("name=n{round}")).await;
                assert!(
                    fresh.is_ok(),
                    "round {round}: port {port} refuses: {:?}",
                    fresh.err()
                );
                let pid = s.room_pid(name).await;
                assert_ne!(pid, old_pid, "round {round}: the old worker answered");
            }
        },
    )
    .await;
}

/// A room whose worker hangs (stopped by SIGSTOP) when it is asked to shut
/// down: the master kills it after the grace period, and a create of the
/// same name meanwhile waits for that, then answers a fresh room's port.
#[tokio::test]
async fn create_after_a_hung_shutdown_waits_for_the_kill() {
    let s = Server::start(ServerOpts::new().args(["--shutdown-grace", "1s"])).await;
    let name = "stuck";
    s.create_room(name).await;
    let old_pid = s.room_pid(name).await;
    signal(old_pid, Signal::SIGSTOP);
    let r = s.shutdown_room(name).await;
    assert_eq!(r.status, 202, "shutdown: {}", r.text);
    // The create outlasts the harness client's timeout: a client of its own.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let r = http
        .post(s.api_url(&format!("/api/v1/room/{name}")))
        .header("X-API-Key", &s.key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create after a hung shutdown: {e}"));
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert_eq!(status, 200, "create after a hung shutdown: {text}");
    assert!(
        !pid_alive(old_pid),
        "the create answered while the hung worker {old_pid} was alive: {text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let port = body["data"]["port"].as_u64().unwrap_or(0) as u16;
    assert!(port > 0, "no port: {text}");
    let mut c = Client::try_connect(port, "name=fresh")
        .await
        .unwrap_or_else(|e| panic!("port {port} ({text}) refuses: {e}"));
    let welcome = c.recv_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_ne!(s.room_pid(name).await, old_pid);
}
