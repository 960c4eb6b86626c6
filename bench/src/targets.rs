//! The servers under test: our `chatserver` master (with its `chatroom`
//! workers) and the Node.js peers of `bench/peers/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::procs;

/// Bound of every wait for a server to start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A room as the admin API lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    #[serde(default)]
    pub pid: Option<i32>,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4)
        .build()
        .expect("an HTTP client")
}

/// Creates a room through a room API: `POST /api/v1/room/{name}`; the port.
pub async fn create_room(
    http: &reqwest::Client,
    api: &str,
    key: &str,
    name: &str,
    body: Option<&Value>,
) -> anyhow::Result<u16> {
    let mut req = http
        .post(format!("{api}/api/v1/room/{name}"))
        .header("X-API-Key", key);
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("POST room {name}"))?;
    let status = res.status();
    let v: Value = res.json().await.context("room API answer is not JSON")?;
    let port = v["data"]["port"].as_u64().unwrap_or(0);
    if !status.is_success() || port == 0 {
        bail!("room {name} not created: {status} {v}");
    }
    Ok(u16::try_from(port)?)
}

/// Lists rooms: `GET /api/v1/rooms` → `{"data":[{name,port,pid}]}`.
pub async fn list_rooms(
    http: &reqwest::Client,
    api: &str,
    key: &str,
) -> anyhow::Result<Vec<RoomInfo>> {
    let v: Value = http
        .get(format!("{api}/api/v1/rooms"))
        .header("X-API-Key", key)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(serde_json::from_value(v["data"].clone())?)
}

