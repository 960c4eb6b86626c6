//! How the master starts a room's worker process.
//!
//! By default a room is this very executable in its room role:
//! `/proc/self/exe room --room NAME ...` (as nginx and PostgreSQL start
//! their workers), so a `chatserver` file copied alone onto a host runs
//! rooms, and after a graceful restart onto a new binary every room spawned
//! afterwards runs the new code. `--worker-bin` selects a separate
//! `chatroom` executable instead.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use tokio::process::Command;

/// The first argument that selects the room role of `chatserver`.
pub const ROOM_MODE: &str = "room";
/// The process name (`comm`, as `ps` and `pgrep` show it) of a room started
/// in the room role; the executable's own name would be `exe`.
pub const ROOM_PROCESS_NAME: &str = "chatroom";

/// This process's executable through procfs: still the running image after
/// the file on disk is replaced.
const SELF_EXE: &str = "/proc/self/exe";

/// The program a room runs.
#[derive(Debug, Clone)]
pub enum WorkerCmd {
    /// This executable (`/proc/self/exe room ...`); `arg0` is what its
    /// command line shows.
    SelfExe { arg0: OsString },
    /// A separate worker binary (`--worker-bin`).
    Bin(PathBuf),
}

impl WorkerCmd {
    /// The worker program from the configuration.
    pub fn resolve(worker_bin: Option<&Path>) -> std::io::Result<Self> {
        if let Some(bin) = worker_bin {
            return Ok(Self::Bin(bin.to_owned()));
        }
        // Without procfs a room could not be spawned: fail at start, not at
        // the first create.
        std::fs::metadata(SELF_EXE).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot read {SELF_EXE} ({e}); give a room binary with --worker-bin"),
            )
        })?;
        let arg0 = std::env::current_exe()
            .ok()
            .map(|p| trim_deleted(p.as_os_str()))
            .unwrap_or_else(|| OsString::from("chatserver"));
        Ok(Self::SelfExe { arg0 })
    }

    /// The executable a room runs (this one for [`WorkerCmd::SelfExe`]).
    pub fn path(&self) -> PathBuf {
        match self {
            Self::SelfExe { .. } => {
                std::env::current_exe().unwrap_or_else(|_| PathBuf::from(SELF_EXE))
            }
            Self::Bin(p) => p.clone(),
        }
    }

    /// A command that starts a room; the caller adds the room's arguments.
    pub fn command(&self) -> Command {
        match self {
            Self::SelfExe { arg0 } => {
                let mut cmd = Command::new(SELF_EXE);
                cmd.arg0(arg0).arg(ROOM_MODE);
                cmd
            }
            Self::Bin(bin) => Command::new(bin),
        }
    }
}

impl fmt::Display for WorkerCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SelfExe { arg0 } => write!(f, "{} {ROOM_MODE}", Path::new(arg0).display()),
            Self::Bin(bin) => write!(f, "{}", bin.display()),
        }
    }
}

/// After an upgrade the running file is unlinked: procfs shows the old path
/// with " (deleted)".
fn trim_deleted(path: &OsStr) -> OsString {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_bytes();
    let trimmed = bytes.strip_suffix(b" (deleted)").unwrap_or(bytes);
    OsStr::from_bytes(trimmed).to_owned()
}

/// The room role's arguments when this process was started as
/// `chatserver room ...`: the program name then the room's flags, as the
/// worker library parses them. `None` for the master role.
pub fn room_args() -> Option<Vec<OsString>> {
    let mut args = std::env::args_os();
    let _program = args.next()?;
    if args.next()? != ROOM_MODE {
        return None;
    }
    Some(
        std::iter::once(OsString::from("chatserver room"))
            .chain(args)
            .collect(),
    )
}

/// Names the room process `chatroom` (started through `/proc/self/exe` it
/// would be called `exe`).
pub fn name_room_process() {
    if let Ok(name) = std::ffi::CString::new(ROOM_PROCESS_NAME)
        && let Err(e) = nix::sys::prctl::set_name(&name)
    {
        eprintln!("cannot set the process name: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_suffix_is_trimmed() {
        assert_eq!(
            trim_deleted(OsStr::new("/usr/bin/chatserver (deleted)")),
            OsString::from("/usr/bin/chatserver")
        );
        assert_eq!(
            trim_deleted(OsStr::new("/usr/bin/chatserver")),
            OsString::from("/usr/bin/chatserver")
        );
    }

    #[test]
    fn self_exe_command_runs_the_room_role() {
        let cmd = WorkerCmd::SelfExe {
            arg0: "/opt/chatserver".into(),
        };
        assert_eq!(cmd.to_string(), "/opt/chatserver room");
        let std_cmd = cmd.command();
        let std_cmd = std_cmd.as_std();
        assert_eq!(std_cmd.get_program(), OsStr::new(SELF_EXE));
        let args: Vec<&OsStr> = std_cmd.get_args().collect();
        assert_eq!(args, [OsStr::new(ROOM_MODE)]);
        let bin = WorkerCmd::Bin("/opt/chatroom".into());
        assert_eq!(bin.command().as_std().get_program(), "/opt/chatroom");
    }
}
