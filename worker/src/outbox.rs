//! The room's outbox: messages numbered by the room and not yet confirmed
//! stored by the master, the watermarks of what was handed to the current
//! master link (`sent`) and what the master confirmed (`durable`), and the
//! acks that wait for their message to be stored.
//!
//! Batches are capped in bytes and in count, and the bytes handed to the
//! link but not yet confirmed are limited: a backlog of any size (a master
//! outage) goes out as a stream of frames that each fit the IPC frame
//! limit, paced by the master's confirmations. After a reconnect everything
//! above the durable watermark is sent again (writes are idempotent on
//! `(room, seq)`).

use std::collections::VecDeque;
use std::sync::Arc;

use chat_shared::ipc::StoredMessage;

use crate::outbound::Outbound;

/// Most messages a room holds unconfirmed (not yet stored).
pub use chat_shared::ipc::MAX_UNCONFIRMED;

/// Most bytes of messages a room holds unconfirmed.
pub const MAX_UNCONFIRMED_BYTES: usize = 512 * 1024 * 1024;
/// Most bytes in one batch (one IPC frame; the frame limit is 16 MiB).
pub const BATCH_BYTES: usize = 1024 * 1024;
/// Most messages in one batch.
pub const BATCH_COUNT: usize = 1000;
/// Most bytes handed to the master link and not yet confirmed stored.
pub const IN_FLIGHT_BYTES: usize = 4 * 1024 * 1024;

/// An ack waiting for its message to be stored.
#[derive(Debug)]
pub struct PendingAck {
    pub seq: u64,
    pub out: Arc<Outbound>,
    pub client_id: Option<String>,
}

/// The caps of an [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub batch_bytes: usize,
    pub batch_count: usize,
    pub in_flight_bytes: usize,
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Self {
            batch_bytes: BATCH_BYTES,
            batch_count: BATCH_COUNT,
            in_flight_bytes: IN_FLIGHT_BYTES,
            max_messages: MAX_UNCONFIRMED,
            max_bytes: MAX_UNCONFIRMED_BYTES,
        }
    }
}

#[derive(Debug)]
struct Entry {
    msg: StoredMessage,
    size: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Outbox {
    caps: Caps,
    /// Unconfirmed messages, oldest first, in `seq` order.
    unconfirmed: VecDeque<Entry>,
    /// Bytes of `unconfirmed`.
    bytes: usize,
    /// Highest seq handed to the current master link.
    sent: u64,
    /// Bytes of the messages in `(durable, sent]`.
    in_flight: usize,
    /// Highest seq the master confirmed stored.
    durable: u64,
    acks: VecDeque<PendingAck>,
}

impl Outbox {
    /// An empty outbox whose history is stored up to `seq`.
    pub fn new(seq: u64) -> Self {
        Self::with_caps(seq, Caps::default())
    }

    pub fn with_caps(seq: u64, caps: Caps) -> Self {
        Self {
            caps,
            unconfirmed: VecDeque::new(),
            bytes: 0,
            sent: seq,
            in_flight: 0,
            durable: seq,
            acks: VecDeque::new(),
        }
    }

    /// Whether a new message must be refused (the outbox is at its bounds).
    pub fn is_full(&self) -> bool {
        self.unconfirmed.len() >= self.caps.max_messages || self.bytes >= self.caps.max_bytes
    }

    /// Messages not yet confirmed stored.
    pub fn len(&self) -> usize {
        self.unconfirmed.len()
    }

    #[cfg(test)]
    pub fn durable_seq(&self) -> u64 {
        self.durable
    }

    /// Adds a freshly numbered message (seqs increase).
    pub fn push(&mut self, msg: StoredMessage) {
        let size = msg.max_encoded_size();
        self.bytes += size;
        self.unconfirmed.push_back(Entry { msg, size });
    }

    /// Registers the ack of message `seq`, sent once it is stored.
    pub fn push_ack(&mut self, ack: PendingAck) {
        self.acks.push_back(ack);
    }

    /// Marks an unconfirmed message deleted (it will be stored deleted).
    /// Whether it was still unconfirmed.
    pub fn mark_deleted(&mut self, seq: u64) -> bool {
        let i = self.unconfirmed.partition_point(|e| e.msg.seq < seq);
        match self.unconfirmed.get_mut(i) {
            Some(e) if e.msg.seq == seq => {
                e.msg.deleted = true;
                e.msg.text.clear();
                true
            }
            _ => false,
        }
    }

