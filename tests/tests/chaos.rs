//! A bounded chaos test: three rooms with two chatting clients each, while
//! room workers and the master are SIGKILLed (a new master is started on
//! the same run dir after each master kill). Clients reconnect and resume
//! like the protocol says; at the end every acknowledged message must be in
//! its room's history exactly once, in seq order, every served resume must
//! have been gapless and duplicate-free, every room must be alive, and no
//! process may be left after shutdown.
//!
//! `CHAOS_SECS` (default 20) and `CHAOS_KILLS` (default 6: a third of them
//! master kills) make a longer manual run.

mod fault_common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chat_tests::procs::{self, pid_alive};
use chat_tests::{Client, Event, Server, ServerOpts, random_in};
use fault_common::{Api, assert_no_leftovers, env_num, pid_of};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

const ROOMS: [&str; 3] = ["chaos-a", "chaos-b", "chaos-c"];
const CLIENTS: [&str; 2] = ["ann", "bob"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Chat.
    Run,
    /// Stop sending; wait for the acks.
    Quiet,
    /// Leave.
    Done,
}

/// Connections linked by served resumes: within one chain every seq after
/// `start` must be seen exactly once.
#[derive(Debug)]
struct Chain {
    epoch: u64,
    /// `welcome.seq` of the fresh join that started the chain.
    start: u64,
    seen: BTreeSet<u64>,
    resumes: u32,
}

/// What one client observed.
#[derive(Debug)]
struct Report {
    room: String,
    who: String,
    /// Prefix of this client's `client_id`s (and texts).
    prefix: String,
    sent: BTreeSet<String>,
    acked: BTreeMap<String, u64>,
    /// Every (seq → text) this client saw, from any source.
    seen_text: BTreeMap<u64, String>,
    chains: Vec<Chain>,
    violations: Vec<String>,
    notes: Vec<String>,
    sessions: u32,
    resumed: u32,
    fresh: u32,
    errors: BTreeMap<String, u32>,
}

impl Report {
    fn violation(&mut self, t0: Instant, what: String) {
        self.violations.push(format!(
            "[{:.1}s {}/{}] {what}",
            t0.elapsed().as_secs_f64(),
            self.room,
            self.who
        ));
    }

    fn note(&mut self, t0: Instant, what: String) {
        self.notes.push(format!(
            "[{:.1}s {}/{}] {what}",
            t0.elapsed().as_secs_f64(),
            self.room,
            self.who
        ));
    }

    /// Records a text seen at `seq`; a different text at a seq seen before
    /// means the seq was reused.
    fn saw_text(&mut self, t0: Instant, seq: u64, text: &str) {
        match self.seen_text.get(&seq) {
            Some(prev) if prev != text => {
                let prev = prev.clone();
                self.violation(
                    t0,
                    format!("seq {seq} reused: first seen as {prev:?}, now {text:?}"),
                );
            }
            Some(_) => {}
            None => {
                self.seen_text.insert(seq, text.to_owned());
            }
        }
    }

    /// A live (or replayed) seq on the current chain.
    fn saw_live(&mut self, t0: Instant, seq: u64, how: &str) {
        let Some(chain) = self.chains.last_mut() else {
            return self.violation(t0, format!("{how} seq {seq} before any welcome"));
        };
        if seq <= chain.start {
            let start = chain.start;
            self.violation(
                t0,
                format!("{how} seq {seq} is not after the chain's start {start} (duplicate)"),
            );
        } else if !chain.seen.insert(seq) {
            let resumes = chain.resumes;
            self.violation(
                t0,
                format!("{how} seq {seq} seen twice (chain with {resumes} resumes)"),
            );
        }
    }

    /// The resume position: (epoch, highest seq seen).
    fn position(&self) -> Option<(u64, u64)> {
        let c = self.chains.last()?;
        Some((
            c.epoch,
            c.seen.iter().next_back().copied().unwrap_or(c.start),
        ))
    }
}

