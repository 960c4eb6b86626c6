//! A room created again right after it was shut down: the create waits for
//! the old worker to stop and answers the port of a fresh room that accepts
//! connections, never the port of the room being stopped.

use std::time::Duration;

use chat_tests::{Client, Server, within};

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
