//! The host's load, in the original chatserver's `/api/v1/load` shape.

use std::time::Duration;

use chat_shared::procfs;
use serde::Serialize;

use crate::state::Master;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Load {
    pub load_avg: [f64; 3],
    pub total_memory: u64,
    pub free_memory: u64,
    /// Memory in use, percent.
    pub percentage: f64,
    pub cpus: usize,
    /// Room names, comma-joined.
    pub rooms: String,
    pub room_count: usize,
    pub capacity: usize,
    /// ISO 8601 durations.
    pub os_up_time: String,
    pub up_time: String,
    pub started_at: String,
    pub accepting_connections: bool,
    pub version: &'static str,
    pub load_balancers: Vec<crate::lb::LbStatus>,
    pub store: &'static str,
    pub store_reached: bool,
    /// Messages received from rooms and not yet written to the store.
    pub pending_writes: usize,
    /// The open-file limit rooms inherit (raised to the hard limit at start).
    pub open_files_limit: u64,
}

fn open_files_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0)
}

/// An ISO 8601 duration such as `P1DT2H3M4S`.
pub fn iso_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60, s % 60);
    if days > 0 {
        format!("P{days}DT{h}H{m}M{sec}S")
    } else {
        format!("PT{h}H{m}M{sec}S")
    }
}

pub fn load(master: &Master) -> Load {
    let (total, free) = procfs::meminfo();
    let rooms = master.registry.all();
    let percentage = if total > 0 {
        ((total - free.min(total)) as f64 / total as f64 * 10000.0).round() / 100.0
    } else {
        0.0
    };
    Load {
        load_avg: procfs::loadavg(),
        total_memory: total,
        free_memory: free,
        percentage,
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        rooms: rooms
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        room_count: rooms.len(),
        capacity: master.registry.capacity(),
        os_up_time: iso_duration(procfs::uptime()),
        up_time: iso_duration(master.started.elapsed()),
        started_at: master.started_at.to_rfc3339(),
        accepting_connections: master.registry.accepting(),
        version: chat_shared::VERSION,
        load_balancers: master.lbs.iter().map(|l| l.status()).collect(),
        store: master.store.kind(),
        store_reached: master.store_ever_reached(),
        pending_writes: master.writer.pending(),
        open_files_limit: open_files_limit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(iso_duration(Duration::from_secs(3661)), "PT1H1M1S");
        assert_eq!(iso_duration(Duration::from_secs(90061)), "P1DT1H1M1S");
    }
}