/// One client: chats while `Run`, reconnects (resuming) whenever its
/// connection ends, reloads history after a refused resume.
async fn run_client(
    room: String,
    port: u16,
    who: String,
    mut phase: watch::Receiver<Phase>,
    settled: Arc<AtomicBool>,
    t0: Instant,
) -> Report {
    let mut r = Report {
        prefix: format!("{room}-{who}-"),
        room,
        who,
        sent: BTreeSet::new(),
        acked: BTreeMap::new(),
        seen_text: BTreeMap::new(),
        chains: Vec::new(),
        violations: Vec::new(),
        notes: Vec::new(),
        sessions: 0,
        resumed: 0,
        fresh: 0,
        errors: BTreeMap::new(),
    };
    let mut n = 0u64;
    let mut backoff = Duration::from_millis(50);
    'outer: loop {
        settled.store(false, Ordering::Release);
        if *phase.borrow() == Phase::Done {
            break;
        }
        let requested = r.position();
        let query = match requested {
            Some((epoch, since)) => format!("name={}&since={since}&epoch={epoch}", r.who),
            None => format!("name={}", r.who),
        };
        let mut c = match Client::try_connect(port, &query).await {
            Ok(c) => c,
            Err(_) => {
                // Not a synchronization: a client's reconnection backoff.
                let _ = tokio::time::timeout(backoff, phase.changed()).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        let welcome = match c.next_event(Duration::from_secs(5)).await {
            Event::Json(v) if v["type"] == "welcome" => v,
            other => {
                r.note(t0, format!("join refused or failed: {other:?}"));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        r.sessions += 1;
        let epoch = welcome["epoch"].as_u64().unwrap_or(0);
        let wseq = welcome["seq"].as_u64().unwrap_or(0);
        let whistory = welcome["history"].as_array().cloned().unwrap_or_default();
        for m in &whistory {
            let (s, t) = (
                m["seq"].as_u64().unwrap_or(0),
                m["text"].as_str().unwrap_or(""),
            );
            r.saw_text(t0, s, t);
        }
        // Where a reload by `history` must reach back to.
        let mut reload: Option<u64> = None;
        let mut last_history: Option<Value> = None;
        if welcome["resumed"] == true {
            r.resumed += 1;
            let (e, since) = requested.unwrap_or((0, 0));
            if requested.is_none() || epoch != e {
                r.violation(
                    t0,
                    format!("resumed into epoch {epoch}, asked {requested:?}"),
                );
            }
            if !whistory.is_empty() {
                r.violation(t0, format!("resumed welcome with history: {welcome}"));
            }
            if wseq < since {
                r.violation(
                    t0,
                    format!("resumed at since={since} but welcome.seq={wseq}"),
                );
            }
            if let Some(ch) = r.chains.last_mut() {
                ch.resumes += 1;
            }
        } else {
            r.fresh += 1;
            if let Some((e, since)) = requested {
                if e == epoch && since <= wseq {
                    r.note(
                        t0,
                        format!(
                            "resume since={since} refused in the same epoch {epoch} (seq {wseq})"
                        ),
                    );
                } else if e == epoch {
                    r.note(
                        t0,
                        format!("seq went back from {since} to {wseq} in epoch {epoch}"),
                    );
                } else {
                    r.note(
                        t0,
                        format!("new epoch {epoch} (was {e}), seq {wseq}, since {since}"),
                    );
                }
                let oldest = whistory
                    .first()
                    .and_then(|m| m["seq"].as_u64())
                    .unwrap_or(wseq + 1);
                if oldest > since + 1 && oldest > 1 {
                    reload = Some(since);
                    let req = json!({"type":"history","before":oldest,"limit":100});
                    if c.try_send(Message::text(req.to_string())).await.is_err() {
                        continue;
                    }
                    last_history = Some(req);
                }
            }
            r.chains.push(Chain {
                epoch,
                start: wseq,
                seen: BTreeSet::new(),
                resumes: 0,
            });
        }

        // This connection's own says waiting for their ack: cid → text.
        let mut pending: BTreeMap<String, String> = BTreeMap::new();
        let mut last_message = 0u64;
        let mut next_send = tokio::time::Instant::now();
        loop {
            let ph = *phase.borrow();
            if ph == Phase::Done {
                c.close().await;
                break 'outer;
            }
            settled.store(
                ph >= Phase::Quiet && pending.is_empty() && reload.is_none(),
                Ordering::Release,
            );
            let now = tokio::time::Instant::now();
            if ph == Phase::Run && now >= next_send {
                n += 1;
                let cid = format!("{}{n}", r.prefix);
                let say = json!({"type":"say","text":cid,"client_id":cid});
                if c.try_send(Message::text(say.to_string())).await.is_err() {
                    r.note(t0, "send failed; reconnecting".into());
                    continue 'outer;
                }
                r.sent.insert(cid.clone());
                pending.insert(cid.clone(), cid);
                // ~4 messages/s per client, far below 30/s.
                next_send = now + Duration::from_millis(u64::from(random_in(150..350)));
            }
            let wait = if ph == Phase::Run {
                next_send
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(Duration::from_millis(100))
            } else {
                Duration::from_millis(50)
            };
            let v = match c.next_event(wait).await {
                Event::Timeout => continue,
                Event::Json(v) => v,
                Event::Binary(_) => {
                    r.violation(t0, "a binary frame".into());
                    continue;
                }
                ended => {
                    if !pending.is_empty() {
                        r.note(
                            t0,
                            format!(
                                "connection ended ({ended:?}) with {} unacked says",
                                pending.len()
                            ),
                        );
                    }
                    continue 'outer;
                }
            };
            match v["type"].as_str().unwrap_or("") {
                "message" => {
                    let s = v["seq"].as_u64().unwrap_or(0);
                    let t = v["text"].as_str().unwrap_or("").to_owned();
                    if s <= last_message {
                        r.violation(
                            t0,
                            format!("message seq {s} after {last_message} on one connection"),
                        );
                    }
                    last_message = s;
                    r.saw_text(t0, s, &t);
                    r.saw_live(t0, s, "message");
                }
                "ack" => {
                    let s = v["seq"].as_u64().unwrap_or(0);
                    let cid = v["client_id"].as_str().unwrap_or("").to_owned();
                    match pending.remove(&cid) {
                        Some(text) => {
                            r.acked.insert(cid, s);
                            r.saw_text(t0, s, &text);
                            r.saw_live(t0, s, "ack");
                        }
                        None => r.violation(t0, format!("ack of an unknown client_id: {v}")),
                    }
                }
                "history" => {
                    let msgs = v["messages"].as_array().cloned().unwrap_or_default();
                    let mut prev = 0;
                    for m in &msgs {
                        let s = m["seq"].as_u64().unwrap_or(0);
                        if s <= prev {
                            r.violation(t0, format!("history page out of order: {v}"));
                        }
                        prev = s;
                        r.saw_text(t0, s, m["text"].as_str().unwrap_or(""));
                    }
                    let Some(target) = reload else {
                        r.violation(t0, format!("unasked history: {v}"));
                        continue;
                    };
                    let first = msgs.first().and_then(|m| m["seq"].as_u64());
                    match first {
                        Some(f) if v["more"] == true && f > target + 1 => {
                            let req = json!({"type":"history","before":f,"limit":100});
                            if c.try_send(Message::text(req.to_string())).await.is_err() {
                                continue 'outer;
                            }
                            last_history = Some(req);
                        }
                        _ => reload = None,
                    }
                }
                "error" => {
                    let code = v["code"].as_str().unwrap_or("?").to_owned();
                    *r.errors.entry(code.clone()).or_default() += 1;
                    if code == "unavailable"
                        && reload.is_some()
                        && let Some(req) = &last_history
                    {
                        // History from the store while it is away: ask again.
                        if c.try_send(Message::text(req.to_string())).await.is_err() {
                            continue 'outer;
                        }
                    }
                    r.note(t0, format!("error frame: {v}"));
                }
                "closing" => r.note(t0, format!("closing: {v}")),
                _ => {}
            }
        }
    }
    settled.store(true, Ordering::Release);
    r
}

/// One step of the kill schedule.
#[derive(Debug, Clone, Copy)]
enum Kill {
    Master { with_worker: bool },
    Worker,
}

/// The pid of a room's live, ready worker (a room still restarting is
/// given up to 10 s).
async fn ready_worker(api: &Api, room: &str) -> Result<i32, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = api.room(room).await
            && r["status"] == "ready"
            && pid_alive(pid_of(&r))
        {
            return Ok(pid_of(&r));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "room {room} has no live ready worker (admin API: {:?})",
                api.room(room).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a room's whole history with a fresh client, paging back with
/// `history {before, limit: 100}` until `more` is false.
async fn full_history(port: u16, errors: &mut Vec<String>, room: &str) -> Option<Vec<Value>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = loop {
        match Client::try_connect(port, "name=auditor").await {
            Ok(mut c) => match c.next_event(Duration::from_secs(5)).await {
                Event::Json(v) if v["type"] == "welcome" => {
                    c.welcome = v;
                    break c;
                }
                other => errors.push(format!("{room}: auditor join failed: {other:?}")),
            },
            Err(e) if Instant::now() >= deadline => {
                errors.push(format!("{room}: the room does not accept a join: {e}"));
                return None;
            }
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            errors.push(format!("{room}: the room does not accept a join"));
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut pages: Vec<Vec<Value>> = Vec::new();
    let mut before: Option<u64> = None;
    for _ in 0..1000 {
        let req = match before {
            Some(b) => json!({"type":"history","before":b,"limit":100}),
            None => json!({"type":"history","limit":100}),
        };
        c.send_json(req).await;
        let (page, _) = c.recv_type_collect("history").await;
        let msgs = page["messages"].as_array().cloned().unwrap_or_default();
        let first = msgs.first().and_then(|m| m["seq"].as_u64());
        let more = page["more"] == true;
        pages.push(msgs);
        match first {
            Some(f) if more => before = Some(f),
            _ => break,
        }
    }
    c.close().await;
    Some(pages.into_iter().rev().flatten().collect())
}

#[tokio::test]
async fn chaos_kills_keep_every_acknowledged_message() {
    let secs = env_num("CHAOS_SECS", 20);
    let kills = env_num("CHAOS_KILLS", 6).max(1);
    let master_kills = (kills / 3).max(1);
    let args: Vec<String> = [
        "--max-restarts",
        "1000",
        "--shutdown-grace",
        "5s",
        "--ipc-heartbeat",
        "500ms",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut s = Server::start(ServerOpts::new().args(args)).await;
    let api = Api::new(&s);
    let mut ports = BTreeMap::new();
    for room in ROOMS {
        ports.insert(room, s.create_room(room).await);
    }
    let t0 = Instant::now();
    let (phase_tx, phase_rx) = watch::channel(Phase::Run);
    let mut tasks = Vec::new();
    let mut settled = Vec::new();
    for room in ROOMS {
        for who in CLIENTS {
            let flag = Arc::new(AtomicBool::new(false));
            settled.push(flag.clone());
            tasks.push(tokio::spawn(run_client(
                room.to_owned(),
                ports[room],
                who.to_owned(),
                phase_rx.clone(),
                flag,
                t0,
            )));
        }
    }

    // The kill schedule, in random order, evenly spread: master kills
    // (the master stays down for a moment, and `CHAOS_OVERLAP` of them, 1
    // by default, also kill a worker while it is down) and worker kills.
    let overlap = env_num("CHAOS_OVERLAP", 1)
        .min(master_kills)
        .min(kills - master_kills);
    let mut kinds: Vec<Kill> = (0..master_kills)
        .map(|i| Kill::Master {
            with_worker: i < overlap,
        })
        .chain((0..kills - master_kills - overlap).map(|_| Kill::Worker))
        .collect();
    for i in (1..kinds.len()).rev() {
        let j = random_in(0..(i as u32 + 1)) as usize;
        kinds.swap(i, j);
    }
    eprintln!(
        "chaos: {secs} s, {} worker kills ({overlap} while the master is down), {master_kills} master kills",
        kills - master_kills
    );
    let slot = Duration::from_secs(secs) / (kinds.len() as u32 + 1);
    let mut events: Vec<String> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut masters = 1;
    for (i, kind) in kinds.iter().enumerate() {
        // The chaos schedule (not a synchronization).
        tokio::time::sleep_until(tokio::time::Instant::from_std(t0 + slot * (i as u32 + 1))).await;
        let at = t0.elapsed().as_secs_f64();
        let room = ROOMS[random_in(0..ROOMS.len() as u32) as usize];
        let victim = match ready_worker(&api, room).await {
            Ok(pid) => Some(pid),
            Err(e) => {
                problems.push(format!("[{at:.1}s] {e}"));
                None
            }
        };
        match kind {
            Kill::Master { with_worker } => {
                let pid = s.pid;
                s.kill_master().await;
                events.push(format!("[{at:.1}s] SIGKILL master {pid}"));
                // Down for a while (part of the schedule): rooms chat on,
                // their messages wait for a master to store them.
                let down = Duration::from_millis(u64::from(random_in(400..1200)));
                if *with_worker && let Some(w) = victim {
                    tokio::time::sleep(down / 2).await;
                    procs::sigkill(w);
                    events.push(format!(
                        "[{:.1}s] SIGKILL worker {w} of {room} while no master runs",
                        t0.elapsed().as_secs_f64()
                    ));
                    tokio::time::sleep(down / 2).await;
                } else {
                    tokio::time::sleep(down).await;
                }
                masters += 1;
                s.start_again(&format!("master{masters}")).await;
                events.push(format!(
                    "[{:.1}s] new master {} ready",
                    t0.elapsed().as_secs_f64(),
                    s.pid
                ));
            }
            Kill::Worker => {
                if let Some(w) = victim {
                    procs::sigkill(w);
                    events.push(format!("[{at:.1}s] SIGKILL worker {w} of {room}"));
                }
            }
        }
    }
    tokio::time::sleep_until(tokio::time::Instant::from_std(
        t0 + Duration::from_secs(secs),
    ))
    .await;

    // Quiet period: no more says; every ack arrives; every room is ready.
    phase_tx.send_replace(Phase::Quiet);
    let quiet_from = Instant::now();
    let quiet_deadline = quiet_from + Duration::from_secs(15);
    loop {
        let clients_ok = settled.iter().all(|f| f.load(Ordering::Acquire));
        let mut rooms_ok = true;
        for room in ROOMS {
            rooms_ok &= api
                .room(room)
                .await
                .is_some_and(|r| r["status"] == "ready" && pid_alive(pid_of(&r)));
        }
        if clients_ok && rooms_ok {
            break;
        }
        if Instant::now() >= quiet_deadline {
            let unsettled: Vec<usize> = settled
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.load(Ordering::Acquire))
                .map(|(i, _)| i)
                .collect();
            problems.push(format!(
                "no quiet state within 15 s: clients not settled (connected, all acks in): {unsettled:?}; rooms: {:?}",
                api.rooms().await
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    events.push(format!(
        "[{:.1}s] quiet after {:?}",
        t0.elapsed().as_secs_f64(),
        quiet_from.elapsed()
    ));
    phase_tx.send_replace(Phase::Done);
    let mut reports = Vec::new();
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(15), t).await {
            Ok(Ok(r)) => reports.push(r),
            Ok(Err(e)) => problems.push(format!("a client task failed: {e}")),
            Err(_) => problems.push("a client task did not end".into()),
        }
    }

    // ---- invariants ----
    let mut total_acked = 0;
    for room in ROOMS {
        let Some(history) = full_history(ports[room], &mut problems, room).await else {
            continue;
        };
        // In seq order, each seq once.
        let seqs: Vec<u64> = history
            .iter()
            .map(|m| m["seq"].as_u64().unwrap_or(0))
            .collect();
        if let Some(w) = seqs.windows(2).find(|w| w[0] >= w[1]) {
            problems.push(format!(
                "{room}: history not in strict seq order at {w:?}: {seqs:?}"
            ));
        }
        let by_seq: BTreeMap<u64, String> = history
            .iter()
            .map(|m| {
                (
                    m["seq"].as_u64().unwrap_or(0),
                    m["text"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        let mut count: BTreeMap<&str, u32> = BTreeMap::new();
        for m in &history {
            *count.entry(m["text"].as_str().unwrap_or("")).or_default() += 1;
        }
        for (text, n) in &count {
            if *n > 1 {
                problems.push(format!("{room}: {text:?} is {n} times in the history"));
            }
        }
        let room_reports: Vec<&Report> = reports.iter().filter(|r| r.room == room).collect();
        // Who wrote what, as anyone saw it (for seqs missing from history).
        let mut seen_anywhere: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
        for r in &room_reports {
            for (s, t) in &r.seen_text {
                seen_anywhere.entry(*s).or_default().insert(t.clone());
            }
        }
        for r in &room_reports {
            total_acked += r.acked.len();
            // Every acknowledged message, exactly once, at its seq.
            for (cid, seq) in &r.acked {
                match by_seq.get(seq) {
                    Some(t) if t == cid => {}
                    other => problems.push(format!(
                        "{room}/{}: acked {cid} (seq {seq}) but the history has {other:?} there",
                        r.who
                    )),
                }
                if count.get(cid.as_str()).copied().unwrap_or(0) != 1 {
                    problems.push(format!(
                        "{room}/{}: acked {cid} is {} times in the history",
                        r.who,
                        count.get(cid.as_str()).copied().unwrap_or(0)
                    ));
                }
            }
            // What a client saw at a seq is what the history holds there.
            for (s, t) in &r.seen_text {
                if let Some(h) = by_seq.get(s)
                    && h != t
                {
                    problems.push(format!(
                        "{room}/{}: saw {t:?} at seq {s}, the history has {h:?} (seq reused)",
                        r.who
                    ));
                }
            }
            // Own says never acked and found nowhere: lost with a worker;
            // their seqs may be missing from the client's stream.
            let vanished = r
                .sent
                .iter()
                .filter(|cid| !r.acked.contains_key(*cid))
                .filter(|cid| !count.contains_key(cid.as_str()))
                .filter(|cid| !seen_anywhere.values().any(|t| t.contains(*cid)))
                .count();
            let mut unexplained = 0;
            for (ci, ch) in r.chains.iter().enumerate() {
                let Some(&max) = ch.seen.iter().next_back() else {
                    continue;
                };
                let mut gaps = Vec::new();
                for s in ch.start + 1..=max {
                    if ch.seen.contains(&s) {
                        continue;
                    }
                    // The client's own say whose ack died with its connection
                    // (as the history or any client knows that seq).
                    let texts: Vec<&String> = by_seq
                        .get(&s)
                        .into_iter()
                        .chain(seen_anywhere.get(&s).into_iter().flatten())
                        .collect();
                    let own = |t: &&String| t.starts_with(&r.prefix) && !r.acked.contains_key(*t);
                    if texts.iter().any(own) {
                        continue;
                    }
                    match texts.first() {
                        Some(t) => gaps.push(format!("{s} ({t})")),
                        None => {
                            unexplained += 1;
                            if unexplained > vanished {
                                gaps.push(format!("{s} (unknown)"));
                            }
                        }
                    }
                }
                if !gaps.is_empty() {
                    problems.push(format!(
                        "{room}/{}: chain {ci} (epoch {}, from {}, {} resumes) missed seqs {gaps:?}",
                        r.who, ch.epoch, ch.start, ch.resumes
                    ));
                }
            }
            problems.extend(r.violations.iter().cloned());
        }
    }

    // Summary (printed with --nocapture, and on failure).
    let mut summary = String::new();
    for e in &events {
        summary.push_str(&format!("event {e}\n"));
    }
    for r in &reports {
        summary.push_str(&format!(
            "{}/{}: sent {}, acked {}, sessions {} (resumed {}, fresh {}), chains {}, errors {:?}\n",
            r.room,
            r.who,
            r.sent.len(),
            r.acked.len(),
            r.sessions,
            r.resumed,
            r.fresh,
            r.chains.len(),
            r.errors
        ));
        for n in r.notes.iter().take(20) {
            summary.push_str(&format!("  note {n}\n"));
        }
    }
    eprintln!("{summary}");

    // Shutdown: no process may be left.
    let stopping = Instant::now();
    if masters == 1 {
        s.stop_gracefully().await;
    } else {
        // A master started again by the test.
        let status = s.stop_within(Duration::from_secs(20)).await;
        if !status.success() {
            problems.push(format!("the last master exited with {status}"));
        }
    }
    eprintln!("shutdown took {:?}", stopping.elapsed());
    assert_no_leftovers(&mut s).await;
    if !problems.is_empty() {
        // Every master's and room's log, to read a failure afterwards.
        eprintln!("{}", s.logs());
    }
    assert!(
        problems.is_empty(),
        "{} invariant violations:\n{}\n\n{summary}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        total_acked > 0,
        "no message was acknowledged at all\n{summary}"
    );
}
