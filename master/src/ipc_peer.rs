//! Who is on the other end of the IPC socket. The socket hands out the
//! server's secrets and orders the adoption (and so the signalling) of a
//! pid: only a room worker of this master's user may use it.
//!
//! - the peer's uid (`SO_PEERCRED`) must be the master's;
//! - the pid a `Hello` claims must be the peer's own pid;
//! - that process must run the master's worker binary or the master's own
//!   executable (`chatserver room`), as `/proc/<pid>/exe` tells.

use std::path::{Path, PathBuf};

use thiserror::Error;
use tokio::net::unix::UCred;

/// Why a peer was refused.
#[derive(Debug, Error)]
pub enum PeerRefused {
    #[error("the peer's credentials are unknown: {0}")]
    NoCredentials(std::io::Error),
    #[error("the peer runs as uid {peer}, not as this master's uid {ours}")]
    Uid { peer: u32, ours: u32 },
    #[error("the hello claims pid {claimed} but comes from pid {peer:?}")]
    Pid { claimed: u32, peer: Option<i32> },
    #[error("pid {pid} runs {exe}, not a room worker")]
    NotAWorker { pid: u32, exe: String },
}

/// The checks, with what they compare against.
#[derive(Debug, Clone)]
pub struct PeerCheck {
    uid: u32,
    /// Executables a worker may run (canonical paths).
    exes: Vec<PathBuf>,
}

impl PeerCheck {
    /// A check for workers of `worker_bin` (or of this executable).
    pub fn new(worker_bin: &Path) -> Self {
        let mut exes = Vec::new();
        for p in [Some(worker_bin.to_owned()), std::env::current_exe().ok()]
            .into_iter()
            .flatten()
        {
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            if !exes.contains(&p) {
                exes.push(p);
            }
        }
        Self {
            uid: nix::unistd::geteuid().as_raw(),
            exes,
        }
    }

    /// The peer runs as this master's user.
    pub fn user(&self, cred: std::io::Result<UCred>) -> Result<UCred, PeerRefused> {
        let cred = cred.map_err(PeerRefused::NoCredentials)?;
        if cred.uid() != self.uid {
            return Err(PeerRefused::Uid {
                peer: cred.uid(),
                ours: self.uid,
            });
        }
        Ok(cred)
    }

    /// The pid a hello claims is the peer's, and it runs a worker binary.
    pub fn worker(&self, cred: &UCred, claimed: u32) -> Result<(), PeerRefused> {
        if cred.pid().and_then(|p| u32::try_from(p).ok()) != Some(claimed) || claimed == 0 {
            return Err(PeerRefused::Pid {
                claimed,
                peer: cred.pid(),
            });
        }
        let exe = std::fs::read_link(format!("/proc/{claimed}/exe")).map_err(|e| {
            PeerRefused::NotAWorker {
                pid: claimed,
                exe: format!("<unreadable: {e}>"),
            }
        })?;
        if self.exes.contains(&running_path(&exe)) {
            Ok(())
        } else {
            Err(PeerRefused::NotAWorker {
                pid: claimed,
                exe: exe.display().to_string(),
            })
        }
    }
}

/// The path a process was started from: a binary replaced since (an
/// upgrade in place) reads as `<path> (deleted)`.
fn running_path(exe: &Path) -> PathBuf {
    let s = exe.to_string_lossy();
    match s.strip_suffix(" (deleted)") {
        Some(p) => PathBuf::from(p),
        None => exe.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_uid_pid_and_executable() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let me = std::process::id();
        // This test binary is not a worker binary...
        let check = PeerCheck {
            exes: vec![PathBuf::from("/nonexistent/chatroom")],
            ..PeerCheck::new(Path::new("/nonexistent/chatroom"))
        };
        let cred = check.user(a.peer_cred()).unwrap();
        assert!(matches!(
            check.worker(&cred, me),
            Err(PeerRefused::NotAWorker { .. })
        ));
        assert!(matches!(
            check.worker(&cred, me + 1),
            Err(PeerRefused::Pid { .. })
        ));
        // ...but the master's own executable is.
        assert!(
            PeerCheck::new(Path::new("/nonexistent/chatroom"))
                .worker(&cred, me)
                .is_ok()
        );
        let other = PeerCheck {
            uid: check.uid + 1,
            ..check
        };
        assert!(matches!(
            other.user(a.peer_cred()),
            Err(PeerRefused::Uid { .. })
        ));
    }

    #[test]
    fn a_replaced_binary_is_still_recognised() {
        assert_eq!(
            running_path(Path::new("/srv/bin/chatroom (deleted)")),
            PathBuf::from("/srv/bin/chatroom")
        );
    }
}
