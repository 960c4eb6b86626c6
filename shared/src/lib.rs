//! What the chatserver master (`chatserver`) and its room workers (`chatroom`)
//! both need, and nothing else:
//!
//! - [`ipc`]: the messages exchanged over the master's local socket;
//! - [`chunks`]: large IPC payloads split into frames that fit;
//! - [`framing`]: length-delimited postcard frames carrying them;
//! - [`settings`]: room settings, validated where rooms are created;
//! - [`room_name`]: the rule for room names;
//! - [`protocol`]: the client WebSocket protocol's close codes and error codes.

pub mod chunks;
pub mod framing;
pub mod ipc;
pub mod protocol;
pub mod room_name;
pub mod settings;

/// Version of the whole product, reported by both APIs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
