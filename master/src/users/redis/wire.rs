//! What the hosts share in Redis: key and channel names, a host's presence
//! entry for a user, and the notices published on a host's channel.
//!
//! - `chat:where:<user>`: a hash, one field per host holding the user
//!   (`Entry` as JSON, with its expiry); the key itself expires one TTL
//!   after the last refresh of any host. "Online anywhere" and "which
//!   hosts" are one `HGETALL`.
//! - `chat:seen:<user>`: when the user's last connection on some host
//!   closed (Unix ms).
//! - `chat:watch:<user>`: a hash, one field per host with watchers of the
//!   user (the field's expiry in Unix ms).
//! - `chat:host:<id>`: the channel each host subscribes to.

use std::collections::HashMap;

use chat_shared::direct::DirectEvent;
use serde::{Deserialize, Serialize};

pub fn where_key(user: &str) -> String {
    format!("chat:where:{user}")
}

pub fn seen_key(user: &str) -> String {
    format!("chat:seen:{user}")
}

pub fn watch_key(user: &str) -> String {
    format!("chat:watch:{user}")
}

pub fn channel(host: &str) -> String {
    format!("chat:host:{host}")
}

/// How long `chat:seen:<user>` is kept (30 days, in ms).
pub const SEEN_TTL_MS: u64 = 30 * 24 * 3600 * 1000;

/// One host's presence entry for a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The host's name (in presence answers).
    #[serde(rename = "n")]
    pub name: String,
    /// The rooms of that host holding the user.
    #[serde(rename = "r")]
    pub rooms: Vec<String>,
    /// Written at (Unix ms).
    #[serde(rename = "w")]
    pub written: u64,
    /// Valid until (Unix ms): past it the host is taken for dead.
    #[serde(rename = "e")]
    pub expires: u64,
}

/// Other hosts' entries of a user (by host id) as read from
/// `chat:where:<user>`: unreadable fields and `me` left out.
pub fn entries(fields: HashMap<String, String>, me: &str) -> Vec<(String, Entry)> {
    let mut out: Vec<(String, Entry)> = fields
        .into_iter()
        .filter(|(host, _)| host != me)
        .filter_map(|(host, v)| serde_json::from_str(&v).ok().map(|e| (host, e)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Hosts of a `chat:watch:<user>` hash still valid at `now`, but `me`.
pub fn live_watchers(fields: HashMap<String, String>, me: &str, now: u64) -> Vec<String> {
    fields
        .into_iter()
        .filter(|(host, exp)| host != me && exp.parse::<u64>().is_ok_and(|e| e > now))
        .map(|(host, _)| host)
        .collect()
}

/// What a host publishes on another host's channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Notice {
    /// Hand `event` to the live connections of `users` there.
    Deliver {
        users: Vec<String>,
        event: DirectEvent,
    },
    /// `user`'s presence changed on the sending host: its watchers there
    /// must look again.
    Presence { user: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_shared::direct::DirectMessage;

    #[test]
    fn notices_round_trip_and_entries_parse() {
        let n = Notice::Deliver {
            users: vec!["u1".into()],
            event: DirectEvent::Dm(DirectMessage {
                conversation: "u1:u2".into(),
                seq: 3,
                from: "u2".into(),
                from_name: "Bo".into(),
                to: "u1".into(),
                text: "hi".into(),
                ts: 1,
            }),
        };
        let s = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<Notice>(&s).unwrap(), n);
        let p = Notice::Presence { user: "u".into() };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"t":"presence","user":"u"}"#
        );

        let e = Entry {
            name: "h".into(),
            rooms: vec!["a".into()],
            written: 1,
            expires: 2,
        };
        let fields = HashMap::from([
            ("me".to_owned(), serde_json::to_string(&e).unwrap()),
            ("other".to_owned(), serde_json::to_string(&e).unwrap()),
            ("bad".to_owned(), "{".to_owned()),
        ]);
        assert_eq!(entries(fields, "me"), vec![("other".to_owned(), e)]);
        let w = HashMap::from([
            ("me".to_owned(), "100".to_owned()),
            ("live".to_owned(), "100".to_owned()),
            ("dead".to_owned(), "5".to_owned()),
            ("junk".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(live_watchers(w, "me", 10), vec!["live".to_owned()]);
    }
}
