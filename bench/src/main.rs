//! `chatbench`: benchmarks of chatserver, each run side by side with a
//! Node.js peer (bench/peers/) on loopback. See BENCHMARKS.md.

mod benches;
mod capacity;
mod client;
mod joins;
mod pin;
mod procs;
mod report;
mod results;
mod rooms;
mod session;
mod stats;
mod targets;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::{Map, Value, json};

use crate::benches::{Env, IdleParams, IsolationParams, SpawnParams, StepParams};

#[derive(Debug, Parser)]
#[command(
    name = "chatbench",
    version,
    about = "Benchmarks of chatserver against Node.js peers (loopback only)"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Args)]
struct Common {
    /// Folder of the chatserver and chatroom binaries (default: next to
    /// chatbench, else target/release).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Folder of the Node.js peers (default: bench/peers of the source tree).
    #[arg(long, global = true)]
    peers_dir: Option<PathBuf>,
    /// Write the results as JSON to this file (default: a new file in
    /// --results-dir).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Folder of the result files (default: bench/results/DATE of the source tree).
    #[arg(long, global = true)]
    results_dir: Option<PathBuf>,
    /// Write no result file.
    #[arg(long, global = true)]
    no_results: bool,
    /// Pin this load generator and the servers to different cores (taskset);
    /// needs at least 2 cores.
    #[arg(long, global = true)]
    pin: bool,
    /// Skip the Node.js peers.
    #[arg(long, global = true)]
    no_node: bool,
    /// Skip our server (run only the Node.js peers).
    #[arg(long, global = true)]
    no_ours: bool,
    /// An extra argument for our master (repeat it for more), e.g.
    /// `--server-arg=--ipc-idle-heartbeat=2s` to compare a setting in one run.
    #[arg(long, global = true, allow_hyphen_values = true)]
    server_arg: Vec<String>,
}

#[derive(Debug, Args, Clone)]
struct StepArgs {
    /// Client counts of the steps (comma-separated); default 100,250,500,1000,2000,4000,8000 up to --max.
    #[arg(long, value_delimiter = ',')]
    steps: Vec<usize>,
    /// Largest client count.
    #[arg(long, default_value_t = 4000)]
    max: usize,
    /// Seconds of traffic per step.
    #[arg(long, default_value_t = 5.0)]
    step_secs: f64,
    /// Messages in flight at once.
    #[arg(long, default_value_t = 4)]
    inflight: u64,
    /// Bytes of each message body.
    #[arg(long, default_value_t = 200)]
    body: usize,
    /// Most messages per step.
    #[arg(long, default_value_t = 1_000_000)]
    max_messages: u64,
}

