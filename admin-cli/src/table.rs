//! Human output: the rooms table, key/value blocks, sizes and durations.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde_json::Value;

/// A JSON value as short text (`-` when missing).
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        other => other.to_string(),
    }
}

/// Seconds as `1d 2h 3m 4s` (largest units only, at most three).
pub fn secs(total: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut rest = total;
    let mut parts = Vec::new();
    for (size, unit) in units {
        let n = rest / size;
        rest %= size;
        if n > 0 || (parts.is_empty() && size == 1) {
            parts.push(format!("{n}{unit}"));
        }
    }
    parts.truncate(3);
    parts.join(" ")
}

/// An ISO 8601 duration such as `P1DT2H3M4S` as `1d 2h 3m 4s`; anything
/// else unchanged.
pub fn iso_duration(s: &str) -> String {
    let Some(body) = s.strip_prefix('P') else {
        return s.to_owned();
    };
    let mut total: f64 = 0.0;
    let mut num = String::new();
    let mut in_time = false;
    for c in body.chars() {
        match c {
            'T' => in_time = true,
            '0'..='9' | '.' => num.push(c),
            unit => {
                let n: f64 = match num.parse() {
                    Ok(n) => n,
                    Err(_) => return s.to_owned(),
                };
                num.clear();
                total += n * match (unit, in_time) {
                    ('D', false) => 86_400.0,
                    ('W', false) => 7.0 * 86_400.0,
                    ('H', true) => 3_600.0,
                    ('M', true) => 60.0,
                    ('S', true) => 1.0,
                    _ => return s.to_owned(),
                };
            }
        }
    }
    if !num.is_empty() {
        return s.to_owned();
    }
    secs(total as u64)
}

/// Bytes as `1.5 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

fn new_table() -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

/// The rooms table.
pub fn rooms(rooms: &[Value]) -> String {
    if rooms.is_empty() {
        return "no rooms".into();
    }
    let mut t = new_table();
    t.set_header(vec![
        "NAME", "PORT", "PID", "STATUS", "MEMBERS", "CONNS", "MSGS IN", "MSGS OUT", "UPTIME",
    ]);
    for r in rooms {
        t.add_row(vec![
            text(&r["name"]),
            text(&r["port"]),
            text(&r["pid"]),
            text(&r["status"]),
            text(&r["members"]),
            text(&r["connections"]),
            text(&r["messages_in"]),
            text(&r["messages_out"]),
            r["uptime_secs"]
                .as_u64()
                .map(secs)
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    for i in [1, 2, 4, 5, 6, 7, 8] {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.to_string()
}

/// Aligned `key  value` lines.
pub fn pairs(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}").trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        assert_eq!(secs(0), "0s");
        assert_eq!(secs(59), "59s");
        assert_eq!(secs(3661), "1h 1m 1s");
        assert_eq!(secs(90_061), "1d 1h 1m");
        assert_eq!(iso_duration("PT1H1M1S"), "1h 1m 1s");
        assert_eq!(iso_duration("P1DT0H0M5S"), "1d 5s");
        assert_eq!(iso_duration("PT0H0M0S"), "0s");
        assert_eq!(iso_duration("weird"), "weird");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    #[test]
    fn table_has_rows() {
        let t = rooms(&[
            json!({"name":"alpha","port":34000,"pid":12,"status":"ready",
            "members":2,"connections":3,"messages_in":4,"messages_out":5,"uptime_secs":61}),
        ]);
        assert!(
            t.contains("alpha") && t.contains("34000") && t.contains("1m 1s"),
            "{t}"
        );
        assert_eq!(rooms(&[]), "no rooms");
        assert_eq!(text(&json!(null)), "-");
    }
}
