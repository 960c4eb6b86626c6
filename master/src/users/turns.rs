//! Turns: the requests of one conversation are served in the order they
//! arrived from the rooms, whatever order their tasks happen to run in.
//! A turn is taken synchronously where a request arrives (the IPC
//! session, in the order a room sent its frames), awaited by the request's
//! task, and passed on when dropped — also when the request is cancelled
//! (a timeout) before its turn came.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Conversations share this many queues (by hash).
const SLOTS: usize = 64;

#[derive(Debug, Default)]
struct State {
    /// The next ticket to hand out.
    next: u64,
    /// The ticket being served.
    serving: u64,
    /// Tickets dropped before their turn: skipped when it comes.
    abandoned: BTreeSet<u64>,
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<State>,
    turned: Notify,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The queues of every conversation.
#[derive(Debug)]
pub struct Turns {
    slots: Vec<Arc<Slot>>,
}

impl Default for Turns {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Arc::default()).collect(),
        }
    }
}

impl Turns {
    /// The next turn of `conversation`'s queue.
    pub fn take(&self, conversation: &str) -> Turn {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        conversation.hash(&mut h);
        let slot = Arc::clone(&self.slots[(h.finish() % SLOTS as u64) as usize]);
        let ticket = {
            let mut st = slot.lock();
            st.next += 1;
            st.next - 1
        };
        Turn { slot, ticket }
    }
}

/// One place in a queue; the next one's turn comes when it is dropped.
#[derive(Debug)]
pub struct Turn {
    slot: Arc<Slot>,
    ticket: u64,
}

impl Turn {
    /// Waits until every earlier turn of the queue is over.
    pub async fn wait(&self) {
        loop {
            let turned = self.slot.turned.notified();
            tokio::pin!(turned);
            turned.as_mut().enable();
            if self.slot.lock().serving == self.ticket {
                return;
            }
            turned.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut st = self.slot.lock();
        if st.serving == self.ticket {
            st.serving += 1;
            loop {
                let next = st.serving;
                if !st.abandoned.remove(&next) {
                    break;
                }
                st.serving += 1;
            }
            drop(st);
            self.slot.turned.notify_waiters();
        } else {
            st.abandoned.insert(self.ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_come_in_the_order_taken_even_when_one_is_dropped() {
        let turns = Turns::default();
        let a = turns.take("c");
        let b = turns.take("c");
        let c = turns.take("c");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tx2 = tx.clone();
        let tc = tokio::spawn(async move {
            c.wait().await;
            tx2.send("c").unwrap();
        });
        // b gives up before its turn; c is served after a.
        drop(b);
        a.wait().await;
        tx.send("a").unwrap();
        drop(a);
        tc.await.unwrap();
        assert_eq!(rx.recv().await, Some("a"));
        assert_eq!(rx.recv().await, Some("c"));
        // A new turn comes at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), turns.take("c").wait())
            .await
            .expect("the queue moved on");
    }
}
