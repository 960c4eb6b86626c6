//! The commands that talk to the master's HTTP APIs.

pub mod keys;
pub mod moderation;
pub mod reference;
pub mod rooms;
pub mod server;
pub mod status;
pub mod watch;

use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::Value;

use crate::api::{Api, ApiError, Which};
use crate::locate::Locator;

/// What every command gets.
pub struct Ctx {
    pub locator: Locator,
    pub json: bool,
    pub timeout: Duration,
}

impl Ctx {
    /// The admin API with the admin key.
    pub fn admin(&self) -> Result<Api> {
        let url = self.locator.admin_url()?;
        let key = self.locator.admin_key()?;
        Api::new(Which::Admin, url, key, self.timeout)
    }

    /// The room API with the room key.
    pub fn room_api(&self) -> Result<Api> {
        let url = self.locator.api_url()?;
        let key = self.locator.api_key()?;
        Api::new(Which::Room, url, key, self.timeout)
    }

    /// Prints `data` as JSON when `--json` was given; returns whether it did.
    pub fn print_json(&self, data: &Value) -> bool {
        if self.json {
            match serde_json::to_string_pretty(data) {
                Ok(s) => println!("{s}"),
                Err(_) => println!("{data}"),
            }
        }
        self.json
    }
}

/// Maps a 404 of a room route to "no room NAME".
pub fn no_room(name: &str) -> impl FnOnce(ApiError) -> anyhow::Error + '_ {
    move |e| match e {
        ApiError::NotFound { .. } => anyhow!("no room {name}"),
        e => e.into(),
    }
}

/// Checks a room name before it goes into a URL.
pub fn check_room_name(name: &str) -> Result<()> {
    chat_shared::room_name::validate(name).map_err(|e| anyhow!("invalid room name {name:?}: {e}"))
}

/// The `message` of an answer, if any.
pub fn message(data: &Value) -> Option<&str> {
    data.get("message").and_then(Value::as_str)
}
