//! The behaviour of [`super::DirectStore`] every backend must have; run by
//! `suite::run_all`. Users are named `d-…` so other tests' data never meets.

use std::sync::Arc;

use super::{NewDm, Store};

fn dm(from: &str, to: &str, text: &str, ts: u64) -> NewDm {
    NewDm {
        from: from.to_owned(),
        from_name: from.to_uppercase(),
        to: to.to_owned(),
        text: text.to_owned(),
        ts,
    }
}

pub async fn run_all(store: Arc<dyn Store>) {
    seq_and_history(&*store).await;
    concurrent_appends(Arc::clone(&store)).await;
    blocks(&*store).await;
    read_markers_and_summary(&*store).await;
}

async fn seq_and_history(store: &dyn Store) {
    let a = store
        .append_dm(dm("d-ann", "d-bob", "one", 10))
        .await
        .expect("append");
    let b = store
        .append_dm(dm("d-bob", "d-ann", "two", 20))
        .await
        .expect("append");
    let c = store
        .append_dm(dm("d-ann", "d-bob", "three", 30))
        .await
        .expect("append");
    assert_eq!((a.seq, b.seq, c.seq), (1, 2, 3));
    assert_eq!(a.conversation, "d-ann:d-bob");
    assert_eq!(b.conversation, a.conversation);
    let all = store
        .dm_history(&a.conversation, u64::MAX, 10)
        .await
        .expect("history");
    assert_eq!(all, vec![a.clone(), b.clone(), c.clone()]);
    let page = store
        .dm_history(&a.conversation, 3, 1)
        .await
        .expect("history");
    assert_eq!(page, vec![b]);
    assert!(
        store
            .dm_history("d-none:d-x", u64::MAX, 10)
            .await
            .expect("history")
            .is_empty()
    );
    // Another pair has its own numbering.
    let other = store
        .append_dm(dm("d-ann", "d-cat", "hi", 40))
        .await
        .expect("append");
    assert_eq!(other.seq, 1);
}

async fn concurrent_appends(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let s = Arc::clone(&store);
        let (from, to) = if i % 2 == 0 {
            ("d-x", "d-y")
        } else {
            ("d-y", "d-x")
        };
        tasks.push(tokio::spawn(async move {
            s.append_dm(dm(from, to, &format!("m{i}"), i))
                .await
                .expect("append")
                .seq
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("task"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>(), "every seq once");
    let stored = store
        .dm_history("d-x:d-y", u64::MAX, 100)
        .await
        .expect("history");
    assert_eq!(stored.len(), 20);
}

async fn blocks(store: &dyn Store) {
    assert!(!store.is_blocked("d-ann", "d-eve").await.expect("blocked"));
    store
        .set_blocked("d-ann", "d-eve", true)
        .await
        .expect("block");
    store
        .set_blocked("d-ann", "d-eve", true)
        .await
        .expect("block twice");
    assert!(store.is_blocked("d-ann", "d-eve").await.expect("blocked"));
    // One way only.
    assert!(!store.is_blocked("d-eve", "d-ann").await.expect("blocked"));
    store
        .set_blocked("d-ann", "d-eve", false)
        .await
        .expect("unblock");
    assert!(!store.is_blocked("d-ann", "d-eve").await.expect("blocked"));
    store
        .set_blocked("d-ann", "d-eve", false)
        .await
        .expect("unblock twice");
}

async fn read_markers_and_summary(store: &dyn Store) {
    for (i, t) in ["a", "b", "c"].iter().enumerate() {
        store
            .append_dm(dm("d-sue", "d-tom", t, 100 + i as u64))
            .await
            .expect("append");
    }
    store
        .append_dm(dm("d-uma", "d-tom", "hey", 200))
        .await
        .expect("append");
    let s = store.dm_summary("d-tom", 20).await.expect("summary");
    assert_eq!(s.unread, 4);
    assert_eq!(s.conversations.len(), 2);
    // Newest first.
    assert_eq!(s.conversations[0].with, "d-uma");
    assert_eq!(s.conversations[0].unread, 1);
    assert_eq!(s.conversations[1].with, "d-sue");
    assert_eq!(s.conversations[1].unread, 3);
    assert_eq!(
        s.conversations[1].last.as_ref().map(|m| m.text.as_str()),
        Some("c")
    );
    // The sender has nothing unread in what they sent.
    let sue = store.dm_summary("d-sue", 20).await.expect("summary");
    assert_eq!(sue.unread, 0);
    // Read markers: capped at the last seq, never back.
    assert_eq!(
        store.mark_dm_read("d-tom", "d-sue", 2).await.expect("read"),
        Some(2)
    );
    assert_eq!(
        store.mark_dm_read("d-tom", "d-sue", 1).await.expect("read"),
        Some(2)
    );
    assert_eq!(
        store
            .mark_dm_read("d-tom", "d-sue", 99)
            .await
            .expect("read"),
        Some(3)
    );
    assert_eq!(
        store
            .mark_dm_read("d-tom", "d-nobody", 1)
            .await
            .expect("read"),
        None
    );
    let s = store.dm_summary("d-tom", 1).await.expect("summary");
    assert_eq!(s.unread, 1);
    assert_eq!(s.conversations.len(), 1, "the limit applies to the list");
    // Room markers.
    assert_eq!(
        store.room_read("d-room", "d-tom").await.expect("room read"),
        0
    );
    assert_eq!(
        store
            .mark_room_read("d-room", "d-tom", 5)
            .await
            .expect("mark"),
        5
    );
    assert_eq!(
        store
            .mark_room_read("d-room", "d-tom", 3)
            .await
            .expect("mark"),
        5
    );
    assert_eq!(
        store.room_read("d-room", "d-tom").await.expect("room read"),
        5
    );
    assert_eq!(
        store
            .room_read("d-other", "d-tom")
            .await
            .expect("room read"),
        0
    );
}
