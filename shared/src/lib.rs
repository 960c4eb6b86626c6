//! What the chatserver master (`chatserver`) and its room workers (`chatroom`)
//! both need, and nothing else:
//!
//! - [`ipc`]: the messages exchanged over the master's local socket;
//! - [`framing`]: length-delimited postcard frames carrying them;
//! - [`settings`]: room settings, validated where rooms are created;
//! - [`room_name`]: the rule for room names;
//! - [`protocol`]: the client WebSocket protocol's close codes and error codes;
//! - [`limits`]: limits against abuse, handed to rooms in the snapshot;
//! - [`client_ip`]: client addresses behind trusted proxies;
//! - `listener` (feature `listener`): the capped, timed accept loop.

pub mod client_ip;
pub mod framing;
pub mod ipc;
pub mod limits;
#[cfg(feature = "listener")]
pub mod listener;
pub mod protocol;
pub mod room_name;
pub mod settings;

/// Version of the whole product, reported by both APIs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
