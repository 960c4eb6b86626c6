//! `/metrics`: a well-formed Prometheus exposition (parsed by the
//! harness's `chat_tests::metrics`) that follows the rooms.

mod ops_common;

use chat_tests::metrics::{parse_value, scrape};
use chat_tests::{Client, Server, wait_for};
use ops_common::*;

// ---- metrics ----

#[tokio::test]
async fn metrics_are_well_formed_and_follow_the_rooms() {
    let s = Server::default_server().await;
    let p1 = s.create_room("one").await;
    s.create_room("two").await;

    let m = scrape(&s).await;
    // Every sample's family has a TYPE; counters end in _total.
    for sample in &m.samples {
        let family = m.family_of(&sample.name);
        let kind = m.types.get(family).unwrap_or_else(|| {
            panic!("{} has no TYPE (family {family})", sample.name);
        });
        if kind == "counter" {
            assert!(
                family.ends_with("_total"),
                "counter {family} does not end in _total"
            );
        }
    }
    assert_eq!(m.value("chat_rooms", &[("state", "ready")]), Some(2.0));
    for state in ["starting", "closing", "closed", "failed"] {
        assert_eq!(
            m.value("chat_rooms", &[("state", state)]),
            Some(0.0),
            "{state}"
        );
    }
    assert!(m.value("chat_worker_starts_total", &[]).unwrap_or(0.0) >= 2.0);
    assert!(m.value("process_resident_memory_bytes", &[]).unwrap_or(0.0) > 0.0);
    assert!(
        m.value("chat_store_pending_writes", &[]).is_some(),
        "no chat_store_pending_writes"
    );
    assert_eq!(m.value("chat_connections", &[]), Some(0.0));
    assert_eq!(m.value("chat_accepting_rooms", &[]), Some(1.0));
    let in_before = m.value("chat_messages_in_total", &[]).unwrap_or(0.0);

    // Joins show up in chat_connections (reported by the rooms: poll).
    let mut a = Client::guest(p1, "ann").await;
    let mut b = Client::guest(p1, "bob").await;
    let mut c = Client::guest(p1, "cat").await;
    wait_for(REPORT_WAIT, "chat_connections to reach 3", || async {
        let m = scrape(&s).await;
        (m.value("chat_connections", &[]) == Some(3.0)).then_some(())
    })
    .await;

    for i in 0..3 {
        chat(&mut a, &mut b, &format!("hello {i}")).await;
        c.recv_type("message").await;
    }
    let m = wait_for(
        REPORT_WAIT,
        "messages and fan-outs in the metrics",
        || async {
            let m = scrape(&s).await;
            let msgs = m.value("chat_messages_in_total", &[]).unwrap_or(0.0);
            let fanouts = m
                .value("chat_fanout_duration_seconds_count", &[])
                .unwrap_or(0.0);
            (msgs >= in_before + 3.0 && fanouts >= 3.0).then_some(m)
        },
    )
    .await;
    assert!(m.value("chat_messages_out_total", &[]).unwrap_or(0.0) > 0.0);
    assert_eq!(m.types["chat_messages_in_total"], "counter");
    assert_eq!(m.types["chat_connections"], "gauge");
    assert_eq!(m.types["chat_rooms"], "gauge");

    // The fan-out histogram: cumulative buckets in order, ending in +Inf =
    // _count, and a _sum.
    let h = "chat_fanout_duration_seconds";
    assert_eq!(m.types.get(h).map(String::as_str), Some("histogram"));
    let buckets = m.find(&format!("{h}_bucket"), &[]);
    assert!(buckets.len() >= 2, "{buckets:?}");
    let mut prev_le = f64::NEG_INFINITY;
    let mut prev_count = 0.0;
    for bk in &buckets {
        let le = parse_value(bk.labels.get("le").expect("bucket without le")).unwrap();
        assert!(le > prev_le, "buckets out of order: {buckets:?}");
        assert!(bk.value >= prev_count, "not cumulative: {buckets:?}");
        prev_le = le;
        prev_count = bk.value;
    }
    let last = buckets.last().unwrap();
    assert_eq!(last.labels["le"], "+Inf", "{buckets:?}");
    let count = m.value(&format!("{h}_count"), &[]).expect("no _count");
    assert_eq!(last.value, count);
    assert!(count >= 3.0);
    let sum = m.value(&format!("{h}_sum"), &[]).expect("no _sum");
    assert!(sum >= 0.0 && sum.is_finite(), "sum {sum}");

    // Connections go back down.
    drop(c);
    assert!(b.close().await);
    wait_for(REPORT_WAIT, "chat_connections to fall to 1", || async {
        let m = scrape(&s).await;
        (m.value("chat_connections", &[]) == Some(1.0)).then_some(())
    })
    .await;
}
