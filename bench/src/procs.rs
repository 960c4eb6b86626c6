//! Ports, processes and memory, from plain sockets and `/proc` (the shared
//! `procfs` module).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::time::Duration;

use anyhow::Context;
use chat_shared::procfs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rand::Rng;

/// A free TCP port on 127.0.0.1 (from the ephemeral range).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .context("cannot bind a free port")?;
    Ok(l.local_addr()?.port())
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// `len` consecutive free ports below the ephemeral range (so that client
/// connections never take them), `(first, last)`. Up to 20,000 ports.
pub fn port_range(len: u16) -> anyhow::Result<(u16, u16)> {
    let len = len.max(1);
    // The first ephemeral port (32768 unless configured otherwise).
    let top = procfs::ephemeral_ports().map_or(32_768, |(first, _)| first);
    let lo: u16 = if len <= 10_000 { 20_000 } else { 10_000 };
    anyhow::ensure!(
        u32::from(lo) + u32::from(len) < u32::from(top),
        "{len} ports do not fit between {lo} and the ephemeral ports ({top})"
    );
    let mut rng = rand::rng();
    for _ in 0..200 {
        let first: u16 = rng.random_range(lo..top - len);
        let last = first + len - 1;
        if (first..=last).all(bindable) {
            return Ok((first, last));
        }
    }
    anyhow::bail!("no range of {len} free ports found")
}

fn pid_u32(pid: i32) -> anyhow::Result<u32> {
    u32::try_from(pid).with_context(|| format!("bad pid {pid}"))
}

/// Resident memory of a process (`VmRSS`), in bytes.
pub fn rss_bytes(pid: i32) -> anyhow::Result<u64> {
    procfs::rss_bytes(pid_u32(pid)?).with_context(|| format!("no VmRSS for pid {pid}"))
}

/// Proportional and private resident memory of a process
/// (`/proc/PID/smaps_rollup`: `Pss`, `Private_Clean + Private_Dirty`), bytes.
pub fn pss_private_bytes(pid: i32) -> anyhow::Result<(u64, u64)> {
    let m = procfs::memory(pid_u32(pid)?)
        .with_context(|| format!("cannot read /proc/{pid}/smaps_rollup"))?;
    Ok((m.pss, m.private))
}

/// Raises this process's soft open-file limit to the hard limit; returns it.
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

/// Sends a signal, ignoring errors (the process may be gone).
pub fn signal(pid: i32, sig: Signal) {
    if pid > 0 {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    u32::try_from(pid).is_ok_and(procfs::alive)
}

/// Stops a child: SIGTERM, up to `grace`, then SIGKILL. Bounded.
pub async fn stop_child(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        signal(pid as i32, Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
}

/// User + system CPU seconds of processes, summed (`/proc/<pid>/stat`);
/// a process that is gone counts 0.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|&p| procfs::stat(p).ok())
        .map(|s| s.cpu_seconds())
        .sum()
}

/// CPU time and times scheduled of every thread of processes, from the
/// scheduler's own accounting (`/proc/<pid>/task/<tid>/schedstat`:
/// nanoseconds on a CPU, then time waiting, then timeslices run). Unlike
/// `/proc/<pid>/stat`, which counts 10 ms ticks, this sees a process that
/// ran 50 µs. `None` when the kernel keeps no schedstat (then use
/// [`cpu_seconds`]). Compare two readings with [`Threads::since`].
pub fn sched(pids: &[u32]) -> Option<Threads> {
    let mut threads = std::collections::HashMap::new();
    for &pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
                continue;
            };
            let mut f = text.split_whitespace().map(|x| x.parse::<u64>().ok());
            if let (Some(Some(cpu_ns)), Some(Some(_)), Some(Some(slices))) =
                (f.next(), f.next(), f.next())
            {
                threads.insert(tid, Sched { cpu_ns, slices });
            }
        }
    }
    (!threads.is_empty()).then_some(Threads(threads))
}

/// One [`sched`] reading: each thread's counters.
#[derive(Debug, Clone, Default)]
pub struct Threads(std::collections::HashMap<u32, Sched>);

impl Threads {
    /// What the threads did between `earlier` and this reading, thread by
    /// thread: a thread born since counts whole, a thread gone since (a
    /// runtime's idle blocking thread exits) counts nothing, where a sum
    /// of the two totals would lose its whole past and read 0.
    pub fn since(&self, earlier: &Threads) -> Sched {
        let mut d = Sched::default();
        for (tid, now) in &self.0 {
            let before = earlier.0.get(tid).copied().unwrap_or_default();
            d.cpu_ns += now.cpu_ns.saturating_sub(before.cpu_ns);
            d.slices += now.slices.saturating_sub(before.slices);
        }
        d
    }
}

/// See [`sched`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Sched {
    pub cpu_ns: u64,
    /// Times a thread was put on a CPU (about its wake-ups).
    pub slices: u64,
}

/// A process and its live children (a Node peer and the rooms it forked).
pub fn with_children(pid: u32) -> Vec<u32> {
    let mut v = vec![pid];
    v.extend(procfs::children_of(pid));
    v
}

/// Where a server's CPU time is read from.
#[derive(Debug, Clone)]
pub enum CpuOf {
    /// These processes (our room's worker).
    Pids(Vec<u32>),
    /// A process and whatever children it has when read (Node peers).
    Tree(u32),
}

impl CpuOf {
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Self::Pids(p) => p.clone(),
            Self::Tree(p) => with_children(*p),
        }
    }

    /// CPU seconds now.
    pub fn seconds(&self) -> f64 {
        cpu_seconds(&self.pids())
    }
}

/// One line of machine facts for the reports.
pub fn machine() -> serde_json::Value {
    let (mem, _) = procfs::meminfo();
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "cpu": procfs::cpu_model(),
        "mem_gib": (mem as f64 / 1024.0 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": procfs::kernel_release(),
        "loadavg": procfs::loadavg(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss() {
        assert!(rss_bytes(std::process::id() as i32).unwrap() > 0);
        assert!(rss_bytes(-1).is_err());
    }

    #[test]
    fn ports() {
        let (a, b) = port_range(5).unwrap();
        assert_eq!(b - a, 4);
        assert!(a >= 20_000);
        // Room for `rooms --count 12000`, below the ephemeral ports.
        let top = procfs::ephemeral_ports().map_or(32_768, |(first, _)| first);
        let (a, b) = port_range(12_002).unwrap();
        assert_eq!(b - a, 12_001);
        assert!(a >= 10_000 && b < top);
        assert!(free_port().unwrap() > 0);
    }

    #[test]
    fn thread_deltas_survive_a_thread_that_exits() {
        let s = |cpu_ns, slices| Sched { cpu_ns, slices };
        let before = Threads([(1, s(100, 10)), (2, s(5_000, 50))].into());
        // Thread 2 (most of the past CPU) exited, thread 3 was born.
        let after = Threads([(1, s(150, 12)), (3, s(20, 1))].into());
        let d = after.since(&before);
        assert_eq!((d.cpu_ns, d.slices), (70, 3));
        assert!(sched(&[std::process::id()]).is_some());
    }

    #[test]
    fn cpu_of_this_process() {
        let me = std::process::id();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(CpuOf::Pids(vec![me]).seconds() > 0.0);
        assert!(CpuOf::Tree(me).pids().contains(&me));
        assert_eq!(cpu_seconds(&[u32::MAX]), 0.0);
    }
}
