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

use std::sync::{Arc, Mutex};

use chat_shared::direct::DirectMessage;

pub use fanout::{Except, Fanout, Local};
pub use index::Index;
pub use service::{Asker, handle};

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
    locks: Vec<tokio::sync::Mutex<()>>,
    offline: Mutex<Option<OfflineHook>>,
}

impl Users {
    /// One host: events go to this host's rooms.
    pub fn local(registry: Arc<crate::registry::Registry>) -> Self {
        let index = Arc::new(Index::default());
        let fanout = Box::new(Local {
            index: Arc::clone(&index),
            registry,
        });
        Self {
            index,
            fanout,
            locks: (0..LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            offline: Mutex::new(None),
        }
    }

    /// Sets what happens to a DM stored while its recipient is offline
    /// (the webhook's `dm.offline`). Without a hook it is only logged.
    #[allow(dead_code)]
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

    /// The lock of a conversation.
    fn lock_of(&self, conversation: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        conversation.hash(&mut h);
        &self.locks[(h.finish() % LOCKS as u64) as usize]
    }
}
