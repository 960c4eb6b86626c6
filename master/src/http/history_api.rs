//! Stored history on the room API (README, "History and search"): a user's
//! conversations, one conversation's messages, one room's messages; paged,
//! and the message routes searchable with `q` (case-insensitive, literal).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chat_shared::direct::conversation_id;
use chat_shared::protocol::{self, ChatMessage, UserRef};
use chat_shared::room_name;
use serde_json::json;

use super::data;
use super::params::{Params, Refusal, bad, in_store, path, user_id};
use crate::state::Shared;
use crate::store::{ConversationCursor, MessageRecord};

type PathOf<T> = Result<Path<T>, PathRejection>;
type QueryPairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// `GET /api/v1/users/{id}/conversations?limit=&before=`: newest last
/// message first; `before` is the `next` of the previous page.
pub async fn conversations(
    State(master): State<Shared>,
    id: PathOf<String>,
    query: QueryPairs,
) -> Response {
    run(async {
        let id = path(id)?;
        user_id("user id", &id)?;
        let params = Params::parse(query, &["before", "limit"])?;
        let limit = params.limit()?;
        let after = match params.get("before") {
            None => None,
            Some(c) => Some(ConversationCursor::decode(c).ok_or_else(|| {
                bad(format!(
                    "bad before {c:?}: pass the `next` of the previous page"
                ))
            })?),
        };
        let page = in_store(
            "a conversation list",
            master.store.conversations_page(&id, after.as_ref(), limit),
        )
        .await?;
        let next = if page.len() == limit as usize {
            page.last().and_then(ConversationCursor::after)
        } else {
            None
        };
        let list: Vec<_> = protocol::DmSummary::from(chat_shared::direct::DmSummary {
            unread: 0,
            conversations: page,
        })
        .conversations;
        Ok(data(
            StatusCode::OK,
            json!({
                "user": id,
                "conversations": list,
                "next": next.map(|c| c.encode()),
            }),
        ))
    })
    .await
}

/// `GET /api/v1/conversations/{a}/{b}/messages?before=&limit=&q=`.
pub async fn conversation_messages(
    State(master): State<Shared>,
    ids: PathOf<(String, String)>,
    query: QueryPairs,
) -> Response {
    run(async {
        let (a, b) = path(ids)?;
        user_id("first user id", &a)?;
        user_id("second user id", &b)?;
        if a == b {
            return Err(bad("a conversation needs two different users"));
        }
        let params = Params::parse(query, &["before", "limit", "q"])?;
        let (before, limit, q) = (params.before_seq()?, params.limit()?, params.text_query()?);
        let conversation = conversation_id(&a, &b);
        let page = in_store(
            "a conversation page",
            master
                .store
                .dm_page(&conversation, before, limit, q.as_ref()),
        )
        .await?;
        let next = next_before(page.len(), limit, page.first().map(|m| m.seq));
        let messages: Vec<protocol::DirectMessage> = page
            .into_iter()
            .map(protocol::DirectMessage::from)
            .collect();
        Ok(data(
            StatusCode::OK,
            json!({"conversation": conversation, "messages": messages, "next": next}),
        ))
    })
    .await
}

/// `GET /api/v1/room/{name}/messages?before=&limit=&q=`. A room is known
/// when it runs on this host or has stored messages; otherwise `404`.
pub async fn room_messages(
    State(master): State<Shared>,
    name: PathOf<String>,
    query: QueryPairs,
) -> Response {
    run(async {
        let name = path(name)?;
        room_name::validate(&name).map_err(|e| bad(e.to_string()))?;
        let params = Params::parse(query, &["before", "limit", "q"])?;
        let (before, limit, q) = (params.before_seq()?, params.limit()?, params.text_query()?);
        if master.registry.get(&name).is_none()
            && in_store("a room lookup", master.store.last_seq(&name))
                .await?
                .is_none()
        {
            return Err(Refusal::new(
                StatusCode::NOT_FOUND,
                format!("no room {name}"),
            ));
        }
        let page = in_store(
            "a room page",
            master.store.room_page(&name, before, limit, q.as_ref()),
        )
        .await?;
        let next = next_before(page.len(), limit, page.first().map(|m| m.seq));
        let messages: Vec<ChatMessage> = page.into_iter().map(chat_message).collect();
        Ok(data(
            StatusCode::OK,
            json!({"room": name, "messages": messages, "next": next}),
        ))
    })
    .await
}

/// The `before` of the next (older) page: the oldest seq of a full page,
/// unless nothing older can exist.
fn next_before(len: usize, limit: u32, oldest: Option<u64>) -> Option<u64> {
    oldest.filter(|&seq| len == limit as usize && seq > 1)
}

/// A stored room message as clients see it in `history` (a deleted one
/// flagged, without its text).
fn chat_message(m: MessageRecord) -> ChatMessage {
    ChatMessage {
        seq: m.seq,
        from: UserRef {
            guest: m.user_id.starts_with(chatroom::GUEST_PREFIX),
            id: m.user_id,
            name: m.name,
        },
        text: if m.deleted { String::new() } else { m.text },
        ts: m.ts,
        deleted: m.deleted,
    }
}

async fn run(f: impl Future<Output = Result<Response, Refusal>>) -> Response {
    f.await.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::next_before;

    #[test]
    fn a_next_page_exists_only_after_a_full_page_with_older_seqs() {
        assert_eq!(next_before(50, 50, Some(120)), Some(120));
        assert_eq!(next_before(49, 50, Some(120)), None);
        assert_eq!(next_before(50, 50, Some(1)), None);
        assert_eq!(next_before(0, 50, None), None);
    }
}
