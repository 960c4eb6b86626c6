//! Links `chatserver` as a position-dependent executable (`-no-pie`).
//!
//! Every room is this executable (`chatserver room ...`). A PIE is relocated
//! at load time, and the relocated read-only data (vtables, tables of
//! pointers: about 350 KB here) becomes private memory in every room. Linked
//! at a fixed address it needs no relocation, and those pages stay shared
//! with the file: an idle room costs about half the private memory.
//! The price is that the executable's own image is not placed at a random
//! address (heap, stack, libraries and mappings still are), as with Go's
//! default builds. `CHATSERVER_PIE=1` at build time keeps a PIE.

fn main() {
    println!("cargo::rerun-if-env-changed=CHATSERVER_PIE");
    let pie = std::env::var_os("CHATSERVER_PIE").is_some_and(|v| v == "1");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if linux && !pie {
        println!("cargo::rustc-link-arg-bin=chatserver=-no-pie");
    }
}
