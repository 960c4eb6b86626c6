//! Shared code of the edge tests (`nginx.rs`, `multihost.rs`): a tiny
//! recording HTTP server, a stand-in load balancer speaking the original
//! chatserver's protocol, a load balancer that never answers, TLS
//! certificates made with the openssl CLI, a real nginx rendered with
//! `nginx/render`, and a WebSocket client over TLS.
//!
//! Everything started here is stopped when its handle is dropped.

#![allow(dead_code)]

mod fake_lb;
mod http_stub;
mod nginx;
mod tools;
mod wss;

#[allow(unused_imports)]
pub use fake_lb::*;
#[allow(unused_imports)]
pub use http_stub::*;
#[allow(unused_imports)]
pub use nginx::*;
#[allow(unused_imports)]
pub use tools::*;
#[allow(unused_imports)]
pub use wss::*;
