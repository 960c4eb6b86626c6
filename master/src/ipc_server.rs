//! The master's local socket: workers connect here, say hello, pull their
//! snapshot and then exchange heartbeats, stats and orders. A frame that does
//! not decode closes that one connection, with a log line, and nothing else.
//! Each linked session reads and writes in separate tasks with heartbeats
//! first, so no transfer in either direction can wedge it.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_shared::chunks;
use chat_shared::framing::{
    FrameError, FrameReader, FrameWriter, VersionNotice, decode_hello, decode_hello_head,
};
use chat_shared::ipc::{Hello, HelloReply, MasterMsg, WorkerMsg, ipc_version};
use chat_shared::link::{self, LinkError, LinkOptions};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf, UCred};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::heartbeat::Heartbeat;
use crate::ipc_peer::PeerCheck;
use crate::registry::RoomEntry;
use crate::room_bans::Order;
use crate::state::Shared;
use crate::writer::{Write, stored_message};

const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const HISTORY_TIMEOUT: Duration = Duration::from_secs(5);
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Binds the socket, mode 0600 (a stale file from a dead master is replaced:
/// the run directory lock proves no live master owns it).
pub fn bind(master: &Shared) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(&master.socket);
    let listener = UnixListener::bind(&master.socket)?;
    // Owner only (the run directory is 0700 as well).
    std::fs::set_permissions(&master.socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accepts workers until shutdown.
pub async fn serve(master: Shared, listener: UnixListener) {
    let check = Arc::new(PeerCheck::new(&master.supervisor.worker_bin.path()));
    loop {
        let conn = tokio::select! {
            _ = master.api_stop.cancelled() => return,
            c = listener.accept() => c,
        };
        match conn {
            Ok((stream, _)) => {
                let m = master.clone();
                let check = check.clone();
                tokio::spawn(async move { session(m, &check, stream).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "IPC accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn session(master: Shared, check: &PeerCheck, stream: UnixStream) {
    let cred = match check.user(stream.peer_cred()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "IPC peer refused; closing that connection");
            master.metrics.ipc_error();
            return;
        }
    };
    let (r, w) = stream.into_split();
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.next_raw()).await {
        Ok(Ok(Some(buf))) => match decode_hello(&buf) {
            Ok(h) => h,
            Err(FrameError::Version { .. }) => {
                return other_version(&master, check, &cred, &buf, &mut writer).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "bad IPC hello; closing that connection");
                return;
            }
        },
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "bad IPC hello; closing that connection");
            return;
        }
        Err(_) => {
            tracing::warn!("IPC peer sent no hello in time; closing that connection");
            return;
        }
    };
    // Nothing (no snapshot, no secret, no adoption) for a process that is
    // not the worker it claims to be.
    if let Err(e) = check.worker(&cred, hello.pid) {
        tracing::warn!(room = %hello.name, pid = hello.pid, error = %e, "IPC peer is not a room worker; refused");
        master.metrics.ipc_error();
        let _ = writer
            .send(&HelloReply::Refused {
                reason: "not a room worker of this master".into(),
            })
            .await;
        return;
    }
    let Some(entry) = find_room(&master, &hello) else {
        tracing::warn!(room = %hello.name, pid = hello.pid, "unknown room worker refused");
        let _ = writer
            .send(&HelloReply::Refused {
                reason: "this master does not know the room".into(),
            })
            .await;
        return;
    };
    entry.incompatible.store(0, Ordering::Release);
    // The snapshot, then the large parts in chunks that each fit a frame.
    let reference = master.cache.reference();
    let mut follow = crate::cache::full_reference(&reference);
    follow.extend(
        chunks::messages(entry.take_recent(), chunks::CHUNK_BYTES)
            .into_iter()
            .map(MasterMsg::Recent),
    );
    let mut snapshot = master.snapshot(&entry);
    snapshot.follow = u32::try_from(follow.len()).unwrap_or(u32::MAX);
    if let Err(e) = writer.send(&HelloReply::Accepted(Box::new(snapshot))).await {
        tracing::warn!(room = %entry.name, error = %e, "cannot answer the hello");
        return;
    }
    for m in &follow {
        if let Err(e) = writer.send(m).await {
            tracing::warn!(room = %entry.name, error = %e, "cannot send the snapshot's chunks");
            return;
        }
    }
    let id = SESSIONS.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    entry.attach(id, tx);
    // A change installed before the attach was not pushed to this session.
    if master.cache.reference().version != reference.version {
        for m in crate::cache::full_reference(&master.cache.reference()) {
            entry.send(m);
        }
    }
    let room = entry.name.clone();
    let pid = hello.pid;
    tracing::debug!(%room, pid, "worker linked");
    linked(&master, &entry, pid, id, reader, writer, rx).await;
    entry.detach(id);
    master.users.session_ended(&room, id);
    tracing::debug!(%room, pid, "worker link closed");
}

/// A worker that speaks another IPC version: it is told ours (in the shape
/// every version keeps), and its room is listed as `incompatible` while it
/// lives, never started a second time. Logged at warn once per worker.
async fn other_version(
    master: &Shared,
    check: &PeerCheck,
    cred: &UCred,
    buf: &[u8],
    writer: &mut FrameWriter<OwnedWriteHalf>,
) {
    let head = match decode_hello_head(buf) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "bad IPC hello; closing that connection");
            return;
        }
    };
    let (room, pid) = (head.name.as_str(), head.pid);
    if let Err(e) = check.worker(cred, pid) {
        tracing::warn!(%room, pid, error = %e, "IPC peer is not a room worker; refused");
        master.metrics.ipc_error();
        return;
    }
    let _ = writer.send(&VersionNotice::ours()).await;
    let (worker_version, master_version) = (head.version, ipc_version());
    let entry = match master.registry.get(room) {
        Some(e) if e.pid() == pid => e,
        Some(e) => {
            tracing::warn!(%room, pid, running = e.pid(), worker_version, master_version,
                "a room worker of another IPC version claims a room this master runs");
            return;
        }
        None => match master.registry.adopt_incompatible(&head) {
            Some(e) => {
                crate::supervisor::start(&master.supervisor, e.clone(), Some(pid));
                e
            }
            None => {
                tracing::warn!(%room, pid, port = head.port, worker_version, master_version,
                    "a room worker of another IPC version cannot be listed (port out of range or taken)");
                return;
            }
        },
    };
    if entry
        .incompatible
        .swap(worker_version.max(1), Ordering::AcqRel)
        != worker_version.max(1)
    {
        tracing::warn!(%room, pid, worker_version, master_version,
            "room worker speaks another IPC version; it serves on unlinked, listed as incompatible until restarted on purpose");
    } else {
        tracing::debug!(%room, pid, worker_version, master_version, "incompatible room worker retried");
    }
}

