//! The five benchmarks. Each runs against our server and then, in the same
//! run, against its Node.js peer, and reports both plus their ratio.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use rand::Rng;
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Client, Load, Proto, Recorder, StepResult, Target};
use crate::procs::CpuOf;
use crate::report::{Table, fmt_f, fmt_ms, fmt_opt};
use crate::stats::{self, Pcts};
use crate::targets::{self, NodeProc, OurServer};

/// Options shared by every benchmark.
#[derive(Debug, Clone)]
pub struct Env {
    pub bin_dir: PathBuf,
    pub peers_dir: PathBuf,
    pub ours: bool,
    pub node: bool,
    /// Extra arguments for our master.
    pub server_args: Vec<String>,
}

/// One benchmark's results: ours, the Node peer's, and their ratios.
#[derive(Debug, Serialize)]
pub struct Pair<T> {
    pub ours: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ours_error: Option<String>,
    pub node: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_error: Option<String>,
    pub ratios: Value,
}

impl<T> Pair<T> {
    pub fn new(ours: Option<anyhow::Result<T>>, node: Option<anyhow::Result<T>>) -> Self {
        let split = |r: Option<anyhow::Result<T>>| match r {
            None => (None, Some("skipped".to_owned())),
            Some(Ok(v)) => (Some(v), None),
            Some(Err(e)) => (None, Some(format!("{e:#}"))),
        };
        let (ours, ours_error) = split(ours);
        let (node, node_error) = split(node);
        Self {
            ours,
            ours_error,
            node,
            node_error,
            ratios: Value::Null,
        }
    }

    /// Whether at least one side produced results.
    pub fn any(&self) -> bool {
        self.ours.is_some() || self.node.is_some()
    }

    pub fn print_errors(&self) {
        for (who, e) in [("ours", &self.ours_error), ("node", &self.node_error)] {
            if let Some(e) = e
                && e != "skipped"
            {
                println!("  {who}: FAILED: {e}");
            }
        }
    }
}

pub fn ratio_json(a: Option<f64>, b: Option<f64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) => stats::ratio(a, b).map_or(Value::Null, |r| json!(r)),
        _ => Value::Null,
    }
}

pub fn say(msg: impl AsRef<str>) {
    eprintln!("chatbench: {}", msg.as_ref());
}

async fn node_peer(
    env: &Env,
    script: &str,
    args: &[String],
    envs: &[(&str, &str)],
) -> anyhow::Result<NodeProc> {
    NodeProc::start(&env.peers_dir, script, args, envs).await
}

// ---------------------------------------------------------------- spawn

#[derive(Debug, Clone)]
pub struct SpawnParams {
    pub rooms: usize,
}

#[derive(Debug, Serialize)]
pub struct SpawnSide {
    pub rooms: usize,
    /// Request start → first successful WebSocket handshake on the port.
    pub ready: Pcts,
    pub rss_per_room_mb_median: f64,
    pub rss_per_room_mb_mean: f64,
    pub rss_per_room_mb_max: f64,
    /// Proportional set size per room (shared pages split among sharers).
    pub pss_per_room_mb_median: f64,
    /// Memory private to each room's process (not shared with any other).
    pub private_per_room_mb_median: f64,
    pub total_secs: f64,
}

