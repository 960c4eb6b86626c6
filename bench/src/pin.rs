//! `--pin`: the load generator (this process) on some cores, the servers
//! under test (our master and its rooms, the Node peers and their children)
//! on the others, with `taskset`. Children inherit the affinity of the
//! process that starts them, so pinning the server's first process pins all
//! of them.

use std::process::Stdio;
use std::sync::OnceLock;

use anyhow::{Context, bail};
use serde::Serialize;

/// The cores of each side, as `taskset -c` lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pinning {
    pub load_generator: String,
    pub servers: String,
}

static SERVERS: OnceLock<String> = OnceLock::new();

/// Splits `nproc` cores: the first half for the load generator, the rest for
/// the servers. `None` with fewer than 2 cores.
pub fn split(nproc: usize) -> Option<Pinning> {
    if nproc < 2 {
        return None;
    }
    let half = nproc / 2;
    let list = |a: usize, b: usize| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    };
    Some(Pinning {
        load_generator: list(0, half - 1),
        servers: list(half, nproc - 1),
    })
}

/// Pins every thread of this process to the load generator's cores and
/// makes [`command`] start servers on the others. Call before starting the
/// runtime.
pub fn apply() -> anyhow::Result<Pinning> {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Some(p) = split(nproc) else {
        bail!("--pin needs at least 2 cores; this machine has {nproc}");
    };
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", &p.load_generator])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .context("cannot run taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset -a -p -c {} failed: {status}", p.load_generator);
    }
    // Fails only when already set: apply() is called once.
    let _ = SERVERS.set(p.servers.clone());
    Ok(p)
}

/// A command for a server program: `taskset -c CORES PROGRAM` when pinned.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    match SERVERS.get() {
        Some(cores) => {
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg(cores).arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cores() {
        assert_eq!(split(1), None);
        assert_eq!(
            split(2),
            Some(Pinning {
                load_generator: "0".into(),
                servers: "1".into()
            })
        );
        assert_eq!(
            split(8),
            Some(Pinning {
                load_generator: "0-3".into(),
                servers: "4-7".into()
            })
        );
        assert_eq!(
            split(3),
            Some(Pinning {
                load_generator: "0".into(),
                servers: "1-2".into()
            })
        );
    }
}
