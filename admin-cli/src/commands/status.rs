//! `chatctl status`: the admin API's `/api/v1/load`, readable.

use anyhow::Result;
use reqwest::Method;
use serde_json::Value;

use super::Ctx;
use crate::table::{bytes, iso_duration, pairs, text};

pub async fn status(ctx: &Ctx) -> Result<()> {
    let admin = ctx.admin()?;
    let d = admin
        .call(Method::GET, &["api", "v1", "load"], None)
        .await?;
    if ctx.print_json(&d) {
        return Ok(());
    }
    println!("{}", render(&d, &admin.display_base()));
    Ok(())
}

fn render(d: &Value, url: &str) -> String {
    let rooms = d["roomCount"]
        .as_u64()
        .map(|n| n.to_string())
        .unwrap_or_else(|| {
            let names = d["rooms"].as_str().unwrap_or("");
            names
                .split(',')
                .filter(|s| !s.is_empty())
                .count()
                .to_string()
        });
    let names = d["rooms"].as_str().unwrap_or("");
    let rooms_line = if names.is_empty() {
        format!("{rooms} of {}", text(&d["capacity"]))
    } else {
        format!("{rooms} of {} ({names})", text(&d["capacity"]))
    };
    let load = d["loadAvg"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    v.as_f64()
                        .map(|f| format!("{f:.2}"))
                        .unwrap_or_else(|| text(v))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "-".into());
    let cpus = text(&d["cpus"]);
    let memory = match (d["totalMemory"].as_u64(), d["freeMemory"].as_u64()) {
        (Some(total), Some(free)) => format!(
            "{} used of {} ({}%)",
            bytes(total.saturating_sub(free)),
            bytes(total),
            text(&d["percentage"])
        ),
        _ => "-".into(),
    };
    let uptime = match (d["upTime"].as_str(), d["startedAt"].as_str()) {
        (Some(u), Some(s)) => format!("{} (since {s})", iso_duration(u)),
        (Some(u), None) => iso_duration(u),
        _ => "-".into(),
    };
    pairs(&[
        ("server", url.to_owned()),
        ("version", text(&d["version"])),
        ("accepting", text(&d["acceptingConnections"])),
        ("rooms", rooms_line),
        ("load average", format!("{load} ({cpus} cpus)")),
        ("memory", memory),
        ("uptime", uptime),
        (
            "host uptime",
            d["osUpTime"]
                .as_str()
                .map(iso_duration)
                .unwrap_or_else(|| "-".into()),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_load() {
        let d = json!({"loadAvg":[0.5,0.25,0.125],"totalMemory":2147483648u64,"freeMemory":1073741824u64,
            "percentage":50.0,"cpus":2,"rooms":"a,b","roomCount":2,"capacity":10,"osUpTime":"PT1H0M0S",
            "upTime":"PT0H1M5S","startedAt":"2026-01-01T00:00:00+00:00","acceptingConnections":true,"version":"0.1.0"});
        let s = render(&d, "http://x");
        assert!(s.contains("2 of 10 (a,b)"), "{s}");
        assert!(s.contains("0.50 0.25 0.12"), "{s}");
        assert!(s.contains("1.0 GiB used of 2.0 GiB (50.0%)"), "{s}");
        assert!(s.contains("1m 5s"), "{s}");
        assert!(s.contains("accepting     yes"), "{s}");
    }
}
