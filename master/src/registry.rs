//! The rooms this master serves: one entry per room name, its port, worker
//! pid, lifecycle, link and last stats. Creating a room is idempotent:
//! concurrent creates of one name share one entry and one worker; a create
//! that meets a room that is over gets a fresh entry.

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
use crate::lifecycle::{Life, Lifecycle};
use crate::rooms::Rooms;

/// How a room entry came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Created through the room API.
    Created,
    /// Respawned from the catalog: its last worker died with its master.
    Catalog,
    /// A running worker from before a master restart, adopted.
    Adopted,
}

/// One room.
pub struct RoomEntry {
    pub name: String,
    pub settings: RoomSettings,
    pub created_unix_ms: u64,
    /// When the room started on this host (an adopted room: when its
    /// worker process started), for its uptime.
    pub started: Instant,
    pub origin: Origin,
    /// Another host owned the name and its lease ended: the history goes
    /// on in a new epoch, as for a room respawned from the catalog.
    pub taken_over: AtomicBool,
    /// The port reserved for the room (0 once a failed room released it).
    pub port: AtomicU16,
    /// The current worker process (0 between workers).
    pub pid: AtomicU32,
    /// Where the room is in its life (transitions in `lifecycle.rs`).
    pub life: Life,
    /// Restarts after crashes.
    pub restarts: AtomicU32,
    /// Where the worker's history starts: (epoch, seq), set before a spawn.
    pub history: Mutex<Option<(u64, u64)>>,
    /// Highest seq this master received from the room.
    pub received_seq: AtomicU64,
    /// The latest stored messages, handed to the next worker at its hello.
    pub recent: Mutex<Vec<chat_shared::ipc::StoredMessage>>,
    link: Mutex<Option<(u64, mpsc::UnboundedSender<MasterMsg>)>>,
    stats: Mutex<RoomStats>,
    /// The IPC version its worker speaks when it is not ours (0: ours): the
    /// worker serves on, unlinked, until restarted on purpose.
    pub incompatible: AtomicU32,
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
    pub fn new(
        name: String,
        settings: RoomSettings,
        port: u16,
        created_unix_ms: u64,
        origin: Origin,
    ) -> Self {
        Self {
            name,
            settings,
            created_unix_ms,
            started: Instant::now(),
            origin,
            taken_over: AtomicBool::new(false),
            port: AtomicU16::new(port),
            pid: AtomicU32::new(0),
            life: Life::new(Lifecycle::Starting),
            restarts: AtomicU32::new(0),
            history: Mutex::new(None),
            received_seq: AtomicU64::new(0),
            recent: Mutex::new(Vec::new()),
            link: Mutex::new(None),
            stats: Mutex::new(RoomStats::default()),
            incompatible: AtomicU32::new(0),
        }
    }

