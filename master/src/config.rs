//! Command-line flags, with the original chatserver's environment variables
//! as fallbacks.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The chatserver master: room API, admin API, and the supervisor of one
/// room process per room.
#[derive(Debug, Clone, Parser)]
#[command(name = "chatserver", version)]
pub struct Config {
    /// Port of the room API.
    #[arg(long, env = "PORT", default_value_t = 80)]
    pub port: u16,
    /// Address the room API binds.
    #[arg(long, env = "BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Port of the admin API.
    #[arg(long, env = "ADMIN_PORT", default_value_t = 8090)]
    pub admin_port: u16,
    /// Address the admin API binds (loopback by default).
    #[arg(long, env = "ADMIN_BIND", default_value = "127.0.0.1")]
    pub admin_bind: IpAddr,
    /// Key of the room API (prefer the environment: argv is visible to all).
    #[arg(long, env = "KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Key of the admin API (environment only).
    #[arg(skip)]
    pub admin_key: Option<String>,
    /// HS256 secret of join tokens; without it rooms are open to guests.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Range of room ports, `FIRST-LAST`.
    #[arg(long, env = "ROOM_PORTS", default_value = "20000-20999", value_parser = parse_range)]
    pub room_ports: (u16, u16),
    /// Most rooms at once (default: the size of the port range).
    #[arg(long, env = "MAX_ROOMS")]
    pub max_rooms: Option<usize>,
    /// Address room ports bind.
    #[arg(long, env = "ROOM_BIND", default_value = "0.0.0.0")]
    pub room_bind: IpAddr,
    /// A separate room binary (`chatroom`); by default rooms run this
    /// executable in its room role (`chatserver room ...`).
    #[arg(long, env = "WORKER_BIN")]
    pub worker_bin: Option<PathBuf>,
    /// Directory of the master's socket, lock, key and state files.
    #[arg(long, env = "RUN_DIR", default_value = "./run")]
    pub run_dir: PathBuf,
    /// Time rooms get to close at shutdown before they are killed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// Interval of WebSocket pings to clients.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,
    /// Interval of IPC heartbeats between master and a busy room (a worker
    /// silent for four of them is taken for hung and replaced).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub ipc_heartbeat: Duration,
    /// Longest interval of IPC heartbeats to a room that idles: the
    /// interval doubles while a room sends nothing but its answers, up to
    /// this (never below --ipc-heartbeat), and drops back at its next frame.
    /// A hung idle room is found within four of these.
    #[arg(long, default_value = "16s", value_parser = humantime::parse_duration)]
    pub ipc_idle_heartbeat: Duration,
    /// Largest WebSocket message a client may send, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_frame_bytes: u32,
    /// Bytes queued for one client before it is dropped as a slow consumer.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub outbound_queue_bytes: u32,
    /// Public name of this host for load balancers, e.g. `http://10.0.0.5`.
    #[arg(long, env = "HOST")]
    pub host: Option<String>,
    /// Crashes of one room tolerated within `--restart-window`; one more and
    /// the room is marked failed.
    #[arg(long, default_value_t = 5)]
    pub max_restarts: u32,
    /// Window of the restart budget.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub restart_window: Duration,
    /// MongoDB URI (`mongodb://...`); without it an embedded store in
    /// `--data-dir` is used.
    #[arg(long = "store", env = "MONGODB_URI", hide_env_values = true)]
    pub store: Option<String>,
    /// Directory of the embedded store.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Interval of reference-data refreshes (users, bans, filters).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub cache_refresh: Duration,
    /// Load balancers, comma-separated base URLs (http or https).
    #[arg(long, env = "LOADBALANCERS", value_delimiter = ',')]
    pub load_balancers: Vec<String>,
    /// Key sent to the load balancers.
    #[arg(long, env = "LOADBALANCER_KEY", hide_env_values = true)]
    pub lb_key: Option<String>,
    /// Interval of load-balancer heartbeats.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub lb_interval: Duration,
    /// Version advertised to the load balancers (what platforms ask for in
    /// `GET /find/{version}`); the original chatserver's by default.
    #[arg(long, env = "LB_VERSION", default_value = DEFAULT_LB_VERSION)]
    pub lb_version: String,
    /// PEM file of a private CA for https load balancers.
    #[arg(long, env = "LB_CA")]
    pub lb_ca: Option<String>,
    /// Public base URL (e.g. `https://chat.example.com`): create answers then
    /// also carry the room's WebSocket `url` through the shipped nginx.
    #[arg(long, env = "PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How long this host's claim on a room name lasts without renewal
    /// (renewed every third of it); hidden: tests shorten it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, hide = true)]
    pub owner_lease: Duration,
    /// Tests only (honoured by debug builds): the store refuses messages
    /// containing this text, as if they were invalid.
    #[arg(long, hide = true)]
    pub test_poison: Option<String>,

