//! Reference data the rooms enforce: word filters and user profiles
//! (`add-filter`, `filters`, `remove-filter`, `set-user`, `remove-user`).

use anyhow::{Result, anyhow};
use reqwest::Method;
use serde_json::{Value, json};

use super::Ctx;
use crate::api::ApiError;

/// A 404 of a removal: the route is missing (an older master) or the
/// thing is not there.
fn removal_error(what: &'static str) -> impl FnOnce(ApiError) -> anyhow::Error {
    move |e| match e {
        ApiError::NotFound {
            route_missing: true,
            ..
        }
        | ApiError::MethodNotAllowed { .. } => {
            anyhow!("the server cannot remove {what} (an older version)")
        }
        ApiError::NotFound { message, .. } => anyhow!("{message}"),
        e => e.into(),
    }
}

pub async fn add_filter(ctx: &Ctx, pattern: &str, action: &str) -> Result<()> {
    let d = ctx
        .admin()?
        .call(
            Method::POST,
            &["api", "v1", "filters"],
            Some(&json!({"pattern": pattern, "action": action})),
        )
        .await?;
    if !ctx.print_json(&d) {
        println!("filter {pattern:?} ({action}) added");
    }
    Ok(())
}

pub async fn filters(ctx: &Ctx) -> Result<()> {
    let d = ctx
        .admin()?
        .call(Method::GET, &["api", "v1", "filters"], None)
        .await?;
    if ctx.print_json(&d) {
        return Ok(());
    }
    let list = d.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no filters");
    }
    for f in list {
        let action = if f["reject"].as_bool() == Some(true) {
            "reject"
        } else {
            "mask"
        };
        println!("{}\t{action}", f["pattern"].as_str().unwrap_or("?"));
    }
    Ok(())
}

pub async fn remove_filter(ctx: &Ctx, pattern: &str) -> Result<()> {
    let d = ctx
        .admin()?
        .call(Method::DELETE, &["api", "v1", "filters", pattern], None)
        .await
        .map_err(removal_error("filters"))?;
    if !ctx.print_json(&d) {
        println!("filter {pattern:?} removed");
    }
    Ok(())
}

pub async fn set_user(ctx: &Ctx, id: &str, name: &str, roles: &[String]) -> Result<()> {
    let body: Value = json!({"name": name, "roles": roles});
    let d = ctx
        .admin()?
        .call(Method::PUT, &["api", "v1", "users", id], Some(&body))
        .await?;
    if !ctx.print_json(&d) {
        println!("user {id} is {name}");
    }
    Ok(())
}

pub async fn remove_user(ctx: &Ctx, id: &str) -> Result<()> {
    let d = ctx
        .admin()?
        .call(Method::DELETE, &["api", "v1", "users", id], None)
        .await
        .map_err(removal_error("user profiles"))?;
    if !ctx.print_json(&d) {
        println!("user profile {id} removed");
    }
    Ok(())
}
