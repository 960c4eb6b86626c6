//! Whether the store has answered at least once (readiness), shared by the
//! tasks that call it: the writer, the cache, the start-up init.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// The store's health as the master's tasks saw it.
#[derive(Debug)]
pub struct StoreHealth {
    kind: &'static str,
    reached: AtomicBool,
    /// `Store::init` succeeded: collections and unique indexes exist.
    initialized: AtomicBool,
    init_notify: Notify,
}

impl StoreHealth {
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            reached: AtomicBool::new(false),
            initialized: AtomicBool::new(false),
            init_notify: Notify::new(),
        }
    }

    /// `Store::init` succeeded (the unique indexes that tell a resend from
    /// a conflict exist): writes may start.
    pub fn initialized(&self) {
        self.initialized.store(true, Ordering::Release);
        self.init_notify.notify_waiters();
        self.reached();
    }

    /// Waits until [`StoreHealth::initialized`]. Messages written before
    /// the unique indexes exist could be stored twice at one seq.
    pub async fn wait_initialized(&self) {
        loop {
            let notified = self.init_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.initialized.load(Ordering::Acquire) {
                return;
            }
            notified.await;
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
