//! Facts about processes and the machine from Linux's `/proc`, for the
//! master (metrics, room liveness), the tests and the benchmarks: one parser
//! of each file instead of a copy per crate. Behind the `procfs` feature
//! (rooms do not need it).
//!
//! Nothing here panics: a file that cannot be read is an `io::Error`, a
//! field that does not parse is `None` or 0.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on
/// every Linux architecture we run on).
pub const TICKS_PER_SEC: f64 = 100.0;

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    pub ppid: u32,
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// When the process started, in clock ticks after the machine booted
    /// (0 when the field is missing).
    pub starttime: u64,
}

impl Stat {
    /// User plus system CPU time, seconds.
    pub fn cpu_seconds(&self) -> f64 {
        (self.utime + self.stime) as f64 / TICKS_PER_SEC
    }

    /// A zombie (exited, not reaped yet) or dead process.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

/// Parses `/proc/<pid>/stat`: `pid (comm) S ppid ...`, where the command
/// name may hold spaces and parentheses (fields are read after the last
/// `)`).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: u32::try_from(num(1)?).ok()?,
        // utime and stime are fields 14 and 15 of stat: 11 and 12 after comm.
        utime: num(11)?,
        stime: num(12)?,
        // starttime is field 22: 19 after comm.
        starttime: num(19).unwrap_or(0),
    })
}

/// `/proc/<pid>/stat` of a process.
pub fn stat(pid: u32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad stat"))
}

/// How long ago a process started (from its `starttime` and the machine's
/// uptime); a process whose start is unknown is as old as the machine.
pub fn age(pid: u32) -> io::Result<Duration> {
    let started = stat(pid)?.starttime as f64 / TICKS_PER_SEC;
    Ok(uptime().saturating_sub(Duration::try_from_secs_f64(started).unwrap_or(Duration::ZERO)))
}

/// Whether `pid` is a live process: it exists and is not a zombie (dead but
/// not reaped yet). Pid 0 is never alive.
pub fn alive(pid: u32) -> bool {
    pid > 0 && stat(pid).is_ok_and(|s| !s.is_dead())
}

/// Every process id in `/proc`.
pub fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live children of `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|&pid| stat(pid).is_ok_and(|s| s.ppid == parent && !s.is_dead()))
        .collect()
}

/// A process's command line, arguments separated by NUL bytes.
pub fn cmdline(pid: u32) -> io::Result<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
}

/// A process's command line for people: arguments separated by spaces.
pub fn cmdline_text(pid: u32) -> String {
    cmdline(pid)
        .map(|c| {
            String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .trim_end()
                .to_owned()
        })
        .unwrap_or_default()
}

/// The executable a process runs (` (deleted)` appended by the kernel when
/// the file was replaced since).
pub fn exe(pid: u32) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
}

/// `name:   1234 kB` lines (`status`, `meminfo`, `smaps_rollup`) → bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Parses `VmRSS` out of `/proc/<pid>/status`, bytes.
pub fn parse_vmrss(status: &str) -> Option<u64> {
    kib_field(status, "VmRSS")
}

/// Resident memory of a process (`VmRSS`), bytes.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vmrss(&status).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS"))
}

/// A process's memory from `/proc/<pid>/smaps_rollup`, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    /// Proportional set size: shared pages divided among their sharers.
    pub pss: u64,
    /// Pages no other process maps (`Private_Clean + Private_Dirty`).
    pub private: u64,
}

/// Parses `/proc/<pid>/smaps_rollup`.
pub fn parse_smaps_rollup(text: &str) -> Memory {
    let field = |name| kib_field(text, name).unwrap_or(0);
    Memory {
        rss: field("Rss"),
        pss: field("Pss"),
        private: field("Private_Clean") + field("Private_Dirty"),
    }
}

/// A process's memory (RSS, PSS, private).
pub fn memory(pid: u32) -> io::Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(parse_smaps_rollup(&text))
}

/// (total, available) memory of the machine, bytes (zeros when unknown).
pub fn meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    (
        kib_field(&text, "MemTotal").unwrap_or(0),
        kib_field(&text, "MemAvailable").unwrap_or(0),
    )
}

/// The 1, 5 and 15 minute load averages (zeros when unknown).
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// Time since the machine booted (zero when unknown).
pub fn uptime() -> Duration {
    let text = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::ZERO)
}

/// The kernel's ephemeral port range (`ip_local_port_range`).
pub fn ephemeral_ports() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// The CPU model name (empty when unknown).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// The kernel release (empty when unknown).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_strange_command_name() {
        let line = "42 (a b) (c)) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 1 2 3";
        let s = parse_stat(line);
        assert_eq!(
            s,
            Some(Stat {
                state: 'S',
                ppid: 7,
                utime: 250,
                stime: 50,
                starttime: 1,
            })
        );
        assert_eq!(s.map(|s| s.cpu_seconds()), Some(3.0));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) Z"), None);
    }

    #[test]
    fn this_process_started_before_now_and_after_boot() {
        let age = age(std::process::id()).expect("own stat");
        assert!(age <= uptime(), "{age:?}");
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        // A process started later is not older (ticks are 10 ms).
        let young = self::age(child.id()).expect("child stat");
        assert!(
            young <= age + Duration::from_millis(20),
            "{young:?} {age:?}"
        );
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn memory_files() {
        let status = "Name:\tchatroom\nVmPeak:\t  9000 kB\nVmRSS:\t  2048 kB\nThreads: 1\n";
        assert_eq!(parse_vmrss(status), Some(2048 * 1024));
        assert_eq!(parse_vmrss("Name: x\n"), None);
        let rollup = "00400000-7ffd [rollup]\nRss:  100 kB\nPss:  60 kB\nPss_Anon:  5 kB\n\
                      Private_Clean:  10 kB\nPrivate_Dirty:  20 kB\n";
        assert_eq!(
            parse_smaps_rollup(rollup),
            Memory {
                rss: 100 * 1024,
                pss: 60 * 1024,
                private: 30 * 1024
            }
        );
    }

    #[test]
    fn this_process() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(!alive(0));
        assert!(rss_bytes(me).is_ok_and(|b| b > 0));
        assert!(memory(me).is_ok_and(|m| m.pss > 0 && m.rss > 0));
        assert!(exe(me).is_ok());
        assert!(!cmdline_text(me).is_empty());
        assert!(pids().contains(&me));
        assert!(stat(me).is_ok_and(|s| s.ppid > 0));
        assert!(meminfo().0 > 0);
    }
}
