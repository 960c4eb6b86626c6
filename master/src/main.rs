//! `chatserver`: the master process. Serves the room API and the admin API,
//! spawns one worker process per room and supervises them. The same
//! executable runs a room when started as `chatserver room ...` (what the
//! master spawns by default); that role is chosen before any runtime exists.
//!
//! Shutdown (SIGTERM, SIGINT or `DELETE /api/v1/shutdown`): stop accepting,
//! tell every room to close (clients get 1001), wait up to the grace period,
//! kill what remains, remove the socket and state files.

mod cache;
mod catalog;
mod config;
mod events;
mod heartbeat;
mod http;
mod ipc_peer;
mod ipc_server;
mod keys;
mod lb;
mod lifecycle;
mod load;
mod logging;
mod metrics;
mod owners;
mod registry;
mod restart;
mod room_bans;
mod rooms;
mod rundir;
mod state;
mod store;
mod supervisor;
mod tombstone;
mod users;
mod webhook;
mod worker_cmd;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::keys::Keys;
use crate::registry::Registry;
use crate::rundir::{MasterInfo, RunDir};
use crate::state::Master;

fn main() -> anyhow::Result<()> {
    // The room role builds its own current-thread runtime and logging.
    if let Some(args) = worker_cmd::room_args() {
        worker_cmd::name_room_process();
        return chatroom::run_from_args(args);
    }
    let cfg = Config::load();
    let log = logging::init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = rt.block_on(run(cfg, log));
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), "chatserver stopped");
    }
    result
}

/// Descriptors the master holds per room (its IPC socket and the child's
/// pidfd).
const FDS_PER_ROOM: u64 = 2;
/// Descriptors kept for everything else (API clients, store, logs).
const FDS_SPARE: u64 = 1024;

/// Raises the soft open-file limit to the hard limit (every client is a
/// file), and warns when it cannot hold `rooms` rooms.
fn raise_nofile(rooms: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "raised the open-file limit");
                hard
            }
            Err(e) => {
                tracing::warn!(error = %e, soft, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => {
            tracing::info!(limit = soft, "open-file limit");
            soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return;
        }
    };
    let rooms = u64::try_from(rooms).unwrap_or(u64::MAX);
    let needed = rooms.saturating_mul(FDS_PER_ROOM).saturating_add(FDS_SPARE);
    if limit < needed {
        let fit = limit.saturating_sub(FDS_SPARE) / FDS_PER_ROOM;
        tracing::warn!(
            limit,
            needed,
            rooms_that_fit = fit,
            "the open-file limit is too low for the configured rooms (two descriptors per room); \
             creates past that fail with `Too many open files`: raise LimitNOFILE or lower --max-rooms"
        );
    }
}

