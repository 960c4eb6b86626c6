//! `capacity`: the largest client count whose broadcast step passes (p95 ≤
//! 500 ms, nothing lost), searched by bisection on one geometric ladder of
//! client counts shared by both sides, so that neither side's figure is a
//! step artifact. Each probe also reads the server's CPU time (cost per
//! delivery). Bounded by a number of probes and a time per side.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::benches::{Env, Pair, StepParams, load_for, measured_step, ratio_json};
use crate::client::{self, Client, Proto, Recorder, StepResult, Target};
use crate::procs::CpuOf;
use crate::report::{Table, fmt_f, fmt_ms, fmt_opt};
use crate::targets::{NodeProc, OurServer};

#[derive(Debug, Clone)]
pub struct CapacityParams {
    pub proto: Proto,
    /// Lowest and highest client counts of the ladder.
    pub min: usize,
    pub max: usize,
    /// Ratio between neighbours of the ladder (0.05: within 5 %).
    pub precision: f64,
    /// Most probes per side.
    pub max_probes: usize,
    /// Most seconds per side (no new probe starts after it).
    pub max_secs: f64,
    /// Load of every probe (its `steps` are ignored).
    pub step: StepParams,
}

/// Client counts from `min` to `max`, each at most `1 + precision` times the
/// one before (and at least one more).
pub fn ladder(min: usize, max: usize, precision: f64) -> Vec<usize> {
    let min = min.max(1);
    let max = max.max(min);
    let f = 1.0 + precision.clamp(0.001, 1.0);
    let mut v = vec![min];
    let mut x = min;
    while x < max {
        x = ((x as f64 * f).floor() as usize).max(x + 1).min(max);
        v.push(x);
    }
    v
}

/// The search over ladder indices: a pure state machine, so that it can be
/// tested without servers. Gallops up (doubling the client count) from the
/// bottom until a probe fails, then bisects between the last pass and the
/// first failure.
#[derive(Debug, Clone)]
pub struct Search {
    len: usize,
    /// Highest index that passed.
    lo: Option<usize>,
    /// Lowest index that failed.
    hi: Option<usize>,
    ladder: Vec<usize>,
}

impl Search {
    pub fn new(ladder: Vec<usize>) -> Self {
        Self {
            len: ladder.len(),
            lo: None,
            hi: None,
            ladder,
        }
    }

    /// The next index to probe; `None` when the search is over.
    pub fn next(&self) -> Option<usize> {
        match (self.lo, self.hi) {
            (_, Some(0)) => None,
            (None, None) => Some(0),
            (None, Some(h)) => Some(h / 2),
            (Some(l), Some(h)) => (h - l > 1).then(|| l + (h - l) / 2),
            (Some(l), None) if l + 1 >= self.len => None,
            (Some(l), None) => {
                let want = self.ladder[l].saturating_mul(2);
                let j = self.ladder.iter().position(|&x| x >= want);
                Some(j.unwrap_or(self.len - 1).max(l + 1))
            }
        }
    }

    pub fn record(&mut self, i: usize, pass: bool) {
        if pass {
            self.lo = Some(self.lo.map_or(i, |l| l.max(i)));
        } else {
            self.hi = Some(self.hi.map_or(i, |h| h.min(i)));
        }
    }

    /// The largest passing client count (0: not even the lowest).
    pub fn passing(&self) -> usize {
        self.lo.map_or(0, |i| self.ladder[i])
    }

    /// The smallest failing client count, if one failed.
    pub fn failing(&self) -> Option<usize> {
        self.hi.map(|i| self.ladder[i])
    }

    /// Whether the answer is as precise as the ladder allows.
    pub fn converged(&self) -> bool {
        self.next().is_none()
    }
}

