//! The master's two HTTP APIs and what they share: JSON answers, the
//! `X-Whom` header, key checks done before any handler runs.

pub mod admin_api;
pub mod main_api;
pub mod web;

mod dm_api;
mod history_api;
mod params;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use serde::Serialize;
use serde_json::json;

use crate::keys;
use crate::state::Shared;

/// One route of an API. The routers are built from these tables, and the
/// OpenAPI documents are checked against the same tables, so every route
/// the server answers is documented.
pub struct Route {
    /// Read by the documentation check.
    #[cfg_attr(not(test), allow(dead_code))]
    pub method: &'static str,
    pub path: &'static str,
    pub handler: MethodRouter<Shared>,
}

pub fn route(method: &'static str, path: &'static str, handler: MethodRouter<Shared>) -> Route {
    Route {
        method,
        path,
        handler,
    }
}

/// A router holding the routes of a table.
pub fn build(routes: Vec<Route>) -> Router<Shared> {
    routes
        .into_iter()
        .fold(Router::new(), |r, x| r.route(x.path, x.handler))
}

/// Which key guards an API's keyed routes.
#[derive(Debug, Clone, Copy)]
pub enum Guard {
    Room,
    Admin,
}

/// An API: its open routes, its keyed routes behind the key check (which
/// runs before any handler), JSON answers with `X-Whom`, a JSON 404.
pub fn assemble(master: Shared, open: Vec<Route>, keyed: Vec<Route>, guard: Guard) -> Router {
    let keyed = match guard {
        Guard::Room => build(keyed).route_layer(from_fn_with_state(master.clone(), require_key)),
        Guard::Admin => {
            build(keyed).route_layer(from_fn_with_state(master.clone(), require_admin_key))
        }
    };
    build(open)
        .merge(keyed)
        .fallback(not_found)
        .layer(from_fn_with_state(master.clone(), common_headers))
        .with_state(master)
}

/// `GET …/rooms`: every room (both APIs).
pub async fn list_rooms(State(master): State<Shared>) -> Response {
    let rooms: Vec<_> = master.registry.all().iter().map(|r| r.info()).collect();
    data(StatusCode::OK, rooms)
}

/// `GET …/room(s)/{name}`: one room (both APIs).
pub async fn room_info(State(master): State<Shared>, Path(name): Path<String>) -> Response {
    match master.registry.get(&name) {
        Some(r) => data(StatusCode::OK, r.info()),
        None => message(StatusCode::NOT_FOUND, format!("no room {name}")),
    }
}

/// Serves an OpenAPI document.
pub fn openapi(doc: &'static str) -> MethodRouter<Shared> {
    axum::routing::get(move || async move {
        ([(header::CONTENT_TYPE, "application/json")], doc).into_response()
    })
}

/// The room API's OpenAPI document.
pub const ROOM_API_DOC: &str = include_str!("../../../docs/openapi/room-api.json");
/// The admin API's OpenAPI document.
pub const ADMIN_API_DOC: &str = include_str!("../../../docs/openapi/admin-api.json");

/// `{"data": ...}` with a status.
pub fn data<T: Serialize>(status: StatusCode, value: T) -> Response {
    (status, axum::Json(json!({ "data": value }))).into_response()
}

/// `{"message": ...}` with a status (errors).
pub fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "message": text.into() }))).into_response()
}

pub fn unauthorized() -> Response {
    message(StatusCode::UNAUTHORIZED, "Unauthorized")
}

pub async fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "Not found")
}

/// Adds `X-Whom: <hostname>` and makes every answer JSON.
pub async fn common_headers(State(master): State<Shared>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&master.hostname) {
        h.insert("x-whom", v);
    }
    let is_json = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/json") || v.starts_with("text/plain; version=0.0.4")
        });
    if !is_json {
        // axum's own rejections (e.g. 405) carry text; make them JSON.
        if res.status().is_client_error() || res.status().is_server_error() {
            let status = res.status();
            let reason = status.canonical_reason().unwrap_or("Error");
            let mut json = message(status, reason);
            if let Some(allow) = res.headers().get(header::ALLOW).cloned() {
                json.headers_mut().insert(header::ALLOW, allow);
            }
            if let Ok(v) = HeaderValue::from_str(&master.hostname) {
                json.headers_mut().insert("x-whom", v);
            }
            return json;
        }
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    res
}

fn presented_key(req: &Request) -> Option<&str> {
    req.headers().get("x-api-key").and_then(|v| v.to_str().ok())
}

/// Refuses requests without the room API key; the handler never runs.
pub async fn require_key(State(master): State<Shared>, req: Request, next: Next) -> Response {
    if keys::matches(presented_key(&req), &master.keys.key) {
        next.run(req).await
    } else {
        unauthorized()
    }
}

/// Refuses requests without the admin key; the handler never runs.
pub async fn require_admin_key(State(master): State<Shared>, req: Request, next: Next) -> Response {
    if keys::matches(presented_key(&req), &master.keys.admin_key) {
        next.run(req).await
    } else {
        unauthorized()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// (method, path) pairs of an OpenAPI document.
    fn documented(doc: &str) -> BTreeSet<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(doc).expect("the OpenAPI document is JSON");
        assert!(
            v["openapi"].as_str().is_some_and(|s| s.starts_with("3.")),
            "OpenAPI 3"
        );
        let mut set = BTreeSet::new();
        for (path, item) in v["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    set.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        set
    }

    fn served(routes: Vec<super::Route>) -> BTreeSet<(String, String)> {
        routes
            .into_iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect()
    }

    #[test]
    fn every_room_api_route_is_documented() {
        assert_eq!(
            served(super::main_api::routes()),
            documented(super::ROOM_API_DOC)
        );
    }

    #[test]
    fn every_admin_api_route_is_documented() {
        assert_eq!(
            served(super::admin_api::routes()),
            documented(super::ADMIN_API_DOC)
        );
    }
}
