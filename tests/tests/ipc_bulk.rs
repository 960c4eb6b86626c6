//! IPC under two-way bulk load keeps its heartbeats: one room's link to the
//! master carries multi-megabyte transfers in both directions at once (the
//! room's outbox sends batches of long messages up while the master sends
//! pages of long stored messages down), with a short heartbeat interval.
//! The master must never find the room silent: no relink, no restart, no
//! IPC error, every message acked and every page complete.

use std::collections::HashMap;
use std::time::Duration;

use chat_tests::{Client, Event, Server, ServerOpts, wait_for};
use reqwest::Method;
use serde_json::{Value, json};

/// Characters per message (the room allows 8000).
const TEXT_LEN: usize = 7000;
/// Messages stored before the load, read back as history during it.
const SEED: usize = 300;
/// Seeding users (each has its own rate bucket).
const SEEDERS: usize = 6;
/// Users saying long messages during the load, and messages each: about
/// 3.4 MB from the room to the master.
const WRITERS: usize = 8;
const PER_WRITER: usize = 60;
/// Users reading history pages of 100 long messages during the load, and
/// pages each: about 17 MB from the master to the room.
const READERS: usize = 3;
const PAGES: usize = 8;
const PAGE: u64 = 100;
/// IPC heartbeats every 500 ms: a side silent for 2 s is dead.
const HEARTBEAT: &str = "500ms";
/// Shortest time between two `say` + `ping` rounds of one client (a
/// connection may send 50 frames a second).
const ROUND: Duration = Duration::from_millis(45);

fn text(tag: &str, k: usize) -> String {
    let head = format!("{tag}-{k}:");
    let fill = char::from(b'a' + u8::try_from(k % 26).unwrap_or(0));
    let mut t = head.clone();
    t.extend(std::iter::repeat_n(fill, TEXT_LEN - head.len()));
    t
}

