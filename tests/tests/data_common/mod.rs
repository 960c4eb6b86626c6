//! Shared code of the data tests (`data.rs`): an nx-27017 server (a MongoDB
//! wire-protocol server over SQLite, from PyPI) that can be killed and
//! started again on the same port and database file, a master started on
//! given run and data directories (so that a second master can take over the
//! first one's data), and small protocol helpers (history paging, waits
//! longer than the client's default bound).
//!
//! Everything started here is killed when its handle is dropped. A missing
//! or broken nx-27017 fails the test: it is never skipped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chat_tests::{Client, Event, Resp, procs};
use mongodb::bson::{Document, doc};
use reqwest::Method;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// nx-27017

/// The nx-27017 binary: `$NX27017_BIN`, else `<workspace>/.venv/bin/nx-27017`.
pub fn nx_binary() -> PathBuf {
    match std::env::var_os("NX27017_BIN") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nx-27017"),
    }
}

/// A MongoDB-protocol server. With a file database its data survives
/// [`Nx::kill`] + [`Nx::restart`] (same port, same file).
pub struct Nx {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// `None`: in memory.
    db_file: Option<PathBuf>,
    /// Starts so far (one log file each).
    generation: u32,
}

impl Nx {
    /// On a free port, with its database in a file.
    pub async fn start_file() -> Nx {
        Self::start_free(true).await
    }

    /// On a free port, in memory.
    pub async fn start_memory() -> Nx {
        Self::start_free(false).await
    }

    /// On a free port: a port found free can be taken by a parallel test
    /// before the server binds it; then another port is tried.
    async fn start_free(file: bool) -> Nx {
        for _ in 0..4 {
            let mut nx = Self::new_on(procs::free_port(), file);
            match nx.spawn().await {
                Ok(()) => return nx,
                Err(out) if out.contains("address already in use") => continue,
                Err(out) => panic!("{out}"),
            }
        }
        let mut nx = Self::new_on(procs::free_port(), file);
        nx.spawn().await.unwrap_or_else(|out| panic!("{out}"));
        nx
    }

    /// On `port` (e.g. one a master already tries to reach).
    pub async fn start_on(port: u16, file: bool) -> Nx {
        let mut nx = Self::new_on(port, file);
        nx.spawn().await.unwrap_or_else(|out| panic!("{out}"));
        nx
    }

    fn new_on(port: u16, file: bool) -> Nx {
        let dir = tempfile::Builder::new()
            .prefix("chat-tests-nx-")
            .tempdir()
            .expect("tempdir");
        let db_file = file.then(|| dir.path().join("nx.db"));
        Nx {
            child: None,
            port,
            dir,
            db_file,
            generation: 0,
        }
    }

    fn out_path(&self, generation: u32) -> PathBuf {
        self.dir.path().join(format!("nx.{generation}.out"))
    }

    fn log_path(&self, generation: u32) -> PathBuf {
        self.dir.path().join(format!("nx.{generation}.log"))
    }

