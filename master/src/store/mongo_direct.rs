//! Users across rooms in MongoDB (docs/DATA.md, "Users across rooms").
//!
//! Single-document operations only, like the rest of this backend: the seq
//! of a conversation comes from one `findOneAndUpdate` with `$inc` on its
//! `conversations` document (atomic on any server, shared by every host),
//! then the message is inserted into `direct_messages`, unique on
//! (conversation, seq).

use async_trait::async_trait;
use chat_shared::direct::{ConversationSummary, DirectMessage, DmSummary};
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::ReturnDocument;

use super::StoreError;
use super::direct::{DirectStore, NewDm, side, sorted_pair};
use super::mongo_docs::{as_ms, as_u64, to_i64};
use super::mongo_store::MongoStore;

pub const COLLECTIONS: [&str; 4] = ["conversations", "direct_messages", "blocks", "room_reads"];
const DUPLICATE_KEY: i32 = 11000;

/// The read-marker field of side 0 or 1 of a conversation.
fn read_field(side: usize) -> &'static str {
    if side == 0 { "read_a" } else { "read_b" }
}

fn dm_to_doc(m: &DirectMessage) -> Result<Document, StoreError> {
    Ok(doc! {
        "conversation": &m.conversation,
        "seq": to_i64("dm seq", m.seq)?,
        "from": &m.from,
        "from_name": &m.from_name,
        "to": &m.to,
        "text": &m.text,
        "ts": Bson::DateTime(DateTime::from_millis(to_i64("dm ts", m.ts)?)),
    })
}

pub(super) fn dm_from_doc(d: &Document) -> Result<DirectMessage, String> {
    let s = |k: &str| {
        d.get_str(k)
            .map(str::to_owned)
            .map_err(|_| format!("missing or bad {k}"))
    };
    Ok(DirectMessage {
        conversation: s("conversation")?,
        seq: d.get("seq").and_then(as_u64).ok_or("missing or bad seq")?,
        from: s("from")?,
        from_name: s("from_name").unwrap_or_default(),
        to: s("to")?,
        text: s("text")?,
        ts: d.get("ts").and_then(as_ms).unwrap_or(0),
    })
}

/// A conversation document: (users, seq, read markers, last message).
pub(super) struct Conv {
    pub(super) id: String,
    pub(super) users: [String; 2],
    pub(super) seq: u64,
    pub(super) read: [u64; 2],
    pub(super) last: Option<DirectMessage>,
}

pub(super) fn conv_from_doc(d: &Document) -> Result<Conv, String> {
    let id = d.get_str("_id").map_err(|_| "bad _id")?.to_owned();
    let users = d.get_array("users").map_err(|_| "missing users")?;
    let user = |i: usize| {
        users
            .get(i)
            .and_then(Bson::as_str)
            .map(str::to_owned)
            .ok_or_else(|| "bad users".to_owned())
    };
    let num = |k: &str| d.get(k).and_then(as_u64).unwrap_or(0);
    Ok(Conv {
        users: [user(0)?, user(1)?],
        seq: num("seq"),
        read: [num("read_a"), num("read_b")],
        last: d
            .get_document("last")
            .ok()
            .and_then(|l| dm_from_doc(l).ok()),
        id,
    })
}

impl MongoStore {
    /// The direct-message indexes (called by `init`).
    pub(super) async fn init_direct(&self) -> Result<(), StoreError> {
        self.ensure_index(
            "direct_messages",
            doc! { "conversation": 1, "seq": 1 },
            "conversation_seq",
            true,
        )
        .await?;
        self.ensure_index(
            "conversations",
            doc! { "users": 1, "ts": -1 },
            "users_ts",
            false,
        )
        .await?;
        self.ensure_index(
            "blocks",
            doc! { "user": 1, "blocked": 1 },
            "user_blocked",
            true,
        )
        .await?;
        self.ensure_index(
            "room_reads",
            doc! { "room": 1, "user": 1 },
            "room_user",
            true,
        )
        .await?;
        Ok(())
    }

