//! The admin API (default port 8090, loopback by default).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use chat_shared::ipc::MasterMsg;
use serde::Deserialize;
use serde_json::json;

use super::{
    ADMIN_API_DOC, Guard, Route, assemble, data, list_rooms, message, openapi, room_info, route,
    web,
};
use crate::load::load;
use crate::state::Shared;
use crate::supervisor::shutdown_room;

/// Routes that need the admin key.
fn keyed() -> Vec<Route> {
    vec![
        route("GET", "/api/v1/", get(app_info)),
        route("GET", "/api/v1", get(app_info)),
        route("GET", "/api/v1/load", get(get_load)),
        route("GET", "/api/v1/rooms", get(list_rooms)),
        route("GET", "/api/v1/rooms/{name}", get(room_info)),
        route(
            "DELETE",
            "/api/v1/room/{name}/shutdown",
            delete(shutdown_one),
        ),
        route("DELETE", "/api/v1/shutdown", delete(shutdown_all)),
        route("POST", "/api/v1/restart", post(restart_master)),
        route("POST", "/api/v1/broadcast", post(broadcast_all)),
        route(
            "POST",
            "/api/v1/rooms/{name}/broadcast",
            post(broadcast_one),
        ),
        route("POST", "/api/v1/rooms/{name}/kick", post(kick)),
        route("POST", "/api/v1/rooms/{name}/restart", post(restart_one)),
        route("POST", "/api/v1/drain", post(drain)),
        route("POST", "/api/v1/resume", post(resume)),
        route("PUT", "/api/v1/log-level", put(log_level)),
        route("GET", "/api/v1/log-level", get(get_log_level)),
        route("POST", "/api/v1/bans", post(add_ban)),
        route("GET", "/api/v1/bans", get(list_bans)),
        route("DELETE", "/api/v1/bans/{user}", delete(remove_bans)),
        route("PUT", "/api/v1/users/{id}", put(put_user)),
        route("DELETE", "/api/v1/users/{id}", delete(remove_user)),
        route("POST", "/api/v1/filters", post(add_filter)),
        route("GET", "/api/v1/filters", get(list_filters)),
        route("DELETE", "/api/v1/filters/{pattern}", delete(remove_filter)),
        route("GET", "/api/v1/cache", get(cache_info)),
        route("POST", "/api/v1/cache/refresh", post(cache_refresh)),
    ]
}

/// Routes open without a key (the admin API binds loopback by default).
fn open() -> Vec<Route> {
    vec![
        route("GET", "/livez", get(livez)),
        route("GET", "/readyz", get(readyz)),
        route("GET", "/metrics", get(metrics)),
        route("GET", "/api/v1/openapi.json", openapi(ADMIN_API_DOC)),
    ]
}

/// Every route of this API.
#[cfg(test)]
pub fn routes() -> Vec<Route> {
    keyed()
        .into_iter()
        .chain(open())
        .chain(web::admin_routes())
        .collect()
}

pub fn router(master: Shared) -> Router {
    assemble(master.clone(), open(), keyed(), Guard::Admin).merge(web::router(
        master,
        web::admin_routes(),
        true,
    ))
}

async fn app_info() -> Response {
    data(
        StatusCode::OK,
        json!({"app": "Admin chatserver", "version": chat_shared::VERSION}),
    )
}

async fn livez() -> Response {
    data(StatusCode::OK, json!({"status": "alive"}))
}

async fn readyz(State(master): State<Shared>) -> Response {
    let (status, mut body) = if !master.registry.accepting() || master.shutdown.is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "draining"}),
        )
    } else if !master.store_ever_reached() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "store not reached yet"}),
        )
    } else {
        (StatusCode::OK, json!({"status": "ready"}))
    };
    // Redis out of reach degrades only live delivery across hosts: shown,
    // not a reason to take the host out of the pool.
    if let Some(redis) = &master.users.redis {
        body["redis"] = redis.details();
    }
    data(status, body)
}

