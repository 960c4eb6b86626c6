//! The `chatctl` binary against a real master: it finds the server and the
//! generated keys through `--run-dir` (`master.json`, `keys.json`).
//!
//! Build first: `cargo build -p chatctl -p chatserver -p chatroom`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chat_tests::procs::free_port;
use chat_tests::server::chatserver_bin;
use chat_tests::{Client, Server, ServerOpts, now_secs, wait_for};
use reqwest::Method;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// Bound of one `chatctl` run.
const CTL_TIMEOUT: Duration = Duration::from_secs(30);

/// `chatctl`, next to `chatserver` in the target dir.
fn chatctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CHATCTL_BIN") {
        return PathBuf::from(p);
    }
    let bin = chatserver_bin().with_file_name("chatctl");
    assert!(
        bin.is_file(),
        "{} does not exist; build it with cargo build -p chatctl -p chatserver -p chatroom",
        bin.display()
    );
    bin
}

/// What a `chatctl` run left.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    #[track_caller]
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "chatctl failed: {self:#?}");
        self
    }

    /// Asserts a failure with a one-line reason; returns the reason.
    #[track_caller]
    fn failed(&self) -> &str {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "chatctl should have failed: {self:#?}"
        );
        let reason = self.stderr.trim();
        assert!(!reason.is_empty(), "no reason on stderr: {self:#?}");
        assert_eq!(
            reason.lines().count(),
            1,
            "reason is not one line: {self:#?}"
        );
        reason
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// Runs `chatctl --run-dir <run dir> ARGS` with `stdin`, bounded. Nothing
/// about the server comes from the environment.
async fn ctl_in(s: &Server, args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = tokio::process::Command::new(chatctl_bin());
    cmd.arg("--run-dir").arg(&s.run_dir).args(args);
    run(cmd, stdin).await
}

async fn ctl(s: &Server, args: &[&str]) -> Out {
    ctl_in(s, args, None).await
}

/// Removes what chatctl could take from the environment.
fn clean_env(cmd: &mut tokio::process::Command) {
    for var in [
        "ADMIN_KEY",
        "KEY",
        "RUN_DIR",
        "JWT_SECRET",
        "CHATCTL_ADMIN_URL",
        "CHATCTL_API_URL",
        "CHATCTL_TIMEOUT",
        "CHATCTL_TOKEN",
    ] {
        cmd.env_remove(var);
    }
}

async fn run(mut cmd: tokio::process::Command, stdin: Option<&str>) -> Out {
    clean_env(&mut cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawning chatctl");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("chatctl stdin");
        let text = text.to_owned();
        tokio::spawn(async move {
            let _ = pipe.write_all(text.as_bytes()).await;
            // Dropping the pipe ends chatctl's stdin.
        });
    }
    let out = tokio::time::timeout(CTL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("chatctl did not finish within {CTL_TIMEOUT:?}"))
        .expect("waiting for chatctl");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A master that generated its keys (so chatctl must read `keys.json`).
async fn server() -> Server {
    let mut opts = ServerOpts::new().generated_keys();
    opts.room_ports = 10;
    Server::start(opts).await
}

fn room<'a>(rooms: &'a Value, name: &str) -> Option<&'a Value> {
    rooms
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == name))
}

