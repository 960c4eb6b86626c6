//! Shared code of the data tests (`data*.rs`, `store_*.rs`, `ownership.rs`):
//! an nx-27017 server (a MongoDB wire-protocol server over SQLite) that can
//! be killed and started again on the same port and database file, and
//! small protocol helpers (history paging, waits longer than the client's
//! default bound). Masters are the harness's [`chat_tests::Server`].
//!
//! Everything started here is killed when its handle is dropped. A missing
//! or broken nx-27017 fails the test: it is never skipped.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chat_tests::{Client, Event, procs};
use mongodb::bson::{Document, doc};
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
