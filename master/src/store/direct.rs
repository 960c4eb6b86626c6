//! Direct messages, blocks and read markers: the part of the store that
//! follows users across rooms (docs/DATA.md, "Users across rooms"). Both
//! backends implement [`DirectStore`]; `direct_suite.rs` runs against each.

use async_trait::async_trait;
use chat_shared::direct::{DirectMessage, DmSummary};

use super::StoreError;

/// A direct message to store; the store gives it its conversation seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDm {
    pub from: String,
    pub from_name: String,
    pub to: String,
    pub text: String,
    pub ts: u64,
}

impl NewDm {
    pub fn conversation(&self) -> String {
        chat_shared::direct::conversation_id(&self.from, &self.to)
    }

    pub fn stored(self, seq: u64) -> DirectMessage {
        DirectMessage {
            conversation: self.conversation(),
            seq,
            from: self.from,
            from_name: self.from_name,
            to: self.to,
            text: self.text,
            ts: self.ts,
        }
    }
}

/// The two users of a conversation in id order, and which of them `user` is
/// (0 or 1); `None` when `user` is not one of them.
pub fn side(users: &[String; 2], user: &str) -> Option<usize> {
    users.iter().position(|u| u == user)
}

/// Both ids of a pair, sorted (the order a conversation stores them in).
pub fn sorted_pair(a: &str, b: &str) -> [String; 2] {
    if a <= b {
        [a.to_owned(), b.to_owned()]
    } else {
        [b.to_owned(), a.to_owned()]
    }
}

/// Users across rooms, in the store. Safe to call concurrently; across
/// hosts sharing a store, `append_dm` never gives one seq twice.
#[async_trait]
pub trait DirectStore: Send + Sync {
    /// Allocates the conversation's next seq (atomically) and stores the
    /// message under it. A failure after the allocation leaves a gap: a seq
    /// is never reused.
    async fn append_dm(&self, m: NewDm) -> Result<DirectMessage, StoreError>;

    /// The newest `limit` messages of `conversation` with `seq < before`,
    /// oldest first.
    async fn dm_history(
        &self,
        conversation: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<DirectMessage>, StoreError>;

    /// `user` blocks (or unblocks) direct messages from `other`.
    async fn set_blocked(&self, user: &str, other: &str, blocked: bool) -> Result<(), StoreError>;

    /// Whether `user` blocks direct messages from `other`.
    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, StoreError>;

    /// `user` read the conversation with `with` up to `seq` (capped at the
    /// conversation's last seq; a marker never goes back). The marker after
    /// the update, or `None` when there is no such conversation.
    async fn mark_dm_read(
        &self,
        user: &str,
        with: &str,
        seq: u64,
    ) -> Result<Option<u64>, StoreError>;

    /// `user` read `room` up to `seq` (never back); the marker after.
    async fn mark_room_read(&self, room: &str, user: &str, seq: u64) -> Result<u64, StoreError>;

    /// `user`'s read marker in `room` (0: none).
    async fn room_read(&self, room: &str, user: &str) -> Result<u64, StoreError>;

    /// `user`'s total unread count over every conversation, and the `limit`
    /// most recently active conversations, newest first.
    async fn dm_summary(&self, user: &str, limit: usize) -> Result<DmSummary, StoreError>;
}
