//! How an event reaches users' live connections. One host: the master
//! hands it to each of its rooms that holds one of the users (`Local`).
//! Many hosts (a later step): a Redis transport implements [`Fanout`] too,
//! publishing what this host cannot deliver and delivering what others
//! publish through the same `Local` delivery.

use std::sync::Arc;

use chat_shared::direct::DirectEvent;
use chat_shared::ipc::MasterMsg;

use super::index::Index;
use crate::registry::Registry;

/// The connection an event must skip: the sender's, in its room.
#[derive(Debug, Clone, Copy)]
pub struct Except<'a> {
    pub room: &'a str,
    pub conn: u64,
}

/// Delivery of events to users wherever they are connected.
pub trait Fanout: Send + Sync {
    /// Hands `event` to every live connection of `users`, but `except`.
    fn deliver(&self, users: &[String], except: Option<Except<'_>>, event: &DirectEvent);

    /// Whether `user` has at least one live connection.
    fn online(&self, user: &str) -> bool;
}

/// This host's rooms, over IPC.
pub struct Local {
    pub index: Arc<Index>,
    pub registry: Arc<Registry>,
}

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

    fn online(&self, user: &str) -> bool {
        !self.index.rooms_of(user).is_empty()
    }
}
