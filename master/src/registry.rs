//! The rooms this master serves: one entry per room name, its port, worker
//! pid, state, link and last stats. Creating a room is idempotent: concurrent
//! creates of one name share one entry and one worker.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chat_shared::ipc::{MasterMsg, RoomConfig, RoomStats, ServerConfig, Snapshot};

/// A fresh random epoch that fits a JSON number exactly.
pub fn new_epoch() -> u64 {
    (rand::random::<u64>() >> 11).max(1)
}
use chat_shared::settings::RoomSettings;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::config::Config;

/// Lifecycle of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomState {
    Starting,
    Ready,
    Closing,
    Closed,
    Failed(String),
}

impl RoomState {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Closing => "closing",
            Self::Closed => "closed",
            Self::Failed(_) => "failed",
        }
    }
}

/// One room.
pub struct RoomEntry {
    pub name: String,
    pub settings: RoomSettings,
    pub created_unix_ms: u64,
    pub started: Instant,
    pub port: AtomicU16,
    pub pid: AtomicU32,
    pub state: watch::Sender<RoomState>,
    /// Whether the worker reported that it could not bind its port.
    pub bind_failed: AtomicBool,
    /// Whether the worker ever reported it listens (a worker that dies
    /// before that is a failed start, not a crash to restart).
    pub ever_ready: AtomicBool,
    /// Restarts after crashes.
    pub restarts: AtomicU32,
    /// An operator asked for a restart: the next exit respawns the worker.
    pub restart_requested: AtomicBool,
    /// Respawned from the catalog: its last worker died with its master.
    pub from_catalog: AtomicBool,
    /// Where the worker's history starts: (epoch, seq), set before a spawn.
    pub history: Mutex<Option<(u64, u64)>>,
    /// Highest seq this master received from the room.
    pub received_seq: AtomicU64,
    /// The latest stored messages, handed to the next worker at its hello.
    pub recent: Mutex<Vec<chat_shared::ipc::StoredMessage>>,
    link: Mutex<Option<(u64, mpsc::UnboundedSender<MasterMsg>)>>,
    stats: Mutex<RoomStats>,
}

/// A room as the APIs show it.
#[derive(Debug, Serialize)]
pub struct RoomInfo {
    pub name: String,
    pub port: u16,
    pub pid: u32,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub restarts: u32,
    pub members: u32,
    pub connections: u32,
    pub messages_in: u64,
    pub messages_out: u64,
    pub epoch: u64,
    pub seq: u64,
    pub uptime_secs: u64,
    /// Resident memory of the worker process, bytes.
    pub rss_bytes: u64,
    pub created: String,
    pub settings: RoomSettings,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RoomEntry {
    pub fn new(name: String, settings: RoomSettings, port: u16, created_unix_ms: u64) -> Self {
        Self {
            name,
            settings,
            created_unix_ms,
            started: Instant::now(),
            port: AtomicU16::new(port),
            pid: AtomicU32::new(0),
            state: watch::channel(RoomState::Starting).0,
            bind_failed: AtomicBool::new(false),
            ever_ready: AtomicBool::new(false),
            restarts: AtomicU32::new(0),
            restart_requested: AtomicBool::new(false),
            from_catalog: AtomicBool::new(false),
            history: Mutex::new(None),
            received_seq: AtomicU64::new(0),
            recent: Mutex::new(Vec::new()),
            link: Mutex::new(None),
            stats: Mutex::new(RoomStats::default()),
        }
    }

    /// Whether the room occupies its port (every state but failed).
    pub fn holds_port(&self) -> bool {
        !matches!(self.state(), RoomState::Failed(_))
    }

    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Acquire)
    }

    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Acquire)
    }

    pub fn state(&self) -> RoomState {
        self.state.borrow().clone()
    }

    pub fn set_state(&self, s: RoomState) {
        self.state.send_replace(s);
    }

    /// Attaches an IPC session (identified by `id`) to the room.
    pub fn attach(&self, id: u64, tx: mpsc::UnboundedSender<MasterMsg>) {
        *lock(&self.link) = Some((id, tx));
    }

    /// Detaches the IPC session `id`, unless a newer one replaced it.
    pub fn detach(&self, id: u64) {
        let mut l = lock(&self.link);
        if l.as_ref().is_some_and(|(i, _)| *i == id) {
            *l = None;
        }
    }

    pub fn set_recent(&self, recent: Vec<chat_shared::ipc::StoredMessage>) {
        *lock(&self.recent) = recent;
    }

    pub fn take_recent(&self) -> Vec<chat_shared::ipc::StoredMessage> {
        std::mem::take(&mut *lock(&self.recent))
    }

    /// What an adopted room said of its history (kept as its last stats).
    pub fn stats_seq_hint(&self, epoch: u64, seq: u64) {
        let mut s = lock(&self.stats);
        s.epoch = epoch;
        s.seq = s.seq.max(seq);
    }

    pub fn set_history(&self, epoch: u64, seq: u64) {
        *lock(&self.history) = Some((epoch, seq));
        self.received_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// Sends a message to the worker; false when it has no link.
    pub fn send(&self, msg: MasterMsg) -> bool {
        lock(&self.link)
            .as_ref()
            .is_some_and(|(_, tx)| tx.send(msg).is_ok())
    }

    pub fn set_stats(&self, s: RoomStats) {
        *lock(&self.stats) = s;
    }

    pub fn stats(&self) -> RoomStats {
        *lock(&self.stats)
    }

    pub fn info(&self) -> RoomInfo {
        let s = self.stats();
        RoomInfo {
            name: self.name.clone(),
            port: self.port(),
            pid: self.pid(),
            status: self.state().label(),
            error: match self.state() {
                RoomState::Failed(e) => Some(e),
                _ => None,
            },
            restarts: self.restarts.load(Ordering::Acquire),
            members: s.members,
            connections: s.connections,
            messages_in: s.messages_in,
            messages_out: s.messages_out,
            epoch: s.epoch,
            seq: s.seq,
            uptime_secs: self.started.elapsed().as_secs(),
            rss_bytes: if self.holds_port() {
                crate::metrics::pid_usage(self.pid()).1
            } else {
                0
            },
            created: chrono::DateTime::from_timestamp_millis(
                i64::try_from(self.created_unix_ms).unwrap_or(0),
            )
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
            settings: self.settings.clone(),
        }
    }

    /// Waits until the room leaves `Starting`, up to `timeout`.
    pub async fn wait_started(&self, timeout: Duration) -> RoomState {
        let mut rx = self.state.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|s| *s != RoomState::Starting)).await;
        self.state()
    }
}

