//! Spawning and supervising room workers. One supervisor task per room owns
//! its worker from spawn to the end: it reaps the process when it exits,
//! restarts it on the same port when it crashed (within a restart budget, as
//! an Erlang/OTP supervisor does), and removes the room when it ended on
//! purpose. Workers adopted after a master restart are not our children; they
//! are watched by pid until they exit, then restarted as children.
//!
//! The supervisor moves the room through its lifecycle (`lifecycle.rs`) and
//! publishes what happens as events (`events.rs`) for the catalog and the
//! metrics.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_shared::ipc::MasterMsg;
use chat_shared::settings::RoomSettings;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::{EventKind, Events};
use crate::lifecycle::Lifecycle;
use crate::registry::{Origin, Refused, Registry, RoomEntry};
use crate::store::{Claim, Store};
use crate::writer::Writer;

/// Time a worker gets to connect, bind its port and say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Ports tried before a create gives up.
const BIND_ATTEMPTS: usize = 8;
/// How often an adopted worker's pid is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(100);
/// Longest pause before a restart.
const MAX_RESTART_DELAY: Duration = Duration::from_millis(500);
/// Time a worker asked to stop gets beyond the shutdown grace before it is
/// sent SIGTERM, and then again before SIGKILL.
const STOP_KILL_AFTER: Duration = Duration::from_secs(2);

/// What the room supervisors need of the master, and nothing else: the
/// registry, the events they publish, the store and the writer (for where a
/// room's history continues), the worker's spawn recipe and the restart
/// budget.
pub struct Supervisor {
    pub registry: Arc<Registry>,
    pub events: Events,
    pub store: Arc<dyn Store>,
    pub writer: Arc<Writer>,
    /// Supervisor tasks (and what they start), awaited at shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the whole server shuts down.
    pub shutdown: CancellationToken,
    pub worker_bin: crate::worker_cmd::WorkerCmd,
    pub socket: PathBuf,
    pub room_bind: IpAddr,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub shutdown_grace: Duration,
    /// Room-name ownership across hosts sharing the store.
    pub owners: crate::owners::Owners,
}

/// The handle every supervisor task holds.
pub type Sup = Arc<Supervisor>;

/// The outcome of a create.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    New(u16),
    Exists(u16),
    NoCapacity,
    Failed(String),
    /// Another host sharing the store owns the name.
    Elsewhere(crate::store::OwnerRecord),
}