    /// Starts the server; `Err` (its output) when it exited at start.
    async fn spawn(&mut self) -> Result<(), String> {
        let bin = nx_binary();
        assert!(
            bin.exists(),
            "nx-27017 not found at {} — the MongoDB data tests need it: run tests/run \
             (or `python3 -m venv .venv && .venv/bin/pip install nx-27017` in the workspace), \
             or set NX27017_BIN",
            bin.display()
        );
        self.generation += 1;
        let g = self.generation;
        let out = std::fs::File::create(self.out_path(g)).expect("nx output file");
        let err = out.try_clone().expect("nx output file");
        let db = match &self.db_file {
            Some(p) => p.display().to_string(),
            None => "memory".to_owned(),
        };
        let child = Command::new(&bin)
            .arg("--db")
            .arg(&db)
            .args(["--host", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("--log-file")
            .arg(self.log_path(g))
            .arg("--pid-file")
            .arg(self.dir.path().join(format!("nx.{g}.pid")))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        self.child = Some(child);
        self.wait_ready().await
    }

    /// What every start of this server printed and logged.
    pub fn output(&self) -> String {
        let mut s = String::new();
        for g in 1..=self.generation {
            let out = std::fs::read_to_string(self.out_path(g)).unwrap_or_default();
            let log = std::fs::read_to_string(self.log_path(g)).unwrap_or_default();
            let tail = |t: &str| t[t.len().saturating_sub(8000)..].to_owned();
            s.push_str(&format!(
                "--- nx-27017 start {g}: stdout/stderr ---\n{}\n--- log ---\n{}\n",
                tail(&out),
                tail(&log)
            ));
        }
        s
    }

    /// Waits (at most 30 s) until the server answers a `ping`.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut last_error = String::from("not tried");
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "nx-27017 exited at start ({status}) on port {}\n{}",
                    self.port,
                    self.output()
                ));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                match self.ping().await {
                    Ok(()) => return Ok(()),
                    Err(e) => last_error = e,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "nx-27017 did not answer on port {} within 30 s (last error: {last_error})\n{}",
                    self.port,
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ping(&self) -> Result<(), String> {
        let client = mongodb::Client::with_uri_str(format!(
            "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=1000&connectTimeoutMS=1000",
            self.port
        ))
        .await
        .map_err(|e| e.to_string())?;
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            client.database("admin").run_command(doc! { "ping": 1 }),
        )
        .await;
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("ping timed out".into()),
        }
    }

    /// `mongodb://127.0.0.1:PORT/DB`.
    pub fn uri(&self, db: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{db}", self.port)
    }

    /// A driver handle on database `db` (for raw reads and writes, like a
    /// platform's).
    pub async fn database(&self, db: &str) -> mongodb::Database {
        let client = mongodb::Client::with_uri_str(format!(
            "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=5000",
            self.port
        ))
        .await
        .unwrap_or_else(|e| panic!("mongodb client for nx-27017: {e}"));
        client.database(db)
    }

    /// Inserts one document into `coll` of `db`, as a platform would.
    pub async fn insert(&self, db: &str, coll: &str, d: Document) {
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            self.database(db)
                .await
                .collection::<Document>(coll)
                .insert_one(d.clone()),
        )
        .await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("raw insert into {coll}: {e}: {d}\n{}", self.output()),
            Err(_) => panic!("raw insert into {coll} timed out: {d}\n{}", self.output()),
        }
    }

    /// Every document of `coll` matching `filter`, sorted by `sort`.
    /// The texts of a room's stored messages in `db`, in seq order.
    pub async fn stored_texts(&self, db: &str, room: &str) -> Vec<String> {
        self.find(db, "messages", doc! { "room": room }, doc! { "seq": 1 })
            .await
            .iter()
            .map(|d| d.get_str("text").unwrap_or("<none>").to_owned())
            .collect()
    }

    pub async fn find(
        &self,
        db: &str,
        coll: &str,
        filter: Document,
        sort: Document,
    ) -> Vec<Document> {
        use futures_util::TryStreamExt;
        let coll = self.database(db).await.collection::<Document>(coll);
        let fut = async {
            coll.find(filter)
                .sort(sort)
                .await?
                .try_collect::<Vec<_>>()
                .await
        };
        match tokio::time::timeout(Duration::from_secs(10), fut).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => panic!("raw find: {e}\n{}", self.output()),
            Err(_) => panic!("raw find timed out\n{}", self.output()),
        }
    }

    /// Kills the server (SIGKILL, like a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and database.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nx-27017 is still running");
        self.spawn().await.unwrap_or_else(|out| panic!("{out}"));
    }
}

impl Drop for Nx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- nx-27017 (port {}) -----\n{}",
                self.port,
                self.output()
            );
        }
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// A master on given directories

