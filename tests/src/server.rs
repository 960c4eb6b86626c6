//! A running `chatserver` master with its own run dir, ports and keys.
//!
//! The master binds port 0 for its two APIs; the harness reads the bound
//! ports from `master.json`. A master started again on the same run dir
//! ([`Server::start_again`], after [`Server::kill_master`] or a graceful
//! stop) binds the ports its predecessor had, as a supervisor restarting a
//! configured master would; a master restarted in place (SIGHUP) keeps them
//! itself. Room ports come from a range found free when the server starts.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::Signal;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::procs::{self, pid_alive};

/// The master's command line as the harness runs it: its run dir with the
/// data dir beside it, the given ports (0: any free port), loopback binds,
/// no keys, secret or store from the test's own environment,
/// `RUST_LOG=info` unless set.
pub fn master_command(
    bin: &Path,
    run_dir: &Path,
    (port, admin_port, room_ports): (u16, u16, (u16, u16)),
    args: &[String],
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--run-dir")
        .arg(run_dir)
        .arg("--data-dir")
        .arg(run_dir.with_file_name("data"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--admin-port")
        .arg(admin_port.to_string())
        .arg("--room-ports")
        .arg(format!("{}-{}", room_ports.0, room_ports.1))
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--room-bind")
        .arg("127.0.0.1")
        .args(args)
        .env_remove("KEY")
        .env_remove("ADMIN_KEY")
        .env_remove("JWT_SECRET")
        .env_remove("MONGODB_URI")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd
}

/// Bound of the wait for `master.json`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerOpts {
    /// Let the master generate its keys (no `KEY`/`ADMIN_KEY` in its env).
    pub generated_keys: bool,
    /// `JWT_SECRET` for the master's env.
    pub jwt_secret: Option<String>,
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Number of ports in `--room-ports`.
    pub room_ports: u16,
    /// The master binary (default: `chatserver_bin()`).
    pub bin: Option<PathBuf>,
    /// Extra environment variables of the master.
    pub env: Vec<(String, String)>,
}

impl Default for ServerOpts {
    fn default() -> Self {
        Self {
            generated_keys: false,
            jwt_secret: None,
            args: Vec::new(),
            room_ports: 20,
            bin: None,
            env: Vec::new(),
        }
    }
}

impl ServerOpts {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn generated_keys(mut self) -> Self {
        self.generated_keys = true;
        self
    }

    pub fn jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// A random `JWT_SECRET`.
    pub fn with_jwt(self) -> Self {
        self.jwt_secret(crate::random_string(32))
    }

    /// Runs this master binary instead of the build's `chatserver`.
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bin = Some(bin.into());
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable of the master.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The store: `--store URL` (e.g. `mongodb://...`).
    pub fn store(self, url: impl Into<String>) -> Self {
        self.arg("--store").arg(url)
    }

    /// Number of ports in `--room-ports`.
    pub fn room_port_count(mut self, n: u16) -> Self {
        self.room_ports = n;
        self
    }
}

/// What changes when a master is started again on a server's run dir
/// ([`Server::start_again_with`]); by default nothing: the same arguments
/// and environment as the first start.
#[derive(Debug, Clone, Default)]
pub struct Relaunch {
    /// Replaces the first start's extra arguments.
    pub args: Option<Vec<String>>,
    /// Environment variables added to the first start's.
    pub env: Vec<(String, String)>,
}

impl Relaunch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// An HTTP answer, read completely.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON, `Value::Null` when it is not JSON.
    pub json: Value,
}

impl Resp {
    /// `json["data"]`.
    pub fn data(&self) -> &Value {
        &self.json["data"]
    }

    /// A header's value as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    /// The `message` of an error answer (or of `data`).
    pub fn message(&self) -> &str {
        self.json["message"]
            .as_str()
            .or_else(|| self.json["data"]["message"].as_str())
            .unwrap_or("")
    }

    /// Panics unless the status is `status`.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "unexpected HTTP status; body: {}",
            self.text
        );
        self
    }
}

