//! What a room does with each client frame.

use std::time::{Duration, Instant};

use chat_shared::protocol::{ClientMsg, ServerMsg, close, code};

use crate::filters::Verdict;
use crate::outbox::PendingAck;
use crate::room::{Conn, Room, encode, now_ms};

/// Largest `signal` payload, serialized.
pub const MAX_SIGNAL_BYTES: usize = 16 * 1024;
/// Longest `history` page.
pub const MAX_HISTORY_LIMIT: u32 = 100;
/// Longest mute.
pub const MAX_MUTE_SECS: u64 = 7 * 24 * 3600;
/// Minimum interval between two `typing` frames of one user.
const TYPING_INTERVAL: Duration = Duration::from_secs(1);
/// Longest reason or client id.
const MAX_SHORT_TEXT: usize = 256;

const KNOWN_TYPES: &[&str] = &[
    "say",
    "whisper",
    "history",
    "typing",
    "kick",
    "mute",
    "ban",
    "delete",
    "signal",
    "members",
    "ping",
    "dm",
    "block",
    "unblock",
    "dm_history",
    "read",
    "watch",
    "unban",
];

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Room {
    /// Handles one text frame of a connection.
    pub fn handle_text(&mut self, conn: &Conn, text: &str) {
        self.messages_in += 1;
        self.stats_nudge.notify_one();
        if let Err(wait) = conn.bucket.take() {
            self.strike(conn);
            self.error(
                conn,
                code::RATE_LIMITED,
                "too many frames",
                Some(millis(wait)),
            );
            return;
        }
        let msg = match parse_client_frame(text) {
            Ok(m) => m,
            Err(refused) => {
                self.strike(conn);
                return self.error(conn, refused.code, refused.message, None);
            }
        };
        self.dispatch(conn, msg);
    }

    /// Counts a refused frame; sustained abuse closes the connection (1008).
    pub fn strike(&mut self, conn: &Conn) {
        if conn.strikes.take().is_err() {
            tracing::warn!(room = %self.name, user = %conn.user_id, "closing a flooding connection");
            // The errors already queued go out first, then the close.
            conn.out.close_after_queue(close::POLICY, "flooding");
        }
    }

    fn dispatch(&mut self, conn: &Conn, msg: ClientMsg) {
        match msg {
            ClientMsg::Say { text, client_id } => self.say(conn, text, client_id),
            ClientMsg::Whisper { to, text } => self.whisper(conn, &to, text),
            ClientMsg::History { before, limit } => self.history_page(conn, before, limit),
            ClientMsg::Typing => self.typing(conn),
            ClientMsg::Kick { user, reason } => {
                if !self.short_text(conn, "reason", reason.as_deref()) {
                    return;
                }
                let reason = reason.unwrap_or_else(|| "kicked".into());
                self.moderate(conn, &user, |room, target, by| {
                    room.disconnect_user(
                        target,
                        close::KICKED,
                        &format!("kicked by {by}: {reason}"),
                    );
                });
            }
            ClientMsg::Ban { user, reason } => {
                if !self.short_text(conn, "reason", reason.as_deref()) {
                    return;
                }
                let reason = reason.unwrap_or_else(|| "banned".into());
                self.moderate(conn, &user, |room, target, by| {
                    room.ban_member(target, by, &reason);
                });
            }
            ClientMsg::Mute { user, secs } => self.mute(conn, &user, secs),
            ClientMsg::Delete { seq } => self.delete(conn, seq),
            ClientMsg::Signal { to, data } => self.signal(conn, &to, data),
            ClientMsg::Members { after, limit } => {
                let limit = limit.unwrap_or(crate::room::MAX_MEMBERS_PAGE);
                if limit == 0 || limit > crate::room::MAX_MEMBERS_PAGE {
                    let msg = format!(
                        "limit must be between 1 and {}",
                        crate::room::MAX_MEMBERS_PAGE
                    );
                    return self.error(conn, code::BAD_REQUEST, msg, None);
                }
                let (members, more) = self.members_page(after.as_deref(), limit as usize);
                let bytes = encode(&ServerMsg::Members { members, more });
                self.send_to(conn, &bytes);
            }
            ClientMsg::Ping => {
                let pong = encode(&ServerMsg::Pong);
                self.send_to(conn, &pong);
            }
            ClientMsg::Dm {
                to,
                text,
                client_id,
            } => self.dm(conn, to, text, client_id),
            ClientMsg::Block { user } => self.block(conn, user, true),
            ClientMsg::Unblock { user } => self.block(conn, user, false),
            ClientMsg::DmHistory {
                with,
                before,
                limit,
            } => self.dm_history(conn, with, before, limit),
            ClientMsg::Read { with, seq } => self.read(conn, with, seq),
            ClientMsg::Watch { users } => self.watch(conn, users),
            ClientMsg::Unban { user } => self.unban(conn, &user),
        }
    }

    /// Checks a short text (a reason, a client id) against
    /// [`MAX_SHORT_TEXT`] bytes; `too_long` otherwise.
    pub(crate) fn short_text(&mut self, conn: &Conn, what: &str, text: Option<&str>) -> bool {
        if text.is_some_and(|t| t.len() > MAX_SHORT_TEXT) {
            let msg = format!("{what} is longer than {MAX_SHORT_TEXT} bytes");
            self.error(conn, code::TOO_LONG, msg, None);
            return false;
        }
        true
    }

    /// Checks a text's length against the room's limit.
    pub(crate) fn check_text(&mut self, conn: &Conn, text: &str) -> bool {
        if text.trim().is_empty() {
            self.error(conn, code::BAD_REQUEST, "text is empty", None);
            return false;
        }
        let max = self.settings.max_text_len as usize;
        if text.chars().count() > max {
            self.error(
                conn,
                code::TOO_LONG,
                format!("text is longer than {max} characters"),
                None,
            );
            return false;
        }
        true
    }

    /// Applies the word filters: the text to send, or `None` after an
    /// `error filtered`.
    pub(crate) fn filter(&mut self, conn: &Conn, text: String) -> Option<String> {
        match self.filters.apply(text) {
            Verdict::Pass(t) => Some(t),
            Verdict::Reject => {
                let msg = "the text was refused by a word filter";
                self.error(conn, code::FILTERED, msg, None);
                None
            }
        }
    }

    /// The per-user bucket shared by all of a user's devices.
    pub(crate) fn user_allows(&mut self, conn: &Conn) -> bool {
        let wait = match self.users.get(&conn.user_id) {
            Some(u) => u.bucket.take().err(),
            None => return false,
        };
        match wait {
            None => true,
            // No strike: every frame already passed the connection's bucket,
            // and a client that backs off on `retry_after_ms` is never closed.
            Some(wait) => {
                self.error(
                    conn,
                    code::RATE_LIMITED,
                    "too many messages",
                    Some(millis(wait)),
                );
                false
            }
        }
    }

    fn say(&mut self, conn: &Conn, text: String, client_id: Option<String>) {
        if !self.short_text(conn, "client_id", client_id.as_deref()) {
            return;
        }
        if self.outbox.is_full() {
            return self.error(
                conn,
                code::UNAVAILABLE,
                "messages cannot be stored right now; retry later",
                Some(1000),
            );
        }
        if !self.check_text(conn, &text) || !self.user_allows(conn) {
            return;
        }
        if let Some(left) = self.muted_for(&conn.user_id) {
            return self.error(
                conn,
                code::MUTED,
                format!("you are muted for {} more seconds", left.as_secs().max(1)),
                Some(millis(left)),
            );
        }
        let now = Instant::now();
        let slow = Duration::from_millis(self.settings.slow_mode_ms);
        let Some(user) = self.users.get(&conn.user_id) else {
            return;
        };
        let from = user.user_ref();
        if !slow.is_zero()
            && !user.role.moderates()
            && let Some(wait) = self.moderation.slow_mode(&conn.user_id, now, slow)
        {
            return self.error(
                conn,
                code::RATE_LIMITED,
                "slow mode is on",
                Some(millis(wait)),
            );
        }
        let Some(text) = self.filter(conn, text) else {
            return;
        };
        let msg = self.append(from, text);
        let seq = msg.seq;
        // Wake the master link before the recipients' writers: the runtime
        // runs woken tasks in order, so the message reaches the master's
        // socket before any client's. A room killed right after a broadcast
        // has then handed the message over, and its seq is never reused.
        self.flush.notify_one();
        let started = Instant::now();
        let bytes = encode(&ServerMsg::Message(msg));
        self.broadcast(&bytes, Some(conn.id), None);
        self.fanout.observe(started.elapsed().as_secs_f64());
        // The ack goes out once the message is stored (see `Room::confirm`).
        self.outbox.push_ack(PendingAck {
            seq,
            out: conn.out.clone(),
            client_id,
        });
    }

    fn whisper(&mut self, conn: &Conn, to: &str, text: String) {
        if !self.check_text(conn, &text) || !self.user_allows(conn) {
            return;
        }
        let Some(text) = self.filter(conn, text) else {
            return;
        };
        if self.muted_for(&conn.user_id).is_some() {
            return self.error(conn, code::MUTED, "you are muted", None);
        }
        let (Some(from), Some(target)) = (self.users.get(&conn.user_id), self.users.get(to)) else {
            return self.error(
                conn,
                code::NOT_FOUND,
                format!("{to:?} is not in the room"),
                None,
            );
        };
        let bytes = encode(&ServerMsg::Whisper {
            from: from.user_ref(),
            to: target.user_ref(),
            text,
            ts: now_ms(),
        });
        self.send_user(to, &bytes, None);
        if to != conn.user_id {
            let me = conn.user_id.clone();
            self.send_user(&me, &bytes, Some(conn.id));
        }
    }

    fn history_page(&mut self, conn: &Conn, before: Option<u64>, limit: Option<u32>) {
        let limit = limit.unwrap_or(50);
        if limit == 0 || limit > MAX_HISTORY_LIMIT {
            return self.error(
                conn,
                code::BAD_REQUEST,
                format!("limit must be between 1 and {MAX_HISTORY_LIMIT}"),
                None,
            );
        }
        let before = before.unwrap_or(u64::MAX);
        let older: Vec<_> = self.history.iter().filter(|m| m.seq < before).collect();
        let start = older.len().saturating_sub(limit as usize);
        let page: Vec<_> = older[start..].iter().map(|m| (*m).clone()).collect();
        // Older than the page: what memory still holds, then the store.
        let boundary = page
            .first()
            .map(|m| m.seq)
            .unwrap_or_else(|| before.min(self.history.front().map_or(self.seq + 1, |m| m.seq)));
        if page.len() == limit as usize || boundary <= 1 {
            let bytes = encode(&ServerMsg::History {
                messages: page,
                more: boundary > 1,
            });
            return self.send_to(conn, &bytes);
        }
        let missing = limit - u32::try_from(page.len()).unwrap_or(limit);
        self.ask_history(conn.out.clone(), page, boundary, missing);
    }

    fn typing(&mut self, conn: &Conn) {
        let now = Instant::now();
        let Some(user) = self.users.get_mut(&conn.user_id) else {
            return;
        };
        if user.last_typing.is_some_and(|t| now < t + TYPING_INTERVAL) {
            return; // ephemeral: extra typing frames are dropped
        }
        user.last_typing = Some(now);
        let bytes = encode(&ServerMsg::Typing {
            user: user.user_ref(),
        });
        let me = conn.user_id.clone();
        self.broadcast(&bytes, None, Some(&me));
    }

    /// Runs a moderation action when the actor outranks the target.
    fn moderate(&mut self, conn: &Conn, target: &str, act: impl FnOnce(&mut Room, &str, &str)) {
        let Some(actor) = self.users.get(&conn.user_id) else {
            return;
        };
        let (actor_role, actor_name) = (actor.role, actor.name.clone());
        if !actor_role.moderates() {
            return self.error(
                conn,
                code::FORBIDDEN,
                "only moderators and owners may do this",
                None,
            );
        }
        let Some(t) = self.users.get(target) else {
            return self.error(
                conn,
                code::NOT_FOUND,
                format!("{target:?} is not in the room"),
                None,
            );
        };
        if t.role >= actor_role {
            return self.error(
                conn,
                code::FORBIDDEN,
                "you cannot moderate this member",
                None,
            );
        }
        act(self, target, &actor_name);
    }

    fn mute(&mut self, conn: &Conn, target: &str, secs: u64) {
        let by = self.users.get(&conn.user_id).map(|u| u.user_ref());
        self.moderate(conn, target, |room, target, _| {
            if secs == 0 || secs > MAX_MUTE_SECS {
                let msg = format!("secs must be between 1 and {MAX_MUTE_SECS}");
                return room.error(conn, code::BAD_REQUEST, msg, None);
            }
            let Some(user) = room.users.get(target).map(|u| u.user_ref()) else {
                return;
            };
            room.moderation
                .mute(target, Instant::now(), Duration::from_secs(secs));
            if let Some(by) = by {
                let bytes = encode(&ServerMsg::Muted { user, secs, by });
                room.broadcast(&bytes, None, None);
            }
        });
    }

    fn delete(&mut self, conn: &Conn, seq: u64) {
        let Some(actor) = self.users.get(&conn.user_id) else {
            return;
        };
        if !actor.role.moderates() {
            return self.error(
                conn,
                code::FORBIDDEN,
                "only moderators and owners may delete",
                None,
            );
        }
        let by = actor.user_ref();
        let Some(m) = self.history.iter_mut().find(|m| m.seq == seq && !m.deleted) else {
            return self.error(conn, code::NOT_FOUND, format!("no message {seq}"), None);
        };
        m.deleted = true;
        m.text.clear();
        let bytes = encode(&ServerMsg::Deleted { seq, by });
        self.broadcast(&bytes, None, None);
        // Not yet stored: it will be stored deleted. Stored: mark it there.
        self.outbox.mark_deleted(seq);
        self.tell_master(chat_shared::ipc::WorkerMsg::Deleted { seq });
    }

    fn signal(&mut self, conn: &Conn, to: &str, data: serde_json::Value) {
        let size = serde_json::to_vec(&data)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_SIGNAL_BYTES {
            return self.error(
                conn,
                code::TOO_LONG,
                format!("signal data is larger than {MAX_SIGNAL_BYTES} bytes"),
                None,
            );
        }
        if !self.user_allows(conn) {
            return;
        }
        let Some(from) = self.users.get(&conn.user_id).map(|u| u.user_ref()) else {
            return;
        };
        if !self.users.contains_key(to) {
            return self.error(
                conn,
                code::NOT_FOUND,
                format!("{to:?} is not in the room"),
                None,
            );
        }
        let bytes = encode(&ServerMsg::Signal { from, data });
        self.send_user(to, &bytes, None);
    }
}

/// Why a client text frame was refused before it reached a command: the
/// `error` frame's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRefused {
    pub code: &'static str,
    pub message: String,
}

impl FrameRefused {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Parses one client text frame into a command: JSON first, then a string
/// `type` among the known ones, then the command's fields. Pure: the room
/// applies limits (text length, rates) when it runs the command.
pub fn parse_client_frame(text: &str) -> Result<ClientMsg, FrameRefused> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| FrameRefused::new(code::BAD_JSON, format!("not JSON: {e}")))?;
    let Some(kind) = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
    else {
        return Err(FrameRefused::new(
            code::BAD_REQUEST,
            "a frame needs a string \"type\"",
        ));
    };
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        let msg = format!("unknown type {:?}", truncate(&kind, 32));
        return Err(FrameRefused::new(code::UNKNOWN_TYPE, msg));
    }
    serde_json::from_value(value)
        .map_err(|e| FrameRefused::new(code::BAD_REQUEST, format!("bad {kind}: {e}")))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
