//! The stand-in load balancer speaking the original chatserver's protocol,
//! a load balancer that never answers, and what a master tells of its load
//! balancers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::*;

/// What the load balancer knows of one host.
#[derive(Debug, Clone)]
pub struct HostRec {
    pub capacity: i64,
    pub rooms: i64,
    pub version: String,
    pub last_seen: Instant,
    pub beats: u64,
}

impl HostRec {
    pub fn free(&self) -> i64 {
        self.capacity - self.rooms
    }
}

#[derive(Default)]
struct LbBook {
    hosts: HashMap<String, HostRec>,
    /// Names removed by `DELETE /register/{name}`, in order.
    deleted: Vec<String>,
    /// Requests refused for a wrong key.
    refused: u64,
}

/// A stand-in of the original load balancer:
///
/// - `PUT /register/{name}/{capacity}/{rooms}/{version}` with `X-API-Key`
///   → `{"status":"ok","message":"Registered <name>"}`; a wrong key → 400
///   `{"status":"error","message":"Not allowed"}`;
/// - `DELETE /register/{name}` (same key) forgets the host at once;
/// - `GET /find/{version}` → `{"status":"ok","data":{"host":NAME,"free":N}}`,
///   the host with the most free slots (capacity − rooms > 0) of exactly
///   that version among those heard from within `forget_after`; 404
///   `{"status":"error","message":"No server available"}` when there is none.
pub struct FakeLb {
    pub key: String,
    pub forget_after: Duration,
    book: Arc<Mutex<LbBook>>,
    pub stub: HttpStub,
    http: reqwest::Client,
}

