//! The MongoDB backend (official driver). Database: the URI's default
//! database, else `chatserver`. Collections and indexes: docs/DATA.md.
//!
//! Uses only single-document writes and unordered `insert_many`: no
//! transactions, so it works on a standalone server (and on nx-27017, the
//! wire-compatible server the tests run against).

use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use super::mongo_docs::{self as docs, Malformed};
use super::{
    BanRecord, Claim, FilterRecord, InsertOutcome, MessageRecord, OwnerRecord, ReferenceData,
    RoomRecord, Store, StoreError, UserRecord,
};

/// Database used when the URI names none.
pub const DEFAULT_DATABASE: &str = "chatserver";
const COLLECTIONS: [&str; 6] = ["rooms", "messages", "users", "bans", "filters", "owners"];
const DUPLICATE_KEY: i32 = 11000;
const NAMESPACE_EXISTS: i32 = 48;

/// Connection settings beyond the URI.
#[derive(Debug, Clone)]
pub struct MongoOptions {
    /// How long an operation waits for a usable server before failing, unless
    /// the URI sets `serverSelectionTimeoutMS`. Short, so a down database
    /// errors quickly.
    pub server_selection_timeout: Duration,
    /// Overrides the URI's database.
    pub database: Option<String>,
}

impl Default for MongoOptions {
    fn default() -> Self {
        Self {
            server_selection_timeout: Duration::from_secs(2),
            database: None,
        }
    }
}

/// The MongoDB store.
pub struct MongoStore {
    db: Database,
}

impl MongoStore {
    /// Parses the URI and builds the client; the driver connects lazily, so
    /// this does not fail when the server is down (see [`Store::ping`]).
    pub async fn connect(uri: &str, opts: MongoOptions) -> Result<Self, StoreError> {
        let mut co = ClientOptions::parse(uri).await?;
        co.server_selection_timeout
            .get_or_insert(opts.server_selection_timeout);
        co.connect_timeout
            .get_or_insert(opts.server_selection_timeout);
        co.app_name.get_or_insert_with(|| "chatserver".to_owned());
        let name = opts
            .database
            .or_else(|| co.default_database.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let client = Client::with_options(co)?;
        let db = client.database(&name);
        tracing::info!(database = %name, "using MongoDB");
        Ok(Self { db })
    }

    /// The database in use.
    #[cfg(test)]
    pub fn database(&self) -> &Database {
        &self.db
    }

    pub(super) fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    /// Every document of `name` matching `filter` that reads as a record;
    /// the others are logged and skipped.
    async fn load<T>(
        &self,
        name: &'static str,
        filter: Document,
        read: fn(&Document) -> Result<T, Malformed>,
    ) -> Result<Vec<T>, StoreError> {
        let mut cursor = self.coll(name).find(filter).await?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            push_or_warn(&mut out, name, &d, read);
        }
        Ok(out)
    }

    /// Creates `keys` as an index unless an index on the same keys (with the
    /// same uniqueness) exists, whatever its name: a platform may have made
    /// it, and servers differ in how they treat a second create.
    pub(super) async fn ensure_index(
        &self,
        coll: &str,
        keys: Document,
        name: &str,
        unique: bool,
    ) -> Result<(), StoreError> {
        let c = self.coll(coll);
        let mut existing = c.list_indexes().await?;
        while let Some(ix) = existing.try_next().await? {
            let is_unique = ix.options.as_ref().and_then(|o| o.unique).unwrap_or(false);
            if same_keys(&ix.keys, &keys) && is_unique == unique {
                return Ok(());
            }
        }
        let options = IndexOptions::builder()
            .name(name.to_owned())
            .unique(unique)
            .build();
        c.create_index(IndexModel::builder().keys(keys).options(options).build())
            .await?;
        tracing::info!(collection = coll, index = name, "created an index");
        Ok(())
    }
}

impl MongoStore {
    /// Tells resends from conflicts among messages whose (room, seq) is
    /// taken, by reading the stored copies.
    async fn sort_duplicates(&self, taken: &[&MessageRecord]) -> Result<InsertOutcome, StoreError> {
        let mut out = InsertOutcome::default();
        let mut rooms: Vec<&str> = taken.iter().map(|m| m.room.as_str()).collect();
        rooms.sort_unstable();
        rooms.dedup();
        for room in rooms {
            let mine: Vec<&MessageRecord> =
                taken.iter().copied().filter(|m| m.room == room).collect();
            let seqs = mine
                .iter()
                .map(|m| docs::to_i64("message seq", m.seq))
                .collect::<Result<Vec<_>, _>>()?;
            let stored = self
                .load(
                    "messages",
                    doc! { "room": room, "seq": { "$in": seqs } },
                    docs::message_from_doc,
                )
                .await?;
            for m in mine {
                if stored.iter().any(|s| s.seq == m.seq && s.same_message(m)) {
                    out.duplicates += 1;
                } else {
                    out.conflicts.push((m.room.clone(), m.seq));
                }
            }
        }
        Ok(out)
    }
}

