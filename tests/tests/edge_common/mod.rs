//! Shared code of the edge tests (`nginx.rs`, `multihost.rs`): a tiny
//! recording HTTP server, a stand-in load balancer speaking the original
//! chatserver's protocol, a load balancer that never answers, TLS
//! certificates made with the openssl CLI, a real nginx rendered with
//! `nginx/render`, and a WebSocket client over TLS.
//!
//! Everything started here is stopped when its handle is dropped.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chat_tests::{TIMEOUT, procs};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

// ---------------------------------------------------------------------------
// A minimal HTTP/1.1 server (one request per connection), recording requests.
// ---------------------------------------------------------------------------

/// One request as a stub server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The raw request target (path and query, still percent-encoded).
    pub target: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
}

impl Request {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The path split on '/', segments percent-decoded.
    pub fn segments(&self) -> Vec<String> {
        let path = self.target.split('?').next().unwrap_or("");
        path.split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect()
    }
}

/// Decodes `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(hex) = std::str::from_utf8(&b[i + 1..i + 3])
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a handler answers: status and JSON body.
pub type Handler = Arc<dyn Fn(&Request) -> (u16, Value) + Send + Sync>;

/// A running stub server.
pub struct HttpStub {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Request>>>,
    task: JoinHandle<()>,
}

impl HttpStub {
    /// Listens on 127.0.0.1 (a free port) and answers with `handler`.
    pub async fn start(handler: Handler) -> HttpStub {
        Self::start_on(0, handler).await
    }

    /// Listens on 127.0.0.1:`port` (0: any free port).
    pub async fn start_on(port: u16, handler: Handler) -> HttpStub {
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap_or_else(|e| panic!("binding a stub HTTP server on port {port}: {e}"));
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(10),
                        serve_one(stream, peer, handler, recorded),
                    )
                    .await;
                });
            }
        });
        HttpStub {
            port,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Status",
    }
}

async fn serve_one(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Handler,
    recorded: Arc<Mutex<Vec<Request>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let req = Request {
        method,
        target,
        headers,
        body,
        peer,
    };
    let (status, answer) = handler(&req);
    recorded.lock().unwrap().push(req);
    let text = answer.to_string();
    let out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        reason(status),
        text.len()
    );
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

// ---------------------------------------------------------------------------
// The stand-in load balancer.
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Tools: nginx and openssl.
// ---------------------------------------------------------------------------

pub const NGINX: &str = "/usr/sbin/nginx";

/// The nginx binary; fails loudly when it is missing.
pub fn nginx_bin() -> PathBuf {
    let p = PathBuf::from(NGINX);
    assert!(
        p.is_file(),
        "{NGINX} is missing: the edge tests need the real nginx. Run tests/run \
         (it installs nginx and openssl), or apt-get install nginx openssl"
    );
    p
}

/// The openssl CLI; fails loudly when it is missing.
pub fn openssl_bin() -> PathBuf {
    for p in ["/usr/bin/openssl", "/usr/local/bin/openssl"] {
        if Path::new(p).is_file() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "the openssl CLI is missing: the edge tests need it to make certificates. Run tests/run \
         (it installs nginx and openssl), or apt-get install openssl"
    );
}

/// The repository's root (the parent of the `tests` crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate has a parent")
        .to_path_buf()
}

/// `nginx/render`.
pub fn render_script() -> PathBuf {
    let p = repo_root().join("nginx").join("render");
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// Runs a command to completion (at most 30 s), capturing its output.
pub fn run(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => {
            procs::sigkill(pid);
            panic!("{what} did not finish within 30 s");
        }
    }
}