#[derive(Debug, Serialize)]
pub struct CapacitySide {
    /// Largest passing client count found (0: the lowest rung failed).
    pub passing_clients: usize,
    /// Smallest failing client count found (`None`: the top rung passed).
    pub failing_clients: Option<usize>,
    /// The search ended on neighbouring rungs (or a bound of the ladder).
    pub converged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Server CPU per delivery at the largest passing probe, µs.
    pub us_per_delivery_at_passing: Option<f64>,
    /// The server's share of one core at that probe.
    pub server_cores_at_passing: Option<f64>,
    pub secs: f64,
    /// Every probe, in the order run.
    pub probes: Vec<StepResult>,
}

#[derive(Debug, Serialize)]
pub struct CapacityResult {
    pub proto: &'static str,
    pub ladder: Vec<usize>,
    pub precision: f64,
    pub max_probes: usize,
    pub max_secs_per_side: f64,
    #[serde(flatten)]
    pub pair: Pair<CapacitySide>,
}

impl CapacityResult {
    pub fn any(&self) -> bool {
        self.pair.any()
    }
}

/// The clients of one side, grown or shrunk to each probe's count.
struct Probe {
    target: Target,
    proto: Proto,
    rec: std::sync::Arc<Recorder>,
    clients: Vec<Client>,
    connect_parallel: usize,
}

impl Probe {
    async fn resize(&mut self, n: usize) -> anyhow::Result<()> {
        if n < self.clients.len() {
            let extra = self.clients.split_off(n);
            let k = extra.len() as u64;
            let closed = self.rec.closed.load(Ordering::Relaxed);
            client::close_all(extra).await;
            // Their readers end before the probe, or it would count them as
            // dropped by the server.
            let end = Instant::now() + Duration::from_secs(10);
            while self.rec.closed.load(Ordering::Relaxed) - closed < k && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } else if n > self.clients.len() {
            let more = client::connect_paced(
                &self.target,
                self.clients.len(),
                n - self.clients.len(),
                self.connect_parallel,
                500,
                &self.rec,
            )
            .await?;
            self.clients.extend(more);
        }
        // Let join (and leave) announcements drain before measuring.
        self.rec
            .settle(Duration::from_millis(300), Duration::from_secs(180))
            .await;
        Ok(())
    }

    /// Closes every client and starts over with a new recorder (after a
    /// failed probe, whose backlog and drops must not leak into the next).
    async fn reset(&mut self) {
        client::close_all(std::mem::take(&mut self.clients)).await;
        self.rec = Recorder::new(self.proto);
    }
}

async fn search_side(
    target: Target,
    cpu: CpuOf,
    ladder: &[usize],
    p: &CapacityParams,
) -> CapacitySide {
    let t0 = Instant::now();
    let load = load_for(p.proto, &p.step);
    let mut probe = Probe {
        target,
        proto: p.proto,
        rec: Recorder::new(p.proto),
        clients: Vec::new(),
        connect_parallel: p.step.connect_parallel,
    };
    let mut search = Search::new(ladder.to_vec());
    let mut probes: Vec<StepResult> = Vec::new();
    let mut stopped = None;
    while let Some(i) = search.next() {
        if probes.len() >= p.max_probes {
            stopped = Some(format!("probe limit ({}) reached", p.max_probes));
            break;
        }
        if t0.elapsed().as_secs_f64() > p.max_secs {
            stopped = Some(format!("time limit ({} s) reached", p.max_secs));
            break;
        }
        let n = ladder[i];
        if let Err(e) = probe.resize(n).await {
            crate::benches::say(format!("  {n:>6} clients: cannot connect: {e:#}"));
            probe.reset().await;
            search.record(i, false);
            probes.push(StepResult::failed_connect(n));
            continue;
        }
        let r = measured_step(&mut probe.clients, &probe.rec, &load, Some(&cpu)).await;
        crate::benches::say(format!(
            "  probe {}: {n:>6} clients: delivered {}/{} ({:.0}/s) p95 {:.1} ms, server {} µs/delivery: {}",
            probes.len() + 1,
            r.delivered,
            r.expected,
            r.delivered_per_sec,
            r.latency.p95_ms,
            fmt_opt(r.server_us_per_delivery, 2),
            if r.pass { "pass" } else { "FAIL" }
        ));
        search.record(i, r.pass);
        // A probe that failed on latency alone keeps its clients (the next,
        // smaller probe closes some); one that lost messages or clients
        // starts over.
        if !r.pass && (r.lost > 0 || r.disconnected > 0 || r.sent == 0) {
            probe.reset().await;
        }
        probes.push(r);
    }
    probe.reset().await;
    let passing = search.passing();
    let at = probes.iter().rev().find(|r| r.pass && r.clients == passing);
    CapacitySide {
        passing_clients: passing,
        failing_clients: search.failing(),
        converged: search.converged(),
        stopped,
        us_per_delivery_at_passing: at.and_then(|r| r.server_us_per_delivery),
        server_cores_at_passing: at.and_then(|r| r.server_cpu_secs.map(|c| c / r.secs.max(1e-9))),
        secs: t0.elapsed().as_secs_f64(),
        probes,
    }
}

