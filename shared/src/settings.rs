//! Room settings: carried in the optional JSON body of `POST /api/v1/room/{name}`,
//! validated by the master, enforced by the worker.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How a room's port speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoomMode {
    /// The chat protocol of docs/PROTOCOL.md.
    #[default]
    Chat,
    /// The public websocket-shootout benchmark protocol, and nothing else.
    Shootout,
}

/// Settings of one room. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomSettings {
    /// Most distinct users at once; `None` means no limit.
    pub max_members: Option<u32>,
    /// Whether `?name=` guests may join when the server has a token secret.
    pub guests: bool,
    /// Messages sent in `welcome` (and kept at least in memory).
    pub history_size: u32,
    /// The room ends by itself this many seconds after it was created.
    pub time_limit_secs: Option<u64>,
    /// Minimum interval between two `say` of one user, in milliseconds (0: off).
    pub slow_mode_ms: u64,
    /// Longest `say`/`whisper` text, in characters.
    pub max_text_len: u32,
    /// Protocol spoken on the room's port.
    pub mode: RoomMode,
}

impl Default for RoomSettings {
    fn default() -> Self {
        Self {
            max_members: None,
            guests: false,
            history_size: 50,
            time_limit_secs: None,
            slow_mode_ms: 0,
            max_text_len: 4000,
            mode: RoomMode::Chat,
        }
    }
}

/// Limits of the settings' values.
pub const MAX_MEMBERS_LIMIT: u32 = 1_000_000;
pub const MAX_HISTORY_SIZE: u32 = 1000;
pub const MAX_TIME_LIMIT_SECS: u64 = 7 * 24 * 3600;
pub const MAX_SLOW_MODE_MS: u64 = 3_600_000;
/// 8000 characters of up to 4 bytes, JSON-escaped, fit the default 64 KiB frame.
pub const MAX_TEXT_LEN_LIMIT: u32 = 8000;

/// Why settings were refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{field} must be between {min} and {max}")]
    OutOfRange {
        field: &'static str,
        min: u64,
        max: u64,
    },
}

fn check(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), SettingsError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(SettingsError::OutOfRange { field, min, max })
    }
}

impl RoomSettings {
    /// Checks every value against its limits.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if let Some(m) = self.max_members {
            check("max_members", m.into(), 1, MAX_MEMBERS_LIMIT.into())?;
        }
        check(
            "history_size",
            self.history_size.into(),
            0,
            MAX_HISTORY_SIZE.into(),
        )?;
        if let Some(t) = self.time_limit_secs {
            check("time_limit_secs", t, 1, MAX_TIME_LIMIT_SECS)?;
        }
        check("slow_mode_ms", self.slow_mode_ms, 0, MAX_SLOW_MODE_MS)?;
        check(
            "max_text_len",
            self.max_text_len.into(),
            1,
            MAX_TEXT_LEN_LIMIT.into(),
        )?;
        Ok(())
    }

    /// Parses and validates a JSON body; an empty body means the defaults.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| invalid(&e))?;
        if !value.is_object() {
            return Err("invalid settings: the body must be a JSON object".into());
        }
        // From the bytes, not the `Value`: a `Value` keeps the last of two
        // fields of the same name, the struct refuses the duplicate (two
        // parsers must not read two different settings from one body).
        let s: Self = serde_json::from_slice(body).map_err(|e| invalid(&e))?;
        s.validate().map_err(|e| invalid(&e))?;
        Ok(s)
    }
}

/// Longest error message about settings, in characters: a body can name a
/// field of 60 KB, and an answer must not echo it.
const MAX_ERROR_CHARS: usize = 256;

/// "invalid settings: …", cut to [`MAX_ERROR_CHARS`].
fn invalid(e: &dyn std::fmt::Display) -> String {
    let full = format!("invalid settings: {e}");
    match full.char_indices().nth(MAX_ERROR_CHARS) {
        Some((i, _)) => format!("{}…", &full[..i]),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_field_is_refused() {
        let e = RoomSettings::from_json(br#"{"max_members": 5, "max_members": 6}"#).unwrap_err();
        assert!(e.contains("duplicate field"), "{e}");
    }

    #[test]
    fn errors_do_not_echo_long_input() {
        let body = format!("{{\"{}\":1}}", "K".repeat(60_000));
        let e = RoomSettings::from_json(body.as_bytes()).unwrap_err();
        assert!(e.chars().count() <= MAX_ERROR_CHARS + 1, "{}", e.len());
        assert!(e.starts_with("invalid settings: unknown field"), "{e}");
    }

    #[test]
    fn empty_body_is_default() {
        assert_eq!(
            RoomSettings::from_json(b"").unwrap(),
            RoomSettings::default()
        );
        assert_eq!(
            RoomSettings::from_json(b"{}").unwrap(),
            RoomSettings::default()
        );
    }

    #[test]
    fn refuses_unknown_and_bad_values() {
        assert!(
            RoomSettings::from_json(br#"{"nope":1}"#)
                .unwrap_err()
                .contains("nope")
        );
        assert!(
            RoomSettings::from_json(br#"{"max_members":0}"#)
                .unwrap_err()
                .contains("max_members")
        );
        assert!(RoomSettings::from_json(br#"{"history_size":-1}"#).is_err());
        assert!(RoomSettings::from_json(br#"{"guests":"yes"}"#).is_err());
        assert!(RoomSettings::from_json(b"[1]").is_err());
        let s = RoomSettings::from_json(br#"{"max_members":3,"guests":true,"mode":"shootout"}"#)
            .unwrap();
        assert_eq!(s.max_members, Some(3));
        assert_eq!(s.mode, RoomMode::Shootout);
    }
}
