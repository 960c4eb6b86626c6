//! The history writer: rooms hand their messages to the master in batches;
//! this task writes them to the store and then tells each room how far its
//! messages are handled, which is when the room acknowledges them. Nothing
//! is acknowledged before it is stored; nothing received is dropped (the
//! rooms bound how much can wait).
//!
//! - Rooms are served fairly (`queue.rs`): one store round takes at most
//!   [`PER_ROOM`] messages of each room, so a busy room's backlog never
//!   holds a quiet room's acks behind it.
//! - Transient store failures are retried with backoff; a permanent one
//!   fails only the records that cause it (`batch.rs`): their rooms get
//!   `MasterMsg::Failed` and answer the senders with an error instead of
//!   an ack. So does a conflict (a different message stored at the seq).
//! - Each room has a durable watermark (a `watch`): everything it sent up to
//!   it is handled. A room restarting after a crash waits on its own.

mod batch;
mod queue;

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chat_shared::ipc::{MasterMsg, StoredMessage};
use metrics::{counter, gauge};
use tokio::sync::{mpsc, watch};

pub use batch::Refusal;
use batch::{Observer, Refused};
use queue::{Batch, FairQueue};

use crate::state::Shared;
use crate::store::{MessageRecord, StoreError};

/// Most messages written in one store call.
const MAX_BATCH: usize = 1000;
/// Most messages of one room in one store call.
const PER_ROOM: usize = 200;

/// One write.
#[derive(Debug)]
pub enum Write {
    Messages {
        room: String,
        messages: Vec<StoredMessage>,
    },
    Delete {
        room: String,
        seq: u64,
    },
}

/// The sending side, shared by the IPC sessions.
pub struct Writer {
    tx: mpsc::UnboundedSender<Write>,
    pending: AtomicUsize,
    /// Per room: the highest seq handled (stored, or refused and reported).
    watermarks: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Writer {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Write>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                pending: AtomicUsize::new(0),
                watermarks: Mutex::new(HashMap::new()),
            },
            rx,
        )
    }

    pub fn push(&self, w: Write) {
        if let Write::Messages { messages, .. } = &w {
            self.pending.fetch_add(messages.len(), Ordering::AcqRel);
        }
        let _ = self.tx.send(w);
    }

    /// Messages received and not yet stored.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    fn watermark(&self, room: &str) -> watch::Receiver<u64> {
        let mut map = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(room.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    fn advance(&self, room: &str, seq: u64) {
        let mut map = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(room.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .send_if_modified(|w| {
                let moved = seq > *w;
                *w = (*w).max(seq);
                moved
            });
    }

    /// Waits until every message of `room` up to `seq` that reached the
    /// writer is handled, at most `timeout`; `false` on timeout.
    pub async fn wait_handled(&self, room: &str, seq: u64, timeout: Duration) -> bool {
        let mut rx = self.watermark(room);
        tokio::time::timeout(timeout, rx.wait_for(|w| *w >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A room ended on purpose: its watermark goes.
    pub fn forget(&self, room: &str) {
        let mut map = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(room);
    }
}

/// A stored record as rooms receive it.
pub fn stored_message(m: MessageRecord) -> StoredMessage {
    StoredMessage {
        epoch: m.epoch,
        seq: m.seq,
        user_id: m.user_id,
        name: m.name,
        text: m.text,
        ts: m.ts,
        deleted: m.deleted,
    }
}

fn record(room: &str, m: StoredMessage) -> MessageRecord {
    MessageRecord {
        room: room.to_owned(),
        epoch: m.epoch,
        seq: m.seq,
        user_id: m.user_id,
        name: m.name,
        text: m.text,
        ts: m.ts,
        deleted: m.deleted,
    }
}

/// Logs and health for the store calls of the writer.
struct Report<'a> {
    master: &'a Shared,
}

impl Observer for Report<'_> {
    fn reached(&self) {
        self.master.store_reached();
    }

    fn transient(&self, e: &StoreError, first: bool) {
        if first {
            tracing::warn!(error = %e, pending = self.master.writer.pending(), "cannot store messages; retrying with backoff (rooms keep chatting, acks wait)");
        }
        counter!("chat_store_errors_total").increment(1);
    }

    fn recovered(&self) {
        tracing::info!(
            pending = self.master.writer.pending(),
            "the store is back; writing again"
        );
    }
}

/// Writes until the channel closes (after shutdown, once rooms are gone).
pub async fn run(master: Shared, mut rx: mpsc::UnboundedReceiver<Write>) {
    let mut queue = FairQueue::default();
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(w) => enqueue(&mut queue, w),
                None => return,
            }
        }
        while let Ok(w) = rx.try_recv() {
            enqueue(&mut queue, w);
        }
        let batch = queue.take(MAX_BATCH, PER_ROOM);
        if !batch.is_empty() {
            write_batch(&master, batch).await;
        }
        gauge!("chat_store_pending_writes").set(master.writer.pending() as f64);
    }
}