/// Runs a command that must succeed.
#[track_caller]
pub fn run_ok(cmd: &mut Command) -> Output {
    let what = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A private CA and a server certificate for 127.0.0.1 and localhost.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn make() -> Certs {
        let openssl = openssl_bin();
        let dir = tempfile::Builder::new()
            .prefix("chat-edge-certs-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("ca.cnf"),
            "[req]\nprompt = no\ndistinguished_name = dn\nx509_extensions = v3_ca\n\
             [dn]\nCN = chat-tests CA\n\
             [v3_ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n",
        )
        .unwrap();
        std::fs::write(
            d.join("leaf.cnf"),
            "[req]\nprompt = no\ndistinguished_name = dn\n[dn]\nCN = 127.0.0.1\n",
        )
        .unwrap();
        std::fs::write(
            d.join("leaf.ext"),
            "[v3]\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = IP:127.0.0.1,DNS:localhost\n\
             authorityKeyIdentifier = keyid\nsubjectKeyIdentifier = hash\n",
        )
        .unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        run_ok(
            Command::new(&openssl)
                .current_dir(d)
                .args(["req", "-x509", "-config", "ca.cnf", "-nodes", "-days", "2"])
                .args(ec)
                .args(["-keyout", "ca.key", "-out", "ca.pem"]),
        );
        run_ok(
            Command::new(&openssl)
                .current_dir(d)
                .args(["req", "-new", "-config", "leaf.cnf", "-nodes"])
                .args(ec)
                .args(["-keyout", "server.key", "-out", "server.csr"]),
        );
        run_ok(Command::new(&openssl).current_dir(d).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-extensions",
            "v3",
            "-out",
            "server.pem",
        ]));
        Certs {
            ca_pem: d.join("ca.pem"),
            cert: d.join("server.pem"),
            key: d.join("server.key"),
            dir,
        }
    }

    /// An HTTPS client that trusts only this CA (plus the system roots),
    /// speaking HTTP/1.1 (WebSocket upgrades need it).
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca_pem).unwrap();
        let ca = reqwest::Certificate::from_pem(&pem).expect("the CA parses");
        reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(ca)
            .http1_only()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }
}

// ---------------------------------------------------------------------------
// nginx.
// ---------------------------------------------------------------------------

/// What `nginx/render` gets, as command-line options.
#[derive(Debug, Clone)]
pub struct EdgeOpts {
    pub api_upstream: String,
    pub room_ports: (u16, u16),
    pub extra: Vec<String>,
}

/// A running nginx, rendered by `nginx/render` into its own prefix.
pub struct Nginx {
    pub port: u16,
    pub prefix: tempfile::TempDir,
    pub conf: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Renders the configuration with `nginx/render` (panicking if it fails).
    pub fn render(certs: &Certs, port: u16, opts: &EdgeOpts) -> (tempfile::TempDir, PathBuf) {
        let prefix = tempfile::Builder::new()
            .prefix("chat-edge-nginx-")
            .tempdir()
            .unwrap();
        // Workers run as nginx's default user when the tests run as root: let
        // them reach their temp directories.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(prefix.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = prefix.path().join("nginx.conf");
        let mut cmd = Command::new("sh");
        cmd.arg(render_script())
            .args(["--server-name", "localhost"])
            .args(["--listen-addr", "127.0.0.1"])
            .args(["--listen-port", &port.to_string()])
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .args(["--api-upstream", &opts.api_upstream])
            .args([
                "--room-ports",
                &format!("{}-{}", opts.room_ports.0, opts.room_ports.1),
            ])
            .arg("--prefix")
            .arg(prefix.path())
            .args(["--workers", "1", "--worker-connections", "512"])
            .args(["--error-log-level", "info"])
            .args(&opts.extra)
            .arg("--out")
            .arg(&conf)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin");
        run_ok(&mut cmd);
        (prefix, conf)
    }

    /// `nginx -t` on a rendered configuration.
    pub fn check(conf: &Path, prefix: &Path) -> Output {
        run(Command::new(nginx_bin())
            .arg("-t")
            .arg("-c")
            .arg(conf)
            .arg("-p")
            .arg(prefix)
            .arg("-e")
            .arg(prefix.join("logs").join("error.log")))
    }

    /// Renders, checks and starts nginx on a free port; waits until it
    /// accepts connections.
    pub async fn start(certs: &Certs, port: u16, opts: &EdgeOpts) -> Nginx {
        let bin = nginx_bin();
        let (prefix, conf) = Self::render(certs, port, opts);
        let out = Self::check(&conf, prefix.path());
        assert!(
            out.status.success(),
            "nginx -t refused the rendered configuration:\n{}\n----- {} -----\n{}",
            String::from_utf8_lossy(&out.stderr),
            conf.display(),
            std::fs::read_to_string(&conf).unwrap_or_default()
        );
        let stderr = std::fs::File::create(prefix.path().join("nginx.stderr")).unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(prefix.path())
            .arg("-e")
            .arg(prefix.path().join("logs").join("error.log"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut nginx = Nginx {
            port,
            prefix,
            conf,
            child: Some(child),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = nginx.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nginx exited ({status}) at start:\n{}", nginx.logs());
            }
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "nginx did not listen on {port} within 10 s:\n{}",
                    nginx.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        nginx
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn wss_url(&self, path: &str) -> String {
        format!("wss://127.0.0.1:{}{path}", self.port)
    }

    /// nginx's stderr and logs.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["nginx.stderr", "logs/error.log", "logs/access.log"] {
            let p = self.prefix.path().join(name);
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            out.push_str(&format!("===== {} =====\n{text}\n", p.display()));
        }
        out
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- nginx logs -----\n{}", self.logs());
        }
        if let Some(mut child) = self.child.take() {
            stop_nginx(&mut child);
        }
    }
}

