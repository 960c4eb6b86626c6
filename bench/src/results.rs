//! Result files: one JSON document per run (machine facts, date, command
//! line, whether pinned, the results), under `bench/results/`. BENCHMARKS.md's
//! generated tables are rendered from them (`chatbench report`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};

/// Version of the result file format.
pub const FORMAT: u32 = 1;

/// `DIR/<bench>[-pinned]-<HHMMSS>.json`; DIR defaults to
/// `bench/results/<YYYY-MM-DD>` of the source tree. A name already taken gets
/// a counter.
pub fn default_path(
    dir: Option<&Path>,
    bench: &str,
    pinned: bool,
    started: DateTime<Utc>,
) -> PathBuf {
    let dir = dir.map(Path::to_owned).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(started.format("%Y-%m-%d").to_string())
    });
    let stem = format!(
        "{bench}{}-{}",
        if pinned { "-pinned" } else { "" },
        started.format("%H%M%S")
    );
    let mut path = dir.join(format!("{stem}.json"));
    let mut k = 2;
    while path.exists() {
        path = dir.join(format!("{stem}-{k}.json"));
        k += 1;
    }
    path
}

/// Writes a result document (creating its folder).
pub fn write(path: &Path, doc: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_vec_pretty(doc)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_named_for_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::parse_from_rfc3339("2026-12-03T09:30:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = default_path(Some(dir.path()), "capacity", true, t);
        assert_eq!(p, dir.path().join("capacity-pinned-093005.json"));
        write(&p, &serde_json::json!({"a": 1})).unwrap();
        let q = default_path(Some(dir.path()), "capacity", true, t);
        assert_eq!(q, dir.path().join("capacity-pinned-093005-2.json"));
        let r = default_path(None, "rooms", false, t);
        assert!(
            r.ends_with("results/2026-12-03/rooms-093005.json"),
            "{}",
            r.display()
        );
    }
}