/// A running master.
pub struct Server {
    dir: tempfile::TempDir,
    pub run_dir: PathBuf,
    pub log_dir: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub key: String,
    pub admin_key: String,
    pub jwt_secret: Option<String>,
    pub room_ports: (u16, u16),
    /// The master's pid.
    pub pid: i32,
    /// `master.json` as read at start.
    pub master_json: Value,
    /// How it was started (reused by [`Server::start_again`]).
    pub opts: ServerOpts,
    /// The current master's stderr log.
    pub stderr_path: PathBuf,
    child: Option<Child>,
    http: reqwest::Client,
    /// Every worker pid seen so far (killed on drop).
    seen_pids: Mutex<BTreeSet<i32>>,
}

/// The `chatserver` binary: `$CHATSERVER_BIN`, or `chatserver` in the target
/// dir of this test executable.
pub fn chatserver_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CHATSERVER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    for dir in exe.ancestors().skip(1) {
        let candidate = dir.join("chatserver");
        if candidate.is_file() {
            return candidate;
        }
        if dir
            .file_name()
            .is_some_and(|n| n == "debug" || n == "release")
            && dir
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n == "target")
        {
            return candidate;
        }
    }
    panic!(
        "cannot find the chatserver binary from {}; build it (cargo build -p chatserver -p chatroom) or set CHATSERVER_BIN",
        exe.display()
    );
}

impl Server {
    /// A server with default options.
    pub async fn default_server() -> Server {
        Self::start(ServerOpts::default()).await
    }

