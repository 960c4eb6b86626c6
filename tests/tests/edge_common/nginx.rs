//! A real nginx rendered with `nginx/render` in front of a master.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chat_tests::procs;
use tokio::net::TcpStream;

use super::*;

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
