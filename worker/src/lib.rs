//! `chatroom`: one chat room, spawned by the `chatserver` master.
//!
//! A library so that one executable can hold both roles: the `chatserver`
//! binary runs a room with `chatserver room --room ... --port ...` (what the
//! master spawns through `/proc/self/exe`), and the thin `chatroom` binary
//! (`main.rs`) runs the same code for operators who want a separate file.
//!
//! Start-up order: connect to the master's socket, say hello, pull the
//! snapshot (settings, server config, secrets), bind the room's port, tell the
//! master it is listening, then serve until told to stop or the time limit.

mod announce;
mod bans;
mod caps;
mod commands;
mod confusables;
mod conn;
mod direct;
mod filters;
#[doc(hidden)]
pub mod fuzzing;
mod history;
mod identity;
mod limits;
mod master_link;
mod members;
mod moderation;
mod notices;
mod outbound;
mod outbox;
mod room;
mod server;
mod shootout;
mod state;
mod timers;
mod wire;

/// What the master's room API checks the same way a room does.
pub use direct::check_user_id;
pub use identity::GUEST_PREFIX;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chat_shared::ipc::{Hello, WorkerMsg};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::room::Room;
use crate::state::Worker;

/// Time allowed for clients to receive their close frames at the end.
const DRAIN: Duration = Duration::from_secs(3);

/// One chat room. Started by the master; not meant to be run by hand.
#[derive(Debug, Parser)]
#[command(name = "chatroom", version)]
struct Args {
    /// The room's name.
    #[arg(long)]
    room: String,
    /// The port to serve the room on.
    #[arg(long)]
    port: u16,
    /// The master's local socket.
    #[arg(long)]
    master_socket: PathBuf,
    /// Address to bind the room's port on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
}

/// Runs one room from its command line (`args` starts with the program
/// name, as `std::env::args_os` does). Builds its own current-thread
/// runtime: call it before any other runtime exists in the process.
pub fn run_from_args<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = Args::parse_from(args);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One thread per room: rooms are isolated by processes, and a room's work
    // is a single ordered stream anyway.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let span = tracing::info_span!("chatroom", room = %args.room, pid = std::process::id());
    let _enter = span.enter();
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let hello = Hello::new(args.room.clone(), std::process::id(), args.port);
    let (mut link, snapshot) = master_link::connect(&args.master_socket, &hello)
        .await
        .context("handshake with the master")?;
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            let _ = link
                .writer
                .send(&WorkerMsg::BindFailed {
                    port: args.port,
                    reason: e.to_string(),
                })
                .await;
            // The exit code tells the master too, whichever it sees first.
            tracing::warn!(%addr, error = %e, "cannot bind the room's port");
            std::process::exit(chat_shared::ipc::EXIT_PORT_TAKEN);
        }
    };
    // The master says where the history continues; a brand-new epoch
    // otherwise (it fits a JSON number exactly).
    let (epoch, seq) = snapshot
        .history
        .unwrap_or_else(|| ((rand::random::<u64>() >> 11).max(1), 0));
    let mut room = Room::new(
        snapshot.room.name.clone(),
        snapshot.room.settings.clone(),
        epoch,
        seq,
    );
    room.apply_reference(snapshot.reference.clone());
    room.load_recent(snapshot.recent);
    room.welcome_history_bytes = snapshot.server.limits.welcome_history_bytes as usize;
    let to_master = Arc::new(notices::Notices::default());
    room.to_master = Some(to_master.clone());
    let worker = Arc::new(Worker::new(
        args.port,
        snapshot.room.created_unix_ms,
        room,
        snapshot.server.clone(),
        to_master,
    ));
    link.writer
        .send(&WorkerMsg::Listening { port: args.port })
        .await
        .context("telling the master we listen")?;
    tracing::info!(port = args.port, "room listening");

    let link_task = tokio::spawn(master_link::run(
        worker.clone(),
        args.master_socket.clone(),
        link,
    ));
    tokio::spawn(timers::heartbeat(worker.clone()));
    tokio::spawn(timers::expire_queries(worker.clone()));
    tokio::spawn(timers::members_batches(worker.clone()));
    if let Some(limit) = snapshot.room.settings.time_limit_secs {
        tokio::spawn(timers::time_limit(
            worker.clone(),
            snapshot.room.created_unix_ms,
            limit,
        ));
    }
    tokio::spawn(signals(worker.clone()));

    let app = server::router(worker.clone());
    // Caps and timeouts of the room's port (no Nagle delay either: chat
    // frames are small and latency matters).
    let limits = chat_shared::listener::ListenerLimits::room_port(&snapshot.server.limits);
    chat_shared::listener::serve(listener, app, limits, worker.shutdown.clone()).await;

    worker.tracker.close();
    if tokio::time::timeout(DRAIN, worker.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some clients did not close in time");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), link_task).await;
    tracing::info!("room ended");
    Ok(())
}

/// SIGTERM or SIGINT end the room gracefully.
async fn signals(worker: Arc<Worker>) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = worker.shutdown.cancelled() => return,
    }
    worker.end("server shutting down");
}
