//! The client WebSocket protocol of a room (docs/PROTOCOL.md): JSON text
//! frames with a `type` field, error codes and close codes.

use serde::{Deserialize, Serialize};

/// Close codes a room uses.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The room is shutting down or reached its time limit.
    pub const GOING_AWAY: u16 = 1001;
    /// The room restarts (an operator's order): reconnect and resume.
    pub const SERVICE_RESTART: u16 = 1012;
    /// Flooding, or a slow consumer whose queue filled up.
    pub const POLICY: u16 = 1008;
    /// A frame larger than the limit.
    pub const TOO_BIG: u16 = 1009;
    /// Missing or invalid query parameters (e.g. no name, bad name).
    pub const BAD_REQUEST: u16 = 4000;
    /// The token is missing, malformed, badly signed or uses another algorithm.
    pub const UNAUTHORIZED: u16 = 4001;
    /// The token has expired.
    pub const TOKEN_EXPIRED: u16 = 4002;
    /// The token is for another room.
    pub const WRONG_ROOM: u16 = 4003;
    /// Guests are not allowed in this room.
    pub const GUESTS_NOT_ALLOWED: u16 = 4004;
    /// The room has reached `max_members`.
    pub const ROOM_FULL: u16 = 4005;
    /// The user is banned from this room.
    pub const BANNED: u16 = 4006;
    /// A moderator or operator removed the user.
    pub const KICKED: u16 = 4007;
    /// The client missed two pings.
    pub const HEARTBEAT_TIMEOUT: u16 = 4008;
    /// The server is draining and refuses new joins; try another host later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A frame that breaks the WebSocket protocol (e.g. a continuation
    /// without a first fragment, an unmasked client frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
}

/// Stable error codes of `error` frames.
pub mod code {
    pub const BAD_JSON: &str = "bad_json";
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    pub const BAD_REQUEST: &str = "bad_request";
    pub const TOO_LONG: &str = "too_long";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const RATE_LIMITED: &str = "rate_limited";
    pub const MUTED: &str = "muted";
    pub const BINARY_NOT_SUPPORTED: &str = "binary_not_supported";
    /// The text matched a word filter that rejects it.
    pub const FILTERED: &str = "filtered";
    /// Storage is unavailable for now (retry later).
    pub const UNAVAILABLE: &str = "unavailable";
    /// A frame the server could not serialize (a bug; never expected).
    pub const INTERNAL: &str = "internal";
    /// The store refused this `say` (the error carries its `client_id` and
    /// `seq`): it was broadcast but is not stored and never acknowledged.
    pub const NOT_STORED: &str = "not_stored";
    /// Another message is stored at this `say`'s seq (two hosts served the
    /// room at once): it is not stored and never acknowledged.
    pub const CONFLICT: &str = "conflict";
}

/// Roles of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Guest,
    Member,
    Moderator,
    Owner,
}

impl Role {
    /// May kick, mute, ban and delete.
    pub fn moderates(self) -> bool {
        self >= Role::Moderator
    }
}

/// A user as others see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    pub id: String,
    pub name: String,
    /// A guest (no signed token): names of guests prove nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guest: bool,
}

/// A member in `welcome`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub connections: u32,
    /// A guest (no signed token).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guest: bool,
}

/// A chat message, live or from history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub seq: u64,
    pub from: UserRef,
    pub text: String,
    /// Unix milliseconds.
    pub ts: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMsg {
    Say {
        text: String,
        #[serde(default)]
        client_id: Option<String>,
    },
    Whisper {
        to: String,
        text: String,
    },
    History {
        #[serde(default)]
        before: Option<u64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    Typing,
    Kick {
        user: String,
        #[serde(default)]
        reason: Option<String>,
    },
    Mute {
        user: String,
        secs: u64,
    },
    Ban {
        user: String,
        #[serde(default)]
        reason: Option<String>,
    },
    Delete {
        seq: u64,
    },
    Signal {
        to: String,
        data: serde_json::Value,
    },
    /// A page of the member list (ordered by name, then id).
    Members {
        /// Continue after this member id (from the previous page).
        #[serde(default)]
        after: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    Ping,
    /// A direct message to a user (token users only).
    Dm {
        to: String,
        text: String,
        #[serde(default)]
        client_id: Option<String>,
    },
    /// Refuse direct messages from `user`.
    Block {
        user: String,
    },
    Unblock {
        user: String,
    },
    /// A page of the conversation with `with`, older than `before`.
    DmHistory {
        with: String,
        #[serde(default)]
        before: Option<u64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Read up to `seq`: the conversation with `with`, or the room.
    Read {
        #[serde(default)]
        with: Option<String>,
        seq: u64,
    },
    /// Follow the presence of these users (replaces the previous list).
    Watch {
        users: Vec<String>,
    },
    /// Lifts this room's ban of a user (moderators and owners).
    Unban {
        user: String,
    },
}

/// A direct message, live or from `dm_history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectMessage {
    pub conversation: String,
    pub seq: u64,
    pub from: UserRef,
    /// The recipient's user id.
    pub to: String,
    pub text: String,
    /// Unix milliseconds.
    pub ts: u64,
}

impl From<crate::direct::DirectMessage> for DirectMessage {
    fn from(m: crate::direct::DirectMessage) -> Self {
        Self {
            conversation: m.conversation,
            seq: m.seq,
            from: UserRef {
                id: m.from,
                name: m.from_name,
                guest: false,
            },
            to: m.to,
            text: m.text,
            ts: m.ts,
        }
    }
}

/// One conversation in `welcome`'s `dms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub conversation: String,
    pub with: String,
    pub unread: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<DirectMessage>,
}

/// `welcome`'s `dms`: total unread and the most recent conversations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmSummary {
    pub unread: u64,
    pub conversations: Vec<ConversationSummary>,
}

