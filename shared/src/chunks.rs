//! Large IPC payloads in pieces that each fit a frame: a room's recent
//! messages, and reference data as deltas (what changed since a version)
//! split into chunks bounded in bytes. A room applies them to its
//! [`ReferenceIndex`](crate::reference::ReferenceIndex).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::ipc::{Ban, Reference, ReferenceDelta, StoredMessage};

/// Most bytes of payload in one chunk (the frame limit is 16 MiB).
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Splits messages into chunks of at most `max` bytes (a larger message
/// goes alone), in order.
pub fn messages(all: Vec<StoredMessage>, max: usize) -> Vec<Vec<StoredMessage>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut bytes = 0;
    for m in all {
        let size = m.max_encoded_size();
        if !cur.is_empty() && bytes + size > max {
            out.push(std::mem::take(&mut cur));
            bytes = 0;
        }
        bytes += size;
        cur.push(m);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn ban_size(b: &Ban) -> usize {
    b.user_id.len()
        + b.room.as_ref().map_or(0, String::len)
        + b.reason.as_ref().map_or(0, String::len)
        + 32
}

fn bans_by_user(bans: &[Ban]) -> BTreeMap<&str, Vec<Ban>> {
    let mut m: BTreeMap<&str, Vec<Ban>> = BTreeMap::new();
    for b in bans {
        m.entry(b.user_id.as_str()).or_default().push(b.clone());
    }
    m
}

/// What changed from `old` to `new` (applies to `old.version`).
pub fn delta(old: &Reference, new: &Reference) -> ReferenceDelta {
    let before: HashMap<&str, &str> = old
        .users
        .iter()
        .map(|(i, n)| (i.as_str(), n.as_str()))
        .collect();
    let now: HashSet<&str> = new.users.iter().map(|(i, _)| i.as_str()).collect();
    let mut users: Vec<(String, Option<String>)> = new
        .users
        .iter()
        .filter(|(i, n)| before.get(i.as_str()) != Some(&n.as_str()))
        .map(|(i, n)| (i.clone(), Some(n.clone())))
        .collect();
    users.extend(
        old.users
            .iter()
            .filter(|(i, _)| !now.contains(i.as_str()))
            .map(|(i, _)| (i.clone(), None)),
    );
    let (ob, nb) = (bans_by_user(&old.bans), bans_by_user(&new.bans));
    let mut bans: Vec<(String, Vec<Ban>)> = nb
        .iter()
        .filter(|(u, b)| ob.get(*u) != Some(*b))
        .map(|(u, b)| ((*u).to_owned(), b.clone()))
        .collect();
    bans.extend(
        ob.keys()
            .filter(|u| !nb.contains_key(*u))
            .map(|u| ((*u).to_owned(), Vec::new())),
    );
    ReferenceDelta {
        base: Some(old.version),
        version: new.version,
        users,
        bans,
        filters: (old.filters != new.filters).then(|| new.filters.clone()),
    }
}

/// The whole of `r`, from empty data.
pub fn full(r: &Reference) -> ReferenceDelta {
    let mut d = delta(&Reference::default(), r);
    d.base = None;
    d.filters = Some(r.filters.clone());
    d
}

/// Splits a delta into chunks of about `max` bytes at most, to be applied
/// in order: the first keeps the delta's base, the others apply on top of
/// the first (their base is the new version).
pub fn split(d: ReferenceDelta, max: usize) -> Vec<ReferenceDelta> {
    let fresh = |base| ReferenceDelta {
        base,
        version: d.version,
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut cur = fresh(d.base);
    cur.filters = d.filters;
    let mut bytes: usize = cur
        .filters
        .iter()
        .flatten()
        .map(|f| f.pattern.len() + 8)
        .sum();
    for u in d.users {
        let size = u.0.len() + u.1.as_ref().map_or(0, String::len) + 12;
        if bytes > 0 && bytes + size > max {
            out.push(std::mem::replace(&mut cur, fresh(Some(d.version))));
            bytes = 0;
        }
        bytes += size;
        cur.users.push(u);
    }
    for b in d.bans {
        let size = b.0.len() + b.1.iter().map(ban_size).sum::<usize>() + 8;
        if bytes > 0 && bytes + size > max {
            out.push(std::mem::replace(&mut cur, fresh(Some(d.version))));
            bytes = 0;
        }
        bytes += size;
        cur.bans.push(b);
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipc::MasterMsg;

    #[test]
    fn recent_messages_are_chunked_in_order() {
        let all: Vec<StoredMessage> = (1..=1000)
            .map(|seq| StoredMessage {
                epoch: 1,
                seq,
                user_id: "u".into(),
                name: "n".into(),
                text: "é".repeat(8000),
                ts: 0,
                deleted: false,
            })
            .collect();
        let chunks = messages(all, CHUNK_BYTES);
        assert!(chunks.len() >= 16);
        let mut next = 1;
        for c in chunks {
            let frame = postcard::to_allocvec(&MasterMsg::Recent(c.clone())).expect("encodes");
            assert!(frame.len() <= CHUNK_BYTES, "{}", frame.len());
            for m in c {
                assert_eq!(m.seq, next);
                next += 1;
            }
        }
        assert_eq!(next, 1001);
    }
}
