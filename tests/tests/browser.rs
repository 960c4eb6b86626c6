//! The chat page and the operator dashboard in a real browser (issue 15):
//! headless Chromium (the system's `/usr/bin/chromium`) driven by
//! playwright-core from the scripts in tests/browser/, against a real
//! master and its rooms. tests/run installs both; a missing one fails these
//! tests, it never skips them.
//!
//! Each scenario is a node script that prints `ok NAME` or `FAILED NAME:
//! why`; it may stop at `STEP name` lines for the test to act (kill a
//! worker) and answer with one line. Every wait, in the scripts and here,
//! is bounded.
//!
//! `SCREENSHOTS=1` also writes the screenshots shown in the README to
//! docs/screenshots/.

mod edge_common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chat_tests::{Client, Server, ServerOpts, procs, token};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// How long one scenario may take, browser start included.
const SCENARIO_BOUND: Duration = Duration::from_secs(120);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Fails loudly when the browser or the driver is missing.
fn require_tools() {
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).is_file(),
        "{chromium} is missing: install Chromium (tests/run does: apt-get install chromium)"
    );
    let driver = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        driver.is_file(),
        "{} is missing: run `npm ci` in tests/browser (tests/run does)",
        driver.display()
    );
}

/// Where screenshots go when `SCREENSHOTS=1`.
fn screenshots() -> Option<String> {
    (std::env::var("SCREENSHOTS").as_deref() == Ok("1")).then(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
        std::fs::create_dir_all(&dir).expect("creating docs/screenshots");
        dir.to_string_lossy().into_owned()
    })
}

/// The parameters every scenario gets.
fn params(s: &Server, room: &str) -> Value {
    json!({
        "api": s.api_url(""),
        "admin": s.admin_url(""),
        "adminKey": s.admin_key,
        "room": room,
        "screenshots": screenshots(),
    })
}

/// Runs `tests/browser/<script>.mjs` with `cfg`; `on_step` answers each
/// `STEP name` line. Panics with the script's output unless it printed
/// `ok <script>` and exited 0.
async fn scenario<F, Fut>(script: &str, cfg: &Value, mut on_step: F)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = String>,
{
    require_tools();
    let mut child = Command::new("node")
        .arg(browser_dir().join(format!("{script}.mjs")))
        .current_dir(browser_dir())
        .env("CHAT_TEST", cfg.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting node (is Node.js installed?)");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let run = async {
        let mut out = String::new();
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await.expect("reading the script") {
            out.push_str(&line);
            out.push('\n');
            if let Some(step) = line.strip_prefix("STEP ") {
                let answer = on_step(step.to_owned()).await;
                stdin
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .expect("answering the script");
            }
        }
        let status = child.wait().await.expect("waiting for node");
        let mut err = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await;
        (status, out, err)
    };
    let (status, out, err) = tokio::time::timeout(SCENARIO_BOUND, run)
        .await
        .unwrap_or_else(|_| panic!("{script}: not done within {SCENARIO_BOUND:?}"));
    assert!(
        status.success() && out.lines().any(|l| l == format!("ok {script}")),
        "{script} failed ({status}):\n--- stdout\n{out}\n--- stderr\n{err}"
    );
}

/// Answers every step with "go".
async fn no_steps(_: String) -> String {
    "go".to_owned()
}

#[tokio::test]
async fn two_pages_chat_and_html_is_text() {
    let s = Server::start(ServerOpts::new()).await;
    s.create_room("lobby").await;
    scenario("two_pages", &params(&s, "lobby"), no_steps).await;
}