fn push_or_warn<T>(
    out: &mut Vec<T>,
    collection: &str,
    d: &Document,
    read: fn(&Document) -> Result<T, Malformed>,
) {
    match read(d) {
        Ok(v) => out.push(v),
        Err(reason) => tracing::warn!(
            collection,
            id = %docs::describe_id(d),
            %reason,
            "skipping a malformed document"
        ),
    }
}

/// Whether two index key documents name the same fields, in order, with the
/// same directions (1 / -1 in any numeric type).
fn same_keys(a: &Document, b: &Document) -> bool {
    fn dir(v: &Bson) -> Option<i64> {
        match *v {
            Bson::Int32(x) => Some(x.into()),
            Bson::Int64(x) => Some(x),
            Bson::Double(x) if x == 1.0 || x == -1.0 => Some(x as i64),
            _ => None,
        }
    }
    a.len() == b.len()
        && a.iter()
            .zip(b.iter())
            .all(|((ka, va), (kb, vb))| ka == kb && dir(va).is_some() && dir(va) == dir(vb))
}

/// The server's error code of a failed command, if it is one.
pub(super) fn command_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        _ => None,
    }
}

#[async_trait]
impl Store for MongoStore {
    fn kind(&self) -> &'static str {
        "mongodb"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    async fn init(&self) -> Result<(), StoreError> {
        let existing = self.db.list_collection_names().await?;
        for name in COLLECTIONS
            .into_iter()
            .chain(super::mongo_direct::COLLECTIONS)
        {
            if existing.iter().any(|c| c == name) {
                continue;
            }
            match self.db.create_collection(name).await {
                Ok(()) => tracing::info!(collection = name, "created a collection"),
                // Another master created it meanwhile.
                Err(e) if command_code(&e) == Some(NAMESPACE_EXISTS) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.ensure_index("messages", doc! { "room": 1, "seq": 1 }, "room_seq", true)
            .await?;
        self.ensure_index("bans", doc! { "user_id": 1 }, "user_id", false)
            .await?;
        self.init_direct().await?;
        Ok(())
    }

    async fn upsert_room(&self, r: &RoomRecord) -> Result<(), StoreError> {
        let d = docs::room_to_doc(r)?;
        self.coll("rooms")
            .replace_one(doc! { "_id": &r.name }, d)
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn remove_room(&self, name: &str) -> Result<(), StoreError> {
        self.coll("rooms").delete_one(doc! { "_id": name }).await?;
        Ok(())
    }

    async fn rooms(&self) -> Result<Vec<RoomRecord>, StoreError> {
        let mut rooms = self.load("rooms", doc! {}, docs::room_from_doc).await?;
        rooms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rooms)
    }

    async fn insert_messages(&self, batch: &[MessageRecord]) -> Result<InsertOutcome, StoreError> {
        if batch.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let docs = batch
            .iter()
            .map(|m| {
                super::test_hooks::check(m)?;
                docs::message_to_doc(m)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let total = docs.len() as u64;
        let err = match self.coll("messages").insert_many(docs).ordered(false).await {
            Ok(r) => {
                return Ok(InsertOutcome {
                    inserted: r.inserted_ids.len() as u64,
                    ..InsertOutcome::default()
                });
            }
            Err(e) => e,
        };
        // Unordered: every document was tried; those that failed are listed.
        // Only duplicate-key failures are expected: a resend, or a different
        // message at the same (room, seq), which the stored copy tells apart.
        if let ErrorKind::InsertMany(ime) = &*err.kind
            && ime.write_concern_error.is_none()
            && let Some(failed) = &ime.write_errors
            && failed.iter().all(|w| w.code == DUPLICATE_KEY)
        {
            let taken: Vec<&MessageRecord> =
                failed.iter().filter_map(|w| batch.get(w.index)).collect();
            let mut out = self.sort_duplicates(&taken).await?;
            out.inserted = total.saturating_sub(failed.len() as u64);
            return Ok(out);
        }
        Err(err.into())
    }

    async fn last_seq(&self, room: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let mut cursor = self
            .coll("messages")
            .find(doc! { "room": room })
            .sort(doc! { "seq": -1 })
            .projection(doc! { "_id": 0, "epoch": 1, "seq": 1 })
            .batch_size(8)
            .await?;
        while let Some(d) = cursor.try_next().await? {
            match docs::last_seq_from_doc(&d) {
                Ok(v) => return Ok(Some(v)),
                Err(reason) => {
                    tracing::warn!(collection = "messages", room, %reason, "skipping a malformed document");
                }
            }
        }
        Ok(None)
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
        let before = i64::try_from(before_seq).unwrap_or(i64::MAX);
        let mut cursor = self
            .coll("messages")
            .find(doc! { "room": room, "seq": { "$lt": before } })
            .sort(doc! { "seq": -1 })
            .limit(i64::from(limit))
            .await?;
        // A malformed message is skipped, so a page may be short.
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            push_or_warn(&mut out, "messages", &d, docs::message_from_doc);
        }
        out.reverse();
        Ok(out)
    }

    async fn mark_deleted(&self, room: &str, seq: u64) -> Result<bool, StoreError> {
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(false);
        };
        let r = self
            .coll("messages")
            .update_one(
                doc! { "room": room, "seq": seq },
                doc! { "$set": { "deleted": true } },
            )
            .await?;
        Ok(r.matched_count > 0)
    }

    async fn load_reference(&self) -> Result<ReferenceData, StoreError> {
        Ok(ReferenceData {
            users: self.load("users", doc! {}, docs::user_from_doc).await?,
            bans: self.load("bans", doc! {}, docs::ban_from_doc).await?,
            filters: self.load("filters", doc! {}, docs::filter_from_doc).await?,
        })
    }

    async fn upsert_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        self.coll("users")
            .replace_one(doc! { "_id": &u.id }, docs::user_to_doc(u))
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn upsert_filter(&self, f: &FilterRecord) -> Result<(), StoreError> {
        self.coll("filters")
            .replace_one(doc! { "pattern": &f.pattern }, docs::filter_to_doc(f))
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn add_ban(&self, b: &BanRecord) -> Result<(), StoreError> {
        self.coll("bans")
            .replace_one(docs::ban_scope(b), docs::ban_to_doc(b)?)
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn remove_bans(&self, user_id: &str) -> Result<u64, StoreError> {
        let r = self
            .coll("bans")
            .delete_many(doc! { "user_id": user_id })
            .await?;
        Ok(r.deleted_count)
    }

    async fn claim_owner(&self, claim: &OwnerRecord, now_ms: u64) -> Result<Claim, StoreError> {
        // Single-document operations only (no transactions): the unique
        // `_id` makes the first insert win; a takeover or renewal is one
        // conditional update, so two hosts never both succeed.
        let owners = self.coll("owners");
        let d = docs::owner_to_doc(claim)?;
        let mut set = d.clone();
        set.remove("_id");
        // A renewal: one update.
        let renewed = owners
            .update_one(
                doc! { "_id": &claim.name, "owner": &claim.owner },
                doc! { "$set": set.clone() },
            )
            .await?;
        if renewed.matched_count > 0 {
            return Ok(Claim::Claimed { taken_over: false });
        }
        match owners.insert_one(d).await {
            Ok(_) => return Ok(Claim::Claimed { taken_over: false }),
            Err(e) if command_code(&e) == Some(DUPLICATE_KEY) => {}
            Err(e) => return Err(e.into()),
        }
        let held = owners
            .find_one(doc! { "_id": &claim.name })
            .await?
            .map(|h| docs::owner_from_doc(&h));
        let filter = match &held {
            // Ours, or its lease has ended: replace it only as read (a
            // compare-and-swap: a renewal or claim meanwhile makes it miss).
            Some(Ok(h)) if h.owner == claim.owner || h.until_ms < now_ms => {
                doc! {
                    "_id": &claim.name,
                    "owner": &h.owner,
                    "until_ms": docs::to_i64("lease end", h.until_ms)?,
                }
            }
            Some(Ok(h)) => return Ok(Claim::Held(h.clone())),
            // Unreadable: take it only once nobody renews it.
            Some(Err(_)) | None => doc! { "_id": &claim.name },
        };
        let r = owners
            .update_one(filter, doc! { "$set": set })
            .upsert(held.is_none())
            .await?;
        if r.matched_count > 0 || r.upserted_id.is_some() {
            let taken_over = matches!(&held, Some(Ok(h)) if h.owner != claim.owner);
            return Ok(Claim::Claimed { taken_over });
        }
        // Someone renewed or claimed it meanwhile: report the holder.
        match owners.find_one(doc! { "_id": &claim.name }).await? {
            Some(h) => match docs::owner_from_doc(&h) {
                Ok(h) => Ok(Claim::Held(h)),
                Err(reason) => Err(StoreError::Invalid {
                    what: "owner",
                    reason,
                }),
            },
            None => self.claim_owner(claim, now_ms).await,
        }
    }

    async fn release_owner(&self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.coll("owners")
            .delete_one(doc! { "_id": name, "owner": owner })
            .await?;
        Ok(())
    }

    async fn remove_ban(&self, user_id: &str, room: Option<&str>) -> Result<u64, StoreError> {
        let scope = docs::ban_scope(&BanRecord {
            user_id: user_id.to_owned(),
            room: room.map(str::to_owned),
            until_ms: None,
            reason: None,
        });
        let r = self.coll("bans").delete_many(scope).await?;
        Ok(r.deleted_count)
    }

    async fn remove_filter(&self, pattern: &str) -> Result<bool, StoreError> {
        let r = self
            .coll("filters")
            .delete_many(doc! { "pattern": pattern })
            .await?;
        Ok(r.deleted_count > 0)
    }

    async fn remove_user(&self, id: &str) -> Result<bool, StoreError> {
        let r = self.coll("users").delete_one(doc! { "_id": id }).await?;
        Ok(r.deleted_count > 0)
    }
}
