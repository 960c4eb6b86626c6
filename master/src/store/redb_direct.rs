//! Users across rooms in the embedded store.
//!
//! Tables (values are JSON):
//! - `conversations`: conversation id `-> Conversation` (both users, the
//!   last seq, each side's read marker, the last message)
//! - `direct_messages`: `(conversation, seq) -> DirectMessage`
//! - `user_conversations`: `(user, conversation) -> ()`: a user's
//!   conversations, for the summary
//! - `blocks`: `(user, blocked user) -> since ms`
//! - `room_reads`: `(room, user) -> seq`
//!
//! `append_dm` is one write transaction: the seq it allocates and the
//! message are written together (redb serializes write transactions).

use async_trait::async_trait;
use chat_shared::direct::{ConversationSummary, DirectMessage, DmSummary};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::StoreError;
use super::direct::{DirectStore, NewDm, side, sorted_pair};
use super::redb_store::{RedbStore, decode, encode};

pub(super) const CONVERSATIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("conversations");
pub(super) const DMS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("direct_messages");
pub(super) const USER_CONVS: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("user_conversations");
const BLOCKS: TableDefinition<(&str, &str), u64> = TableDefinition::new("blocks");
const ROOM_READS: TableDefinition<(&str, &str), u64> = TableDefinition::new("room_reads");

/// Creates the tables (called by `RedbStore::init`).
pub fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(CONVERSATIONS)?;
    txn.open_table(DMS)?;
    txn.open_table(USER_CONVS)?;
    txn.open_table(BLOCKS)?;
    txn.open_table(ROOM_READS)?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Conversation {
    users: [String; 2],
    seq: u64,
    #[serde(default)]
    read: [u64; 2],
    #[serde(default)]
    last: Option<DirectMessage>,
}

impl Conversation {
    pub(super) fn summary(self, id: &str, user: &str) -> Option<ConversationSummary> {
        let me = side(&self.users, user)?;
        Some(ConversationSummary {
            conversation: id.to_owned(),
            with: self.users[1 - me].clone(),
            unread: self.seq.saturating_sub(self.read[me]),
            last: self.last,
        })
    }
}

pub(super) fn get_conv(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<Conversation>, StoreError> {
    Ok(table
        .get(id)?
        .and_then(|v| decode::<Conversation>("conversations", &id, v.value())))
}

#[async_trait]
impl DirectStore for RedbStore {
    async fn append_dm(&self, m: NewDm) -> Result<DirectMessage, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let id = m.conversation();
            let stored = {
                let mut convs = txn.open_table(CONVERSATIONS)?;
                let mut conv = match get_conv(&convs, &id)? {
                    Some(c) => c,
                    None => {
                        let users = sorted_pair(&m.from, &m.to);
                        let mut links = txn.open_table(USER_CONVS)?;
                        links.insert((users[0].as_str(), id.as_str()), ())?;
                        links.insert((users[1].as_str(), id.as_str()), ())?;
                        Conversation {
                            users,
                            seq: 0,
                            read: [0, 0],
                            last: None,
                        }
                    }
                };
                conv.seq += 1;
                let stored = m.stored(conv.seq);
                // The sender has read their own conversation up to here.
                if let Some(me) = side(&conv.users, &stored.from) {
                    conv.read[me] = conv.seq;
                }
                conv.last = Some(stored.clone());
                let value = encode("direct message", &stored)?;
                txn.open_table(DMS)?
                    .insert((id.as_str(), stored.seq), value.as_slice())?;
                let value = encode("conversation", &conv)?;
                convs.insert(id.as_str(), value.as_slice())?;
                stored
            };
            txn.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn dm_history(
        &self,
        conversation: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<DirectMessage>, StoreError> {
        if limit == 0 || before == 0 {
            return Ok(Vec::new());
        }
        let id = conversation.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(DMS)?;
            let mut out = Vec::new();
            for entry in table.range((id.as_str(), 0)..(id.as_str(), before))?.rev() {
                let (k, v) = entry?;
                let key = k.value();
                if let Some(m) = decode::<DirectMessage>("direct_messages", &key, v.value()) {
                    out.push(m);
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

    async fn set_blocked(&self, user: &str, other: &str, blocked: bool) -> Result<(), StoreError> {
        let (user, other) = (user.to_owned(), other.to_owned());
        let now = crate::registry::now_ms();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            {
                let mut t = txn.open_table(BLOCKS)?;
                let key = (user.as_str(), other.as_str());
                if blocked {
                    t.insert(key, now)?;
                } else {
                    t.remove(key)?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, StoreError> {
        let (user, other) = (user.to_owned(), other.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(BLOCKS)?;
            Ok(t.get((user.as_str(), other.as_str()))?.is_some())
        })
        .await
    }

    async fn mark_dm_read(
        &self,
        user: &str,
        with: &str,
        seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        let id = chat_shared::direct::conversation_id(user, with);
        let user = user.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let marker = {
                let mut convs = txn.open_table(CONVERSATIONS)?;
                match get_conv(&convs, &id)? {
                    None => None,
                    Some(mut conv) => match side(&conv.users, &user) {
                        None => None,
                        Some(me) => {
                            let marker = conv.read[me].max(seq.min(conv.seq));
                            if marker != conv.read[me] {
                                conv.read[me] = marker;
                                let value = encode("conversation", &conv)?;
                                convs.insert(id.as_str(), value.as_slice())?;
                            }
                            Some(marker)
                        }
                    },
                }
            };
            txn.commit()?;
            Ok(marker)
        })
        .await
    }

    async fn mark_room_read(&self, room: &str, user: &str, seq: u64) -> Result<u64, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let marker = {
                let mut t = txn.open_table(ROOM_READS)?;
                let key = (room.as_str(), user.as_str());
                let old = t.get(key)?.map_or(0, |v| v.value());
                let marker = old.max(seq);
                if marker != old {
                    t.insert(key, marker)?;
                }
                marker
            };
            txn.commit()?;
            Ok(marker)
        })
        .await
    }

    async fn room_read(&self, room: &str, user: &str) -> Result<u64, StoreError> {
        let (room, user) = (room.to_owned(), user.to_owned());
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let t = txn.open_table(ROOM_READS)?;
            Ok(t.get((room.as_str(), user.as_str()))?
                .map_or(0, |v| v.value()))
        })
        .await
    }

    async fn dm_summary(&self, user: &str, limit: usize) -> Result<DmSummary, StoreError> {
        let user = user.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let links = txn.open_table(USER_CONVS)?;
            let convs = txn.open_table(CONVERSATIONS)?;
            let mut all = Vec::new();
            for entry in links.range((user.as_str(), "")..)? {
                let (k, _) = entry?;
                let (u, id) = k.value();
                if u != user {
                    break;
                }
                if let Some(s) = get_conv(&convs, id)?.and_then(|c| c.summary(id, &user)) {
                    all.push(s);
                }
            }
            let unread = all.iter().map(|c| c.unread).sum();
            all.sort_by_key(|c| std::cmp::Reverse(c.last.as_ref().map_or(0, |m| m.ts)));
            all.truncate(limit);
            Ok(DmSummary {
                unread,
                conversations: all,
            })
        })
        .await
    }
}