/// The pages' HTTP side, without a browser: content types, the strict
/// Content-Security-Policy, revalidation with the ETag, the public join
/// lookup (nothing secret in it), no key needed for any of it.
#[tokio::test]
async fn pages_are_served_strictly_and_join_is_public() {
    let s = Server::start(ServerOpts::new()).await;
    let port = s.create_room("lobby").await;
    for (base, csp_connect) in [
        (s.api_url(""), "connect-src 'self' ws: wss:"),
        (s.admin_url(""), "connect-src 'self';"),
    ] {
        let r = s
            .request(Method::GET, &format!("{base}/"), None, None)
            .await;
        assert_eq!(r.status, 200, "{base}/: {}", r.text);
        assert_eq!(r.content_type(), "text/html; charset=utf-8");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
            "CSP {csp:?}"
        );
        assert!(csp.contains(csp_connect), "CSP {csp:?}");
        assert!(
            !r.text.contains("<script>") && !r.text.contains("style="),
            "no inline code"
        );
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        let etag = r.header("etag").expect("an ETag").to_owned();
        let again = reqwest::Client::new()
            .get(format!("{base}/"))
            .header("if-none-match", &etag)
            .send()
            .await
            .expect("GET /");
        assert_eq!(again.status().as_u16(), 304, "{base}/ with its ETag");
        let post = s
            .request(Method::POST, &format!("{base}/"), None, None)
            .await;
        assert_eq!(post.status, 405, "POST {base}/");
        assert_eq!(post.json["message"], "Method Not Allowed", "{}", post.text);
        let missing = s
            .request(Method::GET, &format!("{base}/assets/nope.js"), None, None)
            .await;
        assert_eq!(missing.status, 404);
    }
    for (file, ty) in [
        ("chat.js", "text/javascript"),
        ("chat.css", "text/css"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let r = s
            .request(
                Method::GET,
                &s.api_url(&format!("/assets/{file}")),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{file}");
        assert!(
            r.content_type().starts_with(ty),
            "{file}: {}",
            r.content_type()
        );
    }
    let r = s
        .request(Method::GET, &s.admin_url("/assets/admin.js"), None, None)
        .await;
    assert_eq!(r.status, 200, "admin.js");
    // The chat page's script is not on the admin port, nor the other way.
    let r = s
        .request(Method::GET, &s.admin_url("/assets/chat.js"), None, None)
        .await;
    assert_eq!(r.status, 404);

    let r = s
        .request(Method::GET, &s.api_url("/api/v1/join/lobby"), None, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["port"], u64::from(port));
    assert_eq!(r.data()["name"], "lobby");
    let keys: Vec<_> = r
        .data()
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        keys,
        ["name", "port", "status"],
        "nothing more than where to join"
    );
    let r = s
        .request(
            Method::GET,
            &s.api_url("/api/v1/join/nosuchroom"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = s
        .request(
            Method::GET,
            &s.api_url("/api/v1/join/bad%20name"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}

/// A master with a JWT secret; tokens for `users` (`name` or `name:role`;
/// id `u-<name>`, display name capitalised) valid in every room.
async fn token_server(users: &[&str]) -> (Server, Value) {
    let secret = chat_tests::random_string(32);
    let s = Server::start(ServerOpts::new().jwt_secret(secret.clone())).await;
    let mut tokens = serde_json::Map::new();
    for u in users {
        let (u, role) = u.split_once(':').unwrap_or((u, "member"));
        let mut name = u.to_string();
        name[..1].make_ascii_uppercase();
        let t = token::token(&secret, &format!("u-{u}"), &name, "*", role);
        tokens.insert(u.to_owned(), json!(t));
    }
    (s, Value::Object(tokens))
}

#[tokio::test]
async fn member_joins_and_leaves_and_moderators_moderate() {
    let (s, tokens) = token_server(&["ann:moderator", "carol"]).await;
    s.create_room("hall").await;
    let mut cfg = params(&s, "hall");
    cfg["tokens"] = tokens;
    scenario("members", &cfg, no_steps).await;
}

#[tokio::test]
async fn history_scrolls_back_to_the_first_message() {
    const SENDERS: usize = 3;
    const PER: usize = 40; // within a user's burst
    let s = Server::start(ServerOpts::new()).await;
    let port = s
        .create_room_settings("archive", Some(json!({"history_size": 20})))
        .await;
    let mut n = 0;
    for k in 0..SENDERS {
        let mut c = Client::guest(port, &format!("writer{k}")).await;
        for _ in 0..PER {
            c.say_acked(&format!("history {n}")).await;
            n += 1;
        }
        c.close().await;
    }
    let mut cfg = params(&s, "archive");
    cfg["total"] = json!(n);
    cfg["first"] = json!("history 0");
    scenario("history", &cfg, no_steps).await;
}

#[tokio::test]
async fn page_resumes_after_the_worker_is_killed() {
    let s = Server::start(ServerOpts::new()).await;
    let port = s.create_room("crashy").await;
    let away = "written while the pages were away";
    let mut cfg = params(&s, "crashy");
    cfg["away"] = json!(away);
    let s = &s;
    scenario("resume", &cfg, |step| async move {
        assert_eq!(step, "kill");
        let old = s.room_pid("crashy").await;
        procs::sigkill(old);
        // A new worker on the same port; someone writes before (or while)
        // the pages come back.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let r = s.room_info("crashy").await;
            let pid = r.data()["pid"].as_i64().unwrap_or(0) as i32;
            if pid != 0 && pid != old && r.data()["status"] == "ready" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no new worker: {}",
                r.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut c = Client::guest(port, "carol").await;
        c.say_acked(away).await;
        c.close().await;
        "killed".to_owned()
    })
    .await;
}

#[tokio::test]
async fn token_users_in_two_rooms_exchange_a_dm_with_read_receipts() {
    let (s, tokens) = token_server(&["ann", "ben"]).await;
    s.create_room("north").await;
    s.create_room("south").await;
    let mut cfg = params(&s, "north");
    cfg["rooms"] = json!(["north", "south"]);
    cfg["tokens"] = tokens;
    scenario("dm", &cfg, no_steps).await;
}

#[tokio::test]
async fn dashboard_lists_a_room_and_shuts_it_down() {
    let s = Server::start(ServerOpts::new()).await;
    s.create_room("busy").await;
    scenario("dashboard", &params(&s, "busy"), no_steps).await;
    // The shutdown went through the admin API: the room is over.
    let r = s.room_info("busy").await;
    assert!(
        r.status == 404 || r.data()["status"] != "ready",
        "the room still runs: {}",
        r.text
    );
}

/// The chat page through the shipped nginx config: the page over https, the
/// join lookup answering the `wss://` URL through nginx, two pages chatting
/// over it.
#[tokio::test]
async fn two_pages_chat_through_nginx() {
    edge_common::nginx_bin();
    let certs = edge_common::Certs::make();
    let nginx_port = procs::free_port();
    let s = Server::start(
        ServerOpts::new().args(["--public-url", &format!("https://127.0.0.1:{nginx_port}")]),
    )
    .await;
    let opts = edge_common::EdgeOpts {
        api_upstream: format!("127.0.0.1:{}", s.port),
        room_ports: s.room_ports,
        extra: Vec::new(),
    };
    let nginx = edge_common::Nginx::start(&certs, nginx_port, &opts).await;
    s.create_room("lobby").await;
    let mut cfg = params(&s, "lobby");
    cfg["api"] = json!(nginx.url(""));
    cfg["insecure"] = json!(true); // the test's own certificate authority
    cfg["screenshots"] = Value::Null;
    cfg["expectUrl"] = json!(nginx.wss_url("/rooms/"));
    scenario("two_pages", &cfg, no_steps).await;
}

#[tokio::test]
async fn a_time_limit_is_counted_down_and_the_end_is_said() {
    let s = Server::start(ServerOpts::new()).await;
    s.create_room_settings("brief", Some(json!({"time_limit_secs": 25})))
        .await;
    scenario("closing", &params(&s, "brief"), no_steps).await;
}
