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

/// Every member by id, and their order by (name, id).
#[derive(Debug, Default)]
pub struct Members {
    users: HashMap<String, User>,
    order: BTreeSet<(String, String)>,
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
        Some(user)
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
}
