//! `chatctl watch`: the rooms table, re-rendered every interval.

use std::time::Duration;

use anyhow::Result;
use reqwest::Method;

use super::Ctx;
use crate::api::ApiError;
use crate::table;

/// Clears the screen and moves the cursor home.
const CLEAR: &str = "\x1b[2J\x1b[H";

pub async fn watch(ctx: &Ctx, interval: Duration) -> Result<()> {
    let admin = ctx.admin()?;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = tick.tick() => {}
        }
        let res = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            r = admin.call(Method::GET, &["api", "v1", "rooms"], None) => r,
        };
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        match res {
            Ok(rooms) if ctx.json => println!("{rooms}"),
            Ok(rooms) => {
                let list = rooms.as_array().map(Vec::as_slice).unwrap_or(&[]);
                print!(
                    "{CLEAR}{} · {now} · every {} (Ctrl-C to quit)\n\n{}\n",
                    admin.display_base(),
                    humantime::format_duration(interval),
                    table::rooms(list)
                );
            }
            // A refused key will not get better: stop.
            Err(e @ ApiError::Refused { .. }) => return Err(e.into()),
            Err(e) if ctx.json => eprintln!("chatctl: {e}"),
            Err(e) => print!("{CLEAR}{} · {now}\n\n{e}\n", admin.display_base()),
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
}
