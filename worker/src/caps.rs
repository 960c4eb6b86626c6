//! Caps on a room's open WebSocket connections: in all, per user and per
//! client address. A join takes a [`CapPermit`], held for the connection's
//! life and given back when it is dropped. When many connections have left
//! (a storm passed), the allocator is asked to return free memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use chat_shared::limits::Limits;
use chat_shared::protocol::close;

use crate::identity::Refusal;

/// Rooms below this many connections at their peak never trim memory.
const TRIM_PEAK: u32 = 64;

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    by_user: HashMap<String, u32>,
    by_ip: HashMap<IpAddr, u32>,
    /// Most connections since memory was last trimmed.
    peak: u32,
}

/// The room's connection counts.
#[derive(Debug, Default)]
pub struct ConnCaps {
    counts: Mutex<Counts>,
    /// New connections per second of clients behind trusted proxies (the
    /// listener rates direct peers itself).
    forwarded_rate: chat_shared::listener::RateByIp,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct CapPermit {
    caps: Arc<ConnCaps>,
    user: String,
    ip: Option<IpAddr>,
}

impl ConnCaps {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits one connection of `user` from `ip` (`None`: not counted per
    /// address, e.g. a trusted proxy that did not say who the client is);
    /// `forwarded`: the address came from a trusted proxy's header, so the
    /// rate of new connections is checked here.
    pub fn admit(
        self: &Arc<Self>,
        limits: &Limits,
        user: &str,
        ip: Option<IpAddr>,
        forwarded: bool,
    ) -> Result<CapPermit, Refusal> {
        if forwarded
            && let Some(ip) = ip
            && !self
                .forwarded_rate
                .admit(ip, limits.new_conns_per_ip_per_sec)
        {
            return Err(Refusal::new(
                close::POLICY,
                "too many new connections from this address",
            ));
        }
        let mut c = self.lock();
        let over = |cap: u32, n: u32| cap != 0 && n >= cap;
        if over(limits.max_room_connections, c.total) {
            return Err(Refusal::new(
                close::TRY_AGAIN_LATER,
                "the room has too many connections",
            ));
        }
        if over(
            limits.max_user_connections,
            c.by_user.get(user).copied().unwrap_or(0),
        ) {
            return Err(Refusal::new(
                close::POLICY,
                "too many connections of this user",
            ));
        }
        if let Some(ip) = ip
            && over(
                limits.max_ip_connections,
                c.by_ip.get(&ip).copied().unwrap_or(0),
            )
        {
            return Err(Refusal::new(
                close::POLICY,
                "too many connections from this address",
            ));
        }
        c.total += 1;
        c.peak = c.peak.max(c.total);
        *c.by_user.entry(user.to_owned()).or_insert(0) += 1;
        if let Some(ip) = ip {
            *c.by_ip.entry(ip).or_insert(0) += 1;
        }
        Ok(CapPermit {
            caps: self.clone(),
            user: user.to_owned(),
            ip,
        })
    }

    fn release(&self, user: &str, ip: Option<IpAddr>) {
        let trim = {
            let mut c = self.lock();
            c.total = c.total.saturating_sub(1);
            decrement(&mut c.by_user, user);
            if let Some(ip) = ip {
                decrement(&mut c.by_ip, &ip);
            }
            let trim = c.peak >= TRIM_PEAK && c.total * 2 < c.peak;
            if trim {
                c.peak = c.total;
                // Forget the storm's keys' capacity too.
                c.by_user.shrink_to_fit();
                c.by_ip.shrink_to_fit();
            }
            trim
        };
        if trim {
            return_free_memory();
        }
    }
}

fn decrement<K>(map: &mut HashMap<K::Owned, u32>, key: &K)
where
    K: std::hash::Hash + Eq + ToOwned + ?Sized,
    K::Owned: std::hash::Hash + Eq + std::borrow::Borrow<K>,
{
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Drop for CapPermit {
    fn drop(&mut self) {
        self.caps.release(&self.user, self.ip);
    }
}

/// Gives freed heap pages back to the system (glibc keeps them otherwise:
/// a room that once held 2000 connections would keep their memory).
fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(released, "returned free memory to the system");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_room_connections: 4,
            max_user_connections: 2,
            max_ip_connections: 3,
            ..Limits::default()
        }
    }

    #[test]
    fn caps_per_user_address_and_room() {
        let caps = Arc::new(ConnCaps::default());
        let l = limits();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = caps.admit(&l, "u1", Some(a), false).unwrap();
        let _p2 = caps.admit(&l, "u1", Some(a), false).unwrap();
        assert_eq!(
            caps.admit(&l, "u1", Some(b), false).unwrap_err().code,
            close::POLICY
        );
        let _p3 = caps.admit(&l, "u2", Some(a), false).unwrap();
        assert_eq!(
            caps.admit(&l, "u3", Some(a), false).unwrap_err().code,
            close::POLICY
        );
        let _p4 = caps.admit(&l, "u3", None, false).unwrap();
        assert_eq!(
            caps.admit(&l, "u4", Some(b), false).unwrap_err().code,
            close::TRY_AGAIN_LATER
        );
        drop(p1);
        assert!(caps.admit(&l, "u1", Some(b), false).is_ok());
    }
}
