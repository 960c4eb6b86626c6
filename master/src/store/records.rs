//! The records the store keeps. Their serde form (JSON) is what the redb
//! backend stores and what an API may show; MongoDB documents are built and
//! read by `mongo_docs.rs` (see docs/DATA.md for both).

use serde::{Deserialize, Serialize};

/// A room of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub name: String,
    pub port: u16,
    /// The room's settings as the master serializes them.
    #[serde(default = "empty_object")]
    pub settings: serde_json::Value,
    /// Free-form lifecycle label (the master's `RoomState::label`).
    #[serde(default = "default_status")]
    pub status: String,
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub created_ms: u64,
    #[serde(default)]
    pub updated_ms: u64,
}

/// Status of a catalog entry that does not say (e.g. written by hand).
pub const DEFAULT_ROOM_STATUS: &str = "ready";

fn default_status() -> String {
    DEFAULT_ROOM_STATUS.to_owned()
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// One chat message; unique on (room, seq).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub room: String,
    pub epoch: u64,
    pub seq: u64,
    pub user_id: String,
    pub name: String,
    pub text: String,
    /// Unix milliseconds.
    pub ts: u64,
    #[serde(default)]
    pub deleted: bool,
}

impl MessageRecord {
    /// Whether `other` is the same message as `self` (a resend), as opposed
    /// to a different message at the same (room, seq) (a conflict). A message
    /// is identified by its room, seq, epoch, author and timestamp, and by its
    /// text unless either copy is deleted (a deletion clears the text of a
    /// message still waiting to be stored, so its resend has none).
    pub fn same_message(&self, other: &MessageRecord) -> bool {
        self.room == other.room
            && self.seq == other.seq
            && self.epoch == other.epoch
            && self.user_id == other.user_id
            && self.ts == other.ts
            && (self.deleted || other.deleted || self.text == other.text)
    }
}

/// What [`Store::insert_messages`](super::Store::insert_messages) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    pub inserted: u64,
    /// Messages already stored (a resend: [`MessageRecord::same_message`]),
    /// not written again.
    pub duplicates: u64,
    /// `(room, seq)` of messages refused because a *different* message is
    /// stored at their (room, seq): never acknowledge these.
    pub conflicts: Vec<(String, u64)>,
}

/// A user (MongoDB `_id` is the id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A ban of a user from one room or every room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    pub user_id: String,
    /// `None`: every room.
    #[serde(default)]
    pub room: Option<String>,
    /// Unix milliseconds; `None`: forever.
    #[serde(default)]
    pub until_ms: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl BanRecord {
    /// Whether the ban is in force at `now_ms`.
    #[cfg(test)]
    pub fn active_at(&self, now_ms: u64) -> bool {
        self.until_ms.is_none_or(|until| now_ms < until)
    }
}

/// What a filter does to a matching message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterAction {
    Mask,
    Reject,
}

impl FilterAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mask => "mask",
            Self::Reject => "reject",
        }
    }

    /// Parses `"mask"` / `"reject"`, in any case.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("mask") {
            Some(Self::Mask)
        } else if s.eq_ignore_ascii_case("reject") {
            Some(Self::Reject)
        } else {
            None
        }
    }
}

/// A word filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRecord {
    pub pattern: String,
    pub action: FilterAction,
}

/// Users, bans and filters, as loaded at start or on reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceData {
    pub users: Vec<UserRecord>,
    pub bans: Vec<BanRecord>,
    pub filters: Vec<FilterRecord>,
}

/// Which host owns a room name in a shared store, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRecord {
    /// The room's name (MongoDB `_id`).
    pub name: String,
    /// The owning master's identity (`host:port` of its room API).
    pub owner: String,
    /// The host to tell clients (the master's `--host`, else its hostname).
    pub host: String,
    /// The room's port on that host.
    pub port: u16,
    /// The room's WebSocket URL, when the owner knows its public URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Unix milliseconds: past it, another host may claim the name.
    pub until_ms: u64,
}

/// What [`Store::claim_owner`](super::Store::claim_owner) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The name is ours until the lease ends. `taken_over`: another host
    /// held it and its lease had ended (its history continues here).
    Claimed { taken_over: bool },
    /// Another host holds a live lease on the name.
    Held(OwnerRecord),
}
