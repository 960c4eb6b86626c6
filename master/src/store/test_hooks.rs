//! A debug-build-only way for integration tests to make a record fail
//! permanently, which neither backend does for anything a client can send.
//!
//! `--test-poison <text>` (a hidden flag): both backends refuse every
//! message whose text contains `<text>` as invalid. Release builds ignore it.

use std::sync::OnceLock;

use super::{MessageRecord, StoreError};

static POISON: OnceLock<String> = OnceLock::new();

/// Sets the poison text once, at start (debug builds only).
pub fn set_poison(text: Option<String>) {
    if let Some(t) = text.filter(|t| !t.is_empty()) {
        if cfg!(debug_assertions) {
            tracing::warn!(
                "test hook: the store refuses messages containing the --test-poison text"
            );
            let _ = POISON.set(t);
        } else {
            tracing::warn!("--test-poison is ignored by release builds");
        }
    }
}

fn poison() -> Option<&'static str> {
    POISON.get().map(String::as_str)
}

/// `Err(Invalid)` for a message the test hook poisons.
pub fn check(m: &MessageRecord) -> Result<(), StoreError> {
    match poison() {
        Some(p) if m.text.contains(p) => Err(StoreError::Invalid {
            what: "message",
            reason: format!("refused by --test-poison (room {}, seq {})", m.room, m.seq),
        }),
        _ => Ok(()),
    }
}
