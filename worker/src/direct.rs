//! Users across rooms, the room's side: `dm`, `block`/`unblock`,
//! `dm_history` and `read` frames are checked here (the room's limits apply)
//! and handed to the master, which stores, answers the asking connection and
//! delivers to the users' live connections in every room. The requests
//! waiting for the master are bounded in number and in time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_shared::direct::{
    DirectEvent, DirectReply, DirectRequest, DmSummary, MAX_DM_HISTORY, MAX_USER_ID, MAX_WATCH,
    Presence,
};
use chat_shared::ipc::WorkerMsg;
use chat_shared::protocol::{Role, ServerMsg, code};
use tokio::sync::oneshot;

use crate::outbound::Outbound;
use crate::room::{Conn, Room, encode};
use crate::state::Worker;

/// Requests of a room waiting for the master at once.
pub const MAX_PENDING: usize = 1024;
/// Time a request waits for the master before its client is told
/// `unavailable` (a `dm` may still be stored: `dm_history` tells).
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Time a join waits for the user's read state before `welcome` goes
/// without it.
pub const STATE_TIMEOUT: Duration = Duration::from_secs(1);
/// Users per `WorkerMsg::Users` frame.
const USERS_CHUNK: usize = 1000;

/// Who waits for a reply.
#[derive(Debug)]
enum Waiter {
    /// A connection's request (`client_id` of a `dm`).
    Conn {
        out: Arc<Outbound>,
        client_id: Option<String>,
    },
    /// A join waiting for the user's read state.
    Join(oneshot::Sender<DirectReply>),
}

#[derive(Debug)]
struct Pending {
    waiter: Waiter,
    deadline: Instant,
}

/// Requests waiting for the master's reply.
#[derive(Debug, Default)]
pub struct Waiting {
    next: u64,
    pending: HashMap<u64, Pending>,
    /// Connections watching presence: their queue and the users watched
    /// (sent again after a relink).
    watching: HashMap<u64, (Arc<Outbound>, Vec<String>)>,
    /// Wakes the room's expiry clock (see `timers::expire_queries`).
    wake: Arc<tokio::sync::Notify>,
}

impl Waiting {
    /// Nothing waiting; `wake` is told of each new request.
    pub fn new(wake: Arc<tokio::sync::Notify>) -> Self {
        Self {
            wake,
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn register(&mut self, waiter: Waiter) -> Option<u64> {
        if self.pending.len() >= MAX_PENDING {
            return None;
        }
        self.next += 1;
        self.pending.insert(
            self.next,
            Pending {
                waiter,
                deadline: Instant::now() + TIMEOUT,
            },
        );
        self.wake.notify_one();
        Some(self.next)
    }

    fn drain(&mut self, only_expired: bool) -> Vec<Pending> {
        let now = Instant::now();
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| !only_expired || p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .filter_map(|id| self.pending.remove(id))
            .collect()
    }
}

/// The read state a token user's `welcome` carries.
#[derive(Debug, Clone)]
pub struct WelcomeState {
    pub last_read: u64,
    pub dms: DmSummary,
}

/// Whether `id` can be a token user's id (what a `dm`, `block` or
/// `dm_history` may name); the reason otherwise.
pub fn check_user_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the user id is empty".into());
    }
    if id.len() > MAX_USER_ID {
        return Err(format!("the user id is longer than {MAX_USER_ID} bytes"));
    }
    if id.starts_with(crate::identity::GUEST_PREFIX) {
        return Err("guests have no direct messages".into());
    }
    if id.chars().any(crate::identity::is_hostile_char) {
        return Err("the user id holds control or invisible characters".into());
    }
    Ok(())
}

