//! Registration and heartbeats with the load balancers, in the original
//! chatserver's protocol:
//!
//! `PUT {lb}/register/{name}/{capacity}/{rooms}/{version}` with `X-API-Key`,
//! every `--lb-interval`; `DELETE {lb}/register/{name}` at shutdown. `{name}`
//! is the URL-encoded `HOST:PORT`; `{version}` is `--lb-version` (`1.0.0`,
//! the original's). Differences from the original chatserver: capacity is
//! `--max-rooms` (not CPUs − 1); a draining host unregisters once and stops
//! heartbeating (the load balancer would still hand it out), and registers
//! again on resume; the first heartbeat waits until running rooms are
//! adopted after a restart.
//!
//! Each load balancer has its own circuit breaker (1 s timeout; open after 3
//! consecutive failures; half-open after 30 s) and its own task, so a slow or
//! dead load balancer never delays the others, the APIs or the rooms. A task
//! holds a [`Host`]: what it reports (capacity and rooms), the drain state it
//! follows (a `watch`) and the shutdown token, not the master.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{counter, gauge};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Time allowed for one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Consecutive failures that open a breaker.
pub const OPEN_AFTER: u32 = 3;
/// Time an open breaker waits before one trial call.
pub const HALF_OPEN_AFTER: Duration = Duration::from_secs(30);

/// What JavaScript's `encodeURIComponent` leaves alone.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

