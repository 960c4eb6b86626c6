//! Smoke tests of the benchmark suite: every `chatbench` benchmark runs with
//! tiny parameters against the debug binaries (and the Node.js peers) and
//! writes a result file; `chatbench report` renders tables from them.
//! Correctness only: no timing is asserted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

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

/// What one chatbench run left behind.
struct Outcome {
    doc: Value,
    stdout: String,
    stderr: String,
}

/// Runs `chatbench ARGS --bin-dir … --results-dir DIR` (bounded); the one
/// result file it wrote in DIR.
fn chatbench(args: &[&str], dir: &Path, timeout: Duration) -> Outcome {
    let bin_dir = profile_dir();
    let bench = bin_dir.join("chatbench");
    assert!(
        bench.is_file(),
        "{} does not exist; build it with cargo build -p chatbench -p chatserver -p chatroom",
        bench.display()
    );
    let before: Vec<PathBuf> = json_files(dir);
    let log = dir.join("chatbench.out");
    let err = dir.join("chatbench.err");
    let mut child = Command::new(&bench)
        .args(args)
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--results-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("start chatbench");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait chatbench") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chatbench {args:?} took more than {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&log).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    assert!(
        status.success(),
        "chatbench {args:?} failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let new: Vec<PathBuf> = json_files(dir)
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    assert_eq!(new.len(), 1, "one result file per run: {new:?}\n{stderr}");
    let text = std::fs::read_to_string(&new[0]).expect("results JSON written");
    let doc: Value = serde_json::from_str(&text).expect("results are JSON");
    assert!(doc["machine"]["nproc"].as_u64().unwrap_or(0) >= 1, "{text}");
    assert!(doc["command_line"].is_array(), "{text}");
    assert!(doc["started"].is_string(), "{text}");
    Outcome {
        doc,
        stdout,
        stderr,
    }
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect()
        })
        .unwrap_or_default()
}

/// `chatbench report DIR`'s Markdown.
fn report(dir: &Path) -> String {
    let out = Command::new(profile_dir().join("chatbench"))
        .arg("report")
        .arg(dir)
        .output()
        .expect("run chatbench report");
    assert!(
        out.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Both sides measured.
fn both_sides(name: &str, r: &Value, o: &Outcome) {
    assert!(r.is_object(), "no {name} in the results: {}", o.doc);
    assert!(
        !r["ours"].is_null(),
        "{name}: no result for our server: {}\nstderr:\n{}",
        r["ours_error"],
        o.stderr
    );
    assert!(
        !r["node"].is_null(),
        "{name}: the Node.js side did not measure: {}",
        r["node_error"]
    );
}

#[test]
fn chatbench_all_quick() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = chatbench(&["all", "--quick"], dir.path(), Duration::from_secs(180));
    for name in ["spawn", "fanout", "shootout", "idle", "isolation"] {
        both_sides(name, &o.doc["results"][name], &o);
    }
    let iso = &o.doc["results"]["isolation"];
    assert!(
        iso["node_fork"].is_object(),
        "isolation: the fork-per-room Node peer did not measure: {}",
        iso["node_fork_error"]
    );
    for name in ["fanout", "shootout"] {
        for side in ["ours", "node"] {
            let steps = o.doc["results"][name][side]["steps"]
                .as_array()
                .expect("steps");
            assert!(!steps.is_empty(), "{name}: no steps");
            for s in steps {
                assert_eq!(s["lost"], 0, "{name} {side}: messages lost: {s}");
                assert!(s["delivered"].as_u64().unwrap_or(0) > 0, "{name}: {s}");
                // The server's CPU is read for every step (it may round to 0).
                assert!(
                    s["server_cpu_secs"].as_f64().is_some_and(|c| c >= 0.0),
                    "{name} {side}: no server CPU: {s}"
                );
            }
        }
    }
    assert!(o.stdout.contains("server µs/delivery"), "{}", o.stdout);
}

#[test]
fn capacity_bisection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pin = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    let mut args = vec![
        "capacity",
        "--min",
        "4",
        "--max",
        "12",
        "--max-probes",
        "2",
        "--step-secs",
        "0.5",
        "--inflight",
        "2",
        "--max-messages",
        "100",
    ];
    if pin {
        args.push("--pin");
    }
    let o = chatbench(&args, dir.path(), Duration::from_secs(120));
    let r = &o.doc["results"]["capacity"];
    both_sides("capacity", r, &o);
    let ladder: Vec<u64> = r["ladder"]
        .as_array()
        .expect("ladder")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(ladder.first(), Some(&4), "{r}");
    assert_eq!(ladder.last(), Some(&12), "{r}");
    for side in ["ours", "node"] {
        let s = &r[side];
        let probes = s["probes"].as_array().expect("probes");
        assert!(
            (1..=2).contains(&probes.len()),
            "{side}: at most 2 probes: {s}"
        );
        let passing = s["passing_clients"].as_u64().expect("passing_clients");
        assert!(
            passing == 0 || ladder.contains(&passing),
            "{side}: {passing} is not on the ladder {ladder:?}"
        );
        // Every probe's client count is on the ladder, the first the lowest.
        assert_eq!(probes[0]["clients"].as_u64(), Some(4), "{s}");
        for p in probes {
            let n = p["clients"].as_u64().unwrap_or(0);
            assert!(ladder.contains(&n), "{side}: probe off the ladder: {p}");
        }
        // At this size every probe passes: the search gallops up.
        assert!(passing >= 4, "{side}: the lowest rung failed: {s}");
    }
    if pin {
        assert_eq!(o.doc["pinned"]["servers"], "1", "{}", o.doc["pinned"]);
        assert!(o.stderr.contains("pinned"), "{}", o.stderr);
    }
    let md = report(dir.path());
    assert!(md.contains("| shootout |"), "{md}");
}

