//! Whether this host reaches Redis: the command connection and the
//! subscription each report; `/readyz` shows the details and `/metrics`
//! the `chat_redis_up` gauge and the counters.

use std::sync::Mutex;

use metrics::{counter, gauge};
use serde_json::{Value, json};

#[derive(Debug, Default)]
struct Inner {
    commands: bool,
    subscribed: bool,
    /// Since when (Unix ms) Redis is out of reach; `None` while up.
    down_since: Option<u64>,
    last_error: Option<String>,
}

/// The link's state as the Redis tasks saw it.
#[derive(Debug)]
pub struct Health {
    inner: Mutex<Inner>,
}

impl Default for Health {
    fn default() -> Self {
        gauge!("chat_redis_up").set(0.0);
        Self {
            inner: Mutex::new(Inner {
                down_since: Some(crate::registry::now_ms()),
                ..Inner::default()
            }),
        }
    }
}

/// Which side reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Commands,
    Subscription,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A side worked (`Ok`) or failed; `true` when that side just came up.
    pub fn report(&self, side: Side, result: Result<(), String>) -> bool {
        let mut inner = self.lock();
        let ok = result.is_ok();
        let flag = match side {
            Side::Commands => &mut inner.commands,
            Side::Subscription => &mut inner.subscribed,
        };
        let was = std::mem::replace(flag, ok);
        if let Err(e) = result {
            if was {
                tracing::warn!(side = ?side, error = %e, "redis out of reach");
            }
            inner.last_error = Some(e);
        } else if !was {
            tracing::info!(side = ?side, "redis reached");
        }
        let up = inner.commands && inner.subscribed;
        match (up, inner.down_since) {
            (true, Some(_)) => inner.down_since = None,
            (false, None) => inner.down_since = Some(crate::registry::now_ms()),
            _ => {}
        }
        gauge!("chat_redis_up").set(if up { 1.0 } else { 0.0 });
        ok && !was
    }

    /// The command connection works.
    pub fn commands_up(&self) -> bool {
        self.lock().commands
    }

    /// For `/readyz`.
    pub fn details(&self) -> Value {
        let inner = self.lock();
        json!({
            "up": inner.commands && inner.subscribed,
            "commands": inner.commands,
            "subscribed": inner.subscribed,
            "down_since": inner.down_since,
            "last_error": inner.last_error,
        })
    }
}

/// Counters of the transport (`/metrics`).
pub fn published(n: usize) {
    counter!("chat_redis_published_total").increment(n as u64);
}

pub fn received() {
    counter!("chat_redis_received_total").increment(1);
}

/// Publications or presence writes that failed (Redis out of reach).
pub fn errors(n: usize) {
    counter!("chat_redis_errors_total").increment(n as u64);
}

/// Jobs dropped because the transport's queue was full.
pub fn dropped() {
    counter!("chat_redis_dropped_total").increment(1);
}
