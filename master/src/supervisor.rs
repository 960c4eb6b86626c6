//! Spawning and watching room workers: one supervisor task per room owns its
//! child process, reaps it when it exits and removes the room.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_shared::ipc::MasterMsg;
use chat_shared::settings::RoomSettings;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::registry::{Refused, RoomEntry, RoomState};
use crate::state::Shared;

/// Time a worker gets to connect, bind its port and say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// Ports tried before a create gives up.
const BIND_ATTEMPTS: usize = 8;

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
        let m = master.clone();
        let e = entry.clone();
        master
            .supervisors
            .spawn(async move { supervise(m, e).await });
    }
    match entry.wait_started(START_TIMEOUT).await {
        RoomState::Ready if fresh => Created::New(entry.port()),
        RoomState::Ready => Created::Exists(entry.port()),
        RoomState::Starting => Created::Failed("the room did not start in time".into()),
        RoomState::Failed(e) => Created::Failed(e),
        RoomState::Closing | RoomState::Closed if !fresh => Created::Exists(entry.port()),
        RoomState::Closing | RoomState::Closed => {
            Created::Failed("the room closed while starting".into())
        }
    }
}

fn spawn_worker(master: &Shared, entry: &RoomEntry) -> std::io::Result<Child> {
    let mut cmd = Command::new(&master.worker_bin);
    cmd.arg("--room")
        .arg(&entry.name)
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
        // rooms directly; the master shuts them down in order.
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn()
}

/// Owns one room's worker from spawn to exit.
async fn supervise(master: Shared, entry: Arc<RoomEntry>) {
    let room = entry.name.clone();
    for attempt in 1..=BIND_ATTEMPTS {
        let mut child = match spawn_worker(&master, &entry) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(%room, error = %e, bin = %master.worker_bin.display(), "cannot spawn the room worker");
                entry.set_state(RoomState::Failed(format!(
                    "cannot spawn the room worker: {e}"
                )));
                master.registry.remove(&entry);
                return;
            }
        };
        let pid = child.id().unwrap_or(0);
        entry.pid.store(pid, Ordering::Release);
        tracing::info!(%room, pid, port = entry.port(), attempt, "room worker spawned");
        let status = child.wait().await;
        let was = entry.state();
        let code = status.as_ref().ok().and_then(|s| s.code());
        if was == RoomState::Starting && entry.bind_failed.swap(false, Ordering::AcqRel) {
            match master.registry.repick_port(&entry) {
                Some(port) => {
                    tracing::warn!(%room, port, "port was taken; retrying on another");
                    continue;
                }
                None => break,
            }
        }
        match &status {
            Ok(s) if s.success() => tracing::info!(%room, pid, "room worker exited"),
            Ok(s) => tracing::warn!(%room, pid, status = %s, "room worker exited abnormally"),
            Err(e) => tracing::error!(%room, pid, error = %e, "cannot wait for the room worker"),
        }
        let end = if was == RoomState::Starting {
            RoomState::Failed(format!("the room worker exited while starting ({code:?})"))
        } else {
            RoomState::Closed
        };
        entry.set_state(end);
        master.registry.remove(&entry);
        return;
    }
    entry.set_state(RoomState::Failed("no free port could be bound".into()));
    master.registry.remove(&entry);
}

/// Asks a room to shut down: over IPC when linked, else with SIGTERM.
pub fn shutdown_room(entry: &RoomEntry, reason: &str) {
    entry.set_state(RoomState::Closing);
    if !entry.send(MasterMsg::Shutdown {
        reason: reason.to_owned(),
    }) {
        signal(entry.pid(), Signal::SIGTERM);
    }
}

/// Sends a signal to a worker pid (never to pid 0 or our own group).
pub fn signal(pid: u32, sig: Signal) {
    if let Ok(p) = i32::try_from(pid)
        && p > 0
    {
        let _ = kill(Pid::from_raw(p), sig);
    }
}

/// Whether a pid is alive.
pub fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|p| p > 0 && kill(Pid::from_raw(p), None).is_ok())
}

/// Watches an adopted worker (not our child: it cannot be waited for) until
/// its pid is gone, then removes its room.
pub async fn watch_adopted(master: Shared, entry: Arc<RoomEntry>) {
    let pid = entry.pid();
    while alive(pid) {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tracing::info!(room = %entry.name, pid, "adopted room worker exited");
    entry.set_state(RoomState::Closed);
    master.registry.remove(&entry);
}

/// Shuts every room down: ask, wait up to the grace period, then kill.
pub async fn shutdown_all(master: &Shared) {
    master.registry.set_accepting(false, true);
    let rooms = master.registry.all();
    for r in &rooms {
        shutdown_room(r, "server shutting down");
    }
    master.supervisors.close();
    let grace = master.cfg.shutdown_grace;
    let all_gone = async {
        master.supervisors.wait().await;
        while rooms
            .iter()
            .any(|r| alive(r.pid()) && r.adopted.load(Ordering::Acquire))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(grace, all_gone).await.is_err() {
        for r in &rooms {
            if alive(r.pid()) {
                tracing::warn!(room = %r.name, pid = r.pid(), "room did not stop in time; killing it");
                signal(r.pid(), Signal::SIGKILL);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), master.supervisors.wait()).await;
    }
}
