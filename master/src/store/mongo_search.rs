//! Paged reads and text search in MongoDB (`search.rs`). Every query names
//! one conversation or one room and a seq bound, so it runs on the unique
//! `(conversation, seq)` / `(room, seq)` index; a search adds an escaped
//! `{$regex, $options: "i"}` on `text` (the operator form, not a BSON regex
//! value, which wire-compatible servers such as nx-27017 do not take).

use async_trait::async_trait;
use chat_shared::direct::{ConversationSummary, DirectMessage};
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};

use super::direct::side;
use super::mongo_direct::{conv_from_doc, dm_from_doc};
use super::mongo_docs::{message_from_doc, to_i64};
use super::mongo_store::MongoStore;
use super::search::{ConversationCursor, SearchStore, TextQuery};
use super::{MessageRecord, StoreError};

/// `{"$regex": …, "$options": "i"}` matching the needle literally.
fn text_filter(q: &TextQuery) -> Document {
    doc! { "$regex": q.regex(), "$options": "i" }
}

fn seq_bound(before: u64) -> i64 {
    i64::try_from(before).unwrap_or(i64::MAX)
}

fn warn_malformed(collection: &str, reason: &str) {
    tracing::warn!(collection, %reason, "skipping a malformed document");
}

impl MongoStore {
    /// The newest `limit` documents of `collection` matching `filter` (seq
    /// descending on the index), returned oldest first; malformed ones are
    /// skipped with a warning.
    async fn newest_page<T>(
        &self,
        collection: &str,
        filter: Document,
        limit: u32,
        parse: fn(&Document) -> Result<T, String>,
    ) -> Result<Vec<T>, StoreError> {
        let mut cursor = self
            .coll(collection)
            .find(filter)
            .sort(doc! { "seq": -1 })
            .limit(i64::from(limit))
            .await?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            match parse(&d) {
                Ok(m) => out.push(m),
                Err(reason) => warn_malformed(collection, &reason),
            }
        }
        out.reverse();
        Ok(out)
    }
}

#[async_trait]
impl SearchStore for MongoStore {
    async fn conversations_page(
        &self,
        user: &str,
        after: Option<&ConversationCursor>,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! { "users": user, "last": { "$exists": true } };
        if let Some(a) = after {
            // `$lte` on the date, the exact (ts, id) test below: nx-27017
            // compares dates to the second (its sort is exact), so the
            // server's answer may hold a few conversations of the cursor's
            // second that the page must skip.
            let ts = Bson::DateTime(DateTime::from_millis(to_i64("cursor ts", a.ts)?));
            filter.insert("ts", doc! { "$lte": ts });
        }
        let mut cursor = self
            .coll("conversations")
            .find(filter)
            .sort(doc! { "ts": -1, "_id": -1 })
            .batch_size(limit.saturating_add(16))
            .await?;
        let mut out = Vec::new();
        while out.len() < limit as usize {
            let Some(d) = cursor.try_next().await? else {
                break;
            };
            let conv = match conv_from_doc(&d) {
                Ok(c) => c,
                Err(reason) => {
                    warn_malformed("conversations", &reason);
                    continue;
                }
            };
            let ts = conv.last.as_ref().map_or(0, |m| m.ts);
            if after.is_some_and(|a| !a.precedes(ts, &conv.id)) {
                continue;
            }
            let Some(me) = side(&conv.users, user) else {
                continue;
            };
            out.push(ConversationSummary {
                conversation: conv.id,
                with: conv.users[1 - me].clone(),
                unread: conv.seq.saturating_sub(conv.read[me]),
                last: conv.last,
            });
        }
        Ok(out)
    }

    async fn dm_page(
        &self,
        conversation: &str,
        before: u64,
        limit: u32,
        q: Option<&TextQuery>,
    ) -> Result<Vec<DirectMessage>, StoreError> {
        if limit == 0 || before == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! { "conversation": conversation, "seq": { "$lt": seq_bound(before) } };
        if let Some(q) = q {
            filter.insert("text", text_filter(q));
        }
        self.newest_page("direct_messages", filter, limit, dm_from_doc)
            .await
    }

    async fn room_page(
        &self,
        room: &str,
        before: u64,
        limit: u32,
        q: Option<&TextQuery>,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        if limit == 0 || before == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! { "room": room, "seq": { "$lt": seq_bound(before) } };
        if let Some(q) = q {
            filter.insert("text", text_filter(q));
            // A deleted message's text is never searched. `1`: nx-27017
            // stores `$set: {deleted: true}` as an integer.
            filter.insert("deleted", doc! { "$nin": [true, 1_i32] });
        }
        self.newest_page("messages", filter, limit, message_from_doc)
            .await
    }
}