    // Limits against abuse (SECURITY.md lists each with its default).
    /// Time a client gets to send a request's headers; also the longest
    /// wait for the next request on a kept-alive connection.
    #[arg(long, env = "HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// A connection that moves no byte for this long is closed.
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Time a room-port connection gets to become a WebSocket.
    #[arg(long, env = "HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub handshake_timeout: Duration,
    /// Open connections of the room API at most.
    #[arg(long, env = "MAX_API_CONNECTIONS", default_value_t = 2048)]
    pub max_api_connections: usize,
    /// Open connections of the admin API at most (its own reserve: it stays
    /// reachable when the room API is saturated).
    #[arg(long, env = "MAX_ADMIN_CONNECTIONS", default_value_t = 64)]
    pub max_admin_connections: usize,
    /// New connections one client address may open per second on one
    /// listener (0: no cap).
    #[arg(long, env = "MAX_NEW_CONNECTIONS_PER_IP", default_value_t = 50)]
    pub max_new_connections_per_ip: u32,
    /// Proxies whose X-Forwarded-For is believed, comma-separated
    /// addresses or blocks (`127.0.0.1,10.0.0.0/8`; empty: none). Their own
    /// connections are not capped per address (they carry many clients).
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_block, default_value = "127.0.0.1,::1")]
    pub trusted_proxies: Vec<String>,
    /// Open connections of one room at most.
    #[arg(long, env = "MAX_ROOM_CONNECTIONS", default_value_t = 10_000)]
    pub max_room_connections: u32,
    /// Open connections of one user to one room at most.
    #[arg(long, env = "MAX_USER_CONNECTIONS", default_value_t = 20)]
    pub max_user_connections: u32,
    /// Open connections from one client address to one room at most.
    #[arg(long, env = "MAX_IP_CONNECTIONS", default_value_t = 200)]
    pub max_ip_connections: u32,
    /// Bytes of history replayed in a `welcome` at most.
    #[arg(long, env = "WELCOME_HISTORY_BYTES", default_value_t = 64 * 1024)]
    pub welcome_history_bytes: u32,
    /// Origins allowed to open WebSockets, comma-separated
    /// (`https://app.example.com`); unset: any origin.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    // Webhooks (README "Webhooks", SECURITY.md).
    /// Where signed JSON events (`room.created`, `room.closed`, `dm.offline`)
    /// are POSTed; unset: no webhooks.
    #[arg(long, env = "WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key of `X-Chat-Signature` (prefer the environment or
    /// `--webhook-secret-file`: argv is visible to all).
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// A file holding the webhook secret (wins over `--webhook-secret`).
    #[arg(long, env = "WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Webhook events waiting for delivery at most; past it the oldest are
    /// dropped (counted in `chat_webhook_dropped_total`).
    #[arg(long, env = "WEBHOOK_QUEUE", default_value_t = 10_000)]
    pub webhook_queue: usize,
    /// Bound of one webhook attempt (connect, send, answer).
    #[arg(long, env = "WEBHOOK_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,
    /// Attempts per webhook event at most (the first included).
    #[arg(long, env = "WEBHOOK_ATTEMPTS", default_value_t = 8)]
    pub webhook_attempts: u32,
    /// Wait before the first webhook retry, doubled at each one.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub webhook_backoff: Duration,
    /// Longest wait between two webhook attempts.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub webhook_backoff_cap: Duration,

    // Many hosts (ARCHITECTURE.md "Users across rooms", README "Two hosts").
    /// Redis shared by the hosts (`redis://[:password@]host:port/db`) for
    /// direct messages, receipts and presence across hosts; unset: one
    /// host. The URL may hold a password: prefer the environment.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// How long a host's presence entries live in Redis without a refresh
    /// (refreshed every third of it): the users of a dead host go offline
    /// within this time.
    #[arg(long, env = "PRESENCE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub presence_ttl: Duration,
}

