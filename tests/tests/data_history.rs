//! History older than a room's memory comes from the store.
//!
//! The MongoDB tests need nx-27017 (`NX27017_BIN`, else
//! `<workspace>/.venv/bin/nx-27017`; `tests/run` installs it). They fail when
//! it cannot start: they are never skipped.

mod data_common;
mod data_obey;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chat_tests::{Client, Server};
use data_common::{history, history_all, recv_type_within, seq_of, seq_texts};
use data_obey::*;
use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------
// 5. History older than a room's memory comes from the store

#[tokio::test]
async fn history_beyond_memory_comes_from_the_store() {
    const SENDERS: usize = 20;
    const PER: usize = 55; // within a user's burst of 60 messages
    const TOTAL: u64 = (SENDERS * PER) as u64; // 1100 > the 1000 kept in memory
    let s = Server::default_server().await;
    let port = s.create_room("deep").await;
    let mut observer = Client::guest(port, "observer").await;

    let mut expected: BTreeMap<u64, String> = BTreeMap::new();
    for k in 0..SENDERS {
        let mut c = Client::guest(port, &format!("sender{k}")).await;
        let mut texts = HashMap::new();
        let frames: Vec<Message> = (0..PER)
            .map(|i| {
                let cid = format!("{k}-{i}");
                let text = format!("deep message {k}-{i}");
                let f = json!({"type": "say", "text": text, "client_id": cid});
                texts.insert(cid, text);
                Message::text(f.to_string())
            })
            .collect();
        assert_eq!(c.feed_many(frames).await, PER);
        for _ in 0..PER {
            let (ack, skipped) =
                recv_type_within(&mut c, "ack", Duration::from_secs(10), "sender's ack").await;
            assert!(
                skipped.iter().all(|f| f["type"] != "error"),
                "refused: {skipped:?}"
            );
            let cid = ack["client_id"].as_str().expect("client_id");
            let text = texts.remove(cid).expect("ack of an unknown client_id");
            assert!(expected.insert(seq_of(&ack), text).is_none(), "{ack}");
        }
        c.close().await;
    }
    let expected: Vec<(u64, String)> = expected.into_iter().collect();
    assert_eq!(
        expected.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=TOTAL).collect::<Vec<_>>()
    );
    // The observer saw every message once, in order.
    let mut seen = Vec::new();
    while seen.len() < TOTAL as usize {
        let (m, _) = recv_type_within(
            &mut observer,
            "message",
            Duration::from_secs(10),
            "broadcast",
        )
        .await;
        seen.push(m);
    }
    assert_eq!(seq_texts(&seen), expected, "broadcasts");
    let text_of = |seqs: std::ops::Range<u64>| -> Vec<(u64, String)> {
        seqs.map(|s| expected[s as usize - 1].clone()).collect()
    };

    // The room keeps the latest 1000 (101..=1100): older pages come from
    // the store.
    let (page, more) = history(&mut observer, Some(50), 10).await;
    assert_eq!(seq_texts(&page), text_of(40..50), "before 50");
    assert!(more);
    let (page, more) = history(&mut observer, Some(2), 5).await;
    assert_eq!(seq_texts(&page), text_of(1..2), "before 2");
    assert!(!more, "nothing older than seq 1");
    let (page, more) = history(&mut observer, Some(101), 100).await;
    assert_eq!(seq_texts(&page), text_of(1..101), "before 101");
    assert!(!more);
    let (page, more) = history(&mut observer, Some(105), 10).await;
    assert_eq!(
        seq_texts(&page),
        text_of(95..105),
        "before 105 (store + memory)"
    );
    assert!(more);
    let (page, more) = history(&mut observer, None, 5).await;
    assert_eq!(seq_texts(&page), text_of(1096..1101), "newest");
    assert!(more);
    let all = history_all(&mut observer, 100).await;
    assert_eq!(seq_texts(&all), expected, "paged history (limit 100)");
    let all = history_all(&mut observer, 37).await;
    assert_eq!(seq_texts(&all), expected, "paged history (limit 37)");

    // A restarted room gets its history back from the store.
    let old_pid = admin_room(&s, "deep").await["pid"].as_i64().unwrap();
    let r = s.admin(Method::POST, "/api/v1/rooms/deep/restart").await;
    assert_eq!(r.status, 202, "restart: {}", r.text);
    let (code, reason) = observer.expect_close().await;
    assert_eq!(code, 1012, "observer's close at the restart: {reason}");
    let info = wait_new_worker(&s, "deep", old_pid, Duration::from_secs(15)).await;
    assert_eq!(info["port"].as_u64(), Some(u64::from(port)), "{info}");
    let mut fresh = Client::guest(port, "fresh").await;
    let w = &fresh.welcome;
    assert_eq!(w["seq"].as_u64(), Some(TOTAL), "{w}");
    let hist = w["history"].as_array().expect("history").clone();
    assert_eq!(
        seq_texts(&hist),
        text_of(TOTAL - 49..TOTAL + 1),
        "welcome.history after the restart"
    );
    let (page, more) = history(&mut fresh, Some(5), 3).await;
    assert_eq!(
        seq_texts(&page),
        text_of(2..5),
        "before 5 after the restart"
    );
    assert!(more);
    let (page, more) = history(&mut fresh, Some(1), 3).await;
    assert!(page.is_empty(), "before 1: {page:?}");
    assert!(!more);
    let all = history_all(&mut fresh, 100).await;
    assert_eq!(seq_texts(&all), expected, "paged history after the restart");
    assert_eq!(fresh.say_acked("and more").await, TOTAL + 1);
}
