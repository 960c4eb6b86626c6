//! Turns the rooms' lifecycle events into `room.created` and `room.closed`.

use std::collections::HashSet;

use crate::events::{EventKind, Subscription};

use super::Webhooks;

/// Follows the lifecycle events until every publisher is gone. A room is
/// created when its first worker listens (not when a crashed worker is
/// replaced, nor when a running one is adopted after a master restart), and
/// closed when it ends or is given up, if it ever served (a create that
/// failed before listening closes nothing).
pub async fn follow(hooks: Webhooks, mut events: Subscription) {
    let mut serving: HashSet<String> = HashSet::new();
    while let Some(e) = events.next().await {
        let name = &e.room.name;
        match &e.kind {
            EventKind::Ready { port, first, .. } => {
                let new = serving.insert(name.clone());
                if new && *first {
                    hooks.room_created(name, *port);
                }
            }
            EventKind::Adopted { .. } => {
                serving.insert(name.clone());
            }
            EventKind::Stopped | EventKind::Failed { .. } => {
                let served = serving.remove(name);
                let failed = match &e.kind {
                    EventKind::Failed { reason } => Some(reason.as_str()),
                    _ => None,
                };
                if served {
                    hooks.room_closed(name, failed);
                }
            }
            _ => {}
        }
    }
}
