//! The master's two HTTP APIs and what they share: JSON answers, the
//! `X-Whom` header, key checks done before any handler runs.

pub mod admin_api;
pub mod main_api;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use crate::keys;
use crate::state::Shared;

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