async fn spawn_core(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    list_api: &str,
    list_key: &str,
    n: usize,
) -> anyhow::Result<SpawnSide> {
    let t_all = Instant::now();
    let mut samples = Vec::with_capacity(n);
    let tag: u32 = rand::rng().random();
    for i in 0..n {
        let name = format!("bench-{tag:08x}-{i}");
        let t0 = Instant::now();
        let port = targets::create_room(http, api, key, &name, None).await?;
        let url = format!("ws://127.0.0.1:{port}/?name=probe");
        let deadline = t0 + Duration::from_secs(10);
        let ws = loop {
            match client::connect(&url).await {
                Ok(ws) => break ws,
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!("room {name} never accepted a WebSocket")));
                }
                Err(_) => tokio::time::sleep(Duration::from_micros(200)).await,
            }
        };
        samples.push(t0.elapsed().as_micros() as u64);
        tokio::spawn(async move {
            let mut ws = ws;
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        });
    }
    let total_secs = t_all.elapsed().as_secs_f64();
    // Let the rooms go idle (the probes closed) before reading their memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rooms = targets::list_rooms(http, list_api, list_key).await?;
    let mut rss = Vec::new();
    let mut pss = Vec::new();
    let mut private = Vec::new();
    for r in rooms
        .iter()
        .filter(|r| r.name.starts_with(&format!("bench-{tag:08x}-")))
    {
        if let Some(pid) = r.pid
            && let Ok(b) = crate::procs::rss_bytes(pid)
        {
            rss.push(b as f64 / 1024.0 / 1024.0);
            if let Ok((p, q)) = crate::procs::pss_private_bytes(pid) {
                pss.push(p as f64 / 1048576.0);
                private.push(q as f64 / 1048576.0);
            }
        }
    }
    anyhow::ensure!(!rss.is_empty(), "no room pid to read RSS from");
    Ok(SpawnSide {
        rooms: n,
        ready: Pcts::from_micros(&mut samples),
        rss_per_room_mb_median: stats::median(&rss).unwrap_or(0.0),
        rss_per_room_mb_mean: rss.iter().sum::<f64>() / rss.len() as f64,
        rss_per_room_mb_max: rss.iter().copied().fold(0.0, f64::max),
        pss_per_room_mb_median: stats::median(&pss).unwrap_or(0.0),
        private_per_room_mb_median: stats::median(&private).unwrap_or(0.0),
        total_secs,
    })
}

pub async fn spawn(env: &Env, p: &SpawnParams) -> Pair<SpawnSide> {
    let n = p.rooms.max(1);
    let ours = if env.ours {
        say(format!("spawn: ours, {n} rooms"));
        Some(
            async {
                let s = OurServer::start(env, u16::try_from(n)?).await?;
                let r = spawn_core(&s.http, &s.api, &s.key, &s.admin, &s.admin_key, n).await;
                s.stop().await;
                r
            }
            .await,
        )
    } else {
        None
    };
    let node = if env.node {
        say(format!("spawn: node fork-master, {n} rooms"));
        Some(
            async {
                let port = crate::procs::free_port()?;
                let (a, b) = crate::procs::port_range(u16::try_from(n)? + 2)?;
                let key = "chatbench-node-key";
                let peer = node_peer(
                    env,
                    "fork-master.js",
                    &[
                        "--port".into(),
                        port.to_string(),
                        "--room-ports".into(),
                        format!("{a}-{b}"),
                    ],
                    &[("KEY", key)],
                )
                .await?;
                let http = reqwest::Client::builder().no_proxy().build()?;
                let api = format!("http://127.0.0.1:{port}");
                let r = spawn_core(&http, &api, key, &api, key, n).await;
                peer.stop().await;
                r
            }
            .await,
        )
    } else {
        None
    };
    let mut pair = Pair::new(ours, node);
    pair.ratios = json!({
        "node_over_ours_ready_p50": ratio_json(pair.node.as_ref().map(|s| s.ready.p50_ms), pair.ours.as_ref().map(|s| s.ready.p50_ms)),
        "node_over_ours_ready_p99": ratio_json(pair.node.as_ref().map(|s| s.ready.p99_ms), pair.ours.as_ref().map(|s| s.ready.p99_ms)),
        "node_over_ours_rss_per_room": ratio_json(pair.node.as_ref().map(|s| s.rss_per_room_mb_median), pair.ours.as_ref().map(|s| s.rss_per_room_mb_median)),
    });
    let mut t = Table::new(
        "spawn: room ready (request → first WebSocket handshake) and idle RSS per room",
        &[
            "server",
            "rooms",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "RSS/room MB (median)",
            "RSS max MB",
            "PSS/room MB",
            "private/room MB",
        ],
    );
    for (who, s) in [("ours", &pair.ours), ("node fork", &pair.node)] {
        if let Some(s) = s {
            t.row(vec![
                who.into(),
                s.rooms.to_string(),
                fmt_ms(s.ready.p50_ms),
                fmt_ms(s.ready.p95_ms),
                fmt_ms(s.ready.p99_ms),
                fmt_ms(s.ready.max_ms),
                fmt_f(s.rss_per_room_mb_median, 2),
                fmt_f(s.rss_per_room_mb_max, 2),
                fmt_f(s.pss_per_room_mb_median, 2),
                fmt_f(s.private_per_room_mb_median, 2),
            ]);
        }
    }
    t.print();
    println!(
        "  node/ours: ready p50 {}×, RSS/room {}×",
        fmt_opt(pair.ratios["node_over_ours_ready_p50"].as_f64(), 1),
        fmt_opt(pair.ratios["node_over_ours_rss_per_room"].as_f64(), 1)
    );
    pair.print_errors();
    pair
}

