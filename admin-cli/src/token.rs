//! `chatctl token`: mints a join token (HS256 JWT) for a room.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use chat_shared::protocol::Role;
use clap::Args;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::json;

use crate::commands::Ctx;

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// User id (`sub`); may not start with `guest:`.
    #[arg(long)]
    pub user: String,
    /// Display name (default: the user id).
    #[arg(long)]
    pub name: Option<String>,
    /// Room the token is for, or `*` for every room.
    #[arg(long)]
    pub room: String,
    /// member, moderator or owner.
    #[arg(long, default_value = "member")]
    pub role: String,
    /// Lifetime of the token (e.g. 30s, 15m, 1h, 2d).
    #[arg(long, default_value = "1h", value_parser = crate::parse_duration)]
    pub ttl: Duration,
    /// The master's JWT_SECRET.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
}

/// Claims of a join token, as the rooms read them.
#[derive(Debug, Serialize)]
pub struct Claims {
    pub sub: String,
    pub name: String,
    pub room: String,
    pub role: Role,
    pub exp: u64,
}

fn parse_role(s: &str) -> Result<Role> {
    let role: Role = serde_json::from_value(json!(s.trim().to_ascii_lowercase()))
        .with_context(|| format!("unknown role {s:?} (member, moderator or owner)"))?;
    if role == Role::Guest {
        bail!("a token cannot have the guest role (member, moderator or owner)");
    }
    Ok(role)
}

/// Checks the arguments and builds the claims, `exp` = `now` + ttl.
pub fn claims(args: &TokenArgs, now_secs: u64) -> Result<Claims> {
    let sub = args.user.trim();
    if sub.is_empty() || sub.len() > 128 {
        bail!("--user must have 1 to 128 bytes");
    }
    if sub.starts_with("guest:") {
        bail!("--user may not start with \"guest:\"");
    }
    if args.room != "*" {
        chat_shared::room_name::validate(&args.room)
            .with_context(|| format!("invalid room name {:?}", args.room))?;
    }
    let name = args.name.as_deref().unwrap_or(sub).trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        bail!("--name must have 1 to 64 characters and no control characters");
    }
    Ok(Claims {
        sub: sub.to_owned(),
        name: name.to_owned(),
        room: args.room.clone(),
        role: parse_role(&args.role)?,
        exp: now_secs.saturating_add(args.ttl.as_secs().max(1)),
    })
}

/// Signs claims with HS256.
pub fn sign(claims: &Claims, secret: &str) -> Result<String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("cannot sign the token")
}

pub fn run(ctx: &Ctx, args: &TokenArgs) -> Result<()> {
    let Some(secret) = args.secret.as_deref().filter(|s| !s.is_empty()) else {
        bail!("no token secret: use --secret or JWT_SECRET (the master's JWT_SECRET)");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let claims = claims(args, now)?;
    let token = sign(&claims, secret)?;
    if ctx.json {
        println!("{}", json!({ "token": token, "claims": claims }));
    } else {
        println!("{token}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};

    fn args(role: &str) -> TokenArgs {
        TokenArgs {
            user: "u1".into(),
            name: Some("Ann".into()),
            room: "r1".into(),
            role: role.into(),
            ttl: Duration::from_secs(3600),
            secret: None,
        }
    }

    #[test]
    fn mints_and_verifies() {
        let c = claims(&args("Moderator"), 1000).unwrap();
        assert_eq!(c.exp, 4600);
        let t = sign(&c, "s3cret").unwrap();
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        let d = decode::<serde_json::Value>(&t, &DecodingKey::from_secret(b"s3cret"), &v).unwrap();
        assert_eq!(
            d.claims,
            json!({"sub":"u1","name":"Ann","room":"r1","role":"moderator","exp":4600})
        );
    }

    #[test]
    fn refuses_bad_arguments() {
        assert!(claims(&args("guest"), 0).is_err());
        assert!(claims(&args("king"), 0).is_err());
        let mut a = args("member");
        a.user = "guest:x".into();
        assert!(claims(&a, 0).is_err());
        let mut a = args("member");
        a.room = "bad room".into();
        assert!(claims(&a, 0).is_err());
        a.room = "*".into();
        assert!(claims(&a, 0).is_ok());
    }
}
