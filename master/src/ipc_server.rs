//! The master's local socket: workers connect here, say hello, pull their
//! snapshot and then exchange heartbeats, stats and orders. A frame that does
//! not decode closes that one connection, with a log line, and nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chat_shared::chunks;
use chat_shared::framing::{FrameReader, FrameWriter};
use chat_shared::ipc::{Hello, HelloReply, MasterMsg, WorkerMsg};
use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::Listener as _;
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use tokio::sync::mpsc;

use crate::registry::{RoomEntry, RoomState};
use crate::state::Shared;
use crate::writer::{Write, stored_message};

const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const HISTORY_TIMEOUT: Duration = Duration::from_secs(5);
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Binds the socket (a stale file from a dead master is replaced: the run
/// directory lock proves no live master owns it).
pub fn bind(master: &Shared) -> std::io::Result<Listener> {
    let _ = std::fs::remove_file(&master.socket);
    let name = master.socket.as_path().to_fs_name::<GenericFilePath>()?;
    ListenerOptions::new().name(name).create_tokio()
}

/// Accepts workers until shutdown.
pub async fn serve(master: Shared, listener: Listener) {
    loop {
        let conn = tokio::select! {
            _ = master.api_stop.cancelled() => return,
            c = listener.accept() => c,
        };
        match conn {
            Ok(stream) => {
                let m = master.clone();
                tokio::spawn(async move { session(m, stream).await });
            }
            Err(e) => {
                tracing::warn!(error = %e, "IPC accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn session(master: Shared, stream: Stream) {
    let (r, w) = tokio::io::split(stream);
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, reader.recv_hello()).await {
        Ok(Ok(Some(h))) => h,
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
    let Some(entry) = find_room(&master, &hello) else {
        tracing::warn!(room = %hello.name, pid = hello.pid, "unknown room worker refused");
        let _ = writer
            .send(&HelloReply::Refused {
                reason: "this master does not know the room".into(),
            })
            .await;
        return;
    };
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
    let (tx, mut rx) = mpsc::unbounded_channel();
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
    let every = master.registry.ipc_heartbeat();
    let mut beat = tokio::time::interval(every);
    let mut nonce = 0u64;
    let mut last_heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = beat.tick() => {
                if last_heard.elapsed() > every * 4 {
                    tracing::warn!(%room, pid, "room worker stopped answering heartbeats; terminating it");
                    master.metrics.ipc_error();
                    crate::supervisor::terminate(pid, every * 2);
                    break;
                }
                nonce += 1;
                if writer.send(&MasterMsg::Ping { nonce }).await.is_err() { break; }
            }
            out = rx.recv() => {
                let Some(out) = out else { break };
                if let Err(e) = writer.send(&out).await {
                    tracing::warn!(%room, pid, error = %e, "IPC write failed");
                    break;
                }
            }
            msg = reader.recv::<WorkerMsg>() => {
                match msg {
                    Ok(Some(m)) => { last_heard = tokio::time::Instant::now(); on_message(&master, &entry, m); }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(%room, pid, error = %e, "bad IPC frame; closing that connection");
                        master.metrics.ipc_error();
                        break;
                    }
                }
            }
        }
    }
    entry.detach(id);
    tracing::debug!(%room, pid, "worker link closed");
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
    crate::supervisor::start(master, e.clone(), Some(hello.pid));
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

fn on_message(master: &Shared, entry: &RoomEntry, msg: WorkerMsg) {
    match msg {
        WorkerMsg::Listening { port } => {
            tracing::info!(room = %entry.name, port, pid = entry.pid(), "room ready");
            entry
                .ever_ready
                .store(true, std::sync::atomic::Ordering::Release);
            if entry.state() == RoomState::Starting {
                entry.set_state(RoomState::Ready);
            }
        }
        WorkerMsg::BindFailed { port, reason } => {
            tracing::warn!(room = %entry.name, port, %reason, "room could not bind its port");
            entry.bind_failed.store(true, Ordering::Release);
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
        WorkerMsg::Ended { reason } => {
            tracing::info!(room = %entry.name, %reason, "room ended by itself");
            entry.set_state(RoomState::Closing);
        }
    }
}