async fn run(mut cfg: Config, log: logging::LogControl) -> anyhow::Result<()> {
    let pid = std::process::id();
    let _span = tracing::info_span!("chatserver", pid).entered();
    raise_nofile(cfg.capacity());
    let run_dir = RunDir::open(&cfg.run_dir)?;
    // Port 0 binds any free port; from here on the configuration holds the
    // bound ports (host names, master.json). A re-executed master keeps the
    // ports its predecessor bound.
    let (main_port, admin_port) = restart::inherited_ports((cfg.port, cfg.admin_port));
    let main_addr = SocketAddr::new(cfg.bind, main_port);
    let admin_addr = SocketAddr::new(cfg.admin_bind, admin_port);
    let main_listener = TcpListener::bind(main_addr)
        .await
        .with_context(|| format!("cannot bind the room API on {main_addr}"))?;
    let admin_listener = TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("cannot bind the admin API on {admin_addr}"))?;
    let main_bound = main_listener.local_addr().unwrap_or(main_addr);
    let admin_bound = admin_listener.local_addr().unwrap_or(admin_addr);
    cfg.port = main_bound.port();
    cfg.admin_port = admin_bound.port();
    let keys = Keys::resolve(cfg.key.clone(), cfg.admin_key.clone(), &run_dir.path)
        .context("cannot write the key file")?;
    if cfg.jwt_secret.is_none() {
        tracing::warn!(
            "no JWT_SECRET: every room is open to guests (?name=); set JWT_SECRET to require signed tokens"
        );
    }
    let worker_bin = worker_cmd::WorkerCmd::resolve(cfg.worker_bin.as_deref())?;
    tracing::info!(worker = %worker_bin, "rooms run as");
    let hostname = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    store::test_hooks::set_poison(cfg.test_poison.clone());
    let store = store::open(master_store_uri(&cfg), &cfg.data_dir)
        .await
        .context("cannot open the store")?;
    tracing::info!(store = store.kind(), "store opened");
    let webhook_cfg = webhook::WebhookConfig::from_flags(&cfg).context("webhooks")?;
    let (webhooks, webhook_delivery) = webhook::Webhooks::start(
        webhook_cfg,
        cfg.host.clone().unwrap_or_else(|| hostname.clone()),
    )
    .context("webhooks")?;
    let (room_bans, room_ban_orders) = room_bans::RoomBans::new();
    let (writer, writes) = writer::Writer::new();
    let writer = Arc::new(writer);
    let shutdown = CancellationToken::new();
    let supervisors = TaskTracker::new();
    let events = events::Events::new(supervisors.clone());
    let registry = Arc::new(Registry::new(&cfg));
    let socket = run_dir.socket();
    let supervisor = Arc::new(supervisor::Supervisor {
        registry: registry.clone(),
        events: events.clone(),
        store: store.clone(),
        writer: writer.clone(),
        tasks: supervisors,
        shutdown: shutdown.clone(),
        worker_bin,
        socket: socket.clone(),
        room_bind: cfg.room_bind,
        max_restarts: cfg.max_restarts,
        restart_window: cfg.restart_window,
        shutdown_grace: cfg.shutdown_grace,
        owners: owners::Owners::new(store.clone(), &cfg, &hostname),
    });
    let store_health = Arc::new(store::StoreHealth::new(store.kind()));
    let cache = Arc::new(cache::Cache::new(
        store.clone(),
        store_health.clone(),
        registry.clone(),
    ));
    let writer_handles = writer::Handles {
        store: store.clone(),
        health: store_health.clone(),
        writer: writer.clone(),
        rooms: registry.clone(),
    };
    let host_name = cfg.host.clone().unwrap_or_else(|| hostname.clone());
    let users = match cfg.redis.clone() {
        None => Arc::new(users::Users::local(Arc::clone(&registry), host_name)),
        Some(url) => {
            let local = Arc::new(users::Local {
                index: Arc::default(),
                registry: Arc::clone(&registry),
                watches: Arc::default(),
                host: host_name.clone(),
            });
            let redis = users::redis::Redis::start(
                users::redis::Config {
                    url,
                    id: format!("{host_name}:{}", cfg.port),
                    name: host_name,
                    ttl: cfg.presence_ttl,
                },
                Arc::clone(&local),
                &TaskTracker::new(),
                shutdown.clone(),
            )
            .context("--redis")?;
            let mut users = users::Users::new(
                Arc::clone(&local.index),
                Arc::clone(&local.watches),
                redis.clone(),
            );
            users.redis = Some(redis.health());
            Arc::new(users)
        }
    };
    // A DM stored for a recipient with no live connection: `dm.offline`.
    let offline_hooks = webhooks.clone();
    users.set_offline_hook(Box::new(move |m| {
        offline_hooks.dm_offline(webhook::DmOffline {
            to: m.to.clone(),
            from: m.from.clone(),
            conversation: m.conversation.clone(),
            seq: m.seq,
            text: m.text.clone(),
        })
    }));
    let master = Arc::new(Master {
        users,
        events,
        supervisor,
        store,
        store_health,
        cache,
        writer,
        registry,
        keys,
        socket,
        hostname,
        started: Instant::now(),
        started_at: chrono::Utc::now(),
        api_stop: shutdown.child_token(),
        restart: CancellationToken::new(),
        shutdown,
        log,
        metrics: metrics::Metrics::install().map_err(anyhow::Error::msg)?,
        lbs: cfg
            .load_balancers
            .iter()
            .map(|u| Arc::new(lb::LoadBalancer::new(u)))
            .collect(),
        webhooks,
        room_bans,
        cfg,
    });

    let ipc = ipc_server::bind(&master)
        .with_context(|| format!("cannot bind {}", master.socket.display()))?;

    // Subscribed before any room can start.
    tokio::spawn(catalog::follow(
        master.supervisor.clone(),
        master.events.subscribe(),
    ));
    tokio::spawn(metrics::follow(master.events.subscribe()));
    tokio::spawn(webhook::follow(
        master.webhooks.clone(),
        master.events.subscribe(),
    ));
    let background = TaskTracker::new();
    background.spawn(store_init(
        master.store.clone(),
        master.store_health.clone(),
        master.shutdown.clone(),
    ));
    background.spawn(cache::run(
        master.cache.clone(),
        master.cfg.cache_refresh,
        master.shutdown.clone(),
    ));
    background.spawn(room_bans::run(master.clone(), room_ban_orders));
    // Load-balancer heartbeats start once running rooms are adopted (and the
    // catalog's others respawned), not with a count of 0 after a restart.
    let adopted = CancellationToken::new();
    {
        let (sup, adopted) = (master.supervisor.clone(), adopted.clone());
        background.spawn(async move {
            catalog::reconcile(sup).await;
            adopted.cancel();
        });
    }
    background.spawn(catalog::renew_leases(master.supervisor.clone()));
    let writer_task = tokio::spawn(writer::run(writer_handles, writes));
    background.close();

    let servers = TaskTracker::new();
    servers.spawn(ipc_server::serve(master.clone(), ipc));
    serve_api(
        &servers,
        &master,
        main_listener,
        http::main_api::router(master.clone()),
        "room API",
        master.cfg.max_api_connections,
    );
    serve_api(
        &servers,
        &master,
        admin_listener,
        http::admin_api::router(master.clone()),
        "admin API",
        master.cfg.max_admin_connections,
    );
    servers.close();
    let heartbeats = TaskTracker::new();
    start_heartbeats(&master, &heartbeats, &adopted)?;
    heartbeats.close();

    run_dir
        .write_info(&MasterInfo {
            pid,
            port: main_bound.port(),
            admin_port: admin_bound.port(),
            admin_url: rundir::local_url(admin_bound),
            api_url: rundir::local_url(main_bound),
            version: chat_shared::VERSION,
        })
        .context("cannot write master.json")?;
    tracing::info!(main_addr = %main_bound, admin_addr = %admin_bound, rooms = %format!("{}-{}", master.cfg.room_ports.0, master.cfg.room_ports.1), "chatserver ready");

    let stop = wait_for_stop(&master).await;
    // Stop answering first (in-flight requests finish), in both cases.
    master.api_stop.cancel();
    if stop == Stop::Restart {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), servers.wait()).await;
        // Queued webhook events get a short while; the new image starts empty.
        if let Some(w) = webhook_delivery {
            w.drain(tokio::time::Instant::now() + std::time::Duration::from_secs(2))
                .await;
        }
        run_dir.cleanup();
        drop(run_dir); // releases the lock for the new image
        return restart::exec_self((main_bound.port(), admin_bound.port()));
    }
    tracing::info!("shutting down");
    let grace_end = tokio::time::Instant::now() + master.cfg.shutdown_grace;
    master.shutdown.cancel();
    supervisor::shutdown_all(&master.supervisor).await;
    // The rooms' `room.closed` are queued by now (an event holds the
    // supervisors' tracker until every subscriber took it): delivered
    // within what is left of the grace period (at least a second).
    if let Some(w) = webhook_delivery {
        let deadline =
            grace_end.max(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
        w.drain(deadline).await;
    }
    // Rooms are gone; what they handed over is written before we stop.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while master.writer.pending() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if master.writer.pending() > 0 {
        tracing::error!(
            pending = master.writer.pending(),
            "stopping with messages not written to the store"
        );
    }
    writer_task.abort();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), servers.wait()).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), heartbeats.wait()).await;
    run_dir.cleanup();
    tracing::info!("stopped");
    Ok(())
}

