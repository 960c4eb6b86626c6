//! The room's history: the recent messages kept in memory (resumes and
//! `history` pages), and the `history` requests waiting for the store, which
//! are bounded in number and in time.

use std::collections::{HashMap, VecDeque};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_shared::ipc::StoredMessage;
use chat_shared::protocol::{ChatMessage, UserRef};

use crate::outbound::Outbound;

/// Messages kept in memory for resume and `history`, at least.
pub const MIN_KEPT: usize = 1000;
/// Most `history` requests waiting for the store at once.
pub const MAX_PENDING_QUERIES: usize = 64;
/// Time a `history` request waits for the store before it is answered with
/// an error.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A stored message as clients see it (a deleted one without its text).
pub fn chat_message(m: StoredMessage) -> ChatMessage {
    ChatMessage {
        seq: m.seq,
        from: UserRef {
            guest: m.user_id.starts_with(crate::identity::GUEST_PREFIX),
            id: m.user_id,
            name: m.name,
        },
        text: if m.deleted { String::new() } else { m.text },
        ts: m.ts,
        deleted: m.deleted,
    }
}

/// The recent messages, oldest first, in `seq` order.
#[derive(Debug)]
pub struct History {
    messages: VecDeque<ChatMessage>,
    kept: usize,
}

impl Deref for History {
    type Target = VecDeque<ChatMessage>;
    fn deref(&self) -> &Self::Target {
        &self.messages
    }
}

impl DerefMut for History {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.messages
    }
}

impl History {
    /// Keeps at least [`MIN_KEPT`] messages, more if the room's setting says.
    pub fn new(history_size: usize) -> Self {
        Self {
            messages: VecDeque::new(),
            kept: MIN_KEPT.max(history_size),
        }
    }

    fn trim(&mut self) {
        while self.messages.len() > self.kept {
            self.messages.pop_front();
        }
    }

    /// Appends a new (the newest) message.
    pub fn push(&mut self, m: ChatMessage) {
        self.messages.push_back(m);
        self.trim();
    }

    /// Adds stored messages up to `seq` (the store's latest, possibly in
    /// chunks in any order), keeping `seq` order and each message once.
    pub fn load(&mut self, recent: Vec<StoredMessage>, seq: u64) {
        let sorted = self
            .messages
            .back()
            .is_none_or(|last| recent.first().is_none_or(|m| m.seq > last.seq));
        self.messages.extend(
            recent
                .into_iter()
                .filter(|m| m.seq <= seq)
                .map(chat_message),
        );
        if !sorted {
            self.messages.make_contiguous().sort_by_key(|m| m.seq);
            let mut last = None;
            self.messages.retain(|m| {
                let keep = last != Some(m.seq);
                last = Some(m.seq);
                keep
            });
        }
        self.trim();
    }
}

/// A `history` request waiting for the store.
#[derive(Debug)]
pub struct PendingHistory {
    pub out: Arc<Outbound>,
    /// The part served from memory (newer than what the store returns).
    pub memory: Vec<ChatMessage>,
    asked: Instant,
}

/// The `history` requests waiting for the store, by query id.
#[derive(Debug, Default)]
pub struct Queries {
    pending: HashMap<u64, PendingHistory>,
    next: u64,
    /// Wakes the room's expiry clock (see `timers::expire_queries`).
    wake: Arc<tokio::sync::Notify>,
}

impl Queries {
    /// No request waiting; `wake` is told of each new one.
    pub fn new(wake: Arc<tokio::sync::Notify>) -> Self {
        Self {
            pending: HashMap::new(),
            next: 0,
            wake,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Registers a request; its id, or `None` when too many wait already.
    pub fn register(&mut self, out: Arc<Outbound>, memory: Vec<ChatMessage>) -> Option<u64> {
        if self.pending.len() >= MAX_PENDING_QUERIES {
            return None;
        }
        self.next += 1;
        self.pending.insert(
            self.next,
            PendingHistory {
                out,
                memory,
                asked: Instant::now(),
            },
        );
        self.wake.notify_one();
        Some(self.next)
    }

    /// The request an answer is for (`None` if it was given up).
    pub fn take(&mut self, id: u64) -> Option<PendingHistory> {
        self.pending.remove(&id)
    }

    /// Removes and returns the requests older than [`QUERY_TIMEOUT`].
    pub fn expired(&mut self, now: Instant) -> Vec<PendingHistory> {
        let old: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.asked) >= QUERY_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        old.into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .collect()
    }

    /// Removes and returns every request (their answers are lost).
    pub fn drain(&mut self) -> Vec<PendingHistory> {
        self.pending.drain().map(|(_, p)| p).collect()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64) -> StoredMessage {
        StoredMessage {
            epoch: 1,
            seq,
            user_id: "u".into(),
            name: "n".into(),
            text: format!("m{seq}"),
            ts: 0,
            deleted: false,
        }
    }

    #[test]
    fn chunks_in_any_order_load_in_seq_order() {
        let mut h = History::new(3);
        h.load((4..=6).map(stored).collect(), 100);
        h.load((1..=4).map(stored).collect(), 100);
        let seqs: Vec<u64> = h.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn queries_are_bounded_and_time_out() {
        let (out, _rx) = Outbound::new(1 << 20);
        let mut q = Queries::default();
        for _ in 0..MAX_PENDING_QUERIES {
            assert!(q.register(out.clone(), Vec::new()).is_some());
        }
        assert!(q.register(out.clone(), Vec::new()).is_none());
        assert!(q.take(1).is_some());
        assert!(q.take(1).is_none());
        assert!(q.expired(Instant::now()).is_empty());
        let later = Instant::now() + QUERY_TIMEOUT;
        assert_eq!(q.expired(later).len(), MAX_PENDING_QUERIES - 1);
        assert_eq!(q.len(), 0);
        assert!(q.register(out, Vec::new()).is_some());
        assert_eq!(q.drain().len(), 1);
    }
}
