//! The operator's admin API against a real server: room listings, notices,
//! kicks, drain and resume, room restarts, metrics, log level, open routes,
//! wrong keys and the master's in-place restart.

use std::collections::BTreeMap;
use std::time::Duration;

use chat_tests::procs::pid_alive;
use chat_tests::{Client, Event, Resp, Server, ServerOpts, token, wait_for};
use reqwest::Method;
use serde_json::{Value, json};

/// Bound of the waits for the rooms' periodic reports (every 500 ms).
const REPORT_WAIT: Duration = Duration::from_secs(10);

// ---- helpers ----

/// An admin request with the admin key and an optional JSON body.
async fn admin_body(s: &Server, method: Method, path: &str, body: Option<&str>) -> Resp {
    s.request(method, &s.admin_url(path), Some(&s.admin_key), body)
        .await
}

/// `GET /api/v1/rooms/{name}` on the admin API, expecting 200: its `data`.
async fn admin_room(s: &Server, name: &str) -> Value {
    let r = s.admin(Method::GET, &format!("/api/v1/rooms/{name}")).await;
    r.expect(200);
    r.data().clone()
}

/// `GET /api/v1/rooms` on the admin API: rooms by name.
async fn admin_rooms(s: &Server) -> BTreeMap<String, Value> {
    let r = s.admin(Method::GET, "/api/v1/rooms").await;
    r.expect(200);
    r.data()
        .as_array()
        .unwrap_or_else(|| panic!("rooms is not an array: {}", r.text))
        .iter()
        .map(|room| (room["name"].as_str().unwrap_or("").to_owned(), room.clone()))
        .collect()
}

fn u64_of(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned integer: {v}"))
}

/// Asserts a JSON error answer with `status` whose message contains `part`.
#[track_caller]
fn assert_error(r: &Resp, status: u16, part: &str) {
    assert_eq!(r.status, status, "body: {}", r.text);
    assert!(
        r.content_type().starts_with("application/json"),
        "content type {:?}: {}",
        r.content_type(),
        r.text
    );
    let msg = r.json["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in the error answer: {}", r.text));
    assert!(msg.contains(part), "message {msg:?} lacks {part:?}");
}

/// Polls `/readyz` until it answers `status`; returns the answer.
async fn readyz_becomes(s: &Server, status: u16) -> Resp {
    let url = s.admin_url("/readyz");
    wait_for(
        Duration::from_secs(10),
        &format!("/readyz to answer {status}"),
        || async {
            let r = s.request(Method::GET, &url, None, None).await;
            (r.status == status).then_some(r)
        },
    )
    .await
}

/// Asserts that the frames a client got before a `pong` hold no notice and
/// no `closing`.
#[track_caller]
fn assert_nothing_from_operators(frames: &[Value]) {
    assert!(
        frames
            .iter()
            .all(|f| f["type"] != "notice" && f["type"] != "closing"),
        "unexpected frames: {frames:?}"
    );
}

/// A new guest connection's fate: `Ok(client)` after a `welcome`, or
/// `Err((code, reason))` when the server closed it instead.
async fn try_join(port: u16, name: &str) -> Result<Client, (u16, String)> {
    let mut c = Client::try_connect(port, &format!("name={name}"))
        .await
        .unwrap_or_else(|e| panic!("connecting to room port {port}: {e}"));
    match c.next_event(chat_tests::TIMEOUT).await {
        Event::Json(v) if v["type"] == "welcome" => {
            c.welcome = v;
            Ok(c)
        }
        Event::Close(Some(cr)) => Err(cr),
        other => panic!("join as {name}: expected welcome or a close frame, got {other:?}"),
    }
}

/// One `say` from `from`, acked, and received by `to`.
async fn chat(from: &mut Client, to: &mut Client, text: &str) -> u64 {
    let seq = from.say_acked(text).await;
    let m = to.recv_type("message").await;
    assert_eq!(m["text"], text, "{m}");
    assert_eq!(m["seq"], seq, "{m}");
    seq
}

// ---- Prometheus text format ----

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
struct Exposition {
    /// Family name → type.
    types: BTreeMap<String, String>,
    /// Family name → help text.
    helps: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|e| format!("bad value {v:?}: {e}")),
    }
}

/// Parses `{a="x",b="y\"z"}` at the start of `s`; returns the labels and the
/// rest after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = rest[..eq].trim();
        if !valid_metric_name(name) || name.contains(':') {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = rest[end + 1..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err(format!("expected , or }} after a label, got {rest:?}"));
        }
    }
}