// ---------------------------------------------------------------- fanout / shootout steps

#[derive(Debug, Clone)]
pub struct StepParams {
    pub steps: Vec<usize>,
    pub step_secs: f64,
    pub inflight: u64,
    pub body: usize,
    pub connect_parallel: usize,
    pub max_messages: u64,
}

#[derive(Debug, Serialize)]
pub struct StepsSide {
    pub steps: Vec<StepResult>,
    /// Largest client count whose step passed (p95 ≤ 500 ms, nothing lost).
    pub passing_clients: usize,
    /// Best delivered messages/s over the passing steps.
    pub peak_delivered_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo_rtt: Option<Pcts>,
}

/// The closed-loop load of one step.
pub fn load_for(proto: Proto, p: &StepParams) -> Load {
    Load {
        proto,
        inflight: p.inflight.max(1),
        duration: Duration::from_secs_f64(p.step_secs),
        max_messages: p.max_messages,
        body: p.body,
        // The chat rooms allow 30 messages/s per user: stay below.
        client_interval: match proto {
            Proto::Chat => Duration::from_millis(40),
            Proto::Shootout => Duration::ZERO,
        },
        drain: Duration::from_secs(10),
    }
}

/// Runs one step and reads the server's CPU time around it.
pub async fn measured_step(
    clients: &mut [Client],
    rec: &Recorder,
    load: &Load,
    cpu: Option<&CpuOf>,
) -> StepResult {
    let before = cpu.map(CpuOf::seconds);
    let mut r = client::run_load(clients, rec, load).await;
    if let (Some(c), Some(b)) = (cpu, before) {
        r.set_server_cpu((c.seconds() - b).max(0.0));
    }
    r
}

async fn steps_core(target: Target, proto: Proto, p: &StepParams, cpu: Option<CpuOf>) -> StepsSide {
    let rec = Recorder::new(proto);
    let mut clients: Vec<Client> = Vec::new();
    let mut out = StepsSide {
        steps: Vec::new(),
        passing_clients: 0,
        peak_delivered_per_sec: 0.0,
        stopped: None,
        echo_rtt: None,
    };
    let load = load_for(proto, p);
    for &n in &p.steps {
        if n <= clients.len() {
            continue;
        }
        let t0 = Instant::now();
        match client::connect_paced(
            &target,
            clients.len(),
            n - clients.len(),
            p.connect_parallel,
            500,
            &rec,
        )
        .await
        {
            Ok(more) => clients.extend(more),
            Err(e) => {
                out.stopped = Some(format!("cannot connect {n} clients: {e:#}"));
                break;
            }
        }
        // Let join announcements drain before measuring.
        rec.settle(Duration::from_millis(300), Duration::from_secs(180))
            .await;
        let join_secs = t0.elapsed().as_secs_f64();
        let r = measured_step(&mut clients, &rec, &load, cpu.as_ref()).await;
        say(format!(
            "  {n:>6} clients (joined in {join_secs:.1} s): sent {} delivered {}/{} ({:.0}/s) p50 {:.2} p95 {:.2} p99 {:.2} ms{}{} {}",
            r.sent,
            r.delivered,
            r.expected,
            r.delivered_per_sec,
            r.latency.p50_ms,
            r.latency.p95_ms,
            r.latency.p99_ms,
            r.rtt
                .map(|x| format!(" rtt p95 {:.2} ms", x.p95_ms))
                .unwrap_or_default(),
            r.server_us_per_delivery
                .map(|x| format!(" server {x:.2} µs/delivery"))
                .unwrap_or_default(),
            if r.pass { "pass" } else { "FAIL" }
        ));
        let pass = r.pass;
        if pass {
            out.passing_clients = n;
            out.peak_delivered_per_sec = out.peak_delivered_per_sec.max(r.delivered_per_sec);
        }
        let why = (!pass).then(|| {
            format!(
                "step {n} failed: p95 {:.1} ms, lost {}, disconnected {}",
                r.latency.p95_ms, r.lost, r.disconnected
            )
        });
        out.steps.push(r);
        if let Some(why) = why {
            out.stopped = Some(why);
            break;
        }
    }
    client::close_all(clients).await;
    out
}

