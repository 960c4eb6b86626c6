//! How an event reaches users' live connections and how presence reaches
//! watchers. One host: the master hands it to each of its rooms that holds
//! one of the users (`Local`). Many hosts: the Redis transport
//! (`users/redis/`) implements [`Fanout`] too, delivering here through
//! `Local` and publishing for the other hosts.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chat_shared::direct::{DirectEvent, Presence};
use chat_shared::ipc::MasterMsg;

use super::index::{Change, Index};
use super::watch::Watches;
use crate::registry::Registry;

/// The connection an event must skip: the sender's, in its room.
#[derive(Debug, Clone, Copy)]
pub struct Except<'a> {
    pub room: &'a str,
    pub conn: u64,
}

/// A room holding a user, and the host serving it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub room: String,
    pub host: String,
}

/// Where a user is connected, on every host the transport knows of.
#[derive(Debug, Clone, Default)]
pub struct Whereabouts {
    pub places: Vec<Place>,
    /// When their last connection closed (Unix ms), when offline and known.
    pub last_seen: Option<u64>,
}

impl Whereabouts {
    pub fn online(&self) -> bool {
        !self.places.is_empty()
    }

    pub fn presence(&self, user: &str) -> Presence {
        let online = self.online();
        Presence {
            user: user.to_owned(),
            online,
            last_seen: if online { None } else { self.last_seen },
        }
    }
}

/// Delivery of events to users wherever they are connected, and presence.
#[async_trait]
pub trait Fanout: Send + Sync {
    /// Hands `event` to every live connection of `users`, but `except`.
    /// Never waits: what goes to other hosts is queued.
    fn deliver(&self, users: &[String], except: Option<Except<'_>>, event: &DirectEvent);

    /// Where `user` is connected (every host).
    async fn whereabouts(&self, user: &str) -> Whereabouts;

    /// Whether `user` has at least one live connection (on any host).
    async fn online(&self, user: &str) -> bool {
        self.whereabouts(user).await.online()
    }

    /// Users came online or went offline on this host (`changes`), or only
    /// changed rooms here (`touched`): the watchers are told what changed.
    fn changed(&self, touched: &[String], changes: Vec<Change>);

    /// Connection `conn` of `room` now watches `users` (already recorded in
    /// the watches): their presence goes to it at once.
    fn watching(&self, room: &str, conn: u64, users: Vec<String>);
}

/// This host's rooms, over IPC.
pub struct Local {
    pub index: Arc<Index>,
    pub registry: Arc<Registry>,
    pub watches: Arc<Watches>,
    /// This host's name in presence answers.
    pub host: String,
}

impl Local {
    /// `user`'s places and last-seen time on this host.
    pub fn here(&self, user: &str) -> Whereabouts {
        let places: Vec<Place> = self
            .index
            .rooms_of(user)
            .into_iter()
            .map(|room| Place {
                room,
                host: self.host.clone(),
            })
            .collect();
        let last_seen = if places.is_empty() {
            self.index.last_seen(user)
        } else {
            None
        };
        Whereabouts { places, last_seen }
    }

    /// Sends `state` to every connection of this host watching its user,
    /// but `except` (a room and a connection there).
    pub fn tell_watchers(&self, state: &Presence, except: Option<(&str, u64)>) {
        let watchers = self.watches.of(&state.user);
        let mut rooms: HashMap<String, Vec<u64>> = HashMap::new();
        for (room, conn) in watchers {
            if except.is_some_and(|(r, c)| r == room && c == conn) {
                continue;
            }
            rooms.entry(room).or_default().push(conn);
        }
        for (room, conns) in rooms {
            self.tell(&room, conns, vec![state.clone()]);
        }
    }

    /// Sends `states` to connections `conns` of `room`.
    pub fn tell(&self, room: &str, conns: Vec<u64>, states: Vec<Presence>) {
        if let Some(entry) = self.registry.get(room) {
            entry.send(MasterMsg::Presence { conns, states });
        }
    }
}

#[async_trait]
impl Fanout for Local {
    fn deliver(&self, users: &[String], except: Option<Except<'_>>, event: &DirectEvent) {
        for (room, users) in self.index.rooms_of_all(users) {
            let Some(entry) = self.registry.get(&room) else {
                continue;
            };
            let except = except.filter(|e| e.room == room).map(|e| e.conn);
            entry.send(MasterMsg::Deliver {
                users,
                except,
                event: event.clone(),
            });
        }
    }

    async fn whereabouts(&self, user: &str) -> Whereabouts {
        self.here(user)
    }

    fn changed(&self, _touched: &[String], changes: Vec<Change>) {
        for (user, _) in changes {
            if self.watches.is_watched(&user) {
                self.tell_watchers(&self.here(&user).presence(&user), None);
            }
        }
    }

    fn watching(&self, room: &str, conn: u64, users: Vec<String>) {
        if users.is_empty() {
            return;
        }
        let states = users.iter().map(|u| self.here(u).presence(u)).collect();
        self.tell(room, vec![conn], states);
    }
}