    /// Whether the room occupies its port (until it is over).
    pub fn holds_port(&self) -> bool {
        !self.life.is_over()
    }

    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Acquire)
    }

    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Acquire)
    }

    pub fn state(&self) -> Lifecycle {
        self.life.get()
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
        let state = self.state();
        RoomInfo {
            name: self.name.clone(),
            port: self.port(),
            pid: self.pid(),
            status: if self.incompatible.load(Ordering::Acquire) != 0
                && matches!(state, Lifecycle::Running { .. })
            {
                "incompatible"
            } else {
                state.label()
            },
            error: match state {
                Lifecycle::Failed(e) => Some(e),
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
                chat_shared::procfs::rss_bytes(self.pid()).unwrap_or(0)
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
    /// The room each port was last given to, changed only under `rooms`'s
    /// lock (locked after it). A port is taken while that room holds it
    /// (`holds_port`, and its port is still this one), so a room that ends
    /// frees its port without a word to the registry. Picking a port is
    /// then one look-up per port instead of a scan of every room.
    ports: Mutex<HashMap<u16, Arc<RoomEntry>>>,
    /// Ports that failed to bind recently, skipped when picking.
    bad_ports: Mutex<HashSet<u16>>,
    first_port: u16,
    last_port: u16,
    capacity: usize,
    /// IPC heartbeat intervals: while a room is busy, and the longest.
    ipc_heartbeats: (Duration, Duration),
    /// Whether new rooms are accepted (false while draining); watched by
    /// the load-balancer tasks.
    accepting: watch::Sender<bool>,
    snapshot_version: AtomicU64,
    server: Mutex<ServerConfig>,
}

impl Registry {
    pub fn new(cfg: &Config) -> Self {
        Self {
            rooms: Mutex::new(HashMap::new()),
            ports: Mutex::new(HashMap::new()),
            bad_ports: Mutex::new(HashSet::new()),
            first_port: cfg.room_ports.0,
            last_port: cfg.room_ports.1,
            capacity: cfg.capacity(),
            ipc_heartbeats: (cfg.ipc_heartbeat, cfg.ipc_idle_heartbeat()),
            accepting: watch::Sender::new(true),
            snapshot_version: AtomicU64::new(1),
            server: Mutex::new(ServerConfig {
                jwt_secret: cfg.jwt_secret.clone(),
                ping_interval_ms: millis(cfg.ping_interval),
                max_frame_bytes: cfg.max_frame_bytes,
                outbound_queue_bytes: cfg.outbound_queue_bytes,
                // The worker's silence bound: four of the longest gaps
                // between the master's heartbeats.
                ipc_heartbeat_ms: millis(cfg.ipc_idle_heartbeat()),
                refuse_joins: false,
                limits: cfg.limits(),
            }),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn accepting(&self) -> bool {
        *self.accepting.borrow()
    }

    /// Follows the drain state: `true` while new rooms are accepted.
    pub fn watch_accepting(&self) -> watch::Receiver<bool> {
        self.accepting.subscribe()
    }

    /// Starts or ends a drain; true when rooms must get a new snapshot.
    pub fn set_accepting(&self, yes: bool, refuse_joins: bool) -> bool {
        self.accepting.send_replace(yes);
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

    /// Finds the room or reserves a new entry for it: `(entry, fresh)`. A
    /// room that is over (stopped or failed) is replaced by a fresh entry; a
    /// stopping one is returned as it is (the caller waits for its end).
    pub fn reserve(
        &self,
        name: &str,
        settings: RoomSettings,
    ) -> Result<(Arc<RoomEntry>, bool), Refused> {
        let mut rooms = lock(&self.rooms);
        if let Some(e) = rooms.get(name)
            && !e.state().is_final()
        {
            return Ok((e.clone(), false));
        }
        if !self.accepting() || !has_room(&rooms, self.capacity) {
            return Err(Refused::NoCapacity);
        }
        let mut ports = lock(&self.ports);
        let port = self.free_port(&ports).ok_or(Refused::NoCapacity)?;
        let entry = Arc::new(RoomEntry::new(
            name.to_owned(),
            settings,
            port,
            now_ms(),
            Origin::Created,
        ));
        ports.insert(port, entry.clone());
        rooms.insert(name.to_owned(), entry.clone());
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
        if !has_room(&rooms, self.capacity) {
            return None;
        }
        let mut ports = lock(&self.ports);
        let port = if (self.first_port..=self.last_port).contains(&port) && !taken(&ports, port) {
            port
        } else {
            self.free_port(&ports)?
        };
        let created = if created_ms > 0 { created_ms } else { now_ms() };
        let entry = Arc::new(RoomEntry::new(
            name.to_owned(),
            settings,
            port,
            created,
            Origin::Catalog,
        ));
        ports.insert(port, entry.clone());
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
        let mut ports = lock(&self.ports);
        if taken(&ports, port) {
            return None;
        }
        let mut entry = RoomEntry::new(name.to_owned(), settings, port, created, Origin::Adopted);
        entry.started = process_started(pid);
        let entry = Arc::new(entry);
        entry.pid.store(pid, Ordering::Release);
        entry.life.listening(pid, port);
        ports.insert(port, entry.clone());
        rooms.insert(name.to_owned(), entry.clone());
        Some(entry)
    }

    /// Lists a running worker that speaks another IPC version (after a
    /// master upgrade or downgrade), so that its room is never started a
    /// second time while it lives. Its settings and history are unknown: a
    /// restart on purpose starts it as a room respawned from the catalog.
    pub fn adopt_incompatible(
        &self,
        head: &chat_shared::framing::HelloHead,
    ) -> Option<Arc<RoomEntry>> {
        let mut rooms = lock(&self.rooms);
        let mut ports = lock(&self.ports);
        if rooms.contains_key(&head.name)
            || !(self.first_port..=self.last_port).contains(&head.port)
            || taken(&ports, head.port)
        {
            return None;
        }
        let mut entry = RoomEntry::new(
            head.name.clone(),
            RoomSettings::default(),
            head.port,
            now_ms(),
            // A restart on purpose starts it as a catalog respawn (new epoch).
            Origin::Catalog,
        );
        entry.started = process_started(head.pid);
        let entry = Arc::new(entry);
        entry.pid.store(head.pid, Ordering::Release);
        entry.life.listening(head.pid, head.port);
        ports.insert(head.port, entry.clone());
        rooms.insert(head.name.clone(), entry.clone());
        Some(entry)
    }

    /// Moves a starting room to another port after a bind failure.
    pub fn repick_port(&self, entry: &Arc<RoomEntry>) -> Option<u16> {
        let _rooms = lock(&self.rooms);
        let mut ports = lock(&self.ports);
        lock(&self.bad_ports).insert(entry.port());
        let port = self.free_port(&ports)?;
        unbook(&mut ports, entry);
        entry.port.store(port, Ordering::Release);
        ports.insert(port, entry.clone());
        Some(port)
    }

    /// The lowest free port that did not fail to bind lately.
    fn free_port(&self, ports: &HashMap<u16, Arc<RoomEntry>>) -> Option<u16> {
        let bad = lock(&self.bad_ports);
        let pick =
            (self.first_port..=self.last_port).find(|p| !bad.contains(p) && !taken(ports, *p));
        match pick {
            Some(p) => Some(p),
            // Every free port failed once: try them again.
            None => {
                drop(bad);
                lock(&self.bad_ports).clear();
                (self.first_port..=self.last_port).find(|p| !taken(ports, *p))
            }
        }
    }

    /// A failed room stays listed, but its port is free again. The oldest
    /// failed rooms past [`MAX_FAILED`] are forgotten.
    pub fn release(&self, entry: &Arc<RoomEntry>) {
        let mut rooms = lock(&self.rooms);
        let mut ports = lock(&self.ports);
        unbook(&mut ports, entry);
        entry.port.store(0, Ordering::Release);
        for gone in prune_failed(&mut rooms) {
            unbook(&mut ports, &gone);
        }
    }

    /// Removes a room, if the entry is still the one registered.
    pub fn remove(&self, entry: &Arc<RoomEntry>) {
        let mut rooms = lock(&self.rooms);
        if rooms
            .get(&entry.name)
            .is_some_and(|e| Arc::ptr_eq(e, entry))
        {
            rooms.remove(&entry.name);
            unbook(&mut lock(&self.ports), entry);
        }
    }

    /// The snapshot a room's worker pulls.
    pub fn snapshot(&self, entry: &RoomEntry, reference: chat_shared::ipc::Reference) -> Snapshot {
        Snapshot {
            version: self.snapshot_version.load(Ordering::Acquire),
            history: *lock(&entry.history),
            reference,
            recent: Vec::new(),
            follow: 0,
            server: lock(&self.server).clone(),
            room: RoomConfig {
                name: entry.name.clone(),
                port: entry.port(),
                settings: entry.settings.clone(),
                created_unix_ms: entry.created_unix_ms,
            },
        }
    }

    /// Heartbeat intervals to rooms: while busy, and the longest while idle.
    pub fn ipc_heartbeats(&self) -> (Duration, Duration) {
        self.ipc_heartbeats
    }

    /// Pushes the current snapshot (without reference data, which travels
    /// on its own in chunks) to every room.
    pub fn push_snapshots(&self) {
        for room in self.all() {
            let snapshot = self.snapshot(&room, chat_shared::ipc::Reference::default());
            room.send(MasterMsg::Snapshot(Box::new(snapshot)));
        }
    }
}

impl Rooms for Registry {
    fn send(&self, room: &str, msg: MasterMsg) -> bool {
        self.get(room).is_some_and(|entry| entry.send(msg))
    }

    fn broadcast(&self, msgs: &[MasterMsg]) {
        for room in self.all() {
            for m in msgs {
                room.send(m.clone());
            }
        }
    }
}

impl crate::lb::HostLoad for Registry {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn rooms(&self) -> usize {
        self.len()
    }
}

/// When a running worker started (its `/proc/<pid>/stat` start time), so
/// that an adopted room's uptime goes on across a master restart; now when
/// unknown.
fn process_started(pid: u32) -> Instant {
    let now = Instant::now();
    chat_shared::procfs::age(pid)
        .ok()
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(now)
}

/// Failed rooms kept listed at most; past it the oldest are forgotten.
const MAX_FAILED: usize = 64;

/// Forgets the oldest failed rooms past [`MAX_FAILED`]; the entries gone.
fn prune_failed(rooms: &mut HashMap<String, Arc<RoomEntry>>) -> Vec<Arc<RoomEntry>> {
    let mut failed: Vec<(u64, String)> = rooms
        .values()
        .filter(|e| e.life.is_over() && matches!(e.state(), Lifecycle::Failed(_)))
        .map(|e| (e.created_unix_ms, e.name.clone()))
        .collect();
    if failed.len() <= MAX_FAILED {
        return Vec::new();
    }
    failed.sort();
    failed[..failed.len() - MAX_FAILED]
        .iter()
        .filter_map(|(_, name)| rooms.remove(name))
        .collect()
}

/// Whether one more room fits: a count of the rooms that hold a port only
/// when the listing is as long as the capacity (it also lists failed rooms
/// and rooms that ended but are not removed yet).
fn has_room(rooms: &HashMap<String, Arc<RoomEntry>>, capacity: usize) -> bool {
    rooms.len() < capacity || rooms.values().filter(|e| e.holds_port()).count() < capacity
}

/// Whether `port` is held by the room it was last given to.
fn taken(ports: &HashMap<u16, Arc<RoomEntry>>, port: u16) -> bool {
    ports
        .get(&port)
        .is_some_and(|e| e.holds_port() && e.port() == port)
}

/// Drops `entry`'s booking of its port, if it still has it.
fn unbook(ports: &mut HashMap<u16, Arc<RoomEntry>>, entry: &Arc<RoomEntry>) {
    let port = entry.port();
    if ports.get(&port).is_some_and(|e| Arc::ptr_eq(e, entry)) {
        ports.remove(&port);
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn registry(ports: &str) -> Registry {
        Registry::new(&Config::parse_from(["chatserver", "--room-ports", ports]))
    }

    fn create(r: &Registry, name: &str) -> Result<Arc<RoomEntry>, Refused> {
        r.reserve(name, RoomSettings::default()).map(|(e, _)| e)
    }

    #[test]
    fn ports_are_the_lowest_free_and_freed_when_a_room_ends() {
        let r = registry("30000-30002");
        let a = create(&r, "a").unwrap();
        let b = create(&r, "b").unwrap();
        let c = create(&r, "c").unwrap();
        assert_eq!((a.port(), b.port(), c.port()), (30000, 30001, 30002));
        assert!(matches!(create(&r, "d"), Err(Refused::NoCapacity)));
        // b ends: its port is free before the registry forgets it.
        assert!(b.life.stopped());
        assert_eq!(r.len(), 2);
        let d = create(&r, "d").unwrap();
        assert_eq!(d.port(), 30001);
        // A failed room stays listed, its port free; removing a room frees
        // its port too.
        r.release(&a);
        assert!(a.life.failed("test".into()));
        r.remove(&c);
        let e = create(&r, "e").unwrap();
        let f = create(&r, "f").unwrap();
        assert_eq!((e.port(), f.port()), (30000, 30002));
        assert!(r.get("a").is_some(), "the failed room is still listed");
        // A bind failure moves a room off its port.
        let moved = r.repick_port(&f);
        assert_eq!(moved, None, "no other port is free");
    }

    #[test]
    fn a_repicked_port_leaves_the_old_one_free_for_later() {
        let r = registry("30000-30003");
        let a = create(&r, "a").unwrap();
        assert_eq!(r.repick_port(&a), Some(30001));
        assert_eq!(a.port(), 30001);
        // 30000 failed to bind lately: skipped while other ports are free.
        let b = create(&r, "b").unwrap();
        assert_eq!(b.port(), 30002);
    }

    #[test]
    fn failed_rooms_past_the_bound_are_forgotten() {
        let r = registry("30000-30199");
        let rooms: Vec<_> = (0..MAX_FAILED + 5)
            .map(|i| create(&r, &format!("r{i:03}")).unwrap())
            .collect();
        for e in &rooms {
            assert!(e.life.failed("test".into()));
            r.release(e);
        }
        assert_eq!(r.all().len(), MAX_FAILED);
        assert!(r.get("r000").is_none(), "the oldest are forgotten");
        assert_eq!(r.len(), 0);
        assert_eq!(create(&r, "new").unwrap().port(), 30000);
    }
}
