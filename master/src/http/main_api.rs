//! The room API (default port 80), a drop-in for the original chatserver's.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use axum::routing::{get, post};
use chat_shared::room_name;
use chat_shared::settings::RoomSettings;
use serde_json::json;

use super::{common_headers, data, message, not_found, require_key};
use crate::state::Shared;
use crate::supervisor::{Created, create};

pub fn router(master: Shared) -> Router {
    let keyed = Router::new()
        .route("/api/v1/room/{name}", post(create_room).get(room_info))
        .route("/api/v1/rooms", get(list_rooms))
        .route_layer(from_fn_with_state(master.clone(), require_key));
    Router::new()
        .route("/api/v1/", get(app_info))
        .route("/api/v1", get(app_info))
        .merge(keyed)
        .fallback(not_found)
        .layer(from_fn_with_state(master.clone(), common_headers))
        .with_state(master)
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
    match create(&master, &name, settings).await {
        Created::New(port) => data(
            StatusCode::OK,
            json!({"port": port, "message": "Room created"}),
        ),
        Created::Exists(port) => data(
            StatusCode::OK,
            json!({"port": port, "message": format!("{name} already exists")}),
        ),
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

async fn room_info(State(master): State<Shared>, Path(name): Path<String>) -> Response {
    match master.registry.get(&name) {
        Some(r) => data(StatusCode::OK, r.info()),
        None => message(StatusCode::NOT_FOUND, format!("no room {name}")),
    }
}

async fn list_rooms(State(master): State<Shared>) -> Response {
    let rooms: Vec<_> = master.registry.all().iter().map(|r| r.info()).collect();
    data(StatusCode::OK, rooms)
}