    /// The next seq of a conversation, from its document (created on the
    /// first message).
    async fn next_seq(&self, id: &str, users: &[String; 2]) -> Result<u64, StoreError> {
        let convs = self.coll("conversations");
        let mut tries = 0;
        loop {
            let r = convs
                .find_one_and_update(
                    doc! { "_id": id },
                    doc! {
                        "$inc": { "seq": 1_i64 },
                        // `$set`, not `$setOnInsert` (the same value every
                        // time; some wire-compatible servers skip the latter).
                        "$set": { "users": [&users[0], &users[1]] },
                    },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match r {
                Ok(Some(d)) => {
                    return d.get("seq").and_then(as_u64).ok_or(StoreError::Invalid {
                        what: "conversation",
                        reason: "seq is not a number".into(),
                    });
                }
                Ok(None) => {
                    return Err(StoreError::Invalid {
                        what: "conversation",
                        reason: "no document after an upsert".into(),
                    });
                }
                // Two first messages at once: one upsert loses the insert
                // race; the document exists now.
                Err(e)
                    if tries == 0
                        && super::mongo_store::command_code(&e) == Some(DUPLICATE_KEY) =>
                {
                    tries += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[async_trait]
impl DirectStore for MongoStore {
    async fn append_dm(&self, m: NewDm) -> Result<DirectMessage, StoreError> {
        let id = m.conversation();
        let users = sorted_pair(&m.from, &m.to);
        let seq = self.next_seq(&id, &users).await?;
        let stored = m.stored(seq);
        let d = dm_to_doc(&stored)?;
        self.coll("direct_messages").insert_one(d.clone()).await?;
        let seq_i = to_i64("dm seq", seq)?;
        let me = side(&users, &stored.from).unwrap_or(0);
        let mut last = d;
        last.remove("_id");
        // The latest message wins the summary, whatever order the writes
        // of concurrent senders land in.
        let newer = self
            .coll("conversations")
            .update_one(
                doc! { "_id": &id, "$or": [ { "last_seq": { "$lt": seq_i } }, { "last_seq": { "$exists": false } } ] },
                doc! {
                    "$set": { "last": last, "last_seq": seq_i, "ts": Bson::DateTime(DateTime::from_millis(to_i64("dm ts", stored.ts)?)) },
                    "$max": { read_field(me): seq_i },
                },
            )
            .await?;
        if newer.matched_count == 0 {
            self.coll("conversations")
                .update_one(
                    doc! { "_id": &id },
                    doc! { "$max": { read_field(me): seq_i } },
                )
                .await?;
        }
        Ok(stored)
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
        let before = i64::try_from(before).unwrap_or(i64::MAX);
        let mut cursor = self
            .coll("direct_messages")
            .find(doc! { "conversation": conversation, "seq": { "$lt": before } })
            .sort(doc! { "seq": -1 })
            .limit(i64::from(limit))
            .await?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            match dm_from_doc(&d) {
                Ok(m) => out.push(m),
                Err(reason) => {
                    tracing::warn!(collection = "direct_messages", %reason, "skipping a malformed document")
                }
            }
        }
        out.reverse();
        Ok(out)
    }

    async fn set_blocked(&self, user: &str, other: &str, blocked: bool) -> Result<(), StoreError> {
        let blocks = self.coll("blocks");
        let key = doc! { "user": user, "blocked": other };
        if blocked {
            let now = to_i64("block time", crate::registry::now_ms())?;
            blocks
                .replace_one(
                    key,
                    doc! { "user": user, "blocked": other, "ts": Bson::DateTime(DateTime::from_millis(now)) },
                )
                .upsert(true)
                .await?;
        } else {
            blocks.delete_many(key).await?;
        }
        Ok(())
    }

    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, StoreError> {
        Ok(self
            .coll("blocks")
            .find_one(doc! { "user": user, "blocked": other })
            .await?
            .is_some())
    }

    async fn mark_dm_read(
        &self,
        user: &str,
        with: &str,
        seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        let id = chat_shared::direct::conversation_id(user, with);
        let Some(d) = self
            .coll("conversations")
            .find_one(doc! { "_id": &id })
            .await?
        else {
            return Ok(None);
        };
        let conv = conv_from_doc(&d).map_err(|reason| StoreError::Invalid {
            what: "conversation",
            reason,
        })?;
        let Some(me) = side(&conv.users, user) else {
            return Ok(None);
        };
        let marker = conv.read[me].max(seq.min(conv.seq));
        if marker != conv.read[me] {
            self.coll("conversations")
                .update_one(
                    doc! { "_id": &id },
                    doc! { "$max": { read_field(me): to_i64("read marker", marker)? } },
                )
                .await?;
        }
        Ok(Some(marker))
    }

    async fn mark_room_read(&self, room: &str, user: &str, seq: u64) -> Result<u64, StoreError> {
        let d = self
            .coll("room_reads")
            .find_one_and_update(
                doc! { "room": room, "user": user },
                doc! { "$max": { "seq": to_i64("read marker", seq)? } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await?;
        Ok(d.and_then(|d| d.get("seq").and_then(as_u64)).unwrap_or(seq))
    }

    async fn room_read(&self, room: &str, user: &str) -> Result<u64, StoreError> {
        Ok(self
            .coll("room_reads")
            .find_one(doc! { "room": room, "user": user })
            .await?
            .and_then(|d| d.get("seq").and_then(as_u64))
            .unwrap_or(0))
    }

    async fn dm_summary(&self, user: &str, limit: usize) -> Result<DmSummary, StoreError> {
        let mut cursor = self
            .coll("conversations")
            .find(doc! { "users": user })
            .sort(doc! { "ts": -1 })
            .await?;
        let mut summary = DmSummary::default();
        while let Some(d) = cursor.try_next().await? {
            let conv = match conv_from_doc(&d) {
                Ok(c) => c,
                Err(reason) => {
                    tracing::warn!(collection = "conversations", %reason, "skipping a malformed document");
                    continue;
                }
            };
            let Some(me) = side(&conv.users, user) else {
                continue;
            };
            let unread = conv.seq.saturating_sub(conv.read[me]);
            summary.unread += unread;
            if summary.conversations.len() < limit {
                summary.conversations.push(ConversationSummary {
                    conversation: conv.id,
                    with: conv.users[1 - me].clone(),
                    unread,
                    last: conv.last,
                });
            }
        }
        Ok(summary)
    }
}