    /// Whether messages wait to be handed to the link.
    pub fn has_unsent(&self) -> bool {
        self.unconfirmed
            .back()
            .is_some_and(|e| e.msg.seq > self.sent)
    }

    /// The next batch for the master link, or `None` when nothing is unsent
    /// or the bytes in flight are at their limit. A batch holds at least one
    /// message, at most `batch_count`, and at most `batch_bytes` unless its
    /// single message is larger.
    pub fn next_batch(&mut self) -> Option<Vec<StoredMessage>> {
        let start = self.unconfirmed.partition_point(|e| e.msg.seq <= self.sent);
        let first = self.unconfirmed.get(start)?;
        if self.in_flight > 0 && self.in_flight + first.size > self.caps.in_flight_bytes {
            return None;
        }
        let budget = self
            .caps
            .batch_bytes
            .min(self.caps.in_flight_bytes.saturating_sub(self.in_flight));
        let mut bytes = 0;
        let mut batch = Vec::new();
        for e in self.unconfirmed.range(start..) {
            if batch.len() >= self.caps.batch_count
                || (!batch.is_empty() && bytes + e.size > budget)
            {
                break;
            }
            bytes += e.size;
            batch.push(e.msg.clone());
        }
        if let Some(last) = batch.last() {
            self.sent = last.seq;
        }
        self.in_flight += bytes;
        Some(batch)
    }

    /// A new master link: everything unconfirmed is sent again.
    pub fn relink(&mut self) {
        self.sent = self.durable;
        self.in_flight = 0;
    }

    /// The master will never store these messages: drops them and returns
    /// their acks (their senders are told instead). The `Durable` that
    /// follows moves the watermark past them.
    pub fn fail(&mut self, seqs: &[u64]) -> Vec<PendingAck> {
        let (sent, mut bytes, mut in_flight) = (self.sent, self.bytes, self.in_flight);
        self.unconfirmed.retain(|e| {
            if !seqs.contains(&e.msg.seq) {
                return true;
            }
            bytes -= e.size;
            if e.msg.seq <= sent {
                in_flight = in_flight.saturating_sub(e.size);
            }
            false
        });
        (self.bytes, self.in_flight) = (bytes, in_flight);
        let (failed, kept) = std::mem::take(&mut self.acks)
            .into_iter()
            .partition(|a| seqs.contains(&a.seq));
        self.acks = kept;
        failed.into()
    }

    /// The master stored every message up to `seq`: drops them and returns
    /// the acks that can go out now, in order.
    pub fn confirm(&mut self, seq: u64) -> Vec<PendingAck> {
        if seq <= self.durable {
            return Vec::new();
        }
        self.durable = seq;
        while self.unconfirmed.front().is_some_and(|e| e.msg.seq <= seq) {
            if let Some(e) = self.unconfirmed.pop_front() {
                self.bytes -= e.size;
                if e.msg.seq <= self.sent {
                    self.in_flight = self.in_flight.saturating_sub(e.size);
                }
            }
        }
        self.sent = self.sent.max(seq);
        if self.unconfirmed.is_empty() {
            self.in_flight = 0;
        }
        let ready = self.acks.partition_point(|a| a.seq <= seq);
        self.acks.drain(..ready).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, len: usize) -> StoredMessage {
        StoredMessage {
            epoch: 1,
            seq,
            user_id: "u".into(),
            name: "n".into(),
            text: "x".repeat(len),
            ts: 0,
            deleted: false,
        }
    }

    fn caps() -> Caps {
        Caps {
            batch_bytes: 1000,
            batch_count: 4,
            in_flight_bytes: 3000,
            max_messages: 100,
            max_bytes: 100_000,
        }
    }

    #[test]
    fn failed_messages_leave_and_free_their_bytes() {
        let mut o = Outbox::with_caps(0, caps());
        for seq in 1..=3 {
            o.push(msg(seq, 100));
        }
        let sent = o.next_batch().map(|b| seqs(&b));
        assert_eq!(sent, Some(vec![1, 2, 3]));
        let before = (o.bytes, o.in_flight);
        assert_eq!(o.fail(&[2]).len(), 0, "no ack was registered for 2");
        assert_eq!(o.len(), 2);
        assert!(o.bytes < before.0 && o.in_flight < before.1);
        o.confirm(3);
        assert_eq!((o.len(), o.bytes, o.in_flight), (0, 0, 0));
    }