impl StepArgs {
    fn params(&self) -> StepParams {
        let steps = if self.steps.is_empty() {
            let mut s: Vec<usize> = [100, 250, 500, 1000, 2000, 4000, 8000, 16000]
                .into_iter()
                .filter(|&n| n <= self.max)
                .collect();
            if s.last() != Some(&self.max) {
                s.push(self.max);
            }
            s
        } else {
            self.steps.clone()
        };
        StepParams {
            steps,
            step_secs: self.step_secs.clamp(0.1, 600.0),
            inflight: self.inflight.max(1),
            body: self.body.clamp(32, 60_000),
            connect_parallel: 64,
            max_messages: self.max_messages,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Room creation: time to a working WebSocket, idle RSS per room.
    Spawn {
        #[arg(long, default_value_t = 50)]
        rooms: usize,
    },
    /// One room, clients in steps, closed-loop broadcast, latency at every receiver.
    Fanout(StepArgs),
    /// The websocket-shootout protocol; without URL, our shootout room and the Node peer.
    Shootout {
        /// A ws:// URL of any server speaking the shootout protocol.
        url: Option<String>,
        #[command(flatten)]
        steps: StepArgs,
        /// Echo round trips measured first.
        #[arg(long, default_value_t = 200)]
        echo: usize,
    },
    /// Idle connections in one room: RSS per connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
    },
    /// Room B's latency, quiet and while room A is flooded.
    Isolation {
        #[arg(long, default_value_t = 100)]
        a_clients: usize,
        #[arg(long, default_value_t = 20)]
        b_clients: usize,
        /// Messages/s of each client of A (the rooms allow 30/s per user).
        #[arg(long, default_value_t = 28.0)]
        a_rate: f64,
        /// Messages/s in room B.
        #[arg(long, default_value_t = 20.0)]
        b_rate: f64,
        #[arg(long, default_value_t = 5.0)]
        phase_secs: f64,
    },
    /// Largest passing client count of each side, by bisection on one
    /// ladder, with server CPU per delivery.
    Capacity {
        /// `shootout` (websocket-shootout broadcast, Node's plain `ws` peer)
        /// or `chat` (a chat room, Node's chat peer).
        #[arg(long, default_value = "shootout")]
        proto: String,
        /// Lowest client count of the ladder.
        #[arg(long, default_value_t = 1000)]
        min: usize,
        /// Highest client count of the ladder.
        #[arg(long, default_value_t = 20_000)]
        max: usize,
        /// Rungs of the ladder at most this far apart (0.05 = 5 %).
        #[arg(long, default_value_t = 0.05)]
        precision: f64,
        /// Most probes per side.
        #[arg(long, default_value_t = 12)]
        max_probes: usize,
        /// Most seconds per side (no new probe after it).
        #[arg(long, default_value_t = 1800.0)]
        max_secs: f64,
        /// Seconds of traffic per probe.
        #[arg(long, default_value_t = 5.0)]
        step_secs: f64,
        #[arg(long, default_value_t = 4)]
        inflight: u64,
        #[arg(long, default_value_t = 200)]
        body: usize,
        #[arg(long, default_value_t = 1_000_000)]
        max_messages: u64,
    },
    /// N idle rooms on one master: create time, total PSS, idle CPU, shutdown time.
    Rooms {
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Seconds the idle rooms' CPU is read over.
        #[arg(long, default_value_t = 10.0)]
        idle_secs: f64,
        /// Creates in flight at once.
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        /// Bound of the creation phase, seconds.
        #[arg(long, default_value_t = 900.0)]
        create_timeout: f64,
    },
    /// A join storm: N clients join one room; time and join latency.
    Joins {
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Joins in flight at once.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
        /// Bound of each side's storm, seconds.
        #[arg(long, default_value_t = 600.0)]
        timeout: f64,
    },
    /// Renders BENCHMARKS.md's tables from one session's result files.
    Report {
        /// The session's folder of result files (*.json).
        dir: PathBuf,
        /// Replace the generated part of this Markdown file (between the
        /// `chatbench report` markers) instead of printing.
        #[arg(long)]
        update: Option<PathBuf>,
    },
    /// Every benchmark (defaults, or tiny with --quick).
    All {
        /// Tiny parameters: a smoke test of correctness, not a measurement.
        #[arg(long)]
        quick: bool,
    },
}

impl Cmd {
    /// The benchmark's name (result files and their `results` key).
    fn name(&self) -> &'static str {
        match self {
            Cmd::Spawn { .. } => "spawn",
            Cmd::Fanout(_) => "fanout",
            Cmd::Shootout { .. } => "shootout",
            Cmd::Idle { .. } => "idle",
            Cmd::Isolation { .. } => "isolation",
            Cmd::Capacity { .. } => "capacity",
            Cmd::Rooms { .. } => "rooms",
            Cmd::Joins { .. } => "joins",
            Cmd::Report { .. } => "report",
            Cmd::All { .. } => "all",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Cmd::Report { dir, update } = &cli.cmd {
        return session::run(dir, update.as_deref());
    }
    let nofile = procs::raise_nofile();
    let pinning = if cli.common.pin {
        let p = pin::apply()?;
        eprintln!(
            "chatbench: pinned: load generator on cores {}, servers on {}",
            p.load_generator, p.servers
        );
        Some(p)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let code = rt.block_on(run(cli, nofile, pinning))?;
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn run(cli: Cli, nofile: u64, pinning: Option<pin::Pinning>) -> anyhow::Result<i32> {
    let started = chrono::Utc::now();
    let load_before = chat_shared::procfs::loadavg();
    let env = Env {
        bin_dir: targets::bin_dir(cli.common.bin_dir.as_deref()),
        peers_dir: targets::peers_dir(cli.common.peers_dir.as_deref()),
        ours: !cli.common.no_ours,
        node: !cli.common.no_node,
        server_args: cli.common.server_arg.clone(),
    };
    let mut results = Map::new();
    let mut ok = true;
    let mut put = |name: &str, any: bool, v: Value| {
        ok &= any;
        results.insert(name.to_owned(), v);
    };
    let name = cli.cmd.name();
    match cli.cmd {
        Cmd::Report { .. } => {}
        Cmd::Capacity {
            proto,
            min,
            max,
            precision,
            max_probes,
            max_secs,
            step_secs,
            inflight,
            body,
            max_messages,
        } => {
            let proto = match proto.as_str() {
                "shootout" => client::Proto::Shootout,
                "chat" => client::Proto::Chat,
                other => anyhow::bail!("--proto {other}: shootout or chat"),
            };
            let p = capacity::CapacityParams {
                proto,
                min,
                max,
                precision: precision.clamp(0.005, 1.0),
                max_probes: max_probes.max(1),
                max_secs,
                step: StepArgs {
                    steps: vec![],
                    max,
                    step_secs,
                    inflight,
                    body,
                    max_messages,
                }
                .params(),
            };
            let r = capacity::capacity(&env, &p).await;
            put("capacity", r.any(), to_json(&r));
        }
        Cmd::Rooms {
            count,
            idle_secs,
            parallel,
            create_timeout,
        } => {
            let p = rooms::RoomsParams {
                count,
                idle_secs,
                parallel,
                create_timeout_secs: create_timeout,
            };
            match rooms::rooms(&env, &p).await {
                Ok(r) => put("rooms", true, to_json(&r)),
                Err(e) => {
                    eprintln!("chatbench: rooms: {e:#}");
                    put("rooms", false, json!({ "error": format!("{e:#}") }));
                }
            }
        }
        Cmd::Joins {
            conns,
            parallel,
            timeout,
        } => {
            let p = joins::JoinsParams {
                conns,
                parallel,
                timeout_secs: timeout,
            };
            let r = joins::joins(&env, &p, nofile).await?;
            put("joins", r.any(), to_json(&r));
        }
        Cmd::Spawn { rooms } => {
            let r = benches::spawn(&env, &SpawnParams { rooms }).await;
            put("spawn", r.any(), to_json(&r));
        }
        Cmd::Fanout(a) => {
            let r = benches::fanout(&env, &a.params()).await;
            put("fanout", r.any(), to_json(&r));
        }
        Cmd::Shootout { url, steps, echo } => {
            let r = benches::shootout(&env, url, &steps.params(), echo.max(1)).await;
            put("shootout", r.any(), to_json(&r));
        }
        Cmd::Idle { conns } => {
            let r = benches::idle(
                &env,
                &IdleParams {
                    conns,
                    connect_parallel: 64,
                },
            )
            .await;
            put("idle", r.any(), to_json(&r));
        }
        Cmd::Isolation {
            a_clients,
            b_clients,
            a_rate,
            b_rate,
            phase_secs,
        } => {
            let p = IsolationParams {
                a_clients,
                b_clients,
                a_rate,
                b_rate,
                phase_secs,
            };
            let r = benches::isolation(&env, &p).await;
            put("isolation", r.any(), to_json(&r));
        }
        Cmd::All { quick } => {
            let (spawn, steps, shoot, idle, iso, echo) = if quick {
                (
                    SpawnParams { rooms: 3 },
                    StepParams {
                        steps: vec![5, 10],
                        step_secs: 1.0,
                        inflight: 2,
                        body: 200,
                        connect_parallel: 16,
                        max_messages: 200,
                    },
                    StepParams {
                        steps: vec![5, 10],
                        step_secs: 1.0,
                        inflight: 2,
                        body: 200,
                        connect_parallel: 16,
                        max_messages: 200,
                    },
                    IdleParams {
                        conns: 50,
                        connect_parallel: 16,
                    },
                    IsolationParams {
                        a_clients: 10,
                        b_clients: 5,
                        a_rate: 20.0,
                        b_rate: 20.0,
                        phase_secs: 1.0,
                    },
                    20,
                )
            } else {
                let d = StepArgs {
                    steps: vec![],
                    max: 4000,
                    step_secs: 5.0,
                    inflight: 4,
                    body: 200,
                    max_messages: 1_000_000,
                }
                .params();
                (
                    SpawnParams { rooms: 50 },
                    d.clone(),
                    d,
                    IdleParams {
                        conns: 10_000,
                        connect_parallel: 64,
                    },
                    IsolationParams {
                        a_clients: 100,
                        b_clients: 20,
                        a_rate: 28.0,
                        b_rate: 20.0,
                        phase_secs: 5.0,
                    },
                    200,
                )
            };
            let r = benches::spawn(&env, &spawn).await;
            put("spawn", r.any(), to_json(&r));
            let r = benches::fanout(&env, &steps).await;
            put("fanout", r.any(), to_json(&r));
            let r = benches::shootout(&env, None, &shoot, echo).await;
            put("shootout", r.any(), to_json(&r));
            let r = benches::idle(&env, &idle).await;
            put("idle", r.any(), to_json(&r));
            let r = benches::isolation(&env, &iso).await;
            put("isolation", r.any(), to_json(&r));
        }
    }
    if !cli.common.no_results {
        let doc = json!({
            "format": results::FORMAT,
            "benchmark": name,
            "started": started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "generated": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "command_line": std::env::args().collect::<Vec<_>>(),
            "machine": procs::machine(),
            "loadavg_before": load_before,
            "pinned": pinning,
            "versions": {
                "chatbench": env!("CARGO_PKG_VERSION"),
                "node": targets::node_version(),
                "ws": targets::ws_version(&env.peers_dir),
            },
            "open_file_limit": nofile,
            "results": Value::Object(results),
        });
        let path = match &cli.common.json {
            Some(p) => p.clone(),
            None => results::default_path(
                cli.common.results_dir.as_deref(),
                name,
                pinning.is_some(),
                started,
            ),
        };
        results::write(&path, &doc)?;
        eprintln!("chatbench: results written to {}", path.display());
    }
    Ok(if ok { 0 } else { 1 })
}
