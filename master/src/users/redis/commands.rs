//! The one task that talks to Redis for this host (besides the
//! subscription and the reads of `whereabouts`): it takes jobs in batches
//! and runs each batch in two pipelined round trips — presence writes and
//! the reads routing needs, then the publications. One task, so this
//! host's writes reach Redis in the order the changes happened.
//!
//! Every third of the TTL it refreshes this host's presence entries and
//! watch registrations; every half second it reconnects if needed and
//! notices watched users whose only hosts stopped refreshing (a dead host:
//! its users go offline within one TTL).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chat_shared::direct::DirectEvent;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::health::{self, Side};
use super::view::{Remote, combine};
use super::wire::{self, Entry, Notice};
use super::{Node, manager_config, remotes, round_trip};
use crate::registry::now_ms;

/// What the transport asks of the task.
#[derive(Debug)]
pub enum Job {
    /// Publish `event` for `users`' connections on other hosts.
    Deliver {
        users: Vec<String>,
        event: DirectEvent,
    },
    /// Write this host's entry of `user` as the index has it now;
    /// `changed`: they came online or went offline here (watcher hosts are
    /// told).
    Sync { user: String, changed: bool },
    /// Read `user`'s presence again for this host's watchers.
    Check(String),
    /// Connection `conn` of `room` started watching `users`: register the
    /// watch, then answer their presence.
    Answer {
        room: String,
        conn: u64,
        users: Vec<String>,
    },
    /// Read every watched user's presence again (after a reconnect:
    /// notices may have been missed).
    CheckAll,
}

/// Jobs taken in one batch at most.
const BATCH: usize = 512;
/// Users per refresh pipeline.
const REFRESH_CHUNK: usize = 500;
/// Cadence of reconnects, health probes and expiry sweeps.
const TICK: Duration = Duration::from_millis(500);

struct Task {
    node: Arc<Node>,
    client: redis::Client,
    /// Users whose entry could not be written (Redis out of reach):
    /// written, and their watcher hosts told, once it is back.
    dirty: BTreeSet<String>,
    last_refresh: Option<tokio::time::Instant>,
    /// Redis came back: refresh and read again before anything else.
    resync: bool,
}

pub async fn run(
    node: Arc<Node>,
    client: redis::Client,
    mut jobs: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) {
    let mut task = Task {
        node,
        client,
        dirty: BTreeSet::new(),
        last_refresh: None,
        resync: false,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            n = jobs.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    break;
                }
                task.batch(std::mem::take(&mut batch)).await;
            }
            _ = tick.tick() => task.tick().await,
        }
        if task.resync {
            task.resync = false;
            task.refresh().await;
            let mut again: Vec<Job> = std::mem::take(&mut task.dirty)
                .into_iter()
                .map(|user| Job::Sync {
                    user,
                    changed: true,
                })
                .collect();
            again.push(Job::CheckAll);
            task.batch(again).await;
        }
    }
}

impl Task {
    /// The connection, made on first use (then it reconnects by itself).
    async fn conn(&mut self) -> Option<ConnectionManager> {
        if let Some(c) = self.node.conn.get() {
            return Some(c.clone());
        }
        let made = tokio::time::timeout(
            super::ROUND_TRIP,
            ConnectionManager::new_with_config(self.client.clone(), manager_config()),
        )
        .await;
        match made {
            Ok(Ok(c)) => {
                let _ = self.node.conn.set(c.clone());
                self.report(Ok(()));
                Some(c)
            }
            Ok(Err(e)) => {
                self.report(Err(e.to_string()));
                None
            }
            Err(_) => {
                self.report(Err("no connection within the bound".into()));
                None
            }
        }
    }

    fn report(&mut self, result: Result<(), String>) {
        if self.node.health.report(Side::Commands, result) {
            self.resync = true;
        }
    }

