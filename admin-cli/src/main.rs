//! `chatctl`: the command-line client of a chatserver master (admin API and
//! room API) and a terminal chat client for its rooms.

mod api;
mod commands;
mod join;
mod locate;
mod table;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::locate::{Given, Locator};

/// Parses `30s`, `15m`, `1h`, `2d`, `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected e.g. 30s, 15m, 1h, 2d)"))?;
    if d.is_zero() {
        return Err("must be more than zero".into());
    }
    Ok(d)
}

/// Command-line client of a chatserver master.
///
/// The server is found with --admin-url / --api-url, or from
/// `<run-dir>/master.json`; the keys with --key / --api-key, or from
/// `<run-dir>/keys.json` when the master generated them.
#[derive(Debug, Parser)]
#[command(name = "chatctl", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    /// HTTP timeout of each request (give it before the command).
    #[arg(long, env = "CHATCTL_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Base URL of the admin API (default: admin_url of <run-dir>/master.json).
    #[arg(long, env = "CHATCTL_ADMIN_URL", global = true)]
    admin_url: Option<String>,
    /// Base URL of the room API (default: http://127.0.0.1:<port of master.json>).
    #[arg(long, env = "CHATCTL_API_URL", global = true)]
    api_url: Option<String>,
    /// The master's run directory.
    #[arg(long, env = "RUN_DIR", default_value = "./run", global = true)]
    run_dir: PathBuf,
    /// Admin key (default: admin_key of <run-dir>/keys.json).
    #[arg(long, env = "ADMIN_KEY", hide_env_values = true, global = true)]
    key: Option<String>,
    /// Room API key (default: key of <run-dir>/keys.json).
    #[arg(long, env = "KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Print the raw JSON `data` instead of human output.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Summary of the server: rooms, capacity, load, memory, uptime.
    Status,
    /// Table of all rooms.
    Rooms,
    /// Details of one room.
    Room { name: String },
    /// Creates a room through the room API.
    Create {
        name: String,
        /// A room setting, KEY=VALUE (repeatable); VALUE is JSON when it
        /// parses (numbers, booleans, null), a string otherwise.
        #[arg(long = "setting", short = 's', value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Shuts one room down.
    ShutdownRoom { name: String },
    /// Sends a notice to every room, or to one.
    Broadcast {
        text: String,
        #[arg(long)]
        room: Option<String>,
    },
    /// Removes a user (by user id) from a room.
    Kick {
        room: String,
        user: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Bans a user (by user id) from one room or from all.
    Ban {
        user: String,
        #[arg(long)]
        room: Option<String>,
        /// Length of the ban (e.g. 1h, 2d); forever without it.
        #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
        duration: Option<Duration>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lifts a user's bans (every one, or only the one of --room).
    Unban {
        user: String,
        /// Lift only the ban of this room (e.g. one a moderator made).
        #[arg(long)]
        room: Option<String>,
    },
    /// Adds (or replaces) a word filter.
    AddFilter {
        /// A word, or `/a regex/`.
        pattern: String,
        #[arg(long, default_value = "mask", value_parser = ["mask", "reject"])]
        action: String,
    },
    /// Lists the word filters.
    Filters,
    /// Removes a word filter.
    RemoveFilter { pattern: String },
    /// Writes a user profile (a name that wins over the token's).
    SetUser {
        id: String,
        name: String,
        /// A role (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Removes a user profile.
    RemoveUser { id: String },
    /// Stops accepting new rooms (and with --connections, new joins).
    Drain {
        /// Refuse new joins to existing rooms too.
        #[arg(long)]
        connections: bool,
        /// Wait until no room has members.
        #[arg(long)]
        wait: bool,
        /// Bound of --wait.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Accepts new rooms and joins again.
    Resume,
    /// Shuts the whole server down.
    Shutdown {
        /// Wait until the admin API stops answering.
        #[arg(long)]
        wait: bool,
        /// Bound of --wait.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Mints a join token (HS256 JWT).
    Token(token::TokenArgs),
    /// Joins a room: an interactive (or scripted, from stdin) chat client.
    Join(join::JoinArgs),
    /// Shows the API keys (from <run-dir>/keys.json when the master
    /// generated them; the master never prints them).
    Keys,
    /// Re-renders the rooms table every interval until Ctrl-C.
    Watch {
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        interval: Duration,
    },
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let g = cli.global;
    let ctx = Ctx {
        locator: Locator::new(Given {
            admin_url: g.admin_url,
            api_url: g.api_url,
            run_dir: g.run_dir,
            key: g.key,
            api_key: g.api_key,
        }),
        json: g.json,
        timeout: cli.timeout,
    };
    use commands::*;
    match cli.command {
        Command::Status => status::status(&ctx).await,
        Command::Rooms => rooms::rooms(&ctx).await,
        Command::Room { name } => rooms::room(&ctx, &name).await,
        Command::Create { name, settings } => rooms::create(&ctx, &name, &settings).await,
        Command::ShutdownRoom { name } => rooms::shutdown_room(&ctx, &name).await,
        Command::Broadcast { text, room } => {
            moderation::broadcast(&ctx, &text, room.as_deref()).await
        }
        Command::Kick { room, user, reason } => {
            moderation::kick(&ctx, &room, &user, reason.as_deref()).await
        }
        Command::Ban {
            user,
            room,
            duration,
            reason,
        } => moderation::ban(&ctx, &user, room.as_deref(), duration, reason.as_deref()).await,
        Command::Unban { user, room } => moderation::unban(&ctx, &user, room.as_deref()).await,
        Command::AddFilter { pattern, action } => {
            reference::add_filter(&ctx, &pattern, &action).await
        }
        Command::Filters => reference::filters(&ctx).await,
        Command::RemoveFilter { pattern } => reference::remove_filter(&ctx, &pattern).await,
        Command::SetUser { id, name, roles } => reference::set_user(&ctx, &id, &name, &roles).await,
        Command::RemoveUser { id } => reference::remove_user(&ctx, &id).await,
        Command::Drain {
            connections,
            wait,
            timeout,
        } => server::drain(&ctx, connections, wait.then_some(timeout)).await,
        Command::Resume => server::resume(&ctx).await,
        Command::Shutdown { wait, timeout } => {
            server::shutdown(&ctx, wait.then_some(timeout)).await
        }
        Command::Token(args) => token::run(&ctx, &args),
        Command::Join(args) => join::run(&ctx, args).await,
        Command::Watch { interval } => watch::watch(&ctx, interval).await,
        Command::Keys => keys::keys(&ctx),
    }
}

/// Dies quietly of SIGPIPE when stdout is closed (`chatctl rooms | head`),
/// like other command-line tools, instead of panicking in `println!`.
fn default_sigpipe() {
    // SAFETY: called first thing in main, before any other thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    default_sigpipe();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // Do not wait for a blocked stdin reader (join) at exit.
    rt.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("chatctl: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
