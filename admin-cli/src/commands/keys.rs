//! `chatctl keys`: the operator's way to read generated keys (the master
//! writes them to `<run-dir>/keys.json`, owner-only, and prints nothing).

use anyhow::Result;
use serde_json::json;

use super::Ctx;

pub fn keys(ctx: &Ctx) -> Result<()> {
    let key = ctx.locator.api_key()?;
    let admin_key = ctx.locator.admin_key()?;
    if ctx.print_json(&json!({ "key": key, "admin_key": admin_key })) {
        return Ok(());
    }
    println!("KEY={key}");
    println!("ADMIN_KEY={admin_key}");
    Ok(())
}