fn enqueue(queue: &mut FairQueue, w: Write) {
    match w {
        Write::Messages { room, messages } => queue.push_messages(&room, messages),
        Write::Delete { room, seq } => queue.push_delete(&room, seq),
    }
}

async fn write_batch(master: &Shared, batch: Batch) {
    let count = batch.message_count();
    let mut upto: Vec<(String, u64)> = Vec::with_capacity(batch.messages.len());
    let mut records = Vec::with_capacity(count);
    for (room, messages) in batch.messages {
        if let Some(last) = messages.iter().map(|m| m.seq).max() {
            upto.push((room.clone(), last));
        }
        records.extend(messages.into_iter().map(|m| record(&room, m)));
    }
    if !records.is_empty() {
        let written = batch::write(&*master.store, &records, &Report { master }).await;
        if written.duplicates > 0 {
            tracing::debug!(
                duplicates = written.duplicates,
                "messages were already stored (a resend)"
            );
        }
        report_refused(master, written.refused);
        for (room, seq) in upto {
            if let Some(entry) = master.registry.get(&room) {
                entry.send(MasterMsg::Durable { seq });
            }
            master.writer.advance(&room, seq);
        }
        master.writer.pending.fetch_sub(count, Ordering::AcqRel);
    }
    for (room, seq) in batch.deletes {
        mark_deleted(master, &room, seq).await;
    }
}

/// Tells each room which of its messages were refused (before the
/// `Durable` that moves its watermark past them), and logs and counts them.
fn report_refused(master: &Shared, refused: Vec<Refused>) {
    let mut by_room: HashMap<(String, Refusal), Vec<u64>> = HashMap::new();
    for r in refused {
        match r.why {
            Refusal::NotStored => {
                tracing::error!(room = %r.room, seq = r.seq, reason = %r.reason, "the store refused a message; its sender gets an error instead of an ack");
                counter!("chat_store_failed_messages_total").increment(1);
            }
            Refusal::Conflict => {
                tracing::error!(room = %r.room, seq = r.seq, "a different message is already stored at this seq (another host serves this room?); its sender gets a conflict error");
                counter!("chat_store_conflicts_total").increment(1);
            }
        }
        by_room.entry((r.room, r.why)).or_default().push(r.seq);
    }
    for ((room, why), mut seqs) in by_room {
        seqs.sort_unstable();
        seqs.dedup();
        if let Some(entry) = master.registry.get(&room) {
            entry.send(MasterMsg::Failed {
                seqs,
                code: why.code().to_owned(),
            });
        }
    }
}

/// Marks a message deleted, retrying while the store is down; a permanent
/// failure is logged (the message stays, undeleted, in the store).
async fn mark_deleted(master: &Shared, room: &str, seq: u64) {
    let mut backoff = Duration::from_millis(50);
    let mut failing = false;
    loop {
        match master.store.mark_deleted(room, seq).await {
            Ok(_) => {
                master.store_reached();
                return;
            }
            Err(e) if e.is_transient() => {
                if !failing {
                    tracing::warn!(room, seq, error = %e, "cannot mark a message deleted; retrying with backoff");
                    failing = true;
                }
                counter!("chat_store_errors_total").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(room, seq, error = %e, "cannot mark a message deleted");
                return;
            }
        }
    }
}
