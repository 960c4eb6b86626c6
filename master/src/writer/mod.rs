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
//! - The loop holds [`Handles`]: the store, its health, this writer's own
//!   state and a way to reach rooms, not the master. Its counters are the
//!   `metrics` crate's (`chat_store_*`).

mod batch;
mod queue;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_shared::ipc::{MasterMsg, StoredMessage};
use metrics::{counter, gauge};
use tokio::sync::{mpsc, watch};

pub use batch::Refusal;
use batch::{Observer, Refused};
use queue::{Batch, FairQueue};

use crate::rooms::Rooms;
use crate::store::{MessageRecord, Store, StoreError, StoreHealth};

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

/// What the writer loop needs, and nothing else.
pub struct Handles {
    pub store: Arc<dyn Store>,
    /// Told when the store answers (readiness).
    pub health: Arc<StoreHealth>,
    /// This writer's queue count and watermarks.
    pub writer: Arc<Writer>,
    /// Where `Durable` and `Failed` go.
    pub rooms: Arc<dyn Rooms>,
}

/// Logs and health for the store calls of the writer.
struct Report<'a> {
    health: &'a StoreHealth,
    writer: &'a Writer,
}

impl Observer for Report<'_> {
    fn reached(&self) {
        self.health.reached();
    }

    fn transient(&self, e: &StoreError, first: bool) {
        if first {
            tracing::warn!(error = %e, pending = self.writer.pending(), "cannot store messages; retrying with backoff (rooms keep chatting, acks wait)");
        }
        counter!("chat_store_errors_total").increment(1);
    }

    fn recovered(&self) {
        tracing::info!(
            pending = self.writer.pending(),
            "the store is back; writing again"
        );
    }
}

/// What the writer loop works with: the store, the writer's own state, where
/// rooms' messages go, and who hears about store health.
struct Ctx<'a> {
    store: &'a dyn crate::store::Store,
    writer: &'a Writer,
    send: &'a (dyn Fn(&str, MasterMsg) + Sync),
    obs: &'a dyn Observer,
}

/// Writes until the channel closes (after shutdown, once rooms are gone).
pub async fn run(h: Handles, rx: mpsc::UnboundedReceiver<Write>) {
    let rooms = &*h.rooms;
    let send = |room: &str, msg: MasterMsg| {
        rooms.send(room, msg);
    };
    let report = Report {
        health: &h.health,
        writer: &h.writer,
    };
    let ctx = Ctx {
        store: &*h.store,
        writer: &h.writer,
        send: &send,
        obs: &report,
    };
    // Nothing is written before the store's unique indexes exist: a
    // conflicting message at a stored seq would otherwise be stored (and
    // acked) instead of refused. Writes wait in `rx` meanwhile.
    h.health.wait_initialized().await;
    drive(&ctx, rx).await;
}

async fn drive(ctx: &Ctx<'_>, mut rx: mpsc::UnboundedReceiver<Write>) {
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
            write_batch(ctx, batch).await;
        }
        gauge!("chat_store_pending_writes").set(ctx.writer.pending() as f64);
    }
}

fn enqueue(queue: &mut FairQueue, w: Write) {
    match w {
        Write::Messages { room, messages } => queue.push_messages(&room, messages),
        Write::Delete { room, seq } => queue.push_delete(&room, seq),
    }
}

async fn write_batch(ctx: &Ctx<'_>, batch: Batch) {
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
        let written = batch::write(ctx.store, &records, ctx.obs).await;
        if written.duplicates > 0 {
            tracing::debug!(
                duplicates = written.duplicates,
                "messages were already stored (a resend)"
            );
        }
        report_refused(ctx, written.refused);
        for (room, seq) in upto {
            (ctx.send)(&room, MasterMsg::Durable { seq });
            ctx.writer.advance(&room, seq);
        }
        ctx.writer.pending.fetch_sub(count, Ordering::AcqRel);
    }
    for (room, seq) in batch.deletes {
        mark_deleted(ctx, &room, seq).await;
    }
}

