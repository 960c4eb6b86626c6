//! Prometheus metrics (`GET /metrics` on the admin port). Counters are
//! recorded where things happen; gauges are read from the registry and the
//! process at scrape time.

use chat_shared::ipc::{FANOUT_BUCKETS, Histogram};
use chat_shared::procfs;
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::events::{EventKind, Subscription};
use crate::lifecycle::Lifecycle;
use crate::registry::Registry;

/// The host's gauges that do not come from the registry, read by the caller
/// at scrape time (metrics know the registry, not the whole master).
pub struct HostGauges {
    pub uptime_secs: f64,
    pub cache_version: u64,
    /// Seconds since the cache was loaded; `None` before the first load.
    pub cache_age_secs: Option<f64>,
    pub pending_writes: usize,
    pub store_up: bool,
}

/// The master's metrics.
pub struct Metrics {
    handle: Option<PrometheusHandle>,
    /// Fan-out times reported by every room, summed.
    fanout: std::sync::Mutex<Histogram>,
}

impl Metrics {
    /// Installs the process-wide recorder.
    pub fn install() -> Result<Self, String> {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
        describe();
        Ok(Self {
            handle: Some(handle),
            fanout: std::sync::Mutex::new(Histogram::default()),
        })
    }

    pub fn ipc_error(&self) {
        counter!("chat_ipc_errors_total").increment(1);
    }

    /// A heartbeat sent to a room.
    pub fn ipc_heartbeat(&self) {
        counter!("chat_ipc_heartbeats_total").increment(1);
    }

    /// Messages a room received and sent since its last report.
    pub fn messages(&self, received: u64, sent: u64) {
        counter!("chat_messages_in_total").increment(received);
        counter!("chat_messages_out_total").increment(sent);
    }

    /// Fan-out times a room reported since its last report.
    pub fn fanout(&self, delta: &Histogram) {
        if delta.count > 0 {
            self.fanout
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .add(delta);
        }
    }

    /// The fan-out histogram in the text format.
    fn render_fanout(&self) -> String {
        let h = *self.fanout.lock().unwrap_or_else(|p| p.into_inner());
        let name = "chat_fanout_duration_seconds";
        let mut out = format!(
            "# HELP {name} Time to serialize a chat message once and queue it for every member.\n# TYPE {name} histogram\n"
        );
        let mut cumulative = 0;
        for (bound, n) in FANOUT_BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            out.push_str(&format!("{name}_bucket{{le=\"{bound}\"}} {cumulative}\n"));
        }
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {}\n", h.count));
        out.push_str(&format!("{name}_sum {}\n", h.sum_ns as f64 / 1e9));
        out.push_str(&format!("{name}_count {}\n", h.count));
        out
    }

    /// The text exposition, with gauges refreshed now.
    pub fn render(&self, registry: &Registry, host: &HostGauges) -> String {
        let rooms = registry.all();
        let mut by_state = [0u64; 5];
        let (mut members, mut connections) = (0u64, 0u64);
        for r in &rooms {
            let i = match r.state() {
                Lifecycle::Starting | Lifecycle::PortTaken | Lifecycle::Restarting => 0,
                Lifecycle::Running { .. } => 1,
                Lifecycle::Stopping => 2,
                Lifecycle::Stopped => 3,
                Lifecycle::Failed(_) => 4,
            };
            by_state[i] += 1;
            let s = r.stats();
            members += u64::from(s.members);
            connections += u64::from(s.connections);
        }
        for (state, n) in ["starting", "ready", "closing", "closed", "failed"]
            .iter()
            .zip(by_state)
        {
            gauge!("chat_rooms", "state" => *state).set(n as f64);
        }
        gauge!("chat_room_capacity").set(registry.capacity() as f64);
        gauge!("chat_members").set(members as f64);
        gauge!("chat_connections").set(connections as f64);
        gauge!("chat_accepting_rooms").set(if registry.accepting() { 1.0 } else { 0.0 });
        gauge!("chat_uptime_seconds").set(host.uptime_secs);
        gauge!("chat_cache_version").set(host.cache_version as f64);
        gauge!("chat_cache_age_seconds").set(host.cache_age_secs.unwrap_or(-1.0));
        gauge!("chat_store_pending_writes").set(host.pending_writes as f64);
        gauge!("chat_store_up").set(if host.store_up { 1.0 } else { 0.0 });
        let (cpu, rss) = process_usage();
        gauge!("process_cpu_seconds_total").set(cpu);
        gauge!("process_resident_memory_bytes").set(rss as f64);
        let mut text = match &self.handle {
            Some(h) => h.render(),
            None => String::new(),
        };
        text.push_str(&self.render_fanout());
        text
    }
}

