//! `rooms --count N`: rooms per host. Starts its own master with N room
//! ports, creates N rooms (time), lets them idle and reads their total
//! memory (PSS) and CPU, and the master's, then shuts the master down and
//! times until every room has exited.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::benches::say;
use crate::procs::{self, CpuOf};
use crate::report::{Table, fmt_f, fmt_ms};
use crate::stats::{self, Pcts};
use crate::targets::OurServer;

/// Most rooms one run creates (the master's port range is one block below
/// the ephemeral ports).
pub const MAX_ROOMS: usize = 12_000;

#[derive(Debug, Clone)]
pub struct RoomsParams {
    pub count: usize,
    /// Seconds the rooms idle while their CPU is read.
    pub idle_secs: f64,
    /// Creates in flight at once.
    pub parallel: usize,
    /// Bound of the whole creation phase, seconds.
    pub create_timeout_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct RoomsResult {
    pub requested: usize,
    pub created: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_create_error: Option<String>,
    pub create_parallel: usize,
    /// First request to last answer.
    pub create_secs: f64,
    /// Each `POST /api/v1/room/{name}`, request → answer.
    pub create_latency: Pcts,
    /// Create latency of the first and the last tenth of the rooms: whether
    /// creation slows down as rooms accumulate.
    pub create_p50_first_tenth_ms: f64,
    pub create_p50_last_tenth_ms: f64,
    /// Rooms whose process was found and measured.
    pub measured: usize,
    pub rooms_pss_total_mb: f64,
    pub rooms_private_total_mb: f64,
    pub room_pss_median_kb: f64,
    pub master_pss_mb: f64,
    pub idle_secs: f64,
    /// The master's CPU while the rooms idle, in cores (CPU s per s).
    pub master_cores: f64,
    /// Every room's CPU together while they idle, in cores.
    pub rooms_cores: f64,
    /// Where the two figures above come from: `schedstat` (the scheduler's
    /// nanoseconds, summed over threads) or `stat` (10 ms ticks, blind to a
    /// process that runs less than a tick).
    pub cpu_source: &'static str,
    /// Times the master's threads were scheduled per second while idle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_wakeups_per_sec: Option<f64>,
    /// Times a room's threads were scheduled per second while idle, per
    /// room (all rooms' sum / rooms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_wakeups_per_sec: Option<f64>,
    /// SIGTERM to the master → the master and every room exited.
    pub shutdown_secs: f64,
    /// Rooms still running at the end of the shutdown bound (then killed).
    pub rooms_left_after_shutdown: usize,
}

pub async fn rooms(env: &crate::benches::Env, p: &RoomsParams) -> anyhow::Result<RoomsResult> {
    let n = p.count.max(1);
    anyhow::ensure!(
        n <= MAX_ROOMS,
        "rooms --count {n}: at most {MAX_ROOMS} rooms per run"
    );
    say(format!(
        "rooms: {n} rooms, {} creates at a time",
        p.parallel.max(1)
    ));
    let ports = u16::try_from(n).map_err(|_| anyhow::anyhow!("too many rooms"))?;
    let s = OurServer::start(env, ports).await?;
    let r = measure(&s, n, p).await;
    let pids: Vec<u32> = match &r {
        Ok((_, pids)) => pids.clone(),
        Err(_) => Vec::new(),
    };
    let master_pid = s.pid();
    say(format!(
        "rooms: shutting down the master ({} rooms)",
        pids.len()
    ));
    let (shutdown_secs, left) = if master_pid.is_some() {
        s.shutdown_timed(&pids, Duration::from_secs(60)).await
    } else {
        s.stop().await;
        (f64::NAN, 0)
    };
    let (mut res, _) = r?;
    res.shutdown_secs = shutdown_secs;
    res.rooms_left_after_shutdown = left;
    print(&res);
    Ok(res)
}

async fn measure(
    s: &OurServer,
    n: usize,
    p: &RoomsParams,
) -> anyhow::Result<(RoomsResult, Vec<u32>)> {
    use futures_util::StreamExt;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(p.create_timeout_secs.max(1.0));
    let answers: Vec<(usize, anyhow::Result<u64>)> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            if Instant::now() > deadline {
                return (i, Err(anyhow::anyhow!("creation time limit reached")));
            }
            let t = Instant::now();
            let r = s.create_room(&format!("r{i}"), None).await;
            (i, r.map(|_| t.elapsed().as_micros() as u64))
        })
        .buffer_unordered(p.parallel.max(1))
        .collect()
        .await;
    let create_secs = t0.elapsed().as_secs_f64();
    let mut by_index: Vec<Option<u64>> = vec![None; n];
    let mut first_err = None;
    for (i, a) in answers {
        match a {
            Ok(us) => by_index[i] = Some(us),
            Err(e) => {
                first_err.get_or_insert_with(|| format!("room r{i}: {e:#}"));
            }
        }
    }
    let mut all: Vec<u64> = by_index.iter().flatten().copied().collect();
    let created = all.len();
    let tenth = (n / 10).max(1);
    let p50_of = |v: &[Option<u64>]| {
        let mut x: Vec<u64> = v.iter().flatten().copied().collect();
        Pcts::from_micros(&mut x).p50_ms
    };
    let first_tenth = p50_of(&by_index[..tenth.min(n)]);
    let last_tenth = p50_of(&by_index[n.saturating_sub(tenth)..]);
    say(format!(
        "rooms: {created} of {n} created in {create_secs:.2} s"
    ));

    // Let the rooms settle (their start-up work done) before measuring.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let listed = s.rooms().await?;
    let pids: Vec<u32> = listed
        .iter()
        .filter_map(|r| r.pid)
        .filter_map(|p| u32::try_from(p).ok())
        .collect();
    let mut pss = Vec::with_capacity(pids.len());
    let mut private = 0u64;
    for &pid in &pids {
        if let Ok(m) = chat_shared::procfs::memory(pid) {
            pss.push(m.pss as f64);
            private += m.private;
        }
    }
    let master_pid = s
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the master has exited"))?;
    let master_pss = chat_shared::procfs::memory(master_pid)
        .map(|m| m.pss)
        .unwrap_or(0);

    let master_cpu = CpuOf::Pids(vec![master_pid]);
    let rooms_cpu = CpuOf::Pids(pids.clone());
    let idle = Duration::from_secs_f64(p.idle_secs.max(0.5));
    let sched0 = (procs::sched(&[master_pid]), procs::sched(&pids));
    let (m0, r0, t_idle) = (master_cpu.seconds(), rooms_cpu.seconds(), Instant::now());
    tokio::time::sleep(idle).await;
    let secs = t_idle.elapsed().as_secs_f64();
    let (m1, r1) = (master_cpu.seconds(), rooms_cpu.seconds());
    let sched1 = (procs::sched(&[master_pid]), procs::sched(&pids));
    let per_sec = |a: procs::Threads, b: procs::Threads| {
        let d = b.since(&a);
        (d.cpu_ns as f64 / 1e9 / secs, d.slices as f64 / secs)
    };
    let (cpu_source, master_cores, rooms_cores, master_wakeups, room_wakeups) =
        match (sched0, sched1) {
            ((Some(ma), Some(ra)), (Some(mb), Some(rb))) => {
                let (mc, mw) = per_sec(ma, mb);
                let (rc, rw) = per_sec(ra, rb);
                (
                    "schedstat",
                    mc,
                    rc,
                    Some(mw),
                    Some(rw / pids.len().max(1) as f64),
                )
            }
            _ => (
                "stat",
                (m1 - m0).max(0.0) / secs,
                (r1 - r0).max(0.0) / secs,
                None,
                None,
            ),
        };

    let res = RoomsResult {
        requested: n,
        created,
        first_create_error: first_err,
        create_parallel: p.parallel.max(1),
        create_secs,
        create_latency: Pcts::from_micros(&mut all),
        create_p50_first_tenth_ms: first_tenth,
        create_p50_last_tenth_ms: last_tenth,
        measured: pss.len(),
        rooms_pss_total_mb: pss.iter().sum::<f64>() / 1_048_576.0,
        rooms_private_total_mb: private as f64 / 1_048_576.0,
        room_pss_median_kb: stats::median(&pss).unwrap_or(0.0) / 1024.0,
        master_pss_mb: master_pss as f64 / 1_048_576.0,
        idle_secs: secs,
        master_cores,
        rooms_cores,
        cpu_source,
        master_wakeups_per_sec: master_wakeups,
        room_wakeups_per_sec: room_wakeups,
        shutdown_secs: 0.0,
        rooms_left_after_shutdown: 0,
    };
    Ok((res, pids))
}

