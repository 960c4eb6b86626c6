//! A connection's outbound queue, bounded in bytes.
//!
//! Broadcasts are serialized once and the same bytes are queued for every
//! recipient. When a client stops reading and its queue passes the limit, that
//! connection alone is closed (1008, "slow consumer"); senders never wait.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use chat_shared::protocol::close;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::wire::Encoded;

/// What the writer task sends.
#[derive(Debug)]
pub enum Frame {
    /// A text frame encoded once, shared by its recipients.
    Text(Encoded),
    Ping,
    /// Frames the WebSocket reader wrote (pongs, the reply to a close).
    Raw(Bytes),
    /// Wakes the writer so it notices a close asked for after the queue.
    Wake,
}

/// The sending side of one connection, shared by the room.
#[derive(Debug)]
pub struct Outbound {
    tx: mpsc::UnboundedSender<Frame>,
    queued: AtomicUsize,
    limit: usize,
    closed: AtomicBool,
    close_frame: Mutex<Option<(u16, String)>>,
    /// Cancelled when the connection must close (the writer sends the close frame).
    pub cancel: CancellationToken,
}

impl Outbound {
    pub fn new(limit: usize) -> (Arc<Self>, mpsc::UnboundedReceiver<Frame>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let out = Arc::new(Self {
            tx,
            queued: AtomicUsize::new(0),
            limit,
            closed: AtomicBool::new(false),
            close_frame: Mutex::new(None),
            cancel: CancellationToken::new(),
        });
        (out, rx)
    }

    /// Queues a text frame; closes the connection when its queue is full.
    /// Returns whether the frame was queued.
    pub fn send(&self, text: &Encoded) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let len = text.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        if before + len > self.limit {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.close(close::POLICY, "slow consumer");
            return false;
        }
        if self.tx.send(Frame::Text(text.clone())).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Bytes this connection may have queued.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Queues whole frames the WebSocket reader wrote.
    pub fn raw(&self, frames: Bytes) {
        let _ = self.tx.send(Frame::Raw(frames));
    }

    /// Queues a WebSocket ping.
    pub fn ping(&self) {
        let _ = self.tx.send(Frame::Ping);
    }

    /// Marks `len` bytes as written.
    pub fn written(&self, len: usize) {
        self.queued.fetch_sub(len, Ordering::Relaxed);
    }

    /// Bytes waiting to be written.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Asks the writer to send a close frame and end the connection. The
    /// first reason given wins.
    pub fn close(&self, code: u16, reason: &str) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            if let Ok(mut slot) = self.close_frame.lock() {
                *slot = Some((code, close_reason(reason)));
            }
            self.cancel.cancel();
        }
    }

    /// Closes after the frames already queued have been written (used for
    /// `closing` notices and refusals, which must reach the client first).
    pub fn close_after_queue(&self, code: u16, reason: &str) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            if let Ok(mut slot) = self.close_frame.lock() {
                *slot = Some((code, close_reason(reason)));
            }
            // The writer drains what is queued, then sends the close frame;
            // a client that does not read is cut after a grace period.
            let _ = self.tx.send(Frame::Wake);
            let cancel = self.cancel.clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    tokio::time::sleep(CLOSE_AFTER_QUEUE_GRACE).await;
                    cancel.cancel();
                });
            }
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The close frame to send, if one was asked for.
    pub fn close_frame(&self) -> Option<(u16, String)> {
        self.close_frame.lock().ok().and_then(|g| g.clone())
    }
}

/// Time a connection closed after its queue gets to drain it.
const CLOSE_AFTER_QUEUE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest close reason a WebSocket close frame can carry, in bytes.
pub const MAX_CLOSE_REASON: usize = 123;

/// Cuts a close reason to what a close frame can carry, on a char boundary.
pub fn close_reason(reason: &str) -> String {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason.to_owned();
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_when_full() {
        let (out, mut rx) = Outbound::new(10);
        let msg = Encoded::text("123456");
        assert!(out.send(&msg));
        assert!(!out.send(&msg));
        assert!(out.is_closed());
        assert_eq!(
            out.close_frame(),
            Some((close::POLICY, "slow consumer".into()))
        );
        assert!(out.cancel.is_cancelled());
        assert!(matches!(rx.try_recv(), Ok(Frame::Text(_))));
        out.written(6);
        assert_eq!(out.queued(), 0);
    }

    #[test]
    fn long_reasons_are_cut() {
        let r = close_reason(&"é".repeat(100));
        assert!(r.len() <= MAX_CLOSE_REASON);
        assert_eq!(close_reason("short"), "short");
    }
}
