//! The history writer: rooms hand their messages to the master in batches;
//! this task writes them to the store (retrying with backoff while the store
//! is down) and then tells each room how far its messages are stored, which
//! is when the room acknowledges them. Nothing is acknowledged before it is
//! stored; nothing received is dropped (the rooms bound how much can wait).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chat_shared::ipc::{MasterMsg, StoredMessage};
use metrics::gauge;
use tokio::sync::mpsc;

use crate::state::Shared;
use crate::store::MessageRecord;

/// Most messages written in one call.
const MAX_BATCH: usize = 1000;
/// Longest pause between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

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
}

impl Writer {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Write>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                tx,
                pending: AtomicUsize::new(0),
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

/// Writes until the channel closes (after shutdown, once rooms are gone).
pub async fn run(master: Shared, mut rx: mpsc::UnboundedReceiver<Write>) {
    while let Some(first) = rx.recv().await {
        let mut records = Vec::new();
        let mut deletes = Vec::new();
        let mut add = |w: Write, records: &mut Vec<MessageRecord>| match w {
            Write::Messages { room, messages } => {
                records.extend(messages.into_iter().map(|m| record(&room, m)));
            }
            Write::Delete { room, seq } => deletes.push((room, seq)),
        };
        add(first, &mut records);
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => add(w, &mut records),
                Err(_) => break,
            }
        }
        if !records.is_empty() {
            store_messages(&master, &records).await;
            let mut upto: HashMap<&str, u64> = HashMap::new();
            for r in &records {
                let e = upto.entry(r.room.as_str()).or_default();
                *e = (*e).max(r.seq);
            }
            for (room, seq) in upto {
                if let Some(entry) = master.registry.get(room) {
                    entry.send(MasterMsg::Durable { seq });
                }
            }
            master
                .writer
                .pending
                .fetch_sub(records.len(), Ordering::AcqRel);
        }
        for (room, seq) in deletes {
            retry(&master, "mark a message deleted", || {
                master.store.mark_deleted(&room, seq)
            })
            .await;
        }
        gauge!("chat_store_pending_writes").set(master.writer.pending() as f64);
    }
}

async fn store_messages(master: &Shared, records: &[MessageRecord]) {
    let outcome = retry(master, "store messages", || {
        master.store.insert_messages(records)
    })
    .await;
    if outcome.duplicates > 0 {
        tracing::debug!(
            duplicates = outcome.duplicates,
            "messages were already stored (a resend)"
        );
    }
}

/// Runs a store call until it succeeds, with backoff; logs once per outage.
async fn retry<T, F, Fut>(master: &Shared, what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::store::StoreError>>,
{
    let mut backoff = Duration::from_millis(50);
    let mut failing = false;
    loop {
        match call().await {
            Ok(v) => {
                if failing {
                    tracing::info!(
                        pending = master.writer.pending(),
                        "the store is back; writing again"
                    );
                }
                master.store_reached();
                return v;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, pending = master.writer.pending(), "cannot {what}; retrying with backoff (rooms keep chatting, acks wait)");
                    failing = true;
                }
                metrics::counter!("chat_store_errors_total").increment(1);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