/// Creates a room (or finds it) and answers once it accepts connections:
/// only the port of a running worker is ever answered. A create that meets a
/// stopping room of the same name waits for it to end, then creates a fresh
/// one.
pub async fn create(sup: &Sup, name: &str, settings: RoomSettings) -> Created {
    // A stopping worker is gone by then: killed if it did not exit.
    let stop_wait = sup.shutdown_grace + STOP_KILL_AFTER * 3;
    let deadline = tokio::time::Instant::now() + stop_wait + START_TIMEOUT;
    loop {
        let (entry, fresh) = match sup.registry.reserve(name, settings.clone()) {
            Ok(x) => x,
            Err(Refused::NoCapacity) => return Created::NoCapacity,
        };
        if fresh {
            match sup.owners.claim(&entry).await {
                Ok(Claim::Claimed { .. }) => start(sup, entry.clone(), None),
                Ok(Claim::Held(owner)) => {
                    entry
                        .life
                        .failed(format!("{name} is served by {}", owner.host));
                    sup.registry.remove(&entry);
                    return Created::Elsewhere(owner);
                }
                Err(e) => {
                    let reason = format!("cannot claim the room's name in the store: {e}");
                    entry.life.failed(reason.clone());
                    sup.registry.remove(&entry);
                    return Created::Failed(reason);
                }
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match entry.life.settled(left.min(START_TIMEOUT)).await {
            Lifecycle::Running { port, .. } if fresh => return Created::New(port),
            Lifecycle::Running { port, .. } => return Created::Exists(port),
            Lifecycle::Failed(e) => return Created::Failed(e),
            Lifecycle::Stopping | Lifecycle::Stopped if fresh => {
                return Created::Failed("the room closed while starting".into());
            }
            Lifecycle::Stopping | Lifecycle::Stopped => {
                // The old room is ending: once it is gone, the name is free.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if !entry.life.over(left.min(stop_wait)).await.is_final() {
                    return Created::Failed(
                        "a room of this name is still shutting down; try again".into(),
                    );
                }
                tracing::info!(room = %name, "the room of this name ended; creating it again");
            }
            Lifecycle::Starting | Lifecycle::PortTaken | Lifecycle::Restarting => {
                return Created::Failed("the room did not start in time".into());
            }
        }
    }
}

/// Starts the supervisor of a room; `adopted` is the pid of a running
/// worker this master did not spawn.
pub fn start(sup: &Sup, entry: Arc<RoomEntry>, adopted: Option<u32>) {
    let s = sup.clone();
    sup.tasks
        .spawn(async move { supervise(s, entry, adopted).await });
}

fn spawn_worker(sup: &Sup, entry: &RoomEntry) -> std::io::Result<Child> {
    let mut cmd = sup.worker_bin.command();
    // `--room=<name>`: a name starting with '-' can never pass for a flag.
    cmd.arg(format!("--room={}", entry.name))
        .arg("--port")
        .arg(entry.port().to_string())
        .arg("--master-socket")
        .arg(&sup.socket)
        .arg("--bind")
        .arg(sup.room_bind.to_string())
        // Workers need none of the master's secrets from the environment;
        // what they need comes over IPC.
        .env_remove("KEY")
        .env_remove("ADMIN_KEY")
        .env_remove("JWT_SECRET")
        .env_remove("LOADBALANCER_KEY")
        .env_remove("MONGODB_URI")
        .env_remove("WEBHOOK_SECRET")
        .env_remove("WEBHOOK_URL")
        .env_remove("REDIS_URL")
        .stdin(Stdio::null())
        // Its own process group: a Ctrl-C meant for the master does not hit
        // rooms directly; the master shuts them down in order. No parent-death
        // signal either: rooms outlive a master that dies.
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn()
}

/// A worker process being supervised.
enum Proc {
    Child(Child),
    Adopted(u32),
}

/// How a worker ended.
struct Exit {
    success: bool,
    what: String,
    /// The exit code, when the process exited (not killed by a signal).
    code: Option<i32>,
}

async fn wait_exit(proc: &mut Proc) -> Exit {
    match proc {
        Proc::Child(child) => match child.wait().await {
            Ok(s) => Exit {
                success: s.success(),
                what: s.to_string(),
                code: s.code(),
            },
            Err(e) => Exit {
                success: false,
                what: format!("cannot wait: {e}"),
                code: None,
            },
        },
        Proc::Adopted(pid) => wait_adopted(*pid).await,
    }
}

/// Waits for a process that may or may not be our child: reaps it when it is
/// (after a re-exec the workers stay our children), polls its pid otherwise.
async fn wait_adopted(pid: u32) -> Exit {
    let Ok(raw) = i32::try_from(pid) else {
        return Exit {
            success: false,
            what: "bad pid".into(),
            code: None,
        };
    };
    loop {
        match waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                return Exit {
                    success: code == 0,
                    what: format!("exit status: {code}"),
                    code: Some(code),
                };
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Exit {
                    success: false,
                    what: format!("signal: {sig}"),
                    code: None,
                };
            }
            Err(Errno::ECHILD) if !alive(pid) => {
                return Exit {
                    success: false,
                    what: "gone (not our child; status unknown)".into(),
                    code: None,
                };
            }
            _ => {}
        }
        tokio::time::sleep(ADOPTED_POLL).await;
    }
}

