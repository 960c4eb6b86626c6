//! The browser pages: the chat page on the room API's port and the operator
//! dashboard on the admin port, plain HTML, CSS and JavaScript embedded in
//! the binary (master/web/), and the public room lookup the chat page uses.
//!
//! Pages are served with a strict Content-Security-Policy (scripts and
//! styles from this origin only, no inline code), `nosniff`, no referrer,
//! and `Cache-Control: no-cache` with a content hash as `ETag`, so a browser
//! revalidates cheaply and never runs a page and a script of two versions.

use std::sync::OnceLock;

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

/// A table of files with their ETags (a hash of each body), computed once.
struct Site {
    assets: &'static [Asset],
    etags: OnceLock<Vec<String>>,
}

impl Site {
    const fn new(assets: &'static [Asset]) -> Self {
        Site {
            assets,
            etags: OnceLock::new(),
        }
    }

    /// A file and its ETag.
    fn find(&self, name: &str) -> Option<(&'static Asset, &str)> {
        let i = self.assets.iter().position(|a| a.name == name)?;
        let etags = self
            .etags
            .get_or_init(|| self.assets.iter().map(|a| etag_of(a.body)).collect());
        Some((&self.assets[i], etags.get(i)?.as_str()))
    }
}

static CHAT_SITE: Site = Site::new(CHAT);
static ADMIN_SITE: Site = Site::new(ADMIN);

/// A strong ETag: the first 96 bits of the body's SHA-256.
fn etag_of(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

/// The chat page's routes (room API port, no key).
pub fn chat_routes() -> Vec<Route> {
    vec![
        route(
            "GET",
            "/",
            get(|h: HeaderMap| async move { serve(&CHAT_SITE, "index.html", &h) }),
        ),
        route(
            "GET",
            "/assets/{file}",
            get(
                |Path(file): Path<String>, h: HeaderMap| async move { serve(&CHAT_SITE, &file, &h) },
            ),
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
            get(|h: HeaderMap| async move { serve(&ADMIN_SITE, "index.html", &h) }),
        ),
        route(
            "GET",
            "/assets/{file}",
            get(
                |Path(file): Path<String>, h: HeaderMap| async move { serve(&ADMIN_SITE, &file, &h) },
            ),
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
    if res.headers().get(header::CONTENT_TYPE).is_none()
        && (res.status().is_client_error() || res.status().is_server_error())
    {
        // axum's own refusals (405) are JSON here too, as on the APIs.
        let status = res.status();
        let allow = res.headers().get(header::ALLOW).cloned();
        res = message(status, status.canonical_reason().unwrap_or("Error"));
        if let Some(allow) = allow {
            res.headers_mut().insert(header::ALLOW, allow);
        }
    }
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
fn serve(site: &Site, name: &str, headers: &HeaderMap) -> Response {
    let Some((asset, tag)) = site.find(name) else {
        return message(StatusCode::NOT_FOUND, "Not found");
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn get(site: &Site, name: &str, etag: Option<&str>) -> Response {
        let mut h = HeaderMap::new();
        if let Some(t) = etag {
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(t).unwrap());
        }
        serve(site, name, &h)
    }

    #[test]
    fn every_page_file_is_served_with_its_type_and_etag() {
        for site in [&CHAT_SITE, &ADMIN_SITE] {
            for a in site.assets {
                let r = get(site, a.name, None);
                assert_eq!(r.status(), StatusCode::OK, "{}", a.name);
                assert_eq!(r.headers()[header::CONTENT_TYPE], a.content_type);
                assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
                let tag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
                assert_eq!(tag, etag_of(a.body));
                // The browser's copy is current: 304, no body.
                let again = get(site, a.name, Some(&format!("\"x\", {tag}")));
                assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{}", a.name);
                // An old copy: the file again.
                assert_eq!(get(site, a.name, Some("\"old\"")).status(), StatusCode::OK);
            }
        }
    }

    #[test]
    fn unknown_files_are_404_and_the_pages_do_not_share_scripts() {
        assert_eq!(
            get(&CHAT_SITE, "../Cargo.toml", None).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&CHAT_SITE, "admin.js", None).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            get(&ADMIN_SITE, "chat.js", None).status(),
            StatusCode::NOT_FOUND
        );
    }

    /// Whether some ` onxxx=` attribute is in the text.
    fn has_event_attribute(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name = rest.len()
                - rest
                    .trim_start_matches(|c: char| c.is_ascii_lowercase())
                    .len();
            name > 0 && rest[name..].starts_with('=')
        })
    }

    #[test]
    fn the_pages_load_nothing_from_elsewhere_and_run_no_inline_code() {
        for site in [&CHAT_SITE, &ADMIN_SITE] {
            for a in site.assets {
                let text = std::str::from_utf8(a.body).unwrap();
                if a.name != "icon.svg" {
                    // (the SVG names its XML namespace, loads nothing)
                    assert!(
                        !text.contains("http://") && !text.contains("https://"),
                        "{} names another origin",
                        a.name
                    );
                }
                if a.name.ends_with(".html") {
                    assert!(!text.contains("<script>"), "{}: an inline script", a.name);
                    assert!(!text.contains("style="), "{}: an inline style", a.name);
                    assert!(!has_event_attribute(text), "{}: an on… attribute", a.name);
                }
                if a.name.ends_with(".js") {
                    assert!(
                        !text.contains("innerHTML")
                            && !text.contains("insertAdjacentHTML")
                            && !text.contains("eval("),
                        "{}: HTML from strings",
                        a.name
                    );
                }
            }
        }
    }
}
