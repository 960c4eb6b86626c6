//! Messages between the master and its room workers.
//!
//! A worker connects to the master's local socket, sends [`Hello`] as its first
//! frame and gets a [`HelloReply`]; after that the two sides exchange
//! [`WorkerMsg`] and [`MasterMsg`] frames (see [`crate::framing`]).
//! postcard is not self-describing, so `Hello` starts with a magic and a
//! version that are decoded on their own before anything else.

use serde::{Deserialize, Serialize};

use crate::settings::RoomSettings;

/// Most messages a room holds unconfirmed (not yet stored): past it `say`
/// is refused. A room that died can have numbered at most this many
/// messages beyond what is stored.
pub const MAX_UNCONFIRMED: usize = 100_000;

/// Bumped whenever any type in this module changes shape.
pub const IPC_VERSION: u32 = 3;

/// A room worker's exit code when its port could not be bound (EX_TEMPFAIL):
/// the master picks another port.
pub const EXIT_PORT_TAKEN: i32 = 75;
/// First bytes of every `Hello`.
pub const MAGIC: [u8; 8] = *b"CHATIPC\0";

/// The IPC version this process speaks: [`IPC_VERSION`]. A debug build reads
/// `CHAT_FAKE_IPC_VERSION` instead when it is set, so that tests can make a
/// peer of another version; a release build ignores it.
pub fn ipc_version() -> u32 {
    #[cfg(debug_assertions)]
    if let Some(v) = std::env::var("CHAT_FAKE_IPC_VERSION")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return v;
    }
    IPC_VERSION
}

/// First frame a worker sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 8],
    pub version: u32,
    /// The room's name.
    pub name: String,
    pub pid: u32,
    /// The port the worker was told to serve.
    pub port: u16,
    /// Set once the worker already serves clients (a reconnect after the
    /// master went away): the master adopts it instead of waiting for it.
    pub listening: bool,
    /// The room's history epoch and last sequence number (0 when new).
    pub epoch: u64,
    pub seq: u64,
    /// What the room runs with, when `listening` (so a new master adopts it
    /// with its real settings and creation time).
    pub room: Option<RoomConfig>,
}

impl Hello {
    pub fn new(name: String, pid: u32, port: u16) -> Self {
        Self {
            magic: MAGIC,
            version: ipc_version(),
            name,
            pid,
            port,
            listening: false,
            epoch: 0,
            seq: 0,
            room: None,
        }
    }
}

/// The master's answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    Accepted(Box<Snapshot>),
    Refused { reason: String },
}

/// Everything a worker needs from the master's cache to serve its room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Increases with every change the master pushes.
    pub version: u64,
    pub server: ServerConfig,
    pub room: RoomConfig,
    /// Where the room's history continues: (epoch, last stored seq).
    pub history: Option<(u64, u64)>,
    /// The master's cache of reference data.
    pub reference: Reference,
    /// The room's latest stored messages, oldest first (at start only), so a
    /// restarted room can serve resumes and history from memory.
    pub recent: Vec<StoredMessage>,
    /// In a `HelloReply`: how many frames follow it before anything else,
    /// each a [`MasterMsg::ReferenceDelta`] (the full reference data, from
    /// empty) or a [`MasterMsg::Recent`] chunk. A snapshot stays small: the
    /// large parts travel in chunks that each fit a frame.
    pub follow: u32,
}

/// Reference data the master caches from the store and hands to rooms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// Increases with every change.
    pub version: u64,
    /// Profiles written by the platform: (user id, name). A name here wins
    /// over the name in a token.
    pub users: Vec<(String, String)>,
    pub bans: Vec<Ban>,
    pub filters: Vec<Filter>,
}

/// A change of the reference data, or one chunk of it: apply in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceDelta {
    /// The version it applies to; `None`: start over from empty data (the
    /// first chunk of the full reference data).
    pub base: Option<u64>,
    /// The version once applied (every chunk of one change has the same;
    /// chunks after the first have it as their `base`).
    pub version: u64,
    /// Profiles set (`Some(name)`) or removed (`None`).
    pub users: Vec<(String, Option<String>)>,
    /// Every ban of each listed user (empty: none left).
    pub bans: Vec<(String, Vec<Ban>)>,
    /// The word filters, when they changed.
    pub filters: Option<Vec<Filter>>,
}

