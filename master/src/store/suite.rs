//! The behaviour every backend must have; run by each backend's tests.
//! It only looks at records whose names start with `s-`, so a backend's test
//! may add its own data (e.g. hand-written documents) alongside.

use std::sync::Arc;

use super::{
    BanRecord, Claim, FilterAction, FilterRecord, InsertOutcome, MessageRecord, OwnerRecord,
    RoomRecord, Store, UserRecord,
};

pub async fn run_all(store: Arc<dyn Store>) {
    init_is_idempotent(&*store).await;
    history_paging_and_last_seq(&*store).await;
    duplicates_are_not_written_twice(&*store).await;
    mark_deleted(&*store).await;
    rooms_are_isolated(&*store).await;
    concurrent_inserts(Arc::clone(&store)).await;
    room_catalog(&*store).await;
    reference_data(&*store).await;
    bans(&*store).await;
    owners(&*store).await;
    super::direct_suite::run_all(Arc::clone(&store)).await;
    super::search_suite::run_all(&*store).await;
}

fn owner(name: &str, host: &str, until_ms: u64) -> OwnerRecord {
    OwnerRecord {
        name: name.to_owned(),
        owner: format!("{host}:80"),
        host: host.to_owned(),
        port: 34000,
        url: Some(format!("wss://{host}/rooms/34000")),
        until_ms,
    }
}

async fn owners(store: &dyn Store) {
    let room = "s-owned";
    let fresh = Claim::Claimed { taken_over: false };
    let a = owner(room, "a", 1_000);
    assert_eq!(store.claim_owner(&a, 500).await.expect("claim"), fresh);
    // The owner renews.
    let a2 = owner(room, "a", 2_000);
    assert_eq!(store.claim_owner(&a2, 900).await.expect("renew"), fresh);
    // Another host, while the lease lasts: told who holds it.
    let b = owner(room, "b", 5_000);
    assert_eq!(
        store.claim_owner(&b, 1_500).await.expect("held"),
        Claim::Held(a2.clone())
    );
    // Another name is free for it.
    let other = owner("s-owned-2", "b", 5_000);
    assert_eq!(
        store.claim_owner(&other, 1_500).await.expect("other"),
        fresh
    );
    // Once the lease ended: a takeover; the old owner is then refused.
    assert_eq!(
        store.claim_owner(&b, 2_001).await.expect("takeover"),
        Claim::Claimed { taken_over: true }
    );
    assert_eq!(
        store.claim_owner(&a2, 2_002).await.expect("old owner"),
        Claim::Held(b.clone())
    );
    // Only the owner releases.
    store
        .release_owner(room, &a.owner)
        .await
        .expect("release a");
    assert_eq!(
        store.claim_owner(&a2, 2_003).await.expect("still b's"),
        Claim::Held(b.clone())
    );
    store
        .release_owner(room, &b.owner)
        .await
        .expect("release b");
    assert_eq!(store.claim_owner(&a2, 2_004).await.expect("free"), fresh);
}

pub fn msg(room: &str, epoch: u64, seq: u64, text: &str) -> MessageRecord {
    MessageRecord {
        room: room.to_owned(),
        epoch,
        seq,
        user_id: format!("u{}", seq % 3),
        name: format!("User {}", seq % 3),
        text: text.to_owned(),
        ts: 1_700_000_000_000 + seq,
        deleted: false,
    }
}

fn seqs(v: &[MessageRecord]) -> Vec<u64> {
    v.iter().map(|m| m.seq).collect()
}

fn outcome(inserted: u64, duplicates: u64) -> InsertOutcome {
    InsertOutcome {
        inserted,
        duplicates,
        conflicts: Vec::new(),
    }
}

fn with_conflicts(inserted: u64, duplicates: u64, room: &str, seqs: &[u64]) -> InsertOutcome {
    InsertOutcome {
        conflicts: seqs.iter().map(|&s| (room.to_owned(), s)).collect(),
        ..outcome(inserted, duplicates)
    }
}

