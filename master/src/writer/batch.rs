//! Writing one batch: transient store failures are retried with backoff;
//! a permanent failure splits the batch in halves until the records that
//! fail on their own (the poison) are found, and everything else is stored.

use std::time::Duration;

use crate::store::{MessageRecord, Store, StoreError};

/// Longest pause between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Why a message was not stored; sent to its room as the error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refusal {
    /// The store refuses the record itself (invalid, too large).
    NotStored,
    /// A different message is stored at its (room, seq).
    Conflict,
}

impl Refusal {
    /// The client protocol's error code.
    pub fn code(self) -> &'static str {
        match self {
            Self::NotStored => chat_shared::protocol::code::NOT_STORED,
            Self::Conflict => chat_shared::protocol::code::CONFLICT,
        }
    }
}

/// A message the store did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub room: String,
    pub seq: u64,
    pub why: Refusal,
    /// The store's reason, for the log.
    pub reason: String,
}

/// What a batch came to: every record is stored, a duplicate of a stored
/// one, or refused.
#[derive(Debug, Default)]
pub struct Written {
    pub inserted: u64,
    pub duplicates: u64,
    pub refused: Vec<Refused>,
}

/// Hooks the retry loop reports through (logs, metrics, health).
pub trait Observer: Sync {
    /// The store answered a call.
    fn reached(&self) {}
    /// A transient failure; `first` once per outage.
    fn transient(&self, _e: &StoreError, _first: bool) {}
    /// The store came back after transient failures.
    fn recovered(&self) {}
}

/// Writes `records`, retrying transient failures until they pass.
pub async fn write(store: &dyn Store, records: &[MessageRecord], obs: &dyn Observer) -> Written {
    let mut out = Written::default();
    // Ranges of `records` still to write; a permanent failure of a range
    // of two or more pushes its halves.
    let mut todo: Vec<std::ops::Range<usize>> = Vec::new();
    todo.push(0..records.len());
    while let Some(range) = todo.pop() {
        if range.is_empty() {
            continue;
        }
        let part = &records[range.clone()];
        match retry(store, part, obs).await {
            Ok(o) => {
                out.inserted += o.inserted;
                out.duplicates += o.duplicates;
                out.refused
                    .extend(o.conflicts.into_iter().map(|(room, seq)| Refused {
                        room,
                        seq,
                        why: Refusal::Conflict,
                        reason: "a different message is stored at this seq".into(),
                    }));
            }
            Err(e) if part.len() == 1 => out.refused.push(Refused {
                room: part[0].room.clone(),
                seq: part[0].seq,
                why: Refusal::NotStored,
                reason: e.to_string(),
            }),
            Err(_) => {
                let mid = range.start + part.len() / 2;
                todo.push(mid..range.end);
                todo.push(range.start..mid);
            }
        }
    }
    out
}

