//! Start, stop, time limits and heartbeats.

use std::os::unix::fs::FileTypeExt;
use std::time::Duration;

use chat_tests::procs::pid_alive;
use chat_tests::{Client, Server, ServerOpts, wait_for};
use serde_json::json;

fn sockets_in(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_socket() {
            out.push(e.path().display().to_string());
        } else if ft.is_dir() {
            out.extend(sockets_in(&e.path()));
        }
    }
    out
}

#[tokio::test]
async fn master_json_describes_the_master() {
    let s = Server::default_server().await;
    // Server::start checked pid, port and admin_port already.
    assert_eq!(s.master_json["pid"], s.pid);
    assert!(pid_alive(s.pid));
}

#[tokio::test]
async fn sigterm_stops_everything() {
    let mut s = Server::default_server().await;
    let p1 = s.create_room("one").await;
    let p2 = s.create_room("two").await;
    let mut a = Client::guest(p1, "alice").await;
    let mut b = Client::guest(p2, "bob").await;
    let pids = s.remember_workers().await;
    assert_eq!(pids.len(), 2, "workers: {pids:?}");
    assert!(
        !sockets_in(&s.run_dir).is_empty(),
        "expected the master's socket in the run dir"
    );

    let status = s.stop_gracefully().await;
    for c in [&mut a, &mut b] {
        let (code, _) = c.expect_close().await;
        assert_eq!(code, 1001);
    }
    assert!(
        status.success(),
        "the master exited with {status} after SIGTERM"
    );
    wait_for(Duration::from_secs(10), "every worker to exit", || async {
        pids.iter().all(|&p| !pid_alive(p)).then_some(())
    })
    .await;
    let left = s.leftover_processes();
    assert!(left.is_empty(), "processes left: {left:?}");
    let socks = sockets_in(&s.run_dir);
    assert!(socks.is_empty(), "socket files left: {socks:?}");
}

#[tokio::test]
async fn time_limit_ends_the_room() {
    let s = Server::default_server().await;
    let port = s
        .create_room_settings("short", Some(json!({"time_limit_secs": 2})))
        .await;
    let pid = s.room_pid("short").await;
    let mut c = Client::guest(port, "alice").await;
    let (code, _) = c
        .expect_close_or_end(Duration::from_secs(8))
        .await
        .unwrap_or_else(|| panic!("no close frame; frames: {:?}", c.skipped));
    assert_eq!(code, 1001);
    let closing: Vec<_> = c
        .skipped
        .iter()
        .filter(|f| f["type"] == "closing")
        .collect();
    assert!(!closing.is_empty(), "no closing frame: {:?}", c.skipped);
    wait_for(
        Duration::from_secs(10),
        "the room to leave the list",
        || async { (!s.room_names().await.contains(&"short".to_owned())).then_some(()) },
    )
    .await;
    wait_for(Duration::from_secs(10), "the worker to exit", || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    let r = s.room_info("short").await;
    assert_eq!(r.status, 404, "{}", r.text);
}

#[tokio::test]
async fn reading_client_survives_heartbeats() {
    let s = Server::start(ServerOpts::new().args(["--ping-interval", "200ms"])).await;
    let port = s.create_room("beat").await;
    let mut c = Client::guest(port, "alice").await;
    // Read (and so answer pings) for ten ping intervals.
    c.expect_silence(Duration::from_millis(2000)).await;
    let skipped = c.sync().await;
    assert!(skipped.is_empty(), "{skipped:?}");
}

#[tokio::test]
async fn silent_client_is_dropped_after_missed_pings() {
    let s = Server::start(ServerOpts::new().args(["--ping-interval", "200ms"])).await;
    let port = s.create_room("beat").await;
    let mut watcher = Client::guest(port, "watcher").await;
    let mut silent = Client::guest(port, "silent").await;
    let silent_id = silent.id();
    watcher.recv_type("joined").await;
    // `silent` reads nothing, so it answers no ping; the watcher keeps
    // reading and sees it leave.
    let left = tokio::time::timeout(Duration::from_secs(5), watcher.recv_type("left")).await;
    let left = left.expect("the silent client was not dropped");
    assert_eq!(left["user"]["id"], silent_id.as_str());
    if let Some((code, _)) = silent.expect_close_or_end(Duration::from_secs(5)).await {
        assert_eq!(code, 4008);
    }
}

#[tokio::test]
async fn client_close_handshake_completes() {
    let s = Server::default_server().await;
    let port = s.create_room("bye").await;
    let mut watcher = Client::guest(port, "watcher").await;
    let mut c = Client::guest(port, "leaver").await;
    watcher.recv_type("joined").await;
    // The client starts the close handshake: the server must answer with
    // its close frame (or at least end the connection).
    let answered = c.close().await;
    watcher.recv_type("left").await;
    assert!(
        answered,
        "the server neither answered the client's close frame nor closed the connection within 5 s"
    );
}

#[tokio::test]
async fn stop_is_quick_after_clients_left() {
    // A worker must not wait for connections that are already gone.
    let mut s = Server::default_server().await;
    let port = s.create_room("quick").await;
    let pid = s.room_pid("quick").await;
    for i in 0..3 {
        let mut c = Client::guest(port, &format!("u{i}")).await;
        c.close().await;
    }
    let c = Client::guest(port, "dropper").await;
    drop(c);
    let start = std::time::Instant::now();
    let r = s.shutdown_room("quick").await;
    assert_eq!(r.status, 202, "{}", r.text);
    wait_for(Duration::from_secs(10), "the worker to exit", || async {
        (!pid_alive(pid)).then_some(())
    })
    .await;
    // The wait above is bounded; how fast is for the benchmarks.
    eprintln!("the worker exited after {:?}", start.elapsed());
    s.stop_gracefully().await;
}

#[tokio::test]
async fn worker_disconnect_of_dropped_client() {
    // A client that vanishes (TCP closed, no close frame) leaves the room.
    let s = Server::default_server().await;
    let port = s.create_room("drop").await;
    let mut watcher = Client::guest(port, "watcher").await;
    let c = Client::guest(port, "gone").await;
    let id = c.id();
    watcher.recv_type("joined").await;
    drop(c);
    let left = watcher.recv_type("left").await;
    assert_eq!(left["user"]["id"], id.as_str());
}