/// Parses the Prometheus text format (0.0.4), strictly: a TYPE comes before
/// the samples of its family and at most once.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut e = Exposition::default();
    let mut seen_samples_of: std::collections::BTreeSet<String> = Default::default();
    for (i, line) in text.lines().enumerate() {
        let ctx = |m: String| format!("line {}: {m}: {line:?}", i + 1);
        let line = line.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("TYPE") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| ctx("TYPE without name".into()))?;
                    let kind = parts
                        .next()
                        .ok_or_else(|| ctx("TYPE without type".into()))?
                        .trim();
                    if !valid_metric_name(name) {
                        return Err(ctx(format!("bad metric name {name:?}")));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(ctx(format!("unknown type {kind:?}")));
                    }
                    if seen_samples_of.contains(name) {
                        return Err(ctx(format!("TYPE of {name} after its samples")));
                    }
                    if e.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(ctx(format!("second TYPE for {name}")));
                    }
                }
                Some("HELP") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| ctx("HELP without name".into()))?;
                    let help = parts.next().unwrap_or("").to_owned();
                    if e.helps.insert(name.to_owned(), help).is_some() {
                        return Err(ctx(format!("second HELP for {name}")));
                    }
                }
                _ => {} // other comments are allowed
            }
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .ok_or_else(|| ctx("sample without value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(ctx(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(ctx)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value =
            parse_value(fields.next().ok_or_else(|| ctx("no value".into()))?).map_err(ctx)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| ctx(format!("bad timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(ctx("trailing fields".into()));
        }
        seen_samples_of.insert(e.family_of(name).to_owned());
        e.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(e)
}

impl Exposition {
    /// The family a sample belongs to (`x_bucket`, `x_sum`, `x_count` of a
    /// histogram or summary `x` belong to `x`).
    fn family_of<'a>(&self, sample: &'a str) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.strip_suffix(suffix)
                && matches!(
                    self.types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                )
            {
                return base;
            }
        }
        sample
    }

    /// Samples named `name` whose labels include `labels`.
    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample `name{labels}`, if present.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.find(name, labels);
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches several samples: {found:?}"
        );
        found.first().map(|s| s.value)
    }
}

/// Scrapes `/metrics` without a key and parses it.
async fn scrape(s: &Server) -> Exposition {
    let r = s
        .request(Method::GET, &s.admin_url("/metrics"), None, None)
        .await;
    r.expect(200);
    assert!(
        r.content_type().starts_with("text/plain"),
        "content type {:?}",
        r.content_type()
    );
    parse_exposition(&r.text).unwrap_or_else(|e| panic!("bad exposition: {e}\n{}", r.text))
}

#[test]
fn exposition_parser_handles_the_format() {
    let text = "# HELP a_total A counter.\n# TYPE a_total counter\na_total 3\n\
                # TYPE g gauge\ng{state=\"re\\\"ady\",x=\"1\"} 2.5 1700000000000\n\
                # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    let e = parse_exposition(text).unwrap();
    assert_eq!(e.value("a_total", &[]), Some(3.0));
    assert_eq!(e.value("g", &[("state", "re\"ady")]), Some(2.5));
    assert_eq!(e.family_of("h_bucket"), "h");
    assert_eq!(e.value("h_bucket", &[("le", "+Inf")]), Some(2.0));
    assert_eq!(e.helps["a_total"], "A counter.");
    assert!(parse_exposition("x 1\n# TYPE x gauge\n").is_err());
    assert!(parse_exposition("x{a=1} 1\n").is_err());
    assert!(parse_exposition("x one\n").is_err());
    assert!(parse_exposition("# TYPE x gauge\n# TYPE x gauge\n").is_err());
}

// ---- rooms ----

#[tokio::test]
async fn rooms_report_port_pid_counts_memory_and_settings() {
    let s = Server::default_server().await;
    let started = std::time::Instant::now();
    let port = s
        .create_room_settings("alpha", Some(json!({"max_members": 7, "history_size": 50})))
        .await;
    let beta_port = s.create_room("beta").await;
    let mut a = Client::guest(port, "ann").await;
    let mut b = Client::guest(port, "bob").await;
    chat(&mut a, &mut b, "hello").await;
    chat(&mut b, &mut a, "hi ann").await;

    // Counts arrive with the rooms' periodic reports: poll, bounded.
    let alpha = wait_for(REPORT_WAIT, "alpha's counts in the list", || async {
        let rooms = admin_rooms(&s).await;
        let r = rooms.get("alpha")?.clone();
        (r["connections"] == 2
            && r["members"] == 2
            && r["messages_in"].as_u64() >= Some(2)
            && r["messages_out"].as_u64() >= Some(2))
        .then_some(r)
    })
    .await;
    assert_eq!(alpha["name"], "alpha");
    assert_eq!(u64_of(&alpha, "port"), u64::from(port), "{alpha}");
    let pid = u64_of(&alpha, "pid");
    assert!(pid > 0 && pid_alive(pid as i32), "pid {pid} is not alive");
    assert_ne!(pid, s.pid as u64, "the room runs in the master: {alpha}");
    assert_eq!(alpha["status"], "ready", "{alpha}");
    assert_eq!(u64_of(&alpha, "restarts"), 0, "{alpha}");
    assert!(u64_of(&alpha, "rss_bytes") > 0, "{alpha}");
    assert!(
        u64_of(&alpha, "uptime_secs") <= started.elapsed().as_secs() + 1,
        "uptime longer than the test: {alpha}"
    );
    assert_eq!(alpha["settings"]["max_members"], 7, "{alpha}");
    assert_eq!(alpha["settings"]["history_size"], 50, "{alpha}");
    assert!(alpha.get("error").is_none(), "{alpha}");

    // The one-room route agrees.
    let one = admin_room(&s, "alpha").await;
    for f in [
        "name", "port", "pid", "status", "settings", "epoch", "created",
    ] {
        assert_eq!(one[f], alpha[f], "{f}: {one} vs {alpha}");
    }
    assert!(u64_of(&one, "messages_in") >= u64_of(&alpha, "messages_in"));
    assert!(u64_of(&one, "rss_bytes") > 0, "{one}");

    // The idle room: its own port and pid, no traffic.
    let beta = admin_room(&s, "beta").await;
    assert_eq!(u64_of(&beta, "port"), u64::from(beta_port), "{beta}");
    assert_ne!(beta["pid"], alpha["pid"]);
    assert_eq!(beta["connections"], 0, "{beta}");
    assert_eq!(beta["members"], 0, "{beta}");
    assert_eq!(beta["messages_in"], 0, "{beta}");
    assert!(u64_of(&beta, "rss_bytes") > 0, "{beta}");
    assert_eq!(admin_rooms(&s).await.len(), 2);

    // Counts go down once clients leave.
    assert!(b.close().await);
    wait_for(REPORT_WAIT, "alpha's connections to drop", || async {
        let r = admin_room(&s, "alpha").await;
        (r["connections"] == 1 && r["members"] == 1).then_some(())
    })
    .await;

    // Unknown rooms: 404 with a JSON message.
    for name in ["ghost", "no-such-room"] {
        let r = s.admin(Method::GET, &format!("/api/v1/rooms/{name}")).await;
        assert_error(&r, 404, name);
        assert_eq!(r.json, json!({"message": format!("no room {name}")}));
    }
}

