//! Restarting the master in place (SIGHUP or `POST /api/v1/restart`): the
//! process re-executes its binary (possibly a new version installed over
//! it) with the same arguments and environment. Rooms keep running: they
//! lose their IPC link for a moment, reconnect, and the new image adopts
//! them. Every descriptor is close-on-exec, so the APIs, the socket and the
//! run-directory lock are released by the exec.

use std::ffi::CString;

use anyhow::Context;

/// Environment variable through which a re-executed master learns the
/// ports its predecessor bound (`MAIN,ADMIN`): a master started with port 0
/// keeps its addresses across a restart in place.
const BOUND_PORTS_ENV: &str = "CHATSERVER_BOUND_PORTS";

/// The ports to bind: `configured`, except that a port configured as 0 is
/// the one the previous image bound, when this process is a re-execution.
pub fn inherited_ports(configured: (u16, u16)) -> (u16, u16) {
    pick_ports(configured, std::env::var(BOUND_PORTS_ENV).ok().as_deref())
}

fn pick_ports(configured: (u16, u16), inherited: Option<&str>) -> (u16, u16) {
    let inherited = inherited.and_then(|v| {
        let (main, admin) = v.split_once(',')?;
        Some((main.parse::<u16>().ok()?, admin.parse::<u16>().ok()?))
    });
    let pick = |conf: u16, prev: Option<u16>| match prev {
        Some(p) if conf == 0 => p,
        _ => conf,
    };
    (
        pick(configured.0, inherited.map(|i| i.0)),
        pick(configured.1, inherited.map(|i| i.1)),
    )
}

/// Replaces this process with a fresh start of the same binary, which binds
/// `bound` (the room API's and the admin API's ports) where it was asked
/// for port 0.
pub fn exec_self(bound: (u16, u16)) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    // After an upgrade the old file is unlinked: /proc shows " (deleted)".
    let exe = exe
        .to_str()
        .map(|s| s.trim_end_matches(" (deleted)").to_owned())
        .context("executable path is not UTF-8")?;
    let path = CString::new(exe.clone()).context("executable path has a NUL")?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_encoded_bytes()))
        .collect::<Result<_, _>>()
        .context("an argument has a NUL")?;
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != BOUND_PORTS_ENV)
        .map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv)
        })
        .collect::<Result<_, _>>()
        .context("an environment variable has a NUL")?;
    env.push(
        CString::new(format!("{BOUND_PORTS_ENV}={},{}", bound.0, bound.1))
            .context("port list has a NUL")?,
    );
    tracing::info!(exe = %exe, "re-executing the master");
    let err =
        nix::unistd::execve(&path, &args, &env).map_err(|e| anyhow::anyhow!("exec {exe}: {e}"));
    err.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_port_zero_is_inherited() {
        assert_eq!(pick_ports((0, 8090), None), (0, 8090));
        assert_eq!(pick_ports((0, 8090), Some("41000,42000")), (41000, 8090));
        assert_eq!(pick_ports((0, 0), Some("41000,42000")), (41000, 42000));
        assert_eq!(pick_ports((80, 0), Some("41000,42000")), (80, 42000));
        assert_eq!(pick_ports((0, 0), Some("garbage")), (0, 0));
    }
}
