//! The master's storage: the room catalog, message history and reference
//! data (users, bans, filters), in MongoDB when a URI is configured and in an
//! embedded redb file otherwise. Both backends implement [`Store`]; one test
//! suite (`suite.rs`) runs against each. `docs/DATA.md` describes the schema.

pub mod direct;
#[cfg(test)]
mod direct_suite;
pub mod health;
mod mongo_direct;
mod mongo_docs;
mod mongo_search;
pub mod mongo_store;
#[cfg(test)]
mod mongo_tests;
mod records;
mod redb_direct;
mod redb_search;
pub mod redb_store;
pub mod search;
#[cfg(test)]
mod search_suite;
#[cfg(test)]
mod suite;
pub mod test_hooks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

pub use direct::{DirectStore, NewDm};
pub use health::StoreHealth;
pub use mongo_store::{MongoOptions, MongoStore};
pub use records::{
    BanRecord, Claim, FilterAction, FilterRecord, InsertOutcome, MessageRecord, OwnerRecord,
    ReferenceData, RoomRecord, UserRecord,
};
pub use redb_store::RedbStore;
pub use search::{ConversationCursor, SearchStore, TextQuery};

/// What a storage operation can fail with.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot use data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("embedded database: {0}")]
    Redb(#[source] Box<redb::Error>),
    #[error("MongoDB: {0}")]
    Mongo(#[source] Box<mongodb::error::Error>),
    /// Holds the URI's scheme only: the rest may carry credentials.
    #[error("unsupported database URI scheme {0:?} (expected mongodb:// or mongodb+srv://)")]
    UnsupportedUri(String),
    /// A value this backend cannot store (e.g. an integer past i64 for BSON).
    #[error("cannot store {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("storage task failed: {0}")]
    Task(String),
}

/// MongoDB server error codes that say "try again" (the server is busy,
/// stepping down, shutting down, unreachable, or refuses our credentials
/// until an operator fixes them): anything else a write fails with is a
/// property of the document.
const MONGO_TRANSIENT_CODES: &[i32] = &[
    6, 7, 13, 18, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

impl StoreError {
    /// Whether retrying the same call may succeed (the database is down,
    /// slow or busy): writers retry these with backoff. A permanent error
    /// (an invalid or oversized record) fails the same way every time.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Io { .. } | Self::Task(_) => true,
            Self::Invalid { .. } | Self::UnsupportedUri(_) => false,
            Self::Redb(e) => !matches!(**e, redb::Error::ValueTooLarge(_)),
            Self::Mongo(e) => mongo_transient(e),
        }
    }
}

fn mongo_transient(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    let code_transient = |c: i32| MONGO_TRANSIENT_CODES.contains(&c);
    match &*e.kind {
        ErrorKind::InvalidArgument { .. }
        | ErrorKind::BsonSerialization(_)
        | ErrorKind::BsonDeserialization(_) => false,
        ErrorKind::Command(c) => code_transient(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => code_transient(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => true,
        ErrorKind::InsertMany(ime) => {
            ime.write_concern_error.is_some()
                || ime
                    .write_errors
                    .as_ref()
                    .is_none_or(|w| w.iter().any(|w| code_transient(w.code)))
        }
        _ => true,
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        Self::Redb(Box::new(e))
    }
}

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        Self::Mongo(Box::new(e))
    }
}