/// A linked worker's session: heartbeats out, orders out, messages in,
/// each side of the socket served by its own task (see `chat_shared::link`).
async fn linked(
    master: &Shared,
    entry: &RoomEntry,
    pid: u32,
    session: u64,
    reader: FrameReader<OwnedReadHalf>,
    writer: FrameWriter<OwnedWriteHalf>,
    mut orders: mpsc::UnboundedReceiver<MasterMsg>,
) {
    let room = entry.name.as_str();
    let (busy_every, idle_every) = master.registry.ipc_heartbeats();
    let (tx, mut rx) = link::spawn::<_, _, WorkerMsg, MasterMsg>(
        reader,
        writer,
        LinkOptions::with_silence(busy_every * 4),
    );
    let mut beat = Heartbeat::new(busy_every, idle_every);
    let tick = tokio::time::sleep(beat.every());
    tokio::pin!(tick);
    let mut nonce = 0u64;
    // An order taken from the room's channel, waiting for room in the queue.
    let mut next: Option<MasterMsg> = None;
    loop {
        tokio::select! {
            _ = &mut tick => {
                nonce += 1;
                // Dropped when heartbeats pile up: the peer is then slow to
                // read, and the silence bound decides.
                let _ = tx.send_priority(&MasterMsg::Ping { nonce });
                master.metrics.ipc_heartbeat();
                let every = beat.sent();
                rx.set_silence(every * 4);
                tick.as_mut().reset(tokio::time::Instant::now() + every);
            }
            out = orders.recv(), if next.is_none() => match out {
                Some(m) => next = Some(m),
                None => break,
            },
            permit = tx.reserve(), if next.is_some() => {
                let sent = permit.and_then(|p| match next.take() {
                    Some(m) => p.send(&m),
                    None => Ok(()),
                });
                if let Err(e) = sent {
                    tracing::warn!(%room, pid, error = %e, "IPC write failed");
                    break;
                }
            }
            msg = rx.recv() => match msg {
                Ok(m) => {
                    if matches!(m, WorkerMsg::Pong { .. }) {
                        beat.answered();
                    } else if beat.heard() {
                        // Back to the busy rhythm: the next heartbeat comes
                        // within one busy interval, and so does the bound.
                        rx.set_silence(busy_every * 4);
                        let soon = tokio::time::Instant::now() + busy_every;
                        let at = tick.deadline().min(soon);
                        tick.as_mut().reset(at);
                    }
                    on_message(master, entry, session, m);
                }
                Err(LinkError::Closed) => break,
                Err(LinkError::Silent(d)) => {
                    tracing::warn!(%room, pid, silent_ms = d.as_millis() as u64, "room worker stopped answering heartbeats; terminating it");
                    master.metrics.ipc_error();
                    crate::supervisor::terminate(pid, busy_every * 2);
                    break;
                }
                Err(e) => {
                    tracing::warn!(%room, pid, error = %e, "bad IPC frame; closing that connection");
                    master.metrics.ipc_error();
                    break;
                }
            },
        }
    }
}