/// Says `count` long messages, one `say` + `ping` round at a time, waiting
/// out rate limits, then reads until every one is acked; client id → seq.
async fn say_all(mut c: Client, tag: String, count: usize) -> HashMap<String, u64> {
    let mut acked = HashMap::new();
    let note = |v: &Value, acked: &mut HashMap<String, u64>| {
        if v["type"] == "ack" {
            let cid = v["client_id"].as_str().expect("ack.client_id").to_owned();
            let seq = v["seq"].as_u64().expect("ack.seq");
            assert!(acked.insert(cid, seq).is_none(), "{tag}: acked twice: {v}");
        }
    };
    let mut next = tokio::time::Instant::now();
    for k in 0..count {
        loop {
            tokio::time::sleep_until(next).await;
            next = tokio::time::Instant::now() + ROUND;
            c.send_json(
                json!({"type":"say","text":text(&tag, k),"client_id":format!("{tag}-{k}")}),
            )
            .await;
            c.send_json(json!({"type":"ping"})).await;
            let mut refused = None;
            loop {
                match c.next_event(Duration::from_secs(30)).await {
                    Event::Json(v) if v["type"] == "pong" => break,
                    Event::Json(v) if v["type"] == "error" => refused = Some(v),
                    Event::Json(v) => note(&v, &mut acked),
                    other => panic!("{tag}: waiting for pong, got {other:?}"),
                }
            }
            match refused {
                None => break,
                Some(e) if e["code"] == "rate_limited" => {
                    let ms = e["retry_after_ms"].as_u64().unwrap_or(50);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Some(e) => panic!("{tag}: message {k} refused: {e}"),
            }
        }
    }
    while acked.len() < count {
        match c.next_event(Duration::from_secs(60)).await {
            Event::Json(v) => note(&v, &mut acked),
            other => panic!("{tag}: {} of {count} acked, then {other:?}", acked.len()),
        }
    }
    acked
}

/// Reads `PAGES` pages of stored history, each of `PAGE` long messages
/// older than `newest`, and checks each is complete and in order.
async fn read_pages(mut c: Client, who: usize, newest: u64) {
    for p in 0..PAGES {
        // Pages over the whole seed, none of it in the room's memory.
        let before = newest - (p as u64 * 23) % (newest - PAGE);
        c.send_json(json!({"type":"history","before":before,"limit":PAGE}))
            .await;
        let page = loop {
            match c.next_event(Duration::from_secs(60)).await {
                Event::Json(v) if v["type"] == "history" => break v,
                Event::Json(v) if v["type"] == "error" => {
                    panic!("reader {who}: page {p} refused: {v}")
                }
                Event::Json(_) => {}
                other => panic!("reader {who}: waiting for page {p}, got {other:?}"),
            }
        };
        let messages = page["messages"].as_array().expect("history.messages");
        let seqs: Vec<u64> = messages.iter().filter_map(|m| m["seq"].as_u64()).collect();
        let want: Vec<u64> = (before - PAGE..before).collect();
        assert_eq!(seqs, want, "reader {who}: page {p} before {before}");
        for m in messages {
            let len = m["text"].as_str().map_or(0, |t| t.chars().count());
            assert_eq!(
                len, TEXT_LEN,
                "reader {who}: a cut message: seq {}",
                m["seq"]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_under_two_way_bulk_load_keeps_its_heartbeats() {
    let args = [
        "--ipc-heartbeat",
        HEARTBEAT,
        "--outbound-queue-bytes",
        "33554432",
    ];
    let s = Server::start(ServerOpts::new().args(args)).await;
    let port = s
        .create_room_settings(
            "bulk",
            Some(json!({"max_text_len": 8000, "history_size": 10})),
        )
        .await;
    let pid = s.room_pid("bulk").await;

    // Seed: stored messages to read back during the load.
    let mut seeders = Vec::new();
    for u in 0..SEEDERS {
        let c = Client::guest(port, &format!("seed{u}")).await;
        seeders.push(tokio::spawn(say_all(c, format!("seed{u}"), SEED / SEEDERS)));
    }
    let mut newest = 0;
    for t in seeders {
        let acked = t.await.expect("seeder");
        newest = newest.max(acked.values().copied().max().unwrap_or(0));
    }
    assert!(newest >= SEED as u64, "seeded up to {newest}");

    // The load: writers and readers in the same room at once.
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    let mut clients = Vec::new();
    for u in 0..WRITERS {
        clients.push((true, u, Client::guest(port, &format!("writer{u}")).await));
    }
    for u in 0..READERS {
        clients.push((false, u, Client::guest(port, &format!("reader{u}")).await));
    }
    for (writer, u, c) in clients {
        if writer {
            writers.push(tokio::spawn(say_all(c, format!("w{u}"), PER_WRITER)));
        } else {
            readers.push(tokio::spawn(read_pages(c, u, newest + 1)));
        }
    }
    let mut seqs = Vec::new();
    for t in writers {
        let acked = t.await.expect("writer");
        assert_eq!(acked.len(), PER_WRITER);
        seqs.extend(acked.into_values());
    }
    for t in readers {
        t.await.expect("reader");
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), WRITERS * PER_WRITER, "one seq per message");

    // Heartbeats kept flowing: the same worker, never restarted, never
    // found silent, its link never lost or re-made.
    let info = s.room_info("bulk").await;
    let room = info.data();
    assert_eq!(room["pid"].as_i64(), Some(i64::from(pid)), "{room}");
    assert_eq!(room["restarts"], 0, "{room}");
    assert_eq!(room["status"], "ready", "{room}");
    let metrics = s.admin(Method::GET, "/metrics").await;
    assert_eq!(metrics.status, 200, "{}", metrics.text);
    let exposition = chat_tests::metrics::parse_exposition(&metrics.text)
        .unwrap_or_else(|e| panic!("bad exposition: {e}\n{}", metrics.text));
    for (name, want) in [
        ("chat_worker_starts_total", 1.0),
        ("chat_worker_crashes_total", 0.0),
        ("chat_worker_restarts_total", 0.0),
        ("chat_ipc_errors_total", 0.0),
    ] {
        assert_eq!(exposition.sum(name), want, "{name}\n{}", metrics.text);
    }
    // The room's report of its counts still arrives (stats travel on the
    // same link).
    wait_for(Duration::from_secs(10), "the room's counts", || async {
        let r = s.room_info("bulk").await;
        (r.data()["seq"].as_u64() >= seqs.last().copied()).then_some(())
    })
    .await;
    let logs = s.logs();
    for bad in [
        "stopped answering heartbeats",
        "lost the master",
        "reconnected to the master",
        "adopted a running room",
        "IPC write failed",
    ] {
        assert!(!logs.contains(bad), "the link faltered ({bad}):\n{logs}");
    }
}