    fn seqs(b: &[StoredMessage]) -> Vec<u64> {
        b.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn batches_are_capped_in_count_and_bytes() {
        let mut o = Outbox::with_caps(0, caps());
        for s in 1..=6 {
            o.push(msg(s, 10));
        }
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![1, 2, 3, 4]);
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![5, 6]);
        assert!(o.next_batch().is_none());

        let mut o = Outbox::with_caps(0, caps());
        for s in 1..=3 {
            o.push(msg(s, 400));
        }
        // 400 + overhead each: two fit in 1000 bytes.
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![1, 2]);
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![3]);
    }

    #[test]
    fn a_message_larger_than_a_batch_goes_alone() {
        let mut o = Outbox::with_caps(0, caps());
        o.push(msg(1, 2000));
        o.push(msg(2, 10));
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![1]);
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![2]);
    }

    #[test]
    fn bytes_in_flight_wait_for_confirmations() {
        let mut o = Outbox::with_caps(0, caps());
        for s in 1..=10 {
            o.push(msg(s, 900));
        }
        // ~950 bytes each: one per batch, three in flight at most.
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![1]);
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![2]);
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![3]);
        assert!(o.next_batch().is_none(), "the in-flight limit is reached");
        assert!(o.has_unsent());
        assert!(o.confirm(2).is_empty());
        assert_eq!(o.len(), 8);
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![4]);
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![5]);
        assert!(o.next_batch().is_none());
        o.confirm(10);
        assert_eq!(o.len(), 0);
        assert!(!o.has_unsent());
        assert!(o.next_batch().is_none());
    }

    #[test]
    fn relink_resends_from_the_durable_watermark() {
        let mut o = Outbox::with_caps(5, caps());
        for s in 6..=9 {
            o.push(msg(s, 10));
        }
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![6, 7, 8, 9]);
        o.confirm(7);
        o.push(msg(10, 10));
        o.relink();
        assert_eq!(seqs(&o.next_batch().unwrap()), vec![8, 9, 10]);
        assert!(o.next_batch().is_none());
        // A late confirmation from the old link is not lost.
        o.confirm(9);
        assert_eq!(o.durable_seq(), 9);
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn confirm_releases_acks_in_order_and_only_once() {
        let (out, _rx) = Outbound::new(1 << 20);
        let mut o = Outbox::with_caps(0, caps());
        for s in 1..=3 {
            o.push(msg(s, 10));
            o.push_ack(PendingAck {
                seq: s,
                out: out.clone(),
                client_id: Some(format!("c{s}")),
            });
        }
        let acks = o.confirm(2);
        assert_eq!(acks.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert!(o.confirm(2).is_empty());
        assert!(o.confirm(1).is_empty());
        let acks = o.confirm(3);
        assert_eq!(acks.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![3]);
    }

    #[test]
    fn full_by_count_or_bytes() {
        let mut o = Outbox::with_caps(0, caps());
        for s in 1..=100 {
            assert!(!o.is_full());
            o.push(msg(s, 1));
        }
        assert!(o.is_full());
        let mut o = Outbox::with_caps(0, caps());
        o.push(msg(1, 100_000));
        assert!(o.is_full());
        o.confirm(1);
        assert!(!o.is_full());
    }

    #[test]
    fn deleted_before_storing_is_stored_deleted() {
        let mut o = Outbox::with_caps(0, caps());
        o.push(msg(1, 10));
        o.push(msg(2, 10));
        assert!(o.mark_deleted(2));
        assert!(!o.mark_deleted(3));
        let b = o.next_batch().unwrap();
        assert!(b[1].deleted && b[1].text.is_empty());
        assert!(!b[0].deleted);
    }

    #[test]
    fn a_full_batch_fits_an_ipc_frame() {
        let mut o = Outbox::new(0);
        for s in 1..=3000 {
            o.push(msg(s, 8000 * 4));
        }
        while let Some(b) = o.next_batch() {
            let frame =
                postcard::to_allocvec(&chat_shared::ipc::WorkerMsg::Messages(b)).expect("encodes");
            assert!(frame.len() <= BATCH_BYTES + 64, "{}", frame.len());
            let last = o.sent;
            o.confirm(last);
        }
        assert_eq!(o.len(), 0);
    }
}