fn steps_table(title: &str, pair: &Pair<StepsSide>, ratio_key: &str) {
    let mut t = Table::new(
        title,
        &[
            "server",
            "clients",
            "sent",
            "delivered/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "lost",
            "server µs/delivery",
            "result",
        ],
    );
    for (who, s) in [("ours", &pair.ours), ("node", &pair.node)] {
        if let Some(s) = s {
            for r in &s.steps {
                t.row(vec![
                    who.into(),
                    r.clients.to_string(),
                    r.sent.to_string(),
                    fmt_f(r.delivered_per_sec, 0),
                    fmt_ms(r.latency.p50_ms),
                    fmt_ms(r.latency.p95_ms),
                    fmt_ms(r.latency.p99_ms),
                    r.lost.to_string(),
                    fmt_opt(r.server_us_per_delivery, 2),
                    if r.pass { "pass".into() } else { "FAIL".into() },
                ]);
            }
        }
    }
    t.print();
    for (who, s) in [("ours", &pair.ours), ("node", &pair.node)] {
        if let Some(s) = s {
            println!(
                "  {who}: last passing clients {}, peak {} delivered msg/s{}{}",
                s.passing_clients,
                fmt_f(s.peak_delivered_per_sec, 0),
                s.echo_rtt
                    .map(|e| format!(", echo rtt p50 {} ms", fmt_ms(e.p50_ms)))
                    .unwrap_or_default(),
                s.stopped
                    .as_ref()
                    .map(|w| format!(" (stopped: {w})"))
                    .unwrap_or_default()
            );
        }
    }
    println!(
        "  ours/node: passing clients {}×, peak delivered/s {}×",
        fmt_opt(pair.ratios[ratio_key].as_f64(), 2),
        fmt_opt(pair.ratios["ours_over_node_peak_delivered"].as_f64(), 2)
    );
    pair.print_errors();
}

fn steps_ratios(pair: &mut Pair<StepsSide>) {
    pair.ratios = json!({
        "ours_over_node_passing_clients": ratio_json(pair.ours.as_ref().map(|s| s.passing_clients as f64), pair.node.as_ref().map(|s| s.passing_clients as f64)),
        "ours_over_node_peak_delivered": ratio_json(pair.ours.as_ref().map(|s| s.peak_delivered_per_sec), pair.node.as_ref().map(|s| s.peak_delivered_per_sec)),
    });
}

pub async fn fanout(env: &Env, p: &StepParams) -> Pair<StepsSide> {
    let ours = if env.ours {
        say(format!("fanout: ours, steps {:?}", p.steps));
        Some(
            async {
                let s = OurServer::start(env, 1).await?;
                let r = async {
                    let port = s.create_room("fanout", None).await?;
                    let pid = s.room_pid("fanout").await? as u32;
                    Ok(steps_core(
                        Target::Chat(port),
                        Proto::Chat,
                        p,
                        Some(CpuOf::Pids(vec![pid])),
                    )
                    .await)
                }
                .await;
                s.stop().await;
                r
            }
            .await,
        )
    } else {
        None
    };
    let node = if env.node {
        say(format!("fanout: node chat-peer, steps {:?}", p.steps));
        Some(
            async {
                let port = crate::procs::free_port()?;
                let peer = node_peer(
                    env,
                    "chat-peer.js",
                    &["--ports".into(), port.to_string()],
                    &[],
                )
                .await?;
                let r = steps_core(Target::Chat(port), Proto::Chat, p, Some(peer.cpu())).await;
                peer.stop().await;
                Ok(r)
            }
            .await,
        )
    } else {
        None
    };
    let mut pair = Pair::new(ours, node);
    steps_ratios(&mut pair);
    steps_table(
        "fanout: one chat room, closed-loop broadcast, latency at every receiver",
        &pair,
        "ours_over_node_passing_clients",
    );
    pair
}

