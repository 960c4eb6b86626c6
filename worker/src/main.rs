//! `chatroom`: one chat room as its own executable. The same code also runs
//! as `chatserver room ...` (the master's default); see the library.

fn main() -> anyhow::Result<()> {
    chatroom::run_from_args(std::env::args_os())
}