/// Why a room could not be created.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// At capacity or draining.
    NoCapacity,
}

/// All rooms, and whether new ones are accepted.
pub struct Registry {
    rooms: Mutex<HashMap<String, Arc<RoomEntry>>>,
    /// Ports that failed to bind recently, skipped when picking.
    bad_ports: Mutex<HashSet<u16>>,
    first_port: u16,
    last_port: u16,
    capacity: usize,
    accepting: AtomicBool,
    snapshot_version: AtomicU64,
    server: Mutex<ServerConfig>,
}

impl Registry {
    pub fn new(cfg: &Config) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            bad_ports: Mutex::new(HashSet::new()),
            first_port: cfg.room_ports.0,
            last_port: cfg.room_ports.1,
            capacity: cfg.capacity(),
            accepting: AtomicBool::new(true),
            snapshot_version: AtomicU64::new(1),
            server: Mutex::new(ServerConfig {
                jwt_secret: cfg.jwt_secret.clone(),
                ping_interval_ms: millis(cfg.ping_interval),
                max_frame_bytes: cfg.max_frame_bytes,
                outbound_queue_bytes: cfg.outbound_queue_bytes,
                ipc_heartbeat_ms: millis(cfg.ipc_heartbeat),
                refuse_joins: false,
                limits: cfg.limits(),
            }),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// Starts or ends a drain; true when rooms must get a new snapshot.
    pub fn set_accepting(&self, yes: bool, refuse_joins: bool) -> bool {
        self.accepting.store(yes, Ordering::Release);
        let changed = {
            let mut server = lock(&self.server);
            let changed = server.refuse_joins != refuse_joins;
            server.refuse_joins = refuse_joins;
            changed
        };
        if changed {
            self.snapshot_version.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    pub fn get(&self, name: &str) -> Option<Arc<RoomEntry>> {
        lock(&self.rooms).get(name).cloned()
    }

    /// Every room, sorted by name.
    pub fn all(&self) -> Vec<Arc<RoomEntry>> {
        let mut v: Vec<_> = lock(&self.rooms).values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Rooms that hold a port (failed rooms excluded).
    pub fn len(&self) -> usize {
        lock(&self.rooms)
            .values()
            .filter(|e| e.holds_port())
            .count()
    }

    /// Finds the room or reserves a new entry for it: `(entry, fresh)`.
    pub fn reserve(
        &self,
        name: &str,
        settings: RoomSettings,
    ) -> Result<(Arc<RoomEntry>, bool), Refused> {
        let mut rooms = lock(&self.rooms);
        if let Some(e) = rooms.get(name)
            && !matches!(e.state(), RoomState::Failed(_))
        {
            return Ok((e.clone(), false));
        }
        let live = rooms.values().filter(|e| e.holds_port()).count();
        if !self.accepting() || live >= self.capacity {
            return Err(Refused::NoCapacity);
        }
        let port = self.free_port(&rooms).ok_or(Refused::NoCapacity)?;
        let entry = Arc::new(RoomEntry::new(name.to_owned(), settings, port, now_ms()));
        rooms.insert(name.to_owned(), entry.clone());
        prune_failed(&mut rooms);
        Ok((entry, true))
    }

    /// Reserves a room from the catalog, on its old port when free.
    pub fn reserve_at(
        &self,
        name: &str,
        settings: RoomSettings,
        port: u16,
        created_ms: u64,
    ) -> Option<Arc<RoomEntry>> {
        let mut rooms = lock(&self.rooms);
        if rooms.contains_key(name) {
            return None;
        }
        let live = rooms.values().filter(|e| e.holds_port()).count();
        if live >= self.capacity {
            return None;
        }
        let taken = rooms.values().any(|e| e.holds_port() && e.port() == port);
        let port = if (self.first_port..=self.last_port).contains(&port) && !taken {
            port
        } else {
            self.free_port(&rooms)?
        };
        let created = if created_ms > 0 { created_ms } else { now_ms() };
        let entry = Arc::new(RoomEntry::new(name.to_owned(), settings, port, created));
        entry.from_catalog.store(true, Ordering::Release);
        rooms.insert(name.to_owned(), entry.clone());
        Some(entry)
    }

    /// Adopts a running worker that announced itself (its master restarted).
    pub fn adopt(&self, hello: &chat_shared::ipc::Hello) -> Option<Arc<RoomEntry>> {
        let (name, port, pid) = (hello.name.as_str(), hello.port, hello.pid);
        let (settings, created) = match &hello.room {
            Some(r) => (r.settings.clone(), r.created_unix_ms),
            None => (RoomSettings::default(), now_ms()),
        };
        let mut rooms = lock(&self.rooms);
        if rooms.contains_key(name) || !(self.first_port..=self.last_port).contains(&port) {
            return None;
        }
        if rooms.values().any(|e| e.holds_port() && e.port() == port) {
            return None;
        }
        let entry = Arc::new(RoomEntry::new(name.to_owned(), settings, port, created));
        entry.pid.store(pid, Ordering::Release);
        entry.ever_ready.store(true, Ordering::Release);
        entry.set_state(RoomState::Ready);
        rooms.insert(name.to_owned(), entry.clone());
        Some(entry)
    }

    /// Moves a starting room to another port after a bind failure.
    pub fn repick_port(&self, entry: &RoomEntry) -> Option<u16> {
        let rooms = lock(&self.rooms);
        lock(&self.bad_ports).insert(entry.port());
        let port = self.free_port(&rooms)?;
        entry.port.store(port, Ordering::Release);
        Some(port)
    }

    fn free_port(&self, rooms: &HashMap<String, Arc<RoomEntry>>) -> Option<u16> {
        let used: HashSet<u16> = rooms
            .values()
            .filter(|e| e.holds_port())
            .map(|e| e.port())
            .collect();
        let bad = lock(&self.bad_ports);
        let pick =
            (self.first_port..=self.last_port).find(|p| !used.contains(p) && !bad.contains(p));
        match pick {
            Some(p) => Some(p),
            // Every free port failed once: try them again.
            None => {
                drop(bad);
                lock(&self.bad_ports).clear();
                (self.first_port..=self.last_port).find(|p| !used.contains(p))
            }
        }
    }

    /// A failed room stays listed, but its port is free again.
    pub fn release(&self, entry: &Arc<RoomEntry>) {
        let _rooms = lock(&self.rooms);
        entry.port.store(0, Ordering::Release);
    }

    /// Removes a room, if the entry is still the one registered.
    pub fn remove(&self, entry: &Arc<RoomEntry>) {
        let mut rooms = lock(&self.rooms);
        if rooms
            .get(&entry.name)
            .is_some_and(|e| Arc::ptr_eq(e, entry))
        {
            rooms.remove(&entry.name);
        }
    }

    /// The snapshot a room's worker pulls.
    pub fn snapshot(&self, entry: &RoomEntry, reference: chat_shared::ipc::Reference) -> Snapshot {
        Snapshot {
            version: self.snapshot_version.load(Ordering::Acquire),
            history: *lock(&entry.history),
            reference,
            recent: Vec::new(),
            server: lock(&self.server).clone(),
            room: RoomConfig {
                name: entry.name.clone(),
                port: entry.port(),
                settings: entry.settings.clone(),
                created_unix_ms: entry.created_unix_ms,
            },
        }
    }

    pub fn ipc_heartbeat(&self) -> Duration {
        Duration::from_millis(lock(&self.server).ipc_heartbeat_ms)
    }
}

/// Failed rooms kept listed at most; past it the oldest are forgotten.
const MAX_FAILED: usize = 64;

fn prune_failed(rooms: &mut HashMap<String, Arc<RoomEntry>>) {
    let mut failed: Vec<(u64, String)> = rooms
        .values()
        .filter(|e| matches!(e.state(), RoomState::Failed(_)))
        .map(|e| (e.created_unix_ms, e.name.clone()))
        .collect();
    if failed.len() <= MAX_FAILED {
        return;
    }
    failed.sort();
    for (_, name) in &failed[..failed.len() - MAX_FAILED] {
        rooms.remove(name);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}
