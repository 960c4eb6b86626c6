//! What a moderator's `ban` and `unban` do beyond the room: they go to the
//! master, which stores them in `bans` scoped to this room, so a ban made
//! in a room outlasts its worker and the master, exactly like one made
//! through the admin API. The room keeps its own copy until the reference
//! data carries the change (`Moderation::settle`), and sends its copies
//! again after a reconnect.

use chat_shared::ipc::WorkerMsg;
use chat_shared::protocol::{close, code};

use crate::moderation::Pending;
use crate::room::{Conn, Room, now_ms};

impl Room {
    /// Bans `target` (already checked: a member the moderator outranks):
    /// closes their connections and has the ban stored.
    pub fn ban_member(&mut self, target: &str, by: &str, reason: &str) {
        self.moderation.ban(target, reason);
        self.settle_bans();
        self.tell_master(WorkerMsg::Ban {
            user: target.to_owned(),
            reason: reason.to_owned(),
        });
        tracing::info!(room = %self.name, user = %target, by = %by, "banned by a moderator");
        self.disconnect_user(target, close::BANNED, &format!("banned by {by}: {reason}"));
    }

    /// `unban`: lifts this room's ban of a user (moderators and owners;
    /// the user need not be here). Bans of every room are the operators'.
    pub fn unban(&mut self, conn: &Conn, user: &str) {
        let Some((role, by)) = self
            .users
            .get(&conn.user_id)
            .map(|a| (a.role, a.name.clone()))
        else {
            return;
        };
        if !role.moderates() {
            return self.error(
                conn,
                code::FORBIDDEN,
                "only moderators and owners may do this",
                None,
            );
        }
        if user.is_empty() || user.len() > 256 {
            return self.error(
                conn,
                code::BAD_REQUEST,
                "user must have 1 to 256 bytes",
                None,
            );
        }
        self.moderation
            .unban(user, &self.name, self.reference.bans_of(user));
        self.tell_master(WorkerMsg::Unban {
            user: user.to_owned(),
        });
        tracing::info!(room = %self.name, user = %user, by = %by, "unbanned by a moderator");
    }

    /// Forgets the bans and unbans the reference data now carries.
    pub fn settle_bans(&mut self) {
        let reference = &self.reference;
        self.moderation
            .settle(&self.name, |u| reference.bans_of(u), now_ms());
    }

    /// After a reconnect: the bans and unbans not yet stored, again (the
    /// store's writes are idempotent).
    pub fn resend_bans(&self) {
        for (user, p) in self.moderation.pending() {
            self.tell_master(match p {
                Pending::Ban(reason) => WorkerMsg::Ban {
                    user: user.clone(),
                    reason: reason.clone(),
                },
                Pending::Unban => WorkerMsg::Unban { user: user.clone() },
            });
        }
    }
}
