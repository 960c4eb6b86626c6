//! Attacks on the listeners (finding 2 of issue 12): slowloris on each
//! listener, stalled bodies, an idle-connection flood that must leave the
//! admin API answering, and the per-address rate of new connections.
//!
//! Each test names the defence it relies on and why it fails without it.

mod attack_common;

use std::time::Duration;

use attack_common::{ENDLESS_HEADERS, Fate, Witness, dribble, fate, raw_get, set_nofile, tcp};
use chat_tests::{Server, ServerOpts};
use tokio::io::AsyncWriteExt;

/// Slowloris: headers a byte every 200 ms never end; the bound is far
/// beyond the timeout, and far below "forever".
const SLOW_GAP: Duration = Duration::from_millis(200);
const BOUND: Duration = Duration::from_secs(8);

/// Defence: the header-read timeout (`--header-timeout 1s`) of the room API.
/// Without it the trickle keeps the connection open (the idle timeout never
/// fires: bytes keep moving) past `BOUND`, and `dribble` returns false.
#[tokio::test]
async fn slowloris_on_the_room_api_is_cut_off() {
    let s = Server::start(ServerOpts::new().args(["--header-timeout=1s"])).await;
    let mut c = tcp(s.port).await;
    assert!(
        dribble(&mut c, ENDLESS_HEADERS, SLOW_GAP, BOUND).await,
        "a slowloris kept a room API connection open"
    );
    // The API still answers others.
    let ok = raw_get(s.port, "/api/v1/health", None, BOUND).await;
    assert!(ok.is_some_and(|r| r.starts_with("HTTP/1.1 200")));
}

/// Defence: the header-read timeout of the admin API. Same reasoning.
#[tokio::test]
async fn slowloris_on_the_admin_api_is_cut_off() {
    let s = Server::start(ServerOpts::new().args(["--header-timeout=1s"])).await;
    let mut c = tcp(s.admin_port).await;
    assert!(
        dribble(&mut c, ENDLESS_HEADERS, SLOW_GAP, BOUND).await,
        "a slowloris kept an admin API connection open"
    );
}

/// Defence: the handshake timeout of room ports (`--handshake-timeout 1s`;
/// the header timeout is set far beyond the bound so only the handshake
/// timeout can end it). Without it the trickle outlives `BOUND`.
#[tokio::test]
async fn slowloris_on_a_room_port_is_cut_off() {
    let s =
        Server::start(ServerOpts::new().args(["--header-timeout=60s", "--handshake-timeout=1s"]))
            .await;
    let port = s.create_room("slow").await;
    let mut w = Witness::guest(&s, "slow", port).await;
    let mut c = tcp(port).await;
    assert!(
        dribble(
            &mut c,
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-A: aaaaaaaaaaaaaaaaaaaaaaaa",
            SLOW_GAP,
            BOUND
        )
        .await,
        "a slowloris kept a room port connection open"
    );
    // A silent connection (no byte at all) is closed as well.
    let mut silent = tcp(port).await;
    assert!(matches!(fate(&mut silent, BOUND).await, Fate::Closed(_)));
    // The room served its members all along and lost nothing.
    w.survived(&s).await;
}

/// Defence: the idle timeout (`--idle-timeout 1s`). The headers are complete
/// (the header timeout no longer applies) and the body stalls; without the
/// idle timeout the connection is still open at `BOUND`.
#[tokio::test]
async fn a_stalled_body_is_cut_off() {
    let s = Server::start(ServerOpts::new().args(["--idle-timeout=1s"])).await;
    let mut c = tcp(s.port).await;
    let head = format!(
        "POST /api/v1/room/stalled HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\":",
        s.key
    );
    c.write_all(head.as_bytes()).await.unwrap();
    assert!(
        matches!(fate(&mut c, BOUND).await, Fate::Closed(_)),
        "a stalled request body kept its connection open"
    );
}

/// Defence: the room API's connection cap (`--max-api-connections 100`),
/// separate from the admin API's. The master's open-file limit is lowered to
/// 300, then 500 idle connections are opened to the room API. Without the
/// cap they take every file descriptor and the admin API cannot accept: its
/// request gets no answer and the test fails.
#[tokio::test]
async fn an_idle_flood_leaves_the_admin_api_answering() {
    let s = Server::start(ServerOpts::new().args([
        "--max-api-connections=100",
        "--max-new-connections-per-ip=0",
        "--header-timeout=60s",
    ]))
    .await;
    set_nofile(s.pid, 300);
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(tcp(s.port).await);
    }
    let r = raw_get(s.admin_port, "/api/v1/", Some(&s.admin_key), BOUND).await;
    assert!(
        r.as_deref().is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "the admin API did not answer during the flood: {r:?}"
    );
    // The room API itself is saturated: a new connection is closed at once,
    // without an answer.
    let mut extra = tcp(s.port).await;
    assert_eq!(fate(&mut extra, BOUND).await, Fate::Closed(Vec::new()));
    // Once the flood leaves, it answers again.
    drop(idle);
    let mut answered = false;
    for _ in 0..50 {
        if raw_get(s.port, "/api/v1/health", None, BOUND)
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the room API did not recover after the flood");
}

/// Defence: new connections per address and second
/// (`--max-new-connections-per-ip 5`, loopback not trusted as a proxy).
/// 40 connections opened at once: those over the rate are closed without an
/// answer while admitted ones stay open (until their header timeout of 60 s).
/// Without the rate, every connection stays open and `refused` is 0.
#[tokio::test]
async fn new_connections_per_address_are_capped() {
    let s = Server::start(ServerOpts::new().args([
        "--max-new-connections-per-ip=5",
        "--trusted-proxies=",
        "--header-timeout=60s",
    ]))
    .await;
    let mut conns = Vec::new();
    for _ in 0..40 {
        conns.push(tcp(s.port).await);
    }
    let mut refused = 0;
    for c in &mut conns {
        if let Fate::Closed(_) = fate(c, Duration::from_millis(300)).await {
            refused += 1;
        }
    }
    // 40 connects span a few one-second windows at most: at most 5 each.
    assert!(
        refused >= 20,
        "only {refused} of 40 connections were refused"
    );
    assert!(refused < 40, "every connection was refused");
}