    async fn tick(&mut self) {
        let Some(mut conn) = self.conn().await else {
            return;
        };
        if !self.node.health.commands_up() {
            let mut ping = redis::pipe();
            ping.cmd("PING");
            let r = round_trip(&mut conn, &ping).await.map(|_| ());
            self.report(r);
            return;
        }
        let third = self.node.ttl / 3;
        if self.last_refresh.is_none_or(|t| t.elapsed() >= third) {
            self.refresh().await;
        }
        // Watched users whose only hosts stopped refreshing.
        let now = now_ms();
        let expired: Vec<Job> = {
            let watched: HashSet<String> = self.node.local.watches.watched().into_iter().collect();
            let mut view = self.node.view();
            view.retain(&watched);
            view.expired(now)
        }
        .into_iter()
        .map(Job::Check)
        .collect();
        if !expired.is_empty() {
            self.batch(expired).await;
        }
    }

    /// Writes every entry of this host and every watch registration again.
    async fn refresh(&mut self) {
        let Some(mut conn) = self.conn().await else {
            return;
        };
        self.last_refresh = Some(tokio::time::Instant::now());
        let (now, ttl) = (now_ms(), self.node.ttl_ms());
        let users = self.node.local.index.all();
        let watched = self.node.local.watches.watched();
        for chunk in users.chunks(REFRESH_CHUNK) {
            let mut pipe = redis::pipe();
            for (user, rooms) in chunk {
                self.write_entry(&mut pipe, user, rooms.clone(), now);
            }
            let r = round_trip(&mut conn, &pipe).await.map(|_| ());
            if r.is_err() {
                self.dirty.extend(chunk.iter().map(|(u, _)| u.clone()));
            }
            self.report(r);
        }
        for chunk in watched.chunks(REFRESH_CHUNK) {
            let mut pipe = redis::pipe();
            for user in chunk {
                register_watch(&mut pipe, &self.node.id, user, now, ttl);
            }
            let r = round_trip(&mut conn, &pipe).await.map(|_| ());
            self.report(r);
        }
    }

    /// This host's entry of `user` (present in `rooms`, or gone).
    fn write_entry(&self, pipe: &mut redis::Pipeline, user: &str, rooms: Vec<String>, now: u64) {
        let key = wire::where_key(user);
        if rooms.is_empty() {
            pipe.hdel(&key, &self.node.id).ignore();
            pipe.pset_ex(wire::seen_key(user), now, wire::SEEN_TTL_MS)
                .ignore();
            return;
        }
        let ttl = self.node.ttl_ms();
        let entry = Entry {
            name: self.node.name.clone(),
            rooms,
            written: now,
            expires: now.saturating_add(ttl),
        };
        let json = serde_json::to_string(&entry).unwrap_or_default();
        pipe.hset(&key, &self.node.id, json).ignore();
        pipe.pexpire(&key, i64::try_from(ttl).unwrap_or(i64::MAX))
            .ignore();
    }