/// A ban: `room` `None` means every room, `until_ms` `None` means forever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub user_id: String,
    pub room: Option<String>,
    pub until_ms: Option<u64>,
    pub reason: Option<String>,
}

impl Ban {
    /// Whether it bans `user` from `room` at `now_ms`.
    pub fn applies(&self, user: &str, room: &str, now_ms: u64) -> bool {
        self.user_id == user
            && self.room.as_deref().is_none_or(|r| r == room)
            && self.until_ms.is_none_or(|u| now_ms < u)
    }
}

/// A word filter: `pattern` is a word (matched case-insensitively as a
/// whole word) or `/a regex/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub pattern: String,
    /// `true`: refuse the text; `false`: mask the match.
    pub reject: bool,
}

/// A chat message on its way to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub epoch: u64,
    pub seq: u64,
    pub user_id: String,
    pub name: String,
    pub text: String,
    pub ts: u64,
    pub deleted: bool,
}

impl StoredMessage {
    /// Bytes it takes in a postcard frame, at most: its strings, their
    /// length prefixes, three `u64` varints and a bool.
    pub fn max_encoded_size(&self) -> usize {
        self.user_id.len() + self.name.len() + self.text.len() + 3 * 5 + 3 * 10 + 1
    }
}

/// Server-wide configuration handed to every worker (may hold secrets: it
/// travels only over the local socket, never in argv).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerConfig {
    /// HS256 secret for join tokens; `None`: rooms are open to guests.
    pub jwt_secret: Option<String>,
    /// Interval of WebSocket pings to clients.
    pub ping_interval_ms: u64,
    /// Largest WebSocket message a client may send.
    pub max_frame_bytes: u32,
    /// Bytes queued for one connection before it is closed as a slow consumer.
    pub outbound_queue_bytes: u32,
    /// Longest interval between the master's IPC heartbeats (the master
    /// sends them more often while the room is busy): the worker takes the
    /// master for gone after four of them without a byte.
    pub ipc_heartbeat_ms: u64,
    /// The server drains with connections: new joins are refused.
    pub refuse_joins: bool,
    /// Limits against abuse (connection caps, timeouts, origins).
    pub limits: crate::limits::Limits,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("ping_interval_ms", &self.ping_interval_ms)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("outbound_queue_bytes", &self.outbound_queue_bytes)
            .field("ipc_heartbeat_ms", &self.ipc_heartbeat_ms)
            .field("refuse_joins", &self.refuse_joins)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The room a worker serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomConfig {
    pub name: String,
    pub port: u16,
    pub settings: RoomSettings,
    /// Creation time, Unix milliseconds: the time limit counts from here.
    pub created_unix_ms: u64,
}

/// Counters a worker reports about its room.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomStats {
    pub members: u32,
    pub connections: u32,
    pub messages_in: u64,
    pub messages_out: u64,
    pub epoch: u64,
    pub seq: u64,
    /// Messages waiting to be stored.
    pub pending_writes: u32,
    /// Fan-out time of chat messages (serialize once, queue for every
    /// recipient), cumulative since the worker started.
    pub fanout: Histogram,
}

/// Upper bounds of the fan-out histogram's buckets, in seconds.
pub const FANOUT_BUCKETS: [f64; 10] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5,
];

/// A cumulative histogram with the [`FANOUT_BUCKETS`] bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative across buckets).
    pub buckets: [u64; 10],
    /// Observations above the last bound.
    pub over: u64,
    pub count: u64,
    pub sum_ns: u64,
}

impl Histogram {
    pub fn observe(&mut self, secs: f64) {
        match FANOUT_BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.buckets[i] += 1,
            None => self.over += 1,
        }
        self.count += 1;
        self.sum_ns = self.sum_ns.saturating_add((secs * 1e9) as u64);
    }

    /// `self - earlier`, bucket by bucket (a restarted worker starts over:
    /// then the whole of `self`).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        if self.count < earlier.count {
            return *self;
        }
        let mut d = Histogram {
            over: self.over.saturating_sub(earlier.over),
            count: self.count - earlier.count,
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
            ..Default::default()
        };
        for i in 0..d.buckets.len() {
            d.buckets[i] = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        d
    }

    pub fn add(&mut self, other: &Histogram) {
        for i in 0..self.buckets.len() {
            self.buckets[i] += other.buckets[i];
        }
        self.over += other.over;
        self.count += other.count;
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }
}

