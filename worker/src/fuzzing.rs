//! Entry points for the fuzz targets in `fuzz/` and the property tests:
//! thin handles on the room's parsers and checks, so that they run the
//! room's own code on hostile input. Not an API: nothing else uses it.

use std::sync::Arc;

use axum::extract::Query;
use axum::http::Uri;
use chat_shared::ipc::StoredMessage;
use chat_shared::protocol::{Role, ServerMsg};
use chat_shared::settings::RoomSettings;

pub use crate::commands::{FrameRefused, parse_client_frame};
pub use crate::identity::{GUEST_PREFIX, Identity, Refusal, is_hostile_char};
use crate::identity::{Policy, identify};
use crate::outbound::{Frame, Inbox, Outbound};
pub use crate::room::Resume;
use crate::room::{Conn, Room};
use crate::server::JoinQuery;

/// The room's outbound queue limit by default (`--outbound-queue-bytes`).
const QUEUE_BYTES: usize = 1024 * 1024;

/// Checks a join token as a room named `room` with token secret `secret`
/// does (guests refused).
pub fn verify_token(secret: &str, room: &str, token: &str) -> Result<Identity, Refusal> {
    let policy = Policy {
        room,
        secret: Some(secret),
        guests: false,
    };
    identify(&policy, Some(token), None)
}

/// A join's query string as the room's port reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinParams {
    pub token: Option<String>,
    pub name: Option<String>,
    pub resume: Option<Resume>,
}

/// Parses a join's query string (what follows `?`) with the extractor the
/// room's port uses; `Err` is the `bad query` refusal's text.
pub fn join_query(query: &str) -> Result<JoinParams, String> {
    let uri: Uri = format!("/?{query}")
        .parse()
        .map_err(|e| format!("bad uri: {e}"))?;
    let Query(q) = Query::<JoinQuery>::try_from_uri(&uri).map_err(|e| e.body_text())?;
    let resume = q.resume();
    Ok(JoinParams {
        token: q.token,
        name: q.name,
        resume,
    })
}

/// One connection of a [`FuzzRoom`] and what it was sent.
struct Client {
    conn: Arc<Conn>,
    rx: Inbox,
}

/// A room with members of every role, fed client frames directly (no
/// socket, no runtime).
pub struct FuzzRoom {
    room: Room,
    clients: Vec<Client>,
}

/// The members a [`FuzzRoom`] starts with, in client order.
pub const FUZZ_MEMBERS: [(&str, Role); 4] = [
    ("owner-1", Role::Owner),
    ("mod-1", Role::Moderator),
    ("member-1", Role::Member),
    ("guest:0000000000000001", Role::Guest),
];

impl FuzzRoom {
    /// A room at `epoch`, `seq` holding `recent` (oldest first), with no
    /// one in it yet.
    pub fn empty(settings: RoomSettings, epoch: u64, seq: u64, recent: Vec<StoredMessage>) -> Self {
        let mut room = Room::new("fuzz".into(), settings, epoch, seq);
        room.load_recent(recent);
        Self {
            room,
            clients: Vec::new(),
        }
    }

    /// A room with [`FUZZ_MEMBERS`] joined, one connection each.
    pub fn new(settings: RoomSettings) -> Self {
        let mut r = Self::empty(settings, 7, 0, Vec::new());
        for (id, role) in FUZZ_MEMBERS {
            let who = Identity {
                id: id.into(),
                name: id.into(),
                role,
            };
            // The room starts empty and the names differ: every join passes.
            let _ = r.join(who, None);
        }
        r.frames_all();
        r
    }

    /// Joins a connection; on success its index among the clients.
    pub fn join(&mut self, who: Identity, resume: Option<Resume>) -> Result<usize, Refusal> {
        let (out, rx) = Outbound::new(QUEUE_BYTES);
        let conn = self.room.join(who, out, resume, None)?;
        self.clients.push(Client { conn, rx });
        Ok(self.clients.len() - 1)
    }

    /// How many connections joined.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// The room's epoch and last sequence number.
    pub fn position(&self) -> (u64, u64) {
        (self.room.epoch, self.room.seq)
    }

    /// Hands one text frame of client `i` (modulo the count) to the room.
    pub fn text(&mut self, i: usize, text: &str) {
        if self.clients.is_empty() {
            return;
        }
        let c = &self.clients[i % self.clients.len()];
        self.room.handle_text(&c.conn, text);
    }

    /// The frames queued for client `i` since the last call, parsed.
    /// A frame the room queued that is not a valid server frame is an error
    /// (its text).
    pub fn frames(&mut self, i: usize) -> Result<Vec<ServerMsg>, String> {
        let Some(c) = self.clients.get_mut(i) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        while let Some(f) = c.rx.try_recv() {
            if let Frame::Text(t) = f {
                out.push(serde_json::from_str(t.as_str()).map_err(|_| t.as_str().to_owned())?);
            }
        }
        Ok(out)
    }

    /// Drains every client's queue; the count of frames.
    pub fn frames_all(&mut self) -> usize {
        let mut n = 0;
        for c in &mut self.clients {
            while c.rx.try_recv().is_some() {
                n += 1;
            }
        }
        n
    }

    /// The close client `i` was told to expect, if any.
    pub fn close_of(&self, i: usize) -> Option<(u16, String)> {
        self.clients.get(i).and_then(|c| c.conn.out.close_frame())
    }
}

/// The room name a worker reads from the command line the master gives it
/// (`--room=NAME`): `None` when that command line does not parse.
pub fn room_from_command_line(name: &str) -> Option<String> {
    use clap::Parser;
    let args = [
        "chatroom".to_owned(),
        format!("--room={name}"),
        "--port=1".to_owned(),
        "--master-socket=/nonexistent".to_owned(),
    ];
    crate::Args::try_parse_from(args).ok().map(|a| a.room)
}
