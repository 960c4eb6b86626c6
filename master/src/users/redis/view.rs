//! What this host knows of other hosts' presence: the entries last read
//! for the users watched here (so a Redis outage still answers from the
//! last reading, and entries that expire are noticed), and the state last
//! told to this host's watchers of each user (so they hear of changes
//! only).

use std::collections::{HashMap, HashSet};

use super::wire::Entry;
use crate::users::{Place, Whereabouts};

/// Other hosts' entries of one user, as last read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remote {
    /// (host id, entry), this host's own left out.
    pub entries: Vec<(String, Entry)>,
    /// `chat:seen:<user>`.
    pub seen: Option<u64>,
}

/// This host's places of a user (`here`) and the other hosts' entries
/// still valid at `now`: where the user is, or when last seen.
pub fn combine(here: Whereabouts, remote: Option<&Remote>, now: u64) -> Whereabouts {
    let mut places = here.places;
    let mut last_seen = here.last_seen;
    if let Some(r) = remote {
        for (_, e) in &r.entries {
            if e.expires > now {
                places.extend(e.rooms.iter().map(|room| Place {
                    room: room.clone(),
                    host: e.name.clone(),
                }));
            } else {
                // A host gone silent: the user was there at its last write.
                last_seen = last_seen.max(Some(e.written));
            }
        }
        last_seen = last_seen.max(r.seen);
    }
    Whereabouts {
        last_seen: if places.is_empty() { last_seen } else { None },
        places,
    }
}

#[derive(Debug, Default)]
pub struct View {
    remote: HashMap<String, Remote>,
    told: HashMap<String, bool>,
}

impl View {
    pub fn store(&mut self, user: &str, remote: Remote) {
        self.remote.insert(user.to_owned(), remote);
    }

    pub fn cached(&self, user: &str) -> Option<&Remote> {
        self.remote.get(user)
    }

    /// Records that the watchers of `user` were told `online`; `true`
    /// when that differs from what they were told before.
    pub fn tell(&mut self, user: &str, online: bool) -> bool {
        self.told.insert(user.to_owned(), online) != Some(online)
    }

    /// Users told online only because of other hosts' entries, all of which
    /// have expired by `now` (their host stopped refreshing): to read again.
    pub fn expired(&self, now: u64) -> Vec<String> {
        self.told
            .iter()
            .filter(|(_, online)| **online)
            .filter(|(u, _)| {
                self.remote.get(*u).is_some_and(|r| {
                    !r.entries.is_empty() && r.entries.iter().all(|(_, e)| e.expires <= now)
                })
            })
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Forgets the users nobody here watches any more.
    pub fn retain(&mut self, watched: &HashSet<String>) {
        self.remote.retain(|u, _| watched.contains(u));
        self.told.retain(|u, _| watched.contains(u));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rooms: &[&str], written: u64, expires: u64) -> (String, Entry) {
        (
            "h2".into(),
            Entry {
                name: "host2".into(),
                rooms: rooms.iter().map(|r| r.to_string()).collect(),
                written,
                expires,
            },
        )
    }

    #[test]
    fn combine_and_expiry() {
        let here = Whereabouts {
            places: vec![],
            last_seen: Some(5),
        };
        let r = Remote {
            entries: vec![entry(&["b"], 10, 100)],
            seen: Some(7),
        };
        let w = combine(here.clone(), Some(&r), 50);
        assert!(w.online());
        assert_eq!(
            w.places,
            vec![Place {
                room: "b".into(),
                host: "host2".into()
            }]
        );
        assert_eq!(w.last_seen, None);
        // The host stopped refreshing: offline, seen at its last write.
        let w = combine(here, Some(&r), 100);
        assert!(!w.online());
        assert_eq!(w.last_seen, Some(10));

        let mut v = View::default();
        v.store("u", r);
        assert!(v.tell("u", true));
        assert!(!v.tell("u", true));
        assert!(v.expired(50).is_empty());
        assert_eq!(v.expired(100), vec!["u".to_owned()]);
        v.retain(&HashSet::new());
        assert!(v.cached("u").is_none());
        assert!(v.tell("u", false));
    }
}
