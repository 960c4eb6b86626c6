//! The room API (default port 80), a drop-in for the original chatserver's.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chat_shared::room_name;
use chat_shared::settings::RoomSettings;
use serde_json::json;

use super::{
    Guard, ROOM_API_DOC, Route, assemble, data, list_rooms, message, openapi, room_info, route, web,
};
use crate::state::Shared;
use crate::supervisor::{Created, create};

/// Routes that need the room API key.
fn keyed() -> Vec<Route> {
    vec![
        route("POST", "/api/v1/room/{name}", post(create_room)),
        route("GET", "/api/v1/room/{name}", get(room_info)),
        route("GET", "/api/v1/rooms", get(list_rooms)),
        route("GET", "/api/v1/users/{id}/presence", get(presence)),
        route(
            "GET",
            "/api/v1/users/{id}/conversations",
            get(super::history_api::conversations),
        ),
        route(
            "GET",
            "/api/v1/conversations/{a}/{b}/messages",
            get(super::history_api::conversation_messages),
        ),
        route(
            "GET",
            "/api/v1/room/{name}/messages",
            get(super::history_api::room_messages),
        ),
        route(
            "POST",
            "/api/v1/users/{from}/dm/{to}",
            post(super::dm_api::send_dm),
        ),
    ]
}

/// Routes open without a key.
fn open() -> Vec<Route> {
    vec![
        route("GET", "/api/v1/", get(app_info)),
        route("GET", "/api/v1", get(app_info)),
        route("GET", "/api/v1/health", get(health)),
        route("GET", "/api/v1/openapi.json", openapi(ROOM_API_DOC)),
        route("GET", "/api/v1/join/{name}", get(super::web::join_info)),
    ]
}

/// Every route of this API.
#[cfg(test)]
pub fn routes() -> Vec<Route> {
    keyed()
        .into_iter()
        .chain(open())
        .chain(web::chat_routes())
        .collect()
}

pub fn router(master: Shared) -> Router {
    assemble(master.clone(), open(), keyed(), Guard::Room).merge(web::router(
        master,
        web::chat_routes(),
        false,
    ))
}

/// Whether a user is connected (on any host with Redis), in which rooms, and when they
/// were last seen.
async fn presence(State(master): State<Shared>, Path(id): Path<String>) -> Response {
    if id.is_empty()
        || id.len() > chat_shared::direct::MAX_USER_ID
        || id.chars().any(char::is_control)
    {
        let max = chat_shared::direct::MAX_USER_ID;
        return message(
            StatusCode::BAD_REQUEST,
            format!("bad user id: 1 to {max} bytes, no control characters"),
        );
    }
    let at = master.users.fanout.whereabouts(&id).await;
    let rooms: Vec<_> = at
        .places
        .iter()
        .map(|p| json!({"name": p.room, "host": p.host}))
        .collect();
    data(
        StatusCode::OK,
        json!({
            "online": at.online(),
            "rooms": rooms,
            "last_seen": at.presence(&id).last_seen,
        }),
    )
}

async fn app_info() -> Response {
    data(
        StatusCode::OK,
        json!({"app": "chatserver", "version": chat_shared::VERSION}),
    )
}

async fn create_room(
    State(master): State<Shared>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(e) = room_name::validate(&name) {
        return message(StatusCode::BAD_REQUEST, e.to_string());
    }
    let settings = match RoomSettings::from_json(&body) {
        Ok(s) => s,
        Err(e) => return message(StatusCode::BAD_REQUEST, e),
    };
    match create(&master.supervisor, &name, settings).await {
        Created::New(port) => created(&master, port, "Room created".into()),
        Created::Exists(port) => created(&master, port, format!("{name} already exists")),
        Created::Elsewhere(owner) => {
            let mut body = json!({
                "port": owner.port,
                "message": format!("{name} already exists"),
                "host": owner.host,
            });
            if let Some(url) = owner.url {
                body["url"] = json!(url);
            }
            data(StatusCode::OK, body)
        }
        Created::NoCapacity => data(
            StatusCode::OK,
            json!({"port": 0, "message": "No more rooms can be created"}),
        ),
        Created::Failed(reason) => {
            tracing::error!(room = %name, %reason, "room creation failed");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("room could not be created: {reason}"),
            )
        }
    }
}

/// The create answer: the original's `port` and `message`, plus `url` when
/// a public URL is configured.
fn created(master: &Shared, port: u16, msg: String) -> Response {
    let mut body = json!({"port": port, "message": msg});
    if let Some(url) = master.cfg.room_url(port) {
        body["url"] = json!(url);
    }
    data(StatusCode::OK, body)
}

/// Pull-style health for load balancers that poll: free slots, or 503
/// while draining.
async fn health(State(master): State<Shared>) -> Response {
    let rooms = master.registry.len();
    let capacity = master.registry.capacity();
    let accepting = master.registry.accepting() && !master.shutdown.is_cancelled();
    let body = json!({
        "status": if accepting { "ok" } else { "draining" },
        "freeSlots": if accepting { capacity.saturating_sub(rooms) } else { 0 },
        "rooms": rooms,
        "capacity": capacity,
        "version": chat_shared::VERSION,
    });
    let status = if accepting {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    data(status, body)
}
