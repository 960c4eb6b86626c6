//! The room's port: `GET /` answers the room name as text (as the original
//! did), and WebSocket upgrades on `/` join the room.

use std::sync::Arc;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chat_shared::protocol::close;
use chat_shared::settings::RoomMode;
use serde::Deserialize;

use crate::identity::{Policy, Refusal, identify};
use crate::room::Resume;
use crate::state::Worker;

/// Query parameters of a join.
#[derive(Debug, Default, Deserialize)]
pub struct JoinQuery {
    token: Option<String>,
    name: Option<String>,
    since: Option<u64>,
    epoch: Option<u64>,
}

pub fn router(worker: Arc<Worker>) -> Router {
    Router::new().route("/", get(root)).with_state(worker)
}

async fn root(
    State(worker): State<Arc<Worker>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    query: Result<Query<JoinQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            worker.name.clone(),
        )
            .into_response();
    };
    let config = worker.config();
    let max = config.max_frame_bytes as usize;
    let ws = ws
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024);
    let mode = worker.room().settings.mode;
    if mode == RoomMode::Shootout {
        let tracker = worker.tracker.clone();
        return ws
            .on_upgrade(move |socket| tracker.track_future(crate::shootout::serve(socket, worker)))
            .into_response();
    }
    let (who, resume) = match query {
        Err(e) => (
            Err(Refusal::new(
                close::BAD_REQUEST,
                format!("bad query: {}", e.body_text()),
            )),
            None,
        ),
        Ok(Query(q)) => {
            let guests = worker.room().settings.guests;
            let policy = Policy {
                room: &worker.name,
                secret: config.jwt_secret.as_deref(),
                guests,
            };
            let who = identify(&policy, q.token.as_deref(), q.name.as_deref());
            let resume = match (q.since, q.epoch) {
                (Some(since), Some(epoch)) => Some(Resume { since, epoch }),
                (Some(since), None) => Some(Resume { since, epoch: 0 }),
                _ => None,
            };
            (who, resume)
        }
    };
    let tracker = worker.tracker.clone();
    ws.on_upgrade(move |socket| {
        tracker.track_future(crate::conn::serve(socket, worker, who, resume))
    })
    .into_response()
}