/// Worker → master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// The room's port accepts WebSocket connections.
    Listening {
        port: u16,
    },
    /// The port could not be bound; the worker exits.
    BindFailed {
        port: u16,
        reason: String,
    },
    Pong {
        nonce: u64,
    },
    Stats(RoomStats),
    /// The room ends by itself (e.g. its time limit); the worker exits.
    Ended {
        reason: String,
    },
    /// Messages to store, in `seq` order (re-sent after a reconnect until
    /// the master confirms them).
    Messages(Vec<StoredMessage>),
    /// A message was deleted by a moderator.
    Deleted {
        seq: u64,
    },
    /// A page of history older than the worker keeps in memory.
    HistoryQuery {
        id: u64,
        before: u64,
        limit: u32,
    },
    /// The room's reference data is out of step (a delta did not apply to
    /// its version `have`): the master answers with the full data.
    ReferenceWanted {
        have: u64,
    },
    /// A user's first connection in the room opened (users across rooms).
    UserJoined {
        user: String,
    },
    /// A user's last connection in the room closed.
    UserLeft {
        user: String,
    },
    /// Users present in the room, after a (re)link: `reset` on the first
    /// chunk (the master forgets what it knew of the room), then more.
    Users {
        reset: bool,
        users: Vec<String>,
    },
    /// A request of one of the room's users (`conn`: their connection in
    /// the room); the master answers with `MasterMsg::DirectReply { id }`.
    Direct {
        id: u64,
        user: String,
        conn: u64,
        request: crate::direct::DirectRequest,
    },
    /// Connection `conn` watches the presence of `users` (replacing what it
    /// watched; empty: nothing, e.g. when it closed).
    Watch {
        conn: u64,
        users: Vec<String>,
    },
    /// A moderator banned `user` from this room (a `ban` frame): the master
    /// stores it in `bans`, scoped to the room, so it outlasts the worker
    /// and the master, like a ban made through the admin API. Sent again
    /// after a reconnect until the reference data carries it.
    Ban {
        user: String,
        reason: String,
    },
    /// A moderator lifted this room's ban of `user` (an `unban` frame).
    Unban {
        user: String,
    },
}

/// Master → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterMsg {
    Ping {
        nonce: u64,
    },
    /// A newer snapshot of the master's cache.
    Snapshot(Box<Snapshot>),
    /// An operator's notice to every member.
    Notice {
        text: String,
    },
    /// Disconnect every connection of one user.
    Kick {
        user: String,
        reason: String,
    },
    /// Close every client (1001) and exit.
    Shutdown {
        reason: String,
        /// The master restarts the room right away: clients get 1012
        /// (service restart) instead of 1001, and should reconnect.
        restart: bool,
    },
    /// Every message of the room up to `seq` is stored.
    Durable {
        seq: u64,
    },
    /// The answer to a `HistoryQuery` (`error` set when the store failed).
    HistoryPage {
        id: u64,
        messages: Vec<StoredMessage>,
        more: bool,
        error: Option<String>,
    },
    /// A newer copy of the reference data.
    Reference(Box<Reference>),
    /// These messages of the room will never be stored (`code`: the client
    /// protocol's `not_stored` or `conflict`): their senders get an `error`
    /// instead of an ack. Sent before the `Durable` that covers them.
    Failed {
        seqs: Vec<u64>,
        code: String,
    },
    /// A chunk of the room's latest stored messages, oldest first (after
    /// the hello reply, see [`Snapshot::follow`]).
    Recent(Vec<StoredMessage>),
    /// A change of the reference data (or a chunk of the full data).
    ReferenceDelta(Box<ReferenceDelta>),
    /// The answer to `WorkerMsg::Direct { id }`.
    DirectReply {
        id: u64,
        reply: crate::direct::DirectReply,
    },
    /// An event for every connection of `users` in the room, but the
    /// connection `except` (the sender's, which gets an ack instead).
    Deliver {
        users: Vec<String>,
        except: Option<u64>,
        event: crate::direct::DirectEvent,
    },
    /// Presence states for the watching connections `conns`.
    Presence {
        conns: Vec<u64>,
        states: Vec<crate::direct::Presence>,
    },
}