/// Stops an nginx started in the foreground: SIGTERM (its master stops the
/// workers), SIGKILL for the master and its workers if it lingers.
pub fn stop_nginx(child: &mut Child) {
    let pid = child.id() as i32;
    let workers = procs::children_of(pid);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    for w in workers {
        procs::sigkill(w);
    }
}

// ---------------------------------------------------------------------------
// A WebSocket client over TLS (through nginx), via an HTTP/1.1 upgrade made
// with reqwest: no TLS feature of tokio-tungstenite is needed.
// ---------------------------------------------------------------------------

pub struct Wss {
    ws: WebSocketStream<reqwest::Upgraded>,
    pub welcome: Value,
}

impl Wss {
    /// Opens `wss://...` (or `https://...`); on a refused handshake, the
    /// HTTP status and body.
    pub async fn connect(http: &reqwest::Client, url: &str) -> Result<Wss, (u16, String)> {
        let url = url
            .strip_prefix("wss://")
            .map(|rest| format!("https://{rest}"))
            .unwrap_or_else(|| url.to_owned());
        let key = generate_key();
        let res = tokio::time::timeout(
            TIMEOUT,
            http.get(&url)
                .header("Connection", "Upgrade")
                .header("Upgrade", "websocket")
                .header("Sec-WebSocket-Version", "13")
                .header("Sec-WebSocket-Key", &key)
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("GET {url} (upgrade): timeout"))
        .unwrap_or_else(|e| panic!("GET {url} (upgrade): {e}"));
        let status = res.status().as_u16();
        if status != 101 {
            let body = res.text().await.unwrap_or_default();
            return Err((status, body));
        }
        let accept = res
            .headers()
            .get("sec-websocket-accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(
            accept,
            derive_accept_key(key.as_bytes()),
            "wrong Sec-WebSocket-Accept from {url}"
        );
        let upgraded = res
            .upgrade()
            .await
            .unwrap_or_else(|e| panic!("upgrading {url}: {e}"));
        let ws = WebSocketStream::from_raw_socket(upgraded, Role::Client, None).await;
        Ok(Wss {
            ws,
            welcome: Value::Null,
        })
    }

    /// Connects and reads `welcome`.
    pub async fn join(http: &reqwest::Client, url: &str) -> Wss {
        let mut c = match Self::connect(http, url).await {
            Ok(c) => c,
            Err((status, body)) => panic!("joining {url}: HTTP {status}: {body}"),
        };
        let w = c.recv_json().await;
        assert_eq!(w["type"], "welcome", "first frame from {url}: {w}");
        c.welcome = w;
        c
    }

    pub fn id(&self) -> String {
        self.welcome["you"]["id"].as_str().unwrap().to_owned()
    }

    /// The next text frame as JSON (pings skipped), at most 5 s.
    pub async fn recv_json(&mut self) -> Value {
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next()).await {
                Err(_) => panic!("no frame within {TIMEOUT:?}"),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {t}"));
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(other) => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next frame of type `kind`, skipping others (at most 5 s each).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        for _ in 0..50 {
            let v = self.recv_json().await;
            if v["type"] == kind {
                return v;
            }
        }
        panic!("no {kind:?} frame among the next 50");
    }

    pub async fn send_json(&mut self, v: Value) {
        tokio::time::timeout(TIMEOUT, self.ws.send(Message::text(v.to_string())))
            .await
            .expect("sending: timeout")
            .expect("sending a frame");
    }

    /// Waits for the server's close frame (at most 5 s): its code and reason;
    /// `None` if the stream ends without one.
    pub async fn expect_close(&mut self) -> Option<(u16, String)> {
        loop {
            match tokio::time::timeout(TIMEOUT, self.ws.next()).await {
                Err(_) => panic!("the connection was not closed within {TIMEOUT:?}"),
                Ok(Some(Ok(Message::Close(f)))) => {
                    return Some(
                        f.map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((1005, String::new())),
                    );
                }
                Ok(Some(Ok(Message::Text(t)))) => panic!("expected a close frame, got {t}"),
                Ok(Some(Ok(_))) => continue,
                Ok(None) | Ok(Some(Err(_))) => return None,
            }
        }
    }

    /// Sends a close frame and waits for the end (at most 5 s).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(TIMEOUT, self.ws.close(None)).await;
        let _ = tokio::time::timeout(TIMEOUT, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}