async fn metrics(State(master): State<Shared>) -> Response {
    let cache = master.cache.info();
    let host = crate::metrics::HostGauges {
        uptime_secs: master.started.elapsed().as_secs_f64(),
        cache_version: cache.version,
        cache_age_secs: cache.age_secs,
        pending_writes: master.writer.pending(),
        store_up: master.store_ever_reached(),
    };
    let body = master.metrics.render(&master.registry, &host);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn get_load(State(master): State<Shared>) -> Response {
    data(StatusCode::OK, load(&master))
}

async fn shutdown_one(State(master): State<Shared>, Path(name): Path<String>) -> Response {
    match master.registry.get(&name) {
        Some(r) if shutdown_room(&r, "room shut down by an operator") => {
            tracing::info!(room = %name, "room shutdown asked by an operator");
            data(
                StatusCode::ACCEPTED,
                json!({"name": name, "message": "Shutting down"}),
            )
        }
        _ => data(
            StatusCode::OK,
            json!({"name": name, "message": "Either shutdown already or doesn't exist"}),
        ),
    }
}

async fn shutdown_all(State(master): State<Shared>) -> Response {
    tracing::info!("server shutdown asked by an operator");
    master.shutdown.cancel();
    data(StatusCode::ACCEPTED, json!({"message": "Shutting down"}))
}

async fn restart_one(State(master): State<Shared>, Path(name): Path<String>) -> Response {
    match master.registry.get(&name) {
        Some(r) if crate::supervisor::restart_room(&r) => {
            tracing::info!(room = %name, "room restart asked by an operator");
            data(
                StatusCode::ACCEPTED,
                json!({"name": name, "message": "Restarting"}),
            )
        }
        Some(r) => message(
            StatusCode::CONFLICT,
            format!(
                "room {name} is {}; only a ready room can be restarted",
                r.state().label()
            ),
        ),
        None => message(StatusCode::NOT_FOUND, format!("no room {name}")),
    }
}

async fn restart_master(State(master): State<Shared>) -> Response {
    tracing::info!("master restart asked by an operator");
    master.restart.cancel();
    data(
        StatusCode::ACCEPTED,
        json!({"message": "Restarting the master; rooms keep running"}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextBody {
    text: String,
}

/// Parses a JSON body; the error is the message of a 400 answer.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    // serde would also fill a struct from an array: only objects are bodies.
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))?;
    if !value.is_object() {
        return Err("invalid body: a JSON object is expected".into());
    }
    serde_json::from_value(value).map_err(|e| format!("invalid body: {e}"))
}

fn check_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() || text.chars().count() > 4000 {
        return Err("text must have 1 to 4000 characters".into());
    }
    Ok(())
}

