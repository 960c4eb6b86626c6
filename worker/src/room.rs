//! The state of one room: members, their connections, the message sequence
//! and the recent history. One `Mutex<Room>` per worker; it is never held
//! across an `.await`, and everything a join or a message changes happens in
//! one critical section, so every connection sees frames in `seq` order.

use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use chat_shared::ipc::{Reference, ReferenceDelta, RoomStats, StoredMessage, WorkerMsg};
use chat_shared::protocol::{ChatMessage, Member, Role, ServerMsg, UserRef, close, code};
use chat_shared::reference::ReferenceIndex;
use chat_shared::settings::RoomSettings;

use crate::announce::Route;
use crate::filters::Filters;
use crate::history::{History, PendingHistory, Queries};
use crate::identity::{Identity, Refusal};
use crate::limits::Bucket;
pub use crate::members::{Conn, Members};
use crate::moderation::Moderation;
use crate::outbound::Outbound;
use crate::outbox::Outbox;
use crate::wire::Encoded;

/// Members listed in `welcome` (the rest by `members` requests): a large
/// room's full list in every welcome would cost every join O(members).
pub const WELCOME_MEMBERS: usize = 100;
/// Longest `members` page.
pub const MAX_MEMBERS_PAGE: u32 = 500;

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
    pub history: History,
    pub users: Members,
    /// Bans, mutes and slow mode.
    pub moderation: Moderation,
    pub closing: bool,
    next_conn: u64,
    /// Messages not yet confirmed stored, and their acks.
    pub outbox: Outbox,
    /// Profiles, store bans and filters, keyed by user id.
    pub reference: ReferenceIndex,
    /// Set once the room asked the master for the full reference data.
    reference_resync: bool,
    pub filters: Filters,
    pub history_queries: Queries,
    /// Whether a master link is up (store queries are possible).
    pub linked: bool,
    /// Notices for the master, bounded (stored messages travel in the
    /// outbox).
    pub to_master: Option<Arc<crate::notices::Notices>>,
    /// Wakes the master link to send new messages at once.
    pub flush: Arc<tokio::sync::Notify>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub fanout: chat_shared::ipc::Histogram,
    /// Bytes of message text a `welcome` replays at most.
    pub welcome_history_bytes: usize,
    /// Direct-message requests waiting for the master.
    pub direct: crate::direct::Waiting,
    /// Wakes the expiry clock when a request starts waiting (an idle room
    /// never ticks).
    pub clock: Arc<tokio::sync::Notify>,
    /// Wakes the master link to send stats soon after a change.
    pub stats_nudge: Arc<tokio::sync::Notify>,
    /// Wakes the client ping clock when a connection joins (a room with
    /// no connection has no clock ticking).
    pub joined: Arc<tokio::sync::Notify>,
    /// Arrivals and departures gathered in a large room.
    pub announce: crate::announce::Announcements,
}

