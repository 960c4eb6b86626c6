//! Shared code of the fault-tolerance tests (`fault.rs`, `chaos.rs`,
//! `outbox.rs`, `ipc_version.rs`): an HTTP client that never reuses
//! connections (masters die under it), polling helpers for the admin API,
//! and the final check that no process is left. Masters are started, killed
//! and started again through the harness's [`Server`].

#![allow(dead_code)]

use std::time::{Duration, Instant};

use chat_tests::procs::{self, pid_alive};
use chat_tests::{Client, Server};
use serde_json::Value;

// ---- HTTP without connection reuse ----

/// The APIs of whatever master listens on `s`'s ports. Every request uses a
/// new connection, so a master that died under a pooled connection does not
/// fail the next request.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub port: u16,
    pub admin_port: u16,
    key: String,
    admin_key: String,
}

impl Api {
    pub fn new(s: &Server) -> Api {
        Api {
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap(),
            port: s.port,
            admin_port: s.admin_port,
            key: s.key.clone(),
            admin_key: s.admin_key.clone(),
        }
    }

    /// A request; `None` when no answer (connection refused, timeout...).
    pub async fn try_request(
        &self,
        method: reqwest::Method,
        admin: bool,
        path: &str,
        body: Option<&str>,
    ) -> Option<(u16, String, Value)> {
        let (port, key) = if admin {
            (self.admin_port, &self.admin_key)
        } else {
            (self.port, &self.key)
        };
        let mut req = self
            .http
            .request(method, format!("http://127.0.0.1:{port}{path}"))
            .header("X-API-Key", key);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_owned());
        }
        let res = req.send().await.ok()?;
        let status = res.status().as_u16();
        let text = res.text().await.ok()?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Some((status, text, json))
    }

    /// `GET` on the admin API; `None` unless it answered 200.
    pub async fn admin_get(&self, path: &str) -> Option<Value> {
        match self
            .try_request(reqwest::Method::GET, true, path, None)
            .await
        {
            Some((200, _, json)) => Some(json),
            _ => None,
        }
    }

    /// The admin API's room list.
    pub async fn rooms(&self) -> Option<Vec<Value>> {
        self.admin_get("/api/v1/rooms")
            .await
            .and_then(|v| v["data"].as_array().cloned())
    }

    /// One room of the admin API's list.
    pub async fn room(&self, name: &str) -> Option<Value> {
        self.rooms().await?.into_iter().find(|r| r["name"] == name)
    }

    /// The admin port's `/metrics` text.
    pub async fn metrics(&self) -> Option<String> {
        match self
            .try_request(reqwest::Method::GET, true, "/metrics", None)
            .await
        {
            Some((200, text, _)) => Some(text),
            _ => None,
        }
    }

    /// Creates a room on the room API; its port.
    pub async fn create_room(&self, name: &str) -> u16 {
        let (status, text, json) = self
            .try_request(
                reqwest::Method::POST,
                false,
                &format!("/api/v1/room/{name}"),
                None,
            )
            .await
            .unwrap_or_else(|| panic!("creating room {name}: no answer"));
        assert_eq!(status, 200, "creating room {name}: {text}");
        let port = json["data"]["port"].as_u64().unwrap_or(0);
        assert!(port > 0, "creating room {name}: {text}");
        port as u16
    }
}

/// Polls the admin API until room `name` satisfies `pred`; returns it.
pub async fn wait_room(
    api: &Api,
    name: &str,
    bound: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + bound;
    let mut last = None;
    loop {
        if let Some(r) = api.room(name).await {
            if pred(&r) {
                return r;
            }
            last = Some(r);
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {bound:?} waiting for room {name}: {what}; last seen: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A room's worker pid from an admin API room object.
pub fn pid_of(room: &Value) -> i32 {
    room["pid"].as_i64().unwrap_or(0) as i32
}

/// Whether `room` is ready with a live worker other than `old`.
pub fn restarted_from(room: &Value, old: i32) -> bool {
    let pid = pid_of(room);
    room["status"] == "ready" && pid > 0 && pid != old && pid_alive(pid)
}

/// Joins a room as a guest to prove it accepts WebSockets, then leaves.
pub async fn assert_accepts_join(port: u16, name: &str) {
    let mut c = Client::guest(port, name).await;
    assert_eq!(c.welcome["type"], "welcome");
    c.close().await;
}

/// A `Server`'s leftover check, polled for up to 10 s (workers may take a
/// moment to exit after their master).
pub async fn assert_no_leftovers(s: &mut Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = s.leftover_processes();
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            let described: Vec<String> = left
                .iter()
                .map(|p| {
                    let cmd = procs::cmdline_text(*p);
                    format!("{p}: {cmd}")
                })
                .collect();
            panic!("processes left after the test: {described:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Environment number with a default.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
