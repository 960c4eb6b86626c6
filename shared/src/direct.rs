//! Users across rooms over IPC: direct messages, blocks, read markers and
//! the join-time summary a token user's `welcome` carries. A room asks the
//! master ([`DirectRequest`]), the master answers the asking connection
//! ([`DirectReply`]) and delivers to every live connection of the users
//! concerned, in whichever room they are ([`DirectEvent`]).
//!
//! These types travel in postcard frames: no field is ever skipped. The
//! client protocol's shapes are in [`crate::protocol`].

use serde::{Deserialize, Serialize};

/// Longest user id a direct message may name (a token `sub` is at most
/// this long too).
pub const MAX_USER_ID: usize = 128;
/// Conversations a `welcome` lists at most.
pub const SUMMARY_CONVERSATIONS: usize = 20;
/// Longest `dm_history` page.
pub const MAX_DM_HISTORY: u32 = 100;
/// Users one connection may `watch`.
pub const MAX_WATCH: usize = 200;

/// The id of the conversation between two users: both ids sorted, each
/// escaped (`%` → `%25`, `:` → `%3A`) and joined by `:`. Deterministic,
/// the same whoever sends, and never the same for two different pairs.
pub fn conversation_id(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("{}:{}", escape(lo), escape(hi))
}

fn escape(id: &str) -> String {
    id.replace('%', "%25").replace(':', "%3A")
}

/// A direct message as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectMessage {
    pub conversation: String,
    pub seq: u64,
    pub from: String,
    pub from_name: String,
    pub to: String,
    pub text: String,
    /// Unix milliseconds.
    pub ts: u64,
}

/// One conversation in a user's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub conversation: String,
    /// The other user.
    pub with: String,
    pub unread: u64,
    pub last: Option<DirectMessage>,
}

/// A user's direct messages at a glance: total unread and the most recent
/// conversations (at most [`SUMMARY_CONVERSATIONS`]), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmSummary {
    pub unread: u64,
    pub conversations: Vec<ConversationSummary>,
}

/// What a room asks of the master for one of its users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectRequest {
    /// Store and deliver a direct message (text already checked and
    /// filtered by the room). `name` is the sender's display name.
    Send {
        to: String,
        name: String,
        text: String,
    },
    /// Block (`true`) or unblock DMs from `user`.
    Block { user: String, block: bool },
    /// A page of the conversation with `with`, before `before`.
    History {
        with: String,
        before: u64,
        limit: u32,
    },
    /// The user read the conversation with `with` up to `seq`.
    Read { with: String, seq: u64 },
    /// The user read the room up to `seq`.
    RoomRead { seq: u64 },
    /// The room read marker and the DM summary, for `welcome`.
    State,
}

/// The master's answer to one [`DirectRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectReply {
    /// The DM is stored.
    Stored {
        conversation: String,
        seq: u64,
    },
    /// A page of a conversation, oldest first; `more` when older remain.
    History {
        with: String,
        messages: Vec<DirectMessage>,
        more: bool,
    },
    Blocked {
        user: String,
        blocked: bool,
    },
    /// The read marker stored (the value after the update: never lower).
    Read {
        conversation: Option<String>,
        seq: u64,
    },
    State {
        last_read: u64,
        dms: DmSummary,
    },
    /// Refused or failed: a client protocol error code and message.
    Error {
        code: String,
        message: String,
    },
}

/// What the master hands to live connections of some users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectEvent {
    Dm(DirectMessage),
    /// `by` read `conversation` up to `seq`.
    Read {
        by: String,
        conversation: String,
        seq: u64,
    },
}

/// Whether a user is online (at least one live connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub user: String,
    pub online: bool,
    /// When their last connection closed (Unix ms), when known and offline.
    pub last_seen: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_are_symmetric_and_unambiguous() {
        assert_eq!(conversation_id("b", "a"), "a:b");
        assert_eq!(conversation_id("a", "b"), "a:b");
        // "a:b" + "c" and "a" + "b:c" differ.
        assert_ne!(conversation_id("a:b", "c"), conversation_id("a", "b:c"));
        assert_eq!(conversation_id("x%", "y:"), "x%25:y%3A");
    }
}
