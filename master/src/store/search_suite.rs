//! The behaviour of [`super::SearchStore`] every backend must have; run by
//! `suite::run_all`. Users are named `q-…` and rooms `s-q-…`, so other
//! tests' data never meets.

use super::{ConversationCursor, MessageRecord, NewDm, Store, TextQuery};

fn dm(from: &str, to: &str, text: &str, ts: u64) -> NewDm {
    NewDm {
        from: from.to_owned(),
        from_name: from.to_owned(),
        to: to.to_owned(),
        text: text.to_owned(),
        ts,
    }
}

fn msg(room: &str, seq: u64, text: &str) -> MessageRecord {
    MessageRecord {
        room: room.to_owned(),
        epoch: 1,
        seq,
        user_id: "u".into(),
        name: "U".into(),
        text: text.to_owned(),
        ts: 1000 + seq,
        deleted: false,
    }
}

pub async fn run_all(store: &dyn Store) {
    dm_paging_and_search(store).await;
    room_paging_and_search(store).await;
    conversation_pages(store).await;
}

fn seqs<T>(page: &[T], seq: impl Fn(&T) -> u64) -> Vec<u64> {
    page.iter().map(seq).collect()
}

async fn dm_paging_and_search(store: &dyn Store) {
    let texts = [
        "Hello World",
        "a.*b literal",
        "x(y",
        "la petite ÉCOLE",
        "nothing",
        "HELLO again",
    ];
    let mut conversation = String::new();
    for (i, t) in texts.iter().enumerate() {
        conversation = store
            .append_dm(dm("q-ann", "q-bob", t, 10 + i as u64))
            .await
            .expect("append")
            .conversation;
    }
    // Another conversation's matches never show.
    store
        .append_dm(dm("q-ann", "q-cat", "hello elsewhere", 100))
        .await
        .expect("append");
    let page = |before, limit, q: Option<&'static str>| {
        let conversation = conversation.clone();
        async move {
            let q = q.map(TextQuery::new);
            let p = store
                .dm_page(&conversation, before, limit, q.as_ref())
                .await
                .expect("dm_page");
            seqs(&p, |m| m.seq)
        }
    };
    assert_eq!(page(u64::MAX, 50, None).await, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(page(u64::MAX, 2, None).await, vec![5, 6]);
    assert_eq!(page(5, 2, None).await, vec![3, 4]);
    assert_eq!(page(1, 2, None).await, Vec::<u64>::new());
    assert_eq!(page(u64::MAX, 50, Some("hello")).await, vec![1, 6]);
    assert_eq!(page(u64::MAX, 1, Some("hello")).await, vec![6]);
    assert_eq!(page(6, 1, Some("hello")).await, vec![1]);
    assert_eq!(page(u64::MAX, 50, Some(".*")).await, vec![2]);
    assert_eq!(page(u64::MAX, 50, Some("(")).await, vec![3]);
    assert_eq!(page(u64::MAX, 50, Some("école")).await, vec![4]);
    assert_eq!(page(u64::MAX, 50, Some("zzz")).await, Vec::<u64>::new());
    assert_eq!(page(u64::MAX, 50, Some("^H")).await, Vec::<u64>::new());
}

async fn room_paging_and_search(store: &dyn Store) {
    let room = "s-q-room";
    let batch: Vec<_> = ["Hello", "hello deleted", "other", "say HELLO", "a+b"]
        .iter()
        .enumerate()
        .map(|(i, t)| msg(room, i as u64 + 1, t))
        .collect();
    store.insert_messages(&batch).await.expect("insert");
    store
        .insert_messages(&[msg("s-q-other", 1, "hello")])
        .await
        .expect("insert");
    assert!(store.mark_deleted(room, 2).await.expect("delete"));
    let page = |before, limit, q: Option<&'static str>| async move {
        let q = q.map(TextQuery::new);
        let p = store
            .room_page(room, before, limit, q.as_ref())
            .await
            .expect("room_page");
        (seqs(&p, |m| m.seq), p)
    };
    // Without q, deleted messages are listed (flagged), like `history`.
    let (all, records) = page(u64::MAX, 50, None).await;
    assert_eq!(all, vec![1, 2, 3, 4, 5]);
    assert!(records[1].deleted);
    assert_eq!(page(4, 2, None).await.0, vec![2, 3]);
    // A deleted message is never found.
    assert_eq!(page(u64::MAX, 50, Some("HELLO")).await.0, vec![1, 4]);
    assert_eq!(page(4, 50, Some("hello")).await.0, vec![1]);
    assert_eq!(page(u64::MAX, 50, Some("a+b")).await.0, vec![5]);
    assert_eq!(page(u64::MAX, 50, Some("+")).await.0, vec![5]);
    assert_eq!(page(u64::MAX, 50, Some("nope")).await.0, Vec::<u64>::new());
    assert_eq!(page(u64::MAX, 0, None).await.0, Vec::<u64>::new());
}

async fn conversation_pages(store: &dyn Store) {
    // q-dan talks with five users; two last messages share a ts.
    for (other, ts) in [
        ("q-e1", 10),
        ("q-e2", 30),
        ("q-e3", 20),
        ("q-e4", 20),
        ("q-e5", 40),
    ] {
        store
            .append_dm(dm(other, "q-dan", "hi", ts))
            .await
            .expect("append");
    }
    store
        .append_dm(dm("q-e5", "q-dan", "again", 50))
        .await
        .expect("append");
    assert_eq!(
        store.mark_dm_read("q-dan", "q-e5", 1).await.expect("read"),
        Some(1)
    );
    let mut all = Vec::new();
    let mut after: Option<ConversationCursor> = None;
    for _ in 0..10 {
        let page = store
            .conversations_page("q-dan", after.as_ref(), 2)
            .await
            .expect("conversations_page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        after = ConversationCursor::after(last);
        all.extend(page);
    }
    let order: Vec<_> = all.iter().map(|c| c.with.as_str()).collect();
    assert_eq!(order, ["q-e5", "q-e2", "q-e4", "q-e3", "q-e1"]);
    let unread: Vec<_> = all.iter().map(|c| c.unread).collect();
    assert_eq!(unread, [1, 1, 1, 1, 1]);
    assert_eq!(all[0].last.as_ref().map(|m| m.text.as_str()), Some("again"));
    // The other side's view: q-e5 sent both, so nothing unread.
    let e5 = store
        .conversations_page("q-e5", None, 10)
        .await
        .expect("conversations_page");
    assert_eq!(e5.len(), 1);
    assert_eq!((e5[0].with.as_str(), e5[0].unread), ("q-dan", 0));
    assert!(
        store
            .conversations_page("q-nobody", None, 10)
            .await
            .expect("conversations_page")
            .is_empty()
    );
}
