//! Announcing arrivals and departures. In a room no larger than the
//! welcome's member page every first connection is a `joined` and every
//! last one a `left`, at once. In a larger room they are gathered into one
//! `members_changed` frame sent at most once per [`BATCH_EVERY`]: a join
//! storm of N clients would otherwise send N frames to each of N members
//! (10,000 joins were 50 million deliveries), where the batches send about
//! one frame per member per second whatever the rate of joins.
//!
//! Invariant: while a batch is open every announcement goes into it, so a
//! member never sees a `left` before the batched `joined` of the same user.

use std::sync::Arc;
use std::time::Duration;

use chat_shared::protocol::{Member, ServerMsg, UserRef};
use tokio::sync::Notify;

/// Rooms with at most this many members announce each arrival and
/// departure on its own (their members hold the whole list from `welcome`).
pub const EACH_UP_TO: usize = crate::room::WELCOME_MEMBERS;
/// Shortest time between two `members_changed` frames.
pub const BATCH_EVERY: Duration = Duration::from_secs(1);
/// Members listed in each list of a `members_changed` frame.
pub const BATCH_LIST: usize = 50;

/// What happens to one announcement.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// Send it now, as `joined` or `left`.
    Now,
    /// Gathered into the open batch (the flusher has been woken).
    Batched,
}

/// The open batch of a large room, if any.
#[derive(Debug, Default)]
pub struct Announcements {
    open: bool,
    joined: Vec<Member>,
    left: Vec<UserRef>,
    more: bool,
    /// Wakes the flusher (see `timers::members_batches`) when a batch opens.
    pub wake: Arc<Notify>,
}

impl Announcements {
    /// A member's first connection arrived; `members` is the room's size
    /// before it.
    pub fn joined(&mut self, user: &Member, members: usize) -> Route {
        if !self.open_for(members) {
            return Route::Now;
        }
        // Left and back within one batch: listed as here, with the new
        // name and role.
        self.left.retain(|u| u.id != user.id);
        self.joined.retain(|u| u.id != user.id);
        if self.joined.len() < BATCH_LIST {
            self.joined.push(user.clone());
        } else {
            self.more = true;
        }
        Route::Batched
    }

    /// A member's last connection closed; `members` is the room's size
    /// before it.
    pub fn left(&mut self, user: &UserRef, members: usize) -> Route {
        if !self.open_for(members) {
            return Route::Now;
        }
        let before = self.joined.len();
        self.joined.retain(|u| u.id != user.id);
        if self.joined.len() < before {
            // Came and went within one batch: nobody was told it came.
            return Route::Batched;
        }
        if self.left.len() < BATCH_LIST {
            self.left.push(user.clone());
        } else {
            self.more = true;
        }
        Route::Batched
    }

    /// Whether announcements go to a batch (opening one in a large room).
    fn open_for(&mut self, members: usize) -> bool {
        if !self.open && members > EACH_UP_TO {
            self.open = true;
            self.wake.notify_one();
        }
        self.open
    }

    /// Closes the open batch: its frame (none if nothing is left to say).
    pub fn take(&mut self, member_count: usize) -> Option<ServerMsg> {
        if !self.open {
            return None;
        }
        self.open = false;
        let joined = std::mem::take(&mut self.joined);
        let left = std::mem::take(&mut self.left);
        let more = std::mem::take(&mut self.more);
        if joined.is_empty() && left.is_empty() && !more {
            return None;
        }
        Some(ServerMsg::MembersChanged {
            joined,
            left,
            more,
            member_count: u32::try_from(member_count).unwrap_or(u32::MAX),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_shared::protocol::Role;

    fn member(id: &str) -> Member {
        Member {
            id: id.into(),
            name: id.into(),
            role: Role::Member,
            connections: 1,
            guest: false,
        }
    }

    fn user(id: &str) -> UserRef {
        UserRef {
            id: id.into(),
            name: id.into(),
            guest: false,
        }
    }

    fn lists(m: ServerMsg) -> (Vec<String>, Vec<String>, bool, u32) {
        match m {
            ServerMsg::MembersChanged {
                joined,
                left,
                more,
                member_count,
            } => (
                joined.into_iter().map(|u| u.id).collect(),
                left.into_iter().map(|u| u.id).collect(),
                more,
                member_count,
            ),
            other => panic!("not members_changed: {other:?}"),
        }
    }

    #[test]
    fn small_rooms_announce_at_once() {
        let mut a = Announcements::default();
        assert_eq!(a.joined(&member("a"), EACH_UP_TO), Route::Now);
        assert_eq!(a.left(&user("a"), 3), Route::Now);
        assert!(a.take(3).is_none());
    }

    #[test]
    fn large_rooms_batch_until_taken_and_cancel_come_and_go() {
        let mut a = Announcements::default();
        assert_eq!(a.joined(&member("a"), EACH_UP_TO + 1), Route::Batched);
        // Once open, a small room batches too (order is kept).
        assert_eq!(a.joined(&member("b"), 2), Route::Batched);
        assert_eq!(a.left(&user("b"), 3), Route::Batched);
        assert_eq!(a.left(&user("old"), 2), Route::Batched);
        let (joined, left, more, count) = lists(a.take(7).expect("a frame"));
        assert_eq!(joined, vec!["a"]);
        assert_eq!(left, vec!["old"]);
        assert!(!more);
        assert_eq!(count, 7);
        // Taken: the next small-room announcement goes out at once.
        assert_eq!(a.joined(&member("c"), 2), Route::Now);
    }

    #[test]
    fn a_storm_lists_the_first_and_says_there_are_more() {
        let mut a = Announcements::default();
        for i in 0..BATCH_LIST + 10 {
            a.joined(&member(&format!("u{i}")), EACH_UP_TO + i);
        }
        let (joined, left, more, _) = lists(a.take(500).expect("a frame"));
        assert_eq!(joined.len(), BATCH_LIST);
        assert!(left.is_empty());
        assert!(more);
    }

    #[test]
    fn leaving_and_coming_back_lists_the_member_as_here() {
        let mut a = Announcements::default();
        a.left(&user("x"), EACH_UP_TO + 5);
        a.joined(&member("x"), EACH_UP_TO + 4);
        let (joined, left, _, _) = lists(a.take(200).expect("a frame"));
        assert_eq!(joined, vec!["x"]);
        assert!(left.is_empty());
    }
}
