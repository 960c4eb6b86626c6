//! The embedded backend: one redb file, `<data_dir>/chatserver.redb`.
//!
//! Tables (values are JSON, so fields can be added compatibly):
//! - `meta`: `&str -> u64` (`schema_version`)
//! - `rooms`: room name `-> RoomRecord`
//! - `messages`: `(room, seq) -> StoredMessage`: a room's messages are
//!   contiguous and in seq order, so paging and "last seq" are range scans
//! - `users`: user id `-> UserRecord`
//! - `bans`: `(user_id, Option<room>) -> StoredBan`: one ban per user and
//!   scope (`None` = every room sorts first)
//! - `filters`: pattern `-> FilterRecord`
//! - `owners`: room name `-> OwnerRecord` (which host owns the name)
//! - direct messages, blocks and read markers: `redb_direct.rs`
//!
//! redb is synchronous: every operation runs in `spawn_blocking`, and
//! `insert_messages` is one write transaction.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{
    BanRecord, Claim, FilterRecord, InsertOutcome, MessageRecord, OwnerRecord, ReferenceData,
    RoomRecord, Store, StoreError, UserRecord,
};

/// The database file's name in the data directory.
pub const FILE_NAME: &str = "chatserver.redb";
const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");
pub(super) const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const BANS: TableDefinition<(&str, Option<&str>), &[u8]> = TableDefinition::new("bans");
const FILTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("filters");
const OWNERS: TableDefinition<&str, &[u8]> = TableDefinition::new("owners");

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// A message as stored: room and seq are the key.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredMessage {
    epoch: u64,
    user_id: String,
    name: String,
    text: String,
    ts: u64,
    #[serde(default)]
    deleted: bool,
}

impl StoredMessage {
    fn from_record(m: &MessageRecord) -> Self {
        Self {
            epoch: m.epoch,
            user_id: m.user_id.clone(),
            name: m.name.clone(),
            text: m.text.clone(),
            ts: m.ts,
            deleted: m.deleted,
        }
    }

    pub(super) fn into_record(self, room: &str, seq: u64) -> MessageRecord {
        MessageRecord {
            room: room.to_owned(),
            epoch: self.epoch,
            seq,
            user_id: self.user_id,
            name: self.name,
            text: self.text,
            ts: self.ts,
            deleted: self.deleted,
        }
    }
}

/// A ban as stored: user and room are the key.
#[derive(Serialize, Deserialize)]
struct StoredBan {
    #[serde(default)]
    until_ms: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

pub(super) fn encode<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Invalid {
        what,
        reason: e.to_string(),
    })
}

/// Decodes a stored value; a value that does not decode is logged and skipped.
pub(super) fn decode<T: DeserializeOwned>(
    table: &str,
    key: &dyn std::fmt::Debug,
    bytes: &[u8],
) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(table, key = ?key, error = %e, "skipping a malformed stored value");
            None
        }
    }
}

/// The embedded store.
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl RedbStore {
    /// Opens (creating if needed) `<data_dir>/chatserver.redb` and its tables.
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io)?;
        let path = data_dir.join(FILE_NAME);
        let file = path.clone();
        let db = tokio::task::spawn_blocking(move || Database::create(file))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        let store = Self {
            db: Arc::new(db),
            path,
        };
        store.init().await?;
        tracing::info!(path = %store.path.display(), "opened the embedded database");
        Ok(store)
    }

    /// The database file.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[async_trait]
