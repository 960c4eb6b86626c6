//! The run directory: the master's lock, IPC socket and state files.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunDirError {
    #[error("cannot use run directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another chatserver is already running with run directory {0}")]
    Locked(PathBuf),
    #[error("run directory {path} belongs to uid {owner}, not to this user")]
    NotOwner { path: PathBuf, owner: u32 },
}

/// The run directory, locked for this master's lifetime.
pub struct RunDir {
    pub path: PathBuf,
    _lock: Flock<File>,
}

/// What `chatctl` reads to find this master.
#[derive(Debug, Serialize)]
pub struct MasterInfo {
    pub pid: u32,
    pub port: u16,
    pub admin_port: u16,
    pub admin_url: String,
    pub api_url: String,
    pub version: &'static str,
}

/// A URL to reach a bound address locally (an all-interfaces address is
/// reached on loopback).
pub fn local_url(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => {
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
        }
        std::net::IpAddr::V6(v) if v.is_unspecified() => {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
}

impl RunDir {
    /// Creates and locks the directory; a second master refuses. The
    /// directory is made owner-only (0700) even when it existed: it holds
    /// the IPC socket, which hands out secrets. A directory of another user
    /// is refused.
    pub fn open(path: &Path) -> Result<Self, RunDirError> {
        let io = |source| RunDirError::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(io)?;
        let path = path.canonicalize().map_err(io)?;
        let meta = std::fs::metadata(&path).map_err(io)?;
        let me = nix::unistd::geteuid().as_raw();
        if meta.uid() != me {
            return Err(RunDirError::NotOwner {
                path,
                owner: meta.uid(),
            });
        }
        if meta.permissions().mode() & 0o777 != 0o700 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        let lock_path = path.join("master.lock");
        let file = File::create(&lock_path).map_err(io)?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| RunDirError::Locked(path.clone()))?;
        Ok(Self { path, _lock: lock })
    }

    /// The master's IPC socket.
    pub fn socket(&self) -> PathBuf {
        self.path.join("master.sock")
    }

    fn info_path(&self) -> PathBuf {
        self.path.join("master.json")
    }

    /// Writes `master.json` (once the APIs listen).
    pub fn write_info(&self, info: &MasterInfo) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(info).map_err(std::io::Error::other)?;
        let tmp = self.path.join("master.json.tmp");
        std::fs::write(&tmp, body)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(tmp, self.info_path())
    }

    /// Removes the socket and state files at the end.
    pub fn cleanup(&self) {
        let _ = std::fs::remove_file(self.socket());
        let _ = std::fs::remove_file(self.info_path());
    }
}
