//! Paged reads and text search in the embedded store (`search.rs`): each
//! read walks one conversation's or one room's key range backwards from
//! `before`, so a search costs the messages of that one range at most.

use async_trait::async_trait;
use chat_shared::direct::{ConversationSummary, DirectMessage};
use redb::ReadableDatabase;

use super::redb_direct::{CONVERSATIONS, DMS, USER_CONVS, get_conv};
use super::redb_store::{MESSAGES, RedbStore, StoredMessage, decode};
use super::search::{ConversationCursor, SearchStore, TextQuery};
use super::{MessageRecord, StoreError};

#[async_trait]
impl SearchStore for RedbStore {
    async fn conversations_page(
        &self,
        user: &str,
        after: Option<&ConversationCursor>,
        limit: u32,
    ) -> Result<Vec<ConversationSummary>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let user = user.to_owned();
        let after = after.cloned();
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
                let Some(s) = get_conv(&convs, id)?.and_then(|c| c.summary(id, &user)) else {
                    continue;
                };
                let Some(ts) = s.last.as_ref().map(|m| m.ts) else {
                    continue;
                };
                if after
                    .as_ref()
                    .is_none_or(|a| a.precedes(ts, &s.conversation))
                {
                    all.push((ts, s));
                }
            }
            all.sort_by(|(ta, a), (tb, b)| {
                tb.cmp(ta).then_with(|| b.conversation.cmp(&a.conversation))
            });
            all.truncate(limit as usize);
            Ok(all.into_iter().map(|(_, s)| s).collect())
        })
        .await
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
        let id = conversation.to_owned();
        let q = q.cloned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(DMS)?;
            let mut out = Vec::new();
            for entry in table.range((id.as_str(), 0)..(id.as_str(), before))?.rev() {
                let (k, v) = entry?;
                let key = k.value();
                let Some(m) = decode::<DirectMessage>("direct_messages", &key, v.value()) else {
                    continue;
                };
                if q.as_ref().is_none_or(|q| q.matches(&m.text)) {
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
        let room = room.to_owned();
        let q = q.cloned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(MESSAGES)?;
            let mut out = Vec::new();
            for entry in table
                .range((room.as_str(), 0)..(room.as_str(), before))?
                .rev()
            {
                let (k, v) = entry?;
                let seq = k.value().1;
                let Some(m) = decode::<StoredMessage>("messages", &(&room, seq), v.value()) else {
                    continue;
                };
                let m = m.into_record(&room, seq);
                let keep = match &q {
                    None => true,
                    Some(q) => !m.deleted && q.matches(&m.text),
                };
                if keep {
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
}
