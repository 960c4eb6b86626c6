//! What the chatserver master (`chatserver`) and its room workers (`chatroom`)
//! both need, and nothing else:
//!
//! - [`ipc`]: the messages exchanged over the master's local socket;
//! - [`chunks`]: large IPC payloads split into frames that fit;
//! - [`reference`]: reference data keyed by user id, deltas applied in the
//!   time of their size;
//! - [`framing`]: length-delimited postcard frames carrying them;
//! - [`link`]: an IPC session's reader and writer tasks, heartbeats first;
//! - [`settings`]: room settings, validated where rooms are created;
//! - [`room_name`]: the rule for room names;
//! - [`protocol`]: the client WebSocket protocol's close codes and error codes;
//! - `procfs` (feature `procfs`): process and machine facts from `/proc`, for
//!   the master, the tests and the benchmarks;
//! - [`limits`]: limits against abuse, handed to rooms in the snapshot;
//! - [`client_ip`]: client addresses behind trusted proxies;
//! - [`direct`]: direct messages, blocks and read state over IPC;
//! - `listener` (feature `listener`): the capped, timed accept loop.

pub mod chunks;
pub mod client_ip;
pub mod direct;
pub mod framing;
pub mod ipc;
pub mod limits;
pub mod link;
#[cfg(feature = "listener")]
pub mod listener;
#[cfg(feature = "procfs")]
pub mod procfs;
pub mod protocol;
pub mod reference;
pub mod room_name;
pub mod settings;

/// Version of the whole product, reported by both APIs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