// ---- broadcast ----

#[tokio::test]
async fn broadcast_reaches_every_room_and_room_broadcast_only_one() {
    let s = Server::default_server().await;
    let pa = s.create_room("north").await;
    let pb = s.create_room("south").await;
    let mut a1 = Client::guest(pa, "a1").await;
    let mut a2 = Client::guest(pa, "a2").await;
    let mut b1 = Client::guest(pb, "b1").await;

    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/broadcast",
        Some(r#"{"text":"maintenance at 22:00"}"#),
    )
    .await;
    r.expect(200);
    assert_eq!(r.data()["rooms"], 2, "{}", r.text);
    for c in [&mut a1, &mut a2, &mut b1] {
        let n = c.recv_type("notice").await;
        assert_eq!(n, json!({"type":"notice","text":"maintenance at 22:00"}));
    }

    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/north/broadcast",
        Some(r#"{"text":"north only"}"#),
    )
    .await;
    r.expect(200);
    assert_eq!(
        r.json,
        json!({"data":{"name":"north","message":"Broadcast sent"}})
    );
    for c in [&mut a1, &mut a2] {
        let n = c.recv_type("notice").await;
        assert_eq!(n, json!({"type":"notice","text":"north only"}));
    }
    // South got nothing: a ping round trip shows no notice, and the next
    // notice south gets is its own.
    assert_nothing_from_operators(&b1.sync().await);
    admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/south/broadcast",
        Some(r#"{"text":"south only"}"#),
    )
    .await
    .expect(200);
    let (n, before) = b1.recv_type_collect("notice").await;
    assert_eq!(n["text"], "south only", "{n}");
    assert_nothing_from_operators(&before);
    assert_nothing_from_operators(&a1.sync().await);

    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/ghost/broadcast",
        Some(r#"{"text":"anyone?"}"#),
    )
    .await;
    assert_error(&r, 404, "no room ghost");
}