async fn init_is_idempotent(store: &dyn Store) {
    assert!(matches!(store.kind(), "redb" | "mongodb"));
    store.init().await.expect("first init");
    store.init().await.expect("second init");
    store.ping().await.expect("ping");
}

async fn history_paging_and_last_seq(store: &dyn Store) {
    let room = "s-alpha";
    assert_eq!(store.last_seq(room).await.expect("last_seq"), None);
    assert!(
        store
            .history(room, u64::MAX, 10)
            .await
            .expect("history")
            .is_empty()
    );
    let batch: Vec<_> = (1..=25)
        .map(|s| msg(room, 1, s, &format!("m{s}")))
        .collect();
    assert_eq!(
        store.insert_messages(&batch).await.expect("insert"),
        outcome(25, 0)
    );
    assert_eq!(
        store.insert_messages(&[]).await.expect("empty"),
        outcome(0, 0)
    );
    assert_eq!(store.last_seq(room).await.expect("last_seq"), Some((1, 25)));

    let page = store.history(room, u64::MAX, 10).await.expect("page 1");
    assert_eq!(seqs(&page), (16..=25).collect::<Vec<_>>());
    assert_eq!(page[0], batch[15], "records come back whole");
    let page = store.history(room, 16, 10).await.expect("page 2");
    assert_eq!(seqs(&page), (6..=15).collect::<Vec<_>>());
    let page = store.history(room, 6, 10).await.expect("page 3");
    assert_eq!(seqs(&page), (1..=5).collect::<Vec<_>>());
    assert!(store.history(room, 1, 10).await.expect("page 4").is_empty());
    assert!(
        store
            .history(room, 0, 10)
            .await
            .expect("before 0")
            .is_empty()
    );
    assert!(
        store
            .history(room, 20, 0)
            .await
            .expect("limit 0")
            .is_empty()
    );
    let all = store.history(room, u64::MAX, 1000).await.expect("all");
    assert_eq!(seqs(&all), (1..=25).collect::<Vec<_>>());
}

async fn duplicates_are_not_written_twice(store: &dyn Store) {
    let room = "s-alpha";
    // The same message again (a resend) is a duplicate; resent deleted
    // (its text cleared) it is still the same message.
    let resend = msg(room, 1, 5, "m5");
    let mut resend_deleted = msg(room, 1, 5, "");
    resend_deleted.deleted = true;
    assert_eq!(
        store
            .insert_messages(&[resend, resend_deleted])
            .await
            .expect("resend"),
        outcome(0, 2)
    );
    // Same seq, different text: a conflict; the first text stays.
    let again = msg(room, 1, 5, "rewritten");
    assert_eq!(
        store.insert_messages(&[again]).await.expect("dup"),
        with_conflicts(0, 0, room, &[5])
    );
    let page = store.history(room, 6, 1).await.expect("history");
    assert_eq!(page[0].text, "m5");
    // Same seq and text, another epoch or author: a conflict too.
    let mut other_author = msg(room, 1, 6, "m6");
    other_author.user_id = "someone-else".into();
    assert_eq!(
        store
            .insert_messages(&[msg(room, 9, 6, "m6"), other_author])
            .await
            .expect("conflicts"),
        with_conflicts(0, 0, room, &[6, 6])
    );

    // Some taken by other messages (another epoch), some new.
    let batch = vec![
        msg(room, 2, 24, "x24"),
        msg(room, 2, 26, "m26"),
        msg(room, 2, 25, "x25"),
        msg(room, 2, 27, "m27"),
    ];
    assert_eq!(
        store.insert_messages(&batch).await.expect("mixed"),
        with_conflicts(2, 0, room, &[24, 25])
    );
    assert_eq!(store.last_seq(room).await.expect("last_seq"), Some((2, 27)));
    // A retried batch is idempotent.
    assert_eq!(
        store.insert_messages(&batch).await.expect("retry"),
        with_conflicts(0, 2, room, &[24, 25])
    );
    let page = store.history(room, u64::MAX, 4).await.expect("history");
    let texts: Vec<_> = page.iter().map(|m| (m.epoch, m.text.as_str())).collect();
    assert_eq!(texts, [(1, "m24"), (1, "m25"), (2, "m26"), (2, "m27")]);

    // Two messages at one seq within one batch: the first one wins.
    let batch = vec![msg(room, 2, 28, "first"), msg(room, 2, 28, "second")];
    assert_eq!(
        store.insert_messages(&batch).await.expect("in-batch"),
        with_conflicts(1, 0, room, &[28])
    );
    let page = store.history(room, u64::MAX, 1).await.expect("history");
    assert_eq!(page[0].text, "first");
}

