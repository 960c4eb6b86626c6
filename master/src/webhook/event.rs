//! The events a webhook receiver gets: one JSON object per POST, built
//! when the event happens and serialized once.

use serde::Serialize;

/// `room.created`: a room's first worker listens.
pub const ROOM_CREATED: &str = "room.created";
/// `room.closed`: a room ended (asked to, by itself, or given up).
pub const ROOM_CLOSED: &str = "room.closed";
/// `dm.offline`: a direct message was stored while its recipient had no
/// live connection anywhere.
pub const DM_OFFLINE: &str = "dm.offline";

/// One event as it is POSTed.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope<T: Serialize> {
    /// Unique per event (the same on every retry): receivers deduplicate
    /// on it, since delivery is at least once.
    pub id: String,
    /// `room.created`, `room.closed` or `dm.offline`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Unix milliseconds when the event happened.
    pub ts: u64,
    /// The host that saw it (its `--host`, else its hostname).
    pub host: String,
    pub data: T,
}

/// `room.created`.
#[derive(Debug, Clone, Serialize)]
pub struct RoomCreated {
    pub room: String,
    pub port: u16,
}

/// `room.closed`.
#[derive(Debug, Clone, Serialize)]
pub struct RoomClosed {
    pub room: String,
    /// `stopped` (asked to, or ended by itself) or `failed`.
    pub reason: &'static str,
    /// Why a failed room was given up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `dm.offline`: what a platform needs for a push notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmOffline {
    /// The recipient's user id (token `sub`).
    pub to: String,
    /// The sender's user id.
    pub from: String,
    /// The conversation's id.
    pub conversation: String,
    /// The message's seq within the conversation.
    pub seq: u64,
    pub text: String,
}

/// A random event id: 16 bytes in hex.
pub fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}
