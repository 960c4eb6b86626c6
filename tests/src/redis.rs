//! A `redis-server` of the system's packages for the tests (installed by
//! `tests/run`): on a free port, its own temp dir, no persistence
//! (`save ""`), a password (so the masters' `REDIS_URL` carries a secret).
//! It can be killed and started again on the same port. A missing or
//! broken `redis-server` fails the test: it is never skipped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::procs;

/// `$REDIS_SERVER_BIN`, else `redis-server` on the `PATH`.
pub fn redis_binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub password: String,
    dir: tempfile::TempDir,
    /// Starts so far (one log file each).
    generation: u32,
}

impl RedisServer {
    /// On a free port (another is tried when a parallel test took it).
    pub async fn start() -> RedisServer {
        let mut last = String::new();
        for _ in 0..5 {
            let mut r = RedisServer {
                child: None,
                port: procs::free_port(),
                password: crate::random_string(24),
                dir: tempfile::Builder::new()
                    .prefix("chat-tests-redis-")
                    .tempdir()
                    .expect("tempdir"),
                generation: 0,
            };
            match r.spawn().await {
                Ok(()) => return r,
                Err(out) if out.contains("Address already in use") => last = out,
                Err(out) => panic!("{out}"),
            }
        }
        panic!("redis-server found no free port\n{last}");
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/0", self.password, self.port)
    }

    /// Kills it (SIGKILL) and waits for its exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: nothing was saved).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await.unwrap_or_else(|out| panic!("{out}"));
    }

    fn log_path(&self, g: u32) -> PathBuf {
        self.dir.path().join(format!("redis.{g}.log"))
    }

    /// What every start logged.
    pub fn output(&self) -> String {
        (1..=self.generation)
            .map(|g| {
                let log = std::fs::read_to_string(self.log_path(g)).unwrap_or_default();
                format!("--- redis-server start {g} ---\n{log}\n")
            })
            .collect()
    }

    async fn spawn(&mut self) -> Result<(), String> {
        self.generation += 1;
        let g = self.generation;
        // The password goes in the config file, not on a command line.
        let conf = self.dir.path().join(format!("redis.{g}.conf"));
        let text = format!(
            "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {dir}\nrequirepass {pw}\nlogfile {log}\ndaemonize no\n",
            port = self.port,
            dir = self.dir.path().display(),
            pw = self.password,
            log = self.log_path(g).display(),
        );
        std::fs::write(&conf, text).expect("redis config");
        let bin = redis_binary();
        let child = Command::new(&bin)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} — the multi-host tests need redis-server: run tests/run \
                     (it installs it) or set REDIS_SERVER_BIN",
                    bin.display()
                )
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "redis-server exited at start ({status}) on port {}\n{}",
                    self.port,
                    self.output()
                ));
            }
            if self.ping().await.is_ok() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "redis-server did not answer on port {} within 15 s\n{}",
                    self.port,
                    self.output()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `AUTH` then `PING`, in the protocol's inline form.
    pub async fn ping(&self) -> Result<(), String> {
        let talk = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(format!("AUTH {}\r\nPING\r\n", self.password).as_bytes())
                .await
                .map_err(|e| e.to_string())?;
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while !String::from_utf8_lossy(&got).contains("PONG") {
                let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err(format!("closed: {}", String::from_utf8_lossy(&got)));
                }
                got.extend_from_slice(&buf[..n]);
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(2), talk)
            .await
            .map_err(|_| "no answer".to_string())?
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
