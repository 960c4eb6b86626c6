//! The state of one room: members, their connections, the message sequence
//! and the recent history. One `Mutex<Room>` per worker; it is never held
//! across an `.await`, and everything a join or a message changes happens in
//! one critical section, so every connection sees frames in `seq` order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use chat_shared::ipc::{Reference, RoomStats, StoredMessage, WorkerMsg};
use chat_shared::protocol::{ChatMessage, Member, Role, ServerMsg, UserRef, close};
use chat_shared::settings::RoomSettings;

use crate::filters::Filters;
use crate::identity::{Identity, Refusal};
use crate::limits::Bucket;
use crate::outbound::Outbound;

/// Members listed in `welcome` (the rest by `members` requests): a large
/// room's full list in every welcome would cost every join O(members).
pub const WELCOME_MEMBERS: usize = 100;
/// Longest `members` page.
pub const MAX_MEMBERS_PAGE: u32 = 500;

/// Messages kept in memory for resume and `history`, at least.
pub const MIN_KEPT: usize = 1000;
/// Messages waiting to be stored before `say` is refused: the buffer that
/// carries a room through a master restart or a store outage.
pub use chat_shared::ipc::MAX_UNCONFIRMED;

/// An ack waiting for its message to be stored.
#[derive(Debug)]
pub struct PendingAck {
    pub seq: u64,
    pub out: Arc<Outbound>,
    pub client_id: Option<String>,
}

/// A `history` request waiting for the store.
#[derive(Debug)]
pub struct PendingHistory {
    pub out: Arc<Outbound>,
    /// The part served from memory (newer than what the store returns).
    pub memory: Vec<ChatMessage>,
}

/// One WebSocket connection of a member.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub user_id: String,
    pub out: Arc<Outbound>,
    /// Pings sent without any frame received since.
    pub missed_pings: AtomicU32,
    pub bucket: Bucket,
    pub strikes: Bucket,
}

/// A member: one user with one or more connections.
#[derive(Debug)]
pub struct User {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub conns: Vec<Arc<Conn>>,
    pub last_typing: Option<Instant>,
    pub bucket: Bucket,
}

impl User {
    pub fn user_ref(&self) -> UserRef {
        UserRef {
            id: self.id.clone(),
            name: self.name.clone(),
            guest: self.role == Role::Guest,
        }
    }

    pub fn member(&self) -> Member {
        Member {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
            connections: u32::try_from(self.conns.len()).unwrap_or(u32::MAX),
            guest: self.role == Role::Guest,
        }
    }
}

/// Where a reconnecting client left off (`?since=&epoch=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub since: u64,
    pub epoch: u64,
}

/// The room.
#[derive(Debug)]
pub struct Room {
    pub name: String,
    pub settings: RoomSettings,
    pub epoch: u64,
    pub seq: u64,
    pub history: VecDeque<ChatMessage>,
    pub users: HashMap<String, User>,
    /// Users banned from this room, with the reason.
    pub bans: HashMap<String, String>,
    /// Muted users and until when; kept across their reconnects.
    pub mutes: HashMap<String, Instant>,
    /// Time of each user's last `say`, for slow mode; kept across reconnects.
    pub last_say: HashMap<String, Instant>,
    pub closing: bool,
    next_conn: u64,
    /// Messages not yet confirmed stored, oldest first.
    pub unconfirmed: VecDeque<StoredMessage>,
    /// Highest seq handed to the current master link.
    pub sent_seq: u64,
    /// Highest seq the master confirmed stored.
    pub durable_seq: u64,
    pub acks: VecDeque<PendingAck>,
    pub reference: Reference,
    pub user_names: HashMap<String, String>,
    pub filters: Filters,
    pub history_queries: HashMap<u64, PendingHistory>,
    next_query: u64,
    /// Messages for the master (stored messages travel separately).
    pub to_master: Option<tokio::sync::mpsc::UnboundedSender<WorkerMsg>>,
    /// Wakes the master link to send new messages at once.
    pub flush: Arc<tokio::sync::Notify>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub fanout: chat_shared::ipc::Histogram,
    /// Connections of a shootout-mode room (no identity, no presence).
    plain: HashMap<u64, Arc<Outbound>>,
    /// Bytes of message text a `welcome` replays at most.
    pub welcome_history_bytes: usize,
}

