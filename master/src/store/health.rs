//! Whether the store has answered at least once (readiness), shared by the
//! tasks that call it: the writer, the cache, the start-up init.

use std::sync::atomic::{AtomicBool, Ordering};

/// The store's health as the master's tasks saw it.
#[derive(Debug)]
pub struct StoreHealth {
    kind: &'static str,
    reached: AtomicBool,
}

impl StoreHealth {
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            reached: AtomicBool::new(false),
        }
    }

    /// The store answered; logged the first time.
    pub fn reached(&self) {
        if !self.reached.swap(true, Ordering::AcqRel) {
            tracing::info!(store = self.kind, "store reached");
        }
    }

    /// Whether the store ever answered.
    pub fn ever_reached(&self) -> bool {
        self.reached.load(Ordering::Acquire)
    }
}
