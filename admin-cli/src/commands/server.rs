//! `drain`, `resume`, `shutdown`.

use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Ctx;
use crate::api::ApiError;

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]") {
        pb.set_style(style);
    }
    pb.set_message(msg.to_owned());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Members and rooms in a `/api/v1/rooms` answer.
pub fn members_left(rooms: &Value) -> (u64, usize) {
    let list = rooms.as_array().map(Vec::as_slice).unwrap_or(&[]);
    let members = list.iter().filter_map(|r| r["members"].as_u64()).sum();
    let with_members = list
        .iter()
        .filter(|r| r["members"].as_u64().unwrap_or(0) > 0)
        .count();
    (members, with_members)
}

pub async fn drain(ctx: &Ctx, connections: bool, wait: Option<Duration>) -> Result<()> {
    let admin = ctx.admin()?;
    let d = admin
        .call(
            Method::POST,
            &["api", "v1", "drain"],
            Some(&json!({ "connections": connections })),
        )
        .await?;
    if !ctx.print_json(&d) {
        if connections {
            println!("draining: new rooms and new joins are refused");
        } else {
            println!("draining: new rooms are refused");
        }
    }
    let Some(bound) = wait else {
        return Ok(());
    };
    let deadline = Instant::now() + bound;
    let pb = spinner("waiting for rooms to empty");
    let mut last: Option<(u64, usize)> = None;
    // Rooms report their counts every 500 ms: an empty room must read empty
    // twice in a row (a member who just joined may not be counted yet).
    let mut empty_reads = 0;
    loop {
        match admin.call(Method::GET, &["api", "v1", "rooms"], None).await {
            Ok(rooms) => {
                let (members, rooms_busy) = members_left(&rooms);
                let no_rooms = rooms.as_array().is_none_or(Vec::is_empty);
                empty_reads = if members == 0 { empty_reads + 1 } else { 0 };
                if no_rooms || empty_reads >= 2 {
                    pb.finish_and_clear();
                    if !ctx.json {
                        println!("drained: no room has members");
                    }
                    return Ok(());
                }
                pb.set_message(format!("{members} members left in {rooms_busy} rooms"));
                last = Some((members, rooms_busy));
            }
            Err(e @ ApiError::Refused { .. }) => {
                pb.finish_and_clear();
                return Err(e.into());
            }
            Err(e) => pb.set_message(format!("{e}")),
        }
        if Instant::now() >= deadline {
            pb.finish_and_clear();
            let bound = humantime::format_duration(bound);
            match last {
                Some((m, r)) => bail!("timed out after {bound}: {m} members left in {r} rooms"),
                None => bail!("timed out after {bound} waiting for rooms to empty"),
            }
        }
        tokio::time::sleep(
            Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
    }
}

pub async fn resume(ctx: &Ctx) -> Result<()> {
    let admin = ctx.admin()?;
    let d = admin
        .call(Method::POST, &["api", "v1", "resume"], None)
        .await?;
    if !ctx.print_json(&d) {
        println!("accepting new rooms and joins again");
    }
    Ok(())
}

pub async fn shutdown(ctx: &Ctx, wait: Option<Duration>) -> Result<()> {
    let admin = ctx.admin()?;
    let d = admin
        .call(Method::DELETE, &["api", "v1", "shutdown"], None)
        .await?;
    if !ctx.print_json(&d) {
        println!("server shutting down");
    }
    let Some(bound) = wait else {
        return Ok(());
    };
    let deadline = Instant::now() + bound;
    let pb = spinner("waiting for the server to stop");
    loop {
        if !admin.answers().await {
            pb.finish_and_clear();
            if !ctx.json {
                println!("server stopped");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            pb.finish_and_clear();
            bail!(
                "the admin API at {} still answers after {}",
                admin.display_base(),
                humantime::format_duration(bound)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_members() {
        assert_eq!(members_left(&json!([])), (0, 0));
        assert_eq!(
            members_left(&json!([{"members":2},{"members":0},{"members":1}])),
            (3, 2)
        );
    }
}