impl Store for RedbStore {
    fn kind(&self) -> &'static str {
        "redb"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read()?;
            txn.open_table(META)?;
            Ok(())
        })
        .await
    }

    async fn init(&self) -> Result<(), StoreError> {
        self.blocking(|db| {
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                if meta.get("schema_version")?.is_none() {
                    meta.insert("schema_version", SCHEMA_VERSION)?;
                }
                txn.open_table(ROOMS)?;
                txn.open_table(MESSAGES)?;
                txn.open_table(USERS)?;
                txn.open_table(BANS)?;
                txn.open_table(FILTERS)?;
                txn.open_table(OWNERS)?;
                super::redb_direct::create_tables(&txn)?;
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn upsert_room(&self, r: &RoomRecord) -> Result<(), StoreError> {
        let value = encode("room", r)?;
        let name = r.name.clone();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(ROOMS)?
                .insert(name.as_str(), value.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn remove_room(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(ROOMS)?.remove(name.as_str())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn rooms(&self) -> Result<Vec<RoomRecord>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ROOMS)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                let name = k.value();
                if let Some(mut r) = decode::<RoomRecord>("rooms", &name, v.value()) {
                    r.name = name.to_owned();
                    out.push(r);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn insert_messages(&self, batch: &[MessageRecord]) -> Result<InsertOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let rows = batch
            .iter()
            .map(|m| {
                super::test_hooks::check(m)?;
                let value = encode("message", &StoredMessage::from_record(m))?;
                Ok((m.clone(), value))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let mut out = InsertOutcome::default();
            {
                let mut table = txn.open_table(MESSAGES)?;
                for (m, value) in &rows {
                    let key = (m.room.as_str(), m.seq);
                    let existing = table.get(key)?.map(|v| v.value().to_vec());
                    match existing {
                        None => {
                            table.insert(key, value.as_slice())?;
                            out.inserted += 1;
                        }
                        Some(bytes) => {
                            let same = decode::<StoredMessage>("messages", &key, &bytes)
                                .is_some_and(|s| s.into_record(&m.room, m.seq).same_message(m));
                            if same {
                                out.duplicates += 1;
                            } else {
                                out.conflicts.push((m.room.clone(), m.seq));
                            }
                        }
                    }
                }
            }
            txn.commit()?;
            Ok(out)
        })
        .await
    }

    async fn last_seq(&self, room: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(MESSAGES)?;
            let range = table.range((room.as_str(), 0)..=(room.as_str(), u64::MAX))?;
            for entry in range.rev() {
                let (k, v) = entry?;
                let seq = k.value().1;
                if let Some(m) = decode::<StoredMessage>("messages", &(&room, seq), v.value()) {
                    return Ok(Some((m.epoch, seq)));
                }
            }
            Ok(None)
        })
        .await
    }

    async fn history(
        &self,
        room: &str,
        before_seq: u64,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        if limit == 0 || before_seq == 0 {
            return Ok(Vec::new());
        }
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(MESSAGES)?;
            let range = table.range((room.as_str(), 0)..(room.as_str(), before_seq))?;
            let mut out = Vec::new();
            for entry in range.rev() {
                let (k, v) = entry?;
                let seq = k.value().1;
                if let Some(m) = decode::<StoredMessage>("messages", &(&room, seq), v.value()) {
                    out.push(m.into_record(&room, seq));
                    if out.len() >= limit as usize {
                        break;
                    }
                }
            }
            out.reverse();
            Ok(out)
        })
        .await
    }

    async fn mark_deleted(&self, room: &str, seq: u64) -> Result<bool, StoreError> {
        let room = room.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let found = {
                let mut table = txn.open_table(MESSAGES)?;
                let key = (room.as_str(), seq);
                let stored = match table.get(key)? {
                    Some(v) => decode::<StoredMessage>("messages", &key, v.value()),
                    None => None,
                };
                match stored {
                    Some(mut m) => {
                        if !m.deleted {
                            m.deleted = true;
                            let value = encode("message", &m)?;
                            table.insert(key, value.as_slice())?;
                        }
                        true
                    }
                    None => false,
                }
            };
            txn.commit()?;
            Ok(found)
        })
        .await
    }

    async fn load_reference(&self) -> Result<ReferenceData, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read()?;
            let mut data = ReferenceData::default();
            for entry in txn.open_table(USERS)?.iter()? {
                let (k, v) = entry?;
                let id = k.value();
                if let Some(mut u) = decode::<UserRecord>("users", &id, v.value()) {
                    u.id = id.to_owned();
                    data.users.push(u);
                }
            }
            for entry in txn.open_table(BANS)?.iter()? {
                let (k, v) = entry?;
                let (user_id, room) = k.value();
                if let Some(b) = decode::<StoredBan>("bans", &(user_id, room), v.value()) {
                    data.bans.push(BanRecord {
                        user_id: user_id.to_owned(),
                        room: room.map(str::to_owned),
                        until_ms: b.until_ms,
                        reason: b.reason,
                    });
                }
            }
            for entry in txn.open_table(FILTERS)?.iter()? {
                let (k, v) = entry?;
                let pattern = k.value();
                if let Some(mut f) = decode::<FilterRecord>("filters", &pattern, v.value()) {
                    f.pattern = pattern.to_owned();
                    data.filters.push(f);
                }
            }
            Ok(data)
        })
        .await
    }

    async fn upsert_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        let value = encode("user", u)?;
        let id = u.id.clone();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(USERS)?
                .insert(id.as_str(), value.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn upsert_filter(&self, f: &FilterRecord) -> Result<(), StoreError> {
        let value = encode("filter", f)?;
        let pattern = f.pattern.clone();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(FILTERS)?
                .insert(pattern.as_str(), value.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn add_ban(&self, b: &BanRecord) -> Result<(), StoreError> {
        let value = encode(
            "ban",
            &StoredBan {
                until_ms: b.until_ms,
                reason: b.reason.clone(),
            },
        )?;
        let (user_id, room) = (b.user_id.clone(), b.room.clone());
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            txn.open_table(BANS)?
                .insert((user_id.as_str(), room.as_deref()), value.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn remove_bans(&self, user_id: &str) -> Result<u64, StoreError> {
        let user_id = user_id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let removed = {
                let mut table = txn.open_table(BANS)?;
                let mut rooms: Vec<Option<String>> = Vec::new();
                for entry in table.range((user_id.as_str(), None)..)? {
                    let (k, _) = entry?;
                    let (user, room) = k.value();
                    if user != user_id {
                        break;
                    }
                    rooms.push(room.map(str::to_owned));
                }
                for room in &rooms {
                    table.remove((user_id.as_str(), room.as_deref()))?;
                }
                rooms.len() as u64
            };
            txn.commit()?;
            Ok(removed)
        })
        .await
    }

    async fn claim_owner(&self, claim: &OwnerRecord, now_ms: u64) -> Result<Claim, StoreError> {
        let claim = claim.clone();
        let value = encode("owner", &claim)?;
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let outcome = {
                let mut table = txn.open_table(OWNERS)?;
                let held = table
                    .get(claim.name.as_str())?
                    .and_then(|v| decode::<OwnerRecord>("owners", &claim.name, v.value()));
                match held {
                    Some(h) if h.owner != claim.owner && h.until_ms >= now_ms => Claim::Held(h),
                    held => {
                        table.insert(claim.name.as_str(), value.as_slice())?;
                        Claim::Claimed {
                            taken_over: held.is_some_and(|h| h.owner != claim.owner),
                        }
                    }
                }
            };
            txn.commit()?;
            Ok(outcome)
        })
        .await
    }

    async fn release_owner(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(OWNERS)?;
                let mine = table
                    .get(name.as_str())?
                    .and_then(|v| decode::<OwnerRecord>("owners", &name, v.value()))
                    .is_some_and(|h| h.owner == owner);
                if mine {
                    table.remove(name.as_str())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn remove_ban(&self, user_id: &str, room: Option<&str>) -> Result<u64, StoreError> {
        let (user_id, room) = (user_id.to_owned(), room.map(str::to_owned));
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let removed = txn
                .open_table(BANS)?
                .remove((user_id.as_str(), room.as_deref()))?
                .is_some();
            txn.commit()?;
            Ok(u64::from(removed))
        })
        .await
    }

    async fn remove_filter(&self, pattern: &str) -> Result<bool, StoreError> {
        let pattern = pattern.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let removed = txn.open_table(FILTERS)?.remove(pattern.as_str())?.is_some();
            txn.commit()?;
            Ok(removed)
        })
        .await
    }

    async fn remove_user(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let removed = txn.open_table(USERS)?.remove(id.as_str())?.is_some();
            txn.commit()?;
            Ok(removed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_redb_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(dir.path()).await.expect("open");
        super::super::suite::run_all(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn store_redb_persists_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let msg = MessageRecord {
            room: "lobby".into(),
            epoch: 3,
            seq: 7,
            user_id: "u1".into(),
            name: "Ann".into(),
            text: "hello".into(),
            ts: 1_700_000_000_000,
            deleted: false,
        };
        {
            let store = RedbStore::open(dir.path()).await.expect("open");
            store
                .insert_messages(std::slice::from_ref(&msg))
                .await
                .expect("insert");
        }
        let store = RedbStore::open(dir.path()).await.expect("reopen");
        assert_eq!(store.path(), dir.path().join(FILE_NAME));
        assert_eq!(store.last_seq("lobby").await.expect("last"), Some((3, 7)));
        assert_eq!(
            store.history("lobby", u64::MAX, 10).await.expect("history"),
            vec![msg]
        );
    }

    #[tokio::test]
    async fn store_redb_skips_undecodable_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RedbStore::open(dir.path()).await.expect("open");
        store
            .upsert_user(&UserRecord {
                id: "ok".into(),
                name: "Ok".into(),
                roles: vec![],
            })
            .await
            .expect("user");
        store
            .blocking(|db| {
                let txn = db.begin_write()?;
                txn.open_table(USERS)?
                    .insert("bad", b"{not json".as_slice())?;
                txn.open_table(MESSAGES)?
                    .insert(("r", 2), b"[]".as_slice())?;
                txn.commit()?;
                Ok(())
            })
            .await
            .expect("raw write");
        store
            .insert_messages(&[MessageRecord {
                room: "r".into(),
                epoch: 1,
                seq: 1,
                user_id: "u".into(),
                name: "U".into(),
                text: "t".into(),
                ts: 1,
                deleted: false,
            }])
            .await
            .expect("insert");
        let users = store.load_reference().await.expect("load").users;
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].id, "ok");
        let history = store.history("r", u64::MAX, 10).await.expect("history");
        assert_eq!(history.len(), 1);
        assert_eq!(store.last_seq("r").await.expect("last"), Some((1, 1)));
    }

    #[tokio::test]
    async fn store_open_picks_the_backend() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = super::super::open(None, dir.path()).await.expect("open");
        assert_eq!(store.kind(), "redb");
        drop(store);
        let store = super::super::open(Some("  "), dir.path())
            .await
            .expect("open");
        assert_eq!(store.kind(), "redb");
        drop(store);
        let err = match super::super::open(Some("postgres://u:secret@h/db"), dir.path()).await {
            Ok(_) => panic!("a postgres URI must be refused"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("postgres"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }
}