/// Where a [`Master`] runs: the same spec started twice is the same server
/// restarted (same run dir, data dir, ports and keys).
#[derive(Debug, Clone)]
pub struct MasterSpec {
    pub run_dir: PathBuf,
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub room_ports: (u16, u16),
    pub key: String,
    pub admin_key: String,
    pub args: Vec<String>,
}

impl MasterSpec {
    /// A spec with its directories under `dir`, fresh ports and keys.
    pub fn new(dir: &Path) -> MasterSpec {
        let port = procs::free_port();
        let mut admin_port = procs::free_port();
        while admin_port == port {
            admin_port = procs::free_port();
        }
        MasterSpec {
            run_dir: dir.join("run"),
            data_dir: dir.join("data"),
            log_dir: dir.join("logs"),
            port,
            admin_port,
            room_ports: procs::port_range(10),
            key: chat_tests::random_string(24),
            admin_key: chat_tests::random_string(24),
            args: Vec::new(),
        }
    }
}

/// A `chatserver` master started from a [`MasterSpec`]; killed (with its
/// rooms) on drop.
pub struct Master {
    pub spec: MasterSpec,
    pub pid: i32,
    child: Option<Child>,
    generation: u32,
    http: reqwest::Client,
}

impl Master {
    /// Starts a master; `generation` names its log files (1, 2, …).
    pub async fn start(spec: &MasterSpec, generation: u32) -> Master {
        let bin = chat_tests::server::chatserver_bin();
        assert!(
            bin.is_file(),
            "{} does not exist; build it with cargo build -p chatserver -p chatroom",
            bin.display()
        );
        std::fs::create_dir_all(&spec.run_dir).unwrap();
        std::fs::create_dir_all(&spec.log_dir).unwrap();
        let stdout =
            std::fs::File::create(spec.log_dir.join(format!("master{generation}.stdout.log")))
                .unwrap();
        let stderr =
            std::fs::File::create(spec.log_dir.join(format!("master{generation}.stderr.log")))
                .unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("--run-dir")
            .arg(&spec.run_dir)
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .arg("--port")
            .arg(spec.port.to_string())
            .arg("--admin-port")
            .arg(spec.admin_port.to_string())
            .arg("--room-ports")
            .arg(format!("{}-{}", spec.room_ports.0, spec.room_ports.1))
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--room-bind")
            .arg("127.0.0.1")
            .args(&spec.args)
            .env_remove("JWT_SECRET")
            .env_remove("MONGODB_URI")
            .env("KEY", &spec.key)
            .env("ADMIN_KEY", &spec.admin_key)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        let mut m = Master {
            spec: spec.clone(),
            pid: child.id() as i32,
            child: Some(child),
            generation,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        m.await_ready().await;
        m
    }

    async fn await_ready(&mut self) {
        let path = self.spec.run_dir.join("master.json");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["pid"].as_i64() == Some(i64::from(self.pid))
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "master {} exited ({status}) before it was ready",
                    self.generation
                );
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("master {} was not ready within 20 s", self.generation);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every log of the masters and rooms of this spec.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for dir in [&self.spec.log_dir, &self.spec.run_dir] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut paths: Vec<_> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
            paths.sort();
            for p in paths {
                if p.extension().is_some_and(|e| e == "log") && p.is_file() {
                    let text = std::fs::read(&p).unwrap_or_default();
                    let text = String::from_utf8_lossy(&text);
                    let mut i = text.len().saturating_sub(40_000);
                    while !text.is_char_boundary(i) {
                        i += 1;
                    }
                    out.push_str(&format!("===== {} =====\n{}\n", p.display(), &text[i..]));
                }
            }
        }
        out
    }

    /// SIGTERM, then waits (at most 20 s) for the master to exit; asserts a
    /// clean exit.
    pub async fn stop_gracefully(&mut self) {
        procs::signal(self.pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let child = self.child.as_mut().expect("master already stopped");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                assert!(status.success(), "master exited with {status}");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("the master did not exit within 20 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn request(
        &self,
        method: Method,
        url: &str,
        key: &str,
        body: Option<&Value>,
    ) -> Resp {
        let mut req = self
            .http
            .request(method.clone(), url)
            .header("X-API-Key", key);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Resp {
        let url = format!("http://127.0.0.1:{}{path}", self.spec.admin_port);
        self.request(method, &url, &self.spec.admin_key, body).await
    }

    /// Creates a room (or finds it already there); returns its port.
    pub async fn create_room(&self, name: &str) -> u16 {
        let url = format!("http://127.0.0.1:{}/api/v1/room/{name}", self.spec.port);
        let r = self.request(Method::POST, &url, &self.spec.key, None).await;
        assert_eq!(r.status, 200, "creating room {name}: {}", r.text);
        let port = r.data()["port"].as_u64().unwrap_or(0);
        assert!(port > 0, "creating room {name}: {}", r.text);
        port as u16
    }

    fn kill_everything(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in procs::pids_mentioning(&self.spec.run_dir) {
            procs::sigkill(p);
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- chatserver logs (master {} pid {}) -----\n{}",
                self.generation,
                self.pid,
                self.logs()
            );
        }
        self.kill_everything();
    }
}

// ---------------------------------------------------------------------------
// Protocol helpers

/// Waits at most `dur` for the next frame of type `kind`; other frames are
/// returned too.
pub async fn recv_type_within(
    c: &mut Client,
    kind: &str,
    dur: Duration,
    what: &str,
) -> (Value, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + dur;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_event(left).await {
            Event::Json(v) if v["type"] == kind => return (v, skipped),
            Event::Json(v) => skipped.push(v),
            other => panic!(
                "{what}: waiting {dur:?} for a {kind:?} frame, got {other:?}; skipped: {skipped:?}"
            ),
        }
    }
}

