//! The browser pages: the chat page on the room API's port and the operator
//! dashboard on the admin port, plain HTML, CSS and JavaScript embedded in
//! the binary (master/web/), and the public room lookup the chat page uses.
//!
//! Pages are served with a strict Content-Security-Policy (scripts and
//! styles from this origin only, no inline code), `nosniff`, no referrer,
//! and `Cache-Control: no-cache` with a content hash as `ETag`, so a browser
//! revalidates cheaply and never runs a page and a script of two versions.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chat_shared::room_name;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{Route, build, data, message, route};
use crate::state::Shared;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The chat page's files: `index.html` at `/`, the others under `/assets/`.
static CHAT: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: HTML,
        body: include_bytes!("../../web/chat/index.html"),
    },
    Asset {
        name: "chat.js",
        content_type: JS,
        body: include_bytes!("../../web/chat/chat.js"),
    },
    Asset {
        name: "chat.css",
        content_type: CSS,
        body: include_bytes!("../../web/chat/chat.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: SVG,
        body: include_bytes!("../../web/icon.svg"),
    },
];

/// The dashboard's files.
static ADMIN: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: HTML,
        body: include_bytes!("../../web/admin/index.html"),
    },
    Asset {
        name: "admin.js",
        content_type: JS,
        body: include_bytes!("../../web/admin/admin.js"),
    },
    Asset {
        name: "admin.css",
        content_type: CSS,
        body: include_bytes!("../../web/admin/admin.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: SVG,
        body: include_bytes!("../../web/icon.svg"),
    },
];

/// The chat page connects to the rooms' own ports (or, behind a proxy, to
/// the public URL), so WebSocket connections may go to any host.
const CHAT_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";
/// The dashboard talks to its own origin only.
const ADMIN_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// ETags of both tables, computed once.
static ETAGS: LazyLock<Vec<(usize, String)>> = LazyLock::new(|| {
    CHAT.iter()
        .chain(ADMIN.iter())
        .map(|a| {
            let digest = Sha256::digest(a.body);
            (
                a.body.as_ptr() as usize,
                format!("\"{}\"", hex::encode(&digest[..12])),
            )
        })
        .collect()
});

fn etag(asset: &Asset) -> &'static str {
    let key = asset.body.as_ptr() as usize;
    ETAGS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("\"0\"")
}

/// The chat page's routes (room API port, no key).
pub fn chat_routes() -> Vec<Route> {
    vec![
        route(
            "GET",
            "/",
            get(|h: HeaderMap| async move { serve(CHAT, "index.html", &h) }),
        ),
        route(
            "GET",
            "/assets/{file}",
            get(|Path(file): Path<String>, h: HeaderMap| async move { serve(CHAT, &file, &h) }),
        ),
    ]
}

/// The dashboard's routes (admin port, no key: the page asks for it and
/// sends it only to the keyed admin routes).
pub fn admin_routes() -> Vec<Route> {
    vec![
        route(
            "GET",
            "/",
            get(|h: HeaderMap| async move { serve(ADMIN, "index.html", &h) }),
        ),
        route(
            "GET",
            "/assets/{file}",
            get(|Path(file): Path<String>, h: HeaderMap| async move { serve(ADMIN, &file, &h) }),
        ),
    ]
}

/// A router for page routes: their own headers (not the APIs' JSON ones).
pub fn router(master: Shared, routes: Vec<Route>, admin: bool) -> Router {
    let csp = if admin { ADMIN_CSP } else { CHAT_CSP };
    build(routes)
        .layer(from_fn_with_state(
            (master.clone(), csp),
            |State((master, csp)): State<(Shared, &'static str)>,
             req: Request,
             next: Next| async move { page_headers(&master, csp, req, next).await },
        ))
        .with_state(master)
}

async fn page_headers(master: &Shared, csp: &'static str, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&master.hostname) {
        h.insert("x-whom", v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// One file of a table, or 304 when the browser holds this version, or a
/// JSON 404.
fn serve(table: &'static [Asset], name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = table.iter().find(|a| a.name == name) else {
        return message(StatusCode::NOT_FOUND, "Not found");
    };
    let tag = etag(asset);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let common = [
        (header::CACHE_CONTROL, "no-cache"),
        (header::ETAG, tag),
        (header::CONTENT_TYPE, asset.content_type),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, common).into_response()
    } else {
        (StatusCode::OK, common, asset.body).into_response()
    }
}

/// `GET /api/v1/join/{name}` (room API, no key): where a browser joins a
/// room of this host: its port and, when a public URL is configured, the
/// WebSocket URL through the proxy. Nothing secret: the same facts a
/// WebSocket client must know anyway.
pub async fn join_info(State(master): State<Shared>, Path(name): Path<String>) -> Response {
    if let Err(e) = room_name::validate(&name) {
        return message(StatusCode::BAD_REQUEST, e.to_string());
    }
    let Some(room) = master.registry.get(&name) else {
        return message(StatusCode::NOT_FOUND, format!("no room {name}"));
    };
    let info = room.info();
    if matches!(info.status, "closed" | "failed") {
        return message(StatusCode::NOT_FOUND, format!("no room {name}"));
    }
    let mut body = json!({"name": name, "port": info.port, "status": info.status});
    if let Some(url) = master.cfg.room_url(info.port) {
        body["url"] = json!(url);
    }
    data(StatusCode::OK, body)
}
