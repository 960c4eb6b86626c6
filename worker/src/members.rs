//! The room's members: each user with their connections, and the order of
//! the member list (by name, then id) kept as members come and go, so a
//! page of members never sorts the whole room.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use chat_shared::protocol::{Member, Role, UserRef};

use crate::limits::Bucket;
use crate::outbound::Outbound;

/// One WebSocket connection of a member.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub user_id: String,
    pub out: Arc<Outbound>,
    /// Pings sent without any frame received since.
    pub missed_pings: AtomicU32,
    pub bucket: Bucket,
    pub strikes: Bucket,
}

/// A member: one user with one or more connections.
#[derive(Debug)]
pub struct User {
    pub id: String,
    /// Changed only through [`Members::upsert`] (it orders the list).
    pub name: String,
    pub role: Role,
    pub conns: Vec<Arc<Conn>>,
    pub last_typing: Option<Instant>,
    pub bucket: Bucket,
}

impl User {
    pub fn user_ref(&self) -> UserRef {
        UserRef {
            id: self.id.clone(),
            name: self.name.clone(),
            guest: self.role == Role::Guest,
        }
    }

    pub fn member(&self) -> Member {
        Member {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
            connections: u32::try_from(self.conns.len()).unwrap_or(u32::MAX),
            guest: self.role == Role::Guest,
        }
    }
}

/// Every member by id, their order by (name, id), and the signed-in
/// members by the skeleton of their name (so a join's look-alike check
/// costs one look-up, not one comparison per member).
#[derive(Debug, Default)]
pub struct Members {
    users: HashMap<String, User>,
    order: BTreeSet<(String, String)>,
    /// Name skeleton → ids of signed-in (non-guest) members with it.
    skeletons: HashMap<String, Vec<String>>,
}

impl Members {
    pub fn get(&self, id: &str) -> Option<&User> {
        self.users.get(id)
    }

    /// A member to change; not its name (see [`Members::upsert`]).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut User> {
        self.users.get_mut(id)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.users.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn values(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.users.keys()
    }

    /// The member `id`, added with `name` and `role` if new; an existing
    /// member takes the new name and role (the latest connection wins).
    pub fn upsert(&mut self, id: &str, name: &str, role: Role) -> &mut User {
        // The skeleton index follows the name and whether the member is
        // signed in.
        let indexed = self
            .users
            .get(id)
            .filter(|u| u.role != Role::Guest)
            .map(|u| u.name.clone());
        let index = role != Role::Guest;
        match indexed {
            Some(old) if index && old == name => {}
            Some(old) => {
                unindex(&mut self.skeletons, &old, id);
                if index {
                    self.index(name, id);
                }
            }
            None if index => self.index(name, id),
            None => {}
        }
        let user = self.users.entry(id.to_owned()).or_insert_with(|| User {
            id: id.to_owned(),
            name: name.to_owned(),
            role,
            conns: Vec::new(),
            last_typing: None,
            bucket: Bucket::user(),
        });
        if user.name != name {
            self.order.remove(&(user.name.clone(), id.to_owned()));
            user.name = name.to_owned();
        }
        user.role = role;
        self.order.insert((user.name.clone(), id.to_owned()));
        user
    }

    pub fn remove(&mut self, id: &str) -> Option<User> {
        let user = self.users.remove(id)?;
        self.order.remove(&(user.name.clone(), user.id.clone()));
        if user.role != Role::Guest {
            unindex(&mut self.skeletons, &user.name, id);
        }
        Some(user)
    }

    fn index(&mut self, name: &str, id: &str) {
        self.skeletons
            .entry(crate::confusables::name_skeleton(name))
            .or_default()
            .push(id.to_owned());
    }

    /// The signed-in members other than `id` whose name has `skeleton`.
    pub fn signed_in_like(&self, skeleton: &str, id: &str) -> impl Iterator<Item = &User> {
        self.skeletons
            .get(skeleton)
            .into_iter()
            .flatten()
            .filter(move |other| other.as_str() != id)
            .filter_map(|other| self.users.get(other))
    }

    /// A page of members ordered by (name, id), after the member `after`;
    /// and whether more follow.
    pub fn page(&self, after: Option<&str>, limit: usize) -> (Vec<Member>, bool) {
        use std::ops::Bound;
        let from = match after.and_then(|id| self.users.get(id)) {
            Some(u) => Bound::Excluded((u.name.clone(), u.id.clone())),
            None => Bound::Unbounded,
        };
        let mut ids = self.order.range((from, Bound::Unbounded));
        let members = ids
            .by_ref()
            .take(limit)
            .filter_map(|(_, id)| self.users.get(id).map(User::member))
            .collect();
        (members, ids.next().is_some())
    }
}

/// Drops `id` from the skeleton index under `name`.
fn unindex(skeletons: &mut HashMap<String, Vec<String>>, name: &str, id: &str) {
    let key = crate::confusables::name_skeleton(name);
    if let Some(ids) = skeletons.get_mut(&key) {
        ids.retain(|i| i != id);
        if ids.is_empty() {
            skeletons.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &[Member]) -> Vec<&str> {
        p.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn pages_follow_name_then_id_as_members_change() {
        let mut m = Members::default();
        for (id, name) in [("c", "Bea"), ("a", "Cy"), ("b", "Bea"), ("d", "Al")] {
            m.upsert(id, name, Role::Member);
        }
        let (p, more) = m.page(None, 2);
        assert_eq!(names(&p), vec!["d", "b"]);
        assert!(more);
        let (p, more) = m.page(Some("b"), 2);
        assert_eq!(names(&p), vec!["c", "a"]);
        assert!(!more);
        // A rename moves the member; a removal drops it.
        m.upsert("a", "Aa", Role::Moderator);
        m.remove("d");
        let (p, more) = m.page(None, 10);
        assert_eq!(names(&p), vec!["a", "b", "c"]);
        assert_eq!(p[0].role, Role::Moderator);
        assert!(!more);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn look_alikes_are_found_among_signed_in_members_only() {
        let mut m = Members::default();
        m.upsert("u1", "Alice", Role::Member);
        m.upsert("g1", "Bob", Role::Guest);
        let like = |m: &Members, name: &str, id: &str| -> Vec<String> {
            let key = crate::confusables::name_skeleton(name);
            m.signed_in_like(&key, id).map(|u| u.id.clone()).collect()
        };
        assert_eq!(like(&m, "ALICE", "x"), vec!["u1"]);
        assert!(like(&m, "alice", "u1").is_empty(), "not oneself");
        assert!(like(&m, "bob", "x").is_empty(), "guests are not indexed");
        // A rename and a removal follow.
        m.upsert("u1", "Carol", Role::Moderator);
        assert!(like(&m, "alice", "x").is_empty());
        assert_eq!(like(&m, "carol", "x"), vec!["u1"]);
        m.upsert("g1", "Bob", Role::Member);
        assert_eq!(like(&m, "bob", "x"), vec!["g1"]);
        m.upsert("g1", "Bob", Role::Guest);
        assert!(like(&m, "bob", "x").is_empty());
        m.remove("u1");
        assert!(like(&m, "carol", "x").is_empty());
        assert!(m.skeletons.is_empty());
    }
}