/// A storage backend. Every method is safe to call concurrently.
#[async_trait]
pub trait Store: DirectStore + SearchStore + Send + Sync + 'static {
    /// `"redb"` or `"mongodb"`.
    fn kind(&self) -> &'static str;

    /// Whether the database answers.
    #[cfg_attr(not(test), allow(dead_code))]
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates the tables/collections and indexes; idempotent.
    async fn init(&self) -> Result<(), StoreError>;

    /// Creates or replaces the catalog entry of `r.name`.
    async fn upsert_room(&self, r: &RoomRecord) -> Result<(), StoreError>;

    /// Removes a room from the catalog (its messages stay). Absent is fine.
    async fn remove_room(&self, name: &str) -> Result<(), StoreError>;

    /// The room catalog, by name.
    async fn rooms(&self) -> Result<Vec<RoomRecord>, StoreError>;

    /// Stores a batch of messages. A message whose (room, seq) is already
    /// stored (before or earlier in the same batch) is not written again and
    /// is counted in [`InsertOutcome::duplicates`], so a retried batch is
    /// idempotent. redb writes the batch in one transaction (all or nothing);
    /// MongoDB inserts unordered (a failure other than a duplicate is `Err`,
    /// and the other documents of the batch may have been written).
    async fn insert_messages(&self, batch: &[MessageRecord]) -> Result<InsertOutcome, StoreError>;

    /// `(epoch, seq)` of the room's message with the highest seq.
    async fn last_seq(&self, room: &str) -> Result<Option<(u64, u64)>, StoreError>;

    /// The newest `limit` messages of `room` with `seq < before_seq`, in
    /// ascending seq order (deleted ones included, flagged).
    async fn history(
        &self,
        room: &str,
        before_seq: u64,
        limit: u32,
    ) -> Result<Vec<MessageRecord>, StoreError>;

    /// Flags a message deleted; `false` when there is no such message.
    async fn mark_deleted(&self, room: &str, seq: u64) -> Result<bool, StoreError>;

    /// Users, bans (expired ones included) and filters. Malformed entries are
    /// skipped with a warning.
    async fn load_reference(&self) -> Result<ReferenceData, StoreError>;

    /// Creates or replaces a user.
    async fn upsert_user(&self, u: &UserRecord) -> Result<(), StoreError>;

    /// Creates or replaces the filter with `f.pattern`.
    async fn upsert_filter(&self, f: &FilterRecord) -> Result<(), StoreError>;

    /// Adds a ban; it replaces an existing ban of the same user with the same
    /// scope (same room, or both every room).
    async fn add_ban(&self, b: &BanRecord) -> Result<(), StoreError>;

    /// Removes every ban of a user; returns how many were removed.
    async fn remove_bans(&self, user_id: &str) -> Result<u64, StoreError>;

    /// Claims (or renews) room `claim.name` for `claim.owner` until
    /// `claim.until_ms`, atomically across hosts sharing the store: it
    /// succeeds when the name is unclaimed, already `claim.owner`'s, or its
    /// lease ended before `now_ms`; otherwise it returns the live holder.
    async fn claim_owner(&self, claim: &OwnerRecord, now_ms: u64) -> Result<Claim, StoreError>;

    /// Gives up `owner`'s claim on `name` (absent, or another's: nothing).
    async fn release_owner(&self, name: &str, owner: &str) -> Result<(), StoreError>;

    /// Removes the ban of a user with exactly this scope (`room` `None`: the
    /// every-room ban), leaving their other bans; returns how many were
    /// removed (0 or 1).
    async fn remove_ban(&self, user_id: &str, room: Option<&str>) -> Result<u64, StoreError>;

    /// Removes the word filter with this pattern; whether there was one.
    async fn remove_filter(&self, pattern: &str) -> Result<bool, StoreError>;

    /// Removes a user profile; whether there was one.
    async fn remove_user(&self, id: &str) -> Result<bool, StoreError>;
}

/// Opens the store: MongoDB when `uri` is a `mongodb://` or `mongodb+srv://`
/// URI, else the embedded database `<data_dir>/chatserver.redb`. Call
/// [`Store::init`] before use.
pub async fn open(uri: Option<&str>, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    match uri.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) if u.starts_with("mongodb://") || u.starts_with("mongodb+srv://") => {
            let store = MongoStore::connect(u, MongoOptions::default()).await?;
            Ok(Arc::new(store))
        }
        Some(u) => {
            let scheme = u.split_once("://").map_or("", |(s, _)| s);
            Err(StoreError::UnsupportedUri(scheme.to_owned()))
        }
        None => {
            let store = RedbStore::open(data_dir).await?;
            Ok(Arc::new(store))
        }
    }
}