impl FakeLb {
    pub async fn start(key: &str, forget_after: Duration) -> FakeLb {
        let book = Arc::new(Mutex::new(LbBook::default()));
        let handler: Handler = {
            let book = book.clone();
            let key = key.to_owned();
            Arc::new(move |req: &Request| lb_handle(&book, &key, forget_after, req))
        };
        let stub = HttpStub::start(handler).await;
        FakeLb {
            key: key.to_owned(),
            forget_after,
            book,
            stub,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self) -> String {
        self.stub.url()
    }

    /// The record of `name` (heard from recently or not).
    pub fn host(&self, name: &str) -> Option<HostRec> {
        self.book.lock().unwrap().hosts.get(name).cloned()
    }

    /// Names heard from within `forget_after`.
    pub fn live_hosts(&self) -> Vec<String> {
        let b = self.book.lock().unwrap();
        let mut v: Vec<String> = b
            .hosts
            .iter()
            .filter(|(_, h)| h.last_seen.elapsed() <= self.forget_after)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    pub fn deleted(&self) -> Vec<String> {
        self.book.lock().unwrap().deleted.clone()
    }

    pub fn refused(&self) -> u64 {
        self.book.lock().unwrap().refused
    }

    /// `GET /find/{version}` over HTTP: the chosen host's name, or `None`
    /// on 404.
    pub async fn find(&self, version: &str) -> Option<String> {
        let r = self
            .http
            .get(format!("{}/find/{version}", self.url()))
            .send()
            .await
            .expect("GET /find");
        let status = r.status().as_u16();
        let v: Value = r.json().await.expect("find answers JSON");
        match status {
            200 => Some(
                v["data"]["host"]
                    .as_str()
                    .unwrap_or_else(|| panic!("find: no host: {v}"))
                    .to_owned(),
            ),
            404 => None,
            s => panic!("find answered {s}: {v}"),
        }
    }

    /// Waits (at most `dur`) until the record of `name` satisfies `cond`.
    pub async fn wait_host(
        &self,
        dur: Duration,
        name: &str,
        what: &str,
        cond: impl Fn(&HostRec) -> bool,
    ) -> HostRec {
        let book = self.book.clone();
        chat_tests::wait_for(dur, &format!("{name}: {what}"), || {
            let found = book
                .lock()
                .unwrap()
                .hosts
                .get(name)
                .filter(|h| cond(h))
                .cloned();
            async move { found }
        })
        .await
    }

    /// Waits (at most `dur`) until `find` answers `expected`.
    pub async fn wait_find(&self, dur: Duration, version: &str, expected: Option<&str>) {
        let deadline = tokio::time::Instant::now() + dur;
        loop {
            let got = self.find(version).await;
            if got.as_deref() == expected {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "find/{version} still answers {got:?} after {dur:?}, expected {expected:?}; hosts: {:?}",
                    self.book.lock().unwrap().hosts
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn lb_answer(status: u16, ok: bool, message: String) -> (u16, Value) {
    (
        status,
        json!({"status": if ok { "ok" } else { "error" }, "message": message}),
    )
}

fn lb_handle(
    book: &Mutex<LbBook>,
    key: &str,
    forget_after: Duration,
    req: &Request,
) -> (u16, Value) {
    let seg = req.segments();
    let seg: Vec<&str> = seg.iter().map(String::as_str).collect();
    let key_ok = req.header("x-api-key") == Some(key);
    let mut b = book.lock().unwrap();
    match (req.method.as_str(), seg.as_slice()) {
        ("PUT", ["register", name, capacity, rooms, version]) => {
            if !key_ok {
                b.refused += 1;
                return lb_answer(400, false, "Not allowed".into());
            }
            let (Ok(capacity), Ok(rooms)) = (capacity.parse::<i64>(), rooms.parse::<i64>()) else {
                return lb_answer(400, false, "Bad capacity or rooms".into());
            };
            let beats = b.hosts.get(*name).map_or(0, |h| h.beats) + 1;
            b.hosts.insert(
                (*name).to_owned(),
                HostRec {
                    capacity,
                    rooms,
                    version: (*version).to_owned(),
                    last_seen: Instant::now(),
                    beats,
                },
            );
            lb_answer(200, true, format!("Registered {name}"))
        }
        ("DELETE", ["register", name]) => {
            if !key_ok {
                b.refused += 1;
                return lb_answer(400, false, "Not allowed".into());
            }
            b.hosts.remove(*name);
            b.deleted.push((*name).to_owned());
            lb_answer(200, true, format!("Unregistered {name}"))
        }
        ("GET", ["find", version]) => {
            let best = b
                .hosts
                .iter()
                .filter(|(_, h)| h.version == *version && h.last_seen.elapsed() <= forget_after)
                .filter(|(_, h)| h.free() > 0)
                .max_by_key(|(_, h)| h.free());
            match best {
                Some((name, h)) => (
                    200,
                    json!({"status": "ok", "data": {"host": name, "free": h.free()}}),
                ),
                None => lb_answer(404, false, "No server available".into()),
            }
        }
        _ => lb_answer(404, false, "Not found".into()),
    }
}

/// A "load balancer" that accepts connections and never answers.
pub struct Blackhole {
    pub port: u16,
    task: JoinHandle<()>,
}

impl Blackhole {
    pub async fn start() -> Blackhole {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("binding the black hole");
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                // Keep the connection open, read nothing, answer nothing.
                held.push(s);
            }
        });
        Blackhole { port, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// Master helpers.
// ---------------------------------------------------------------------------

/// The name a master registers under when started with `--host
/// http://127.0.0.1`: `HOST:PORT`, as the load balancer decodes it.
pub fn lb_name(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// The version a master reports (`GET /api/v1`).
pub async fn master_version(s: &chat_tests::Server) -> String {
    let r = s.api(reqwest::Method::GET, "/api/v1").await;
    r.expect(200);
    r.data()["version"]
        .as_str()
        .unwrap_or_else(|| panic!("no version: {}", r.text))
        .to_owned()
}

/// `loadBalancers` of the admin `GET /api/v1/load`.
pub async fn lb_status(s: &chat_tests::Server) -> Vec<Value> {
    let r = s.admin(reqwest::Method::GET, "/api/v1/load").await;
    r.expect(200);
    r.data()["loadBalancers"]
        .as_array()
        .unwrap_or_else(|| panic!("load has no loadBalancers array: {}", r.text))
        .clone()
}

/// The status of the load balancer at `url` in `lb_status`.
pub async fn lb_status_of(s: &chat_tests::Server, url: &str) -> Value {
    let all = lb_status(s).await;
    all.iter()
        .find(|l| l["url"] == url)
        .unwrap_or_else(|| panic!("no load balancer {url} in {all:?}"))
        .clone()
}
