//! The bounded queue between the chat (which emits) and the delivery task:
//! pushing never waits; when it is full the oldest event is dropped and
//! counted, so a dead receiver costs memory up to the bound and no more.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;

/// One event waiting for delivery: its body is serialized once.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: String,
    pub kind: &'static str,
    pub body: Bytes,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// Events in the queue after the push.
    pub depth: usize,
    /// Whether the oldest event was dropped to make room.
    pub dropped: bool,
}

struct Inner {
    events: VecDeque<Pending>,
    closed: bool,
}

/// A bounded FIFO that drops its oldest entry when full.
pub struct Queue {
    cap: usize,
    inner: Mutex<Inner>,
    ready: Notify,
}

impl Queue {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            inner: Mutex::new(Inner {
                events: VecDeque::new(),
                closed: false,
            }),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an event; never waits. A closed queue takes nothing more.
    pub fn push(&self, e: Pending) -> Option<Pushed> {
        let pushed = {
            let mut q = self.lock();
            if q.closed {
                return None;
            }
            let dropped = if q.events.len() >= self.cap {
                q.events.pop_front().is_some()
            } else {
                false
            };
            q.events.push_back(e);
            Pushed {
                depth: q.events.len(),
                dropped,
            }
        };
        self.ready.notify_one();
        Some(pushed)
    }

    /// The oldest event, waiting for one; `None` once the queue is closed
    /// and empty. One consumer.
    pub async fn pop(&self) -> Option<Pending> {
        loop {
            {
                let mut q = self.lock();
                if let Some(e) = q.events.pop_front() {
                    return Some(e);
                }
                if q.closed {
                    return None;
                }
            }
            // `notify_one` keeps a permit when nobody waits: a push between
            // the check above and this wait is not lost.
            self.ready.notified().await;
        }
    }

    /// Takes no more events; `pop` returns what is left, then `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    pub fn len(&self) -> usize {
        self.lock().events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str) -> Pending {
        Pending {
            id: id.into(),
            kind: "room.created",
            body: Bytes::new(),
        }
    }

    #[tokio::test]
    async fn full_queue_drops_the_oldest() {
        let q = Queue::new(2);
        assert_eq!(q.push(ev("a")).map(|p| p.dropped), Some(false));
        assert_eq!(q.push(ev("b")).map(|p| p.dropped), Some(false));
        let p = q.push(ev("c"));
        assert_eq!(
            p,
            Some(Pushed {
                depth: 2,
                dropped: true
            })
        );
        assert_eq!(q.pop().await.map(|e| e.id), Some("b".into()));
        assert_eq!(q.pop().await.map(|e| e.id), Some("c".into()));
    }

    #[tokio::test]
    async fn close_drains_then_ends() {
        let q = Queue::new(4);
        q.push(ev("a"));
        q.close();
        assert!(q.push(ev("b")).is_none());
        assert_eq!(q.pop().await.map(|e| e.id), Some("a".into()));
        assert!(q.pop().await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_pop_wakes_on_push() {
        let q = std::sync::Arc::new(Queue::new(4));
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.pop().await.map(|e| e.id) })
        };
        tokio::task::yield_now().await;
        q.push(ev("x"));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
        assert!(matches!(got, Ok(Ok(Some(ref id))) if id == "x"), "{got:?}");
    }
}