#[tokio::test]
async fn status_rooms_room_and_create() {
    let s = server().await;
    assert!(s.run_dir.join("keys.json").is_file());

    let out = ctl(&s, &["create", "alpha", "--setting", "max_members=5"]).await;
    out.ok();
    assert!(s.room_pid("alpha").await > 0);
    let info = s.room_info("alpha").await;
    let room_port = info.data()["port"].as_u64().expect("port");
    assert!(
        out.stdout.contains(&format!("port {room_port}")),
        "create output: {out:#?}"
    );
    assert_eq!(info.data()["settings"]["max_members"], 5, "{}", info.text);

    // Creating it again answers the same port.
    let again = ctl(&s, &["create", "alpha"]).await;
    again.ok();
    assert!(
        again.stdout.contains(&format!("port {room_port}")),
        "{again:#?}"
    );

    let out = ctl(&s, &["rooms", "--json"]).await;
    out.ok();
    let rooms = out.json();
    let alpha = room(&rooms, "alpha").unwrap_or_else(|| panic!("no alpha in {rooms}"));
    assert_eq!(alpha["port"].as_u64(), Some(room_port));
    assert_eq!(alpha["settings"]["max_members"], 5);

    let out = ctl(&s, &["rooms"]).await;
    out.ok();
    assert!(out.stdout.contains("alpha"), "{out:#?}");
    assert!(out.stdout.contains(&room_port.to_string()), "{out:#?}");
    assert!(out.stdout.contains("ready"), "{out:#?}");

    let out = ctl(&s, &["room", "alpha"]).await;
    out.ok();
    assert!(out.stdout.contains("alpha"), "{out:#?}");
    assert!(out.stdout.contains(&room_port.to_string()), "{out:#?}");
    assert!(out.stdout.contains("max_members"), "{out:#?}");

    let out = ctl(&s, &["room", "alpha", "--json"]).await;
    out.ok();
    assert_eq!(out.json()["name"], "alpha");

    let out = ctl(&s, &["status"]).await;
    out.ok();
    assert!(out.stdout.contains("1 of 10"), "{out:#?}");
    assert!(out.stdout.contains("alpha"), "{out:#?}");
    assert!(out.stdout.contains("accepting"), "{out:#?}");
    assert!(out.stdout.contains("memory"), "{out:#?}");

    let out = ctl(&s, &["status", "--json"]).await;
    out.ok();
    let load = out.json();
    assert_eq!(load["roomCount"], 1, "{load}");
    assert_eq!(load["capacity"], 10, "{load}");

    // Refused settings: the server's reason, non-zero.
    let out = ctl(&s, &["create", "beta", "--setting", "nope=1"]).await;
    assert!(out.failed().contains("nope"), "{out:#?}");
}

#[tokio::test]
async fn broadcast_and_kick_reach_a_client() {
    let s = server().await;
    let port = s.create_room("alpha").await;
    s.create_room("beta").await;
    let mut c = Client::guest(port, "ann").await;

    let out = ctl(&s, &["broadcast", "hello everyone"]).await;
    out.ok();
    assert!(out.stdout.contains("2 rooms"), "{out:#?}");
    let notice = c.recv_type("notice").await;
    assert_eq!(notice["text"], "hello everyone");

    ctl(&s, &["broadcast", "just alpha", "--room", "alpha"])
        .await
        .ok();
    let notice = c.recv_type("notice").await;
    assert_eq!(notice["text"], "just alpha");

    let out = ctl(&s, &["broadcast", "x", "--room", "nope"]).await;
    assert!(out.failed().contains("no room nope"), "{out:#?}");

    let out = ctl(&s, &["kick", "alpha", &c.id(), "--reason", "enough"]).await;
    out.ok();
    let (code, reason) = c.expect_close().await;
    assert_eq!(code, 4007, "close reason {reason:?}");

    let out = ctl(&s, &["kick", "nope", "someone"]).await;
    assert!(out.failed().contains("no room nope"), "{out:#?}");
}

#[tokio::test]
async fn drain_refuses_rooms_until_resume() {
    let s = server().await;
    ctl(&s, &["drain"]).await.ok();
    let out = ctl(&s, &["create", "beta"]).await;
    let reason = out.failed();
    assert!(reason.contains("beta"), "{out:#?}");
    assert!(reason.contains("No more rooms"), "{out:#?}");
    let load = ctl(&s, &["status", "--json"]).await.json();
    assert_eq!(load["acceptingConnections"], false, "{load}");

    // Nothing to wait for: no room has members.
    ctl(&s, &["drain", "--wait", "--timeout", "5s"]).await.ok();

    ctl(&s, &["resume"]).await.ok();
    ctl(&s, &["create", "beta"]).await.ok();
    assert!(s.room_names().await.contains(&"beta".to_owned()));
}

#[tokio::test]
async fn drain_wait_times_out_with_members_left() {
    let s = server().await;
    let port = s.create_room("busy").await;
    let _c = Client::guest(port, "stays").await;
    wait_for(
        Duration::from_secs(5),
        "the member to be counted",
        || async {
            let rooms = s.rooms().await;
            (room(&Value::Array(rooms), "busy")?["members"] == 1).then_some(())
        },
    )
    .await;
    let out = ctl(&s, &["drain", "--wait", "--timeout", "1s"]).await;
    let reason = out.failed();
    assert!(reason.contains("timed out"), "{out:#?}");
    assert!(reason.contains("1 members"), "{out:#?}");
}