async fn broadcast_all(State(master): State<Shared>, body: Bytes) -> Response {
    let b: TextBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return message(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = check_text(&b.text) {
        return message(StatusCode::BAD_REQUEST, e);
    }
    let mut sent = 0;
    for r in master.registry.all() {
        if r.send(MasterMsg::Notice {
            text: b.text.clone(),
        }) {
            sent += 1;
        }
    }
    data(
        StatusCode::OK,
        json!({"rooms": sent, "message": "Broadcast sent"}),
    )
}

async fn broadcast_one(
    State(master): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let b: TextBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return message(StatusCode::BAD_REQUEST, e),
    };
    if let Err(e) = check_text(&b.text) {
        return message(StatusCode::BAD_REQUEST, e);
    }
    match master.registry.get(&name) {
        Some(r) if r.send(MasterMsg::Notice { text: b.text }) => data(
            StatusCode::OK,
            json!({"name": name, "message": "Broadcast sent"}),
        ),
        Some(_) => message(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("room {name} is not linked"),
        ),
        None => message(StatusCode::NOT_FOUND, format!("no room {name}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KickBody {
    user: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn kick(State(master): State<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    let b: KickBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return message(StatusCode::BAD_REQUEST, e),
    };
    if b.user.trim().is_empty() || b.user.chars().count() > 256 {
        return message(
            StatusCode::BAD_REQUEST,
            "user must have 1 to 256 characters",
        );
    }
    if b.reason.as_ref().is_some_and(|r| r.chars().count() > 200) {
        return message(
            StatusCode::BAD_REQUEST,
            "reason must have at most 200 characters",
        );
    }
    let reason = b.reason.unwrap_or_else(|| "removed by an operator".into());
    match master.registry.get(&name) {
        Some(r)
            if r.send(MasterMsg::Kick {
                user: b.user.clone(),
                reason,
            }) =>
        {
            data(
                StatusCode::OK,
                json!({"name": name, "user": b.user, "message": "Kicked"}),
            )
        }
        Some(_) => message(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("room {name} is not linked"),
        ),
        None => message(StatusCode::NOT_FOUND, format!("no room {name}")),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    #[serde(default)]
    connections: bool,
}

async fn drain(State(master): State<Shared>, body: Bytes) -> Response {
    let b: DrainBody = if body.iter().all(u8::is_ascii_whitespace) {
        DrainBody::default()
    } else {
        match parse(&body) {
            Ok(b) => b,
            Err(e) => return message(StatusCode::BAD_REQUEST, e),
        }
    };
    if master.registry.set_accepting(false, b.connections) {
        master.push_snapshots();
    }
    tracing::info!(connections = b.connections, "draining");
    data(
        StatusCode::OK,
        json!({"acceptingConnections": false, "refusingJoins": b.connections, "rooms": master.registry.len()}),
    )
}

async fn resume(State(master): State<Shared>) -> Response {
    if master.registry.set_accepting(true, false) {
        master.push_snapshots();
    }
    tracing::info!("accepting rooms again");
    data(StatusCode::OK, json!({"acceptingConnections": true}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    user: String,
    #[serde(default)]
    room: Option<String>,
    /// RFC 3339 time or Unix milliseconds; absent: forever.
    #[serde(default)]
    until: Option<serde_json::Value>,
    #[serde(default)]
    reason: Option<String>,
}

fn parse_until(v: &serde_json::Value) -> Result<u64, String> {
    if let Some(ms) = v.as_u64() {
        return Ok(ms);
    }
    let s = v
        .as_str()
        .ok_or("until must be an RFC 3339 time or Unix milliseconds")?;
    let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|e| format!("invalid until: {e}"))?;
    u64::try_from(t.timestamp_millis()).map_err(|_| "until is before 1970".to_owned())
}

async fn add_ban(State(master): State<Shared>, body: Bytes) -> Response {
    let b: BanBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return message(StatusCode::BAD_REQUEST, e),
    };
    let user = b.user.trim().to_owned();
    if user.is_empty() || user.chars().count() > 256 {
        return message(
            StatusCode::BAD_REQUEST,
            "user must have 1 to 256 characters",
        );
    }
    if let Some(room) = &b.room
        && let Err(e) = chat_shared::room_name::validate(room)
    {
        return message(StatusCode::BAD_REQUEST, e.to_string());
    }
    let until_ms = match b.until.as_ref().map(parse_until).transpose() {
        Ok(Some(u)) if u <= crate::registry::now_ms() => {
            return message(StatusCode::BAD_REQUEST, "until is in the past");
        }
        Ok(u) => u,
        Err(e) => return message(StatusCode::BAD_REQUEST, e),
    };
    let ban = crate::store::BanRecord {
        user_id: user,
        room: b.room,
        until_ms,
        reason: b.reason,
    };
    if let Err(e) = master.store.add_ban(&ban).await {
        tracing::warn!(error = %e, "cannot store a ban");
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unavailable; the ban was not recorded",
        );
    }
    tracing::info!(user = %ban.user_id, room = ?ban.room, "ban added by an operator");
    let version = master.cache.refresh().await.ok();
    data(
        StatusCode::CREATED,
        json!({"user": ban.user_id, "room": ban.room, "until_ms": ban.until_ms, "reason": ban.reason, "cache_version": version}),
    )
}

async fn list_bans(State(master): State<Shared>) -> Response {
    data(StatusCode::OK, &master.cache.reference().bans)
}

/// `?room=NAME`: lift only the ban of that room.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanScope {
    #[serde(default)]
    room: Option<String>,
}

async fn remove_bans(
    State(master): State<Shared>,
    Path(user): Path<String>,
    scope: Result<Query<BanScope>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let room = match scope {
        Ok(Query(s)) => s.room,
        Err(e) => return message(StatusCode::BAD_REQUEST, format!("invalid query: {e}")),
    };
    if let Some(room) = &room
        && let Err(e) = chat_shared::room_name::validate(room)
    {
        return message(StatusCode::BAD_REQUEST, e.to_string());
    }
    let removed = match &room {
        Some(r) => master.store.remove_ban(&user, Some(r)).await,
        None => master.store.remove_bans(&user).await,
    };
    match removed {
        Ok(removed) => {
            tracing::info!(%user, room = ?room, removed, "bans lifted by an operator");
            let version = master.cache.refresh().await.ok();
            data(
                StatusCode::OK,
                json!({"user": user, "room": room, "removed": removed, "cache_version": version}),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot remove bans");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is unavailable; nothing was removed",
            )
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserBody {
    name: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// Writes a user profile (the platform may also write `users` directly).
async fn put_user(State(master): State<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
    let b: UserBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return message(StatusCode::BAD_REQUEST, e),
    };
    let name = b.name.trim();
    if id.is_empty() || id.chars().count() > 256 || name.is_empty() || name.chars().count() > 64 {
        return message(
            StatusCode::BAD_REQUEST,
            "id must have 1 to 256 characters and name 1 to 64",
        );
    }
    let user = crate::store::UserRecord {
        id,
        name: name.to_owned(),
        roles: b.roles,
    };
    if let Err(e) = master.store.upsert_user(&user).await {
        tracing::warn!(error = %e, "cannot store a user");
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unavailable; the user was not recorded",
        );
    }
    let version = master.cache.refresh().await.ok();
    data(
        StatusCode::OK,
        json!({"id": user.id, "name": user.name, "roles": user.roles, "cache_version": version}),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterBody {
    pattern: String,
    action: String,
}

/// Adds a word filter (`mask` or `reject`).
async fn add_filter(State(master): State<Shared>, body: Bytes) -> Response {
    let b: FilterBody = match parse(&body) {
        Ok(b) => b,
        Err(e) => return message(StatusCode::BAD_REQUEST, e),
    };
    let Some(action) = crate::store::FilterAction::parse(&b.action) else {
        return message(
            StatusCode::BAD_REQUEST,
            "action must be \"mask\" or \"reject\"",
        );
    };
    let pattern = b.pattern.trim();
    if pattern.is_empty() || pattern.chars().count() > 256 {
        return message(
            StatusCode::BAD_REQUEST,
            "pattern must have 1 to 256 characters",
        );
    }
    let filter = crate::store::FilterRecord {
        pattern: pattern.to_owned(),
        action,
    };
    if let Err(e) = master.store.upsert_filter(&filter).await {
        tracing::warn!(error = %e, "cannot store a filter");
        return message(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unavailable; the filter was not recorded",
        );
    }
    let version = master.cache.refresh().await.ok();
    data(
        StatusCode::CREATED,
        json!({"pattern": filter.pattern, "action": action.as_str(), "cache_version": version}),
    )
}

/// Removes a word filter (the pattern percent-encoded in the path).
async fn remove_filter(State(master): State<Shared>, Path(pattern): Path<String>) -> Response {
    match master.store.remove_filter(&pattern).await {
        Ok(true) => {
            tracing::info!(%pattern, "filter removed by an operator");
            let version = master.cache.refresh().await.ok();
            data(
                StatusCode::OK,
                json!({"pattern": pattern, "removed": true, "cache_version": version}),
            )
        }
        Ok(false) => message(StatusCode::NOT_FOUND, format!("no filter {pattern:?}")),
        Err(e) => {
            tracing::warn!(error = %e, "cannot remove a filter");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is unavailable; nothing was removed",
            )
        }
    }
}

/// Removes a user profile (the user keeps the name of their token).
async fn remove_user(State(master): State<Shared>, Path(id): Path<String>) -> Response {
    match master.store.remove_user(&id).await {
        Ok(true) => {
            tracing::info!(user = %id, "user profile removed by an operator");
            let version = master.cache.refresh().await.ok();
            data(
                StatusCode::OK,
                json!({"id": id, "removed": true, "cache_version": version}),
            )
        }
        Ok(false) => message(StatusCode::NOT_FOUND, format!("no user {id:?}")),
        Err(e) => {
            tracing::warn!(error = %e, "cannot remove a user");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is unavailable; nothing was removed",
            )
        }
    }
}

async fn list_filters(State(master): State<Shared>) -> Response {
    data(StatusCode::OK, &master.cache.reference().filters)
}

async fn cache_info(State(master): State<Shared>) -> Response {
    data(StatusCode::OK, master.cache.info())
}

async fn cache_refresh(State(master): State<Shared>) -> Response {
    match master.cache.refresh().await {
        Ok(_) => data(StatusCode::OK, master.cache.info()),
        Err(_) => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is unavailable; the cache was not refreshed",
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLevel {
    filter: String,
}

async fn log_level(State(master): State<Shared>, body: Bytes) -> Response {
    let b: LogLevel = match parse(&body) {
        Ok(b) => b,
        Err(e) => return message(StatusCode::BAD_REQUEST, e),
    };
    match master.log.set(&b.filter) {
        Ok(()) => data(StatusCode::OK, json!({"filter": master.log.current()})),
        Err(e) => message(StatusCode::BAD_REQUEST, e),
    }
}

async fn get_log_level(State(master): State<Shared>) -> Response {
    data(StatusCode::OK, json!({"filter": master.log.current()}))
}