/// Counts the rooms' lifecycle events (worker starts, crashes, restarts).
pub async fn follow(mut events: Subscription) {
    while let Some(e) = events.next().await {
        match e.kind {
            EventKind::Spawned { .. } => counter!("chat_worker_starts_total").increment(1),
            EventKind::Crashed { .. } => counter!("chat_worker_crashes_total").increment(1),
            EventKind::Restarting { .. } => counter!("chat_worker_restarts_total").increment(1),
            _ => {}
        }
    }
}

fn describe() {
    describe_counter!("chat_worker_starts_total", "Room worker processes spawned.");
    describe_counter!(
        "chat_worker_crashes_total",
        "Room workers that died without being asked to."
    );
    describe_counter!(
        "chat_worker_restarts_total",
        "Room workers restarted after a crash."
    );
    describe_counter!(
        "chat_ipc_errors_total",
        "IPC connections closed on an error."
    );
    describe_counter!(
        "chat_ipc_heartbeats_total",
        "IPC heartbeats sent to rooms (less often to rooms that idle)."
    );
    describe_counter!("chat_messages_in_total", "Client frames received by rooms.");
    describe_counter!(
        "chat_messages_out_total",
        "Frames sent by rooms to clients."
    );
    describe_gauge!("chat_rooms", "Rooms by state.");
    describe_gauge!("chat_room_capacity", "Most rooms this host holds.");
    describe_gauge!("chat_members", "Distinct users in rooms.");
    describe_gauge!("chat_connections", "Client WebSocket connections.");
    describe_gauge!(
        "chat_accepting_rooms",
        "1 when rooms can be created (not draining)."
    );
    describe_gauge!("chat_uptime_seconds", "Seconds since the master started.");
    describe_gauge!("chat_cache_version", "Version of the reference-data cache.");
    describe_gauge!(
        "chat_cache_age_seconds",
        "Seconds since the cache was loaded (-1: never)."
    );
    describe_gauge!(
        "chat_store_pending_writes",
        "Messages received from rooms, not yet stored."
    );
    describe_gauge!("chat_store_up", "1 once the store has answered.");
    describe_gauge!(
        "chat_redis_up",
        "1 while Redis (--redis) answers commands and this host's subscription holds."
    );
    describe_counter!(
        "chat_redis_published_total",
        "Notices published to other hosts' channels (DMs, receipts, presence)."
    );
    describe_counter!(
        "chat_redis_received_total",
        "Notices received on this host's channel."
    );
    describe_counter!(
        "chat_redis_errors_total",
        "Publications and presence writes lost while Redis was out of reach (the store keeps the messages)."
    );
    describe_counter!(
        "chat_redis_dropped_total",
        "Redis jobs dropped because the transport's queue was full."
    );
    describe_counter!(
        "chat_store_errors_total",
        "Store calls that failed transiently (retried)."
    );
    describe_counter!(
        "chat_store_failed_messages_total",
        "Messages the store refused for good (invalid): their senders get not_stored."
    );
    describe_counter!(
        "chat_room_ownership_lost_total",
        "Rooms shut down because another host sharing the store claimed their name."
    );
    describe_counter!(
        "chat_store_conflicts_total",
        "Messages refused because another message is stored at their (room, seq)."
    );
    describe_counter!(
        "chat_lb_heartbeat_failures_total",
        "Failed load-balancer heartbeats."
    );
    describe_gauge!(
        "chat_lb_breaker_open",
        "1 while a load balancer's circuit breaker is open."
    );
    describe_gauge!(
        "process_cpu_seconds_total",
        "CPU time of the master process."
    );
    describe_gauge!(
        "process_resident_memory_bytes",
        "Resident memory of the master process."
    );
}

/// (CPU seconds, resident bytes) of this process, from /proc (zeros when
/// it cannot be read).
pub fn process_usage() -> (f64, u64) {
    let pid = std::process::id();
    let cpu = procfs::stat(pid).map_or(0.0, |s| s.cpu_seconds());
    (cpu, procfs::rss_bytes(pid).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_usage() {
        let (_cpu, rss) = process_usage();
        assert!(rss > 0);
    }
}
