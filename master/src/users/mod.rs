//! Users across rooms: direct messages, blocks and read state, routed
//! between this host's rooms (ARCHITECTURE.md, "Users across rooms").
//!
//! - `index.rs`: which rooms hold which token users (from the rooms' reports);
//! - `fanout.rs`: how an event reaches users' connections (`Fanout`, with the
//!   one-host `Local` transport; a Redis transport goes behind the same trait);
//! - `service.rs`: what each request of a room does (store, reply, deliver).

mod fanout;
mod index;
mod service;
mod watch;

/// One direct message sent, from a room (`service.rs`) or from the room
/// API (`POST /api/v1/users/{from}/dm/{to}`).
pub mod send;

use std::sync::{Arc, Mutex};

use chat_shared::direct::{DirectMessage, Presence};
use chat_shared::ipc::MasterMsg;

pub use fanout::{Except, Fanout, Local};
pub use index::{Change, Index};
pub use service::{Asker, handle};
pub use watch::Watches;

/// Called for each stored DM whose recipient had no live connection (the
/// hook point of the `dm.offline` webhook).
pub type OfflineHook = Box<dyn Fn(&DirectMessage) + Send + Sync>;

/// Conversations are serialized through this many locks (by hash), so the
/// messages of one conversation are stored and delivered in seq order.
const LOCKS: usize = 64;

/// The master's handle on users across rooms.
pub struct Users {
    pub index: Arc<Index>,
    pub fanout: Box<dyn Fanout>,
    pub watches: Watches,
    registry: Arc<crate::registry::Registry>,
    locks: Vec<tokio::sync::Mutex<()>>,
    offline: Mutex<Option<OfflineHook>>,
}

impl Users {
    /// One host: events go to this host's rooms.
    pub fn local(registry: Arc<crate::registry::Registry>) -> Self {
        let index = Arc::new(Index::default());
        let fanout = Box::new(Local {
            index: Arc::clone(&index),
            registry: Arc::clone(&registry),
        });
        Self {
            index,
            fanout,
            watches: Watches::default(),
            registry,
            locks: (0..LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            offline: Mutex::new(None),
        }
    }

    /// Sets what happens to a DM stored while its recipient is offline
    /// (the webhook's `dm.offline`). Without a hook it is only logged.
    pub fn set_offline_hook(&self, hook: OfflineHook) {
        *self.offline.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// A stored DM found no live connection of its recipient.
    pub fn offline(&self, m: &DirectMessage) {
        tracing::debug!(to = %m.to, from = %m.from, conversation = %m.conversation, seq = m.seq, "direct message to an offline user");
        if let Some(hook) = &*self.offline.lock().unwrap_or_else(|p| p.into_inner()) {
            hook(m);
        }
    }

    /// A user's presence on this host.
    pub fn presence(&self, user: &str) -> Presence {
        let online = self.fanout.online(user);
        Presence {
            user: user.to_owned(),
            online,
            last_seen: if online {
                None
            } else {
                self.index.last_seen(user)
            },
        }
    }

    /// Connection `conn` of `room` watches `users`: their presence goes to
    /// it at once, then on every change.
    pub fn watch(&self, room: &str, conn: u64, users: &[String]) {
        self.watches.set((room.to_owned(), conn), users);
        if users.is_empty() {
            return;
        }
        let states = users.iter().map(|u| self.presence(u)).collect();
        if let Some(entry) = self.registry.get(room) {
            entry.send(MasterMsg::Presence {
                conns: vec![conn],
                states,
            });
        }
    }

    /// Tells the watchers of the users whose presence changed.
    pub fn changed(&self, changes: Vec<Change>) {
        for (user, _) in changes {
            let watchers = self.watches.of(&user);
            if watchers.is_empty() {
                continue;
            }
            let state = self.presence(&user);
            let mut rooms: std::collections::HashMap<String, Vec<u64>> = Default::default();
            for (room, conn) in watchers {
                rooms.entry(room).or_default().push(conn);
            }
            for (room, conns) in rooms {
                if let Some(entry) = self.registry.get(&room) {
                    entry.send(MasterMsg::Presence {
                        conns,
                        states: vec![state.clone()],
                    });
                }
            }
        }
    }

    /// The lock of a conversation.
    fn lock_of(&self, conversation: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        conversation.hash(&mut h);
        &self.locks[(h.finish() % LOCKS as u64) as usize]
    }
}