async fn mark_deleted(store: &dyn Store) {
    let room = "s-alpha";
    assert!(store.mark_deleted(room, 3).await.expect("mark"));
    assert!(store.mark_deleted(room, 3).await.expect("mark again"));
    assert!(!store.mark_deleted(room, 999).await.expect("absent"));
    assert!(
        !store
            .mark_deleted("s-nowhere", 3)
            .await
            .expect("other room")
    );
    let page = store.history(room, 5, 3).await.expect("history");
    let flags: Vec<_> = page.iter().map(|m| (m.seq, m.deleted)).collect();
    assert_eq!(flags, [(2, false), (3, true), (4, false)]);
    assert_eq!(page[1].text, "m3", "deleting keeps the text for moderators");
}

async fn rooms_are_isolated(store: &dyn Store) {
    // Names that sort right next to "s-alpha" in a byte-keyed store. (No NUL:
    // nx-27017 cuts strings at NUL, and room names never hold one.)
    for room in ["s-alph", "s-alpha-2", "s-alpha!"] {
        let batch: Vec<_> = (1..=3).map(|s| msg(room, 9, s * 100, room)).collect();
        assert_eq!(
            store.insert_messages(&batch).await.expect("insert"),
            outcome(3, 0)
        );
    }
    assert_eq!(
        store.last_seq("s-alpha").await.expect("alpha"),
        Some((2, 28))
    );
    assert_eq!(
        store.last_seq("s-alph").await.expect("alph"),
        Some((9, 300))
    );
    assert_eq!(
        store.last_seq("s-alpha-2").await.expect("alpha-2"),
        Some((9, 300))
    );
    assert_eq!(store.last_seq("s-nowhere").await.expect("none"), None);
    let alpha = store
        .history("s-alpha", u64::MAX, 1000)
        .await
        .expect("alpha");
    assert_eq!(alpha.len(), 28);
    assert!(alpha.iter().all(|m| m.room == "s-alpha"));
    let other = store
        .history("s-alpha-2", u64::MAX, 1000)
        .await
        .expect("alpha-2");
    assert_eq!(seqs(&other), [100, 200, 300]);
    assert!(
        other
            .iter()
            .all(|m| m.room == "s-alpha-2" && m.text == "s-alpha-2")
    );
    // Same seq in another room is not a duplicate.
    let same_seq = msg("s-beta", 1, 5, "beta5");
    assert_eq!(
        store.insert_messages(&[same_seq]).await.expect("beta"),
        outcome(1, 0)
    );
}