#[tokio::test]
async fn shutdown_room_ends_it() {
    let s = server().await;
    s.create_room("gone").await;
    let out = ctl(&s, &["shutdown-room", "gone"]).await;
    out.ok();
    assert!(out.stdout.contains("Shutting down"), "{out:#?}");
    let out = ctl(&s, &["shutdown-room", "never-was"]).await;
    assert!(out.failed().contains("no room never-was"), "{out:#?}");
    let out = ctl(&s, &["shutdown-room", "never-was"]).await;
    assert!(out.failed().contains("no room never-was"), "{out:#?}");
    wait_for(Duration::from_secs(10), "the room to close", || async {
        let rooms = s.rooms().await;
        let gone = rooms
            .iter()
            .all(|r| r["name"] != "gone" || r["status"] != "ready");
        gone.then_some(())
    })
    .await;
}

#[tokio::test]
async fn token_is_a_valid_join_token() {
    let secret = "test-secret-0123456789";
    let mut opts = ServerOpts::new().generated_keys().jwt_secret(secret);
    opts.room_ports = 10;
    let s = Server::start(opts).await;
    let port = s.create_room("alpha").await;
    let out = ctl(
        &s,
        &[
            "token",
            "--user",
            "u-42",
            "--name",
            "Ann",
            "--room",
            "alpha",
            "--role",
            "moderator",
            "--ttl",
            "15m",
            "--secret",
            secret,
        ],
    )
    .await;
    out.ok();
    let token = out.stdout.trim();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_required_spec_claims(&["exp", "sub"]);
    let data = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &v,
    )
    .unwrap_or_else(|e| panic!("token {token:?} does not verify: {e}"));
    let c = &data.claims;
    assert_eq!(c["sub"], "u-42");
    assert_eq!(c["name"], "Ann");
    assert_eq!(c["room"], "alpha");
    assert_eq!(c["role"], "moderator");
    let exp = c["exp"].as_u64().expect("exp");
    let now = now_secs();
    assert!(
        (now + 900 - 5..=now + 900 + 5).contains(&exp),
        "exp {exp}, now {now}"
    );
    // The room accepts it.
    let client = Client::with_token(port, token).await;
    assert_eq!(client.welcome["you"]["id"], "u-42");
    assert_eq!(client.welcome["you"]["role"], "moderator");

    // Without a secret: refused.
    let out = ctl(&s, &["token", "--user", "u", "--room", "alpha"]).await;
    assert!(out.failed().contains("secret"), "{out:#?}");
}

#[tokio::test]
async fn join_with_piped_stdin_says_and_leaves() {
    let s = server().await;
    let port = s.create_room("alpha").await;
    let mut bob = Client::guest(port, "bob").await;
    let out = ctl_in(
        &s,
        &["join", "alpha", "--name", "ann"],
        Some("hello from chatctl\n/history\n"),
    )
    .await;
    out.ok();
    assert!(out.stdout.contains("joined room alpha as ann"), "{out:#?}");
    assert!(out.stdout.contains("] ann: hello from chatctl"), "{out:#?}");
    assert!(out.stdout.contains("1000"), "no close shown: {out:#?}");
    let joined = bob.recv_type("joined").await;
    assert_eq!(joined["user"]["name"], "ann");
    let msg = bob.recv_type("message").await;
    assert_eq!(msg["text"], "hello from chatctl");
    assert_eq!(msg["from"]["name"], "ann");
    let left = bob.recv_type("left").await;
    assert_eq!(left["user"]["name"], "ann");

    // Whisper by member name, with the port given.
    let bob_id = bob.id();
    ctl_in(
        &s,
        &[
            "join",
            "alpha",
            "--name",
            "carol",
            "--port",
            &port.to_string(),
        ],
        Some("/w bob psst\n"),
    )
    .await
    .ok();
    let w = bob.recv_type("whisper").await;
    assert_eq!(w["text"], "psst");
    assert_eq!(w["to"]["id"], bob_id.as_str());

    let out = ctl_in(&s, &["join", "nope", "--name", "x"], Some("")).await;
    assert!(out.failed().contains("no room nope"), "{out:#?}");
}