fn parse_block(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Ok(String::new());
    }
    s.parse::<chat_shared::client_ip::IpNet>()
        .map(|_| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The room API version the original chatserver advertised.
pub const DEFAULT_LB_VERSION: &str = "1.0.0";

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("expected FIRST-LAST, got {s:?}"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|e| format!("bad first port: {e}"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|e| format!("bad last port: {e}"))?;
    if a == 0 || a > b {
        return Err(format!("bad port range {a}-{b}"));
    }
    Ok((a, b))
}

impl Config {
    /// Parses argv and the environment.
    pub fn load() -> Self {
        let mut c = Self::parse();
        c.admin_key = std::env::var("ADMIN_KEY").ok().filter(|k| !k.is_empty());
        c.key = c.key.filter(|k| !k.is_empty());
        c.jwt_secret = c.jwt_secret.filter(|k| !k.is_empty());
        c.lb_key = c.lb_key.filter(|k| !k.is_empty());
        c.store = c.store.filter(|k| !k.trim().is_empty());
        c.webhook_secret = c.webhook_secret.filter(|k| !k.is_empty());
        c.redis = c.redis.filter(|u| !u.trim().is_empty());
        c.load_balancers.retain(|u| !u.trim().is_empty());
        if c.lb_version.trim().is_empty() {
            c.lb_version = DEFAULT_LB_VERSION.to_owned();
        }
        c
    }

    /// Number of room ports.
    pub fn range_len(&self) -> usize {
        usize::from(self.room_ports.1 - self.room_ports.0) + 1
    }

    /// The WebSocket URL of a room's port through the public base URL.
    pub fn room_url(&self, port: u16) -> Option<String> {
        let base = self.public_url.as_deref()?.trim_end_matches('/');
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_owned()
        };
        Some(format!("{ws}/rooms/{port}"))
    }

    /// The limits handed to rooms and listeners.
    pub fn limits(&self) -> chat_shared::limits::Limits {
        chat_shared::limits::Limits {
            header_timeout_ms: millis(self.header_timeout),
            idle_timeout_ms: millis(self.idle_timeout),
            handshake_timeout_ms: millis(self.handshake_timeout),
            new_conns_per_ip_per_sec: self.max_new_connections_per_ip,
            trusted_proxies: self
                .trusted_proxies
                .iter()
                .filter(|b| !b.is_empty())
                .cloned()
                .collect(),
            max_room_connections: self.max_room_connections,
            max_user_connections: self.max_user_connections,
            max_ip_connections: self.max_ip_connections,
            welcome_history_bytes: self.welcome_history_bytes,
            allowed_origins: self
                .allowed_origins
                .iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }

    /// The longest heartbeat interval, never below the busy one.
    pub fn ipc_idle_heartbeat(&self) -> Duration {
        self.ipc_idle_heartbeat.max(self.ipc_heartbeat)
    }

    pub fn capacity(&self) -> usize {
        self.max_rooms
            .unwrap_or_else(|| self.range_len())
            .min(self.range_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_urls() {
        let mut c = Config::parse_from(["chatserver"]);
        assert_eq!(c.room_url(34001), None);
        c.public_url = Some("https://chat.example.com/".into());
        assert_eq!(
            c.room_url(34001).as_deref(),
            Some("wss://chat.example.com/rooms/34001")
        );
        c.public_url = Some("http://10.0.0.5:8080".into());
        assert_eq!(c.room_url(1).as_deref(), Some("ws://10.0.0.5:8080/rooms/1"));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("34000-34999"), Ok((34000, 34999)));
        assert!(parse_range("5-4").is_err());
        assert!(parse_range("x").is_err());
        assert!(parse_range("0-4").is_err());
    }
}