async fn concurrent_inserts(store: Arc<dyn Store>) {
    let room = "s-conc";
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut total = InsertOutcome::default();
                for chunk in (1..=60).collect::<Vec<u64>>().chunks(15) {
                    let batch: Vec<_> = chunk.iter().map(|&s| msg(room, 1, s, "c")).collect();
                    let o = store.insert_messages(&batch).await.expect("insert");
                    total.inserted += o.inserted;
                    total.duplicates += o.duplicates;
                }
                total
            })
        })
        .collect();
    let (mut inserted, mut duplicates) = (0, 0);
    for t in tasks {
        let o = t.await.expect("task");
        inserted += o.inserted;
        duplicates += o.duplicates;
    }
    assert_eq!((inserted, duplicates), (60, 180));
    let all = store.history(room, u64::MAX, 1000).await.expect("history");
    assert_eq!(seqs(&all), (1..=60).collect::<Vec<_>>());
}

fn room(name: &str, port: u16, topic: &str) -> RoomRecord {
    RoomRecord {
        name: name.to_owned(),
        port,
        settings: serde_json::json!({ "topic": topic, "max_members": 100, "history": true }),
        status: "ready".to_owned(),
        epoch: 1,
        created_ms: 1_700_000_000_000,
        updated_ms: 1_700_000_000_000,
    }
}

async fn our_rooms(store: &dyn Store) -> Vec<RoomRecord> {
    let mut rooms: Vec<_> = (store.rooms().await.expect("rooms"))
        .into_iter()
        .filter(|r| r.name.starts_with("s-"))
        .collect();
    rooms.sort_by(|a, b| a.name.cmp(&b.name));
    rooms
}

async fn room_catalog(store: &dyn Store) {
    assert!(our_rooms(store).await.is_empty());
    let (lobby, games) = (room("s-lobby", 9001, "hi"), room("s-games", 9002, "gg"));
    store.upsert_room(&lobby).await.expect("upsert lobby");
    store.upsert_room(&games).await.expect("upsert games");
    assert_eq!(our_rooms(store).await, [games.clone(), lobby.clone()]);

    let mut moved = lobby.clone();
    moved.port = 9011;
    moved.status = "closed".to_owned();
    moved.epoch = 2;
    moved.updated_ms += 5_000;
    moved.settings = serde_json::json!({ "topic": "moved", "nested": { "a": [1, 2] } });
    store.upsert_room(&moved).await.expect("replace lobby");
    assert_eq!(our_rooms(store).await, [games.clone(), moved]);

    store.remove_room("s-lobby").await.expect("remove");
    store.remove_room("s-lobby").await.expect("remove absent");
    assert_eq!(our_rooms(store).await, [games]);
    // The messages of a removed room stay.
    assert_eq!(
        store.last_seq("s-alpha").await.expect("last_seq"),
        Some((2, 28))
    );
}

fn ban(user: &str, room: Option<&str>, until_ms: Option<u64>, reason: Option<&str>) -> BanRecord {
    BanRecord {
        user_id: user.to_owned(),
        room: room.map(str::to_owned),
        until_ms,
        reason: reason.map(str::to_owned),
    }
}

