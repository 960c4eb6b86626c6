//! How a task reaches the rooms' workers without holding the registry or
//! the master: the writer answers one room, the cache tells them all.
//! `Registry` implements it; unit tests use a recorder.

use chat_shared::ipc::MasterMsg;

/// Sends orders to rooms' workers over their IPC links.
pub trait Rooms: Send + Sync {
    /// Sends to one room's worker; false when it has no link (the message
    /// is dropped: a room that links again gets what it needs at its hello).
    fn send(&self, room: &str, msg: MasterMsg) -> bool;

    /// Sends `msgs`, in order, to every linked room.
    fn broadcast(&self, msgs: &[MasterMsg]);
}
