//! Users across rooms: direct messages, blocks and read state, routed
//! between this host's rooms (ARCHITECTURE.md, "Users across rooms").
//!
//! - `index.rs`: which rooms hold which token users (from the rooms' reports);
//! - `fanout.rs`: how an event reaches users' connections and presence
//!   reaches watchers (`Fanout`, with the one-host `Local` transport);
//! - `redis/`: the transport for many hosts (`--redis`);
//! - `service.rs`: what each request of a room does (store, reply, deliver);
//! - `watch.rs`: who watches whose presence.

mod fanout;
mod index;
pub mod redis;
mod service;
mod watch;

/// One direct message sent, from a room (`service.rs`) or from the room
/// API (`POST /api/v1/users/{from}/dm/{to}`).
pub mod send;

use std::sync::{Arc, Mutex};

use chat_shared::direct::DirectMessage;

pub use fanout::{Except, Fanout, Local, Place, Whereabouts};
pub use index::Index;
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
    pub fanout: Arc<dyn Fanout>,
    pub watches: Arc<Watches>,
    /// Whether Redis is reached (`--redis` only): `/readyz`.
    pub redis: Option<Arc<redis::Health>>,
    locks: Vec<tokio::sync::Mutex<()>>,
    offline: Mutex<Option<OfflineHook>>,
}

impl Users {
    /// One host: events go to this host's rooms; `host` is its name in
    /// presence answers.
    pub fn local(registry: Arc<crate::registry::Registry>, host: String) -> Self {
        let local = Local {
            index: Arc::default(),
            registry,
            watches: Arc::default(),
            host,
        };
        let (index, watches) = (Arc::clone(&local.index), Arc::clone(&local.watches));
        Self::new(index, watches, Arc::new(local))
    }

    /// With another transport (built on the same index and watches).
    pub fn new(index: Arc<Index>, watches: Arc<Watches>, fanout: Arc<dyn Fanout>) -> Self {
        Self {
            index,
            fanout,
            watches,
            redis: None,
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

    /// A room's first connection of `user` opened.
    pub fn joined(&self, room: &str, session: u64, user: &str) {
        let changes = self.index.joined(room, session, user);
        self.fanout.changed(&[user.to_owned()], changes);
    }

    /// A room's last connection of `user` closed.
    pub fn left(&self, room: &str, user: &str) {
        let changes = self.index.left(room, user);
        self.fanout.changed(&[user.to_owned()], changes);
    }

    /// A room's list of users after a (re)link.
    pub fn listed(&self, room: &str, session: u64, reset: bool, users: &[String]) {
        let changes = self.index.listed(room, session, reset, users);
        self.fanout.changed(users, changes);
    }

    /// A room's IPC session ended: its users and its watches are gone.
    pub fn session_ended(&self, room: &str, session: u64) {
        let changes = self.index.session_ended(room, session);
        self.watches.room_gone(room);
        self.fanout.changed(&[], changes);
    }

    /// Connection `conn` of `room` watches `users`: their presence goes to
    /// it at once, then on every change.
    pub fn watch(&self, room: &str, conn: u64, users: &[String]) {
        self.watches.set((room.to_owned(), conn), users);
        self.fanout.watching(room, conn, users.to_vec());
    }

    /// The lock of a conversation.
    fn lock_of(&self, conversation: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        conversation.hash(&mut h);
        &self.locks[(h.finish() % LOCKS as u64) as usize]
    }
}
