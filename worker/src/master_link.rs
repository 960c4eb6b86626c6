//! The worker's link to the master over the master's local socket: the
//! handshake and snapshot pull at start, heartbeats, stats, and orders from
//! the master. When the master goes away the room keeps serving and the link
//! keeps trying to reconnect; the worker's life is not tied to the master's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chat_shared::framing::{FrameError, FrameReader, FrameWriter};
use chat_shared::ipc::{Hello, HelloReply, MasterMsg, Snapshot, WorkerMsg};
use chat_shared::protocol::close;
use interprocess::local_socket::tokio::Stream;
use interprocess::local_socket::traits::tokio::Stream as _;
use interprocess::local_socket::{GenericFilePath, ToFsName};
use thiserror::Error;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::state::Worker;

/// Time allowed for the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval of stats reports.
const STATS_EVERY: Duration = Duration::from_millis(500);
/// Time a closing room waits for its last messages to be stored.
const FINAL_FLUSH: Duration = Duration::from_secs(2);
/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum LinkError {
    #[error("cannot reach the master at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("IPC: {0}")]
    Frame(#[from] FrameError),
    #[error("the master closed the connection")]
    Closed,
    #[error("the master refused this worker: {0}")]
    Refused(String),
    #[error("the handshake timed out")]
    Timeout,
}

/// An established link.
pub struct Link {
    pub reader: FrameReader<ReadHalf<Stream>>,
    pub writer: FrameWriter<WriteHalf<Stream>>,
}

/// Connects, says hello and receives the master's snapshot.
pub async fn connect(path: &Path, hello: &Hello) -> Result<(Link, Snapshot), LinkError> {
    let attempt = async {
        let name = path
            .to_fs_name::<GenericFilePath>()
            .map_err(|source| LinkError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let stream = Stream::connect(name)
            .await
            .map_err(|source| LinkError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let (r, w) = tokio::io::split(stream);
        let mut link = Link {
            reader: FrameReader::new(r),
            writer: FrameWriter::new(w),
        };
        link.writer.send(hello).await?;
        match link.reader.recv::<HelloReply>().await? {
            None => Err(LinkError::Closed),
            Some(HelloReply::Refused { reason }) => Err(LinkError::Refused(reason)),
            Some(HelloReply::Accepted(snapshot)) => {
                let mut snapshot = *snapshot;
                receive_chunks(&mut link, &mut snapshot).await?;
                Ok((link, snapshot))
            }
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .map_err(|_| LinkError::Timeout)?
}

/// Receives the frames that follow a snapshot (its reference data and
/// recent messages, in chunks) into it.
async fn receive_chunks(link: &mut Link, snapshot: &mut Snapshot) -> Result<(), LinkError> {
    for _ in 0..snapshot.follow {
        match link.reader.recv::<MasterMsg>().await? {
            None => return Err(LinkError::Closed),
            Some(MasterMsg::Recent(chunk)) => snapshot.recent.extend(chunk),
            Some(MasterMsg::ReferenceDelta(d)) => {
                if !chat_shared::chunks::apply(&mut snapshot.reference, &d) {
                    tracing::warn!(room = %snapshot.room.name, "a reference chunk out of order in the handshake");
                }
            }
            Some(other) => {
                tracing::debug!(room = %snapshot.room.name, msg = ?std::mem::discriminant(&other), "unexpected frame in the handshake")
            }
        }
    }
    Ok(())
}

/// Runs the link until the worker shuts down, reconnecting when it drops.
pub async fn run(
    worker: Arc<Worker>,
    path: PathBuf,
    first: Link,
    mut outgoing: mpsc::UnboundedReceiver<WorkerMsg>,
) {
    let mut link = Some(first);
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Some(l) = link.take() {
            backoff = Duration::from_millis(100);
            match session(&worker, l, &mut outgoing).await {
                Ok(()) => return,
                Err(e) => {
                    worker.room().unlink();
                    tracing::warn!(room = %worker.name, error = %e, "lost the master; serving on and reconnecting")
                }
            }
        }
        tokio::select! {
            _ = worker.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        let stats = worker.stats();
        let mut hello = Hello::new(worker.name.clone(), std::process::id(), worker.port);
        hello.listening = true;
        hello.room = Some(worker.room_config());
        hello.epoch = stats.epoch;
        hello.seq = stats.seq;
        match connect(&path, &hello).await {
            Ok((l, snapshot)) => {
                tracing::info!(room = %worker.name, "reconnected to the master");
                apply_snapshot(&worker, snapshot);
                link = Some(l);
            }
            Err(LinkError::Refused(reason)) => {
                tracing::warn!(room = %worker.name, %reason, "the master refused this room; ending it");
                worker.end(&reason);
                return;
            }
            Err(e) => tracing::debug!(room = %worker.name, error = %e, "master not reachable yet"),
        }
    }
}

/// One connected session; `Ok` when the worker shuts down.
async fn session(
    worker: &Arc<Worker>,
    mut link: Link,
    outgoing: &mut mpsc::UnboundedReceiver<WorkerMsg>,
) -> Result<(), LinkError> {
    let heartbeat = Duration::from_millis(worker.config().ipc_heartbeat_ms.max(50));
    let silence = heartbeat * 4;
    let mut stats = tokio::time::interval(STATS_EVERY);
    let mut last = chat_shared::ipc::RoomStats::default();
    let mut last_heard = tokio::time::Instant::now();
    let flush = worker.room().flush.clone();
    // A new link: whatever the master has not confirmed is sent again.
    worker.room().relink();
    flush.notify_one();
    loop {
        tokio::select! {
            _ = worker.shutdown.cancelled() => {
                while let Ok(m) = outgoing.try_recv() {
                    let _ = link.writer.send(&m).await;
                }
                let _ = tokio::time::timeout(FINAL_FLUSH, drain(worker, &mut link)).await;
                return Ok(());
            }
            _ = flush.notified() => send_batches(worker, &mut link).await?,
            m = outgoing.recv() => {
                if let Some(m) = m {
                    link.writer.send(&m).await?;
                }
            }
            _ = stats.tick() => {
                let now = worker.stats();
                if now != last {
                    link.writer.send(&WorkerMsg::Stats(now)).await?;
                    last = now;
                }
            }
            _ = tokio::time::sleep_until(last_heard + silence) => return Err(LinkError::Timeout),
            r = link.reader.recv::<MasterMsg>() => {
                let Some(msg) = r? else { return Err(LinkError::Closed) };
                last_heard = tokio::time::Instant::now();
                if let Some(reply) = handle(worker, msg) {
                    link.writer.send(&reply).await?;
                }
            }
        }
    }
}

/// At the end: sends what is left and waits until the master stored it.
async fn drain(worker: &Arc<Worker>, link: &mut Link) -> Result<(), LinkError> {
    send_batches(worker, link).await?;
    while worker.room().pending_writes() > 0 {
        let Some(msg) = link.reader.recv::<MasterMsg>().await? else {
            return Err(LinkError::Closed);
        };
        if let Some(reply) = handle(worker, msg) {
            link.writer.send(&reply).await?;
        }
        send_batches(worker, link).await?;
    }
    Ok(())
}

/// Sends the outbox's batches while its in-flight limit allows.
async fn send_batches(worker: &Arc<Worker>, link: &mut Link) -> Result<(), LinkError> {
    loop {
        let Some(batch) = worker.room().next_batch() else {
            return Ok(());
        };
        link.writer.send(&WorkerMsg::Messages(batch)).await?;
    }
}

fn handle(worker: &Arc<Worker>, msg: MasterMsg) -> Option<WorkerMsg> {
    match msg {
        MasterMsg::Ping { nonce } => return Some(WorkerMsg::Pong { nonce }),
        // A pushed snapshot carries no reference data (deltas do).
        MasterMsg::Snapshot(s) => {
            *worker.server.lock().unwrap_or_else(|p| p.into_inner()) = s.server;
        }
        MasterMsg::Notice { text } => crate::conn::notice(worker, text),
        MasterMsg::Kick { user, reason } => {
            worker.room().disconnect_user(&user, close::KICKED, &reason);
        }
        MasterMsg::Durable { seq } => worker.room().confirm(seq),
        MasterMsg::HistoryPage {
            id,
            messages,
            more,
            error,
        } => worker.room().history_answer(id, messages, more, error),
        MasterMsg::Reference(r) => worker.room().apply_reference(*r),
        MasterMsg::Recent(chunk) => worker.room().load_recent(chunk),
        MasterMsg::ReferenceDelta(d) => return worker.room().apply_reference_delta(&d),
        MasterMsg::Shutdown { reason, restart } => {
            let code = if restart {
                close::SERVICE_RESTART
            } else {
                close::GOING_AWAY
            };
            tracing::info!(room = %worker.name, %reason, "shutdown asked by the master");
            worker.end_with(&reason, code);
        }
    }
    None
}

fn apply_snapshot(worker: &Worker, snapshot: Snapshot) {
    // The room's own history position wins over the snapshot's: it is the
    // master that learns it from the room after a reconnect. The reference
    // data is the new master's, whatever its version.
    worker.room().apply_reference(snapshot.reference);
    *worker.server.lock().unwrap_or_else(|p| p.into_inner()) = snapshot.server;
}