async fn reference_data(store: &dyn Store) {
    let ann = UserRecord {
        id: "s-ann".into(),
        name: "Ann".into(),
        roles: vec!["admin".into(), "moderator".into()],
    };
    let bob = UserRecord {
        id: "s-bob".into(),
        name: "Bob".into(),
        roles: vec![],
    };
    store.upsert_user(&ann).await.expect("ann");
    store.upsert_user(&bob).await.expect("bob");
    let bob = UserRecord {
        name: "Robert".into(),
        ..bob
    };
    store.upsert_user(&bob).await.expect("bob renamed");

    let f = |p: &str, action| FilterRecord {
        pattern: p.to_owned(),
        action,
    };
    store
        .upsert_filter(&f("s-darn", FilterAction::Mask))
        .await
        .expect("filter");
    store
        .upsert_filter(&f("s-spam*", FilterAction::Mask))
        .await
        .expect("filter");
    store
        .upsert_filter(&f("s-spam*", FilterAction::Reject))
        .await
        .expect("filter");

    let data = store.load_reference().await.expect("load");
    let mut users: Vec<_> = data
        .users
        .into_iter()
        .filter(|u| u.id.starts_with("s-"))
        .collect();
    users.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(users, [ann, bob]);
    let mut filters: Vec<_> = data
        .filters
        .into_iter()
        .filter(|f| f.pattern.starts_with("s-"))
        .collect();
    filters.sort_by(|a, b| a.pattern.cmp(&b.pattern));
    assert_eq!(
        filters,
        [
            f("s-darn", FilterAction::Mask),
            f("s-spam*", FilterAction::Reject)
        ]
    );

    // What the admin API adds, it can remove.
    assert!(store.remove_filter("s-darn").await.expect("remove filter"));
    assert!(
        !store
            .remove_filter("s-darn")
            .await
            .expect("remove filter again")
    );
    assert!(store.remove_user("s-ann").await.expect("remove user"));
    assert!(!store.remove_user("s-ann").await.expect("remove user again"));
    let data = store.load_reference().await.expect("load");
    assert!(!data.users.iter().any(|u| u.id == "s-ann"));
    assert!(data.users.iter().any(|u| u.id == "s-bob"));
    assert!(!data.filters.iter().any(|f| f.pattern == "s-darn"));
    assert!(data.filters.iter().any(|f| f.pattern == "s-spam*"));
}

async fn our_bans(store: &dyn Store) -> Vec<BanRecord> {
    let mut bans: Vec<_> = (store.load_reference().await.expect("load").bans)
        .into_iter()
        .filter(|b| b.user_id.starts_with("s-"))
        .collect();
    bans.sort_by(|a, b| (&a.user_id, &a.room).cmp(&(&b.user_id, &b.room)));
    bans
}

async fn bans(store: &dyn Store) {
    assert!(our_bans(store).await.is_empty());
    let everywhere = ban("s-troll", None, None, Some("spam"));
    let lobby = ban("s-troll", Some("s-lobby"), Some(1_900_000_000_000), None);
    let other = ban(
        "s-other",
        Some("s-games"),
        Some(1_800_000_000_000),
        Some("rude"),
    );
    for b in [&everywhere, &lobby, &other] {
        store.add_ban(b).await.expect("add_ban");
    }
    assert_eq!(
        our_bans(store).await,
        [other.clone(), everywhere.clone(), lobby.clone()]
    );
    assert!(everywhere.active_at(u64::MAX));
    assert!(!lobby.active_at(1_900_000_000_000));

    // A ban of the same user and scope replaces the previous one.
    let lobby2 = ban(
        "s-troll",
        Some("s-lobby"),
        Some(1_950_000_000_000),
        Some("again"),
    );
    store.add_ban(&lobby2).await.expect("replace ban");
    let everywhere2 = ban("s-troll", None, Some(1_960_000_000_000), None);
    store
        .add_ban(&everywhere2)
        .await
        .expect("replace global ban");
    assert_eq!(
        our_bans(store).await,
        [other.clone(), everywhere2.clone(), lobby2]
    );

    // One scope goes, the other stays.
    let lobby3 = ban("s-troll", Some("s-lobby"), None, Some("by a moderator"));
    store.add_ban(&lobby3).await.expect("room ban");
    assert_eq!(
        store
            .remove_ban("s-troll", Some("s-lobby"))
            .await
            .expect("remove room ban"),
        1
    );
    assert_eq!(
        store
            .remove_ban("s-troll", Some("s-lobby"))
            .await
            .expect("remove room ban again"),
        0
    );
    assert_eq!(our_bans(store).await, [other.clone(), everywhere2.clone()]);
    store.add_ban(&lobby3).await.expect("room ban again");
    assert_eq!(store.remove_bans("s-troll").await.expect("remove"), 2);
    assert_eq!(store.remove_bans("s-troll").await.expect("remove again"), 0);
    assert_eq!(store.remove_bans("s-nobody").await.expect("remove none"), 0);
    assert_eq!(our_bans(store).await, [other]);
}
