//! The transport for many hosts (`--redis`, env `REDIS_URL`): events for
//! this host's connections go straight to its rooms (`Local`); other hosts
//! get them through Redis pub/sub, each host on its own channel
//! (`chat:host:<id>`), and only the hosts that hold a recipient (found in
//! the presence entries, `wire.rs`). ARCHITECTURE.md "Users across rooms".
//!
//! - `wire.rs`: keys, channels, the presence entry and the notices;
//! - `view.rs`: other hosts' presence as last read, and what watchers here
//!   were told;
//! - `commands.rs`: the one task that writes presence, routes and publishes
//!   (a bounded queue in front of it: delivering never waits on Redis);
//! - `subscriber.rs`: the subscription to this host's channel, renewed
//!   after every reconnect;
//! - `health.rs`: whether Redis is reached (`/readyz`, `/metrics`).
//!
//! The store stays the source of truth: what Redis loses (an outage, a
//! full queue) is caught up through `welcome`'s summary and `dm_history`.

mod commands;
mod health;
mod subscriber;
mod view;
mod wire;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chat_shared::direct::DirectEvent;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use health::Health;

use super::fanout::{Except, Fanout, Local, Whereabouts};
use super::index::Change;
use commands::Job;
use view::{Remote, View};

/// Bound of one Redis round trip (a pipeline).
const ROUND_TRIP: Duration = Duration::from_secs(2);
/// Jobs waiting for the commands task at most; past it they are dropped
/// (counted): the store still has every message.
const QUEUE: usize = 10_000;

#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The URL's text is never repeated: it may hold a password.
    #[error("the Redis URL is not valid (redis://[:password@]host:port/db)")]
    Url,
}

/// How this host joins the others.
pub struct Config {
    /// May hold a password: never logged.
    pub url: String,
    /// This master's id among the hosts (its channel, its presence fields).
    pub id: String,
    /// This host's name in presence answers.
    pub name: String,
    /// Life of a presence entry without a refresh.
    pub ttl: Duration,
}

/// What the transport and its tasks share.
pub struct Node {
    pub id: String,
    pub name: String,
    pub ttl: Duration,
    pub health: Arc<Health>,
    pub local: Arc<Local>,
    view: Mutex<View>,
    /// Set once the first connection is made (it reconnects by itself).
    conn: OnceLock<ConnectionManager>,
}

impl Node {
    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Other hosts' entries of `users`, read now.
    async fn fetch(&self, users: &[String]) -> Result<Vec<Remote>, String> {
        let Some(conn) = self.conn.get() else {
            return Err("not connected yet".into());
        };
        let mut pipe = redis::pipe();
        for u in users {
            pipe.hgetall(wire::where_key(u)).get(wire::seen_key(u));
        }
        let values = round_trip(&mut conn.clone(), &pipe).await?;
        Ok(remotes(&values, &self.id))
    }
}

/// The Redis transport.
pub struct Redis {
    node: Arc<Node>,
    jobs: mpsc::Sender<Job>,
}

impl Redis {
    /// Starts the commands and subscription tasks on `tracker`; they stop
    /// with `shutdown`. Reaching Redis is their business: the master
    /// starts (and serves its own host) while Redis is out of reach.
    pub fn start(
        cfg: Config,
        local: Arc<Local>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, Error> {
        let client = redis::Client::open(cfg.url.as_str()).map_err(|_| Error::Url)?;
        tracing::info!(redis = %client.get_connection_info().addr, host_id = %cfg.id, ttl = ?cfg.ttl, "users across hosts through redis");
        let node = Arc::new(Node {
            id: cfg.id,
            name: cfg.name,
            ttl: cfg.ttl.max(Duration::from_secs(1)),
            health: Arc::new(Health::default()),
            local,
            view: Mutex::default(),
            conn: OnceLock::new(),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        tracker.spawn(commands::run(
            Arc::clone(&node),
            client.clone(),
            rx,
            shutdown.clone(),
        ));
        tracker.spawn(subscriber::run(
            Arc::clone(&node),
            client,
            tx.clone(),
            shutdown,
        ));
        Ok(Arc::new(Self { node, jobs: tx }))
    }

    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.node.health)
    }

    fn queue(&self, job: Job) {
        if self.jobs.try_send(job).is_err() {
            health::dropped();
        }
    }
}

#[async_trait]
impl Fanout for Redis {
    fn deliver(&self, users: &[String], except: Option<Except<'_>>, event: &DirectEvent) {
        self.node.local.deliver(users, except, event);
        self.queue(Job::Deliver {
            users: users.to_vec(),
            event: event.clone(),
        });
    }

    async fn whereabouts(&self, user: &str) -> Whereabouts {
        let fetched = self.node.fetch(&[user.to_owned()]).await;
        let remote = match fetched {
            Ok(mut r) => r.pop(),
            // Out of reach: what was last read, if this user is watched here.
            Err(_) => self.node.view().cached(user).cloned(),
        };
        view::combine(
            self.node.local.here(user),
            remote.as_ref(),
            crate::registry::now_ms(),
        )
    }

    async fn online(&self, user: &str) -> bool {
        !self.node.local.index.rooms_of(user).is_empty() || self.whereabouts(user).await.online()
    }

    fn changed(&self, touched: &[String], changes: Vec<Change>) {
        for u in touched {
            if !changes.iter().any(|(c, _)| c == u) {
                self.queue(Job::Sync {
                    user: u.clone(),
                    changed: false,
                });
            }
        }
        for (user, _) in changes {
            self.queue(Job::Sync {
                user,
                changed: true,
            });
        }
    }

    fn watching(&self, room: &str, conn: u64, users: Vec<String>) {
        if users.is_empty() {
            return;
        }
        self.queue(Job::Answer {
            room: room.to_owned(),
            conn,
            users,
        });
    }
}

/// The connection manager's settings: short timeouts (a call never hangs
/// on a dead Redis) and quick reconnects.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(1))
        .set_response_timeout(Duration::from_secs(1))
        .set_number_of_retries(1)
        .set_max_delay(500)
}

/// Runs `pipe`, bounded by [`ROUND_TRIP`].
async fn round_trip(
    conn: &mut ConnectionManager,
    pipe: &redis::Pipeline,
) -> Result<Vec<redis::Value>, String> {
    match tokio::time::timeout(ROUND_TRIP, pipe.query_async::<Vec<redis::Value>>(conn)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {ROUND_TRIP:?}")),
    }
}

/// Pairs of (`HGETALL chat:where:u`, `GET chat:seen:u`) answers.
fn remotes(values: &[redis::Value], me: &str) -> Vec<Remote> {
    values
        .chunks(2)
        .map(|pair| {
            let fields = pair
                .first()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default();
            let seen = pair
                .get(1)
                .and_then(|v| redis::from_redis_value::<Option<u64>>(v).ok())
                .flatten();
            Remote {
                entries: wire::entries(fields, me),
                seen,
            }
        })
        .collect()
}
