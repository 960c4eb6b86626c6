//! Processes and ports, from `/proc` (the shared `procfs` module) and plain
//! sockets.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::Path;

use chat_shared::procfs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Whether `pid` is a live process (a zombie counts as dead).
pub fn pid_alive(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(procfs::alive)
}

/// Sends SIGKILL, ignoring errors.
pub fn sigkill(pid: i32) {
    if pid > 0 {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Sends a signal, panicking on error.
pub fn signal(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("kill({pid}, {sig}): {e}"));
}

fn as_i32(pids: Vec<u32>) -> Vec<i32> {
    pids.into_iter()
        .filter_map(|p| i32::try_from(p).ok())
        .collect()
}

/// Live children of `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    match u32::try_from(parent) {
        Ok(p) => as_i32(procfs::children_of(p)),
        Err(_) => Vec::new(),
    }
}

/// Live processes whose command line mentions `needle` (e.g. a run dir).
pub fn pids_mentioning(needle: &Path) -> Vec<i32> {
    let needle = needle.as_os_str().as_encoded_bytes();
    let me = std::process::id();
    let found = procfs::pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            procfs::cmdline(pid)
                .map(|c| c.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .filter(|&pid| procfs::alive(pid))
        .collect();
    as_i32(found)
}

/// A process's command line for people (empty when it is gone).
pub fn cmdline_text(pid: i32) -> String {
    u32::try_from(pid)
        .map(procfs::cmdline_text)
        .unwrap_or_default()
}

/// Whether `127.0.0.1:port` can be bound now.
pub fn port_bindable(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A free port (bound on 127.0.0.1:0 then released).
/// A port bindable now, outside the kernel's ephemeral range (where the
/// tests' own outgoing connections take ports).
pub fn free_port() -> u16 {
    port_range(1).0
}

/// The kernel's ephemeral port range.
fn ephemeral_range() -> (u32, u32) {
    procfs::ephemeral_ports()
        .map(|(lo, hi)| (u32::from(lo), u32::from(hi)))
        .unwrap_or((32768, 60999))
}

/// `len` consecutive ports in 20000..60000, all bindable now. Ports of the
/// kernel's ephemeral range are avoided when possible (outgoing connections
/// of the tests themselves could take them).
pub fn port_range(len: u16) -> (u16, u16) {
    let (eph_lo, eph_hi) = ephemeral_range();
    let len32 = u32::from(len);
    for _ in 0..500 {
        let start = crate::random_in(20000..60000 - len32);
        let end = start + len32 - 1;
        let overlaps = start <= eph_hi && end >= eph_lo;
        let room_outside = eph_lo > 20000 + len32 || eph_hi + len32 < 60000;
        if overlaps && room_outside {
            continue;
        }
        let (start, end) = (start as u16, end as u16);
        if (start..=end).all(port_bindable) {
            return (start, end);
        }
    }
    panic!("no range of {len} bindable ports found in 20000..60000");
}
