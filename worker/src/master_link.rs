//! The worker's link to the master over the master's local socket: the
//! handshake and snapshot pull at start, heartbeats, stats, and orders from
//! the master. When the master goes away the room keeps serving and the link
//! keeps trying to reconnect; the worker's life is not tied to the master's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chat_shared::framing::{FrameError, FrameReader, FrameWriter, decode, decode_version_notice};
use chat_shared::ipc::{Hello, HelloReply, MasterMsg, Snapshot, WorkerMsg};
use chat_shared::link::{self, LinkOptions, LinkRx, LinkTx};
use chat_shared::protocol::close;
use chat_shared::reference::ReferenceIndex;
use thiserror::Error;
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::notices::Notices;
use crate::state::Worker;

/// Time allowed for the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Interval of stats reports.
const STATS_EVERY: Duration = Duration::from_millis(500);
/// Longest gap between two stats checks: a check that finds nothing new
/// doubles the gap up to this, and a join, a leave, a client frame or a
/// store confirmation (the room's `stats_nudge`) brings it back to
/// [`STATS_EVERY`]. An idle room wakes for stats once in this long: a
/// backstop for the few changes that come without a nudge (a notice from
/// the operators counts a frame out), as every other change nudges.
const STATS_IDLE: Duration = Duration::from_secs(60);
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
    #[error("{0}")]
    Link(#[from] link::LinkError),
    #[error("the master speaks IPC version {master}, this worker {ours}")]
    Version { master: u32, ours: u32 },
}

/// A connection whose handshake is done.
pub struct Link {
    pub reader: FrameReader<OwnedReadHalf>,
    pub writer: FrameWriter<OwnedWriteHalf>,
}