/// Serializes a frame once; the bytes are shared by every recipient.
pub fn encode(msg: &ServerMsg) -> Utf8Bytes {
    match serde_json::to_string(msg) {
        Ok(s) => Utf8Bytes::from(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a server frame");
            Utf8Bytes::from_static(
                "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"internal error\"}",
            )
        }
    }
}

/// A stored message as clients see it (a deleted one without its text).
fn chat_message(m: StoredMessage) -> ChatMessage {
    ChatMessage {
        seq: m.seq,
        from: UserRef {
            guest: m.user_id.starts_with(crate::identity::GUEST_PREFIX),
            id: m.user_id,
            name: m.name,
        },
        text: if m.deleted { String::new() } else { m.text },
        ts: m.ts,
        deleted: m.deleted,
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Room {
    pub fn new(name: String, settings: RoomSettings, epoch: u64, seq: u64) -> Self {
        Self {
            name,
            settings,
            epoch,
            seq,
            unconfirmed: VecDeque::new(),
            sent_seq: seq,
            durable_seq: seq,
            acks: VecDeque::new(),
            reference: Reference::default(),
            user_names: HashMap::new(),
            filters: Filters::default(),
            history_queries: HashMap::new(),
            next_query: 0,
            to_master: None,
            flush: Arc::new(tokio::sync::Notify::new()),
            history: VecDeque::new(),
            users: HashMap::new(),
            bans: HashMap::new(),
            mutes: HashMap::new(),
            last_say: HashMap::new(),
            closing: false,
            next_conn: 0,
            messages_in: 0,
            messages_out: 0,
            fanout: Default::default(),
            plain: HashMap::new(),
            welcome_history_bytes: chat_shared::limits::Limits::default().welcome_history_bytes
                as usize,
        }
    }

    fn kept(&self) -> usize {
        MIN_KEPT.max(self.settings.history_size as usize)
    }

    /// Queues a frame on one connection.
    pub fn send_to(&mut self, conn: &Conn, bytes: &Utf8Bytes) {
        if conn.out.send(bytes) {
            self.messages_out += 1;
        }
    }

    /// Queues a frame on every connection of one user, but `except`.
    pub fn send_user(&mut self, user_id: &str, bytes: &Utf8Bytes, except: Option<u64>) {
        let mut sent = 0;
        if let Some(u) = self.users.get(user_id) {
            for c in &u.conns {
                if Some(c.id) != except && c.out.send(bytes) {
                    sent += 1;
                }
            }
        }
        self.messages_out += sent;
    }

    /// Queues a frame on every connection, but `except` (a connection id) and
    /// `except_user`.
    pub fn broadcast(&mut self, bytes: &Utf8Bytes, except: Option<u64>, except_user: Option<&str>) {
        let mut sent = 0;
        for u in self.users.values() {
            if Some(u.id.as_str()) == except_user {
                continue;
            }
            for c in &u.conns {
                if Some(c.id) != except && c.out.send(bytes) {
                    sent += 1;
                }
            }
        }
        self.messages_out += sent;
    }

    /// Sends an `error` frame to one connection.
    pub fn error(
        &mut self,
        conn: &Conn,
        code: &str,
        message: impl Into<String>,
        retry_after_ms: Option<u64>,
    ) {
        let bytes = encode(&ServerMsg::Error {
            code: code.to_owned(),
            message: chat_shared::limits::cap_error_message(message.into()),
            retry_after_ms,
        });
        self.send_to(conn, &bytes);
    }

    /// A page of members ordered by (name, id), after the member `after`;
    /// and whether more follow.
    pub fn members_page(&self, after: Option<&str>, limit: usize) -> (Vec<Member>, bool) {
        let key = |u: &User| (u.name.clone(), u.id.clone());
        let from = after.and_then(|id| self.users.get(id)).map(key);
        let mut m: Vec<&User> = self
            .users
            .values()
            .filter(|u| from.as_ref().is_none_or(|f| key(u) > *f))
            .collect();
        m.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        let more = m.len() > limit;
        (m.into_iter().take(limit).map(User::member).collect(), more)
    }

    /// Adds a connection: checks bans and capacity, sends `welcome` (and the
    /// replay of a resume) before any live frame, and `joined` to the others
    /// on the user's first connection.
    pub fn join(
        &mut self,
        who: Identity,
        out: Arc<Outbound>,
        resume: Option<Resume>,
    ) -> Result<Arc<Conn>, Refusal> {
        if self.closing {
            return Err(Refusal::new(close::GOING_AWAY, "room is closing"));
        }
        if let Some(reason) = self.ban_reason(&who.id) {
            return Err(Refusal::new(close::BANNED, format!("banned: {reason}")));
        }
        let mut who = who;
        if let Some(name) = self.user_names.get(&who.id) {
            who.name = name.clone();
        }
        let first = !self.users.contains_key(&who.id);
        // A guest may not pose as a signed-in user present in the room.
        if who.role == Role::Guest
            && self
                .users
                .values()
                .any(|u| u.role != Role::Guest && crate::identity::same_name(&u.name, &who.name))
        {
            return Err(Refusal::new(
                close::BAD_REQUEST,
                "name is taken by a signed-in member",
            ));
        }
        if first
            && let Some(max) = self.settings.max_members
            && self.users.len() >= max as usize
        {
            return Err(Refusal::new(close::ROOM_FULL, "room is full"));
        }
        self.next_conn += 1;
        let conn = Arc::new(Conn {
            id: self.next_conn,
            user_id: who.id.clone(),
            out,
            missed_pings: AtomicU32::new(0),
            bucket: Bucket::connection(),
            strikes: Bucket::strikes(),
        });
        let user = self.users.entry(who.id.clone()).or_insert_with(|| User {
            id: who.id.clone(),
            name: who.name.clone(),
            role: who.role,
            conns: Vec::new(),
            last_typing: None,
            bucket: Bucket::user(),
        });
        // The latest connection's name and role win.
        user.name = who.name;
        user.role = who.role;
        user.conns.push(conn.clone());
        let me = user.member();

        let (mut resumed, mut replay) = self.replay_after(resume);
        let replay_bytes: usize = replay.iter().map(|m| m.text.len() + 128).sum();
        if replay_bytes > conn.out.limit() / 2 {
            // Too much to replay at once: the client reloads history instead.
            (resumed, replay) = (false, Vec::new());
        }
        let history = if resumed {
            Vec::new()
        } else {
            // The latest `history_size` messages, as many as fit the byte
            // budget of a welcome.
            let n = self.settings.history_size as usize;
            let mut budget = self.welcome_history_bytes;
            let mut newest: Vec<ChatMessage> = Vec::new();
            for m in self.history.iter().rev().take(n) {
                let size = m.text.len() + m.from.name.len() + m.from.id.len();
                if size > budget {
                    break;
                }
                budget -= size;
                newest.push(m.clone());
            }
            newest.reverse();
            newest
        };
        let deleted = match resume {
            Some(r) if resumed => self
                .history
                .iter()
                .filter(|m| m.deleted && m.seq <= r.since)
                .map(|m| m.seq)
                .collect(),
            _ => Vec::new(),
        };
        let members = self.members_page(None, WELCOME_MEMBERS).0;
        let member_count = u32::try_from(self.users.len()).unwrap_or(u32::MAX);
        let mut history = history;
        let welcome = loop {
            let bytes = encode(&ServerMsg::Welcome {
                room: self.name.clone(),
                you: me.clone(),
                members: members.clone(),
                member_count,
                history: history.clone(),
                seq: self.seq,
                epoch: self.epoch,
                resumed,
                deleted: deleted.clone(),
            });
            // A welcome must fit the connection's queue with room to spare:
            // with long messages, fewer of them (the client pages for more).
            if bytes.len() <= conn.out.limit() / 2 || history.is_empty() {
                break bytes;
            }
            history.drain(..history.len().div_ceil(2));
        };
        self.send_to(&conn, &welcome);
        for m in replay {
            let bytes = encode(&ServerMsg::Message(m));
            self.send_to(&conn, &bytes);
        }
        if first {
            let joined = encode(&ServerMsg::Joined { user: me });
            self.broadcast(&joined, None, Some(&conn.user_id));
        }
        Ok(conn)
    }

    /// Remaining mute of a user, if any (expired mutes are forgotten).
    pub fn muted_for(&mut self, user_id: &str) -> Option<std::time::Duration> {
        let now = Instant::now();
        match self.mutes.get(user_id) {
            Some(&until) if until > now => Some(until - now),
            Some(_) => {
                self.mutes.remove(user_id);
                None
            }
            None => None,
        }
    }

    /// Whether a resume can be served, and the messages to replay.
    fn replay_after(&self, resume: Option<Resume>) -> (bool, Vec<ChatMessage>) {
        let Some(r) = resume else {
            return (false, Vec::new());
        };
        if r.epoch != self.epoch || r.since > self.seq {
            return (false, Vec::new());
        }
        let oldest = self.history.front().map_or(self.seq + 1, |m| m.seq);
        if r.since + 1 < oldest {
            return (false, Vec::new());
        }
        let replay = self
            .history
            .iter()
            .filter(|m| m.seq > r.since)
            .cloned()
            .collect();
        (true, replay)
    }

    /// Removes a connection; `left` goes out after the user's last one.
    pub fn leave(&mut self, conn: &Conn) {
        let Some(user) = self.users.get_mut(&conn.user_id) else {
            return;
        };
        user.conns.retain(|c| c.id != conn.id);
        if user.conns.is_empty()
            && let Some(user) = self.users.remove(&conn.user_id)
        {
            let left = encode(&ServerMsg::Left {
                user: user.user_ref(),
            });
            self.broadcast(&left, None, None);
        }
    }

    /// Appends a message to the sequence and the in-memory history.
    pub fn append(&mut self, from: UserRef, text: String) -> ChatMessage {
        self.seq += 1;
        let msg = ChatMessage {
            seq: self.seq,
            from,
            text,
            ts: now_ms(),
            deleted: false,
        };
        self.unconfirmed.push_back(StoredMessage {
            epoch: self.epoch,
            seq: msg.seq,
            user_id: msg.from.id.clone(),
            name: msg.from.name.clone(),
            text: msg.text.clone(),
            ts: msg.ts,
            deleted: false,
        });
        self.history.push_back(msg.clone());
        while self.history.len() > self.kept() {
            self.history.pop_front();
        }
        msg
    }

    /// Fills the in-memory history with the store's latest messages (a
    /// restarted room serves resumes and history from memory again).
    pub fn load_recent(&mut self, recent: Vec<StoredMessage>) {
        let seq = self.seq;
        self.history.extend(
            recent
                .into_iter()
                .filter(|m| m.seq <= seq)
                .map(chat_message),
        );
        while self.history.len() > self.kept() {
            self.history.pop_front();
        }
    }

    /// Messages not yet handed to the current master link.
    pub fn take_unsent(&mut self) -> Vec<StoredMessage> {
        let from = self.sent_seq;
        let batch: Vec<StoredMessage> = self
            .unconfirmed
            .iter()
            .filter(|m| m.seq > from)
            .cloned()
            .collect();
        if let Some(last) = batch.last() {
            self.sent_seq = last.seq;
        }
        batch
    }

    /// A new master link: everything unconfirmed is sent again.
    pub fn relink(&mut self) {
        self.sent_seq = self.durable_seq;
    }

    /// The master stored every message up to `seq`: acknowledge them.
    pub fn confirm(&mut self, seq: u64) {
        if seq <= self.durable_seq {
            return;
        }
        self.durable_seq = seq;
        self.sent_seq = self.sent_seq.max(seq);
        while self.unconfirmed.front().is_some_and(|m| m.seq <= seq) {
            self.unconfirmed.pop_front();
        }
        while self.acks.front().is_some_and(|a| a.seq <= seq) {
            if let Some(a) = self.acks.pop_front() {
                let ack = encode(&ServerMsg::Ack {
                    client_id: a.client_id,
                    seq: a.seq,
                });
                if a.out.send(&ack) {
                    self.messages_out += 1;
                }
            }
        }
    }

    /// Sends a message to the master (if linked, else queued in the channel).
    pub fn tell_master(&self, msg: WorkerMsg) {
        if let Some(tx) = &self.to_master {
            let _ = tx.send(msg);
        }
    }

    /// Registers a history request for the store.
    pub fn ask_history(
        &mut self,
        out: Arc<Outbound>,
        memory: Vec<ChatMessage>,
        before: u64,
        limit: u32,
    ) {
        self.next_query += 1;
        let id = self.next_query;
        self.history_queries
            .insert(id, PendingHistory { out, memory });
        self.tell_master(WorkerMsg::HistoryQuery { id, before, limit });
    }

    /// The store's answer to a history request.
    pub fn history_answer(
        &mut self,
        id: u64,
        stored: Vec<StoredMessage>,
        more: bool,
        error: Option<String>,
    ) {
        let Some(p) = self.history_queries.remove(&id) else {
            return;
        };
        let bytes = match error {
            Some(e) => encode(&ServerMsg::Error {
                code: chat_shared::protocol::code::UNAVAILABLE.into(),
                message: format!("history is unavailable: {e}"),
                retry_after_ms: Some(1000),
            }),
            None => {
                let mut messages: Vec<ChatMessage> = stored.into_iter().map(chat_message).collect();
                messages.extend(p.memory);
                encode(&ServerMsg::History { messages, more })
            }
        };
        if p.out.send(&bytes) {
            self.messages_out += 1;
        }
    }

    /// Why a user may not be here, if banned (room ban or store ban).
    pub fn ban_reason(&self, user_id: &str) -> Option<String> {
        if let Some(r) = self.bans.get(user_id) {
            return Some(r.clone());
        }
        let now = now_ms();
        self.reference
            .bans
            .iter()
            .find(|b| b.applies(user_id, &self.name, now))
            .map(|b| b.reason.clone().unwrap_or_else(|| "banned".into()))
    }

    /// New reference data: names, filters, and bans that remove users.
    pub fn apply_reference(&mut self, reference: Reference) {
        if reference.version < self.reference.version {
            return;
        }
        self.filters = Filters::new(&reference.filters);
        self.user_names = reference.users.iter().cloned().collect();
        self.reference = reference;
        let banned: Vec<(String, String)> = self
            .users
            .keys()
            .filter_map(|id| self.ban_reason(id).map(|r| (id.clone(), r)))
            .collect();
        for (id, reason) in banned {
            tracing::info!(room = %self.name, user = %id, "removing a banned user");
            self.disconnect_user(&id, close::BANNED, &format!("banned: {reason}"));
        }
    }

    /// Closes every connection of a user with a close code.
    pub fn disconnect_user(&mut self, user_id: &str, code: u16, reason: &str) -> bool {
        match self.users.get(user_id) {
            Some(u) => {
                for c in &u.conns {
                    c.out.close_after_queue(code, reason);
                }
                true
            }
            None => false,
        }
    }

    /// Tells everyone the room is closing, then closes every connection
    /// (after what is already queued) with 1001.
    pub fn shutdown(&mut self, reason: &str, code: u16) {
        self.closing = true;
        let closing = encode(&ServerMsg::Closing {
            reason: reason.to_owned(),
            in_secs: None,
        });
        self.broadcast(&closing, None, None);
        for u in self.users.values() {
            for c in &u.conns {
                c.out.close_after_queue(code, reason);
            }
        }
        for out in self.plain.values() {
            out.close_after_queue(code, reason);
        }
    }

    pub fn stats(&self) -> RoomStats {
        RoomStats {
            members: u32::try_from(self.users.len()).unwrap_or(u32::MAX),
            connections: u32::try_from(
                self.users.values().map(|u| u.conns.len()).sum::<usize>() + self.plain.len(),
            )
            .unwrap_or(u32::MAX),
            messages_in: self.messages_in,
            messages_out: self.messages_out,
            epoch: self.epoch,
            seq: self.seq,
            pending_writes: u32::try_from(self.unconfirmed.len()).unwrap_or(u32::MAX),
            fanout: self.fanout,
        }
    }

    /// Messages waiting for the store.
    pub fn pending_writes(&self) -> usize {
        self.unconfirmed.len()
    }

    /// Adds a shootout-mode connection.
    pub fn add_plain(&mut self, out: Arc<Outbound>) -> u64 {
        self.next_conn += 1;
        self.plain.insert(self.next_conn, out);
        self.next_conn
    }

    pub fn remove_plain(&mut self, id: u64) {
        self.plain.remove(&id);
    }

    /// Sends a frame to every shootout-mode connection.
    pub fn broadcast_plain(&mut self, bytes: &Utf8Bytes) {
        self.messages_in += 1;
        let started = Instant::now();
        let mut sent = 0;
        for out in self.plain.values() {
            if out.send(bytes) {
                sent += 1;
            }
        }
        self.fanout.observe(started.elapsed().as_secs_f64());
        self.messages_out += sent;
    }

    /// Every connection (for pings).
    pub fn all_conns(&self) -> Vec<Arc<Conn>> {
        self.users
            .values()
            .flat_map(|u| u.conns.iter().cloned())
            .collect()
    }
}
