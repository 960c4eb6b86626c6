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
            let range = table.range((id.as_str(), 0)..(id.as_str(), before))?;
            newest_page(range, limit, |key, bytes| {
                decode::<DirectMessage>("direct_messages", &key, bytes)
                    .filter(|m| q.as_ref().is_none_or(|q| q.matches(&m.text)))
            })
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
            let range = table.range((room.as_str(), 0)..(room.as_str(), before))?;
            newest_page(range, limit, |(_, seq), bytes| {
                let m = decode::<StoredMessage>("messages", &(&room, seq), bytes)?
                    .into_record(&room, seq);
                // A deleted message's text is never searched.
                let keep = q.as_ref().is_none_or(|q| !m.deleted && q.matches(&m.text));
                keep.then_some(m)
            })
        })
        .await
    }
}

/// Walks a `(name, seq)` key range backwards and keeps what `pick` returns
/// (decoded and matching) until `limit` are kept; oldest first.
fn newest_page<'a, T>(
    range: redb::Range<'a, (&'static str, u64), &'static [u8]>,
    limit: u32,
    mut pick: impl FnMut((&str, u64), &[u8]) -> Option<T>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for entry in range.rev() {
        let (k, v) = entry?;
        if let Some(m) = pick(k.value(), v.value()) {
            out.push(m);
            if out.len() >= limit as usize {
                break;
            }
        }
    }
    out.reverse();
    Ok(out)
}
