//! The room catalog in the store: which rooms exist, on which port, with
//! which settings. A master started after a crash respawns the catalog's
//! rooms that have no live worker (running workers are adopted first).
//!
//! Owners: hosts that share a store give each room name one owner. A host
//! claims a name (`owners`, unique on the name) before it starts the room
//! and renews its lease (`--owner-lease`, 30 s) every third of it; a create
//! on another host answers where the room is. When the owner dies and its
//! lease ends, another host may claim the name: the room's history goes on
//! there in a new epoch, after every seq the old owner could have used.
//!
//! Its tasks hold the supervisors' handle (`Sup`: registry, store, writer,
//! owners, task tracker, shutdown), not the master; the supervisor never
//! calls the catalog (it follows the lifecycle events).

use std::time::Duration;

use chat_shared::ipc::MasterMsg;
use chat_shared::settings::RoomSettings;

use crate::events::{EventKind, Subscription};
use crate::lifecycle::Lifecycle;
use crate::registry::RoomEntry;
use crate::store::{Claim, RoomRecord};
use crate::supervisor::Sup;

/// Time given to running workers to reconnect before the catalog is
/// reconciled (their reconnection backoff tops out at 2 s).
const ADOPTION_WINDOW: Duration = Duration::from_secs(3);

/// This host's prefix in the catalog: several hosts may share one store,
/// and each respawns only its own rooms. Room names never contain `/`.
fn host_key(sup: &Sup) -> String {
    sup.owners.key().to_owned()
}

fn catalog_name(sup: &Sup, room: &str) -> String {
    format!("{}/{room}", host_key(sup))
}

/// Records a room in the catalog (in the background; failures are logged).
pub fn record(sup: &Sup, entry: &RoomEntry, status: &str) {
    let now = crate::registry::now_ms();
    let rec = RoomRecord {
        name: catalog_name(sup, &entry.name),
        port: entry.port(),
        settings: serde_json::to_value(&entry.settings).unwrap_or_default(),
        status: status.to_owned(),
        epoch: entry
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(0, |(e, _)| e),
        created_ms: entry.created_unix_ms,
        updated_ms: now,
    };
    let m = sup.clone();
    sup.tasks.spawn(async move {
        match m.store.upsert_room(&rec).await {
            Ok(()) => {
                tracing::info!(room = %rec.name, status = %rec.status, "room recorded in the catalog")
            }
            Err(e) => {
                tracing::warn!(room = %rec.name, error = %e, "cannot record the room in the catalog")
            }
        }
    });
}

/// Removes a room that ended on purpose from the catalog, and gives up
/// this host's claim on its name.
pub fn forget(sup: &Sup, name: &str) {
    sup.writer.forget(name);
    let m = sup.clone();
    let room = name.to_owned();
    let name = catalog_name(sup, name);
    sup.tasks.spawn(async move {
        if let Err(e) = m.store.remove_room(&name).await {
            tracing::warn!(room = %name, error = %e, "cannot remove the room from the catalog");
        }
        m.owners.release(&room).await;
    });
}

/// Keeps the catalog in step with the rooms' lifecycle events: a room is
/// recorded once its first worker listens, and forgotten when it ends on
/// purpose or fails (only rooms that died with their master are respawned).
pub async fn follow(sup: Sup, mut events: Subscription) {
    while let Some(e) = events.next().await {
        match e.kind {
            EventKind::Ready { first: true, .. } => record(&sup, &e.room, "ready"),
            EventKind::Stopped | EventKind::Failed { .. } => forget(&sup, &e.room.name),
            _ => {}
        }
    }
}

/// Renews this host's claims every third of the lease. A room whose name
/// another host now holds (this host was cut off past its lease) is shut
/// down: two hosts never serve one room for longer than that.
pub async fn renew_leases(sup: Sup) {
    let owners = &sup.owners;
    if !owners.shared() {
        return;
    }
    let every = (owners.lease() / 3).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = sup.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for entry in sup.registry.all() {
            if !matches!(
                entry.state(),
                Lifecycle::Running { .. } | Lifecycle::Starting
            ) || entry.port() == 0
            {
                continue;
            }
            match owners.claim(&entry).await {
                Ok(Claim::Claimed { .. }) => {}
                Ok(Claim::Held(o)) => {
                    tracing::error!(room = %entry.name, owner = %o.owner, "another host owns this room now; shutting it down here");
                    metrics::counter!("chat_room_ownership_lost_total").increment(1);
                    entry.send(MasterMsg::Shutdown {
                        reason: format!("this room moved to {}", o.host),
                        restart: false,
                    });
                }
                Err(e) => {
                    tracing::warn!(room = %entry.name, error = %e, "cannot renew the room's lease");
                }
            }
        }
    }
}

/// Whether `port` answers `GET /` with the room's name, as a room worker
/// does (bounded in time; anything else is "no").
async fn serves_room(sup: &Sup, port: u16, name: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ip = match sup.room_bind {
        std::net::IpAddr::V4(v) if v.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(v) if v.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    let probe = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        s.write_all(b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.take(4096).read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some(head.starts_with("HTTP/1.") && head.contains(" 200 ") && body.trim() == name)
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Bound of the check that a catalog room's port is still served.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Respawns catalog rooms that no running worker announced.
pub async fn reconcile(sup: Sup) {
    tokio::select! {
        _ = sup.shutdown.cancelled() => return,
        _ = tokio::time::sleep(ADOPTION_WINDOW) => {}
    }
    let rooms = match sup.store.rooms().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the room catalog; rooms from before are not respawned");
            return;
        }
    };
    let mine = format!("{}/", host_key(&sup));
    for mut rec in rooms {
        let Some(name) = rec.name.strip_prefix(&mine) else {
            continue; // another host's room
        };
        rec.name = name.to_owned();
        if sup.registry.get(&rec.name).is_some() {
            continue;
        }
        // A worker that did not announce itself may still serve the room
        // (one that cannot even say hello): never start a second one.
        if serves_room(&sup, rec.port, &rec.name).await {
            tracing::warn!(room = %rec.name, port = rec.port, "a process still serves this catalog room on its port without a link to this master; not respawning it");
            continue;
        }
        let settings: RoomSettings =
            serde_json::from_value(rec.settings.clone()).unwrap_or_default();
        match sup
            .registry
            .reserve_at(&rec.name, settings, rec.port, rec.created_ms)
        {
            Some(entry) => match sup.owners.claim(&entry).await {
                Ok(Claim::Claimed { .. }) => {
                    tracing::info!(room = %rec.name, port = entry.port(), "respawning a room from the catalog");
                    crate::supervisor::start(&sup, entry, None);
                }
                Ok(Claim::Held(o)) => {
                    tracing::warn!(room = %rec.name, owner = %o.owner, "not respawning a room another host owns now");
                    sup.registry.remove(&entry);
                    forget_entry(&sup, &rec.name);
                }
                Err(e) => {
                    tracing::warn!(room = %rec.name, error = %e, "cannot claim the room's name; not respawning it");
                    sup.registry.remove(&entry);
                }
            },
            None => {
                tracing::warn!(room = %rec.name, "cannot respawn a room from the catalog (no capacity)")
            }
        }
    }
    tracing::info!("room catalog reconciled");
}

/// Removes another host's room from this host's catalog (its claim stays).
fn forget_entry(sup: &Sup, room: &str) {
    let m = sup.clone();
    let name = catalog_name(sup, room);
    sup.tasks.spawn(async move {
        if let Err(e) = m.store.remove_room(&name).await {
            tracing::warn!(room = %name, error = %e, "cannot remove the room from the catalog");
        }
    });
}
