//! The room's port: `GET /` answers the room name as text (as the original
//! did), and WebSocket upgrades on `/` join the room.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chat_shared::client_ip::TrustedProxies;
use chat_shared::limits::{Limits, origin_allowed};
use chat_shared::protocol::close;
use chat_shared::settings::RoomMode;
use serde::Deserialize;

use crate::identity::{Policy, Refusal, identify};
use crate::room::Resume;
use crate::state::Worker;
use crate::wire::{NotUpgrade, Upgrade};

/// Bytes of a connection's read buffer: what an idle connection holds to
/// read with (a larger frame grows it to the frame's size while it is read).
const READ_BUFFER: usize = 512;

/// Query parameters of a join.
#[derive(Debug, Default, Deserialize)]
pub struct JoinQuery {
    pub token: Option<String>,
    pub name: Option<String>,
    pub since: Option<u64>,
    pub epoch: Option<u64>,
}

impl JoinQuery {
    /// Where a reconnecting client left off: `since` alone resumes in no
    /// epoch (0, never a room's), so the client gets a full welcome.
    pub fn resume(&self) -> Option<Resume> {
        match (self.since, self.epoch) {
            (Some(since), Some(epoch)) => Some(Resume { since, epoch }),
            (Some(since), None) => Some(Resume { since, epoch: 0 }),
            _ => None,
        }
    }
}

pub fn router(worker: Arc<Worker>) -> Router {
    Router::new().route("/", get(root)).with_state(worker)
}

async fn root(
    State(worker): State<Arc<Worker>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ws: Result<Upgrade, NotUpgrade>,
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
    let limits = &config.limits;
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !origin_allowed(&limits.allowed_origins, origin) {
        tracing::info!(room = %worker.name, origin = ?origin.map(|o| o.chars().take(100).collect::<String>()), "WebSocket refused: origin not allowed");
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    let max = config.max_frame_bytes as usize;
    let ws = ws.limits(max, READ_BUFFER);
    let mode = worker.room().settings.mode;
    if mode == RoomMode::Shootout {
        let tracker = worker.tracker.clone();
        return ws
            .on_upgrade(move |socket, config| {
                tracker.track_future(crate::shootout::serve(socket, config, worker))
            })
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
            let resume = q.resume();
            (who, resume)
        }
    };
    // Caps per room, user and address; the permit lives as long as the
    // connection.
    let (who, permit) = match who {
        Ok(id) => {
            let (ip, forwarded) = peer
                .map(|axum::Extension(ConnectInfo(p))| client_ip(limits, &headers, p.ip()))
                .unwrap_or((None, false));
            match worker.caps.admit(limits, &id.id, ip, forwarded) {
                Ok(permit) => (Ok(id), Some(permit)),
                Err(refusal) => {
                    tracing::info!(room = %worker.name, user = %id.id, reason = %refusal.reason, "join refused over a cap");
                    (Err(refusal), None)
                }
            }
        }
        Err(r) => (Err(r), None),
    };
    let tracker = worker.tracker.clone();
    ws.on_upgrade(move |socket, config| {
        tracker.track_future(async move {
            crate::conn::serve(socket, config, worker, who, resume).await;
            drop(permit);
        })
    })
    .into_response()
}

/// The client's address for per-address caps: `None` when it is a trusted
/// proxy that did not say whom it carries (it is not one client); and
/// whether it came from a trusted proxy's `X-Forwarded-For`.
fn client_ip(limits: &Limits, headers: &HeaderMap, peer: IpAddr) -> (Option<IpAddr>, bool) {
    let proxies = TrustedProxies::parse(&limits.trusted_proxies).unwrap_or_default();
    let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let ip = proxies.client_ip(peer, xff);
    let forwarded = ip != chat_shared::client_ip::canonical(peer);
    ((!proxies.trusts(ip)).then_some(ip), forwarded)
}