/// Where the `chatserver` binaries are: `--bin-dir`, else next to this
/// executable, else the workspace's `target/release`.
pub fn bin_dir(given: Option<&Path>) -> PathBuf {
    if let Some(d) = given {
        return d.to_owned();
    }
    if let Ok(me) = std::env::current_exe()
        && let Some(dir) = me.parent()
        && dir.join("chatserver").is_file()
    {
        return dir.to_owned();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release")
}

/// A running `chatserver` master with its own run dir, ports and keys.
pub struct OurServer {
    dir: tempfile::TempDir,
    child: Child,
    pub api: String,
    pub admin: String,
    pub key: String,
    pub admin_key: String,
    pub http: reqwest::Client,
}

fn random_key() -> String {
    use rand::Rng;
    let b: [u8; 16] = rand::rng().random();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl OurServer {
    /// Starts a master with `rooms` room ports (and `env`'s extra
    /// arguments) and waits for its API.
    pub async fn start(env: &crate::benches::Env, rooms: u16) -> anyhow::Result<Self> {
        let bin_dir = env.bin_dir.as_path();
        let bin = bin_dir.join("chatserver");
        anyhow::ensure!(
            bin.is_file() && bin_dir.join("chatroom").is_file(),
            "no chatserver/chatroom in {}; build them (cargo build --release -p chatserver -p chatroom) or pass --bin-dir",
            bin_dir.display()
        );
        let dir = tempfile::Builder::new().prefix("chatbench-").tempdir()?;
        let run_dir = dir.path().join("run");
        let port = procs::free_port()?;
        let mut admin_port = procs::free_port()?;
        while admin_port == port {
            admin_port = procs::free_port()?;
        }
        let (first, last) = procs::port_range(rooms.saturating_add(2))?;
        let key = random_key();
        let admin_key = random_key();
        let log = std::fs::File::create(dir.path().join("master.log"))?;
        let child = crate::pin::command(&bin)
            .arg("--run-dir")
            .arg(&run_dir)
            // Its own store: masters of parallel runs never share one.
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--port", &port.to_string()])
            .args(["--admin-port", &admin_port.to_string()])
            .args(["--room-ports", &format!("{first}-{last}")])
            .args(["--bind", "127.0.0.1", "--room-bind", "127.0.0.1"])
            .args(["--shutdown-grace", "2s"])
            .args(&env.server_args)
            .env("KEY", &key)
            .env("ADMIN_KEY", &admin_key)
            .env_remove("JWT_SECRET")
            .env_remove("LOADBALANCERS")
            .env(
                "RUST_LOG",
                std::env::var("CHATBENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut s = Self {
            dir,
            child,
            api: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            key,
            admin_key,
            http: http_client(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = s.http.get(format!("{}/api/v1/", s.api)).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                bail!("chatserver exited at start ({st}): {}", s.log_tail());
            }
            if Instant::now() > deadline {
                s.stop().await;
                bail!("chatserver did not answer in {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(s)
    }

    /// The end of the master's log, for error messages.
    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.dir.path().join("master.log")).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Creates a room; its port.
    pub async fn create_room(&self, name: &str, body: Option<&Value>) -> anyhow::Result<u16> {
        create_room(&self.http, &self.api, &self.key, name, body).await
    }

    /// Every room, with its worker's pid (admin API).
    pub async fn rooms(&self) -> anyhow::Result<Vec<RoomInfo>> {
        list_rooms(&self.http, &self.admin, &self.admin_key).await
    }

    /// The worker pid of one room.
    pub async fn room_pid(&self, name: &str) -> anyhow::Result<i32> {
        self.rooms()
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .and_then(|r| r.pid)
            .with_context(|| format!("no pid for room {name}"))
    }

    /// The master's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM to the master, then waits (at most `bound`) until it and every
    /// one of `rooms` exited. The time that took and the rooms still alive
    /// (killed afterwards).
    pub async fn shutdown_timed(mut self, rooms: &[u32], bound: Duration) -> (f64, usize) {
        let t0 = Instant::now();
        if let Some(pid) = self.child.id() {
            procs::signal(pid as i32, nix::sys::signal::Signal::SIGTERM);
        }
        let deadline = t0 + bound;
        let _ = tokio::time::timeout(bound, self.child.wait()).await;
        let mut left: Vec<u32> = rooms.to_vec();
        while !left.is_empty() && Instant::now() < deadline {
            left.retain(|&p| procfs_alive(p));
            if !left.is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        left.retain(|&p| procfs_alive(p));
        let alive = left.len();
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        for pid in left {
            procs::signal(pid as i32, nix::sys::signal::Signal::SIGKILL);
        }
        (secs, alive)
    }

    /// Stops the master (it ends its rooms), bounded; kills leftovers.
    pub async fn stop(mut self) {
        let pids: Vec<i32> = self
            .rooms()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r.pid)
            .collect();
        procs::stop_child(&mut self.child, Duration::from_secs(8)).await;
        for pid in pids {
            if procs::alive(pid) {
                procs::signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

fn procfs_alive(pid: u32) -> bool {
    procs::alive(pid as i32)
}

/// The folder of the Node.js peers.
pub fn peers_dir(given: Option<&Path>) -> PathBuf {
    given
        .map(Path::to_owned)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("peers"))
}

/// Installs the peers' packages (`npm ci`, or `npm install` without a lock)
/// when `node_modules` is missing. Bounded in time.
pub async fn ensure_node_modules(peers: &Path) -> anyhow::Result<()> {
    if peers.join("node_modules/ws/package.json").is_file() {
        return Ok(());
    }
    let sub = if peers.join("package-lock.json").is_file() {
        "ci"
    } else {
        "install"
    };
    eprintln!("chatbench: npm {sub} in {}", peers.display());
    let mut child = Command::new("npm")
        .args([sub, "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(peers)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot run npm (is Node.js installed?)")?;
    let status = tokio::time::timeout(Duration::from_secs(300), child.wait())
        .await
        .context("npm took more than 300 s")??;
    anyhow::ensure!(status.success(), "npm {sub} failed: {status}");
    Ok(())
}

/// The version of `ws` installed for the peers.
pub fn ws_version(peers: &Path) -> Option<String> {
    let s = std::fs::read_to_string(peers.join("node_modules/ws/package.json")).ok()?;
    let v: Value = serde_json::from_str(&s).ok()?;
    v["version"].as_str().map(str::to_owned)
}

/// A running Node.js peer.
pub struct NodeProc {
    child: Child,
    pub pid: i32,
}

impl NodeProc {
    /// Starts `node SCRIPT ARGS...` in the peers folder and waits for its
    /// `{"listening":...}` line on stdout.
    pub async fn start(
        peers: &Path,
        script: &str,
        args: &[String],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        ensure_node_modules(peers).await?;
        let mut cmd = crate::pin::command("node");
        cmd.arg(script)
            .args(args)
            .current_dir(peers)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start node {script}"))?;
        let pid = child.id().context("node has no pid")? as i32;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("\"listening\"") {
                    return Ok(());
                }
            }
            bail!("node {script} exited before listening")
        })
        .await;
        match ready {
            Ok(Ok(())) => {
                // Keep draining stdout so the peer never blocks on it.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                Ok(Self { child, pid })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let _ = child.start_kill();
                bail!("node {script} did not listen in {START_TIMEOUT:?}")
            }
        }
    }

    pub async fn stop(mut self) {
        procs::stop_child(&mut self.child, Duration::from_secs(5)).await;
    }

    /// Where this peer's CPU time is read: the process and its children.
    pub fn cpu(&self) -> procs::CpuOf {
        procs::CpuOf::Tree(self.pid as u32)
    }
}

/// `node --version`.
pub fn node_version() -> Option<String> {
    let out = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