/// Asks the master for a token user's read state before they join; `None`
/// when unlinked or not answered in time (the `welcome` then goes without).
pub async fn fetch_state(worker: &Worker, user: &str) -> Option<WelcomeState> {
    let rx = {
        let mut room = worker.room();
        if !room.linked {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let id = room.direct.register(Waiter::Join(tx))?;
        room.tell_master(WorkerMsg::Direct {
            id,
            user: user.to_owned(),
            conn: 0,
            request: DirectRequest::State,
        });
        rx
    };
    match tokio::time::timeout(STATE_TIMEOUT, rx).await {
        Ok(Ok(DirectReply::State { last_read, dms })) => Some(WelcomeState { last_read, dms }),
        _ => None,
    }
}

impl Room {
    /// The sender if it may use direct messages (a token user), else an
    /// error `forbidden` was sent.
    fn direct_user(&mut self, conn: &Conn) -> Option<(String, String)> {
        match self.users.get(&conn.user_id) {
            Some(u) if u.role != Role::Guest => Some((u.id.clone(), u.name.clone())),
            Some(_) => {
                self.error(
                    conn,
                    code::FORBIDDEN,
                    "guests cannot use direct messages; join with a token",
                    None,
                );
                None
            }
            None => None,
        }
    }

    /// Checks a user id a frame names; `bad_request` otherwise.
    fn named_user(&mut self, conn: &Conn, field: &str, id: &str) -> bool {
        match check_user_id(id) {
            Ok(()) => true,
            Err(why) => {
                self.error(conn, code::BAD_REQUEST, format!("bad {field}: {why}"), None);
                false
            }
        }
    }

    /// Sends a request to the master for `conn`; `unavailable` when the
    /// master is unreachable or too many requests wait.
    fn ask_direct(
        &mut self,
        conn: &Conn,
        user: String,
        client_id: Option<String>,
        request: DirectRequest,
    ) {
        let refused = if !self.linked {
            "the master is unreachable"
        } else if let Some(id) = self.direct.register(Waiter::Conn {
            out: conn.out.clone(),
            client_id: client_id.clone(),
        }) {
            return self.tell_master(WorkerMsg::Direct {
                id,
                user,
                conn: conn.id,
                request,
            });
        } else {
            "too many requests are waiting"
        };
        self.unavailable(&conn.out, client_id, refused);
    }

    fn unavailable(&mut self, out: &Outbound, client_id: Option<String>, why: &str) {
        let bytes = encode(&ServerMsg::Error {
            code: code::UNAVAILABLE.into(),
            message: format!("not done: {why}; retry later"),
            retry_after_ms: Some(1000),
            client_id,
            seq: None,
        });
        if out.send(&bytes) {
            self.messages_out += 1;
        }
    }

    /// `dm`: checked like a `say` (length, flood, mute, filters), then
    /// handed to the master; the ack comes once it is stored.
    pub fn dm(&mut self, conn: &Conn, to: String, text: String, client_id: Option<String>) {
        let Some((me, name)) = self.direct_user(conn) else {
            return;
        };
        if !self.short_text(conn, "client_id", client_id.as_deref())
            || !self.named_user(conn, "to", &to)
        {
            return;
        }
        if to == me {
            return self.error(
                conn,
                code::BAD_REQUEST,
                "a direct message needs another user",
                None,
            );
        }
        if !self.check_text(conn, &text) || !self.user_allows(conn) {
            return;
        }
        if self.muted_for(&conn.user_id).is_some() {
            return self.error(conn, code::MUTED, "you are muted", None);
        }
        let Some(text) = self.filter(conn, text) else {
            return;
        };
        self.ask_direct(conn, me, client_id, DirectRequest::Send { to, name, text });
    }

    /// `block` / `unblock`.
    pub fn block(&mut self, conn: &Conn, user: String, block: bool) {
        let Some((me, _)) = self.direct_user(conn) else {
            return;
        };
        if !self.named_user(conn, "user", &user) {
            return;
        }
        self.ask_direct(conn, me, None, DirectRequest::Block { user, block });
    }

    /// `dm_history`.
    pub fn dm_history(
        &mut self,
        conn: &Conn,
        with: String,
        before: Option<u64>,
        limit: Option<u32>,
    ) {
        let Some((me, _)) = self.direct_user(conn) else {
            return;
        };
        if !self.named_user(conn, "with", &with) {
            return;
        }
        let limit = limit.unwrap_or(50);
        if limit == 0 || limit > MAX_DM_HISTORY {
            let msg = format!("limit must be between 1 and {MAX_DM_HISTORY}");
            return self.error(conn, code::BAD_REQUEST, msg, None);
        }
        let before = before.unwrap_or(u64::MAX);
        self.ask_direct(
            conn,
            me,
            None,
            DirectRequest::History {
                with,
                before,
                limit,
            },
        );
    }

    /// `read`: of a conversation (`with`) or of this room.
    pub fn read(&mut self, conn: &Conn, with: Option<String>, seq: u64) {
        let Some((me, _)) = self.direct_user(conn) else {
            return;
        };
        let request = match with {
            Some(with) => {
                if !self.named_user(conn, "with", &with) {
                    return;
                }
                DirectRequest::Read { with, seq }
            }
            None => {
                if seq > self.seq {
                    let msg = format!("seq {seq} is past the room's last message ({})", self.seq);
                    return self.error(conn, code::BAD_REQUEST, msg, None);
                }
                DirectRequest::RoomRead { seq }
            }
        };
        self.ask_direct(conn, me, None, request);
    }

    /// The master's reply to one request.
    pub fn direct_reply(&mut self, id: u64, reply: DirectReply) {
        let Some(p) = self.direct.pending.remove(&id) else {
            return;
        };
        let (out, client_id) = match p.waiter {
            Waiter::Join(tx) => {
                let _ = tx.send(reply);
                return;
            }
            Waiter::Conn { out, client_id } => (out, client_id),
        };
        let frame = match reply {
            DirectReply::Stored { conversation, seq } => ServerMsg::Ack {
                client_id,
                seq,
                conversation: Some(conversation),
            },
            DirectReply::History {
                with,
                messages,
                more,
            } => ServerMsg::DmHistory {
                with,
                messages: messages.into_iter().map(Into::into).collect(),
                more,
            },
            DirectReply::Blocked { user, blocked } => ServerMsg::Blocked { user, blocked },
            // A conversation's reader gets the receipt with everyone else.
            DirectReply::Read {
                conversation: Some(_),
                ..
            } => return,
            DirectReply::Read {
                conversation: None,
                seq,
            } => ServerMsg::Read {
                by: None,
                conversation: None,
                room: Some(self.name.clone()),
                seq,
            },
            DirectReply::State { .. } => return,
            DirectReply::Error { code, message } => ServerMsg::Error {
                code,
                message,
                retry_after_ms: None,
                client_id,
                seq: None,
            },
        };
        let bytes = encode(&frame);
        if out.send(&bytes) {
            self.messages_out += 1;
        }
    }

    /// An event for every connection of `users` here, but `except`.
    pub fn deliver(&mut self, users: &[String], except: Option<u64>, event: DirectEvent) {
        let frame = match event {
            DirectEvent::Dm(m) => ServerMsg::Dm(m.into()),
            DirectEvent::Read {
                by,
                conversation,
                seq,
            } => ServerMsg::Read {
                by: Some(by),
                conversation: Some(conversation),
                room: None,
                seq,
            },
        };
        let bytes = encode(&frame);
        for u in users {
            self.send_user(u, &bytes, except);
        }
    }

    /// Answers the requests the master did not answer in time.
    pub fn expire_direct(&mut self) {
        for p in self.direct.drain(true) {
            if let Waiter::Conn { out, client_id } = p.waiter {
                self.unavailable(&out, client_id, "the master did not answer in time");
            }
        }
    }

    /// The master link is down: waiting requests get no reply.
    pub fn unlink_direct(&mut self) {
        for p in self.direct.drain(false) {
            if let Waiter::Conn { out, client_id } = p.waiter {
                self.unavailable(&out, client_id, "the master is unreachable");
            }
        }
    }

    /// `watch`: follow the presence of `users` (replacing the list).
    pub fn watch(&mut self, conn: &Conn, users: Vec<String>) {
        if users.len() > MAX_WATCH {
            let msg = format!("a connection watches at most {MAX_WATCH} users");
            return self.error(conn, code::TOO_LONG, msg, None);
        }
        for u in &users {
            if !self.named_user(conn, "users", u) {
                return;
            }
        }
        if !self.linked {
            return self.unavailable(&conn.out, None, "the master is unreachable");
        }
        let mut users = users;
        users.sort();
        users.dedup();
        if users.is_empty() {
            self.direct.watching.remove(&conn.id);
        } else {
            self.direct
                .watching
                .insert(conn.id, (conn.out.clone(), users.clone()));
        }
        self.tell_master(WorkerMsg::Watch {
            conn: conn.id,
            users,
        });
    }

    /// A connection closes: its watch ends.
    pub fn unwatch(&mut self, conn: u64) {
        if self.direct.watching.remove(&conn).is_some() {
            self.tell_master(WorkerMsg::Watch {
                conn,
                users: Vec::new(),
            });
        }
    }

    /// Presence states for watching connections.
    pub fn presence(&mut self, conns: &[u64], states: &[Presence]) {
        let frames: Vec<_> = states
            .iter()
            .map(|p| {
                encode(&ServerMsg::Presence {
                    user: p.user.clone(),
                    online: p.online,
                    last_seen: p.last_seen,
                })
            })
            .collect();
        let mut sent = 0;
        for c in conns {
            if let Some((out, _)) = self.direct.watching.get(c) {
                for f in &frames {
                    if out.send(f) {
                        sent += 1;
                    }
                }
            }
        }
        self.messages_out += sent;
    }

    /// Tells the master which token users are here (after a relink).
    pub fn report_users(&self) {
        let users: Vec<String> = self
            .users
            .values()
            .filter(|u| u.role != Role::Guest)
            .map(|u| u.id.clone())
            .collect();
        let mut chunks = users.chunks(USERS_CHUNK);
        let first = chunks.next().map(<[String]>::to_vec).unwrap_or_default();
        self.tell_master(WorkerMsg::Users {
            reset: true,
            users: first,
        });
        for c in chunks {
            self.tell_master(WorkerMsg::Users {
                reset: false,
                users: c.to_vec(),
            });
        }
        // A new master knows no watch: each is sent again.
        for (conn, (_, users)) in &self.direct.watching {
            self.tell_master(WorkerMsg::Watch {
                conn: *conn,
                users: users.clone(),
            });
        }
    }
}