#[tokio::test]
async fn join_reports_a_kick() {
    let s = server().await;
    let port = s.create_room("alpha").await;
    let mut watcher = Client::guest(port, "watcher").await;
    // chatctl stays joined (stdin open, nothing sent) until kicked.
    let mut cmd = tokio::process::Command::new(chatctl_bin());
    cmd.arg("--run-dir")
        .arg(&s.run_dir)
        .args(["join", "alpha", "--name", "victim"]);
    let join = tokio::spawn(async move {
        // Keep stdin open: a pipe whose writer stays alive for 20 s.
        run_with_open_stdin(cmd, Duration::from_secs(20)).await
    });
    let joined = watcher.recv_type("joined").await;
    let id = joined["user"]["id"].as_str().expect("id").to_owned();
    ctl(&s, &["kick", "alpha", &id]).await.ok();
    let out = tokio::time::timeout(CTL_TIMEOUT, join)
        .await
        .expect("chatctl join did not end after the kick")
        .expect("join task");
    let reason = out.failed();
    assert!(reason.contains("4007"), "{out:#?}");
}

/// Runs chatctl with a stdin that stays open for `open` (never closed by us
/// before chatctl ends).
async fn run_with_open_stdin(mut cmd: tokio::process::Command, open: Duration) -> Out {
    clean_env(&mut cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawning chatctl");
    let pipe = child.stdin.take();
    tokio::spawn(async move {
        tokio::time::sleep(open).await;
        drop(pipe);
    });
    let out = tokio::time::timeout(CTL_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("chatctl did not finish within {CTL_TIMEOUT:?}"))
        .expect("waiting for chatctl");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn shutdown_wait_stops_the_master() {
    let mut s = server().await;
    s.create_room("alpha").await;
    s.remember_workers().await;
    let out = ctl(&s, &["shutdown", "--wait", "--timeout", "20s"]).await;
    out.ok();
    assert!(out.stdout.contains("stopped"), "{out:#?}");
    let status = s.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "master exit: {status}");
    // Now the server is down.
    let out = ctl(&s, &["--admin-url", &s.admin_url(""), "rooms"]).await;
    assert!(out.failed().contains("cannot reach"), "{out:#?}");
}

#[tokio::test]
async fn failures_have_one_line_reasons() {
    let s = server().await;

    let out = ctl(&s, &["--key", "bad", "rooms"]).await;
    let reason = out.failed();
    assert!(reason.contains("admin key was refused"), "{out:#?}");

    let out = ctl(&s, &["--api-key", "bad", "create", "x"]).await;
    assert!(out.failed().contains("key was refused"), "{out:#?}");

    let closed = free_port();
    let url = format!("http://127.0.0.1:{closed}");
    let out = ctl(&s, &["--admin-url", &url, "status"]).await;
    let reason = out.failed();
    assert!(
        reason.contains(&format!("cannot reach the admin API at {url}")),
        "{out:#?}"
    );

    let out = ctl(&s, &["room", "nope"]).await;
    assert!(out.failed().contains("no room nope"), "{out:#?}");

    let out = ctl(&s, &["shutdown-room", "bad name!"]).await;
    assert!(out.failed().contains("invalid room name"), "{out:#?}");

    // No run dir: says where it looked.
    let mut cmd = tokio::process::Command::new(chatctl_bin());
    cmd.arg("--run-dir")
        .arg(s.dir().join("missing"))
        .arg("rooms");
    let out = run(cmd, None).await;
    assert!(out.failed().contains("master.json"), "{out:#?}");

    // Bans: supported or not, the answer is one line.
    let out = ctl(&s, &["ban", "u-1", "--for", "1h", "--reason", "spam"]).await;
    if out.code != Some(0) {
        assert!(out.failed().contains("does not support bans"), "{out:#?}");
    }

    // The server is still fine.
    let r = s.admin(Method::GET, "/api/v1/rooms").await;
    r.expect(200);
}

#[tokio::test]
async fn watch_renders_until_interrupted() {
    let s = server().await;
    s.create_room("alpha").await;
    let mut cmd = tokio::process::Command::new(chatctl_bin());
    cmd.arg("--run-dir")
        .arg(&s.run_dir)
        .args(["watch", "--interval", "200ms"]);
    clean_env(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("spawning chatctl watch");
    let pid = child.id().expect("pid") as i32;
    // Two screens rendered (each starts by clearing it), then SIGINT.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    tokio::time::timeout(CTL_TIMEOUT, async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(&seen).matches("\x1b[2J").count() < 2
            || !String::from_utf8_lossy(&seen).contains("alpha")
        {
            let n = out_pipe.read(&mut buf).await.expect("reading watch");
            assert!(
                n > 0,
                "watch ended early: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("watch did not render twice");
    chat_tests::procs::signal(pid, nix::sys::signal::Signal::SIGINT);
    let status = tokio::time::timeout(CTL_TIMEOUT, child.wait())
        .await
        .expect("watch did not stop on SIGINT")
        .expect("waiting for watch");
    assert_eq!(status.code(), Some(0), "{status:?}");
    let stdout = String::from_utf8_lossy(&seen);
    assert!(stdout.matches("\x1b[2J").count() >= 2, "{stdout}");
    assert!(stdout.contains("alpha"), "{stdout}");
}

#[tokio::test]
async fn filters_and_profiles_are_removed_through_chatctl() {
    let mut opts = ServerOpts::new().generated_keys().with_jwt();
    opts.room_ports = 10;
    let s = Server::start(opts).await;
    let secret = s.jwt_secret.clone().expect("a JWT secret");
    let port = s.create_room("words").await;
    let bound = Duration::from_secs(20);

    // A reject filter: `say` is refused until the filter is removed.
    ctl(&s, &["add-filter", "darn", "--action", "reject"])
        .await
        .ok();
    let out = ctl(&s, &["filters"]).await;
    assert!(out.ok().stdout.contains("darn\treject"), "{out:#?}");
    let ann = chat_tests::token::token(&secret, "u-ann", "Ann", "words", "member");
    let mut c = Client::with_token(port, &ann).await;
    // Each try sends `say` and reads its answer: an error or an ack.
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        c.say("darn it", "f1").await;
        let v = c.recv_json().await;
        if v["type"] == "error" && v["code"] == "filtered" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the filter never applied"
        );
    }
    let out = ctl(&s, &["remove-filter", "darn"]).await;
    assert!(out.ok().stdout.contains("removed"), "{out:#?}");
    loop {
        c.say("darn it", "f2").await;
        let answer = loop {
            let v = c.recv_json().await;
            match v["type"].as_str() {
                Some("ack") | Some("error") => break v,
                _ => {}
            }
        };
        if answer["type"] == "ack" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the filter was never removed: {answer}"
        );
    }
    let out = ctl(&s, &["remove-filter", "darn"]).await;
    assert!(out.failed().contains("no filter"), "{out:#?}");
    let r = s.admin(Method::DELETE, "/api/v1/filters/darn").await;
    r.expect(404);

    // A profile's name wins over the token's until it is removed.
    ctl(&s, &["set-user", "u-1", "Profile Name"]).await.ok();
    let tok = chat_tests::token::token(&secret, "u-1", "Token Name", "words", "member");
    let q = format!("token={}", chat_tests::client::enc(&tok));
    wait_for(bound, "the profile's name", || async {
        let mut c = Client::join(port, &q).await;
        let name = c.name();
        c.close().await;
        (name == "Profile Name").then_some(())
    })
    .await;
    let out = ctl(&s, &["remove-user", "u-1"]).await;
    assert!(out.ok().stdout.contains("removed"), "{out:#?}");
    wait_for(bound, "the token's name", || async {
        let mut c = Client::join(port, &q).await;
        let name = c.name();
        c.close().await;
        (name == "Token Name").then_some(())
    })
    .await;
    let out = ctl(&s, &["remove-user", "u-1"]).await;
    assert!(out.failed().contains("no user"), "{out:#?}");

    // unban --room lifts only that room's ban.
    ctl(&s, &["ban", "u-2", "--room", "words"]).await.ok();
    ctl(&s, &["ban", "u-2"]).await.ok();
    let out = ctl(&s, &["unban", "u-2", "--room", "words"]).await;
    assert!(
        out.ok().stdout.contains("unbanned u-2 from room words"),
        "{out:#?}"
    );
    let r = s.admin(Method::GET, "/api/v1/bans").await;
    let left: Vec<&Value> = r
        .data()
        .as_array()
        .map(|a| a.iter().filter(|b| b["user_id"] == "u-2").collect())
        .unwrap_or_default();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0]["room"].is_null(), "{left:?}");
}
