//! `chatbench`: benchmarks of chatserver, each run side by side with a
//! Node.js peer (bench/peers/) on loopback. See BENCHMARKS.md.

mod benches;
mod client;
mod procs;
mod report;
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
    /// Write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// Skip the Node.js peers.
    #[arg(long, global = true)]
    no_node: bool,
    /// Skip our server (run only the Node.js peers).
    #[arg(long, global = true)]
    no_ours: bool,
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
    /// Every benchmark (defaults, or tiny with --quick).
    All {
        /// Tiny parameters: a smoke test of correctness, not a measurement.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let nofile = procs::raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let code = rt.block_on(run(cli, nofile))?;
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn run(cli: Cli, nofile: u64) -> anyhow::Result<i32> {
    let env = Env {
        bin_dir: targets::bin_dir(cli.common.bin_dir.as_deref()),
        peers_dir: targets::peers_dir(cli.common.peers_dir.as_deref()),
        ours: !cli.common.no_ours,
        node: !cli.common.no_node,
    };
    let mut results = Map::new();
    let mut ok = true;
    let mut put = |name: &str, any: bool, v: Value| {
        ok &= any;
        results.insert(name.to_owned(), v);
    };
    match cli.cmd {
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
    if let Some(path) = &cli.common.json {
        let doc = json!({
            "generated": chrono::Utc::now().to_rfc3339(),
            "machine": procs::machine(),
            "versions": {
                "chatbench": env!("CARGO_PKG_VERSION"),
                "node": targets::node_version(),
                "ws": targets::ws_version(&env.peers_dir),
            },
            "open_file_limit": nofile,
            "results": Value::Object(results),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("chatbench: results written to {}", path.display());
    }
    Ok(if ok { 0 } else { 1 })
}
