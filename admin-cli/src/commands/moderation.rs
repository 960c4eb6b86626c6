//! `broadcast`, `kick`, `ban`, `unban`.

use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Ctx, check_room_name, message, no_room};
use crate::api::ApiError;

pub async fn broadcast(ctx: &Ctx, text: &str, room: Option<&str>) -> Result<()> {
    let admin = ctx.admin()?;
    let body = json!({ "text": text });
    let d = match room {
        Some(name) => {
            check_room_name(name)?;
            admin
                .call(
                    Method::POST,
                    &["api", "v1", "rooms", name, "broadcast"],
                    Some(&body),
                )
                .await
                .map_err(no_room(name))?
        }
        None => {
            admin
                .call(Method::POST, &["api", "v1", "broadcast"], Some(&body))
                .await?
        }
    };
    if ctx.print_json(&d) {
        return Ok(());
    }
    match (room, d["rooms"].as_u64()) {
        (Some(name), _) => println!("broadcast sent to room {name}"),
        (None, Some(1)) => println!("broadcast sent to 1 room"),
        (None, Some(n)) => println!("broadcast sent to {n} rooms"),
        (None, None) => println!("{}", message(&d).unwrap_or("broadcast sent")),
    }
    Ok(())
}

pub async fn kick(ctx: &Ctx, room: &str, user: &str, reason: Option<&str>) -> Result<()> {
    check_room_name(room)?;
    let admin = ctx.admin()?;
    let mut body = json!({ "user": user });
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    let d = admin
        .call(
            Method::POST,
            &["api", "v1", "rooms", room, "kick"],
            Some(&body),
        )
        .await
        .map_err(no_room(room))?;
    if !ctx.print_json(&d) {
        println!("kicked {user} from room {room}");
    }
    Ok(())
}

/// Ban routes may not exist on older masters.
fn bans_error(e: ApiError) -> anyhow::Error {
    match e {
        ApiError::NotFound {
            route_missing: true,
            ..
        }
        | ApiError::MethodNotAllowed { .. } => anyhow!("the server does not support bans"),
        ApiError::NotFound { message, .. } => anyhow!("{message}"),
        e => e.into(),
    }
}

/// The ban request's body.
pub fn ban_body(
    user: &str,
    room: Option<&str>,
    duration: Option<Duration>,
    reason: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Value> {
    let mut body = json!({ "user": user });
    if let Some(r) = room {
        body["room"] = json!(r);
    }
    if let Some(d) = duration {
        let d = chrono::Duration::from_std(d).context("ban duration is too long")?;
        let until = now
            .checked_add_signed(d)
            .context("ban duration is too long")?;
        body["until"] = json!(until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    if let Some(r) = reason {
        body["reason"] = json!(r);
    }
    Ok(body)
}

pub async fn ban(
    ctx: &Ctx,
    user: &str,
    room: Option<&str>,
    duration: Option<Duration>,
    reason: Option<&str>,
) -> Result<()> {
    if let Some(r) = room {
        check_room_name(r)?;
    }
    let body = ban_body(user, room, duration, reason, chrono::Utc::now())?;
    let admin = ctx.admin()?;
    let d = admin
        .call(Method::POST, &["api", "v1", "bans"], Some(&body))
        .await
        .map_err(bans_error)?;
    if ctx.print_json(&d) {
        return Ok(());
    }
    let scope = room
        .map(|r| format!("room {r}"))
        .unwrap_or_else(|| "all rooms".into());
    match body["until"].as_str() {
        Some(until) => println!("banned {user} from {scope} until {until}"),
        None => println!("banned {user} from {scope}"),
    }
    Ok(())
}

/// Lifts every ban of a user, or only the ban of one room.
pub async fn unban(ctx: &Ctx, user: &str, room: Option<&str>) -> Result<()> {
    if let Some(r) = room {
        check_room_name(r)?;
    }
    let admin = ctx.admin()?;
    let query: Vec<(&str, &str)> = room.map(|r| ("room", r)).into_iter().collect();
    let d = admin
        .call_query(Method::DELETE, &["api", "v1", "bans", user], &query, None)
        .await
        .map_err(bans_error)?;
    if ctx.print_json(&d) {
        return Ok(());
    }
    let removed = d["removed"].as_u64().unwrap_or(0);
    match (room, removed) {
        (Some(r), 0) => println!("{user} had no ban in room {r}"),
        (Some(r), _) => println!("unbanned {user} from room {r}"),
        (None, 0) => println!("{user} had no ban"),
        (None, _) => println!("unbanned {user}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_bodies() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let b = ban_body(
            "u1",
            Some("r"),
            Some(Duration::from_secs(3600)),
            Some("spam"),
            now,
        )
        .unwrap();
        assert_eq!(
            b,
            json!({"user":"u1","room":"r","until":"2026-01-01T01:00:00Z","reason":"spam"})
        );
        let b = ban_body("u1", None, None, None, now).unwrap();
        assert_eq!(b, json!({"user":"u1"}));
    }
}