/// Round trips of `n` sequential echo frames on one connection.
async fn echo_rtt(url: &str, n: usize) -> anyhow::Result<Pcts> {
    use futures_util::StreamExt;
    let mut ws = client::connect(url).await?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let t0 = Instant::now();
        let text = client::stamped_text(64, i as u64);
        ws.send(Message::Text(
            format!("{{\"type\":\"echo\",\"payload\":\"{text}\"}}").into(),
        ))
        .await?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
                .await
                .map_err(|_| anyhow::anyhow!("no echo in 5 s"))?;
            match m {
                Some(Ok(Message::Text(t))) if t.as_str().contains(&text) => break,
                Some(Ok(_)) => {}
                other => anyhow::bail!("echo: connection ended: {other:?}"),
            }
        }
        samples.push(t0.elapsed().as_micros() as u64);
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    Ok(Pcts::from_micros(&mut samples))
}

async fn shootout_side(
    url: String,
    p: &StepParams,
    echo_n: usize,
    cpu: Option<CpuOf>,
) -> anyhow::Result<StepsSide> {
    let echo = echo_rtt(&url, echo_n).await?;
    let mut side = steps_core(Target::Url(url), Proto::Shootout, p, cpu).await;
    side.echo_rtt = Some(echo);
    Ok(side)
}

pub async fn shootout(
    env: &Env,
    url: Option<String>,
    p: &StepParams,
    echo_n: usize,
) -> Pair<StepsSide> {
    let (ours, node) = if let Some(url) = url {
        say(format!("shootout: {url}, steps {:?}", p.steps));
        (Some(shootout_side(url, p, echo_n, None).await), None)
    } else {
        let ours = if env.ours {
            say(format!(
                "shootout: ours (mode shootout), steps {:?}",
                p.steps
            ));
            Some(
                async {
                    let s = OurServer::start(env, 1).await?;
                    let r = async {
                        let port = s
                            .create_room("shootout", Some(&json!({"mode": "shootout"})))
                            .await?;
                        let pid = s.room_pid("shootout").await? as u32;
                        let url = format!("ws://127.0.0.1:{port}/");
                        shootout_side(url, p, echo_n, Some(CpuOf::Pids(vec![pid]))).await
                    }
                    .await;
                    s.stop().await;
                    r
                }
                .await,
            )
        } else {
            None
        };
        let node = if env.node {
            say(format!("shootout: node shootout-peer, steps {:?}", p.steps));
            Some(
                async {
                    let port = crate::procs::free_port()?;
                    let peer = node_peer(
                        env,
                        "shootout-peer.js",
                        &["--port".into(), port.to_string()],
                        &[],
                    )
                    .await?;
                    let url = format!("ws://127.0.0.1:{port}/");
                    let r = shootout_side(url, p, echo_n, Some(peer.cpu())).await;
                    peer.stop().await;
                    r
                }
                .await,
            )
        } else {
            None
        };
        (ours, node)
    };
    let mut pair = Pair::new(ours, node);
    steps_ratios(&mut pair);
    steps_table(
        "shootout: websocket-shootout broadcast (delivery latency at every client)",
        &pair,
        "ours_over_node_passing_clients",
    );
    pair
}

// ---------------------------------------------------------------- idle

#[derive(Debug, Clone)]
pub struct IdleParams {
    pub conns: usize,
    pub connect_parallel: usize,
}

#[derive(Debug, Serialize)]
pub struct IdleSide {
    pub conns: usize,
    pub rss_before_mb: f64,
    pub rss_after_mb: f64,
    pub bytes_per_conn: f64,
    pub join_secs: f64,
}

async fn idle_core(port: u16, pid: i32, p: &IdleParams) -> anyhow::Result<IdleSide> {
    let before = crate::procs::rss_bytes(pid)?;
    let rec = Recorder::new(Proto::Chat);
    let t0 = Instant::now();
    let clients = client::connect_paced(
        &Target::Chat(port),
        0,
        p.conns,
        p.connect_parallel,
        500,
        &rec,
    )
    .await?;
    rec.settle(Duration::from_millis(500), Duration::from_secs(300))
        .await;
    let join_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = crate::procs::rss_bytes(pid)?;
    let closed = rec.closed.load(Ordering::Relaxed);
    client::close_all(clients).await;
    anyhow::ensure!(
        closed == 0,
        "{closed} connections were closed by the server while idle"
    );
    Ok(IdleSide {
        conns: p.conns,
        rss_before_mb: before as f64 / 1048576.0,
        rss_after_mb: after as f64 / 1048576.0,
        bytes_per_conn: (after as f64 - before as f64) / p.conns.max(1) as f64,
        join_secs,
    })
}