async fn node_side(
    env: &Env,
    ladder: &[usize],
    p: &CapacityParams,
) -> anyhow::Result<CapacitySide> {
    let port = crate::procs::free_port()?;
    let (script, args, target) = match p.proto {
        Proto::Shootout => (
            "shootout-peer.js",
            vec!["--port".to_owned(), port.to_string()],
            Target::Url(format!("ws://127.0.0.1:{port}/")),
        ),
        Proto::Chat => (
            "chat-peer.js",
            vec!["--ports".to_owned(), port.to_string()],
            Target::Chat(port),
        ),
    };
    let peer = NodeProc::start(&env.peers_dir, script, &args, &[]).await?;
    let r = search_side(target, peer.cpu(), ladder, p).await;
    peer.stop().await;
    Ok(r)
}

async fn our_side(env: &Env, ladder: &[usize], p: &CapacityParams) -> anyhow::Result<CapacitySide> {
    let s = OurServer::start(env, 1).await?;
    let r = async {
        let target = match p.proto {
            Proto::Shootout => {
                let port = s
                    .create_room("capacity", Some(&json!({"mode": "shootout"})))
                    .await?;
                Target::Url(format!("ws://127.0.0.1:{port}/"))
            }
            Proto::Chat => Target::Chat(s.create_room("capacity", None).await?),
        };
        let pid = s.room_pid("capacity").await? as u32;
        Ok(search_side(target, CpuOf::Pids(vec![pid]), ladder, p).await)
    }
    .await;
    s.stop().await;
    r
}

