//! What the master does with a room's `WorkerMsg::Direct` request: the
//! store first, then the reply to the asking connection, then delivery to
//! the live connections concerned. Each request runs in its own task; the
//! IPC session never waits for the store.

use std::time::Duration;

use chat_shared::direct::{
    DirectEvent, DirectMessage, DirectReply, DirectRequest, MAX_DM_HISTORY, SUMMARY_CONVERSATIONS,
    conversation_id,
};
use chat_shared::ipc::MasterMsg;
use chat_shared::protocol::code;

use super::Except;
use super::send::{SendError, send};
use crate::state::Shared;
use crate::store::{NewDm, StoreError};

/// Time a request may take in the store.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who asks: a room, a user in it and their connection there.
#[derive(Debug, Clone)]
pub struct Asker {
    pub room: String,
    pub user: String,
    pub conn: u64,
}

/// Runs one request and answers it (`id`) to the asking room.
pub async fn handle(master: Shared, asker: Asker, id: u64, request: DirectRequest) {
    let reply = match tokio::time::timeout(STORE_TIMEOUT, run(&master, &asker, id, request)).await {
        Ok(Ok(None)) => return,
        Ok(Ok(Some(reply))) => reply,
        Ok(Err(e)) => {
            tracing::warn!(room = %asker.room, user = %asker.user, error = %e, "a direct-message request failed in the store");
            error(code::UNAVAILABLE, "the store failed; retry later")
        }
        Err(_) => {
            tracing::warn!(room = %asker.room, user = %asker.user, "a direct-message request timed out in the store");
            error(
                code::UNAVAILABLE,
                "the store did not answer in time; retry later",
            )
        }
    };
    if let Some(entry) = master.registry.get(&asker.room) {
        entry.send(MasterMsg::DirectReply { id, reply });
    }
}

fn error(code: &str, message: impl Into<String>) -> DirectReply {
    DirectReply::Error {
        code: code.to_owned(),
        message: message.into(),
    }
}

async fn run(
    master: &Shared,
    asker: &Asker,
    id: u64,
    request: DirectRequest,
) -> Result<Option<DirectReply>, StoreError> {
    let store = &master.store;
    let me = asker.user.as_str();
    Ok(Some(match request {
        DirectRequest::Send { to, name, text } => {
            let new = NewDm {
                from: me.to_owned(),
                from_name: name,
                to: to.clone(),
                text,
                ts: crate::registry::now_ms(),
            };
            let except = Except {
                room: &asker.room,
                conn: asker.conn,
            };
            // The ack goes out before the deliveries (one channel per room).
            let ack = |m: &DirectMessage| {
                if let Some(entry) = master.registry.get(&asker.room) {
                    let reply = DirectReply::Stored {
                        conversation: m.conversation.clone(),
                        seq: m.seq,
                    };
                    entry.send(MasterMsg::DirectReply { id, reply });
                }
            };
            return match send(&master.users, &*master.store, new, Some(except), ack).await {
                Ok(_) => Ok(None),
                Err(SendError::Blocked { .. }) => Ok(Some(error(
                    code::FORBIDDEN,
                    format!("{to:?} does not accept your direct messages"),
                ))),
                Err(SendError::Store(e)) => Err(e),
            };
        }
        DirectRequest::Block { user, block } => {
            store.set_blocked(me, &user, block).await?;
            DirectReply::Blocked {
                user,
                blocked: block,
            }
        }
        DirectRequest::History {
            with,
            before,
            limit,
        } => {
            let limit = limit.clamp(1, MAX_DM_HISTORY);
            let page = store
                .dm_history(&conversation_id(me, &with), before, limit)
                .await?;
            let more = page.len() == limit as usize && page.first().is_some_and(|m| m.seq > 1);
            DirectReply::History {
                with,
                messages: page,
                more,
            }
        }
        DirectRequest::Read { with, seq } => match store.mark_dm_read(me, &with, seq).await? {
            None => error(code::NOT_FOUND, format!("no conversation with {with:?}")),
            Some(marker) => {
                let conversation = conversation_id(me, &with);
                master.users.fanout.deliver(
                    &[with, me.to_owned()],
                    None,
                    &DirectEvent::Read {
                        by: me.to_owned(),
                        conversation: conversation.clone(),
                        seq: marker,
                    },
                );
                DirectReply::Read {
                    conversation: Some(conversation),
                    seq: marker,
                }
            }
        },
        DirectRequest::RoomRead { seq } => DirectReply::Read {
            conversation: None,
            seq: store.mark_room_read(&asker.room, me, seq).await?,
        },
        DirectRequest::State => {
            let last_read = store.room_read(&asker.room, me).await?;
            let dms = store.dm_summary(me, SUMMARY_CONVERSATIONS).await?;
            DirectReply::State { last_read, dms }
        }
    }))
}
