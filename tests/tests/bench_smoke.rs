//! Smoke test of the benchmark suite: `chatbench all --quick` runs every
//! benchmark with tiny parameters against the debug binaries (and the Node.js
//! peers) and writes a results file with every benchmark in it. Correctness
//! only: no timing is asserted.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bound of the whole run.
const TIMEOUT: Duration = Duration::from_secs(150);

/// The target profile dir (`target/debug`) of this test executable.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    for dir in exe.ancestors().skip(1) {
        if dir.join("chatbench").is_file() {
            return dir.to_owned();
        }
        if dir
            .file_name()
            .is_some_and(|n| n == "debug" || n == "release")
            && dir
                .parent()
                .and_then(|p| p.file_name())
                .is_some_and(|n| n == "target")
        {
            return dir.to_owned();
        }
    }
    panic!("cannot find the target dir from {}", exe.display());
}

#[test]
fn chatbench_all_quick() {
    let dir = profile_dir();
    let bench = dir.join("chatbench");
    assert!(
        bench.is_file(),
        "{} does not exist; build it with cargo build -p chatbench -p chatserver -p chatroom",
        bench.display()
    );
    let out = tempfile::tempdir().expect("tempdir");
    let json = out.path().join("results.json");
    let log = out.path().join("chatbench.log");
    let mut child = Command::new(&bench)
        .args(["all", "--quick", "--bin-dir"])
        .arg(&dir)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(out.path().join("chatbench.err")).unwrap())
        .spawn()
        .expect("start chatbench");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait chatbench") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chatbench all --quick took more than {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&log).unwrap_or_default();
    let stderr = std::fs::read_to_string(out.path().join("chatbench.err")).unwrap_or_default();
    assert!(
        status.success(),
        "chatbench failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let text = std::fs::read_to_string(&json).expect("results JSON written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("results are JSON");
    for name in ["spawn", "fanout", "shootout", "idle", "isolation"] {
        let r = &v["results"][name];
        assert!(r.is_object(), "no {name} in the results: {text}");
        assert!(
            !r["ours"].is_null(),
            "{name}: no result for our server: {}\nstderr:\n{stderr}",
            r["ours_error"]
        );
        assert!(
            !r["node"].is_null(),
            "{name}: the Node.js side did not measure: {}",
            r["node_error"]
        );
    }
    for name in ["fanout", "shootout"] {
        let steps = v["results"][name]["ours"]["steps"]
            .as_array()
            .expect("steps");
        assert!(!steps.is_empty(), "{name}: no steps");
        for s in steps {
            assert_eq!(s["lost"], 0, "{name}: messages lost: {s}");
            assert!(s["delivered"].as_u64().unwrap_or(0) > 0, "{name}: {s}");
        }
    }
}
