//! `POST /api/v1/users/{from}/dm/{to}` with `{"text": …}`: a direct message
//! sent on the platform's behalf (system notices, support replies). Checked
//! like a room's `dm` frame (user ids, text length; blocks → `403`), then
//! sent through `users::send` like every DM: answered once stored, with its
//! conversation and seq; delivered live to both users' connections; the
//! `dm.offline` webhook when the recipient has none.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chat_shared::settings::RoomSettings;
use serde::Deserialize;
use serde_json::json;

use super::data;
use super::params::{Refusal, bad, path, unavailable, user_id};
use crate::state::Shared;
use crate::store::NewDm;
use crate::users::send::{SendError, send};

/// The body: the text only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DmBody {
    text: String,
}

pub async fn send_dm(
    State(master): State<Shared>,
    ids: Result<Path<(String, String)>, PathRejection>,
    body: Bytes,
) -> Response {
    run(&master, ids, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn run(
    master: &Shared,
    ids: Result<Path<(String, String)>, PathRejection>,
    body: &[u8],
) -> Result<Response, Refusal> {
    let (from, to) = path(ids)?;
    user_id("from", &from)?;
    user_id("to", &to)?;
    if from == to {
        return Err(bad("a direct message needs another user"));
    }
    let text = text_of(body)?;
    let new = NewDm {
        from_name: profile_name(master, &from),
        from: from.clone(),
        to: to.clone(),
        text,
        ts: crate::registry::now_ms(),
    };
    let sent = send(&master.users, &*master.store, new, None, |_| {});
    match tokio::time::timeout(super::params::STORE_TIMEOUT, sent).await {
        Ok(Ok(m)) => Ok(data(
            StatusCode::OK,
            json!({"conversation": m.conversation, "seq": m.seq, "ts": m.ts}),
        )),
        Ok(Err(SendError::Blocked { .. })) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("{to:?} does not accept direct messages from {from:?}"),
        )),
        Ok(Err(SendError::Store(e))) => {
            tracing::warn!(user = %from, to = %to, error = %e, "a direct message from the room API failed in the store");
            Err(unavailable(
                "the store failed; nothing was sent; retry later",
            ))
        }
        Err(_) => {
            tracing::warn!(user = %from, to = %to, "a direct message from the room API timed out in the store");
            Err(unavailable(
                "the store did not answer in time; the message may be stored; retry later",
            ))
        }
    }
}

/// The body's text, checked as a room checks a `dm`'s (not empty, at most
/// the default room's `max_text_len` characters).
fn text_of(body: &[u8]) -> Result<String, Refusal> {
    if body.is_empty() {
        return Err(bad(r#"the body must be JSON: {"text": "…"}"#));
    }
    let b: DmBody = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            r#"the body must be JSON {{"text": "…"}} and nothing else: {e}"#
        ))
    })?;
    if b.text.trim().is_empty() {
        return Err(bad("text is empty"));
    }
    let max = RoomSettings::default().max_text_len as usize;
    if b.text.chars().count() > max {
        return Err(bad(format!("text is longer than {max} characters")));
    }
    Ok(b.text)
}

/// The sender's display name: the platform's profile when it has one
/// (as in rooms, where a profile wins over the token), else the id.
fn profile_name(master: &Shared, user: &str) -> String {
    master
        .cache
        .reference()
        .users
        .iter()
        .find(|(id, _)| id == user)
        .map_or_else(|| user.to_owned(), |(_, name)| name.clone())
}

#[cfg(test)]
mod tests {
    use super::text_of;

    #[test]
    fn the_body_is_a_text_and_nothing_else() {
        assert_eq!(text_of(br#"{"text":"hi"}"#).ok().as_deref(), Some("hi"));
        for bad in [
            &b""[..],
            b"hi",
            b"[]",
            b"{}",
            br#"{"text":"  "}"#,
            br#"{"text":1}"#,
            br#"{"text":"hi","to":"x"}"#,
        ] {
            assert!(text_of(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(text_of(format!(r#"{{"text":"{}"}}"#, "é".repeat(4001)).as_bytes()).is_err());
        assert!(text_of(format!(r#"{{"text":"{}"}}"#, "é".repeat(4000)).as_bytes()).is_ok());
    }
}
