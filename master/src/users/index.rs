//! Which rooms of this host hold which token users: rooms report a user's
//! first connection and last disconnection (`WorkerMsg::UserJoined` /
//! `UserLeft`) and their whole list after a (re)link (`Users`); a room's
//! entries go when its IPC session ends. Bounded by the connections: one
//! entry per (user, room) present.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

/// A user who came online (`true`) or went offline (`false`).
pub type Change = (String, bool);

/// Users whose last-seen time is remembered at most (one entry goes when
/// another comes past it).
const MAX_LAST_SEEN: usize = 100_000;

#[derive(Debug, Default)]
struct Inner {
    /// user → the rooms holding at least one of their connections.
    rooms_of: HashMap<String, BTreeSet<String>>,
    /// room → (the IPC session that reported, its users).
    users_in: HashMap<String, (u64, HashSet<String>)>,
    /// user → when their last connection on this host closed (Unix ms),
    /// while they are offline.
    last_seen: HashMap<String, u64>,
}

/// The index (one lock; every operation is a few map updates).
#[derive(Debug, Default)]
pub struct Index {
    inner: Mutex<Inner>,
}

impl Inner {
    /// Adds `user` to `room`; `true` when they just came online.
    fn add(&mut self, room: &str, session: u64, user: &str) -> bool {
        let (s, users) = self
            .users_in
            .entry(room.to_owned())
            .or_insert_with(|| (session, HashSet::new()));
        *s = session;
        users.insert(user.to_owned());
        self.last_seen.remove(user);
        let rooms = self.rooms_of.entry(user.to_owned()).or_default();
        let first = rooms.is_empty();
        rooms.insert(room.to_owned());
        first
    }

    fn remove(&mut self, room: &str, user: &str) -> bool {
        if let Some((_, users)) = self.users_in.get_mut(room) {
            users.remove(user);
        }
        self.gone_from(user, room)
    }

    /// `user` has no connection in `room` any more; offline after their
    /// last room (then `true`).
    fn gone_from(&mut self, user: &str, room: &str) -> bool {
        let Some(rooms) = self.rooms_of.get_mut(user) else {
            return false;
        };
        rooms.remove(room);
        let gone = rooms.is_empty();
        if gone {
            self.rooms_of.remove(user);
            if self.last_seen.len() >= MAX_LAST_SEEN
                && let Some(k) = self.last_seen.keys().next().cloned()
            {
                self.last_seen.remove(&k);
            }
            self.last_seen
                .insert(user.to_owned(), crate::registry::now_ms());
        }
        gone
    }

    /// Forgets `room`; the users it took offline.
    fn clear(&mut self, room: &str) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some((_, users)) = self.users_in.remove(room) {
            for u in users {
                if self.gone_from(&u, room) {
                    out.push((u, false));
                }
            }
        }
        out
    }
}

impl Index {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The presence changes it made.
    pub fn joined(&self, room: &str, session: u64, user: &str) -> Vec<Change> {
        let online = self.lock().add(room, session, user);
        online
            .then(|| (user.to_owned(), true))
            .into_iter()
            .collect()
    }

    pub fn left(&self, room: &str, user: &str) -> Vec<Change> {
        let offline = self.lock().remove(room, user);
        offline
            .then(|| (user.to_owned(), false))
            .into_iter()
            .collect()
    }

    /// A room's list after a (re)link: `reset` forgets what was known.
    pub fn listed(&self, room: &str, session: u64, reset: bool, users: &[String]) -> Vec<Change> {
        let mut inner = self.lock();
        let mut changes = Vec::new();
        if reset {
            changes = inner.clear(room);
        }
        inner
            .users_in
            .entry(room.to_owned())
            .or_insert_with(|| (session, HashSet::new()));
        for u in users {
            if inner.add(room, session, u) {
                // Offline then online again within the reset: no change.
                match changes.iter().position(|(c, _)| c == u) {
                    Some(i) => {
                        changes.remove(i);
                    }
                    None => changes.push((u.clone(), true)),
                }
            }
        }
        changes
    }

    /// The IPC session `session` of `room` ended: its users are gone from
    /// it (unless a newer session of the room already reported).
    pub fn session_ended(&self, room: &str, session: u64) -> Vec<Change> {
        let mut inner = self.lock();
        if inner.users_in.get(room).is_some_and(|(s, _)| *s == session) {
            inner.clear(room)
        } else {
            Vec::new()
        }
    }

    /// The rooms holding `user`.
    pub fn rooms_of(&self, user: &str) -> Vec<String> {
        self.lock()
            .rooms_of
            .get(user)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every user on this host with their rooms.
    pub fn all(&self) -> Vec<(String, Vec<String>)> {
        self.lock()
            .rooms_of
            .iter()
            .map(|(u, r)| (u.clone(), r.iter().cloned().collect()))
            .collect()
    }

    /// When `user`'s last connection on this host closed (`None`: online,
    /// or not seen since this master started).
    pub fn last_seen(&self, user: &str) -> Option<u64> {
        self.lock().last_seen.get(user).copied()
    }

    /// For each room holding any of `users`: the room and those of them
    /// it holds.
    pub fn rooms_of_all(&self, users: &[String]) -> Vec<(String, Vec<String>)> {
        let inner = self.lock();
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for u in users {
            for r in inner.rooms_of.get(u).into_iter().flatten() {
                match out.iter_mut().find(|(room, _)| room == r) {
                    Some((_, us)) => {
                        if !us.contains(u) {
                            us.push(u.clone());
                        }
                    }
                    None => out.push((r.clone(), vec![u.clone()])),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_leaves_and_sessions() {
        let ix = Index::default();
        assert_eq!(ix.joined("a", 1, "u1"), vec![("u1".into(), true)]);
        assert!(ix.joined("b", 2, "u1").is_empty());
        ix.joined("b", 2, "u2");
        assert_eq!(ix.rooms_of("u1"), vec!["a", "b"]);
        let all = ix.rooms_of_all(&["u1".into(), "u2".into()]);
        assert_eq!(
            all,
            vec![
                ("a".into(), vec!["u1".into()]),
                ("b".into(), vec!["u1".into(), "u2".into()])
            ]
        );
        assert!(ix.left("a", "u1").is_empty());
        assert_eq!(ix.rooms_of("u1"), vec!["b"]);
        // A newer session of b reported: the old one's end changes nothing.
        assert_eq!(
            ix.listed("b", 3, true, &["u2".into()]),
            vec![("u1".into(), false)]
        );
        ix.session_ended("b", 2);
        assert!(ix.rooms_of("u1").is_empty());
        assert_eq!(ix.rooms_of("u2"), vec!["b"]);
        assert_eq!(ix.session_ended("b", 3), vec![("u2".into(), false)]);
        assert!(ix.rooms_of("u2").is_empty());
        assert!(ix.last_seen("u2").is_some());
        ix.joined("a", 4, "u2");
        assert_eq!(ix.last_seen("u2"), None);
    }
}
