//! Reference data as a room holds it: keyed by user id, so that applying a
//! delta (or one chunk of it) costs what changed, not what the room holds.
//! The wire form ([`Reference`], [`ReferenceDelta`]) stays lists.

use std::collections::HashMap;

use crate::ipc::{Ban, Filter, Reference, ReferenceDelta};

/// Reference data keyed by user id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceIndex {
    /// Increases with every change.
    pub version: u64,
    users: HashMap<String, String>,
    bans: HashMap<String, Vec<Ban>>,
    filters: Vec<Filter>,
}

impl ReferenceIndex {
    /// The whole of `r`.
    pub fn from_reference(r: Reference) -> Self {
        let mut bans: HashMap<String, Vec<Ban>> = HashMap::new();
        for b in r.bans {
            bans.entry(b.user_id.clone()).or_default().push(b);
        }
        Self {
            version: r.version,
            users: r.users.into_iter().collect(),
            bans,
            filters: r.filters,
        }
    }

    /// The wire form, users and bans sorted by user id.
    pub fn to_reference(&self) -> Reference {
        let mut users: Vec<(String, String)> = self
            .users
            .iter()
            .map(|(i, n)| (i.clone(), n.clone()))
            .collect();
        users.sort_unstable();
        let mut bans: Vec<&String> = self.bans.keys().collect();
        bans.sort_unstable();
        Reference {
            version: self.version,
            users,
            bans: bans
                .into_iter()
                .flat_map(|u| self.bans[u].iter().cloned())
                .collect(),
            filters: self.filters.clone(),
        }
    }

    /// Applies a delta (or chunk) in the time of its own size; `false` (and
    /// nothing changed) when it does not apply to this version.
    pub fn apply(&mut self, d: &ReferenceDelta) -> bool {
        match d.base {
            None => *self = Self::default(),
            Some(b) if b == self.version => {}
            Some(_) => return false,
        }
        self.version = d.version;
        for (id, name) in &d.users {
            match name {
                Some(n) => {
                    self.users.insert(id.clone(), n.clone());
                }
                None => {
                    self.users.remove(id);
                }
            }
        }
        for (id, bans) in &d.bans {
            if bans.is_empty() {
                self.bans.remove(id);
            } else {
                self.bans.insert(id.clone(), bans.clone());
            }
        }
        if let Some(f) = &d.filters {
            self.filters = f.clone();
        }
        true
    }

    /// The profile name of a user, if the platform set one.
    pub fn name(&self, user_id: &str) -> Option<&str> {
        self.users.get(user_id).map(String::as_str)
    }

    /// Every ban of a user (any room).
    pub fn bans_of(&self, user_id: &str) -> &[Ban] {
        self.bans.get(user_id).map_or(&[], Vec::as_slice)
    }

    pub fn filters(&self) -> &[Filter] {
        &self.filters
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn banned_user_count(&self) -> usize {
        self.bans.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunks::{self, CHUNK_BYTES};
    use crate::ipc::MasterMsg;

    fn ban(user: &str, reason: &str) -> Ban {
        Ban {
            user_id: user.into(),
            room: None,
            until_ms: None,
            reason: Some(reason.into()),
        }
    }

    fn reference(version: u64, users: usize, tag: &str) -> Reference {
        Reference {
            version,
            users: (0..users)
                .map(|i| (format!("user-{i:07}"), format!("{tag} {i}")))
                .collect(),
            bans: vec![ban("user-0000001", tag)],
            filters: vec![Filter {
                pattern: tag.into(),
                reject: false,
            }],
        }
    }

    #[test]
    fn a_delta_turns_old_into_new() {
        let old = reference(3, 50, "old");
        let mut new = reference(4, 40, "old");
        new.users[5].1 = "renamed".into();
        new.users.push(("user-x".into(), "x".into()));
        new.bans = vec![ban("user-0000002", "b"), ban("user-0000002", "c")];
        new.filters.push(Filter {
            pattern: "/x+/".into(),
            reject: true,
        });
        let mut r = ReferenceIndex::from_reference(old.clone());
        assert!(r.apply(&chunks::delta(&old, &new)));
        assert_eq!(r.to_reference(), new);
        assert_eq!(r.name("user-0000005"), Some("renamed"));
        assert_eq!(r.name("user-0000045"), None);
        assert!(r.bans_of("user-0000001").is_empty());
        assert_eq!(r.bans_of("user-0000002").len(), 2);
        assert_eq!(r.filters().len(), 2);
        // Not on another version, and nothing changes.
        let before = r.clone();
        assert!(!r.apply(&chunks::delta(&old, &new)));
        assert_eq!(r, before);
    }

    #[test]
    fn the_full_data_in_chunks_replaces_whatever_was_there() {
        // About 40 MB of profiles: many frames that each fit the IPC limit,
        // each applied in the time of its own size.
        let big = reference(9, 400_000, &"n".repeat(80));
        let chunks = chunks::split(chunks::full(&big), CHUNK_BYTES);
        assert!(chunks.len() > 30, "{}", chunks.len());
        let mut r = ReferenceIndex::from_reference(reference(2, 3, "stale"));
        for c in &chunks {
            let frame = postcard::to_allocvec(&MasterMsg::ReferenceDelta(Box::new(c.clone())))
                .expect("encodes");
            assert!(frame.len() <= CHUNK_BYTES + 1024, "{}", frame.len());
            assert!(r.apply(c));
        }
        assert_eq!(r.to_reference(), big);
        assert_eq!(r.user_count(), 400_000);
        assert_eq!(r.banned_user_count(), 1);
    }

    #[test]
    fn a_change_of_one_profile_among_many_touches_one_entry() {
        let old = reference(1, 100_000, "a");
        let mut new = old.clone();
        new.version = 2;
        new.users[77].1 = "changed".into();
        let d = chunks::delta(&old, &new);
        assert_eq!(d.users.len(), 1);
        assert!(d.bans.is_empty());
        let mut r = ReferenceIndex::from_reference(old);
        assert!(r.apply(&d));
        assert_eq!(r.version, 2);
        assert_eq!(r.name("user-0000077"), Some("changed"));
        assert_eq!(r.user_count(), 100_000);
    }
}
