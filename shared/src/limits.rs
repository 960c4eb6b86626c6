//! Limits against abuse that the master configures and hands to every room
//! in the snapshot's [`crate::ipc::ServerConfig`]. SECURITY.md lists them
//! with their flags.

use serde::{Deserialize, Serialize};

/// Limits of listeners and rooms. Times are milliseconds; a count of 0 turns
/// that cap off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// A connection must send a request's complete headers within this
    /// time, and an idle keep-alive connection waits at most this long for
    /// its next request (both APIs and room ports).
    pub header_timeout_ms: u64,
    /// A connection with no byte read or written for this long is closed
    /// (both APIs; room ports until the WebSocket upgrade).
    pub idle_timeout_ms: u64,
    /// A room-port connection must have become a WebSocket (or been
    /// answered) within this time.
    pub handshake_timeout_ms: u64,
    /// New connections one client address may open per second on one
    /// listener.
    pub new_conns_per_ip_per_sec: u32,
    /// Address blocks of proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<String>,
    /// Open connections of one room's port (HTTP and WebSocket).
    pub max_room_connections: u32,
    /// Open connections of one user to one room.
    pub max_user_connections: u32,
    /// Open connections from one client address to one room.
    pub max_ip_connections: u32,
    /// Bytes of history a `welcome` replays at most (besides the count).
    pub welcome_history_bytes: u32,
    /// Origins allowed to open WebSockets (`https://app.example.com`); empty:
    /// any origin (non-browser clients send none).
    pub allowed_origins: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            handshake_timeout_ms: 10_000,
            new_conns_per_ip_per_sec: 50,
            trusted_proxies: vec!["127.0.0.1".into(), "::1".into()],
            max_room_connections: 10_000,
            max_user_connections: 20,
            max_ip_connections: 200,
            welcome_history_bytes: 64 * 1024,
            allowed_origins: Vec::new(),
        }
    }
}

/// Longest `message` of an `error` frame, in characters: errors may quote
/// what the client sent, and must not echo kilobytes of it back.
pub const MAX_ERROR_MESSAGE_CHARS: usize = 256;

/// `message` cut to [`MAX_ERROR_MESSAGE_CHARS`] (with `…` when cut).
pub fn cap_error_message(message: String) -> String {
    match message.char_indices().nth(MAX_ERROR_MESSAGE_CHARS) {
        None => message,
        Some((at, _)) => {
            let mut cut = message;
            cut.truncate(at);
            cut.push('…');
            cut
        }
    }
}

/// Whether `origin` (the `Origin` header) may open a WebSocket. Requests
/// without the header are not from browsers and are allowed.
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(origin) = origin else {
        return true;
    };
    let origin = origin.trim().trim_end_matches('/');
    allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_capped() {
        assert_eq!(cap_error_message("short".into()), "short");
        let long = "é".repeat(10_000);
        let cut = cap_error_message(long);
        assert_eq!(cut.chars().count(), MAX_ERROR_MESSAGE_CHARS + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn origins() {
        let list = vec!["https://app.example.com".to_owned()];
        assert!(origin_allowed(&[], Some("https://evil.example")));
        assert!(origin_allowed(&list, None));
        assert!(origin_allowed(&list, Some("https://app.example.com")));
        assert!(origin_allowed(&list, Some("https://APP.example.com/")));
        assert!(!origin_allowed(&list, Some("https://evil.example")));
        assert!(!origin_allowed(&list, Some("null")));
    }
}
