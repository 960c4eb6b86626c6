//! Processes and ports, from `/proc` and plain sockets.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Whether `pid` is a live process (a zombie counts as dead).
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat_state(&stat), Some('Z') | Some('X')),
        Err(_) => false,
    }
}

fn stat_state(stat: &str) -> Option<char> {
    // "pid (comm) S ppid ..."; comm may contain spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

fn stat_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
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

fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live children of `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| stat_ppid(&s))
                == Some(parent)
        })
        .filter(|&pid| pid_alive(pid))
        .collect()
}

/// Live processes whose command line mentions `needle` (e.g. a run dir).
pub fn pids_mentioning(needle: &Path) -> Vec<i32> {
    let needle = needle.as_os_str().as_encoded_bytes();
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        })
        .filter(|&pid| pid_alive(pid))
        .collect()
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
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u32>().ok());
            Some((it.next()??, it.next()??))
        })
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