impl From<crate::direct::DmSummary> for DmSummary {
    fn from(s: crate::direct::DmSummary) -> Self {
        Self {
            unread: s.unread,
            conversations: s
                .conversations
                .into_iter()
                .map(|c| ConversationSummary {
                    conversation: c.conversation,
                    with: c.with,
                    unread: c.unread,
                    last: c.last.map(DirectMessage::from),
                })
                .collect(),
        }
    }
}

/// Frames the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Welcome {
        room: String,
        you: Member,
        /// The first members (by name, at most 100); `member_count` says
        /// how many there are, `members` requests page through the rest.
        members: Vec<Member>,
        #[serde(default)]
        member_count: u32,
        history: Vec<ChatMessage>,
        seq: u64,
        epoch: u64,
        resumed: bool,
        /// On a resume: messages at or before `since` deleted while away.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        deleted: Vec<u64>,
        /// A token user's read marker in this room (0: nothing read).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_read: Option<u64>,
        /// A token user's direct messages at a glance.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dms: Option<DmSummary>,
    },
    Joined {
        user: Member,
    },
    Left {
        user: UserRef,
    },
    /// Arrivals and departures in a room larger than the welcome's member
    /// page, gathered and sent at most once a second instead of a `joined`
    /// or `left` per member (a join storm would otherwise cost every join a
    /// frame to every member).
    MembersChanged {
        /// Members who arrived since the last such frame and are still
        /// here (at most 50; may include the receiver).
        joined: Vec<Member>,
        /// Members who left since the last such frame (at most 50).
        left: Vec<UserRef>,
        /// Whether more arrived or left than the lists hold (page the
        /// member list again with `members` to see everyone).
        more: bool,
        member_count: u32,
    },
    Message(ChatMessage),
    Ack {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        seq: u64,
        /// Set on the ack of a `dm`: the seq is the conversation's.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation: Option<String>,
    },
    Whisper {
        from: UserRef,
        to: UserRef,
        text: String,
        ts: u64,
    },
    History {
        messages: Vec<ChatMessage>,
        more: bool,
    },
    Members {
        members: Vec<Member>,
        more: bool,
    },
    Typing {
        user: UserRef,
    },
    Deleted {
        seq: u64,
        by: UserRef,
    },
    Muted {
        user: UserRef,
        secs: u64,
        by: UserRef,
    },
    Signal {
        from: UserRef,
        data: serde_json::Value,
    },
    Notice {
        text: String,
    },
    Closing {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_secs: Option<u64>,
    },
    Pong,
    Error {
        code: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
        /// The failed `say`'s `client_id` (errors about a message only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        /// The failed message's seq (errors about a stored message only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// A direct message.
    Dm(DirectMessage),
    /// A page of a conversation, oldest first.
    DmHistory {
        with: String,
        messages: Vec<DirectMessage>,
        more: bool,
    },
    /// A read marker: of a conversation (`by`, `conversation`: a receipt)
    /// or of the room (`room`: the reader's own marker, stored).
    Read {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        conversation: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        seq: u64,
    },
    /// A `block` or `unblock` is stored.
    Blocked {
        user: String,
        blocked: bool,
    },
    /// A watched user's presence (at `watch`, then on every change).
    Presence {
        user: String,
        online: bool,
        last_seen: Option<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse() {
        let m: ClientMsg = serde_json::from_str(r#"{"type":"say","text":"hi"}"#).unwrap();
        assert_eq!(
            m,
            ClientMsg::Say {
                text: "hi".into(),
                client_id: None
            }
        );
        let m: ClientMsg = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert_eq!(m, ClientMsg::Ping);
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn server_frames_have_type() {
        let s = serde_json::to_string(&ServerMsg::Ack {
            client_id: Some("c1".into()),
            seq: 3,
            conversation: None,
        })
        .unwrap();
        assert_eq!(s, r#"{"type":"ack","client_id":"c1","seq":3}"#);
        let s = serde_json::to_string(&ServerMsg::Pong).unwrap();
        assert_eq!(s, r#"{"type":"pong"}"#);
    }
}
