//! Lifecycle events: what happened to a room's worker, published by the
//! supervisor on a broadcast channel. The catalog and the metrics subscribe
//! to them instead of being called by the supervisor.
//!
//! An event holds a token of the supervisors' task tracker until every
//! subscriber has taken it: a shutdown that waits for the supervisors also
//! waits for what the subscribers started on their last events (the
//! catalog's writes, spawned on the same tracker).

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use crate::registry::RoomEntry;

/// Events kept for a subscriber that falls behind.
const BACKLOG: usize = 1024;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A worker process was spawned.
    Spawned { pid: u32 },
    /// A worker listens; `first` for the first worker of this room entry.
    Ready { pid: u32, port: u16, first: bool },
    /// A running worker from before a master restart was adopted.
    Adopted { pid: u32, port: u16 },
    /// A worker died without being asked to.
    Crashed { pid: u32, status: String },
    /// A new worker follows a crash.
    Restarting { restarts: u32 },
    /// The room ended (asked to, or by itself) and is gone.
    Stopped,
    /// The room was given up.
    Failed { reason: String },
}

/// One event of one room.
#[derive(Clone)]
pub struct Event {
    pub room: Arc<RoomEntry>,
    pub kind: EventKind,
    _hold: TaskTrackerToken,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("room", &self.room.name)
            .field("kind", &self.kind)
            .finish()
    }
}

/// The publishing side (cheap to clone).
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
    tracker: TaskTracker,
}

impl Events {
    /// Events whose delivery keeps `tracker` (the supervisors') busy.
    pub fn new(tracker: TaskTracker) -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
            tracker,
        }
    }

    /// Publishes an event (dropped when nobody listens).
    pub fn publish(&self, room: &Arc<RoomEntry>, kind: EventKind) {
        let _ = self.tx.send(Event {
            room: room.clone(),
            kind,
            _hold: self.tracker.token(),
        });
    }

    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
        }
    }
}

/// A subscriber's side.
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
}

impl Subscription {
    /// The next event; `None` once every publisher is gone. A subscriber that
    /// fell behind skips what it missed (logged).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "a lifecycle event subscriber fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chat_shared::settings::RoomSettings;

    use super::*;
    use crate::registry::Origin;

    fn room(name: &str) -> Arc<RoomEntry> {
        Arc::new(RoomEntry::new(
            name.to_owned(),
            RoomSettings::default(),
            4000,
            0,
            Origin::Created,
        ))
    }

    #[tokio::test]
    async fn subscribers_get_events_in_order() {
        let events = Events::new(TaskTracker::new());
        let mut a = events.subscribe();
        let mut b = events.subscribe();
        let r = room("lobby");
        events.publish(&r, EventKind::Spawned { pid: 7 });
        events.publish(&r, EventKind::Stopped);
        for sub in [&mut a, &mut b] {
            let first = sub.next().await.map(|e| (e.room.name.clone(), e.kind));
            assert_eq!(first, Some(("lobby".into(), EventKind::Spawned { pid: 7 })));
            assert_eq!(sub.next().await.map(|e| e.kind), Some(EventKind::Stopped));
        }
    }

    #[tokio::test]
    async fn an_unread_event_keeps_the_tracker_busy() {
        let tracker = TaskTracker::new();
        let events = Events::new(tracker.clone());
        let mut sub = events.subscribe();
        events.publish(&room("a"), EventKind::Stopped);
        tracker.close();
        let waited = tokio::time::timeout(Duration::from_millis(50), tracker.wait()).await;
        assert!(
            waited.is_err(),
            "the tracker went idle with an event unread"
        );
        let e = sub.next().await;
        assert!(e.is_some());
        drop(e);
        let waited = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        assert!(
            waited.is_ok(),
            "the tracker stayed busy after the event was read"
        );
    }

    #[tokio::test]
    async fn without_subscribers_nothing_is_held() {
        let tracker = TaskTracker::new();
        let events = Events::new(tracker.clone());
        events.publish(&room("a"), EventKind::Stopped);
        tracker.close();
        let waited = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        assert!(waited.is_ok());
    }
}