pub async fn idle(env: &Env, p: &IdleParams) -> Pair<IdleSide> {
    let limit = crate::procs::raise_nofile();
    if (limit as usize) < p.conns + 100 {
        say(format!(
            "idle: open-file limit {limit} is low for {} connections",
            p.conns
        ));
    }
    let ours = if env.ours {
        say(format!("idle: ours, {} connections", p.conns));
        Some(
            async {
                let s = OurServer::start(env, 1).await?;
                let r = async {
                    let port = s.create_room("idle", None).await?;
                    let pid = s.room_pid("idle").await?;
                    idle_core(port, pid, p).await
                }
                .await;
                s.stop().await;
                r
            }
            .await,
        )
    } else {
        None
    };
    let node = if env.node {
        say(format!("idle: node chat-peer, {} connections", p.conns));
        Some(
            async {
                let port = crate::procs::free_port()?;
                let peer = node_peer(
                    env,
                    "chat-peer.js",
                    &["--ports".into(), port.to_string()],
                    &[],
                )
                .await?;
                let r = idle_core(port, peer.pid, p).await;
                peer.stop().await;
                r
            }
            .await,
        )
    } else {
        None
    };
    let mut pair = Pair::new(ours, node);
    pair.ratios = json!({
        "node_over_ours_bytes_per_conn": ratio_json(pair.node.as_ref().map(|s| s.bytes_per_conn), pair.ours.as_ref().map(|s| s.bytes_per_conn)),
    });
    let mut t = Table::new(
        "idle: connections in one room, RSS of the room's process",
        &[
            "server",
            "conns",
            "RSS before MB",
            "RSS after MB",
            "bytes/conn",
            "join s",
        ],
    );
    for (who, s) in [
        ("ours (worker)", &pair.ours),
        ("node (process)", &pair.node),
    ] {
        if let Some(s) = s {
            t.row(vec![
                who.into(),
                s.conns.to_string(),
                fmt_f(s.rss_before_mb, 1),
                fmt_f(s.rss_after_mb, 1),
                fmt_f(s.bytes_per_conn, 0),
                fmt_f(s.join_secs, 1),
            ]);
        }
    }
    t.print();
    println!(
        "  node/ours bytes per connection: {}×",
        fmt_opt(pair.ratios["node_over_ours_bytes_per_conn"].as_f64(), 2)
    );
    pair.print_errors();
    pair
}

// ---------------------------------------------------------------- isolation