/// Tells each room which of its messages were refused (before the
/// `Durable` that moves its watermark past them), and logs and counts them.
fn report_refused(ctx: &Ctx<'_>, refused: Vec<Refused>) {
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
        (ctx.send)(
            &room,
            MasterMsg::Failed {
                seqs,
                code: why.code().to_owned(),
            },
        );
    }
}

/// Marks a message deleted, retrying while the store is down; a permanent
/// failure is logged (the message stays, undeleted, in the store).
async fn mark_deleted(ctx: &Ctx<'_>, room: &str, seq: u64) {
    let mut backoff = Duration::from_millis(50);
    let mut failing = false;
    loop {
        match ctx.store.mark_deleted(room, seq).await {
            Ok(_) => {
                ctx.obs.reached();
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    struct Quiet;
    impl Observer for Quiet {}

    fn msgs(seqs: std::ops::RangeInclusive<u64>, poison: Option<u64>) -> Vec<StoredMessage> {
        seqs.map(|seq| StoredMessage {
            epoch: 1,
            seq,
            user_id: "u".into(),
            name: "U".into(),
            text: if Some(seq) == poison {
                "poison".into()
            } else {
                format!("m{seq}")
            },
            ts: seq,
            deleted: false,
        })
        .collect()
    }

    /// Runs the writer loop until `busy` is handled up to `last`; returns
    /// what the rooms were sent, in order.
    async fn run_until(writes: Vec<Write>, busy: &str, last: u64) -> Vec<(String, MasterMsg)> {
        let (_dir, store) = batch::tests::flaky(0).await;
        let (writer, rx) = Writer::new();
        for w in writes {
            writer.push(w);
        }
        let sent: Arc<Mutex<Vec<(String, MasterMsg)>>> = Arc::default();
        let log = Arc::clone(&sent);
        let send = move |room: &str, msg: MasterMsg| {
            log.lock().expect("log").push((room.to_owned(), msg));
        };
        let ctx = Ctx {
            store: &*store,
            writer: &writer,
            send: &send,
            obs: &Quiet,
        };
        tokio::select! {
            _ = drive(&ctx, rx) => panic!("the writer stopped"),
            done = writer.wait_handled(busy, last, Duration::from_secs(60)) => assert!(done),
        }
        assert_eq!(writer.pending(), 0);
        sent.lock().expect("log").clone()
    }

    #[tokio::test]
    async fn a_quiet_room_is_acked_while_a_busy_room_is_backlogged() {
        let writes = vec![
            Write::Messages {
                room: "busy".into(),
                messages: msgs(1..=3000, None),
            },
            Write::Messages {
                room: "quiet".into(),
                messages: msgs(1..=1, None),
            },
        ];
        let sent = run_until(writes, "busy", 3000).await;
        let quiet = sent
            .iter()
            .position(|(r, m)| r == "quiet" && *m == MasterMsg::Durable { seq: 1 })
            .expect("the quiet room got its Durable");
        let busy_before: Vec<&MasterMsg> = sent[..quiet]
            .iter()
            .filter(|(r, _)| r == "busy")
            .map(|(_, m)| m)
            .collect();
        assert!(
            busy_before.len() <= 1,
            "the quiet room waited behind {} busy batches",
            busy_before.len()
        );
        assert_eq!(
            sent.last().map(|(r, m)| (r.as_str(), m)),
            Some(("busy", &MasterMsg::Durable { seq: 3000 }))
        );
    }

    #[tokio::test]
    async fn a_poison_message_is_reported_before_the_durable_that_passes_it() {
        let writes = vec![
            Write::Messages {
                room: "a".into(),
                messages: msgs(1..=50, Some(20)),
            },
            Write::Messages {
                room: "b".into(),
                messages: msgs(1..=5, None),
            },
        ];
        let sent = run_until(writes, "a", 50).await;
        let a: Vec<&MasterMsg> = sent
            .iter()
            .filter(|(r, _)| r == "a")
            .map(|(_, m)| m)
            .collect();
        assert_eq!(
            a,
            [
                &MasterMsg::Failed {
                    seqs: vec![20],
                    code: "not_stored".into()
                },
                &MasterMsg::Durable { seq: 50 }
            ]
        );
        assert!(sent.contains(&("b".to_owned(), MasterMsg::Durable { seq: 5 })));
    }
}
