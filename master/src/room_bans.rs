//! Bans and unbans that moderators make in rooms (`WorkerMsg::Ban`,
//! `WorkerMsg::Unban`): stored in `bans`, scoped to the room, in the order
//! they were made, then the cache is refreshed so every room (and the one
//! that sent them) gets the change. A store that is down is retried with
//! backoff; the IPC session never waits for any of it.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::state::Shared;
use crate::store::BanRecord;

/// One moderator's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    Ban {
        room: String,
        user: String,
        reason: String,
    },
    Unban {
        room: String,
        user: String,
    },
}

/// The sending side (in the master's state).
pub struct RoomBans {
    tx: mpsc::UnboundedSender<Order>,
}

impl RoomBans {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Order>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Queues an order; never waits.
    pub fn push(&self, o: Order) {
        let _ = self.tx.send(o);
    }
}

/// Applies the orders one at a time until shutdown.
pub async fn run(master: Shared, mut rx: mpsc::UnboundedReceiver<Order>) {
    loop {
        let o = tokio::select! {
            o = rx.recv() => o,
            _ = master.shutdown.cancelled() => None,
        };
        let Some(o) = o else { return };
        if apply(&master, &o).await {
            let _ = master.cache.refresh().await;
        }
    }
}

/// Stores one order, retrying while the store is down; `false` when it
/// was given up (a permanent error, or shutdown).
async fn apply(master: &Shared, o: &Order) -> bool {
    let mut backoff = Duration::from_millis(200);
    loop {
        let r = match o {
            Order::Ban { room, user, reason } => master
                .store
                .add_ban(&BanRecord {
                    user_id: user.clone(),
                    room: Some(room.clone()),
                    until_ms: None,
                    reason: Some(reason.clone()),
                })
                .await
                .map(|()| 1),
            Order::Unban { room, user } => master.store.remove_ban(user, Some(room)).await,
        };
        match r {
            Ok(n) => {
                tracing::info!(order = ?o, changed = n, "stored a moderator's order");
                return true;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(order = ?o, error = %e, "cannot store a moderator's order yet; retrying");
            }
            Err(e) => {
                tracing::error!(order = ?o, error = %e, "the store refused a moderator's order");
                return false;
            }
        }
        tokio::select! {
            _ = master.shutdown.cancelled() => return false,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
