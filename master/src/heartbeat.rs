//! The rhythm of IPC heartbeats to one room: every busy interval while the
//! room sends frames of its own, doubling while it sends nothing but its
//! answers, up to the idle interval. An unanswered heartbeat stops the
//! doubling, so the silence bound (four intervals) never runs away from a
//! room that stopped answering.
//!
//! An idle room then costs the master and itself a wake-up every idle
//! interval instead of every busy one (16 s against 2 s by default); at
//! 10,000 rooms that is the difference between a fifth of a core and a few
//! percent. The price is that a room which hangs while idle is found within
//! four idle intervals instead of four busy ones. A crash is found at once
//! either way (its process exit, not a heartbeat, tells the supervisor).

use std::time::Duration;

/// The interval to the next heartbeat of one session.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    busy: Duration,
    idle: Duration,
    every: Duration,
    /// The room sent a frame of its own since the last heartbeat.
    heard: bool,
    /// The room answered the last heartbeat.
    answered: bool,
}

impl Heartbeat {
    /// Starts at the busy interval (a new session has a snapshot to pull and
    /// stats to send).
    pub fn new(busy: Duration, idle: Duration) -> Self {
        Self {
            busy,
            idle: idle.max(busy),
            every: busy,
            heard: false,
            answered: false,
        }
    }

    /// The interval until the next heartbeat.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// A heartbeat went out: the interval to the next one.
    pub fn sent(&mut self) -> Duration {
        let answered = std::mem::take(&mut self.answered);
        self.every = if std::mem::take(&mut self.heard) {
            self.busy
        } else if answered {
            (self.every * 2).min(self.idle)
        } else {
            self.every
        };
        self.every
    }

    /// The room answered a heartbeat.
    pub fn answered(&mut self) {
        self.answered = true;
    }

    /// The room sent a frame of its own (not a pong). True when that ends
    /// an idle spell: the caller brings the next heartbeat and the silence
    /// bound back to the busy interval.
    pub fn heard(&mut self) -> bool {
        self.heard = true;
        if self.every > self.busy {
            self.every = self.busy;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_quiet_room_backs_off_to_the_idle_interval() {
        let mut h = Heartbeat::new(2 * S, 16 * S);
        assert_eq!(h.every(), 2 * S);
        // The first heartbeat has no answer yet.
        assert_eq!(h.sent(), 2 * S);
        let steps: Vec<_> = (0..5)
            .map(|_| {
                h.answered();
                h.sent()
            })
            .collect();
        assert_eq!(steps, [4 * S, 8 * S, 16 * S, 16 * S, 16 * S]);
    }

    #[test]
    fn an_unanswered_heartbeat_stops_the_backoff() {
        let mut h = Heartbeat::new(2 * S, 16 * S);
        h.answered();
        assert_eq!(h.sent(), 4 * S);
        // No answer: the interval (and with it the silence bound) stays.
        assert_eq!(h.sent(), 4 * S);
        assert_eq!(h.sent(), 4 * S);
        h.answered();
        assert_eq!(h.sent(), 8 * S);
    }

    #[test]
    fn a_frame_brings_the_busy_interval_back() {
        let mut h = Heartbeat::new(2 * S, 16 * S);
        for _ in 0..2 {
            h.answered();
            h.sent();
        }
        assert_eq!(h.every(), 8 * S);
        assert!(h.heard(), "the end of an idle spell is reported");
        assert_eq!(h.every(), 2 * S);
        assert!(!h.heard(), "only once");
        // Heard since the last heartbeat: the next one stays busy.
        h.answered();
        assert_eq!(h.sent(), 2 * S);
        // Then quiet again.
        h.answered();
        assert_eq!(h.sent(), 4 * S);
    }

    #[test]
    fn the_idle_interval_is_never_below_the_busy_one() {
        let mut h = Heartbeat::new(2 * S, S);
        h.answered();
        assert_eq!(h.sent(), 2 * S);
    }
}