/// One insert, retried while it fails transiently; `Err` is permanent.
async fn retry(
    store: &dyn Store,
    part: &[MessageRecord],
    obs: &dyn Observer,
) -> Result<crate::store::InsertOutcome, StoreError> {
    let mut backoff = FIRST_BACKOFF;
    let mut failing = false;
    loop {
        match store.insert_messages(part).await {
            Ok(o) => {
                obs.reached();
                if failing {
                    obs.recovered();
                }
                return Ok(o);
            }
            Err(e) if e.is_transient() => {
                obs.transient(&e, !failing);
                failing = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => {
                obs.reached();
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::store::{
        BanRecord, FilterRecord, InsertOutcome, RedbStore, ReferenceData, RoomRecord, UserRecord,
    };

    /// redb, except that messages whose text starts with "poison" are
    /// invalid, and the first `outages` calls fail as if the disk were away.
    pub struct Flaky {
        inner: RedbStore,
        outages: AtomicUsize,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl crate::store::DirectStore for Flaky {
        async fn append_dm(
            &self,
            m: crate::store::NewDm,
        ) -> Result<chat_shared::direct::DirectMessage, StoreError> {
            self.inner.append_dm(m).await
        }
        async fn dm_history(
            &self,
            c: &str,
            before: u64,
            limit: u32,
        ) -> Result<Vec<chat_shared::direct::DirectMessage>, StoreError> {
            self.inner.dm_history(c, before, limit).await
        }
        async fn set_blocked(&self, u: &str, o: &str, b: bool) -> Result<(), StoreError> {
            self.inner.set_blocked(u, o, b).await
        }
        async fn is_blocked(&self, u: &str, o: &str) -> Result<bool, StoreError> {
            self.inner.is_blocked(u, o).await
        }
        async fn mark_dm_read(&self, u: &str, w: &str, s: u64) -> Result<Option<u64>, StoreError> {
            self.inner.mark_dm_read(u, w, s).await
        }
        async fn mark_room_read(&self, r: &str, u: &str, s: u64) -> Result<u64, StoreError> {
            self.inner.mark_room_read(r, u, s).await
        }
        async fn room_read(&self, r: &str, u: &str) -> Result<u64, StoreError> {
            self.inner.room_read(r, u).await
        }
        async fn dm_summary(
            &self,
            u: &str,
            limit: usize,
        ) -> Result<chat_shared::direct::DmSummary, StoreError> {
            self.inner.dm_summary(u, limit).await
        }
    }

    #[async_trait]
    impl crate::store::SearchStore for Flaky {
        async fn conversations_page(
            &self,
            u: &str,
            after: Option<&crate::store::ConversationCursor>,
            limit: u32,
        ) -> Result<Vec<chat_shared::direct::ConversationSummary>, StoreError> {
            self.inner.conversations_page(u, after, limit).await
        }
        async fn dm_page(
            &self,
            c: &str,
            before: u64,
            limit: u32,
            q: Option<&crate::store::TextQuery>,
        ) -> Result<Vec<chat_shared::direct::DirectMessage>, StoreError> {
            self.inner.dm_page(c, before, limit, q).await
        }
        async fn room_page(
            &self,
            r: &str,
            before: u64,
            limit: u32,
            q: Option<&crate::store::TextQuery>,
        ) -> Result<Vec<crate::store::MessageRecord>, StoreError> {
            self.inner.room_page(r, before, limit, q).await
        }
    }

    #[async_trait]
    impl Store for Flaky {
        fn kind(&self) -> &'static str {
            "redb"
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.inner.ping().await
        }
        async fn init(&self) -> Result<(), StoreError> {
            self.inner.init().await
        }
        async fn upsert_room(&self, r: &RoomRecord) -> Result<(), StoreError> {
            self.inner.upsert_room(r).await
        }
        async fn remove_room(&self, name: &str) -> Result<(), StoreError> {
            self.inner.remove_room(name).await
        }
        async fn rooms(&self) -> Result<Vec<RoomRecord>, StoreError> {
            self.inner.rooms().await
        }
        async fn insert_messages(
            &self,
            batch: &[MessageRecord],
        ) -> Result<InsertOutcome, StoreError> {
            self.calls.fetch_add(1, Ordering::AcqRel);
            let outage = self
                .outages
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            if outage {
                return Err(StoreError::Task("the disk went away".into()));
            }
            if let Some(p) = batch.iter().find(|m| m.text.starts_with("poison")) {
                return Err(StoreError::Invalid {
                    what: "message",
                    reason: format!("poison at {}", p.seq),
                });
            }
            self.inner.insert_messages(batch).await
        }
        async fn last_seq(&self, room: &str) -> Result<Option<(u64, u64)>, StoreError> {
            self.inner.last_seq(room).await
        }
        async fn history(
            &self,
            room: &str,
            before_seq: u64,
            limit: u32,
        ) -> Result<Vec<MessageRecord>, StoreError> {
            self.inner.history(room, before_seq, limit).await
        }
        async fn mark_deleted(&self, room: &str, seq: u64) -> Result<bool, StoreError> {
            self.inner.mark_deleted(room, seq).await
        }
        async fn load_reference(&self) -> Result<ReferenceData, StoreError> {
            self.inner.load_reference().await
        }
        async fn upsert_user(&self, u: &UserRecord) -> Result<(), StoreError> {
            self.inner.upsert_user(u).await
        }
        async fn upsert_filter(&self, f: &FilterRecord) -> Result<(), StoreError> {
            self.inner.upsert_filter(f).await
        }
        async fn add_ban(&self, b: &BanRecord) -> Result<(), StoreError> {
            self.inner.add_ban(b).await
        }
        async fn remove_bans(&self, user_id: &str) -> Result<u64, StoreError> {
            self.inner.remove_bans(user_id).await
        }
        async fn claim_owner(
            &self,
            claim: &crate::store::OwnerRecord,
            now_ms: u64,
        ) -> Result<crate::store::Claim, StoreError> {
            self.inner.claim_owner(claim, now_ms).await
        }
        async fn release_owner(&self, name: &str, owner: &str) -> Result<(), StoreError> {
            self.inner.release_owner(name, owner).await
        }
        async fn remove_ban(&self, user_id: &str, room: Option<&str>) -> Result<u64, StoreError> {
            self.inner.remove_ban(user_id, room).await
        }
        async fn remove_filter(&self, pattern: &str) -> Result<bool, StoreError> {
            self.inner.remove_filter(pattern).await
        }
        async fn remove_user(&self, id: &str) -> Result<bool, StoreError> {
            self.inner.remove_user(id).await
        }
    }

    struct Quiet;
    impl Observer for Quiet {}

    pub async fn flaky(outages: usize) -> (tempfile::TempDir, Arc<Flaky>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = RedbStore::open(dir.path()).await.expect("open");
        let store = Arc::new(Flaky {
            inner,
            outages: AtomicUsize::new(outages),
            calls: AtomicUsize::new(0),
        });
        (dir, store)
    }

    fn rec(room: &str, seq: u64, text: &str) -> MessageRecord {
        MessageRecord {
            room: room.into(),
            epoch: 1,
            seq,
            user_id: "u".into(),
            name: "U".into(),
            text: text.into(),
            ts: seq,
            deleted: false,
        }
    }

    #[tokio::test]
    async fn a_poison_record_fails_only_itself() {
        let (_dir, store) = flaky(0).await;
        let mut records: Vec<_> = (1..=40).map(|s| rec("a", s, "fine")).collect();
        records[16] = rec("a", 17, "poison");
        records.extend((1..=5).map(|s| rec("b", s, "fine")));
        records.push(rec("b", 6, "poison too"));
        let w = write(&*store, &records, &Quiet).await;
        let mut refused: Vec<_> = w
            .refused
            .iter()
            .map(|r| (r.room.as_str(), r.seq, r.why))
            .collect();
        refused.sort();
        assert_eq!(
            refused,
            [("a", 17, Refusal::NotStored), ("b", 6, Refusal::NotStored)]
        );
        assert_eq!(w.inserted, 44);
        let a = store.history("a", u64::MAX, 100).await.expect("history");
        let seqs: Vec<u64> = a.iter().map(|m| m.seq).collect();
        let expected: Vec<u64> = (1..=40).filter(|&s| s != 17).collect();
        assert_eq!(seqs, expected);
        assert_eq!(store.last_seq("b").await.expect("last"), Some((1, 5)));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_not_refused() {
        let (_dir, store) = flaky(3).await;
        let records: Vec<_> = (1..=10).map(|s| rec("a", s, "fine")).collect();
        let w = write(&*store, &records, &Quiet).await;
        assert!(w.refused.is_empty());
        assert_eq!(w.inserted, 10);
        assert_eq!(store.calls.load(Ordering::Acquire), 4);
    }

    #[tokio::test]
    async fn a_conflict_is_refused_and_a_resend_is_not() {
        let (_dir, store) = flaky(0).await;
        write(&*store, &[rec("a", 1, "one"), rec("a", 2, "two")], &Quiet).await;
        let w = write(&*store, &[rec("a", 1, "one"), rec("a", 2, "other")], &Quiet).await;
        assert_eq!(w.duplicates, 1);
        assert_eq!(w.refused.len(), 1);
        assert_eq!((w.refused[0].seq, w.refused[0].why), (2, Refusal::Conflict));
    }
}