/// One `history` request: the page's messages (oldest first) and `more`.
pub async fn history(c: &mut Client, before: Option<u64>, limit: u32) -> (Vec<Value>, bool) {
    let mut req = json!({"type": "history", "limit": limit});
    if let Some(b) = before {
        req["before"] = json!(b);
    }
    c.send_json(req.clone()).await;
    let (page, _) = recv_type_within(c, "history", Duration::from_secs(10), "history").await;
    let messages = page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{req} → history without messages: {page}"))
        .clone();
    let more = page["more"]
        .as_bool()
        .unwrap_or_else(|| panic!("{req} → history without more: {page}"));
    (messages, more)
}

/// Pages back from the newest message with `limit` until `more` is false;
/// every message, oldest first. Each page must be in order and end right
/// before the previous one.
pub async fn history_all(c: &mut Client, limit: u32) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    let mut before = None;
    for _ in 0..10_000 {
        let (page, more) = history(c, before, limit).await;
        assert!(
            page.len() <= limit as usize,
            "history page larger than {limit}: {page:?}"
        );
        let seqs: Vec<u64> = page.iter().map(seq_of).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "history page not in seq order: {seqs:?}"
        );
        if let (Some(&last), Some(b)) = (seqs.last(), before) {
            assert!(last < b, "history before {b} returned seq {last}");
        }
        if more {
            assert!(!page.is_empty(), "an empty history page with more: true");
        }
        let first = seqs.first().copied();
        let mut merged = page;
        merged.append(&mut all);
        all = merged;
        if !more {
            return all;
        }
        before = first;
    }
    panic!("history paging did not end");
}

/// `message["seq"]`.
pub fn seq_of(m: &Value) -> u64 {
    m["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {m}"))
}

/// `(seq, text)` of messages.
pub fn seq_texts(msgs: &[Value]) -> Vec<(u64, String)> {
    msgs.iter()
        .map(|m| {
            (
                seq_of(m),
                m["text"].as_str().unwrap_or("<no text>").to_owned(),
            )
        })
        .collect()
}
