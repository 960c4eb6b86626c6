//! Restarting the master in place (SIGHUP or `POST /api/v1/restart`): the
//! process re-executes its binary (possibly a new version installed over
//! it) with the same arguments and environment. Rooms keep running: they
//! lose their IPC link for a moment, reconnect, and the new image adopts
//! them. Every descriptor is close-on-exec, so the APIs, the socket and the
//! run-directory lock are released by the exec.

use std::ffi::CString;

use anyhow::Context;

/// Replaces this process with a fresh start of the same binary.
pub fn exec_self() -> anyhow::Result<()> {
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
    tracing::info!(exe = %exe, "re-executing the master");
    let err = nix::unistd::execv(&path, &args).map_err(|e| anyhow::anyhow!("exec {exe}: {e}"));
    err.map(|_| ())
}
