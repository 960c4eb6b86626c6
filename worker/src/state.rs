//! What every task of a worker shares.

use std::sync::{Mutex, MutexGuard};

use std::sync::Arc;

use chat_shared::ipc::{RoomConfig, RoomStats, ServerConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::room::Room;

/// The worker: its room, its configuration and its lifecycle.
pub struct Worker {
    pub name: String,
    pub port: u16,
    pub created_unix_ms: u64,
    room: Mutex<Room>,
    /// The connections of a shootout-mode room (outside the chat room).
    shootout: Mutex<crate::shootout::Conns>,
    pub server: Mutex<ServerConfig>,
    /// Cancelled when the worker must end; the reason is in `end_reason`.
    pub shutdown: CancellationToken,
    pub end_reason: Mutex<String>,
    /// Every connection's task.
    pub tracker: TaskTracker,
    /// Notices for the master, sent by the link when it is up (bounded).
    pub to_master: Arc<crate::notices::Notices>,
    /// Open connections in all, per user and per address.
    pub caps: std::sync::Arc<crate::caps::ConnCaps>,
}

impl Worker {
    pub fn new(
        port: u16,
        created_unix_ms: u64,
        room: Room,
        server: ServerConfig,
        to_master: Arc<crate::notices::Notices>,
    ) -> Self {
        Self {
            name: room.name.clone(),
            port,
            created_unix_ms,
            room: Mutex::new(room),
            shootout: Mutex::new(crate::shootout::Conns::default()),
            server: Mutex::new(server),
            shutdown: CancellationToken::new(),
            end_reason: Mutex::new(String::new()),
            tracker: TaskTracker::new(),
            to_master,
            caps: Default::default(),
        }
    }

    /// Locks the room. A poisoned lock (a panic while holding it) is
    /// recovered: the room's data stays usable.
    pub fn room(&self) -> MutexGuard<'_, Room> {
        self.room.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shootout-mode connections (poisoning recovered as for the room).
    pub fn shootout(&self) -> MutexGuard<'_, crate::shootout::Conns> {
        self.shootout.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The room's counters, shootout connections included.
    pub fn stats(&self) -> RoomStats {
        let mut stats = self.room().stats();
        self.shootout().add_to(&mut stats);
        stats
    }

    /// The room's configuration, as the master gave it.
    pub fn room_config(&self) -> RoomConfig {
        let room = self.room();
        RoomConfig {
            name: self.name.clone(),
            port: self.port,
            settings: room.settings.clone(),
            created_unix_ms: self.created_unix_ms,
        }
    }

    pub fn config(&self) -> ServerConfig {
        self.server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn outbound_limit(&self) -> usize {
        self.config().outbound_queue_bytes as usize
    }

    /// Ends the worker: clients get `closing` and a 1001 close frame.
    pub fn end(&self, reason: &str) {
        self.end_with(reason, chat_shared::protocol::close::GOING_AWAY);
    }

    /// Ends the worker with a given close code (1001, or 1012 for a restart).
    pub fn end_with(&self, reason: &str, code: u16) {
        if self.shutdown.is_cancelled() {
            return;
        }
        *self.end_reason.lock().unwrap_or_else(|p| p.into_inner()) = reason.to_owned();
        self.room().shutdown(reason, code);
        self.shootout().close_all(code, reason);
        self.shutdown.cancel();
    }
}