    /// Starts a master and waits until it is ready (`master.json` exists).
    /// Its APIs bind port 0; `port` and `admin_port` are the bound ports,
    /// read from `master.json`.
    pub async fn start(opts: ServerOpts) -> Server {
        let bin = opts.bin.clone().unwrap_or_else(chatserver_bin);
        assert!(
            bin.is_file(),
            "{} does not exist; build it with cargo build -p chatserver -p chatroom",
            bin.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("chat-tests-")
            .tempdir()
            .expect("tempdir");
        let run_dir = dir.path().join("run");
        let log_dir = dir.path().join("logs");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::create_dir_all(&log_dir).unwrap();
        let room_ports = procs::port_range(opts.room_ports);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut server = Server {
            dir,
            stderr_path: log_dir.join("master.stderr.log"),
            run_dir,
            log_dir,
            port: 0,
            admin_port: 0,
            key: crate::random_string(24),
            admin_key: crate::random_string(24),
            jwt_secret: opts.jwt_secret.clone(),
            room_ports,
            pid: 0,
            master_json: Value::Null,
            opts,
            child: None,
            http,
            seen_pids: Mutex::new(BTreeSet::new()),
        };
        // From here on, a panic drops `server`, which prints the logs and
        // kills what was started.
        server.launch("master", &Relaunch::default()).await;
        if server.opts.generated_keys {
            let keys = server.read_keys_json();
            server.key = keys["key"]
                .as_str()
                .unwrap_or_else(|| panic!("keys.json has no key: {keys}"))
                .to_owned();
            server.admin_key = keys["admin_key"]
                .as_str()
                .unwrap_or_else(|| panic!("keys.json has no admin_key: {keys}"))
                .to_owned();
        }
        server
    }

    /// Starts a master again on this server's run dir, data dir, ports and
    /// keys, with the first start's arguments (the previous master must be
    /// gone: see [`Server::kill_master`]); its logs are `<tag>.*.log`.
    pub async fn start_again(&mut self, tag: &str) {
        self.start_again_with(tag, Relaunch::default()).await;
    }

    /// [`Server::start_again`] with other arguments or more environment.
    pub async fn start_again_with(&mut self, tag: &str, how: Relaunch) {
        assert!(
            !self.master_running(),
            "master {} still runs: stop or kill it first",
            self.pid
        );
        self.launch(tag, &how).await;
    }

    /// The command of a master on this server's run dir, data dir and keys
    /// that binds any free ports, with `args`; its stderr goes to the
    /// returned file. Not started, not watched: for a master that must fail
    /// or that a test drives itself.
    pub fn master_command_on_run_dir(&self, args: &[String], tag: &str) -> (Command, PathBuf) {
        let other_rooms = procs::port_range(5);
        self.command(args, &[], tag, (0, 0, other_rooms))
    }

    fn command(
        &self,
        args: &[String],
        env: &[(String, String)],
        tag: &str,
        ports: (u16, u16, (u16, u16)),
    ) -> (Command, PathBuf) {
        let bin = self.opts.bin.clone().unwrap_or_else(chatserver_bin);
        let stdout = std::fs::File::create(self.log_dir.join(format!("{tag}.stdout.log")))
            .expect("creating a log file");
        let stderr_path = self.log_dir.join(format!("{tag}.stderr.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("creating a log file");
        let mut cmd = master_command(&bin, &self.run_dir, ports, args);
        cmd.stdout(stdout).stderr(stderr);
        if !self.opts.generated_keys || self.pid != 0 {
            cmd.env("KEY", &self.key).env("ADMIN_KEY", &self.admin_key);
        }
        if let Some(s) = &self.jwt_secret {
            cmd.env("JWT_SECRET", s);
        }
        for (k, v) in self.opts.env.iter().chain(env) {
            cmd.env(k, v);
        }
        (cmd, stderr_path)
    }

    /// Spawns a master on the current ports (0 at the first start) and
    /// waits for its `master.json`.
    async fn launch(&mut self, tag: &str, how: &Relaunch) {
        let args = how.args.clone().unwrap_or_else(|| self.opts.args.clone());
        let ports = (self.port, self.admin_port, self.room_ports);
        let (mut cmd, stderr_path) = self.command(&args, &how.env, tag, ports);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn the master ({tag}): {e}"));
        self.pid = child.id() as i32;
        self.child = Some(child);
        self.stderr_path = stderr_path;
        let master_json = match self.await_ready().await {
            Ok(v) => v,
            Err(logs) => {
                self.child = None;
                panic!("the master ({tag}) exited before writing master.json\n{logs}");
            }
        };
        let port = master_json["port"].as_u64().unwrap_or(0);
        let admin_port = master_json["admin_port"].as_u64().unwrap_or(0);
        assert!(
            port > 0 && admin_port > 0 && port != admin_port,
            "master.json: bad ports: {master_json}"
        );
        if self.port != 0 {
            assert_eq!(
                (port, admin_port),
                (u64::from(self.port), u64::from(self.admin_port)),
                "the master ({tag}) bound other ports than asked: {master_json}"
            );
        }
        self.port = port as u16;
        self.admin_port = admin_port as u16;
        self.master_json = master_json;
    }

    async fn await_ready(&mut self) -> Result<Value, String> {
        let path = self.run_dir.join("master.json");
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["pid"].as_i64() == Some(i64::from(self.pid))
            {
                return Ok(v);
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("exit: {status}\n{}", self.logs()));
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the master did not write {} within {READY_TIMEOUT:?}\n{}",
                    path.display(),
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `<run-dir>/keys.json`, parsed.
    pub fn read_keys_json(&self) -> Value {
        let path = self.run_dir.join("keys.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("keys.json is not JSON: {e}: {text}"))
    }

    /// The temporary directory holding the run dir and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    // ---- logs ----

    /// Everything the master (and its workers) logged so far.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for dir in [&self.log_dir, &self.run_dir] {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut paths: Vec<_> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
            paths.sort();
            for p in paths {
                if p.extension().is_some_and(|e| e == "log") && p.is_file() {
                    let text = std::fs::read(&p).unwrap_or_default();
                    let text = String::from_utf8_lossy(&text);
                    // Keep the end of very long logs.
                    let tail = if text.len() > 60_000 {
                        let mut i = text.len() - 60_000;
                        while !text.is_char_boundary(i) {
                            i += 1;
                        }
                        &text[i..]
                    } else {
                        &text[..]
                    };
                    out.push_str(&format!("===== {} =====\n{tail}\n", p.display()));
                }
            }
        }
        out
    }

    // ---- process control ----

    /// Whether the master process is still running.
    pub fn master_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the master to exit, at most `bound`.
    pub async fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let child = self.child.as_mut().expect("master already reaped");
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("the master did not exit within {bound:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then waits (at most 15 s) for the master to exit.
    pub async fn stop_gracefully(&mut self) -> ExitStatus {
        self.stop_within(Duration::from_secs(15)).await
    }

    /// SIGTERM, then waits (at most `bound`) for the master to exit.
    pub async fn stop_within(&mut self, bound: Duration) -> ExitStatus {
        self.remember_workers().await;
        self.sigterm();
        self.wait_exit(bound).await
    }

    /// Sends `sig` to the master.
    pub fn signal(&self, sig: Signal) {
        procs::signal(self.pid, sig);
    }

    /// SIGTERM to the master (a graceful stop), without waiting.
    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// SIGHUP to the master (a restart in place), without waiting.
    pub fn sighup(&self) {
        self.signal(Signal::SIGHUP);
    }

    /// SIGKILLs the master (kill -9: its rooms live on) and waits until it
    /// is reaped.
    pub async fn kill_master(&mut self) {
        procs::sigkill(self.pid);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.master_running() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the master survived SIGKILL for 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The current master's stderr log.
    pub fn master_stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Every worker pid seen so far.
    pub fn seen_pids(&self) -> BTreeSet<i32> {
        self.seen_pids.lock().unwrap().clone()
    }

    fn remember(&self, rooms: &Value) {
        let mut seen = self.seen_pids.lock().unwrap();
        let mut add = |r: &Value| {
            if let Some(pid) = r["pid"].as_i64().filter(|&p| p > 0) {
                seen.insert(pid as i32);
            }
        };
        match rooms {
            Value::Array(a) => a.iter().for_each(&mut add),
            r => add(r),
        }
    }

    /// Worker pids from the admin API and the master's children; remembered
    /// for the final cleanup.
    pub async fn remember_workers(&self) -> BTreeSet<i32> {
        if let Ok(r) = tokio::time::timeout(
            Duration::from_secs(5),
            self.admin(Method::GET, "/api/v1/rooms"),
        )
        .await
            && r.status == 200
        {
            self.remember(r.data());
        }
        let children = procs::children_of(self.pid);
        self.seen_pids.lock().unwrap().extend(children);
        self.seen_pids()
    }

    /// Whether no process started for this server is left (master reaped or
    /// gone, every worker seen gone, nothing mentions the run dir).
    pub fn leftover_processes(&mut self) -> Vec<i32> {
        let mut left: Vec<i32> = self
            .seen_pids()
            .into_iter()
            .filter(|&p| pid_alive(p))
            .collect();
        for p in procs::pids_mentioning(&self.run_dir) {
            if !left.contains(&p) {
                left.push(p);
            }
        }
        if self.master_running() && !left.contains(&self.pid) {
            left.push(self.pid);
        }
        left
    }

    /// Worker pids from the admin API, synchronously (for `Drop`).
    fn blocking_worker_pids(&self) -> Vec<i32> {
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.admin_port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return Vec::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        let req = format!(
            "GET /api/v1/rooms HTTP/1.0\r\nHost: 127.0.0.1\r\nX-API-Key: {}\r\nConnection: close\r\n\r\n",
            self.admin_key
        );
        if s.write_all(req.as_bytes()).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        let text = String::from_utf8_lossy(&buf);
        let Some((_, body)) = text.split_once("\r\n\r\n") else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<Value>(body) else {
            return Vec::new();
        };
        v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["pid"].as_i64())
                    .map(|p| p as i32)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn kill_everything(&mut self) {
        let mut pids = self.seen_pids();
        let master_alive = self.master_running();
        if master_alive {
            pids.extend(self.blocking_worker_pids());
            pids.extend(procs::children_of(self.pid));
        }
        pids.extend(procs::pids_mentioning(&self.run_dir));
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for &p in &pids {
            if p != self.pid {
                procs::sigkill(p);
            }
        }
        for p in procs::pids_mentioning(&self.run_dir) {
            procs::sigkill(p);
        }
    }

    // ---- HTTP ----

    pub fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `startedAt` of the admin `/api/v1/load`; `None` while the master does
    /// not answer (e.g. while it re-executes).
    pub async fn started_at(&self) -> Option<String> {
        let r = self
            .http
            .get(self.admin_url("/api/v1/load"))
            .header("X-API-Key", &self.admin_key)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["data"]["startedAt"].as_str().map(str::to_owned)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// One request; `key` goes in `X-API-Key`, `body` (JSON text) is sent as
    /// `application/json`.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Resp {
        let mut req = self.http.request(method.clone(), url);
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_owned());
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    /// A request to the main API with `KEY`.
    pub async fn api(&self, method: Method, path: &str) -> Resp {
        self.request(method, &self.api_url(path), Some(&self.key), None)
            .await
    }

    /// A request to the admin API with `ADMIN_KEY`.
    pub async fn admin(&self, method: Method, path: &str) -> Resp {
        self.request(method, &self.admin_url(path), Some(&self.admin_key), None)
            .await
    }

    /// `POST /api/v1/room/{name}` with an optional settings body.
    pub async fn create_room_with(&self, name: &str, settings: Option<&Value>) -> Resp {
        let body = settings.map(|s| s.to_string());
        self.request(
            Method::POST,
            &self.api_url(&format!("/api/v1/room/{name}")),
            Some(&self.key),
            body.as_deref(),
        )
        .await
    }

    /// Creates a room with default settings; returns its port.
    pub async fn create_room(&self, name: &str) -> u16 {
        self.create_room_settings(name, None).await
    }

    /// Creates a room (asserting success); returns its port.
    pub async fn create_room_settings(&self, name: &str, settings: Option<Value>) -> u16 {
        let r = self.create_room_with(name, settings.as_ref()).await;
        assert_eq!(r.status, 200, "creating room {name}: {}", r.text);
        let port = r.data()["port"]
            .as_u64()
            .unwrap_or_else(|| panic!("creating room {name}: no port: {}", r.text));
        assert!(port > 0, "creating room {name}: port 0: {}", r.text);
        let port = port as u16;
        assert!(
            (self.room_ports.0..=self.room_ports.1).contains(&port),
            "room {name} got port {port}, outside --room-ports {:?}",
            self.room_ports
        );
        // Record the worker's pid for the cleanup.
        let info = self.api(Method::GET, &format!("/api/v1/room/{name}")).await;
        if info.status == 200 {
            self.remember(info.data());
        }
        port
    }

    /// `GET /api/v1/rooms` on the main API: the `data` array.
    pub async fn rooms(&self) -> Vec<Value> {
        let r = self.api(Method::GET, "/api/v1/rooms").await;
        assert_eq!(r.status, 200, "GET /api/v1/rooms: {}", r.text);
        let rooms = r
            .data()
            .as_array()
            .unwrap_or_else(|| panic!("GET /api/v1/rooms: data is not an array: {}", r.text))
            .clone();
        self.remember(r.data());
        rooms
    }

    /// Names of the rooms the main API lists.
    pub async fn room_names(&self) -> Vec<String> {
        self.rooms()
            .await
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// `GET /api/v1/room/{name}` with the key.
    pub async fn room_info(&self, name: &str) -> Resp {
        let r = self.api(Method::GET, &format!("/api/v1/room/{name}")).await;
        if r.status == 200 {
            self.remember(r.data());
        }
        r
    }

    /// The pid of a room's worker, from the API.
    pub async fn room_pid(&self, name: &str) -> i32 {
        let r = self.room_info(name).await;
        assert_eq!(r.status, 200, "GET room {name}: {}", r.text);
        let pid = r.data()["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("room {name} has no pid: {}", r.text));
        pid as i32
    }

    /// `DELETE /api/v1/room/{name}/shutdown` on the admin API.
    pub async fn shutdown_room(&self, name: &str) -> Resp {
        self.admin(Method::DELETE, &format!("/api/v1/room/{name}/shutdown"))
            .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- chatserver logs (master pid {}, run dir {}) -----\n{}",
                self.pid,
                self.run_dir.display(),
                self.logs()
            );
        }
        self.kill_everything();
    }
}