    async fn batch(&mut self, jobs: Vec<Job>) {
        let mut syncs: BTreeMap<String, bool> = BTreeMap::new();
        let mut delivers: Vec<(Vec<String>, DirectEvent)> = Vec::new();
        let mut checks: BTreeSet<String> = BTreeSet::new();
        let mut answers: Vec<(String, u64, Vec<String>)> = Vec::new();
        for job in jobs {
            match job {
                Job::Deliver { users, event } => delivers.push((users, event)),
                Job::Sync { user, changed } => *syncs.entry(user).or_default() |= changed,
                Job::Check(u) => {
                    checks.insert(u);
                }
                Job::Answer { room, conn, users } => answers.push((room, conn, users)),
                Job::CheckAll => checks.extend(self.node.local.watches.watched()),
            }
        }
        let watches = &self.node.local.watches;
        // A change here may change what this host's watchers see.
        for (u, changed) in &syncs {
            if *changed && watches.is_watched(u) {
                checks.insert(u.clone());
            }
        }
        for (_, _, users) in &answers {
            checks.extend(users.iter().cloned());
        }
        let mut reads: BTreeSet<String> = checks.clone();
        for (users, _) in &delivers {
            reads.extend(users.iter().cloned());
        }
        let reads: Vec<String> = reads.into_iter().collect();
        let told_hosts: Vec<String> = syncs
            .iter()
            .filter(|(_, changed)| **changed)
            .map(|(u, _)| u.clone())
            .collect();

        let now = now_ms();
        let (id, ttl) = (self.node.id.clone(), self.node.ttl_ms());
        let mut answer = None;
        if let Some(mut conn) = self.conn().await {
            let mut pipe = redis::pipe();
            for user in syncs.keys() {
                self.write_entry(&mut pipe, user, self.node.local.index.rooms_of(user), now);
            }
            for (_, _, users) in &answers {
                for u in users {
                    register_watch(&mut pipe, &id, u, now, ttl);
                }
            }
            for u in &told_hosts {
                pipe.hgetall(wire::watch_key(u));
            }
            for u in &reads {
                pipe.hgetall(wire::where_key(u)).get(wire::seen_key(u));
            }
            let r = round_trip(&mut conn, &pipe).await;
            self.report(r.as_ref().map(|_| ()).map_err(|e| e.clone()));
            answer = r.ok().map(|values| (conn, values));
        }
        let Some((mut conn, values)) = answer else {
            // Out of reach: nothing published, entries written later;
            // watchers here answered from what was last read.
            health::errors(delivers.len());
            self.dirty.extend(syncs.into_keys());
            self.tell(&checks, &answers, &HashMap::new(), now);
            return;
        };
        let (watch_values, where_values) = values.split_at(told_hosts.len().min(values.len()));
        let fetched: HashMap<String, Remote> =
            reads.into_iter().zip(remotes(where_values, &id)).collect();

        let mut publish: Vec<(String, Notice)> = Vec::new();
        for (user, v) in told_hosts.iter().zip(watch_values) {
            let fields = redis::from_redis_value(v).unwrap_or_default();
            for host in wire::live_watchers(fields, &id, now) {
                publish.push((host, Notice::Presence { user: user.clone() }));
            }
        }
        for (users, event) in delivers {
            // host → those of `users` it holds, in order.
            let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for u in &users {
                for (host, e) in fetched.get(u).map(|r| r.entries.as_slice()).unwrap_or(&[]) {
                    let held = hosts.entry(host.clone()).or_default();
                    if e.expires > now && !held.contains(u) {
                        held.push(u.clone());
                    }
                }
            }
            for (host, users) in hosts {
                if !users.is_empty() {
                    publish.push((
                        host,
                        Notice::Deliver {
                            users,
                            event: event.clone(),
                        },
                    ));
                }
            }
        }
        self.tell(&checks, &answers, &fetched, now);
        if publish.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (host, notice) in &publish {
            let Ok(json) = serde_json::to_string(notice) else {
                continue;
            };
            pipe.publish(wire::channel(host), json).ignore();
        }
        let r = round_trip(&mut conn, &pipe).await.map(|_| ());
        match &r {
            Ok(()) => health::published(publish.len()),
            Err(e) => {
                tracing::debug!(error = %e, n = publish.len(), "publications lost (the store has the messages)");
                health::errors(publish.len());
            }
        }
        self.report(r);
    }

    /// Tells this host's watchers of `checks` what changed, and each
    /// answering connection the presence of the users it now watches.
    /// `fetched`: what was just read (else what was last read).
    fn tell(
        &self,
        checks: &BTreeSet<String>,
        answers: &[(String, u64, Vec<String>)],
        fetched: &HashMap<String, Remote>,
        now: u64,
    ) {
        let local = &self.node.local;
        let mut view = self.node.view();
        for (u, r) in fetched {
            if checks.contains(u) {
                view.store(u, r.clone());
            }
        }
        for u in checks {
            let w = combine(local.here(u), view.cached(u), now);
            if view.tell(u, w.online()) {
                // The connections answered below hear it from their answer.
                let except = answers
                    .iter()
                    .find(|(_, _, users)| users.contains(u))
                    .map(|(room, conn, _)| (room.as_str(), *conn));
                local.tell_watchers(&w.presence(u), except);
            }
        }
        for (room, conn, users) in answers {
            let states = users
                .iter()
                .map(|u| combine(local.here(u), view.cached(u), now).presence(u))
                .collect();
            local.tell(room, vec![*conn], states);
        }
    }
}

/// Registers this host as a watcher of `user` until one TTL from `now`.
fn register_watch(pipe: &mut redis::Pipeline, id: &str, user: &str, now: u64, ttl: u64) {
    let key = wire::watch_key(user);
    pipe.hset(&key, id, now.saturating_add(ttl)).ignore();
    pipe.pexpire(&key, i64::try_from(ttl).unwrap_or(i64::MAX))
        .ignore();
}
