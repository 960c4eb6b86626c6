//! One direct message sent, whoever sends it (a room's `dm` frame through
//! `service.rs`, or the platform through `POST /api/v1/users/{from}/dm/{to}`):
//! the block check, the store (which gives the seq), the sender's answer,
//! delivery to every live connection of both users, and the `dm.offline`
//! hook when the recipient had none. One implementation for both paths.

use chat_shared::direct::{DirectEvent, DirectMessage};
use thiserror::Error;

use super::{Except, Users};
use crate::store::{NewDm, Store, StoreError};

/// Why a direct message was not sent.
#[derive(Debug, Error)]
pub enum SendError {
    /// The recipient blocks the sender: nothing was stored.
    #[error("{to:?} does not accept direct messages from {from:?}")]
    Blocked { from: String, to: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Stores `new` under its conversation's next seq and delivers it.
///
/// `stored` runs once the store has the message, before any delivery and
/// with the conversation's lock held: an answer it queues to a room (the
/// sender's ack) goes out before the message reaches that room's other
/// connections. Deliveries skip `except` (the sending connection). The
/// conversation's messages are stored and handed to the rooms in seq order.
pub async fn send(
    users: &Users,
    store: &dyn Store,
    new: NewDm,
    except: Option<Except<'_>>,
    stored: impl FnOnce(&DirectMessage),
) -> Result<DirectMessage, SendError> {
    if store.is_blocked(&new.to, &new.from).await? {
        return Err(SendError::Blocked {
            from: new.from,
            to: new.to,
        });
    }
    let (from, to) = (new.from.clone(), new.to.clone());
    let order = users.lock_of(&new.conversation()).lock().await;
    let message = store.append_dm(new).await?;
    tracing::debug!(user = %from, to = %to, conversation = %message.conversation, seq = message.seq, "direct message stored");
    stored(&message);
    users.fanout.deliver(
        &[to.clone(), from],
        except,
        &DirectEvent::Dm(message.clone()),
    );
    // Queued on the rooms' channels in seq order: the next message of the
    // conversation may go. Whether the recipient is online is asked after.
    drop(order);
    // Any live connection on any host (with Redis, one round trip).
    if !users.fanout.online(&to).await {
        users.offline(&message);
    }
    Ok(message)
}