pub async fn capacity(env: &Env, p: &CapacityParams) -> CapacityResult {
    let ladder = ladder(p.min, p.max, p.precision);
    let proto = match p.proto {
        Proto::Chat => "chat",
        Proto::Shootout => "shootout",
    };
    let ours = if env.ours {
        crate::benches::say(format!(
            "capacity ({proto}): ours, ladder {}..{} ({} rungs)",
            p.min,
            p.max,
            ladder.len()
        ));
        Some(our_side(env, &ladder, p).await)
    } else {
        None
    };
    let node = if env.node {
        crate::benches::say(format!("capacity ({proto}): node ws peer, same ladder"));
        Some(node_side(env, &ladder, p).await)
    } else {
        None
    };
    let mut pair = Pair::new(ours, node);
    pair.ratios = json!({
        "ours_over_node_passing_clients": ratio_json(
            pair.ours.as_ref().filter(|s| s.passing_clients > 0).map(|s| s.passing_clients as f64),
            pair.node.as_ref().filter(|s| s.passing_clients > 0).map(|s| s.passing_clients as f64)),
        "node_over_ours_us_per_delivery": ratio_json(
            pair.node.as_ref().and_then(|s| s.us_per_delivery_at_passing),
            pair.ours.as_ref().and_then(|s| s.us_per_delivery_at_passing)),
    });
    let mut t = Table::new(
        &format!(
            "capacity ({proto}): largest passing client count (p95 ≤ 500 ms), bisection on one ladder ({}..{}, rungs ≤ {} % apart)",
            p.min,
            p.max,
            fmt_f(p.precision * 100.0, 0)
        ),
        &[
            "server",
            "passing",
            "failing",
            "converged",
            "probes",
            "µs/delivery at passing",
            "server cores",
            "p95 ms at passing",
        ],
    );
    for (who, s) in [("ours", &pair.ours), ("node", &pair.node)] {
        if let Some(s) = s {
            let at = s
                .probes
                .iter()
                .rev()
                .find(|r| r.pass && r.clients == s.passing_clients);
            t.row(vec![
                who.into(),
                s.passing_clients.to_string(),
                s.failing_clients.map_or("-".into(), |f| f.to_string()),
                if s.converged {
                    "yes".into()
                } else {
                    "no".into()
                },
                s.probes.len().to_string(),
                fmt_opt(s.us_per_delivery_at_passing, 2),
                fmt_opt(s.server_cores_at_passing, 2),
                at.map_or("-".into(), |r| fmt_ms(r.latency.p95_ms)),
            ]);
        }
    }
    t.print();
    println!(
        "  ours/node passing clients {}×; node/ours µs per delivery {}×",
        fmt_opt(pair.ratios["ours_over_node_passing_clients"].as_f64(), 2),
        fmt_opt(pair.ratios["node_over_ours_us_per_delivery"].as_f64(), 2)
    );
    pair.print_errors();
    CapacityResult {
        proto,
        ladder,
        precision: p.precision,
        max_probes: p.max_probes,
        max_secs_per_side: p.max_secs,
        pair,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ladder_is_geometric_and_bounded() {
        let l = ladder(1000, 20_000, 0.05);
        assert_eq!(l.first(), Some(&1000));
        assert_eq!(l.last(), Some(&20_000));
        for w in l.windows(2) {
            assert!(w[1] > w[0]);
            assert!(w[1] as f64 <= w[0] as f64 * 1.05 + 1.0, "{w:?}");
        }
        assert_eq!(ladder(5, 8, 0.05), vec![5, 6, 7, 8]);
        assert_eq!(ladder(10, 3, 0.05), vec![10]);
    }

    fn run(ladder: Vec<usize>, limit: usize, max_probes: usize) -> (Search, Vec<usize>) {
        let mut s = Search::new(ladder.clone());
        let mut probed = Vec::new();
        while let Some(i) = s.next() {
            if probed.len() >= max_probes {
                break;
            }
            probed.push(ladder[i]);
            s.record(i, ladder[i] <= limit);
        }
        (s, probed)
    }

    #[test]
    fn search_finds_the_rung_below_the_limit() {
        let l = ladder(100, 20_000, 0.05);
        for limit in [100, 150, 999, 4321, 12_345, 19_999] {
            let (s, probed) = run(l.clone(), limit, 100);
            assert!(s.converged());
            let want = *l.iter().rev().find(|&&x| x <= limit).unwrap();
            assert_eq!(s.passing(), want, "limit {limit}, probed {probed:?}");
            let f = s.failing().unwrap();
            assert!(f > limit && f as f64 <= want as f64 * 1.05 + 1.0);
            assert!(probed.len() <= 20, "{probed:?}");
        }
    }

    #[test]
    fn search_edges() {
        let l = ladder(100, 1000, 0.05);
        // Everything passes: the top rung, converged, nothing failing.
        let (s, _) = run(l.clone(), usize::MAX, 100);
        assert_eq!(
            (s.passing(), s.failing(), s.converged()),
            (1000, None, true)
        );
        // Nothing passes: 0 after one probe.
        let (s, probed) = run(l.clone(), 0, 100);
        assert_eq!(
            (s.passing(), s.failing(), s.converged()),
            (0, Some(100), true)
        );
        assert_eq!(probed, vec![100]);
        // Two probes: the lowest rung and the doubled one; not converged.
        let (s, probed) = run(l, 500, 2);
        assert_eq!(probed.len(), 2);
        assert_eq!(probed[0], 100);
        assert!(probed[1] >= 200);
        assert!(!s.converged());
        assert_eq!(s.passing(), probed[1]);
    }
}
