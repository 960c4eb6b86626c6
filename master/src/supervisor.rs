//! Spawning and supervising room workers. One supervisor task per room owns
//! its worker from spawn to the end: it reaps the process when it exits,
//! restarts it on the same port when it crashed (within a restart budget, as
//! an Erlang/OTP supervisor does), and removes the room when it ended on
//! purpose. Workers adopted after a master restart are not our children; they
//! are watched by pid until they exit, then restarted as children.

use std::collections::VecDeque;
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
use tokio::process::{Child, Command};

use crate::registry::{Refused, RoomEntry, RoomState};
use crate::state::Shared;

/// Time a worker gets to connect, bind its port and say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Ports tried before a create gives up.
const BIND_ATTEMPTS: usize = 8;
/// How often an adopted worker's pid is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(100);
/// Longest pause before a restart.
const MAX_RESTART_DELAY: Duration = Duration::from_millis(500);

/// The outcome of a create.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    New(u16),
    Exists(u16),
    NoCapacity,
    Failed(String),
}

/// Creates a room (or finds it) and answers once it accepts connections.
pub async fn create(master: &Shared, name: &str, settings: RoomSettings) -> Created {
    let (entry, fresh) = match master.registry.reserve(name, settings) {
        Ok(x) => x,
        Err(Refused::NoCapacity) => return Created::NoCapacity,
    };
    if fresh {
        start(master, entry.clone(), None);
    }
    match entry.wait_started(START_TIMEOUT).await {
        RoomState::Ready if fresh => {
            crate::catalog::record(master, &entry, "ready");
            Created::New(entry.port())
        }
        RoomState::Ready => Created::Exists(entry.port()),
        RoomState::Starting => Created::Failed("the room did not start in time".into()),
        RoomState::Failed(e) => Created::Failed(e),
        RoomState::Closing | RoomState::Closed if !fresh => Created::Exists(entry.port()),
        RoomState::Closing | RoomState::Closed => {
            Created::Failed("the room closed while starting".into())
        }
    }
}

/// Starts the supervisor of a room; `adopted` is the pid of a running
/// worker this master did not spawn.
pub fn start(master: &Shared, entry: Arc<RoomEntry>, adopted: Option<u32>) {
    let m = master.clone();
    master
        .supervisors
        .spawn(async move { supervise(m, entry, adopted).await });
}

fn spawn_worker(master: &Shared, entry: &RoomEntry) -> std::io::Result<Child> {
    let mut cmd = Command::new(&master.worker_bin);
    // `--room=<name>`: a name starting with '-' can never pass for a flag.
    cmd.arg(format!("--room={}", entry.name))
        .arg("--port")
        .arg(entry.port().to_string())
        .arg("--master-socket")
        .arg(&master.socket)
        .arg("--bind")
        .arg(master.cfg.room_bind.to_string())
        // Workers need none of the master's secrets from the environment;
        // what they need comes over IPC.
        .env_remove("KEY")
        .env_remove("ADMIN_KEY")
        .env_remove("JWT_SECRET")
        .env_remove("LOADBALANCER_KEY")
        .env_remove("MONGODB_URI")
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
}

async fn wait_exit(proc: &mut Proc) -> Exit {
    match proc {
        Proc::Child(child) => match child.wait().await {
            Ok(s) => Exit {
                success: s.success(),
                what: s.to_string(),
            },
            Err(e) => Exit {
                success: false,
                what: format!("cannot wait: {e}"),
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
        };
    };
    loop {
        match waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                return Exit {
                    success: code == 0,
                    what: format!("exit status: {code}"),
                };
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Exit {
                    success: false,
                    what: format!("signal: {sig}"),
                };
            }
            Err(Errno::ECHILD) if !alive(pid) => {
                return Exit {
                    success: false,
                    what: "gone (not our child; status unknown)".into(),
                };
            }
            _ => {}
        }
        tokio::time::sleep(ADOPTED_POLL).await;
    }
}