#[tokio::test]
async fn broadcast_bad_bodies_are_refused_and_send_nothing() {
    let s = Server::default_server().await;
    let port = s.create_room("quiet").await;
    let mut c = Client::guest(port, "ann").await;
    let too_long = json!({"text": "x".repeat(4001)}).to_string();
    let bad: Vec<(&str, Option<&str>)> = vec![
        ("missing text", Some("{}")),
        ("unknown field", Some(r#"{"text":"hi","urgent":true}"#)),
        ("empty text", Some(r#"{"text":""}"#)),
        ("blank text", Some(r#"{"text":"   "}"#)),
        ("text not a string", Some(r#"{"text":5}"#)),
        ("null text", Some(r#"{"text":null}"#)),
        ("not JSON", Some("text=hi")),
        ("no body", None),
        ("4001 characters", Some(too_long.as_str())),
    ];
    for path in ["/api/v1/broadcast", "/api/v1/rooms/quiet/broadcast"] {
        for (what, body) in &bad {
            let r = admin_body(&s, Method::POST, path, *body).await;
            assert_eq!(r.status, 400, "{path} with {what}: {}", r.text);
            assert!(
                r.json["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{path} with {what}: no message: {}",
                r.text
            );
        }
    }
    // 4000 characters are fine.
    let max = "y".repeat(4000);
    admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/quiet/broadcast",
        Some(&json!({"text": max}).to_string()),
    )
    .await
    .expect(200);
    let (n, before) = c.recv_type_collect("notice").await;
    assert_eq!(n["text"].as_str().map(str::len), Some(4000));
    // No refused body produced a notice.
    assert_nothing_from_operators(&before);
    assert_nothing_from_operators(&c.sync().await);
}

/// The admin bodies are JSON objects; an array carrying the fields in order
/// (serde's default for structs) must be refused like any other non-object.
#[tokio::test]
async fn array_bodies_are_refused() {
    let s = Server::default_server().await;
    let port = s.create_room("arr").await;
    let mut c = Client::guest(port, "ann").await;
    let uid = c.id();
    let cases = [
        (Method::POST, "/api/v1/broadcast", json!(["array notice"])),
        (
            Method::POST,
            "/api/v1/rooms/arr/broadcast",
            json!(["array notice"]),
        ),
        (
            Method::POST,
            "/api/v1/rooms/arr/kick",
            json!([uid, "array kick"]),
        ),
        (Method::POST, "/api/v1/drain", json!([true])),
        (Method::PUT, "/api/v1/log-level", json!(["debug"])),
    ];
    let mut accepted = Vec::new();
    for (method, path, body) in cases {
        let r = admin_body(&s, method.clone(), path, Some(&body.to_string())).await;
        if r.status != 400 {
            accepted.push(format!("{method} {path} {body} -> {} {}", r.status, r.text));
        }
    }
    // What the accepted bodies did to the client.
    c.send_json(json!({"type": "ping"})).await;
    let mut effects = Vec::new();
    loop {
        match c.next_event(chat_tests::TIMEOUT).await {
            Event::Json(v) if v["type"] == "pong" => break,
            Event::Timeout => panic!("no pong; frames {effects:?}"),
            ev => {
                let end = matches!(ev, Event::Close(_) | Event::Ended | Event::Error(_));
                effects.push(format!("{ev:?}"));
                if end {
                    break;
                }
            }
        }
    }
    assert!(
        accepted.is_empty(),
        "array bodies accepted as objects:\n{}\nthe client got: {effects:?}",
        accepted.join("\n")
    );
}

// ---- kick ----

#[tokio::test]
async fn kick_closes_every_connection_of_the_user_with_4007() {
    let s = Server::start(ServerOpts::new().with_jwt()).await;
    let secret = s.jwt_secret.clone().unwrap();
    let port = s.create_room("class").await;
    let t1 = token::member(&secret, "u1", "class");
    let t2 = token::member(&secret, "u2", "class");
    let mut phone = Client::with_token(port, &t1).await;
    let mut laptop = Client::with_token(port, &t1).await;
    let mut other = Client::with_token(port, &t2).await;
    assert_eq!(phone.id(), laptop.id());

    // Bad bodies first: nobody is kicked.
    for (what, body) in [
        ("missing user", r#"{"reason":"spam"}"#),
        ("unknown field", r#"{"user":"u1","ban":true}"#),
        ("user not a string", r#"{"user":1}"#),
        ("not JSON", "u1"),
    ] {
        let r = admin_body(&s, Method::POST, "/api/v1/rooms/class/kick", Some(body)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
    }
    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/ghost/kick",
        Some(r#"{"user":"u1"}"#),
    )
    .await;
    assert_error(&r, 404, "no room ghost");
    for c in [&mut phone, &mut laptop, &mut other] {
        c.sync().await;
    }

    let uid = phone.id();
    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/class/kick",
        Some(&json!({"user": uid, "reason": "spamming the class"}).to_string()),
    )
    .await;
    r.expect(200);
    assert_eq!(
        r.json,
        json!({"data":{"name":"class","user":uid,"message":"Kicked"}})
    );
    for c in [&mut phone, &mut laptop] {
        let (code, reason) = c.expect_close().await;
        assert_eq!(code, 4007, "reason {reason:?}");
        assert!(reason.contains("spamming the class"), "reason {reason:?}");
    }
    // The other member sees u1 leave and stays.
    let left = other.recv_type("left").await;
    assert_eq!(left["user"]["id"], uid.as_str(), "{left}");
    other.sync().await;
    wait_for(REPORT_WAIT, "the room to report one member", || async {
        let r = admin_room(&s, "class").await;
        (r["connections"] == 1 && r["members"] == 1).then_some(())
    })
    .await;

    // Without a reason: still 4007, with the default reason.
    let mut again = Client::with_token(port, &t1).await;
    admin_body(
        &s,
        Method::POST,
        "/api/v1/rooms/class/kick",
        Some(&json!({"user": uid}).to_string()),
    )
    .await
    .expect(200);
    let (code, reason) = again.expect_close().await;
    assert_eq!(code, 4007, "reason {reason:?}");
    assert!(!reason.is_empty());
    assert_nothing_from_operators(&other.sync().await);
}

// ---- drain and resume ----

#[tokio::test]
async fn drain_flips_readiness_refuses_rooms_then_joins_and_resume_undoes_it() {
    let s = Server::default_server().await;
    let port = s.create_room("live").await;
    let mut a = Client::guest(port, "ann").await;
    let mut b = Client::guest(port, "bob").await;
    readyz_becomes(&s, 200).await;
    s.request(Method::GET, &s.api_url("/api/v1/health"), None, None)
        .await
        .expect(200);

    // A bad drain body is refused and drains nothing.
    for body in [r#"{"connections":"yes"}"#, r#"{"sockets":true}"#, "drain"] {
        let r = admin_body(&s, Method::POST, "/api/v1/drain", Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
    readyz_becomes(&s, 200).await;

    // Drain rooms only.
    let r = s.admin(Method::POST, "/api/v1/drain").await;
    r.expect(200);
    assert_eq!(r.data()["acceptingConnections"], false, "{}", r.text);
    assert_eq!(r.data()["refusingJoins"], false, "{}", r.text);
    let r = s.create_room_with("later", None).await;
    r.expect(200);
    assert_eq!(r.data()["port"], 0, "{}", r.text);
    assert_eq!(r.message(), "No more rooms can be created", "{}", r.text);
    let load = s.admin(Method::GET, "/api/v1/load").await;
    assert_eq!(load.data()["acceptingConnections"], false, "{}", load.text);
    let ready = readyz_becomes(&s, 503).await;
    assert_eq!(ready.data()["status"], "draining", "{}", ready.text);
    let health = s
        .request(Method::GET, &s.api_url("/api/v1/health"), None, None)
        .await;
    assert_eq!(health.status, 503, "{}", health.text);
    assert_eq!(health.data()["status"], "draining", "{}", health.text);
    assert_eq!(health.data()["freeSlots"], 0, "{}", health.text);
    assert_eq!(
        scrape(&s).await.value("chat_accepting_rooms", &[]),
        Some(0.0)
    );
    // Existing clients keep chatting, and new joins still work.
    chat(&mut a, &mut b, "still here").await;
    let mut c = Client::guest(port, "cid").await;
    chat(&mut c, &mut a, "me too").await;
    assert!(c.close().await);
    assert!(!s.room_names().await.contains(&"later".to_owned()));

    // Drain connections too: new joins are refused with 1013 (the rooms
    // learn it from a snapshot; poll, bounded).
    let r = admin_body(
        &s,
        Method::POST,
        "/api/v1/drain",
        Some(r#"{"connections":true}"#),
    )
    .await;
    r.expect(200);
    assert_eq!(r.data()["refusingJoins"], true, "{}", r.text);
    let (code, reason) = wait_for(
        Duration::from_secs(10),
        "a join refused with 1013",
        || async {
            match try_join(port, "dora").await {
                Ok(mut late) => {
                    late.close().await;
                    None
                }
                Err(cr) => Some(cr),
            }
        },
    )
    .await;
    assert_eq!(code, 1013, "reason {reason:?}");
    assert!(!reason.is_empty());
    readyz_becomes(&s, 503).await;
    chat(&mut b, &mut a, "we stay").await;

    // Resume: everything back.
    let r = s.admin(Method::POST, "/api/v1/resume").await;
    r.expect(200);
    assert_eq!(r.json, json!({"data":{"acceptingConnections":true}}));
    let ready = readyz_becomes(&s, 200).await;
    assert_eq!(ready.data()["status"], "ready", "{}", ready.text);
    s.request(Method::GET, &s.api_url("/api/v1/health"), None, None)
        .await
        .expect(200);
    let load = s.admin(Method::GET, "/api/v1/load").await;
    assert_eq!(load.data()["acceptingConnections"], true, "{}", load.text);
    let mut e = wait_for(Duration::from_secs(10), "a join to work again", || async {
        try_join(port, "eve").await.ok()
    })
    .await;
    chat(&mut e, &mut a, "back").await;
    let later = s.create_room("later").await;
    assert!(later > 0);
    assert_eq!(
        scrape(&s).await.value("chat_accepting_rooms", &[]),
        Some(1.0)
    );
}

// ---- room restart ----

#[tokio::test]
async fn room_restart_closes_1012_and_clients_resume() {
    let s = Server::default_server().await;
    let port = s.create_room("studio").await;
    let mut a = Client::guest(port, "ann").await;
    let mut b = Client::guest(port, "bob").await;
    let epoch = a.welcome["epoch"].as_u64().expect("welcome.epoch");
    let mut last = 0;
    for i in 1..=3 {
        last = chat(&mut a, &mut b, &format!("m{i}")).await;
    }
    let before = admin_room(&s, "studio").await;
    let old_pid = u64_of(&before, "pid") as i32;

    let r = s.admin(Method::POST, "/api/v1/rooms/studio/restart").await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        r.json,
        json!({"data":{"name":"studio","message":"Restarting"}})
    );
    for c in [&mut a, &mut b] {
        let (code, reason) = c.expect_close().await;
        assert_eq!(code, 1012, "reason {reason:?}");
    }

    // Back on the same port with a new pid.
    let after = wait_for(
        Duration::from_secs(15),
        "the room to be ready with a new pid",
        || async {
            let r = admin_room(&s, "studio").await;
            (r["status"] == "ready" && r["pid"].as_u64() != Some(old_pid as u64)).then_some(r)
        },
    )
    .await;
    s.remember_workers().await;
    assert_eq!(u64_of(&after, "port"), u64::from(port), "{after}");
    let new_pid = u64_of(&after, "pid") as i32;
    assert!(pid_alive(new_pid), "{after}");
    wait_for(
        Duration::from_secs(10),
        "the old worker to exit",
        || async { (!pid_alive(old_pid)).then_some(()) },
    )
    .await;
    assert_eq!(after["epoch"], before["epoch"], "{before} vs {after}");

    // Resume: ann saw everything; bob only seq 1.
    let mut a2 = Client::join(port, &format!("name=ann&since={last}&epoch={epoch}")).await;
    assert_eq!(a2.welcome["resumed"], true, "{}", a2.welcome);
    assert_eq!(a2.welcome["seq"], last, "{}", a2.welcome);
    let mut b2 = Client::join(port, &format!("name=bob&since=1&epoch={epoch}")).await;
    assert_eq!(b2.welcome["resumed"], true, "{}", b2.welcome);
    for seq in 2..=last {
        let m = b2.recv_json().await;
        assert_eq!(m["type"], "message", "{m}");
        assert_eq!(m["seq"], seq, "{m}");
        assert_eq!(m["text"], format!("m{seq}"), "{m}");
    }
    // And the restarted room numbers on.
    let seq = chat(&mut a2, &mut b2, "after the restart").await;
    assert_eq!(seq, last + 1);

    // Unknown rooms cannot be restarted.
    let r = s.admin(Method::POST, "/api/v1/rooms/ghost/restart").await;
    assert_error(&r, 404, "no room ghost");
}

// ---- metrics ----

#[tokio::test]
async fn metrics_are_well_formed_and_follow_the_rooms() {
    let s = Server::default_server().await;
    let p1 = s.create_room("one").await;
    s.create_room("two").await;

    let m = scrape(&s).await;
    // Every sample's family has a TYPE; counters end in _total.
    for sample in &m.samples {
        let family = m.family_of(&sample.name);
        let kind = m.types.get(family).unwrap_or_else(|| {
            panic!("{} has no TYPE (family {family})", sample.name);
        });
        if kind == "counter" {
            assert!(
                family.ends_with("_total"),
                "counter {family} does not end in _total"
            );
        }
    }
    assert_eq!(m.value("chat_rooms", &[("state", "ready")]), Some(2.0));
    for state in ["starting", "closing", "closed", "failed"] {
        assert_eq!(
            m.value("chat_rooms", &[("state", state)]),
            Some(0.0),
            "{state}"
        );
    }
    assert!(m.value("chat_worker_starts_total", &[]).unwrap_or(0.0) >= 2.0);
    assert!(m.value("process_resident_memory_bytes", &[]).unwrap_or(0.0) > 0.0);
    assert!(
        m.value("chat_store_pending_writes", &[]).is_some(),
        "no chat_store_pending_writes"
    );
    assert_eq!(m.value("chat_connections", &[]), Some(0.0));
    assert_eq!(m.value("chat_accepting_rooms", &[]), Some(1.0));
    let in_before = m.value("chat_messages_in_total", &[]).unwrap_or(0.0);

    // Joins show up in chat_connections (reported by the rooms: poll).
    let mut a = Client::guest(p1, "ann").await;
    let mut b = Client::guest(p1, "bob").await;
    let mut c = Client::guest(p1, "cat").await;
    wait_for(REPORT_WAIT, "chat_connections to reach 3", || async {
        let m = scrape(&s).await;
        (m.value("chat_connections", &[]) == Some(3.0)).then_some(())
    })
    .await;

    for i in 0..3 {
        chat(&mut a, &mut b, &format!("hello {i}")).await;
        c.recv_type("message").await;
    }
    let m = wait_for(
        REPORT_WAIT,
        "messages and fan-outs in the metrics",
        || async {
            let m = scrape(&s).await;
            let msgs = m.value("chat_messages_in_total", &[]).unwrap_or(0.0);
            let fanouts = m
                .value("chat_fanout_duration_seconds_count", &[])
                .unwrap_or(0.0);
            (msgs >= in_before + 3.0 && fanouts >= 3.0).then_some(m)
        },
    )
    .await;
    assert!(m.value("chat_messages_out_total", &[]).unwrap_or(0.0) > 0.0);
    assert_eq!(m.types["chat_messages_in_total"], "counter");
    assert_eq!(m.types["chat_connections"], "gauge");
    assert_eq!(m.types["chat_rooms"], "gauge");

    // The fan-out histogram: cumulative buckets in order, ending in +Inf =
    // _count, and a _sum.
    let h = "chat_fanout_duration_seconds";
    assert_eq!(m.types.get(h).map(String::as_str), Some("histogram"));
    let buckets = m.find(&format!("{h}_bucket"), &[]);
    assert!(buckets.len() >= 2, "{buckets:?}");
    let mut prev_le = f64::NEG_INFINITY;
    let mut prev_count = 0.0;
    for bk in &buckets {
        let le = parse_value(bk.labels.get("le").expect("bucket without le")).unwrap();
        assert!(le > prev_le, "buckets out of order: {buckets:?}");
        assert!(bk.value >= prev_count, "not cumulative: {buckets:?}");
        prev_le = le;
        prev_count = bk.value;
    }
    let last = buckets.last().unwrap();
    assert_eq!(last.labels["le"], "+Inf", "{buckets:?}");
    let count = m.value(&format!("{h}_count"), &[]).expect("no _count");
    assert_eq!(last.value, count);
    assert!(count >= 3.0);
    let sum = m.value(&format!("{h}_sum"), &[]).expect("no _sum");
    assert!(sum >= 0.0 && sum.is_finite(), "sum {sum}");

    // Connections go back down.
    drop(c);
    assert!(b.close().await);
    wait_for(REPORT_WAIT, "chat_connections to fall to 1", || async {
        let m = scrape(&s).await;
        (m.value("chat_connections", &[]) == Some(1.0)).then_some(())
    })
    .await;
}

// ---- log level ----

#[tokio::test]
async fn log_level_can_be_read_and_changed() {
    let s = Server::default_server().await;
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    r.expect(200);
    assert!(r.data()["filter"].is_string(), "{}", r.text);

    let r = admin_body(
        &s,
        Method::PUT,
        "/api/v1/log-level",
        Some(r#"{"filter":"debug"}"#),
    )
    .await;
    r.expect(200);
    assert_eq!(r.json, json!({"data":{"filter":"debug"}}));
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    r.expect(200);
    assert_eq!(r.data()["filter"], "debug");

    for (what, body) in [
        ("unknown level", r#"{"filter":"chatserver=loud"}"#),
        ("bad syntax", r#"{"filter":"[{"}"#),
        ("missing filter", "{}"),
        ("unknown field", r#"{"filter":"info","level":"info"}"#),
        ("not JSON", "debug"),
    ] {
        let r = admin_body(&s, Method::PUT, "/api/v1/log-level", Some(body)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.text);
        assert!(r.json["message"].is_string(), "{what}: {}", r.text);
    }
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    assert_eq!(r.data()["filter"], "debug", "changed by a refused PUT");

    let r = s
        .request(
            Method::PUT,
            &s.admin_url("/api/v1/log-level"),
            Some("wrong"),
            Some(r#"{"filter":"error"}"#),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    assert_eq!(r.data()["filter"], "debug", "changed with a wrong key");

    admin_body(
        &s,
        Method::PUT,
        "/api/v1/log-level",
        Some(r#"{"filter":"info"}"#),
    )
    .await
    .expect(200);
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    assert_eq!(r.data()["filter"], "info");
}

// ---- open routes and wrong keys ----

#[tokio::test]
async fn open_routes_need_no_key_and_wrong_keys_do_nothing() {
    let s = Server::default_server().await;
    let port = s.create_room("guarded").await;
    let mut a = Client::guest(port, "ann").await;
    let mut b = Client::guest(port, "bob").await;
    let pid = s.room_pid("guarded").await;
    let started_at = s.admin(Method::GET, "/api/v1/load").await.data()["startedAt"].clone();

    let r = s
        .request(Method::GET, &s.admin_url("/livez"), None, None)
        .await;
    r.expect(200);
    assert_eq!(r.json, json!({"data":{"status":"alive"}}));
    readyz_becomes(&s, 200).await;
    s.request(Method::GET, &s.admin_url("/metrics"), None, None)
        .await
        .expect(200);
    // A wrong key does not matter on open routes.
    s.request(Method::GET, &s.admin_url("/livez"), Some("wrong"), None)
        .await
        .expect(200);

    let kick = json!({"user": a.id(), "reason": "x"}).to_string();
    let calls: Vec<(Method, &str, Option<&str>)> = vec![
        (Method::GET, "/api/v1/rooms", None),
        (Method::GET, "/api/v1/rooms/guarded", None),
        (
            Method::POST,
            "/api/v1/broadcast",
            Some(r#"{"text":"should not arrive"}"#),
        ),
        (
            Method::POST,
            "/api/v1/rooms/guarded/broadcast",
            Some(r#"{"text":"nor this"}"#),
        ),
        (Method::POST, "/api/v1/rooms/guarded/kick", Some(&kick)),
        (Method::POST, "/api/v1/rooms/guarded/restart", None),
        (
            Method::POST,
            "/api/v1/drain",
            Some(r#"{"connections":true}"#),
        ),
        (Method::POST, "/api/v1/resume", None),
        (
            Method::PUT,
            "/api/v1/log-level",
            Some(r#"{"filter":"trace"}"#),
        ),
        (Method::GET, "/api/v1/log-level", None),
        (Method::POST, "/api/v1/restart", None),
    ];
    for key in [None, Some("wrong"), Some(s.key.as_str())] {
        for (method, path, body) in &calls {
            let r = s
                .request(method.clone(), &s.admin_url(path), key, *body)
                .await;
            assert_eq!(
                r.status, 401,
                "{method} {path} with key {key:?}: {}",
                r.text
            );
            assert_eq!(r.json, json!({"message":"Unauthorized"}), "{method} {path}");
        }
    }

    // Nothing was done: no notice, no close for either client (a ping
    // round trip proves every earlier frame was delivered), same worker,
    // still accepting, same log filter, same master.
    for c in [&mut a, &mut b] {
        assert_nothing_from_operators(&c.sync().await);
    }
    chat(&mut a, &mut b, "all quiet").await;
    assert_eq!(s.room_pid("guarded").await, pid);
    assert!(pid_alive(pid));
    readyz_becomes(&s, 200).await;
    let load = s.admin(Method::GET, "/api/v1/load").await;
    assert_eq!(load.data()["acceptingConnections"], true);
    assert_eq!(load.data()["startedAt"], started_at, "the master restarted");
    let r = s.admin(Method::GET, "/api/v1/log-level").await;
    assert_ne!(r.data()["filter"], "trace");
    let mut c = Client::guest(port, "cat").await;
    c.sync().await;
}

// ---- master restart ----

#[tokio::test]
async fn master_restart_in_place_keeps_rooms_and_clients() {
    let mut s = Server::default_server().await;
    let p1 = s.create_room("r1").await;
    s.create_room("r2").await;
    let mut a = Client::guest(p1, "ann").await;
    let mut b = Client::guest(p1, "bob").await;
    chat(&mut a, &mut b, "before").await;
    let before = admin_rooms(&s).await;
    let pids: BTreeMap<String, Value> = before
        .iter()
        .map(|(n, r)| (n.clone(), r["pid"].clone()))
        .collect();
    let started_at = s.admin(Method::GET, "/api/v1/load").await.data()["startedAt"].clone();
    assert!(started_at.is_string());
    // A room's uptime goes on across the adoption: let r1 be up long enough
    // that an uptime counted from the adoption would be visibly shorter.
    let up_before = wait_for(Duration::from_secs(10), "r1 up for 3 s", || async {
        let up = u64_of(admin_rooms(&s).await.get("r1")?, "uptime_secs");
        (up >= 3).then_some(up)
    })
    .await;
    let since_up_before = std::time::Instant::now();

    let r = s.admin(Method::POST, "/api/v1/restart").await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(!r.message().is_empty(), "{}", r.text);

    // The admin API answers again, from a new image (new start time), in the
    // same process.
    wait_for(
        Duration::from_secs(20),
        "the restarted master's admin API",
        || async {
            let r = try_admin(&s, Method::GET, "/api/v1/load").await?;
            (r.status == 200 && r.data()["startedAt"] != started_at).then_some(())
        },
    )
    .await;
    assert!(s.master_running(), "the master exited");

    // The rooms are adopted: listed, ready, same workers.
    let after = wait_for(
        Duration::from_secs(15),
        "the rooms to be adopted",
        || async {
            let r = try_admin(&s, Method::GET, "/api/v1/rooms").await?;
            let rooms = r.data().as_array()?.clone();
            let ready = rooms.iter().all(|r| r["status"] == "ready");
            (r.status == 200 && rooms.len() == 2 && ready).then_some(rooms)
        },
    )
    .await;
    for room in &after {
        let name = room["name"].as_str().unwrap();
        assert_eq!(
            room["pid"], pids[name],
            "{name}: {room} vs {}",
            before[name]
        );
        assert_eq!(room["port"], before[name]["port"], "{name}");
    }
    // Its uptime is the worker's, not the new master's view of it: at least
    // what it was plus the time since (whole seconds; one of slack for the
    // spawn, which the first master counted from just before).
    let elapsed = since_up_before.elapsed().as_secs();
    let r1 = admin_room(&s, "r1").await;
    assert!(
        u64_of(&r1, "uptime_secs") + 1 >= up_before + elapsed,
        "r1's uptime restarted at the adoption: {r1} (was {up_before} {elapsed} s before)"
    );

    // The clients never noticed, and the room is operable again: a
    // broadcast reaches it once its link is back.
    for c in [&mut a, &mut b] {
        assert_nothing_from_operators(&c.sync().await);
    }
    chat(&mut b, &mut a, "after").await;
    wait_for(
        Duration::from_secs(10),
        "r1 to take a broadcast",
        || async {
            let r = admin_body(
                &s,
                Method::POST,
                "/api/v1/rooms/r1/broadcast",
                Some(r#"{"text":"back"}"#),
            )
            .await;
            (r.status == 200).then_some(())
        },
    )
    .await;
    let n = a.recv_type("notice").await;
    assert_eq!(n["text"], "back");
    let mut c = Client::guest(p1, "cat").await;
    c.sync().await;
}

/// An admin request that may fail (the master re-executes meanwhile).
async fn try_admin(s: &Server, method: Method, path: &str) -> Option<Resp> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let res = client
        .request(method, s.admin_url(path))
        .header("X-API-Key", &s.admin_key)
        .send()
        .await
        .ok()?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.ok()?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Some(Resp {
        status,
        headers,
        text,
        json,
    })
}
