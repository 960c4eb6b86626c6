//! `joins --conns N`: a join storm. N guests join one room, `--parallel` at
//! a time; the time from the first connect to the last `welcome`, and each
//! join's latency (TCP connect → `welcome`). Every joined client keeps
//! reading (the `joined` announcements of the others) until the end, and
//! the run checks that none was dropped.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::json;

use crate::benches::{Env, Pair, ratio_json, say};
use crate::client::{self, Client, Proto, Recorder};
use crate::procs::CpuOf;
use crate::report::{Table, fmt_f, fmt_ms, fmt_opt};
use crate::stats::Pcts;
use crate::targets::{NodeProc, OurServer};

/// File descriptors this process keeps for itself besides the clients.
const SPARE_FDS: u64 = 64;

#[derive(Debug, Clone)]
pub struct JoinsParams {
    pub conns: usize,
    /// Joins in flight at once.
    pub parallel: usize,
    /// Bound of the storm per side, seconds.
    pub timeout_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct JoinsSide {
    pub conns: usize,
    /// Clients that got their `welcome`.
    pub welcomed: usize,
    pub failed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// First connect → last `welcome`.
    pub join_secs: f64,
    /// Per join: TCP connect → `welcome`.
    pub latency: Pcts,
    /// Connections the server closed during the storm and settling after.
    pub dropped: u64,
    /// The server's CPU during the storm, seconds.
    pub server_cpu_secs: f64,
}

/// The most clients the open-file limit allows (one descriptor each).
pub fn max_conns(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(SPARE_FDS)).unwrap_or(usize::MAX)
}

/// Refuses a count the open-file limit cannot hold.
pub fn check_limit(conns: usize, nofile: u64) -> anyhow::Result<()> {
    let max = max_conns(nofile);
    anyhow::ensure!(
        conns <= max,
        "{conns} connections need {} open files, but this process's limit is {nofile} (the hard limit, `ulimit -Hn`): \
         use at most {max}, or raise the hard limit",
        conns as u64 + SPARE_FDS
    );
    Ok(())
}

async fn storm(port: u16, cpu: &CpuOf, p: &JoinsParams) -> anyhow::Result<JoinsSide> {
    let rec = Recorder::new(Proto::Chat);
    let cpu0 = cpu.seconds();
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(p.timeout_secs.max(1.0));
    let results: Vec<anyhow::Result<(Client, u64)>> = futures_util::stream::iter(0..p.conns)
        .map(|i| {
            let rec = rec.clone();
            async move {
                anyhow::ensure!(Instant::now() < deadline, "time limit reached");
                let t = Instant::now();
                let ws = client::connect_chat(port, &format!("j{i}")).await?;
                let us = t.elapsed().as_micros() as u64;
                let (sink, stream) = ws.split();
                client::spawn_reader(stream, rec);
                Ok((
                    Client {
                        sink,
                        next_ok: Instant::now(),
                    },
                    us,
                ))
            }
        })
        .buffer_unordered(p.parallel.max(1))
        .collect()
        .await;
    let join_secs = t0.elapsed().as_secs_f64();
    let cpu_secs = (cpu.seconds() - cpu0).max(0.0);
    let mut clients = Vec::with_capacity(p.conns);
    let mut samples = Vec::with_capacity(p.conns);
    let mut failed = 0;
    let mut first_error = None;
    for r in results {
        match r {
            Ok((c, us)) => {
                clients.push(c);
                samples.push(us);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    // The announcements of the last joins drain; nobody may be dropped.
    rec.settle(Duration::from_millis(300), Duration::from_secs(60))
        .await;
    let dropped = rec.closed.load(Ordering::Relaxed);
    client::close_all(clients).await;
    Ok(JoinsSide {
        conns: p.conns,
        welcomed: samples.len(),
        failed,
        first_error,
        join_secs,
        latency: Pcts::from_micros(&mut samples),
        dropped,
        server_cpu_secs: cpu_secs,
    })
}

pub async fn joins(env: &Env, p: &JoinsParams, nofile: u64) -> anyhow::Result<Pair<JoinsSide>> {
    check_limit(p.conns, nofile)?;
    let ours = if env.ours {
        say(format!(
            "joins: ours, {} clients, {} at a time",
            p.conns, p.parallel
        ));
        Some(
            async {
                let s = OurServer::start(env, 1).await?;
                let r = async {
                    let port = s.create_room("joins", None).await?;
                    let pid = s.room_pid("joins").await? as u32;
                    storm(port, &CpuOf::Pids(vec![pid]), p).await
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
        say(format!("joins: node chat-peer, {} clients", p.conns));
        Some(
            async {
                let port = crate::procs::free_port()?;
                let peer = NodeProc::start(
                    &env.peers_dir,
                    "chat-peer.js",
                    &["--ports".into(), port.to_string()],
                    &[],
                )
                .await?;
                let r = storm(port, &peer.cpu(), p).await;
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
        "node_over_ours_join_secs": ratio_json(
            pair.node.as_ref().filter(|s| s.failed == 0).map(|s| s.join_secs),
            pair.ours.as_ref().filter(|s| s.failed == 0).map(|s| s.join_secs)),
        "node_over_ours_join_p99": ratio_json(
            pair.node.as_ref().map(|s| s.latency.p99_ms),
            pair.ours.as_ref().map(|s| s.latency.p99_ms)),
    });
    let mut t = Table::new(
        &format!(
            "joins: {} clients join one room, {} at a time",
            p.conns, p.parallel
        ),
        &[
            "server",
            "welcomed",
            "failed",
            "dropped",
            "join s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "server CPU s",
        ],
    );
    for (who, s) in [("ours", &pair.ours), ("node", &pair.node)] {
        if let Some(s) = s {
            t.row(vec![
                who.into(),
                s.welcomed.to_string(),
                s.failed.to_string(),
                s.dropped.to_string(),
                fmt_f(s.join_secs, 2),
                fmt_ms(s.latency.p50_ms),
                fmt_ms(s.latency.p99_ms),
                fmt_ms(s.latency.max_ms),
                fmt_f(s.server_cpu_secs, 2),
            ]);
        }
    }
    t.print();
    println!(
        "  node/ours: join time {}×, p99 {}×",
        fmt_opt(pair.ratios["node_over_ours_join_secs"].as_f64(), 2),
        fmt_opt(pair.ratios["node_over_ours_join_p99"].as_f64(), 2)
    );
    pair.print_errors();
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_file_limit_caps_the_count() {
        assert_eq!(max_conns(1024), 960);
        assert_eq!(max_conns(10), 0);
        assert!(check_limit(960, 1024).is_ok());
        let e = check_limit(10_000, 1024).unwrap_err().to_string();
        assert!(e.contains("at most 960"), "{e}");
    }
}