/// Owns one room's worker until the room ends or fails.
async fn supervise(master: Shared, entry: Arc<RoomEntry>, adopted: Option<u32>) {
    let room = entry.name.clone();
    let budget = master.cfg.max_restarts;
    let window = master.cfg.restart_window;
    let mut crashes: VecDeque<Instant> = VecDeque::new();
    let mut bind_attempts = 0;
    let mut next = adopted.map(Proc::Adopted);
    loop {
        let mut proc = match next.take() {
            Some(p) => p,
            None => match prepare(&master, &entry).await {
                Err(e) => return fail(&master, &entry, e),
                Ok(()) => match spawn_worker(&master, &entry) {
                    Ok(c) => {
                        let pid = c.id().unwrap_or(0);
                        entry.pid.store(pid, Ordering::Release);
                        tracing::info!(%room, pid, port = entry.port(), "room worker spawned");
                        master.metrics.worker_started();
                        Proc::Child(c)
                    }
                    Err(e) => {
                        tracing::error!(%room, error = %e, bin = %master.worker_bin.display(), "cannot spawn the room worker");
                        return fail(
                            &master,
                            &entry,
                            format!("cannot spawn the room worker: {e}"),
                        );
                    }
                },
            },
        };
        let pid = entry.pid();
        let exit = wait_exit(&mut proc).await;
        // The next worker's hello may come before its pid is recorded: it
        // must not be refused for the dead one's pid.
        entry.pid.store(0, Ordering::Release);
        let state = entry.state();
        if entry.restart_requested.swap(false, Ordering::AcqRel) && !master.shutdown.is_cancelled()
        {
            tracing::info!(%room, pid, "restarting the room as asked");
            entry.set_state(RoomState::Starting);
            continue;
        }
        // Asked to stop, or ended by itself (a clean exit): the room is over.
        if matches!(state, RoomState::Closing | RoomState::Closed)
            || master.shutdown.is_cancelled()
            || (exit.success && state != RoomState::Starting)
        {
            tracing::info!(%room, pid, status = %exit.what, "room worker exited");
            entry.set_state(RoomState::Closed);
            master.registry.remove(&entry);
            // A room that ended on purpose (at a graceful shutdown of the
            // server too) leaves the catalog: only rooms that died with their
            // master are respawned by the next one.
            crate::catalog::forget(&master, &room);
            return;
        }
        if state == RoomState::Starting && entry.bind_failed.swap(false, Ordering::AcqRel) {
            bind_attempts += 1;
            match master.registry.repick_port(&entry) {
                Some(port) if bind_attempts < BIND_ATTEMPTS => {
                    tracing::warn!(%room, port, "port was taken; retrying on another");
                    continue;
                }
                _ => return fail(&master, &entry, "no free port could be bound".into()),
            }
        }
        if !entry.ever_ready.load(Ordering::Acquire) {
            return fail(
                &master,
                &entry,
                format!("the room worker exited while starting ({})", exit.what),
            );
        }
        // A crash (or an exit nobody asked for): restart within the budget.
        let now = Instant::now();
        crashes.push_back(now);
        while crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            crashes.pop_front();
        }
        master.metrics.worker_crashed();
        if crashes.len() > budget as usize {
            tracing::error!(%room, pid, status = %exit.what, crashes = crashes.len(), "room crashed too often; giving up");
            return fail(
                &master,
                &entry,
                format!(
                    "crashed {} times in {}s; restart budget exhausted",
                    crashes.len(),
                    window.as_secs()
                ),
            );
        }
        let restarts = entry.restarts.fetch_add(1, Ordering::AcqRel) + 1;
        master.metrics.worker_restarted();
        tracing::warn!(%room, pid, status = %exit.what, restarts, "room worker died; restarting it on the same port");
        entry.set_state(RoomState::Starting);
        let delay = Duration::from_millis(25 << crashes.len().min(5)).min(MAX_RESTART_DELAY);
        tokio::select! {
            _ = master.shutdown.cancelled() => {
                entry.set_state(RoomState::Closed);
                master.registry.remove(&entry);
                return;
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
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
async fn prepare(master: &Shared, entry: &RoomEntry) -> Result<(), String> {
    let restart = entry.ever_ready.load(Ordering::Acquire);
    if restart {
        // Let what the dead worker sent reach the store first.
        let deadline = Instant::now() + STORE_TIMEOUT;
        while master.writer.pending() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let stored = tokio::time::timeout(STORE_TIMEOUT, master.store.last_seq(&entry.name))
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
            Ok(Some((_, seq))) if entry.from_catalog.load(Ordering::Acquire) => {
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
            master.store.history(&entry.name, seq + 1, RECENT),
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
fn fail(master: &Shared, entry: &Arc<RoomEntry>, reason: String) {
    tracing::error!(room = %entry.name, %reason, "room failed");
    let port = entry.port();
    let served = entry.ever_ready.load(Ordering::Acquire);
    entry.set_state(RoomState::Failed(reason.clone()));
    master.registry.release(entry);
    crate::catalog::forget(master, &entry.name);
    if served && port != 0 {
        // Its clients were cut off by the crash: tell the ones who come
        // back why, for a short while.
        crate::tombstone::serve(master, port, &entry.name, &reason);
    }
}

/// Asks a room to shut down: over IPC when linked, else with SIGTERM.
pub fn shutdown_room(entry: &RoomEntry, reason: &str) {
    entry.set_state(RoomState::Closing);
    if !entry.send(MasterMsg::Shutdown {
        reason: reason.to_owned(),
        restart: false,
    }) {
        signal(entry.pid(), Signal::SIGTERM);
    }
}

/// Restarts a room's worker (an operator's order): its clients get a 1012
/// close (service restart), reconnect and resume; the room keeps its port, settings and seq.
pub fn restart_room(entry: &RoomEntry) {
    entry.restart_requested.store(true, Ordering::Release);
    if !entry.send(MasterMsg::Shutdown {
        reason: "room restarting; reconnect and resume".to_owned(),
        restart: true,
    }) {
        signal(entry.pid(), Signal::SIGTERM);
    }
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
    let exists = i32::try_from(pid).is_ok_and(|p| p > 0 && kill(Pid::from_raw(p), None).is_ok());
    exists && !zombie(pid)
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Shuts every room down: ask, wait up to the grace period, then kill.
pub async fn shutdown_all(master: &Shared) {
    if master.registry.set_accepting(false, true) {
        master.push_snapshots();
    }
    let rooms = master.registry.all();
    for r in &rooms {
        if matches!(r.state(), RoomState::Ready | RoomState::Starting) {
            shutdown_room(r, "server shutting down");
        }
    }
    master.supervisors.close();
    let grace = master.cfg.shutdown_grace;
    if tokio::time::timeout(grace, master.supervisors.wait())
        .await
        .is_err()
    {
        for r in &rooms {
            if alive(r.pid()) {
                tracing::warn!(room = %r.name, pid = r.pid(), "room did not stop in time; killing it");
                signal(r.pid(), Signal::SIGKILL);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), master.supervisors.wait()).await;
    }
}
