//! The room's own moderation state: bans (with their reason), mutes and
//! the slow-mode clock of each user. All of it outlives a user's
//! connections; expired entries are forgotten as new ones come.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chat_shared::ipc::Ban;

/// Bans, mutes and slow mode of one room.
#[derive(Debug, Default)]
pub struct Moderation {
    /// Users banned from this room, with the reason.
    bans: HashMap<String, String>,
    /// Muted users and until when.
    mutes: HashMap<String, Instant>,
    /// Time of each user's last `say`, for slow mode.
    last_say: HashMap<String, Instant>,
}

impl Moderation {
    /// Bans a user from the room.
    pub fn ban(&mut self, user_id: &str, reason: &str) {
        self.bans.insert(user_id.to_owned(), reason.to_owned());
    }

    /// Why a user may not be here: a room ban, or one of the store's
    /// `bans` for this `room` at `now_ms`.
    pub fn ban_reason(
        &self,
        user_id: &str,
        room: &str,
        bans: &[Ban],
        now_ms: u64,
    ) -> Option<String> {
        if let Some(r) = self.bans.get(user_id) {
            return Some(r.clone());
        }
        bans.iter()
            .find(|b| b.applies(user_id, room, now_ms))
            .map(|b| b.reason.clone().unwrap_or_else(|| "banned".into()))
    }

    /// Mutes a user for `d` from `now`.
    pub fn mute(&mut self, user_id: &str, now: Instant, d: Duration) {
        self.mutes.retain(|_, until| *until > now);
        self.mutes.insert(user_id.to_owned(), now + d);
    }

    /// Remaining mute of a user at `now`, if any (an expired one is
    /// forgotten).
    pub fn muted_for(&mut self, user_id: &str, now: Instant) -> Option<Duration> {
        match self.mutes.get(user_id) {
            Some(&until) if until > now => Some(until - now),
            Some(_) => {
                self.mutes.remove(user_id);
                None
            }
            None => None,
        }
    }

    /// Slow mode: the wait left before `user_id` may say again, or `None`
    /// and the say is counted at `now`.
    pub fn slow_mode(&mut self, user_id: &str, now: Instant, slow: Duration) -> Option<Duration> {
        if let Some(&last) = self.last_say.get(user_id)
            && now < last + slow
        {
            return Some(last + slow - now);
        }
        // Forget users whose window has passed, so the map stays small.
        self.last_say.retain(|_, t| now < *t + slow);
        self.last_say.insert(user_id.to_owned(), now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutes_and_slow_mode_expire() {
        let mut m = Moderation::default();
        let t0 = Instant::now();
        m.mute("x", t0, Duration::from_secs(10));
        assert_eq!(m.muted_for("x", t0), Some(Duration::from_secs(10)));
        assert_eq!(m.muted_for("x", t0 + Duration::from_secs(10)), None);
        assert_eq!(m.muted_for("y", t0), None);
        let slow = Duration::from_secs(2);
        assert_eq!(m.slow_mode("x", t0, slow), None);
        assert_eq!(
            m.slow_mode("x", t0 + Duration::from_secs(1), slow),
            Some(Duration::from_secs(1))
        );
        assert_eq!(m.slow_mode("x", t0 + slow, slow), None);
    }

    #[test]
    fn room_bans_and_store_bans() {
        let mut m = Moderation::default();
        m.ban("x", "spam");
        let store = vec![Ban {
            user_id: "y".into(),
            room: Some("r".into()),
            until_ms: Some(100),
            reason: None,
        }];
        assert_eq!(m.ban_reason("x", "r", &store, 0).as_deref(), Some("spam"));
        assert_eq!(
            m.ban_reason("y", "r", &store, 50).as_deref(),
            Some("banned")
        );
        assert_eq!(m.ban_reason("y", "r", &store, 100), None);
        assert_eq!(m.ban_reason("y", "other", &store, 50), None);
    }
}