fn print(r: &RoomsResult) {
    let mut t = Table::new(
        &format!("rooms: {} idle rooms on one master", r.requested),
        &[
            "created",
            "create s",
            "create p50 / p99 ms",
            "p50 first / last tenth ms",
            "rooms PSS MB",
            "room PSS KB (median)",
            "master PSS MB",
            "master % core",
            "rooms % core",
            "wake-ups/s: master / per room",
            "shutdown s",
            "left",
        ],
    );
    t.row(vec![
        format!("{} / {}", r.created, r.requested),
        fmt_f(r.create_secs, 2),
        format!(
            "{} / {}",
            fmt_ms(r.create_latency.p50_ms),
            fmt_ms(r.create_latency.p99_ms)
        ),
        format!(
            "{} / {}",
            fmt_ms(r.create_p50_first_tenth_ms),
            fmt_ms(r.create_p50_last_tenth_ms)
        ),
        fmt_f(r.rooms_pss_total_mb, 1),
        fmt_f(r.room_pss_median_kb, 0),
        fmt_f(r.master_pss_mb, 1),
        fmt_f(r.master_cores * 100.0, 2),
        fmt_f(r.rooms_cores * 100.0, 2),
        match (r.master_wakeups_per_sec, r.room_wakeups_per_sec) {
            (Some(m), Some(w)) => format!("{} / {}", fmt_f(m, 0), fmt_f(w, 2)),
            _ => "-".into(),
        },
        fmt_f(r.shutdown_secs, 2),
        r.rooms_left_after_shutdown.to_string(),
    ]);
    t.print();
    if let Some(e) = &r.first_create_error {
        println!("  first failed create: {e}");
    }
}