/// The room a hello belongs to: the one being started for it, or a running
/// worker from before a master restart (adopted).
fn find_room(master: &Shared, hello: &Hello) -> Option<Arc<RoomEntry>> {
    if let Some(e) = master.registry.get(&hello.name) {
        let pid = e.pid();
        if pid == 0 || pid == hello.pid {
            e.pid.store(hello.pid, Ordering::Release);
            return Some(e);
        }
        return None;
    }
    if !hello.listening {
        return None;
    }
    let e = master.registry.adopt(hello)?;
    tracing::info!(room = %hello.name, pid = hello.pid, port = hello.port, "adopted a running room");
    // Its messages up to hello.seq may or may not be stored; the room resends
    // what was not confirmed, and a restart continues after hello.seq.
    e.stats_seq_hint(hello.epoch, hello.seq);
    crate::supervisor::start(&master.supervisor, e.clone(), Some(hello.pid));
    Some(e)
}

/// Serves a page of history from the store to a room.
async fn answer_history(master: Shared, room: String, id: u64, before: u64, limit: u32) {
    let limit = limit.clamp(1, 100);
    let reply =
        match tokio::time::timeout(HISTORY_TIMEOUT, master.store.history(&room, before, limit))
            .await
        {
            Ok(Ok(page)) => {
                let more = page.len() == limit as usize && page.first().is_some_and(|m| m.seq > 1);
                MasterMsg::HistoryPage {
                    id,
                    messages: page.into_iter().map(stored_message).collect(),
                    more,
                    error: None,
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(%room, error = %e, "history query failed");
                history_error(id, "the store failed")
            }
            Err(_) => history_error(id, "the store did not answer in time"),
        };
    if let Some(entry) = master.registry.get(&room) {
        entry.send(reply);
    }
}

fn history_error(id: u64, e: &str) -> MasterMsg {
    MasterMsg::HistoryPage {
        id,
        messages: Vec::new(),
        more: false,
        error: Some(e.to_owned()),
    }
}

fn on_message(master: &Shared, entry: &RoomEntry, session: u64, msg: WorkerMsg) {
    match msg {
        WorkerMsg::Listening { port } => {
            tracing::info!(room = %entry.name, port, pid = entry.pid(), "room ready");
            entry.life.listening(entry.pid(), port);
        }
        WorkerMsg::BindFailed { port, reason } => {
            tracing::warn!(room = %entry.name, port, %reason, "room could not bind its port");
            // A late notice of an earlier worker (its exit code already moved
            // the room to another port) must not touch the current one.
            if port == entry.port() {
                entry.life.port_taken();
            }
        }
        WorkerMsg::Pong { .. } => {}
        WorkerMsg::Stats(s) => {
            let old = entry.stats();
            // A restarted worker counts from zero again.
            let (din, dout) =
                if s.messages_in >= old.messages_in && s.messages_out >= old.messages_out {
                    (
                        s.messages_in - old.messages_in,
                        s.messages_out - old.messages_out,
                    )
                } else {
                    (s.messages_in, s.messages_out)
                };
            master.metrics.messages(din, dout);
            master.metrics.fanout(&s.fanout.since(&old.fanout));
            entry.set_stats(s);
        }
        WorkerMsg::Messages(messages) => {
            if let Some(last) = messages.last() {
                entry.received_seq.fetch_max(last.seq, Ordering::AcqRel);
            }
            master.writer.push(Write::Messages {
                room: entry.name.clone(),
                messages,
            });
        }
        WorkerMsg::Deleted { seq } => master.writer.push(Write::Delete {
            room: entry.name.clone(),
            seq,
        }),
        WorkerMsg::HistoryQuery { id, before, limit } => {
            let m = master.clone();
            let room = entry.name.clone();
            tokio::spawn(async move { answer_history(m, room, id, before, limit).await });
        }
        WorkerMsg::ReferenceWanted { have } => {
            tracing::info!(room = %entry.name, have, "room asked for the full reference data");
            for m in crate::cache::full_reference(&master.cache.reference()) {
                entry.send(m);
            }
        }
        WorkerMsg::UserJoined { user } => {
            master.users.joined(&entry.name, session, &user);
        }
        WorkerMsg::UserLeft { user } => {
            master.users.left(&entry.name, &user);
        }
        WorkerMsg::Users { reset, users } => {
            master.users.listed(&entry.name, session, reset, &users);
        }
        WorkerMsg::Watch { conn, users } => {
            let users: Vec<String> = users
                .into_iter()
                .take(chat_shared::direct::MAX_WATCH)
                .collect();
            master.users.watch(&entry.name, conn, &users);
        }
        WorkerMsg::Direct {
            id,
            user,
            conn,
            request,
        } => {
            let asker = crate::users::Asker {
                room: entry.name.clone(),
                user,
                conn,
            };
            // Taken here, in the order the room sent its frames.
            let turn = match &request {
                chat_shared::direct::DirectRequest::Send { to, .. } => Some(
                    master
                        .users
                        .turns
                        .take(&chat_shared::direct::conversation_id(&asker.user, to)),
                ),
                _ => None,
            };
            let m = master.clone();
            tokio::spawn(crate::users::handle(m, asker, id, request, turn));
        }
        WorkerMsg::Ended { reason } => {
            tracing::info!(room = %entry.name, %reason, "room ended by itself");
            entry.life.stop();
        }
        WorkerMsg::Ban { user, reason } => master.room_bans.push(Order::Ban {
            room: entry.name.clone(),
            user,
            reason,
        }),
        WorkerMsg::Unban { user } => master.room_bans.push(Order::Unban {
            room: entry.name.clone(),
            user,
        }),
    }
}
