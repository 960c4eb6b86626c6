//! A connection's outbound queue, bounded in bytes.
//!
//! Broadcasts are serialized once and the same bytes are queued for every
//! recipient. When a client stops reading and its queue passes the limit, that
//! connection alone is closed (1008, "slow consumer"); senders never wait.
//!
//! The queue is a deque behind a lock, with the writer's waker beside it. An idle
//! connection's queue holds no allocation: it grows while frames wait and is
//! released when drained (a tokio channel keeps a block of 32 slots, about
//! 1.5 KB, plus its shared state, for the connection's whole life).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use chat_shared::protocol::close;
use futures_util::task::AtomicWaker;
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

/// Frames a drained queue keeps room for; a larger one is released.
const KEEP_FRAMES: usize = 8;

/// The sending side of one connection, shared by the room.
#[derive(Debug)]
pub struct Outbound {
    frames: Mutex<VecDeque<Frame>>,
    /// The writer waiting for a frame (one atomic swap to wake it).
    ready: AtomicWaker,
    /// The writer's end ([`Inbox`]) is gone: nothing is queued any more.
    gone: AtomicBool,
    queued: AtomicUsize,
    limit: usize,
    closed: AtomicBool,
    close_frame: Mutex<Option<(u16, String)>>,
    /// Cancelled when the connection must close (the writer sends the close frame).
    pub cancel: CancellationToken,
}

impl Outbound {
    pub fn new(limit: usize) -> (Arc<Self>, Inbox) {
        let out = Arc::new(Self {
            frames: Mutex::new(VecDeque::new()),
            ready: AtomicWaker::new(),
            gone: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            limit,
            closed: AtomicBool::new(false),
            close_frame: Mutex::new(None),
            cancel: CancellationToken::new(),
        });
        let inbox = Inbox(out.clone());
        (out, inbox)
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Frame>> {
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame for the writer; false when the writer is gone.
    fn push(&self, frame: Frame) -> bool {
        if self.gone.load(Ordering::Acquire) {
            return false;
        }
        self.lock().push_back(frame);
        self.ready.wake();
        true
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
        if !self.push(Frame::Text(text.clone())) {
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
        self.push(Frame::Raw(frames));
    }

    /// Queues a WebSocket ping.
    pub fn ping(&self) {
        self.push(Frame::Ping);
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
            self.push(Frame::Wake);
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

/// The writer's end of a connection's queue.
#[derive(Debug)]
pub struct Inbox(Arc<Outbound>);

impl Inbox {
    /// The next frame, waiting for one. Cancel-safe: a frame is taken only
    /// when this returns it.
    pub async fn recv(&self) -> Frame {
        std::future::poll_fn(|cx| {
            if let Some(f) = self.try_recv() {
                return std::task::Poll::Ready(f);
            }
            self.0.ready.register(cx.waker());
            // A frame queued between the first look and the registration
            // woke no one: look again.
            match self.try_recv() {
                Some(f) => std::task::Poll::Ready(f),
                None => std::task::Poll::Pending,
            }
        })
        .await
    }

    /// The next frame, if one waits.
    pub fn try_recv(&self) -> Option<Frame> {
        self.0.lock().pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().is_empty()
    }

    /// Releases a drained queue's memory (an idle connection holds none).
    pub fn shrink(&self) {
        let mut q = self.0.lock();
        if q.is_empty() && q.capacity() > KEEP_FRAMES {
            *q = VecDeque::new();
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.0.gone.store(true, Ordering::Release);
        // What still waits is never written.
        let left = std::mem::take(&mut *self.0.lock());
        drop(left);
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
        let (out, rx) = Outbound::new(10);
        let msg = Encoded::text("123456");
        assert!(out.send(&msg));
        assert!(!out.send(&msg));
        assert!(out.is_closed());
        assert_eq!(
            out.close_frame(),
            Some((close::POLICY, "slow consumer".into()))
        );
        assert!(out.cancel.is_cancelled());
        assert!(matches!(rx.try_recv(), Some(Frame::Text(_))));
        out.written(6);
        assert_eq!(out.queued(), 0);
    }

    #[tokio::test]
    async fn the_writer_is_woken_and_an_idle_queue_is_released() {
        let (out, rx) = Outbound::new(1 << 20);
        let writer = tokio::spawn(async move {
            let mut got = 0;
            while got < 100 {
                if let Frame::Text(_) = rx.recv().await {
                    got += 1;
                }
            }
            rx.shrink();
            (rx.is_empty(), rx.0.lock().capacity())
        });
        let msg = Encoded::text("x");
        for _ in 0..100 {
            assert!(out.send(&msg));
        }
        let (empty, capacity) = writer.await.unwrap();
        assert!(empty);
        assert_eq!(capacity, 0, "a drained queue keeps no memory");
    }

    #[test]
    fn nothing_is_queued_once_the_writer_is_gone() {
        let (out, rx) = Outbound::new(1 << 20);
        let msg = Encoded::text("x");
        assert!(out.send(&msg));
        drop(rx);
        assert!(!out.send(&msg));
        assert!(out.lock().is_empty(), "what waited was dropped");
    }

    #[test]
    fn long_reasons_are_cut() {
        let r = close_reason(&"é".repeat(100));
        assert!(r.len() <= MAX_CLOSE_REASON);
        assert_eq!(close_reason("short"), "short");
    }
}