#[derive(Debug, Error)]
pub enum LbError {
    #[error("cannot read the CA file {path}: {source}")]
    CaFile {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid CA certificate: {0}")]
    Ca(reqwest::Error),
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
}

/// The `{name}` of this host: `encodeURIComponent(HOST + ":" + PORT)`.
pub fn host_name(host: &str, port: u16) -> String {
    let raw = format!("{}:{port}", host.trim_end_matches('/'));
    utf8_percent_encode(&raw, COMPONENT).to_string()
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Breaker {
    Closed,
    Open,
    HalfOpen,
}

/// What `/api/v1/load` and metrics show of one load balancer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LbStatus {
    pub url: String,
    pub breaker: Breaker,
    pub consecutive_failures: u32,
    pub total_failures: u64,
    /// Seconds since the last successful heartbeat, if any.
    pub last_success_secs_ago: Option<u64>,
    pub last_error: Option<String>,
}

/// One load balancer and its breaker.
pub struct LoadBalancer {
    pub url: String,
    state: Mutex<LbState>,
}

struct LbState {
    breaker: Breaker,
    failures: u32,
    total_failures: u64,
    opened_at: Option<Instant>,
    last_success: Option<Instant>,
    last_error: Option<String>,
}

impl LoadBalancer {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            state: Mutex::new(LbState {
                breaker: Breaker::Closed,
                failures: 0,
                total_failures: 0,
                opened_at: None,
                last_success: None,
                last_error: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LbState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may be made now (an open breaker turns half-open once
    /// its wait is over).
    pub fn allow(&self, now: Instant) -> bool {
        let mut s = self.lock();
        match s.breaker {
            Breaker::Closed | Breaker::HalfOpen => true,
            Breaker::Open => {
                if s.opened_at
                    .is_some_and(|t| now.duration_since(t) >= HALF_OPEN_AFTER)
                {
                    s.breaker = Breaker::HalfOpen;
                    tracing::info!(lb = %self.url, "load balancer breaker half-open: trying again");
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Records a success; logs when it changes the state.
    pub fn success(&self, now: Instant) {
        let mut s = self.lock();
        if s.breaker != Breaker::Closed || s.failures > 0 {
            tracing::info!(lb = %self.url, "load balancer reachable again");
        }
        s.breaker = Breaker::Closed;
        s.failures = 0;
        s.opened_at = None;
        s.last_success = Some(now);
        s.last_error = None;
    }

    /// Records a failure; logs only when it changes the state.
    pub fn failure(&self, now: Instant, error: String) {
        let mut s = self.lock();
        s.failures += 1;
        s.total_failures += 1;
        counter!("chat_lb_heartbeat_failures_total", "lb" => self.url.clone()).increment(1);
        let was = s.breaker;
        if s.failures == 1 && was == Breaker::Closed {
            tracing::warn!(lb = %self.url, %error, "load balancer heartbeat failed");
        }
        if was == Breaker::HalfOpen || s.failures >= OPEN_AFTER {
            if was != Breaker::Open {
                tracing::warn!(lb = %self.url, %error, failures = s.failures, "load balancer breaker open; next try in 30 s");
            }
            s.breaker = Breaker::Open;
            s.opened_at = Some(now);
        }
        s.last_error = Some(error);
    }

    pub fn status(&self) -> LbStatus {
        let s = self.lock();
        LbStatus {
            url: self.url.clone(),
            breaker: s.breaker,
            consecutive_failures: s.failures,
            total_failures: s.total_failures,
            last_success_secs_ago: s.last_success.map(|t| t.elapsed().as_secs()),
            last_error: s.last_error.clone(),
        }
    }
}

/// The HTTP client for load balancers: system roots plus an optional CA.
pub fn client(ca_file: Option<&str>) -> Result<reqwest::Client, LbError> {
    let mut b = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CALL_TIMEOUT);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| LbError::CaFile {
            path: path.to_owned(),
            source,
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(LbError::Ca)?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(LbError::Client)
}

/// How this host registers: its name, key and advertised version, and the
/// heartbeat interval.
#[derive(Debug, Clone)]
pub struct Registration {
    /// `encodeURIComponent(HOST:PORT)`.
    pub name: String,
    pub key: String,
    /// The version platforms ask for in `GET /find/{version}`.
    pub version: String,
    pub every: Duration,
}

/// Where this host stands with one load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Heartbeating (or trying to).
    Listed,
    /// Unregistered while draining: no heartbeats until a resume.
    Withdrawn,
}

/// An error with every cause, `a: b: c` (reqwest's own text is only "error
/// sending request"; the cause says "connection refused").
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

fn request_error(e: reqwest::Error) -> String {
    error_chain(&e.without_url())
}

/// What this host reports to load balancers.
pub trait HostLoad: Send + Sync {
    /// Rooms this host may run at most (`--max-rooms`).
    fn capacity(&self) -> usize;
    /// Rooms it runs now.
    fn rooms(&self) -> usize;
}

/// What a heartbeat task needs of this host, and nothing else.
#[derive(Clone)]
pub struct Host {
    pub load: Arc<dyn HostLoad>,
    /// `true` while new rooms are accepted; `false` while draining.
    pub accepting: watch::Receiver<bool>,
    /// Cancelled at shutdown (the task then unregisters).
    pub shutdown: CancellationToken,
}

/// The heartbeat's path: `/register/{name}/{capacity}/{rooms}/{version}`.
fn register_path(reg: &Registration, capacity: usize, rooms: usize) -> String {
    format!(
        "/register/{}/{capacity}/{rooms}/{}",
        reg.name,
        utf8_percent_encode(&reg.version, COMPONENT)
    )
}

async fn register(
    load: &dyn HostLoad,
    http: &reqwest::Client,
    lb: &LoadBalancer,
    reg: &Registration,
) -> Result<(), String> {
    let (capacity, rooms) = (load.capacity(), load.rooms());
    let url = format!("{}{}", lb.url, register_path(reg, capacity, rooms));
    let res = http
        .put(url)
        .header("X-API-Key", &reg.key)
        .send()
        .await
        .map_err(request_error)?;
    let status = res.status();
    if status.is_success() {
        Ok(())
    } else {
        let body = res.text().await.unwrap_or_default();
        Err(format!(
            "{status}: {}",
            body.chars().take(200).collect::<String>()
        ))
    }
}

/// `DELETE {lb}/register/{name}`, once; the outcome is logged.
async fn unregister(http: &reqwest::Client, lb: &LoadBalancer, reg: &Registration, why: &str) {
    let url = format!("{}/register/{}", lb.url, reg.name);
    match http.delete(url).header("X-API-Key", &reg.key).send().await {
        Ok(r) if r.status().is_success() => {
            tracing::info!(lb = %lb.url, why, "unregistered from the load balancer")
        }
        Ok(r) => {
            tracing::warn!(lb = %lb.url, why, status = %r.status(), "load balancer refused the unregistration")
        }
        Err(e) => {
            tracing::warn!(lb = %lb.url, why, error = %request_error(e), "cannot unregister from the load balancer")
        }
    }
}

/// One heartbeat through the breaker.
async fn heartbeat(
    load: &dyn HostLoad,
    http: &reqwest::Client,
    lb: &LoadBalancer,
    reg: &Registration,
) {
    if lb.allow(Instant::now()) {
        match register(load, http, lb, reg).await {
            Ok(()) => lb.success(Instant::now()),
            Err(e) => lb.failure(Instant::now(), e),
        }
    }
    gauge!("chat_lb_breaker_open", "lb" => lb.url.clone()).set(
        if lb.status().breaker == Breaker::Open {
            1.0
        } else {
            0.0
        },
    );
}

/// Heartbeats one load balancer until shutdown, then unregisters.
///
/// The first heartbeat waits for `adopted` (running rooms adopted after a
/// restart, so it does not report 0 rooms). While the host drains it is
/// unregistered once and sends no heartbeats (the original load balancer
/// hands out hosts whatever their free capacity); a resume registers it
/// again at once. The drain state is watched, not polled.
pub async fn run_one(
    host: Host,
    http: reqwest::Client,
    lb: Arc<LoadBalancer>,
    reg: Registration,
    adopted: CancellationToken,
) {
    let Host {
        load,
        mut accepting,
        shutdown,
    } = host;
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = adopted.cancelled() => {}
    }
    let mut standing = Standing::Listed;
    let mut next_beat = tokio::time::Instant::now();
    // Once the master is gone the drain state cannot change any more.
    let mut watching = true;
    loop {
        let now = tokio::time::Instant::now();
        let open = *accepting.borrow_and_update();
        match (open, standing) {
            (true, Standing::Listed) if now >= next_beat => {
                heartbeat(&*load, &http, &lb, &reg).await;
                next_beat = now + reg.every;
            }
            (true, Standing::Listed) => {}
            (true, Standing::Withdrawn) => {
                tracing::info!(lb = %lb.url, "resumed: registering with the load balancer again");
                standing = Standing::Listed;
                heartbeat(&*load, &http, &lb, &reg).await;
                next_beat = now + reg.every;
            }
            (false, Standing::Listed) => {
                unregister(&http, &lb, &reg, "draining").await;
                standing = Standing::Withdrawn;
            }
            (false, Standing::Withdrawn) => {}
        }
        let beat = standing == Standing::Listed;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(next_beat), if beat => {}
            changed = accepting.changed(), if watching => watching = changed.is_ok(),
        }
    }
    if standing == Standing::Listed {
        unregister(&http, &lb, &reg, "shutting down").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_encoded_like_encode_uri_component() {
        assert_eq!(
            host_name("http://10.0.0.5", 80),
            "http%3A%2F%2F10.0.0.5%3A80"
        );
        assert_eq!(
            host_name("https://chat-1.example.com/", 443),
            "https%3A%2F%2Fchat-1.example.com%3A443"
        );
    }

    #[test]
    fn register_path_carries_the_advertised_version() {
        let reg = Registration {
            name: host_name("http://10.0.0.5", 80),
            key: "k".into(),
            version: "1.0.0".into(),
            every: Duration::from_secs(10),
        };
        assert_eq!(
            register_path(&reg, 40, 3),
            "/register/http%3A%2F%2F10.0.0.5%3A80/40/3/1.0.0"
        );
        let odd = Registration {
            version: "2.0 beta/1".into(),
            ..reg
        };
        assert!(register_path(&odd, 1, 0).ends_with("/1/0/2.0%20beta%2F1"));
    }

    #[test]
    fn error_chain_names_every_cause() {
        #[derive(Debug, Error)]
        #[error("error sending request")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        assert_eq!(
            error_chain(&e),
            "error sending request: Connection refused (os error 111)"
        );
    }

    #[test]
    fn breaker_opens_after_three_and_half_opens_after_thirty_seconds() {
        let lb = LoadBalancer::new("http://lb");
        let t0 = Instant::now();
        for _ in 0..2 {
            assert!(lb.allow(t0));
            lb.failure(t0, "down".into());
        }
        assert_eq!(lb.status().breaker, Breaker::Closed);
        lb.failure(t0, "down".into());
        assert_eq!(lb.status().breaker, Breaker::Open);
        assert!(!lb.allow(t0 + Duration::from_secs(29)));
        assert!(lb.allow(t0 + HALF_OPEN_AFTER));
        assert_eq!(lb.status().breaker, Breaker::HalfOpen);
        // A failed trial opens it again at once.
        lb.failure(t0 + HALF_OPEN_AFTER, "still down".into());
        assert_eq!(lb.status().breaker, Breaker::Open);
        assert!(lb.allow(t0 + HALF_OPEN_AFTER * 2));
        lb.success(t0 + HALF_OPEN_AFTER * 2);
        let s = lb.status();
        assert_eq!(s.breaker, Breaker::Closed);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(s.total_failures, 4);
    }
}
