//! WebSocket clients: connecting many, reading with latency samples, and a
//! closed-loop broadcast driver ("a few messages in flight at a time").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::Rng;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::stats::{self, Pcts};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub type Sink = SplitSink<Ws, Message>;

/// Bound of one connect (TCP + handshake + first frame).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Marker of a timestamped text: `@@T<nanos>|`.
const MARK: &str = "@@T";

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on this process's monotonic clock.
pub fn now_ns() -> u64 {
    let e = *EPOCH.get_or_init(Instant::now);
    e.elapsed().as_nanos() as u64
}

/// A text of exactly `len` bytes (at least the marker) carrying the send time.
pub fn stamped_text(len: usize, tag: u64) -> String {
    let mut s = format!("{MARK}{}|{tag}|", now_ns());
    while s.len() < len {
        s.push('x');
    }
    s
}

/// The send time carried by a frame, if it has one.
pub fn find_stamp(frame: &str) -> Option<u64> {
    let i = frame.find(MARK)? + MARK.len();
    let rest = &frame.as_bytes()[i..];
    let end = rest.iter().position(|b| !b.is_ascii_digit())?;
    if end == 0 || rest[end] != b'|' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// What the frames of a room mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// The chat protocol: `message` frames carry deliveries; `ack` to the sender.
    Chat,
    /// websocket-shootout: `broadcast` frames are deliveries (the sender
    /// included); `broadcastResult` is the sender's round trip.
    Shootout,
}

/// Shared by the readers of one group of clients.
pub struct Recorder {
    pub proto: Proto,
    pub frames: AtomicU64,
    pub delivered: AtomicU64,
    pub closed: AtomicU64,
    pub latency: Mutex<Histogram<u64>>,
    pub rtt: Mutex<Histogram<u64>>,
    pub notify: Notify,
}

impl Recorder {
    pub fn new(proto: Proto) -> Arc<Self> {
        Arc::new(Self {
            proto,
            frames: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            latency: Mutex::new(stats::histogram()),
            rtt: Mutex::new(stats::histogram()),
            notify: Notify::new(),
        })
    }

    pub fn on_text(&self, text: &str) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        let Some(sent) = find_stamp(text) else {
            return;
        };
        let micros = now_ns().saturating_sub(sent) / 1000;
        if self.proto == Proto::Shootout && text.starts_with("{\"type\":\"broadcastResult\"") {
            if let Ok(mut h) = self.rtt.lock() {
                stats::record(&mut h, micros);
            }
            return;
        }
        if let Ok(mut h) = self.latency.lock() {
            stats::record(&mut h, micros);
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
    }

    /// Forgets the latency samples (not the counters).
    pub fn reset(&self) {
        if let Ok(mut h) = self.latency.lock() {
            h.reset();
        }
        if let Ok(mut h) = self.rtt.lock() {
            h.reset();
        }
    }

    pub fn latency(&self) -> Pcts {
        self.latency
            .lock()
            .map(|h| Pcts::from_hist(&h))
            .unwrap_or_default()
    }

    pub fn rtt(&self) -> Pcts {
        self.rtt
            .lock()
            .map(|h| Pcts::from_hist(&h))
            .unwrap_or_default()
    }

    /// Waits until no frame arrived for `quiet`, at most `max`.
    pub async fn settle(&self, quiet: Duration, max: Duration) {
        let deadline = Instant::now() + max;
        let mut last = self.frames.load(Ordering::Relaxed);
        while Instant::now() < deadline {
            tokio::time::sleep(quiet).await;
            let now = self.frames.load(Ordering::Relaxed);
            if now == last {
                return;
            }
            last = now;
        }
    }
}

/// Opens a WebSocket (Nagle off), bounded in time.
pub async fn connect(url: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_with_config(url, None, true),
    )
    .await
    .context("connect timed out")?
    .with_context(|| format!("connect {url}"))?;
    Ok(ws)
}

/// Connects a chat client as a guest and waits for its `welcome`.
pub async fn connect_chat(port: u16, name: &str) -> anyhow::Result<Ws> {
    let mut ws = connect(&format!("ws://127.0.0.1:{port}/?name={name}")).await?;
    let first = tokio::time::timeout(CONNECT_TIMEOUT, ws.next())
        .await
        .context("no welcome in time")?;
    match first {
        Some(Ok(Message::Text(t))) if t.as_str().starts_with("{\"type\":\"welcome\"") => Ok(ws),
        Some(Ok(Message::Close(c))) => bail!("join refused: {c:?}"),
        other => bail!("expected welcome, got {other:?}"),
    }
}

