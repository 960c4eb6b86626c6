//! The accept loop every HTTP listener uses (room API, admin API, room
//! ports): a cap on open connections, a cap on new connections per client
//! address and second, a header-read timeout, an idle timeout, and on room
//! ports a handshake timeout.
//!
//! Each listener has its own cap, so a flood of the public room API never
//! takes the admin API's connections. A connection over a cap is accepted
//! and closed at once (its file descriptor is freed rather than left in the
//! kernel's backlog).

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::client_ip::{TrustedProxies, canonical};

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// Name in logs (`room API`, `admin API`, `room port`).
    pub what: &'static str,
    /// Open connections at most (0: no cap).
    pub max_connections: usize,
    /// Complete request headers within this time; also the longest wait for
    /// the next request on a kept-alive connection.
    pub header_timeout: Duration,
    /// No byte read or written for this long closes the connection.
    pub idle_timeout: Duration,
    /// The whole HTTP phase of a connection (until it is upgraded or
    /// answered) lasts at most this long. `None` on the APIs. (Keep-alive
    /// stays on: hyper would answer an upgrade with `Connection: close`
    /// otherwise.)
    pub handshake_timeout: Option<Duration>,
    /// New connections per client address and second (0: no cap). Peers in
    /// `trusted_proxies` are exempt: they carry many clients.
    pub new_per_ip_per_sec: u32,
    pub trusted_proxies: TrustedProxies,
}

impl ListenerLimits {
    /// The limits of an API listener from the shared [`crate::limits::Limits`].
    pub fn api(what: &'static str, l: &crate::limits::Limits, max_connections: usize) -> Self {
        Self {
            what,
            max_connections,
            header_timeout: ms(l.header_timeout_ms),
            idle_timeout: ms(l.idle_timeout_ms),
            handshake_timeout: None,
            new_per_ip_per_sec: l.new_conns_per_ip_per_sec,
            trusted_proxies: TrustedProxies::parse(&l.trusted_proxies).unwrap_or_default(),
        }
    }

    /// The limits of a room's port.
    pub fn room_port(l: &crate::limits::Limits) -> Self {
        Self {
            what: "room port",
            max_connections: l.max_room_connections as usize,
            header_timeout: ms(l.header_timeout_ms),
            idle_timeout: ms(l.idle_timeout_ms),
            handshake_timeout: Some(ms(l.handshake_timeout_ms)),
            new_per_ip_per_sec: l.new_conns_per_ip_per_sec,
            trusted_proxies: TrustedProxies::parse(&l.trusted_proxies).unwrap_or_default(),
        }
    }
}

/// A zero duration would close everything at once: it means "off" (a day).
fn ms(v: u64) -> Duration {
    if v == 0 {
        Duration::from_secs(86_400)
    } else {
        Duration::from_millis(v)
    }
}

/// Serves `app` on `listener` under `limits` until `stop` is cancelled, then
/// lets open requests finish (kept-alive connections are closed).
/// Requests carry `ConnectInfo<SocketAddr>` of the peer.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    stop: CancellationToken,
) {
    let limits = Arc::new(limits);
    let permits = Arc::new(Semaphore::new(if limits.max_connections == 0 {
        Semaphore::MAX_PERMITS
    } else {
        limits.max_connections
    }));
    let rate = RateByIp::default();
    let conns = TaskTracker::new();
    let mut refused_logged = Instant::now() - Duration::from_secs(60);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors (or a transient error): wait
                    // instead of spinning; open connections keep working.
                    tracing::warn!(listener = limits.what, error = %e, "accept failed");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                    }
                }
            },
        };
        let ip = canonical(peer.ip());
        let refused =
            if !limits.trusted_proxies.trusts(ip) && !rate.admit(ip, limits.new_per_ip_per_sec) {
                Some("new connections from this address per second")
            } else {
                None
            };
        let permit = match refused {
            Some(_) => None,
            None => permits.clone().try_acquire_owned().ok(),
        };
        let Some(permit) = permit else {
            if refused_logged.elapsed() > Duration::from_secs(5) {
                refused_logged = Instant::now();
                tracing::warn!(
                    listener = limits.what,
                    %ip,
                    cap = refused.unwrap_or("open connections"),
                    "connection refused over a cap (logged once per 5 s)"
                );
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let limits = limits.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            serve_one(tcp, peer, app, &limits, stop).await;
            drop(permit);
        });
    }
    conns.close();
    conns.wait().await;
}

async fn serve_one(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: &ListenerLimits,
    stop: CancellationToken,
) {
    let activity = Arc::new(AtomicU64::new(0));
    let born = Instant::now();
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: activity.clone(),
        born,
    });
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let mut app = app.clone();
        async move { Ok::<_, Infallible>(app.call(req).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    let deadline = limits
        .handshake_timeout
        .map(|t| tokio::time::Instant::now() + t);
    let handshake = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(handshake);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = limits.what, %peer, error = %e, "connection ended");
                }
                return;
            }
            _ = &mut handshake => {
                tracing::debug!(listener = limits.what, %peer, "handshake timeout");
                return;
            }
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = idle_expired(&activity, born, limits.idle_timeout) => {
                tracing::debug!(listener = limits.what, %peer, "idle timeout");
                return;
            }
        }
    }
}

/// Resolves once no byte moved for `idle`.
async fn idle_expired(activity: &AtomicU64, born: Instant, idle: Duration) {
    loop {
        let last = born + Duration::from_millis(activity.load(Ordering::Relaxed));
        let due = last + idle;
        let now = Instant::now();
        if now >= due {
            return;
        }
        tokio::time::sleep(due - now).await;
    }
}

/// A stream that records when it last moved a byte (ms since `born`).
struct Watched {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
    born: Instant,
}

impl Watched {
    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.activity.store(ms, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// New connections per address in the current second (rooms use it too,
/// for clients behind a trusted proxy).
#[derive(Debug)]
pub struct RateByIp {
    seen: Mutex<(u64, HashMap<IpAddr, u32>)>,
    epoch: Instant,
}

impl Default for RateByIp {
    fn default() -> Self {
        Self {
            seen: Mutex::new((0, HashMap::new())),
            epoch: Instant::now(),
        }
    }
}

impl RateByIp {
    /// Counts one connection of `ip`; false when over `per_sec` (0: no cap).
    pub fn admit(&self, ip: IpAddr, per_sec: u32) -> bool {
        if per_sec == 0 {
            return true;
        }
        let second = self.epoch.elapsed().as_secs();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0 != second {
            // A new window: forget the last one (bounded memory).
            seen.0 = second;
            seen.1.clear();
        }
        let n = seen.1.entry(ip).or_insert(0);
        *n = n.saturating_add(1);
        *n <= per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_per_ip() {
        let r = RateByIp::default();
        let a: IpAddr = "1.1.1.1".parse().unwrap();
        let b: IpAddr = "2.2.2.2".parse().unwrap();
        // Within one second (unless the test straddles a boundary, in which
        // case a fresh window only admits more, never fewer).
        assert!(r.admit(a, 2));
        assert!(r.admit(a, 2));
        let third = r.admit(a, 2);
        assert!(r.admit(b, 2));
        if r.epoch.elapsed().as_secs() == 0 {
            assert!(!third);
        }
        assert!(RateByIp::default().admit(a, 0));
    }
}