/// Owns one room's worker until the room ends or fails.
async fn supervise(sup: Sup, entry: Arc<RoomEntry>, adopted: Option<u32>) {
    let room = entry.name.clone();
    let events = &sup.events;
    let budget = sup.max_restarts;
    let window = sup.restart_window;
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut bind_attempts = 0;
    // Whether a worker of this room ever listened: one that dies before
    // that is a failed start, not a crash to restart.
    let mut served = adopted.is_some();
    let mut next = adopted.map(Proc::Adopted);
    if let Some(pid) = adopted {
        events.publish(
            &entry,
            EventKind::Adopted {
                pid,
                port: entry.port(),
            },
        );
    }
    loop {
        let mut proc = match next.take() {
            Some(p) => p,
            None => {
                if !entry.life.spawning() {
                    // Asked to stop before its worker was spawned.
                    return stopped(&sup, &entry);
                }
                if let Err(e) = prepare(&sup, &entry, served).await {
                    return fail(&sup, &entry, e, served);
                }
                match spawn_worker(&sup, &entry) {
                    Ok(c) => {
                        let pid = c.id().unwrap_or(0);
                        entry.pid.store(pid, Ordering::Release);
                        tracing::info!(%room, pid, port = entry.port(), "room worker spawned");
                        events.publish(&entry, EventKind::Spawned { pid });
                        Proc::Child(c)
                    }
                    Err(e) => {
                        tracing::error!(%room, error = %e, bin = %sup.worker_bin, "cannot spawn the room worker");
                        return fail(
                            &sup,
                            &entry,
                            format!("cannot spawn the room worker: {e}"),
                            served,
                        );
                    }
                }
            }
        };
        let pid = entry.pid();
        let exit = watch_worker(&sup, &entry, &mut proc, &mut served).await;
        // The next worker's hello may come before its pid is recorded: it
        // must not be refused for the dead one's pid.
        entry.pid.store(0, Ordering::Release);
        // A worker that could not bind its port says so in its exit code too
        // (its `BindFailed` frame may be read after the exit is seen).
        if exit.code == Some(chat_shared::ipc::EXIT_PORT_TAKEN) {
            entry.life.port_taken();
        }
        let state = entry.state();
        // Asked to stop, or ended by itself (a clean exit): the room is over.
        if state == Lifecycle::Stopping
            || sup.shutdown.is_cancelled()
            || (exit.success && matches!(state, Lifecycle::Running { .. }))
        {
            tracing::info!(%room, pid, status = %exit.what, "room worker exited");
            return stopped(&sup, &entry);
        }
        match state {
            Lifecycle::Restarting => {
                tracing::info!(%room, pid, "restarting the room as asked");
                continue;
            }
            Lifecycle::PortTaken => {
                bind_attempts += 1;
                match sup.registry.repick_port(&entry) {
                    Some(port) if bind_attempts < BIND_ATTEMPTS => {
                        tracing::warn!(%room, port, "port was taken; retrying on another");
                        continue;
                    }
                    _ => {
                        return fail(&sup, &entry, "no free port could be bound".into(), served);
                    }
                }
            }
            _ => {}
        }
        if !served {
            return fail(
                &sup,
                &entry,
                format!("the room worker exited while starting ({})", exit.what),
                served,
            );
        }
        // A crash (or an exit nobody asked for): restart within the budget.
        events.publish(
            &entry,
            EventKind::Crashed {
                pid,
                status: exit.what.clone(),
            },
        );
        let now = Instant::now();
        crashes.push_back(now);
        while crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            crashes.pop_front();
        }
        if crashes.len() > budget as usize {
            tracing::error!(%room, pid, status = %exit.what, crashes = crashes.len(), "room crashed too often; giving up");
            return fail(
                &sup,
                &entry,
                format!(
                    "crashed {} times in {}s; restart budget exhausted",
                    crashes.len(),
                    window.as_secs()
                ),
                served,
            );
        }
        if !entry.life.crashed() {
            // Stopped meanwhile.
            return stopped(&sup, &entry);
        }
        let restarts = entry.restarts.fetch_add(1, Ordering::AcqRel) + 1;
        events.publish(&entry, EventKind::Restarting { restarts });
        tracing::warn!(%room, pid, status = %exit.what, restarts, "room worker died; restarting it on the same port");
        let delay = Duration::from_millis(25 << crashes.len().min(5)).min(MAX_RESTART_DELAY);
        tokio::select! {
            _ = sup.shutdown.cancelled() => return stopped(&sup, &entry),
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Waits for the worker to exit. Meanwhile it publishes the room's start
/// (the worker listens) and makes sure a worker asked to stop does stop:
/// SIGTERM, then SIGKILL, if it is still there after the grace period.
async fn watch_worker(
    sup: &Sup,
    entry: &Arc<RoomEntry>,
    proc: &mut Proc,
    served: &mut bool,
) -> Exit {
    let mut states = entry.life.subscribe();
    let mut stop_deadline: Option<tokio::time::Instant> = None;
    let mut termed = false;
    // An adopted worker was announced as such, not as ready.
    let mut announced = matches!(proc, Proc::Adopted(_));
    let exit = wait_exit(proc);
    tokio::pin!(exit);
    loop {
        let state = states.borrow_and_update().clone();
        match state {
            Lifecycle::Running { pid, port } if !announced => {
                announced = true;
                sup.events.publish(
                    entry,
                    EventKind::Ready {
                        pid,
                        port,
                        first: !*served,
                    },
                );
                *served = true;
            }
            Lifecycle::Stopping if stop_deadline.is_none() => {
                stop_deadline =
                    Some(tokio::time::Instant::now() + sup.shutdown_grace + STOP_KILL_AFTER);
            }
            _ => {}
        }
        let kill_at = stop_deadline.unwrap_or_else(|| tokio::time::Instant::now() + START_TIMEOUT);
        tokio::select! {
            exit = &mut exit => return exit,
            changed = states.changed() => {
                if changed.is_err() {
                    return (&mut exit).await;
                }
            }
            _ = tokio::time::sleep_until(kill_at), if stop_deadline.is_some() => {
                let pid = entry.pid();
                if termed {
                    tracing::warn!(room = %entry.name, pid, "the room worker ignored SIGTERM; killing it");
                    signal(pid, Signal::SIGKILL);
                    stop_deadline = None;
                } else {
                    tracing::warn!(room = %entry.name, pid, "the room worker did not stop in time; terminating it");
                    signal(pid, Signal::SIGTERM);
                    termed = true;
                    stop_deadline = Some(tokio::time::Instant::now() + STOP_KILL_AFTER);
                }
            }
        }
    }
}

/// The room ended: it leaves the registry (its name and port are free) and
/// then the `Stopped` state and event tell whoever waits.
fn stopped(sup: &Sup, entry: &Arc<RoomEntry>) {
    sup.registry.remove(entry);
    entry.life.stopped();
    sup.events.publish(entry, EventKind::Stopped);
}

/// Time allowed to learn where a room's history continues.
const STORE_TIMEOUT: Duration = Duration::from_secs(3);
/// Latest messages a (re)started room gets.
const RECENT: u32 = 1000;

/// Decides where the next worker's history continues, and loads the latest
/// stored messages for it.
///
/// First start: after the last stored message, in its epoch (a new epoch for
/// a new room); without the store the room cannot start (seq numbers would
/// collide with stored ones). Restart after a crash: after everything this
/// master received, in the same epoch unless the dead worker had numbered
/// messages the master never got (then those are lost: new epoch, so that
/// clients reload instead of resuming).
async fn prepare(sup: &Sup, entry: &RoomEntry, restart: bool) -> Result<(), String> {
    if restart {
        // Let what the dead worker sent reach the store first (this room's
        // messages only: other rooms' backlogs do not delay the restart).
        let received = entry.received_seq.load(Ordering::Acquire);
        sup.writer
            .wait_handled(&entry.name, received, STORE_TIMEOUT)
            .await;
    }
    let stored = tokio::time::timeout(STORE_TIMEOUT, sup.store.last_seq(&entry.name))
        .await
        .map_err(|_| "the store did not answer".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let (epoch, seq) = if restart {
        let stats = entry.stats();
        let stored_seq = stored
            .as_ref()
            .ok()
            .copied()
            .flatten()
            .map_or(0, |(_, s)| s);
        let known = entry.received_seq.load(Ordering::Acquire).max(stored_seq);
        let lost = stats.seq > known;
        let previous = entry
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(e, _)| e);
        let epoch = match (lost, stats.epoch, previous) {
            (true, _, _) => crate::registry::new_epoch(),
            (false, e, _) if e != 0 => e,
            (false, _, Some(e)) => e,
            (false, _, None) => crate::registry::new_epoch(),
        };
        if lost {
            tracing::warn!(room = %entry.name, last = stats.seq, stored = known, "messages of the dead worker were lost; new epoch");
        }
        (epoch, known.max(stats.seq))
    } else {
        match stored {
            // The last worker died with its master: it may have numbered
            // (and broadcast) messages that never reached the store. A new
            // epoch makes clients reload, and skipping every seq it could
            // have used keeps seq numbers from ever being reused.
            Ok(Some((_, seq)))
                if entry.origin == Origin::Catalog || entry.taken_over.load(Ordering::Acquire) =>
            {
                let skip = chat_shared::ipc::MAX_UNCONFIRMED as u64;
                tracing::warn!(room = %entry.name, stored = seq, "respawning a room whose worker died with its master: new epoch");
                (crate::registry::new_epoch(), seq + skip)
            }
            Ok(Some((epoch, seq))) => (epoch, seq),
            Ok(None) => (crate::registry::new_epoch(), 0),
            Err(e) => {
                return Err(format!(
                    "the store is unavailable ({e}); the room cannot start"
                ));
            }
        }
    };
    entry.set_history(epoch, seq);
    if seq > 0 {
        let recent = tokio::time::timeout(
            STORE_TIMEOUT,
            sup.store.history(&entry.name, seq + 1, RECENT),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
        entry.set_recent(
            recent
                .into_iter()
                .filter(|m| m.epoch == epoch)
                .map(crate::writer::stored_message)
                .collect(),
        );
    }
    Ok(())
}

/// Marks a room failed: it stays listed (status `failed`, with the reason)
/// but its port is free again.
fn fail(sup: &Sup, entry: &Arc<RoomEntry>, reason: String, served: bool) {
    tracing::error!(room = %entry.name, %reason, "room failed");
    let port = entry.port();
    sup.registry.release(entry);
    entry.life.failed(reason.clone());
    sup.events.publish(
        entry,
        EventKind::Failed {
            reason: reason.clone(),
        },
    );
    if served && port != 0 {
        // Its clients were cut off by the crash: tell the ones who come
        // back why, for a short while.
        crate::tombstone::serve(
            &sup.tasks,
            sup.room_bind,
            &sup.shutdown,
            port,
            &entry.name,
            &reason,
        );
    }
}

/// Asks a room to shut down: over IPC when linked, else with SIGTERM. False
/// when the room is already stopping or over.
pub fn shutdown_room(entry: &RoomEntry, reason: &str) -> bool {
    if !entry.life.stop() {
        return false;
    }
    if !entry.send(MasterMsg::Shutdown {
        reason: reason.to_owned(),
        restart: false,
    }) {
        signal(entry.pid(), Signal::SIGTERM);
    }
    true
}

/// Restarts a room's worker (an operator's order): its clients get a 1012
/// close (service restart), reconnect and resume; the room keeps its port, settings and seq.
/// False when the room is not running.
pub fn restart_room(entry: &RoomEntry) -> bool {
    if !entry.life.restart() {
        return false;
    }
    if !entry.send(MasterMsg::Shutdown {
        reason: "room restarting; reconnect and resume".to_owned(),
        restart: true,
    }) {
        signal(entry.pid(), Signal::SIGTERM);
    }
    true
}

/// Terminates a hung worker: SIGTERM, then SIGKILL after `grace`. Its
/// supervisor restarts it.
pub fn terminate(pid: u32, grace: Duration) {
    signal(pid, Signal::SIGTERM);
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if alive(pid) {
            signal(pid, Signal::SIGKILL);
        }
    });
}

/// Sends a signal to a worker pid (never to pid 0 or a group).
pub fn signal(pid: u32, sig: Signal) {
    if let Ok(p) = i32::try_from(pid)
        && p > 0
    {
        let _ = kill(Pid::from_raw(p), sig);
    }
}

/// Whether a pid is alive (a zombie, dead but not yet reaped by a parent
/// that is not us, counts as dead).
pub fn alive(pid: u32) -> bool {
    chat_shared::procfs::alive(pid)
}

/// Shuts every room down (the server is stopping): rooms are told to refuse
/// joins, then asked to stop; the supervisors are awaited up to the grace
/// period, then what is left is killed.
pub async fn shutdown_all(sup: &Sup) {
    if sup.registry.set_accepting(false, true) {
        sup.registry.push_snapshots();
    }
    stop_all(sup).await;
}

/// Asks every room to stop, waits up to the grace period, then kills.
async fn stop_all(sup: &Sup) {
    let rooms = sup.registry.all();
    for r in &rooms {
        shutdown_room(r, "server shutting down");
    }
    sup.tasks.close();
    let grace = sup.shutdown_grace;
    if tokio::time::timeout(grace, sup.tasks.wait()).await.is_err() {
        for r in &rooms {
            if alive(r.pid()) {
                tracing::warn!(room = %r.name, pid = r.pid(), "room did not stop in time; killing it");
                signal(r.pid(), Signal::SIGKILL);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), sup.tasks.wait()).await;
    }
}