#[derive(Debug, Clone)]
pub struct IsolationParams {
    pub a_clients: usize,
    pub b_clients: usize,
    /// Messages per second of each flooding client in room A.
    pub a_rate: f64,
    /// Messages per second in room B (light traffic).
    pub b_rate: f64,
    pub phase_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct IsolationSide {
    pub quiet: Pcts,
    pub flood: Pcts,
    /// `None` when room B starved (messages not delivered within 10 s).
    pub p99_flood_over_quiet: Option<f64>,
    /// Room B messages not delivered within 10 s after the flood phase.
    pub b_flood_lost: u64,
    pub a_delivered_per_sec: f64,
    pub a_disconnected: u64,
    pub b_lost: u64,
}

/// Light traffic in room B for `secs`: random members say something at
/// `rate`/s; delivery latency at every receiver.
async fn light_phase(
    b: &mut [Client],
    rec: &Recorder,
    rate: f64,
    secs: f64,
) -> anyhow::Result<(Pcts, u64)> {
    rec.reset();
    let base = rec.delivered.load(Ordering::Relaxed);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let i = rand::rng().random_range(0..b.len());
        let text = client::stamped_text(200, sent);
        b[i].sink
            .send(Message::Text(
                format!("{{\"type\":\"say\",\"text\":\"{text}\"}}").into(),
            ))
            .await?;
        sent += 1;
    }
    let expected = sent * (b.len() as u64 - 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rec.delivered.load(Ordering::Relaxed) - base < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let lost = expected.saturating_sub(rec.delivered.load(Ordering::Relaxed) - base);
    Ok((rec.latency(), lost))
}

async fn isolation_core(
    port_a: u16,
    port_b: u16,
    p: &IsolationParams,
) -> anyhow::Result<IsolationSide> {
    let rec_a = Recorder::new(Proto::Chat);
    let rec_b = Recorder::new(Proto::Chat);
    let mut b =
        client::connect_many(&Target::Chat(port_b), 0, p.b_clients.max(2), 32, &rec_b).await?;
    let a = client::connect_many(&Target::Chat(port_a), 0, p.a_clients.max(2), 64, &rec_a).await?;
    rec_a
        .settle(Duration::from_millis(300), Duration::from_secs(60))
        .await;
    rec_b
        .settle(Duration::from_millis(300), Duration::from_secs(60))
        .await;

    let (quiet, lost_q) = light_phase(&mut b, &rec_b, p.b_rate, p.phase_secs).await?;

    // Flood room A: every client at `a_rate` messages/s, bounded in time.
    let stop = Arc::new(AtomicBool::new(false));
    let flood_end = Instant::now() + Duration::from_secs_f64(p.phase_secs + 15.0);
    let interval = Duration::from_secs_f64(1.0 / p.a_rate.max(0.1));
    let mut tasks = Vec::new();
    let a_n = a.len().max(1) as f64;
    for (k, mut c) in a.into_iter().enumerate() {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            // Spread the senders over one interval.
            tokio::time::sleep(interval.mul_f64(k as f64 / a_n)).await;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < flood_end {
                tick.tick().await;
                let text = client::stamped_text(200, i);
                // A server that stops reading must not block past the end.
                let sent = tokio::time::timeout_at(
                    flood_end.into(),
                    c.sink.send(Message::Text(
                        format!("{{\"type\":\"say\",\"text\":\"{text}\"}}").into(),
                    )),
                )
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
                i += 1;
            }
            c
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a_base = rec_a.delivered.load(Ordering::Relaxed);
    let t_a = Instant::now();
    let flood_result = light_phase(&mut b, &rec_b, p.b_rate, p.phase_secs).await;
    let a_rate =
        (rec_a.delivered.load(Ordering::Relaxed) - a_base) as f64 / t_a.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut a_back = Vec::new();
    let join_end = tokio::time::Instant::now() + Duration::from_secs(10);
    for t in tasks {
        let abort = t.abort_handle();
        match tokio::time::timeout_at(join_end, t).await {
            Ok(Ok(c)) => a_back.push(c),
            _ => abort.abort(),
        }
    }
    let (flood, lost_f) = flood_result?;
    let a_disconnected = rec_a.closed.load(Ordering::Relaxed);
    client::close_all(a_back).await;
    client::close_all(b).await;
    Ok(IsolationSide {
        quiet,
        flood,
        p99_flood_over_quiet: if lost_f == 0 {
            stats::ratio(flood.p99_ms, quiet.p99_ms)
        } else {
            None
        },
        b_flood_lost: lost_f,
        a_delivered_per_sec: a_rate,
        a_disconnected,
        b_lost: lost_q + lost_f,
    })
}

fn starved(s: &IsolationSide, ms: f64) -> String {
    if s.b_flood_lost > 0 {
        format!("starved ({} lost)", s.b_flood_lost)
    } else {
        fmt_ms(ms)
    }
}

/// Isolation results: ours and the single-process Node peer (the pair), and
/// the fork-per-room Node peer, whose rooms are separate processes as ours.
#[derive(Debug, Serialize)]
pub struct IsolationResult {
    #[serde(flatten)]
    pub pair: Pair<IsolationSide>,
    pub node_fork: Option<IsolationSide>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_fork_error: Option<String>,
}

impl IsolationResult {
    pub fn any(&self) -> bool {
        self.pair.any() || self.node_fork.is_some()
    }
}

/// Rooms A and B on the fork-per-room Node peer (one process each).
async fn isolation_node_fork(env: &Env, p: &IsolationParams) -> anyhow::Result<IsolationSide> {
    let port = crate::procs::free_port()?;
    let (a, b) = crate::procs::port_range(4)?;
    let key = "chatbench-node-key";
    let peer = node_peer(
        env,
        "fork-master.js",
        &[
            "--port".into(),
            port.to_string(),
            "--room-ports".into(),
            format!("{a}-{b}"),
        ],
        &[("KEY", key)],
    )
    .await?;
    let r = async {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let api = format!("http://127.0.0.1:{port}");
        let pa = targets::create_room(&http, &api, key, "flooded", None).await?;
        let pb = targets::create_room(&http, &api, key, "quiet", None).await?;
        isolation_core(pa, pb, p).await
    }
    .await;
    peer.stop().await;
    r
}

pub async fn isolation(env: &Env, p: &IsolationParams) -> IsolationResult {
    let ours = if env.ours {
        say("isolation: ours (room A and B are separate worker processes)");
        Some(
            async {
                let s = OurServer::start(env, 2).await?;
                let r = async {
                    let a = s.create_room("flooded", None).await?;
                    let b = s.create_room("quiet", None).await?;
                    isolation_core(a, b, p).await
                }
                .await;
                s.stop().await;
                r
            }
            .await,
        )
    } else {
        None
    };
    let node = if env.node {
        say("isolation: node chat-peer (room A and B share one process)");
        Some(
            async {
                let a = crate::procs::free_port()?;
                let mut b = crate::procs::free_port()?;
                while b == a {
                    b = crate::procs::free_port()?;
                }
                let peer = node_peer(
                    env,
                    "chat-peer.js",
                    &["--ports".into(), format!("{a},{b}")],
                    &[],
                )
                .await?;
                let r = isolation_core(a, b, p).await;
                peer.stop().await;
                r
            }
            .await,
        )
    } else {
        None
    };
    let (node_fork, node_fork_error) = if env.node {
        say("isolation: node fork-master (room A and B are separate node processes)");
        match isolation_node_fork(env, p).await {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        }
    } else {
        (None, Some("skipped".to_owned()))
    };
    let mut pair = Pair::new(ours, node);
    let flood_p99 =
        |s: Option<&IsolationSide>| s.filter(|s| s.b_flood_lost == 0).map(|s| s.flood.p99_ms);
    pair.ratios = json!({
        "ours_p99_flood_over_quiet": pair.ours.as_ref().map(|s| s.p99_flood_over_quiet),
        "node_p99_flood_over_quiet": pair.node.as_ref().map(|s| s.p99_flood_over_quiet),
        "node_fork_p99_flood_over_quiet": node_fork.as_ref().map(|s| s.p99_flood_over_quiet),
        "node_over_ours_flood_p99": ratio_json(flood_p99(pair.node.as_ref()), flood_p99(pair.ours.as_ref())),
        "node_fork_over_ours_flood_p99": ratio_json(flood_p99(node_fork.as_ref()), flood_p99(pair.ours.as_ref())),
    });
    let mut t = Table::new(
        &format!(
            "isolation: room B ({} clients, {}/s) latency, quiet vs room A flooded ({} clients × {}/s)",
            p.b_clients, p.b_rate, p.a_clients, p.a_rate
        ),
        &[
            "server",
            "B quiet p50",
            "B quiet p99",
            "B flood p50",
            "B flood p99",
            "p99 flood/quiet",
            "A delivered/s",
            "A dropped",
        ],
    );
    for (who, s) in [
        ("ours", pair.ours.as_ref()),
        ("node (one process)", pair.node.as_ref()),
        ("node fork (process per room)", node_fork.as_ref()),
    ] {
        if let Some(s) = s {
            t.row(vec![
                who.into(),
                fmt_ms(s.quiet.p50_ms),
                fmt_ms(s.quiet.p99_ms),
                starved(s, s.flood.p50_ms),
                starved(s, s.flood.p99_ms),
                fmt_opt(s.p99_flood_over_quiet, 2),
                fmt_f(s.a_delivered_per_sec, 0),
                s.a_disconnected.to_string(),
            ]);
        }
    }
    t.print();
    println!(
        "  B p99 under flood, node/ours {}×, node fork/ours {}×",
        fmt_opt(pair.ratios["node_over_ours_flood_p99"].as_f64(), 2),
        fmt_opt(pair.ratios["node_fork_over_ours_flood_p99"].as_f64(), 2)
    );
    pair.print_errors();
    if let Some(e) = node_fork_error.as_ref().filter(|e| *e != "skipped") {
        println!("  node fork: FAILED: {e}");
    }
    IsolationResult {
        pair,
        node_fork,
        node_fork_error,
    }
}