/// Serializes a frame once; the bytes are shared by every recipient.
pub fn encode(msg: &ServerMsg) -> Encoded {
    match Encoded::json(msg) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a server frame");
            Encoded::text(
                "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"internal error\"}",
            )
        }
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
        let history = History::new(settings.history_size as usize);
        let clock = Arc::new(tokio::sync::Notify::new());
        Self {
            name,
            settings,
            epoch,
            seq,
            outbox: Outbox::new(seq),
            reference: ReferenceIndex::default(),
            reference_resync: false,
            filters: Filters::default(),
            history_queries: Queries::new(clock.clone()),
            linked: false,
            to_master: None,
            flush: Arc::new(tokio::sync::Notify::new()),
            history,
            users: Members::default(),
            moderation: Moderation::default(),
            closing: false,
            next_conn: 0,
            messages_in: 0,
            messages_out: 0,
            fanout: Default::default(),
            welcome_history_bytes: chat_shared::limits::Limits::default().welcome_history_bytes
                as usize,
            direct: crate::direct::Waiting::new(clock.clone()),
            clock,
            stats_nudge: Default::default(),
            joined: Default::default(),
            announce: Default::default(),
        }
    }

    /// Queues a frame on one connection.
    pub fn send_to(&mut self, conn: &Conn, bytes: &Encoded) {
        if conn.out.send(bytes) {
            self.messages_out += 1;
        }
    }

    /// Queues a frame on every connection of one user, but `except`.
    pub fn send_user(&mut self, user_id: &str, bytes: &Encoded, except: Option<u64>) {
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
    pub fn broadcast(&mut self, bytes: &Encoded, except: Option<u64>, except_user: Option<&str>) {
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
            client_id: None,
            seq: None,
        });
        self.send_to(conn, &bytes);
    }

    /// A page of members ordered by (name, id), after the member `after`;
    /// and whether more follow.
    pub fn members_page(&self, after: Option<&str>, limit: usize) -> (Vec<Member>, bool) {
        self.users.page(after, limit)
    }

    /// Adds a connection: checks bans and capacity, sends `welcome` (and the
    /// replay of a resume) before any live frame, and `joined` to the others
    /// on the user's first connection.
    pub fn join(
        &mut self,
        who: Identity,
        out: Arc<Outbound>,
        resume: Option<Resume>,
        state: Option<crate::direct::WelcomeState>,
    ) -> Result<Arc<Conn>, Refusal> {
        if self.closing {
            return Err(Refusal::new(close::GOING_AWAY, "room is closing"));
        }
        if let Some(reason) = self.ban_reason(&who.id) {
            return Err(Refusal::new(close::BANNED, format!("banned: {reason}")));
        }
        let mut who = who;
        if let Some(name) = self.reference.name(&who.id) {
            who.name = name.to_owned();
        }
        let first = !self.users.contains_key(&who.id);
        // Nobody may look like a moderator or owner present in the room, and
        // a guest may not look like any signed-in member (TR39 skeletons:
        // case, homoglyphs and invisible characters ignored).
        let skeleton = crate::confusables::name_skeleton(&who.name);
        let posed = self
            .users
            .signed_in_like(&skeleton, &who.id)
            .find(|u| u.role.moderates() || who.role == Role::Guest);
        if let Some(u) = posed {
            let reason = if u.role.moderates() {
                "name looks like that of a moderator in the room"
            } else {
                "name is taken by a signed-in member"
            };
            return Err(Refusal::new(close::BAD_REQUEST, reason));
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
        // The latest connection's name and role win.
        let user = self.users.upsert(&who.id, &who.name, who.role);
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
                last_read: state.as_ref().map(|s| s.last_read),
                dms: state.as_ref().map(|s| s.dms.clone().into()),
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
        if first && who.role != Role::Guest {
            self.tell_master(WorkerMsg::UserJoined {
                user: who.id.clone(),
            });
        }
        self.stats_nudge.notify_one();
        self.joined.notify_one();
        if first {
            let before = self.users.len().saturating_sub(1);
            if self.announce.joined(&me, before) == Route::Now {
                let joined = encode(&ServerMsg::Joined { user: me });
                self.broadcast(&joined, None, Some(&conn.user_id));
            }
        }
        Ok(conn)
    }

    /// Remaining mute of a user, if any (expired mutes are forgotten).
    pub fn muted_for(&mut self, user_id: &str) -> Option<std::time::Duration> {
        self.moderation.muted_for(user_id, Instant::now())
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
        self.unwatch(conn.id);
        let Some(user) = self.users.get_mut(&conn.user_id) else {
            return;
        };
        user.conns.retain(|c| c.id != conn.id);
        self.stats_nudge.notify_one();
        if user.conns.is_empty()
            && let Some(user) = self.users.remove(&conn.user_id)
        {
            if user.role != Role::Guest {
                self.tell_master(WorkerMsg::UserLeft {
                    user: user.id.clone(),
                });
            }
            let user = user.user_ref();
            if self.announce.left(&user, self.users.len() + 1) == Route::Now {
                let left = encode(&ServerMsg::Left { user });
                self.broadcast(&left, None, None);
            }
        }
    }

    /// Sends the gathered arrivals and departures of a large room (see
    /// `announce.rs`).
    pub fn flush_announcements(&mut self) {
        if let Some(frame) = self.announce.take(self.users.len()) {
            let bytes = encode(&frame);
            self.broadcast(&bytes, None, None);
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
        self.outbox.push(StoredMessage {
            epoch: self.epoch,
            seq: msg.seq,
            user_id: msg.from.id.clone(),
            name: msg.from.name.clone(),
            text: msg.text.clone(),
            ts: msg.ts,
            deleted: false,
        });
        self.history.push(msg.clone());
        msg
    }

    /// Fills the in-memory history with the store's latest messages (a
    /// restarted room serves resumes and history from memory again).
    pub fn load_recent(&mut self, recent: Vec<StoredMessage>) {
        self.history.load(recent, self.seq);
    }

    /// The next batch of messages for the master link (see [`Outbox`]).
    pub fn next_batch(&mut self) -> Option<Vec<StoredMessage>> {
        self.outbox.next_batch()
    }

    /// A new master link: everything unconfirmed is sent again.
    pub fn relink(&mut self) {
        self.linked = true;
        self.outbox.relink();
        self.report_users();
        self.resend_bans();
    }

    /// The master link is down: the store's answers to pending `history`
    /// requests are lost, and new ones are refused until it is back.
    pub fn unlink(&mut self) {
        self.linked = false;
        for p in self.history_queries.drain() {
            self.history_unavailable(&p, "the master is unreachable");
        }
        self.unlink_direct();
    }

    /// Answers the `history` requests the store did not answer in time.
    pub fn nothing_waits(&self) -> bool {
        self.history_queries.is_empty() && self.direct.is_empty()
    }

    pub fn expire_queries(&mut self) {
        for p in self.history_queries.expired(Instant::now()) {
            self.history_unavailable(&p, "the store did not answer in time");
        }
        self.expire_direct();
    }

    fn history_unavailable(&mut self, p: &PendingHistory, why: &str) {
        let bytes = encode(&ServerMsg::Error {
            code: code::UNAVAILABLE.into(),
            message: format!("history is unavailable: {why}"),
            retry_after_ms: Some(1000),
            client_id: None,
            seq: None,
        });
        if p.out.send(&bytes) {
            self.messages_out += 1;
        }
    }

    /// The master stored every message up to `seq`: acknowledge them, and
    /// wake the link for what the confirmation lets through.
    pub fn confirm(&mut self, seq: u64) {
        self.stats_nudge.notify_one();
        for a in self.outbox.confirm(seq) {
            let ack = encode(&ServerMsg::Ack {
                client_id: a.client_id,
                seq: a.seq,
                conversation: None,
            });
            if a.out.send(&ack) {
                self.messages_out += 1;
            }
        }
        if self.outbox.has_unsent() {
            self.flush.notify_one();
        }
    }

    /// The master will never store these messages (`code`: `not_stored` or
    /// `conflict`): their senders get an error carrying the `client_id` and
    /// seq instead of an ack. The `Durable` that follows moves past them.
    /// They leave the in-memory history too (resumes and `history` agree
    /// with the store).
    pub fn fail(&mut self, seqs: &[u64], code: &str) {
        self.history.retain(|m| !seqs.contains(&m.seq));
        for a in self.outbox.fail(seqs) {
            tracing::warn!(room = %self.name, seq = a.seq, code, "a message will not be stored; its sender is told");
            let message = if code == chat_shared::protocol::code::CONFLICT {
                "another message is stored at this seq; this one is not stored"
            } else {
                "the store refused this message; it is not stored"
            };
            let bytes = encode(&ServerMsg::Error {
                code: code.to_owned(),
                message: message.to_owned(),
                retry_after_ms: None,
                client_id: a.client_id,
                seq: Some(a.seq),
            });
            if a.out.send(&bytes) {
                self.messages_out += 1;
            }
        }
    }

    /// Sends a notice to the master (queued, bounded, while unlinked).
    pub fn tell_master(&self, msg: WorkerMsg) {
        if let Some(notices) = &self.to_master {
            notices.send(msg);
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
        let refused = if !self.linked {
            "the master is unreachable"
        } else if let Some(id) = self.history_queries.register(out.clone(), memory) {
            return self.tell_master(WorkerMsg::HistoryQuery { id, before, limit });
        } else {
            "too many history requests are waiting"
        };
        let bytes = encode(&ServerMsg::Error {
            code: code::UNAVAILABLE.into(),
            message: format!("history is unavailable: {refused}"),
            retry_after_ms: Some(1000),
            client_id: None,
            seq: None,
        });
        if out.send(&bytes) {
            self.messages_out += 1;
        }
    }

    /// The store's answer to a history request.
    pub fn history_answer(
        &mut self,
        id: u64,
        stored: Vec<StoredMessage>,
        more: bool,
        error: Option<String>,
    ) {
        let Some(p) = self.history_queries.take(id) else {
            return;
        };
        let bytes = match error {
            Some(e) => encode(&ServerMsg::Error {
                code: chat_shared::protocol::code::UNAVAILABLE.into(),
                message: format!("history is unavailable: {e}"),
                retry_after_ms: Some(1000),
                client_id: None,
                seq: None,
            }),
            None => {
                let mut messages: Vec<ChatMessage> = stored
                    .into_iter()
                    .map(crate::history::chat_message)
                    .collect();
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
        self.moderation.ban_reason(
            user_id,
            &self.name,
            self.reference.bans_of(user_id),
            now_ms(),
        )
    }

    /// New reference data (the whole of it, whatever its version): names,
    /// filters, and bans that remove users.
    pub fn apply_reference(&mut self, reference: Reference) {
        self.reference = ReferenceIndex::from_reference(reference);
        self.reference_resync = false;
        self.filters = Filters::new(self.reference.filters());
        self.settle_bans();
        let members: Vec<String> = self.users.keys().cloned().collect();
        self.remove_banned(members);
    }

    /// A change of the reference data (or one chunk of it), applied in the
    /// time of its own size. When it does not apply to this room's version,
    /// asks the master for the full data once.
    pub fn apply_reference_delta(&mut self, d: &ReferenceDelta) -> Option<WorkerMsg> {
        if !self.reference.apply(d) {
            if self.reference_resync {
                return None;
            }
            tracing::info!(room = %self.name, have = self.reference.version, base = ?d.base, "reference data out of step; asking for all of it");
            self.reference_resync = true;
            return Some(WorkerMsg::ReferenceWanted {
                have: self.reference.version,
            });
        }
        if d.filters.is_some() {
            self.filters = Filters::new(self.reference.filters());
        }
        // The first chunk of the full data starts over: every member may be
        // banned now. A change touches only the users it lists.
        let check: Vec<String> = if d.base.is_none() {
            self.reference_resync = false;
            self.users.keys().cloned().collect()
        } else {
            d.bans
                .iter()
                .filter(|(id, _)| self.users.contains_key(id))
                .map(|(id, _)| id.clone())
                .collect()
        };
        self.settle_bans();
        self.remove_banned(check);
        None
    }

    /// Disconnects those of `members` whom a ban now keeps out.
    fn remove_banned(&mut self, members: Vec<String>) {
        let banned: Vec<(String, String)> = members
            .into_iter()
            .filter_map(|id| self.ban_reason(&id).map(|r| (id, r)))
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
    }

    pub fn stats(&self) -> RoomStats {
        RoomStats {
            members: u32::try_from(self.users.len()).unwrap_or(u32::MAX),
            connections: u32::try_from(self.users.values().map(|u| u.conns.len()).sum::<usize>())
                .unwrap_or(u32::MAX),
            messages_in: self.messages_in,
            messages_out: self.messages_out,
            epoch: self.epoch,
            seq: self.seq,
            pending_writes: u32::try_from(self.outbox.len()).unwrap_or(u32::MAX),
            fanout: self.fanout,
        }
    }

    /// Messages waiting for the store.
    pub fn pending_writes(&self) -> usize {
        self.outbox.len()
    }

    /// Every connection (for pings).
    /// Whether no connection is in the room.
    pub fn is_empty(&self) -> bool {
        self.users.len() == 0
    }

    pub fn all_conns(&self) -> Vec<Arc<Conn>> {
        self.users
            .values()
            .flat_map(|u| u.conns.iter().cloned())
            .collect()
    }
}