/// Reads frames into the recorder until the connection ends.
pub fn spawn_reader(mut stream: SplitStream<Ws>, rec: Arc<Recorder>) {
    tokio::spawn(async move {
        while let Some(m) = stream.next().await {
            match m {
                Ok(Message::Text(t)) => rec.on_text(t.as_str()),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        rec.closed.fetch_add(1, Ordering::Relaxed);
    });
}

/// One client whose frames go to a recorder; the driver owns the sink.
pub struct Client {
    pub sink: Sink,
    /// Earliest time this client may send again (client-side rate limit).
    pub next_ok: Instant,
}

/// Connects `n` clients (chat guests, or plain shootout sockets) with
/// `parallel` connects at a time; each gets a reader on `rec`.
pub async fn connect_many(
    port_or_url: &Target,
    first_index: usize,
    n: usize,
    parallel: usize,
    rec: &Arc<Recorder>,
) -> anyhow::Result<Vec<Client>> {
    let results: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(first_index..first_index + n)
        .map(|i| async move {
            match port_or_url {
                Target::Chat(port) => connect_chat(*port, &format!("u{i}")).await,
                Target::Url(url) => connect(url).await,
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    let mut clients = Vec::with_capacity(n);
    let mut errors = 0;
    let mut first_err = None;
    for r in results {
        match r {
            Ok(ws) => {
                let (sink, stream) = ws.split();
                spawn_reader(stream, rec.clone());
                clients.push(Client {
                    sink,
                    next_ok: Instant::now(),
                });
            }
            Err(e) => {
                errors += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        // Close what did connect before failing.
        for mut c in clients {
            let _ = c.sink.close().await;
        }
        return Err(e.context(format!("{errors} of {n} connections failed")));
    }
    Ok(clients)
}

/// Connects `n` clients in chunks of `chunk`, letting the join
/// announcements drain between chunks (so no reader falls far behind and gets
/// dropped as a slow consumer).
pub async fn connect_paced(
    target: &Target,
    first_index: usize,
    n: usize,
    parallel: usize,
    chunk: usize,
    rec: &Arc<Recorder>,
) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(n);
    let chunk = chunk.max(1);
    while clients.len() < n {
        let k = chunk.min(n - clients.len());
        match connect_many(target, first_index + clients.len(), k, parallel, rec).await {
            Ok(more) => clients.extend(more),
            Err(e) => {
                close_all(clients).await;
                return Err(e);
            }
        }
        rec.settle(Duration::from_millis(50), Duration::from_secs(60))
            .await;
    }
    Ok(clients)
}

/// Where clients connect.
#[derive(Debug, Clone)]
pub enum Target {
    /// A chat room on 127.0.0.1:PORT (`?name=` guests).
    Chat(u16),
    /// Any websocket-shootout URL.
    Url(String),
}

/// Closes clients, bounded in time.
pub async fn close_all(clients: Vec<Client>) {
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::stream::iter(clients).for_each_concurrent(256, |mut c| async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.sink.close()).await;
        }),
    )
    .await;
}

/// Parameters of one closed-loop broadcast step.
#[derive(Debug, Clone)]
pub struct Load {
    pub proto: Proto,
    /// Messages in flight at once.
    pub inflight: u64,
    pub duration: Duration,
    pub max_messages: u64,
    /// Bytes of each message body (text or payload).
    pub body: usize,
    /// Minimum interval between two sends of one client (rate limits).
    pub client_interval: Duration,
    /// Bound of the wait for the last deliveries.
    pub drain: Duration,
}

/// The outcome of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub clients: usize,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub disconnected: u64,
    pub secs: f64,
    pub delivered_per_sec: f64,
    pub latency: Pcts,
    /// Sender round trips (shootout `broadcastResult`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt: Option<Pcts>,
    pub pass: bool,
    /// User + system CPU seconds of the server's processes during the step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_cpu_secs: Option<f64>,
    /// `server_cpu_secs` per delivered message, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_us_per_delivery: Option<f64>,
}

impl StepResult {
    /// A step whose clients could not all connect: a failure.
    pub fn failed_connect(clients: usize) -> Self {
        Self {
            clients,
            sent: 0,
            expected: 0,
            delivered: 0,
            lost: 0,
            disconnected: 0,
            secs: 0.0,
            delivered_per_sec: 0.0,
            latency: Pcts::default(),
            rtt: None,
            pass: false,
            server_cpu_secs: None,
            server_us_per_delivery: None,
        }
    }

    /// Records the server's CPU time over the step.
    pub fn set_server_cpu(&mut self, secs: f64) {
        self.server_cpu_secs = Some(secs);
        self.server_us_per_delivery =
            (self.delivered > 0).then(|| secs * 1e6 / self.delivered as f64);
    }
}

fn frame_for(proto: Proto, body: usize, tag: u64) -> Message {
    let text = stamped_text(body, tag);
    let json = match proto {
        Proto::Chat => format!("{{\"type\":\"say\",\"text\":\"{text}\"}}"),
        Proto::Shootout => format!("{{\"type\":\"broadcast\",\"payload\":\"{text}\"}}"),
    };
    Message::Text(json.into())
}

/// Picks a client allowed to send now, or the time to wait for one.
fn pick(clients: &[Client], rng: &mut impl Rng, now: Instant) -> Result<usize, Instant> {
    let n = clients.len();
    for _ in 0..8 {
        let i = rng.random_range(0..n);
        if clients[i].next_ok <= now {
            return Ok(i);
        }
    }
    let start = rng.random_range(0..n);
    let mut soonest = None::<Instant>;
    for k in 0..n {
        let i = (start + k) % n;
        if clients[i].next_ok <= now {
            return Ok(i);
        }
        soonest = Some(soonest.map_or(clients[i].next_ok, |s| s.min(clients[i].next_ok)));
    }
    Err(soonest.unwrap_or(now))
}

/// Runs one step: sends from random clients keeping `inflight` messages'
/// worth of deliveries outstanding, for `duration` (or `max_messages`), then
/// waits (bounded) for the rest. Latency is measured at every receiver.
pub async fn run_load(clients: &mut [Client], rec: &Recorder, load: &Load) -> StepResult {
    let n = clients.len();
    let per_msg = match load.proto {
        Proto::Chat => n.saturating_sub(1) as u64,
        Proto::Shootout => n as u64,
    };
    rec.reset();
    let base = rec.delivered.load(Ordering::Relaxed);
    let closed_before = rec.closed.load(Ordering::Relaxed);
    let mut rng = rand::rng();
    let start = Instant::now();
    let end = start + load.duration;
    let mut sent = 0u64;
    let mut send_failed = false;
    while Instant::now() < end && sent < load.max_messages && n > 0 {
        let delivered = rec.delivered.load(Ordering::Relaxed) - base;
        if sent >= load.inflight && delivered < (sent + 1 - load.inflight) * per_msg {
            // Wait for deliveries (bounded: the deadline still applies).
            let _ = tokio::time::timeout(Duration::from_millis(5), rec.notify.notified()).await;
            continue;
        }
        let now = Instant::now();
        let i = match pick(clients, &mut rng, now) {
            Ok(i) => i,
            Err(at) => {
                tokio::time::sleep_until(at.min(end).into()).await;
                continue;
            }
        };
        let c = &mut clients[i];
        c.next_ok = now + load.client_interval;
        if c.sink
            .send(frame_for(load.proto, load.body, sent))
            .await
            .is_err()
        {
            send_failed = true;
            break;
        }
        sent += 1;
    }
    let expected = sent * per_msg;
    let drain_end = Instant::now() + load.drain;
    while rec.delivered.load(Ordering::Relaxed) - base < expected && Instant::now() < drain_end {
        let _ = tokio::time::timeout(Duration::from_millis(5), rec.notify.notified()).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let delivered = rec.delivered.load(Ordering::Relaxed) - base;
    let disconnected = rec.closed.load(Ordering::Relaxed) - closed_before;
    let latency = rec.latency();
    let rtt = (load.proto == Proto::Shootout).then(|| rec.rtt());
    let lost = expected.saturating_sub(delivered);
    StepResult {
        clients: n,
        sent,
        expected,
        delivered,
        lost,
        disconnected,
        secs,
        delivered_per_sec: delivered as f64 / secs.max(1e-9),
        latency,
        rtt,
        pass: !send_failed
            && sent > 0
            && lost == 0
            && disconnected == 0
            && latency.p95_ms <= 500.0
            && rtt.is_none_or(|r| r.p95_ms <= 500.0),
        server_cpu_secs: None,
        server_us_per_delivery: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let t = stamped_text(200, 7);
        assert_eq!(t.len(), 200);
        let ns = find_stamp(&t).unwrap();
        assert!(ns <= now_ns());
        let frame = format!(
            "{{\"type\":\"message\",\"seq\":1,\"from\":{{\"id\":\"guest:1\",\"name\":\"u1\"}},\"text\":\"{t}\",\"ts\":1}}"
        );
        assert_eq!(find_stamp(&frame), Some(ns));
        assert_eq!(find_stamp("{\"type\":\"ack\",\"seq\":3}"), None);
        assert_eq!(find_stamp("@@T|"), None);
        assert_eq!(find_stamp("@@T12"), None);
    }

    #[test]
    fn recorder_counts_deliveries_and_round_trips() {
        let rec = Recorder::new(Proto::Shootout);
        let t = stamped_text(50, 1);
        rec.on_text(&format!("{{\"type\":\"broadcast\",\"payload\":\"{t}\"}}"));
        rec.on_text(&format!(
            "{{\"type\":\"broadcastResult\",\"payload\":\"{t}\"}}"
        ));
        rec.on_text("{\"type\":\"joined\"}");
        assert_eq!(rec.frames.load(Ordering::Relaxed), 3);
        assert_eq!(rec.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(rec.latency().count, 1);
        assert_eq!(rec.rtt().count, 1);
        rec.reset();
        assert_eq!(rec.latency().count, 0);
    }
}
