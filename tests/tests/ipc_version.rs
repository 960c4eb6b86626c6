//! A room worker that speaks another IPC version than its master (here: a
//! master restarted with a debug-build hook that fakes its version) is never
//! doubled: the room is listed `incompatible`, keeps serving on its port with
//! its one worker, and the catalog does not respawn it; a restart on purpose
//! replaces the worker with one of the master's version, linked again.

mod fault_common;

use std::path::Path;
use std::time::{Duration, Instant};

use chat_tests::procs::pid_alive;
use chat_tests::{Client, Relaunch, Server, ServerOpts, TIMEOUT};
use fault_common::{Api, pid_of, wait_room};

/// Live room workers of `room` under `run_dir` (their command line names
/// both).
fn workers_of(run_dir: &Path, room: &str) -> Vec<i32> {
    let dir = run_dir.as_os_str().as_encoded_bytes();
    chat_tests::procs::pids_mentioning(run_dir)
        .into_iter()
        .filter(|pid| {
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            let names_room = args
                .windows(2)
                .any(|w| w[0] == b"--room" && w[1] == room.as_bytes())
                || args
                    .iter()
                    .any(|a| *a == format!("--room={room}").as_bytes());
            names_room && cmd.windows(dir.len()).any(|w| w == dir)
        })
        .collect()
}

async fn wait_log(path: &Path, needle: &str, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {} within {bound:?}:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn another_ipc_version_is_listed_incompatible_never_doubled_and_a_restart_recovers() {
    let mut s = Server::start(ServerOpts::new()).await;
    let port = s.create_room("elder").await;
    let old = s.room_pid("elder").await;
    s.kill_master().await;

    s.start_again_with(
        "master2",
        Relaunch::new().env("CHAT_FAKE_IPC_VERSION", "9999"),
    )
    .await;
    let stderr = s.stderr_path.clone();
    let api = Api::new(&s);
    let room = wait_room(
        &api,
        "elder",
        Duration::from_secs(20),
        "listed incompatible",
        |r| r["status"] == "incompatible",
    )
    .await;
    assert_eq!(pid_of(&room), old, "the running worker is the one listed");
    assert_eq!(room["port"].as_u64(), Some(u64::from(port)));

    // Past the adoption window the catalog is reconciled: the room is not
    // started again while its worker lives.
    wait_log(&stderr, "room catalog reconciled", Duration::from_secs(20)).await;
    assert_eq!(
        workers_of(&s.run_dir, "elder"),
        vec![old],
        "one worker for the room"
    );
    let room = api.room("elder").await.expect("still listed");
    assert_eq!(room["status"], "incompatible", "{room}");
    // Both sides said it at warn, with both versions.
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        log.contains("speaks another IPC version")
            && log.contains(&format!("worker_version={}", chat_shared::ipc::IPC_VERSION)),
        "{log}"
    );
    assert!(
        s.logs().contains("master_version=9999"),
        "the worker logs both versions"
    );
    // It serves on.
    let mut c = Client::guest(port, "still-here").await;
    assert_eq!(c.welcome["type"], "welcome");
    c.close().await;

    // A restart on purpose: a worker of the master's version takes over.
    let (status, text, _) = api
        .try_request(
            reqwest::Method::POST,
            true,
            "/api/v1/rooms/elder/restart",
            None,
        )
        .await
        .expect("restart answered");
    assert!((200..300).contains(&status), "restart: {status} {text}");
    let room = wait_room(
        &api,
        "elder",
        Duration::from_secs(20),
        "restarted and linked",
        |r| r["status"] == "ready" && pid_of(r) != old && pid_of(r) > 0,
    )
    .await;
    let new = pid_of(&room);
    assert!(!pid_alive(old), "the old worker is gone");
    assert_eq!(workers_of(&s.run_dir, "elder"), vec![new]);
    let port = room["port"].as_u64().unwrap() as u16;
    let mut c = Client::guest(port, "linked").await;
    let seq = tokio::time::timeout(TIMEOUT, c.say_acked("stored again"))
        .await
        .expect("acked: the new worker is linked");
    assert!(seq > 0);
}

/// A room of the catalog whose port still serves the room (a worker that
/// cannot even say hello; here the test itself answers as one) is not
/// started a second time by the catalog reconciliation.
#[tokio::test]
async fn a_catalog_room_still_served_on_its_port_is_not_respawned() {
    let mut s = Server::start(ServerOpts::new()).await;
    let port = s.create_room("unlinked").await;
    let old = s.room_pid("unlinked").await;
    // The catalog records the room after the create answers: the restarted
    // master can only find it there once it is written.
    wait_log(
        &s.stderr_path,
        "room recorded in the catalog",
        Duration::from_secs(20),
    )
    .await;
    s.kill_master().await;
    chat_tests::procs::sigkill(old);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(old) {
        assert!(Instant::now() < deadline, "the worker survived SIGKILL");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Something answers on the room's port as its worker would.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the room's port");
    let fake = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut c, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf).await;
            let _ = c
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 8\r\n\r\nunlinked")
                .await;
        }
    });
    s.start_again("master2").await;
    let stderr = s.stderr_path.clone();
    wait_log(&stderr, "room catalog reconciled", Duration::from_secs(20)).await;
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(log.contains("not respawning"), "{log}");
    assert!(
        workers_of(&s.run_dir, "unlinked").is_empty(),
        "a second worker was started"
    );
    let api = Api::new(&s);
    assert!(
        api.rooms()
            .await
            .is_some_and(|r| r.iter().all(|r| r["name"] != "unlinked"))
    );
    fake.abort();
}