/// Connects, says hello and receives the master's snapshot.
pub async fn connect(path: &Path, hello: &Hello) -> Result<(Link, Snapshot), LinkError> {
    let attempt = async {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| LinkError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let (r, w) = stream.into_split();
        let mut link = Link {
            reader: FrameReader::new(r),
            writer: FrameWriter::new(w),
        };
        link.writer.send(hello).await?;
        let Some(buf) = link.reader.next_raw().await? else {
            return Err(LinkError::Closed);
        };
        match decode::<HelloReply>(&buf) {
            Ok(HelloReply::Refused { reason }) => Err(LinkError::Refused(reason)),
            Ok(HelloReply::Accepted(snapshot)) => {
                let mut snapshot = *snapshot;
                receive_chunks(&mut link, &mut snapshot).await?;
                Ok((link, snapshot))
            }
            Err(e) => match decode_version_notice(&buf) {
                Some(n) => Err(LinkError::Version {
                    master: n.version,
                    ours: hello.version,
                }),
                None => Err(e.into()),
            },
        }
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .map_err(|_| LinkError::Timeout)?
}

/// Receives the frames that follow a snapshot (its reference data and
/// recent messages, in chunks) into it.
async fn receive_chunks(link: &mut Link, snapshot: &mut Snapshot) -> Result<(), LinkError> {
    let mut reference = ReferenceIndex::from_reference(std::mem::take(&mut snapshot.reference));
    for _ in 0..snapshot.follow {
        match link.reader.recv::<MasterMsg>().await? {
            None => return Err(LinkError::Closed),
            Some(MasterMsg::Recent(chunk)) => snapshot.recent.extend(chunk),
            Some(MasterMsg::ReferenceDelta(d)) => {
                if !reference.apply(&d) {
                    tracing::warn!(room = %snapshot.room.name, "a reference chunk out of order in the handshake");
                }
            }
            Some(other) => {
                tracing::debug!(room = %snapshot.room.name, msg = ?std::mem::discriminant(&other), "unexpected frame in the handshake")
            }
        }
    }
    snapshot.reference = reference.to_reference();
    Ok(())
}

/// Runs the link until the worker shuts down, reconnecting when it drops.
pub async fn run(worker: Arc<Worker>, path: PathBuf, first: Link) {
    let outgoing = worker.to_master.clone();
    let mut link = Some(first);
    let mut backoff = Duration::from_millis(100);
    // A master of another version is reported once, then retried quietly.
    let mut version_told = false;
    loop {
        if let Some(l) = link.take() {
            backoff = Duration::from_millis(100);
            match session(&worker, l, &outgoing).await {
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
                version_told = false;
                tracing::info!(room = %worker.name, "reconnected to the master");
                apply_snapshot(&worker, snapshot);
                link = Some(l);
            }
            Err(LinkError::Refused(reason)) => {
                tracing::warn!(room = %worker.name, %reason, "the master refused this room; ending it");
                worker.end(&reason);
                return;
            }
            Err(LinkError::Version { master, ours }) if !version_told => {
                version_told = true;
                tracing::warn!(room = %worker.name, pid = std::process::id(), master_version = master, worker_version = ours,
                    "the master speaks another IPC version; serving on unlinked until restarted on purpose");
            }
            Err(e) => tracing::debug!(room = %worker.name, error = %e, "master not reachable yet"),
        }
    }
}

/// One connected session; `Ok` when the worker shuts down. The socket is
/// read and written by tasks of its own (see `chat_shared::link`): this loop
/// never waits on a write while it could receive.
async fn session(worker: &Arc<Worker>, link: Link, outgoing: &Notices) -> Result<(), LinkError> {
    let heartbeat = Duration::from_millis(worker.config().ipc_heartbeat_ms.max(50));
    let (tx, mut rx) = link::spawn::<_, _, MasterMsg, WorkerMsg>(
        link.reader,
        link.writer,
        LinkOptions::with_silence(heartbeat * 4),
    );
    let nudge = worker.room().stats_nudge.clone();
    let mut stats_every = STATS_EVERY;
    let stats = tokio::time::sleep(STATS_EVERY);
    tokio::pin!(stats);
    let mut last = chat_shared::ipc::RoomStats::default();
    let flush = worker.room().flush.clone();
    // A new link: whatever the master has not confirmed is sent again.
    worker.room().relink();
    let mut want_flush = true;
    // A message waiting for room in the link's queue.
    let mut pending: Option<WorkerMsg> = None;
    loop {
        tokio::select! {
            _ = worker.shutdown.cancelled() => break,
            _ = flush.notified(), if !want_flush => want_flush = true,
            m = outgoing.recv(), if pending.is_none() => pending = Some(m),
            _ = &mut stats, if pending.is_none() => {
                let now = worker.stats();
                if now != last {
                    pending = Some(WorkerMsg::Stats(now));
                    last = now;
                    stats_every = STATS_EVERY;
                } else {
                    stats_every = (stats_every * 2).min(STATS_IDLE);
                }
                stats.as_mut().reset(tokio::time::Instant::now() + stats_every);
            }
            _ = nudge.notified(), if stats_every > STATS_EVERY => {
                // Something changed after a quiet spell.
                stats_every = STATS_EVERY;
                let soon = tokio::time::Instant::now() + STATS_EVERY;
                let at = stats.deadline().min(soon);
                stats.as_mut().reset(at);
            }
            permit = tx.reserve(), if pending.is_some() || want_flush => {
                let permit = permit?;
                match pending.take() {
                    Some(m) => permit.send(&m)?,
                    // Until the outbox has nothing more to hand out (empty,
                    // or its bytes in flight are at the limit: the next
                    // `Durable` wakes the flush again).
                    None => match worker.room().next_batch() {
                        Some(batch) => permit.send(&WorkerMsg::Messages(batch))?,
                        None => want_flush = false,
                    },
                }
            }
            r = rx.recv() => {
                if let Some(reply) = handle(worker, r?) {
                    // A pong: ahead of any queued frame, never waiting.
                    let _ = tx.send_priority(&reply);
                }
            }
        }
    }
    let last_words = async {
        if let Some(m) = pending.take() {
            tx.send(&m).await?;
        }
        while let Some(m) = outgoing.try_recv() {
            tx.send(&m).await?;
        }
        drain(worker, &tx, &mut rx).await
    };
    let _ = tokio::time::timeout(FINAL_FLUSH, last_words).await;
    tx.finish(FINAL_FLUSH).await;
    Ok(())
}

/// At the end: sends what is left and waits until the master stored it.
async fn drain(
    worker: &Arc<Worker>,
    tx: &LinkTx<WorkerMsg>,
    rx: &mut LinkRx<MasterMsg>,
) -> Result<(), LinkError> {
    send_batches(worker, tx).await?;
    while worker.room().pending_writes() > 0 {
        if let Some(reply) = handle(worker, rx.recv().await?) {
            let _ = tx.send_priority(&reply);
        }
        send_batches(worker, tx).await?;
    }
    Ok(())
}

/// Sends the outbox's batches while its in-flight limit allows.
async fn send_batches(worker: &Arc<Worker>, tx: &LinkTx<WorkerMsg>) -> Result<(), LinkError> {
    loop {
        let Some(batch) = worker.room().next_batch() else {
            return Ok(());
        };
        tx.send(&WorkerMsg::Messages(batch)).await?;
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
        MasterMsg::Failed { seqs, code } => worker.room().fail(&seqs, &code),
        MasterMsg::Recent(chunk) => worker.room().load_recent(chunk),
        MasterMsg::ReferenceDelta(d) => return worker.room().apply_reference_delta(&d),
        MasterMsg::DirectReply { id, reply } => worker.room().direct_reply(id, reply),
        MasterMsg::Deliver {
            users,
            except,
            event,
        } => worker.room().deliver(&users, except, event),
        MasterMsg::Presence { conns, states } => worker.room().presence(&conns, &states),
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
