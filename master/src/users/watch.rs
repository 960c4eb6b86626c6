//! Who watches whose presence: each watching connection (room, conn) and
//! its users (at most `MAX_WATCH`), and for each watched user the
//! connections watching. Bounded by connections × `MAX_WATCH`.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// A watching connection: its room and its id there.
pub type Watcher = (String, u64);

#[derive(Debug, Default)]
struct Inner {
    by_watcher: HashMap<Watcher, Vec<String>>,
    by_user: HashMap<String, HashSet<Watcher>>,
}

#[derive(Debug, Default)]
pub struct Watches {
    inner: Mutex<Inner>,
}

impl Inner {
    fn unwatch(&mut self, w: &Watcher) {
        for u in self.by_watcher.remove(w).unwrap_or_default() {
            if let Some(ws) = self.by_user.get_mut(&u) {
                ws.remove(w);
                if ws.is_empty() {
                    self.by_user.remove(&u);
                }
            }
        }
    }
}

impl Watches {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `w` now watches `users` (nothing, when empty).
    pub fn set(&self, w: Watcher, users: &[String]) {
        let mut inner = self.lock();
        inner.unwatch(&w);
        if users.is_empty() {
            return;
        }
        for u in users {
            inner
                .by_user
                .entry(u.clone())
                .or_default()
                .insert(w.clone());
        }
        inner.by_watcher.insert(w, users.to_vec());
    }

    /// Every watcher of `room` is gone (its IPC session ended).
    pub fn room_gone(&self, room: &str) {
        let mut inner = self.lock();
        let gone: Vec<Watcher> = inner
            .by_watcher
            .keys()
            .filter(|(r, _)| r == room)
            .cloned()
            .collect();
        for w in gone {
            inner.unwatch(&w);
        }
    }

    /// Whether any connection watches `user`.
    pub fn is_watched(&self, user: &str) -> bool {
        self.lock().by_user.contains_key(user)
    }

    /// Every watched user.
    pub fn watched(&self) -> Vec<String> {
        self.lock().by_user.keys().cloned().collect()
    }

    /// The connections watching `user`.
    pub fn of(&self, user: &str) -> Vec<Watcher> {
        self.lock()
            .by_user
            .get(user)
            .map(|ws| ws.iter().cloned().collect())
            .unwrap_or_default()
    }
}
