//! Which rooms of this host hold which token users: rooms report a user's
//! first connection and last disconnection (`WorkerMsg::UserJoined` /
//! `UserLeft`) and their whole list after a (re)link (`Users`); a room's
//! entries go when its IPC session ends. Bounded by the connections: one
//! entry per (user, room) present.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

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
    fn add(&mut self, room: &str, session: u64, user: &str) {
        let (s, users) = self
            .users_in
            .entry(room.to_owned())
            .or_insert_with(|| (session, HashSet::new()));
        *s = session;
        users.insert(user.to_owned());
        self.last_seen.remove(user);
        self.rooms_of
            .entry(user.to_owned())
            .or_default()
            .insert(room.to_owned());
    }

    fn remove(&mut self, room: &str, user: &str) {
        if let Some((_, users)) = self.users_in.get_mut(room) {
            users.remove(user);
        }
        self.gone_from(user, room);
    }

    /// `user` has no connection in `room` any more; offline after their last room.
    fn gone_from(&mut self, user: &str, room: &str) {
        let Some(rooms) = self.rooms_of.get_mut(user) else {
            return;
        };
        rooms.remove(room);
        if rooms.is_empty() {
            self.rooms_of.remove(user);
            if self.last_seen.len() >= MAX_LAST_SEEN
                && let Some(k) = self.last_seen.keys().next().cloned()
            {
                self.last_seen.remove(&k);
            }
            self.last_seen
                .insert(user.to_owned(), crate::registry::now_ms());
        }
    }

    fn clear(&mut self, room: &str) {
        if let Some((_, users)) = self.users_in.remove(room) {
            for u in users {
                self.gone_from(&u, room);
            }
        }
    }
}

impl Index {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn joined(&self, room: &str, session: u64, user: &str) {
        self.lock().add(room, session, user);
    }

    pub fn left(&self, room: &str, user: &str) {
        self.lock().remove(room, user);
    }

    /// A room's list after a (re)link: `reset` forgets what was known.
    pub fn listed(&self, room: &str, session: u64, reset: bool, users: &[String]) {
        let mut inner = self.lock();
        if reset {
            inner.clear(room);
        }
        inner
            .users_in
            .entry(room.to_owned())
            .or_insert_with(|| (session, HashSet::new()));
        for u in users {
            inner.add(room, session, u);
        }
    }

    /// The IPC session `session` of `room` ended: its users are gone from
    /// it (unless a newer session of the room already reported).
    pub fn session_ended(&self, room: &str, session: u64) {
        let mut inner = self.lock();
        if inner.users_in.get(room).is_some_and(|(s, _)| *s == session) {
            inner.clear(room);
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
        ix.joined("a", 1, "u1");
        ix.joined("b", 2, "u1");
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
        ix.left("a", "u1");
        assert_eq!(ix.rooms_of("u1"), vec!["b"]);
        // A newer session of b reported: the old one's end changes nothing.
        ix.listed("b", 3, true, &["u2".into()]);
        ix.session_ended("b", 2);
        assert!(ix.rooms_of("u1").is_empty());
        assert_eq!(ix.rooms_of("u2"), vec!["b"]);
        ix.session_ended("b", 3);
        assert!(ix.rooms_of("u2").is_empty());
        assert!(ix.last_seen("u2").is_some());
        ix.joined("a", 4, "u2");
        assert_eq!(ix.last_seen("u2"), None);
    }
}