#[test]
fn rooms_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = chatbench(
        &["rooms", "--count", "5", "--idle-secs", "1"],
        dir.path(),
        Duration::from_secs(120),
    );
    let r = &o.doc["results"]["rooms"];
    assert_eq!(r["requested"], 5, "{r}");
    assert_eq!(r["created"], 5, "{r}");
    assert_eq!(r["measured"], 5, "{r}");
    assert!(r["rooms_pss_total_mb"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    assert!(r["master_pss_mb"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    assert!(r["master_cores"].as_f64().is_some_and(|c| c >= 0.0), "{r}");
    assert!(r["rooms_cores"].as_f64().is_some_and(|c| c >= 0.0), "{r}");
    assert_eq!(r["rooms_left_after_shutdown"], 0, "{r}");
    assert!(r["shutdown_secs"].as_f64().is_some_and(|s| s >= 0.0), "{r}");
    let md = report(dir.path());
    assert!(md.contains("| 5 / 5 |"), "{md}");
}

#[test]
fn joins_storm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = chatbench(
        &["joins", "--conns", "20", "--parallel", "8"],
        dir.path(),
        Duration::from_secs(120),
    );
    let r = &o.doc["results"]["joins"];
    both_sides("joins", r, &o);
    for side in ["ours", "node"] {
        let s = &r[side];
        assert_eq!(s["welcomed"], 20, "{side}: {s}");
        assert_eq!(s["failed"], 0, "{side}: {s}");
        assert_eq!(s["dropped"], 0, "{side}: {s}");
        assert_eq!(s["latency"]["count"], 20, "{side}: {s}");
    }
    let md = report(dir.path());
    assert!(md.contains("20 of 20 welcomed"), "{md}");
}

#[test]
fn joins_refuses_more_than_the_open_file_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(profile_dir().join("chatbench"))
        .args(["joins", "--conns", "100000000", "--results-dir"])
        .arg(dir.path())
        .output()
        .expect("run chatbench");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("open files"), "{err}");
}
