//! A debug-build-only way for integration tests to make a record fail
//! permanently, which neither backend does for anything a client can send.
//!
//! `CHATSERVER_TEST_POISON=<text>`: both backends refuse every message whose
//! text contains `<text>` as invalid. Release builds ignore the variable.

use std::sync::OnceLock;

use super::{MessageRecord, StoreError};

/// The environment variable (read once).
pub const POISON_VAR: &str = "CHATSERVER_TEST_POISON";

fn poison() -> Option<&'static str> {
    static POISON: OnceLock<Option<String>> = OnceLock::new();
    POISON
        .get_or_init(|| {
            if !cfg!(debug_assertions) {
                return None;
            }
            std::env::var(POISON_VAR).ok().filter(|p| !p.is_empty())
        })
        .as_deref()
}

/// `Err(Invalid)` for a message the test hook poisons.
pub fn check(m: &MessageRecord) -> Result<(), StoreError> {
    match poison() {
        Some(p) if m.text.contains(p) => Err(StoreError::Invalid {
            what: "message",
            reason: format!("refused by {POISON_VAR} (room {}, seq {})", m.room, m.seq),
        }),
        _ => Ok(()),
    }
}
