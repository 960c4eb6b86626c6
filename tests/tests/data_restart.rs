//! Stored data across restarts: history survives a restart of the whole
//! server (embedded redb and MongoDB), and a room crash loses no acked
//! message.
//!
//! The MongoDB tests need nx-27017 (`NX27017_BIN`, else
//! `<workspace>/.venv/bin/nx-27017`; `tests/run` installs it). They fail when
//! it cannot start: they are never skipped.

mod data_common;
mod data_obey;

use std::time::Duration;

use chat_tests::{Client, Server, ServerOpts, procs};
use data_common::{Nx, history, history_all, seq_of, seq_texts};
use data_obey::*;
use serde_json::json;

// ---------------------------------------------------------------------------
// 1. History survives a restart of the whole server

enum Backend {
    Redb,
    Mongo,
}

async fn history_survives_a_server_restart(backend: Backend) {
    let mut opts = ServerOpts::new().room_port_count(10);
    let nx = match backend {
        Backend::Redb => None,
        Backend::Mongo => {
            let nx = Nx::start_file().await;
            opts = opts.store(nx.uri("restart_db"));
            Some(nx)
        }
    };

    let mut m = Server::start(opts).await;
    let port = m.create_room("keep").await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    alice.recv_type("joined").await;
    let mut said = say_n(&mut alice, "before restart, alice", 4).await;
    said.extend(say_n(&mut bob, "before restart, bob", 2).await);
    said.extend(say_n(&mut alice, "before restart, alice again", 1).await);
    let seqs: Vec<u64> = said.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>(), "acked seqs");
    let last = 7;

    // SIGTERM: rooms close (1001), the master exits cleanly.
    let status = m.stop_within(Duration::from_secs(20)).await;
    assert!(status.success(), "master exited with {status}");
    let (code, reason) = alice
        .expect_close_or_end(Duration::from_secs(5))
        .await
        .unwrap_or((0, "no close frame".into()));
    assert_eq!(code, 1001, "alice's close at shutdown: {reason}");

    // A new master on the same data (same run dir, data dir, ports, store).
    m.start_again("master2").await;
    let port2 = m.create_room("keep").await;
    let mut carol = Client::guest(port2, "carol").await;
    let w = &carol.welcome;
    assert_eq!(w["resumed"], false, "{w}");
    assert_eq!(
        w["seq"].as_u64(),
        Some(last),
        "welcome.seq after restart: {w}"
    );
    let hist = w["history"].as_array().expect("welcome.history").clone();
    assert_eq!(
        seq_texts(&hist),
        said,
        "welcome.history after the restart: {w}"
    );
    assert_eq!(hist[4]["from"]["name"], "bob", "{}", hist[4]);
    assert_eq!(hist[0]["from"]["name"], "alice", "{}", hist[0]);

    // seq continues.
    let next = carol.say_acked("after restart").await;
    assert_eq!(next, last + 1, "first seq after the restart");
    said.push((next, "after restart".into()));
    let mut dave = Client::guest(port2, "dave").await;
    assert_eq!(dave.welcome["seq"].as_u64(), Some(next));

    // History paging returns everything, once, in order.
    let all = history_all(&mut dave, 3).await;
    assert_eq!(seq_texts(&all), said, "paged history after the restart");
    let (page, more) = history(&mut dave, Some(4), 2).await;
    assert_eq!(seq_texts(&page), said[1..3].to_vec());
    assert!(more);

    drop(m);
    drop(nx);
}

#[tokio::test]
async fn history_survives_a_server_restart_redb() {
    history_survives_a_server_restart(Backend::Redb).await;
}

#[tokio::test]
async fn history_survives_a_server_restart_mongodb() {
    history_survives_a_server_restart(Backend::Mongo).await;
}

// ---------------------------------------------------------------------------
// 7. A room crash loses no acked message

#[tokio::test]
async fn a_room_crash_loses_no_acked_message() {
    let s = Server::default_server().await;
    let port = s.create_room("crash").await;
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    alice.recv_type("joined").await;
    let mut said = say_n(&mut alice, "first", 4).await;
    for (seq, _) in &said {
        assert_eq!(seq_of(&bob.recv_type("message").await), *seq);
    }
    let since = 4;
    let epoch = bob.welcome["epoch"].as_u64().expect("epoch");
    assert!(bob.close().await);
    said.extend(say_n(&mut alice, "while bob is away", 5).await);
    let last = said.last().unwrap().0;
    assert_eq!(last, 9);

    // SIGKILL the worker.
    let info = admin_room(&s, "crash").await;
    let old_pid = info["pid"].as_i64().expect("pid");
    assert!(old_pid > 0, "{info}");
    procs::sigkill(old_pid as i32);
    alice.expect_close_or_end(Duration::from_secs(5)).await;
    let info = wait_new_worker(&s, "crash", old_pid, Duration::from_secs(10)).await;
    assert_eq!(info["port"].as_u64(), Some(u64::from(port)), "{info}");

    // Resuming from before the crash replays exactly what came after.
    let mut bob = Client::join(port, &format!("name=bob&since={since}&epoch={epoch}")).await;
    let w = bob.welcome.clone();
    assert_eq!(w["resumed"], true, "resume after the crash: {w}");
    assert_eq!(w["epoch"].as_u64(), Some(epoch), "{w}");
    assert_eq!(w["seq"].as_u64(), Some(last), "{w}");
    assert_eq!(w["history"], json!([]), "{w}");
    let mut replay = Vec::new();
    for _ in since..last {
        replay.push(bob.recv_type("message").await);
    }
    assert_eq!(
        seq_texts(&replay),
        said[since as usize..].to_vec(),
        "replay"
    );
    let extra = bob.sync().await;
    assert!(
        !extra.iter().any(|f| f["type"] == "message"),
        "more than the messages after since: {extra:?}"
    );

    // seq continues after the last acked one.
    let mut carol = Client::guest(port, "carol").await;
    assert_eq!(carol.welcome["seq"].as_u64(), Some(last));
    assert_eq!(
        seq_texts(carol.welcome["history"].as_array().unwrap()),
        said,
        "welcome.history after the crash"
    );
    let seq = carol.say_acked("after the crash").await;
    assert_eq!(seq, last + 1);
    let m = bob.recv_type("message").await;
    assert_eq!(seq_of(&m), last + 1);
    said.push((seq, "after the crash".into()));
    let all = history_all(&mut carol, 4).await;
    assert_eq!(seq_texts(&all), said, "paged history after the crash");
    let info = admin_room(&s, "crash").await;
    assert_eq!(info["restarts"], 1, "{info}");
}
