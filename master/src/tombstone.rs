//! A failed room's last word. When a room is given up (its restart budget is
//! exhausted), the master answers on the room's port for a short notice
//! period, so that reconnecting clients learn why instead of meeting a
//! refused connection: a `closing` frame, then a close frame 1011 with the
//! reason. After the notice the port is free (a new room that picks it
//! meanwhile just binds another one).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chat_shared::protocol::ServerMsg;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a failed room's port tells clients why.
pub const NOTICE: Duration = Duration::from_secs(10);
/// Close code: the server met a condition it could not recover from.
const INTERNAL_ERROR: u16 = 1011;

/// Serves the notice on `bind:port` (if it can be bound) for [`NOTICE`], or
/// until `stop`, as a task of `tasks`.
pub fn serve(
    tasks: &TaskTracker,
    bind: IpAddr,
    stop: &CancellationToken,
    port: u16,
    room: &str,
    reason: &str,
) {
    let addr = SocketAddr::new(bind, port);
    let reason = format!("room {room} failed: {reason}");
    let stop = stop.clone();
    tasks.spawn(async move {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(%addr, error = %e, "cannot serve a failed room's notice");
                return;
            }
        };
        let app = Router::new().route(
            "/",
            get(
                move |ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| {
                    let reason = reason.clone();
                    async move { answer(ws, reason) }
                },
            ),
        );
        let end = async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(NOTICE) => {}
            }
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(end).await {
            tracing::debug!(%addr, error = %e, "failed room notice ended");
        }
    });
}

fn answer(ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>, reason: String) -> Response {
    let Ok(ws) = ws else {
        return (StatusCode::GONE, reason).into_response();
    };
    ws.on_upgrade(move |mut socket| async move {
        let closing = serde_json::to_string(&ServerMsg::Closing {
            reason: reason.clone(),
            in_secs: None,
        })
        .unwrap_or_default();
        let mut cut = reason;
        while cut.len() > 123 {
            cut.pop();
        }
        let _ = socket.send(Message::Text(Utf8Bytes::from(closing))).await;
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code: INTERNAL_ERROR,
                reason: Utf8Bytes::from(cut),
            })))
            .await;
    })
    .into_response()
}
