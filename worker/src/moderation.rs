//! The room's own moderation state: bans and unbans not yet in the store,
//! mutes and the slow-mode clock of each user. All of it outlives a user's
//! connections; expired entries are forgotten as new ones come.
//!
//! A moderator's `ban` (and `unban`) goes to the master, which stores it in
//! `bans` scoped to this room; the reference data then carries it back, and
//! the room forgets its own copy (`settle`). Until then the room's copy
//! decides, so a ban holds at once and an unban lifts at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chat_shared::ipc::Ban;

/// A moderator's order on its way to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// Banned from this room, with the reason.
    Ban(String),
    /// This room's stored ban is lifted.
    Unban,
}

/// Bans, mutes and slow mode of one room.
#[derive(Debug, Default)]
pub struct Moderation {
    /// Moderators' bans and unbans the reference data does not carry yet.
    pending: HashMap<String, Pending>,
    /// Muted users and until when.
    mutes: HashMap<String, Instant>,
    /// Time of each user's last `say`, for slow mode.
    last_say: HashMap<String, Instant>,
}

impl Moderation {
    /// Bans a user from the room until the store's ban comes back in the
    /// reference data `bans`.
    pub fn ban(&mut self, user_id: &str, reason: &str) {
        self.pending
            .insert(user_id.to_owned(), Pending::Ban(reason.to_owned()));
    }

    /// Lifts the room's ban of a user: a pending one at once, a stored one
    /// (in `bans`) until the reference data no longer carries it.
    pub fn unban(&mut self, user_id: &str, room: &str, bans: &[Ban]) {
        if bans.iter().any(|b| room_ban(b, user_id, room)) {
            self.pending.insert(user_id.to_owned(), Pending::Unban);
        } else {
            self.pending.remove(user_id);
        }
    }

    /// Forgets the orders the reference data `bans` now reflects.
    pub fn settle<'a>(&mut self, room: &str, bans_of: impl Fn(&str) -> &'a [Ban], now_ms: u64) {
        self.pending.retain(|user, p| {
            let bans = bans_of(user);
            let stored = bans
                .iter()
                .any(|b| room_ban(b, user, room) && b.applies(user, room, now_ms));
            match p {
                Pending::Ban(_) => !stored,
                Pending::Unban => bans.iter().any(|b| room_ban(b, user, room)),
            }
        });
    }

    /// The orders not yet in the reference data (sent again after the
    /// master link comes back).
    pub fn pending(&self) -> impl Iterator<Item = (&String, &Pending)> {
        self.pending.iter()
    }

    /// Why a user may not be here: a pending ban, or one of the store's
    /// `bans` for this `room` at `now_ms` (a pending unban lifts this
    /// room's, not a ban of every room).
    pub fn ban_reason(
        &self,
        user_id: &str,
        room: &str,
        bans: &[Ban],
        now_ms: u64,
    ) -> Option<String> {
        let unbanned = match self.pending.get(user_id) {
            Some(Pending::Ban(r)) => return Some(r.clone()),
            Some(Pending::Unban) => true,
            None => false,
        };
        bans.iter()
            .filter(|b| !(unbanned && b.room.is_some()))
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

/// Whether `b` is `user`'s ban of exactly this `room`.
fn room_ban(b: &Ban, user: &str, room: &str) -> bool {
    b.user_id == user && b.room.as_deref() == Some(room)
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

    fn stored(user: &str, room: Option<&str>, reason: &str) -> Ban {
        Ban {
            user_id: user.into(),
            room: room.map(str::to_owned),
            until_ms: None,
            reason: Some(reason.into()),
        }
    }

    #[test]
    fn a_ban_is_pending_until_stored_then_the_store_decides() {
        let mut m = Moderation::default();
        m.ban("x", "spam");
        m.settle("r", |_| &[], 0);
        assert_eq!(m.pending().count(), 1, "not stored yet");
        let bans = vec![stored("x", Some("r"), "spam")];
        m.settle("r", |_| bans.as_slice(), 0);
        assert_eq!(m.pending().count(), 0);
        assert_eq!(m.ban_reason("x", "r", &bans, 0).as_deref(), Some("spam"));
        // Lifted by an operator: the store's copy is gone, so is the ban.
        assert_eq!(m.ban_reason("x", "r", &[], 0), None);
    }

    #[test]
    fn an_unban_lifts_the_room_ban_at_once_not_a_global_one() {
        let mut m = Moderation::default();
        let bans = vec![stored("x", Some("r"), "spam")];
        m.unban("x", "r", &bans);
        assert_eq!(m.ban_reason("x", "r", &bans, 0), None);
        let both = vec![stored("x", Some("r"), "spam"), stored("x", None, "global")];
        assert_eq!(m.ban_reason("x", "r", &both, 0).as_deref(), Some("global"));
        // The store's removal comes back: nothing pending.
        m.settle("r", |_| &[], 0);
        assert_eq!(m.pending().count(), 0);
        // An unban of a pending ban that never reached the store.
        m.ban("y", "spam");
        m.unban("y", "r", &[]);
        assert_eq!(m.pending().count(), 0);
        assert_eq!(m.ban_reason("y", "r", &[], 0), None);
    }
}
