//! The room's clocks: WebSocket pings to every client and the room's time
//! limit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_shared::ipc::WorkerMsg;
use chat_shared::protocol::{ServerMsg, close};

use crate::room::{encode, now_ms};
use crate::state::Worker;

/// Pings every client each interval; a client that let two pings go
/// unanswered (no frame at all since) is dropped. While the room has no
/// connection the clock sleeps until one joins.
pub async fn heartbeat(worker: Arc<Worker>) {
    let joined = worker.room().joined.clone();
    loop {
        if worker.room().is_empty() {
            tokio::select! {
                _ = worker.shutdown.cancelled() => return,
                _ = joined.notified() => {}
            }
        }
        let every = Duration::from_millis(worker.config().ping_interval_ms.max(50));
        tokio::select! {
            _ = worker.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let conns = worker.room().all_conns();
        for c in conns {
            if c.missed_pings.fetch_add(1, Ordering::Relaxed) >= 2 {
                tracing::info!(room = %worker.name, user = %c.user_id, "dropping a client that missed two pings");
                c.out.close(close::HEARTBEAT_TIMEOUT, "missed two pings");
            } else {
                c.out.ping();
            }
        }
    }
}

/// Sends a large room's gathered arrivals and departures: woken when a
/// batch opens, it waits [`BATCH_EVERY`](crate::announce::BATCH_EVERY) and
/// sends it (an idle room never wakes it).
pub async fn members_batches(worker: Arc<Worker>) {
    let wake = worker.room().announce.wake.clone();
    loop {
        tokio::select! {
            _ = worker.shutdown.cancelled() => return,
            _ = wake.notified() => {}
        }
        tokio::select! {
            _ = worker.shutdown.cancelled() => return,
            _ = tokio::time::sleep(crate::announce::BATCH_EVERY) => {}
        }
        worker.room().flush_announcements();
    }
}

/// Answers, every second while any wait, the `history` and direct-message
/// requests the master did not answer in time (see `history.rs`,
/// `direct.rs`). With nothing waiting it sleeps until a request registers:
/// an idle room has no clock ticking.
pub async fn expire_queries(worker: Arc<Worker>) {
    let wake = worker.room().clock.clone();
    loop {
        let idle = worker.room().nothing_waits();
        if idle {
            tokio::select! {
                _ = worker.shutdown.cancelled() => return,
                _ = wake.notified() => {}
            }
        }
        tokio::select! {
            _ = worker.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        worker.room().expire_queries();
    }
}

/// Warnings sent ahead of a time limit, in seconds before the end.
const WARNINGS: &[u64] = &[600, 300, 60, 10, 1];

/// Ends the room when its time limit is reached, after `closing` warnings.
pub async fn time_limit(worker: Arc<Worker>, created_unix_ms: u64, limit_secs: u64) {
    let end_ms = created_unix_ms.saturating_add(limit_secs.saturating_mul(1000));
    for &w in WARNINGS.iter().filter(|&&w| w < limit_secs) {
        let at = end_ms.saturating_sub(w * 1000);
        let now = now_ms();
        if at <= now {
            continue;
        }
        tokio::select! {
            _ = worker.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(at - now)) => {}
        }
        let bytes = encode(&ServerMsg::Closing {
            reason: format!("the room's time limit ends in {w} s"),
            in_secs: Some(w),
        });
        worker.room().broadcast(&bytes, None, None);
    }
    let now = now_ms();
    if end_ms > now {
        tokio::select! {
            _ = worker.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(end_ms - now)) => {}
        }
    }
    let reason = "time limit reached";
    tracing::info!(room = %worker.name, "{reason}");
    worker.to_master.send(WorkerMsg::Ended {
        reason: reason.into(),
    });
    worker.end(reason);
}