fn master_store_uri(cfg: &Config) -> Option<&str> {
    cfg.store.as_deref()
}

/// Prepares the store (collections, indexes), retrying until it answers.
async fn store_init(
    store: Arc<dyn store::Store>,
    health: Arc<store::StoreHealth>,
    shutdown: CancellationToken,
) {
    let mut backoff = std::time::Duration::from_millis(200);
    loop {
        match store.init().await {
            Ok(()) => {
                health.initialized();
                return;
            }
            Err(e) => tracing::warn!(error = %e, "the store is not reachable yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Serves an API until the APIs stop (shutdown or restart), with the
/// listener's caps and timeouts (`chat_shared::listener`).
fn serve_api(
    tasks: &TaskTracker,
    master: &state::Shared,
    listener: TcpListener,
    app: axum::Router,
    what: &'static str,
    cap: usize,
) {
    let stop = master.api_stop.clone();
    let limits = chat_shared::listener::ListenerLimits::api(what, &master.cfg.limits(), cap);
    tasks.spawn(chat_shared::listener::serve(listener, app, limits, stop));
}

/// One heartbeat task per load balancer.
fn start_heartbeats(
    master: &state::Shared,
    tasks: &TaskTracker,
    adopted: &CancellationToken,
) -> anyhow::Result<()> {
    if master.lbs.is_empty() {
        return Ok(());
    }
    let key = master
        .cfg
        .lb_key
        .clone()
        .context("LOADBALANCERS is set but LOADBALANCER_KEY is not")?;
    let host = master
        .cfg
        .host
        .clone()
        .unwrap_or_else(|| format!("http://{}", master.hostname));
    let reg = lb::Registration {
        name: lb::host_name(&host, master.cfg.port),
        key,
        version: master.cfg.lb_version.clone(),
        every: master.cfg.lb_interval,
    };
    let http = lb::client(master.cfg.lb_ca.as_deref())?;
    let me = lb::Host {
        load: master.registry.clone(),
        accepting: master.registry.watch_accepting(),
        shutdown: master.shutdown.clone(),
    };
    for l in &master.lbs {
        tracing::info!(lb = %l.url, %host, version = %reg.version, "registering with the load balancer once rooms are adopted");
        tasks.spawn(lb::run_one(
            me.clone(),
            http.clone(),
            l.clone(),
            reg.clone(),
            adopted.clone(),
        ));
    }
    Ok(())
}

/// Why the master stops.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// Shut everything down, rooms included.
    Shutdown,
    /// Re-execute this binary (an upgrade): rooms keep running and are
    /// adopted by the new image.
    Restart,
}

async fn wait_for_stop(master: &Master) -> Stop {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with DELETE /api/v1/shutdown");
        master.shutdown.cancelled().await;
        return Stop::Shutdown;
    };
    tokio::select! {
        _ = term.recv() => { tracing::info!("SIGTERM"); Stop::Shutdown }
        _ = int.recv() => { tracing::info!("SIGINT"); Stop::Shutdown }
        _ = hup.recv() => { tracing::info!("SIGHUP: restarting the master; rooms keep running"); Stop::Restart }
        _ = master.restart.cancelled() => { tracing::info!("restart asked by an operator; rooms keep running"); Stop::Restart }
        _ = master.shutdown.cancelled() => Stop::Shutdown,
    }
}
