//! Notices for the master that are not stored messages (a moderator's
//! deletion, `history` queries, a request for the reference data, the room's
//! end), waiting for the link. Bounded: while the master is away at most
//! [`MAX_NOTICES`] wait; past that the oldest goes (counted and logged), and
//! a repeated deletion of one message is queued once. Stored messages never
//! travel here (the outbox holds them, bounded on its own).

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use chat_shared::ipc::WorkerMsg;
use tokio::sync::Notify;

/// Notices waiting for the master at most.
pub const MAX_NOTICES: usize = 1024;

/// The queue of notices for the master (many senders, the link receives).
#[derive(Debug)]
pub struct Notices {
    inner: Mutex<Inner>,
    ready: Notify,
    cap: usize,
}

#[derive(Debug, Default)]
struct Inner {
    queue: VecDeque<WorkerMsg>,
    /// Dropped since the queue last had room (logged once per run of
    /// drops) and in all.
    dropping: u64,
    dropped: u64,
}

impl Default for Notices {
    fn default() -> Self {
        Self::with_capacity(MAX_NOTICES)
    }
}

impl Notices {
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a notice; never waits. A full queue drops its oldest notice.
    pub fn send(&self, msg: WorkerMsg) {
        {
            let mut s = self.lock();
            if matches!(msg, WorkerMsg::Deleted { .. }) && s.queue.contains(&msg) {
                return;
            }
            if s.queue.len() >= self.cap {
                if let Some(old) = s.queue.pop_front() {
                    s.dropped += 1;
                    s.dropping += 1;
                    if s.dropping == 1 {
                        tracing::warn!(
                            capacity = self.cap,
                            dropped = ?std::mem::discriminant(&old),
                            "too many notices wait for the master; dropping the oldest"
                        );
                    }
                }
            } else if s.dropping > 0 {
                tracing::info!(
                    dropped = s.dropping,
                    "notices for the master were dropped while it was away"
                );
                s.dropping = 0;
            }
            s.queue.push_back(msg);
        }
        self.ready.notify_one();
    }

    /// The oldest notice, if any.
    pub fn try_recv(&self) -> Option<WorkerMsg> {
        let mut s = self.lock();
        let m = s.queue.pop_front();
        if s.queue.is_empty() && s.dropping > 0 {
            tracing::info!(
                dropped = s.dropping,
                "notices for the master were dropped while it was away"
            );
            s.dropping = 0;
        }
        m
    }

    /// Waits for the oldest notice (one receiver: the master link).
    pub async fn recv(&self) -> WorkerMsg {
        loop {
            let ready = self.ready.notified();
            if let Some(m) = self.try_recv() {
                return m;
            }
            ready.await;
        }
    }

    /// Notices waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Notices dropped since the room started.
    #[cfg(test)]
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let n = Notices::with_capacity(3);
        for seq in 1..=5 {
            n.send(WorkerMsg::Deleted { seq });
        }
        assert_eq!(n.len(), 3);
        assert_eq!(n.dropped(), 2);
        let left: Vec<WorkerMsg> = std::iter::from_fn(|| n.try_recv()).collect();
        assert_eq!(
            left,
            [3, 4, 5].map(|seq| WorkerMsg::Deleted { seq }).to_vec()
        );
    }

    #[test]
    fn a_repeated_deletion_is_queued_once() {
        let n = Notices::default();
        for _ in 0..10_000 {
            n.send(WorkerMsg::Deleted { seq: 7 });
        }
        n.send(WorkerMsg::ReferenceWanted { have: 1 });
        n.send(WorkerMsg::Deleted { seq: 7 });
        assert_eq!(n.len(), 2);
        assert_eq!(n.dropped(), 0);
    }

    #[test]
    fn the_room_end_is_kept_when_the_queue_overflows() {
        let n = Notices::with_capacity(MAX_NOTICES);
        for seq in 0..(MAX_NOTICES as u64 * 10) {
            n.send(WorkerMsg::Deleted { seq });
        }
        n.send(WorkerMsg::Ended {
            reason: "time limit reached".into(),
        });
        assert_eq!(n.len(), MAX_NOTICES);
        assert_eq!(n.dropped(), MAX_NOTICES as u64 * 9 + 1);
        let last = std::iter::from_fn(|| n.try_recv()).last();
        assert!(matches!(last, Some(WorkerMsg::Ended { .. })), "{last:?}");
    }

    #[tokio::test]
    async fn recv_waits_for_a_notice() {
        let n = std::sync::Arc::new(Notices::default());
        let waiter = tokio::spawn({
            let n = n.clone();
            async move { n.recv().await }
        });
        tokio::task::yield_now().await;
        n.send(WorkerMsg::Deleted { seq: 1 });
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("in time")
            .expect("joined");
        assert_eq!(got, WorkerMsg::Deleted { seq: 1 });
    }
}
