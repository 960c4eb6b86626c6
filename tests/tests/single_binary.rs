//! One executable runs everything: the master spawns its rooms from its own
//! binary (`/proc/self/exe room ...`), so a `chatserver` file alone on a host
//! runs rooms; `--worker-bin` still selects a separate room binary; a
//! graceful restart onto a replaced binary runs the new file for the master
//! and the rooms spawned after it, while older rooms keep running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_tests::procs::{self, pid_alive};
use chat_tests::server::chatserver_bin;
use chat_tests::{Client, Server, ServerOpts, wait_for};
use nix::sys::signal::Signal;

/// A temporary folder holding only a copy of the built `chatserver`.
fn lone_chatserver() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("chat-lone-")
        .tempdir()
        .expect("tempdir");
    let bin = dir.path().join("chatserver");
    std::fs::copy(chatserver_bin(), &bin).expect("copying chatserver");
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read_dir")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(entries, ["chatserver"], "the folder holds only chatserver");
    (dir, bin)
}

/// `/proc/<pid>/cmdline`, split at NULs.
fn cmdline(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_else(|e| panic!("cannot read the command line of {pid}: {e}"));
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The executable of `pid`, as procfs shows it (" (deleted)" after the file
/// was replaced).
fn exe(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .unwrap_or_else(|e| panic!("cannot read the executable of {pid}: {e}"))
        .display()
        .to_string()
}

/// The process name (`comm`) of `pid`.
fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_else(|e| panic!("cannot read the name of {pid}: {e}"))
        .trim()
        .to_owned()
}

/// A guest joins, another guest joins, one says something: it is acked and
/// delivered.
async fn chat_works(port: u16, text: &str) {
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    let seq = alice.say_acked(text).await;
    let msg = bob.recv_type("message").await;
    assert_eq!(msg["seq"], seq, "{msg}");
    assert_eq!(msg["text"], text, "{msg}");
    assert_eq!(msg["from"]["name"], "alice", "{msg}");
}

#[tokio::test]
async fn a_lone_chatserver_file_runs_rooms() {
    let (_dir, bin) = lone_chatserver();
    let mut s = Server::start(ServerOpts::new().bin(&bin)).await;
    assert_eq!(exe(s.pid), bin.display().to_string());

    let port = s.create_room("lonely").await;
    chat_works(port, "hello from one binary").await;
    // The room runs the lone copy: no other executable was there to run.
    let room = s.room_pid("lonely").await;
    assert_eq!(exe(room), bin.display().to_string());

    assert!(s.stop_gracefully().await.success());
    wait_for(Duration::from_secs(10), "the room to exit", || async {
        (!pid_alive(room)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn rooms_are_chatserver_room_processes() {
    let s = Server::default_server().await;
    s.create_room("roles").await;
    let room = s.room_pid("roles").await;
    let args = cmdline(room);
    assert_eq!(args.get(1).map(String::as_str), Some("room"), "{args:?}");
    assert!(
        args.first().is_some_and(|a| a.ends_with("chatserver")),
        "{args:?}"
    );
    // `--room=<name>`: a name can never pass for a flag.
    assert!(args.iter().any(|a| a == "--room=roles"), "{args:?}");
    // The master's own executable, named for its role.
    assert_eq!(exe(room), exe(s.pid));
    assert_eq!(comm(room), "chatroom");
    assert_eq!(comm(s.pid), "chatserver");
    // The master's role is untouched.
    assert!(!cmdline(s.pid).iter().any(|a| a == "room"));
}

#[tokio::test]
async fn worker_bin_selects_a_separate_room_binary() {
    let chatroom = chatserver_bin().with_file_name("chatroom");
    assert!(
        chatroom.is_file(),
        "{} does not exist; build it with cargo build -p chatroom",
        chatroom.display()
    );
    let s = Server::start(ServerOpts::new().args(["--worker-bin".to_owned(), path_str(&chatroom)]))
        .await;
    let port = s.create_room("separate").await;
    let room = s.room_pid("separate").await;
    assert_eq!(
        exe(room),
        path_str(&std::fs::canonicalize(&chatroom).unwrap())
    );
    assert!(!cmdline(room).iter().any(|a| a == "room"));
    chat_works(port, "hello from chatroom").await;
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").to_owned()
}

#[tokio::test]
async fn a_restart_onto_a_replaced_binary_spawns_new_rooms_from_it() {
    let (_dir, bin) = lone_chatserver();
    let s = Server::start(ServerOpts::new().bin(&bin)).await;
    let old_port = s.create_room("old").await;
    let old_pid = s.room_pid("old").await;
    let mut alice = Client::guest(old_port, "alice").await;
    let before = s.started_at().await.expect("the master answers");

    // An upgrade: a new file takes the old one's name (the old inode lives on
    // in the running processes).
    let fresh = bin.with_file_name("chatserver.new");
    std::fs::copy(chatserver_bin(), &fresh).expect("copying the new binary");
    std::fs::rename(&fresh, &bin).expect("installing the new binary");
    assert!(exe(s.pid).ends_with(" (deleted)"), "{}", exe(s.pid));

    procs::signal(s.pid, Signal::SIGHUP);
    wait_for(
        Duration::from_secs(20),
        "the master to restart and adopt the old room",
        || async {
            let now = s.started_at().await?;
            if now == before {
                return None;
            }
            let room = s.room_info("old").await;
            (room.data()["pid"] == old_pid && room.data()["status"] == "ready").then_some(())
        },
    )
    .await;
    // The master runs the new file; the old room still runs the old one.
    assert_eq!(exe(s.pid), bin.display().to_string());
    assert!(exe(old_pid).ends_with(" (deleted)"), "{}", exe(old_pid));

    // A room created now runs the new file.
    let new_port = s.create_room("new").await;
    let new_pid = s.room_pid("new").await;
    assert_eq!(exe(new_pid), bin.display().to_string());
    chat_works(new_port, "hello from the new binary").await;

    // The old room kept its client and still acks.
    alice.say_acked("still here").await;
    assert!(pid_alive(old_pid));
}
