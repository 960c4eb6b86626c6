//! `rooms`, `room`, `create`, `shutdown-room`.

use anyhow::{Result, bail};
use reqwest::Method;
use serde_json::{Map, Value};

use super::{Ctx, check_room_name, message, no_room};
use crate::table::{self, pairs, secs, text};

pub async fn rooms(ctx: &Ctx) -> Result<()> {
    let admin = ctx.admin()?;
    let d = admin
        .call(Method::GET, &["api", "v1", "rooms"], None)
        .await?;
    if ctx.print_json(&d) {
        return Ok(());
    }
    println!(
        "{}",
        table::rooms(d.as_array().map(Vec::as_slice).unwrap_or(&[]))
    );
    Ok(())
}

pub async fn room(ctx: &Ctx, name: &str) -> Result<()> {
    check_room_name(name)?;
    let admin = ctx.admin()?;
    let d = admin
        .call(Method::GET, &["api", "v1", "rooms", name], None)
        .await
        .map_err(no_room(name))?;
    if ctx.print_json(&d) {
        return Ok(());
    }
    let mut rows = vec![
        ("name", text(&d["name"])),
        ("status", text(&d["status"])),
        ("port", text(&d["port"])),
        ("pid", text(&d["pid"])),
        ("members", text(&d["members"])),
        ("connections", text(&d["connections"])),
        ("messages in", text(&d["messages_in"])),
        ("messages out", text(&d["messages_out"])),
        ("epoch", text(&d["epoch"])),
        ("seq", text(&d["seq"])),
        (
            "uptime",
            d["uptime_secs"]
                .as_u64()
                .map(secs)
                .unwrap_or_else(|| "-".into()),
        ),
        ("created", text(&d["created"])),
    ];
    let settings: Vec<(String, String)> = d["settings"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (format!("  {k}"), text(v))).collect())
        .unwrap_or_default();
    if !settings.is_empty() {
        rows.push(("settings", String::new()));
    }
    let mut all: Vec<(&str, String)> = rows;
    for (k, v) in &settings {
        all.push((k.as_str(), v.clone()));
    }
    println!("{}", pairs(&all));
    Ok(())
}

/// `KEY=VALUE` pairs as a JSON object; values are JSON when they parse.
pub fn parse_settings(raw: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for s in raw {
        let Some((k, v)) = s.split_once('=') else {
            bail!("invalid --setting {s:?}: expected KEY=VALUE");
        };
        let k = k.trim();
        if k.is_empty() {
            bail!("invalid --setting {s:?}: empty KEY");
        }
        let value =
            serde_json::from_str::<Value>(v.trim()).unwrap_or_else(|_| Value::String(v.to_owned()));
        out.insert(k.to_owned(), value);
    }
    Ok(out)
}

pub async fn create(ctx: &Ctx, name: &str, settings: &[String]) -> Result<()> {
    check_room_name(name)?;
    let body = Value::Object(parse_settings(settings)?);
    let api = ctx.room_api()?;
    let d = api
        .call(Method::POST, &["api", "v1", "room", name], Some(&body))
        .await?;
    let port = d["port"].as_u64().unwrap_or(0);
    let msg = message(&d).unwrap_or("").to_owned();
    if !ctx.print_json(&d) && port != 0 {
        println!("room {name}: port {port} ({msg})");
    }
    if port == 0 {
        if msg.is_empty() {
            bail!("room {name} was not created (port 0)");
        }
        bail!("room {name} was not created: {msg}");
    }
    Ok(())
}

pub async fn shutdown_room(ctx: &Ctx, name: &str) -> Result<()> {
    check_room_name(name)?;
    let admin = ctx.admin()?;
    // The master answers 200 for unknown rooms too: ask first.
    admin
        .call(Method::GET, &["api", "v1", "rooms", name], None)
        .await
        .map_err(no_room(name))?;
    let d = admin
        .call(
            Method::DELETE,
            &["api", "v1", "room", name, "shutdown"],
            None,
        )
        .await
        .map_err(no_room(name))?;
    if !ctx.print_json(&d) {
        println!("room {name}: {}", message(&d).unwrap_or("done"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings() {
        let m = parse_settings(&[
            "max_members=5".into(),
            "guests=true".into(),
            "mode=chat".into(),
            "time_limit_secs=null".into(),
            "note=a=b".into(),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"max_members":5,"guests":true,"mode":"chat","time_limit_secs":null,"note":"a=b"})
        );
        assert!(parse_settings(&["nope".into()]).is_err());
        assert!(parse_settings(&["=1".into()]).is_err());
    }
}
