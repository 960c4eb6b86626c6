//! Secrets (issue 12): `KEY`, `ADMIN_KEY`, `JWT_SECRET`, `LOADBALANCER_KEY`
//! and the password of the store URI never appear on any process's command
//! line (`/proc/<pid>/cmdline` of the master and of every room worker), in a
//! worker's environment, in the logs at any level (the master runs with
//! `RUST_LOG=trace` while rooms are created, joined, chatted in, restarted
//! and administered, and forged keys and tokens are refused), or in any HTTP
//! answer or WebSocket frame. Generated key files are owner-only.
//!
//! The secrets come from the master's environment, as in production.

mod attack_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chat_tests::client::enc;
use chat_tests::{Client, Server, ServerOpts, procs, random_string, token};
use reqwest::Method;
use serde_json::{Value, json};

/// A master started (by the harness's one launcher) with secrets in its
/// environment and `RUST_LOG=trace`.
struct Master {
    s: Server,
    run_dir: PathBuf,
    port: u16,
    admin_port: u16,
    http: reqwest::Client,
    /// Every answer (HTTP bodies and headers, WebSocket frames) seen.
    answers: String,
}

impl Master {
    async fn start(env: &[(&str, &str)], args: &[String]) -> Master {
        // The secrets given here replace the harness's own keys (they come
        // later in the environment); `LOADBALANCER_KEY` is only what this
        // test gives.
        let mut opts = ServerOpts::new()
            .room_port_count(10)
            .env("RUST_LOG", "trace")
            .args(args.iter().cloned());
        for (k, v) in env {
            opts = opts.env(*k, *v);
        }
        let s = Server::start(opts).await;
        Master {
            run_dir: s.run_dir.clone(),
            port: s.port,
            admin_port: s.admin_port,
            s,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
            answers: String::new(),
        }
    }

    /// One request; the answer's status and JSON body (headers and body
    /// are kept in `answers`).
    async fn call(
        &mut self,
        admin: bool,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let port = if admin { self.admin_port } else { self.port };
        let mut req = self
            .http
            .request(method.clone(), format!("http://127.0.0.1:{port}{path}"));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = res.status().as_u16();
        self.answers.push_str(&format!("{:?}\n", res.headers()));
        let text = res.text().await.unwrap_or_default();
        self.answers.push_str(&text);
        self.answers.push('\n');
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn master_pid(&self) -> i32 {
        self.s.pid
    }

    /// The master and its live children (the room workers).
    fn pids(&self) -> Vec<i32> {
        let master = self.master_pid();
        let mut pids = vec![master];
        pids.extend(procs::children_of(master));
        pids
    }

    /// Everything logged: the master's stdout and stderr and any log file
    /// in the run dir.
    fn logs(&self) -> String {
        let mut out = String::new();
        for dir in [self.s.log_dir.as_path(), self.run_dir.as_path()] {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    out.push_str(&String::from_utf8_lossy(
                        &std::fs::read(&p).unwrap_or_default(),
                    ));
                }
            }
        }
        out
    }
}

/// `/proc/<pid>/<file>` as bytes (empty when the process is gone).
fn proc_file(pid: i32, file: &str) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Asserts no secret is on the command line of `pids`, and none is in the
/// environment of a worker (every pid but the master's).
#[track_caller]
fn assert_not_in_procs(m: &Master, secrets: &[(&str, &str)]) -> usize {
    let pids = m.pids();
    let master = m.master_pid();
    for &pid in &pids {
        let cmdline = proc_file(pid, "cmdline");
        assert!(
            !cmdline.is_empty() || !procs::pid_alive(pid),
            "no cmdline for {pid}"
        );
        let environ = proc_file(pid, "environ");
        for (what, secret) in secrets {
            assert!(
                !contains(&cmdline, secret),
                "{what} is on the command line of pid {pid}: {}",
                procs::cmdline_text(pid)
            );
            if pid != master {
                assert!(
                    !contains(&environ, secret),
                    "{what} is in the environment of worker {pid}"
                );
            }
        }
    }
    pids.len()
}

#[track_caller]
fn assert_not_in(text: &str, what_text: &str, secrets: &[(&str, &str)]) {
    for (what, secret) in secrets {
        assert!(!text.contains(secret), "{what} appears in {what_text}");
    }
}

/// Runs create, join, chat, moderation, admin and refused requests.
#[tokio::test]
async fn secrets_stay_out_of_command_lines_logs_and_answers() {
    let key = random_string(32);
    let admin_key = random_string(32);
    let jwt = random_string(32);
    let lb_key = random_string(32);
    let secrets = [
        ("KEY", key.as_str()),
        ("ADMIN_KEY", admin_key.as_str()),
        ("JWT_SECRET", jwt.as_str()),
        ("LOADBALANCER_KEY", lb_key.as_str()),
    ];
    let mut m = Master::start(
        &[
            ("KEY", &key),
            ("ADMIN_KEY", &admin_key),
            ("JWT_SECRET", &jwt),
            ("LOADBALANCER_KEY", &lb_key),
        ],
        &[],
    )
    .await;

    // The room API: a create, reads, refused keys and bad input.
    for room in ["alpha", "beta"] {
        let (st, v) = m
            .call(
                false,
                Method::POST,
                &format!("/api/v1/room/{room}"),
                Some(&key),
                Some(json!({"guests": true})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    m.call(false, Method::GET, "/api/v1/rooms", Some(&key), None)
        .await;
    m.call(false, Method::GET, "/api/v1/room/alpha", Some(&key), None)
        .await;
    m.call(false, Method::GET, "/api/v1/health", None, None)
        .await;
    m.call(false, Method::GET, "/api/v1/rooms", Some(&admin_key), None)
        .await;
    m.call(false, Method::POST, "/api/v1/room/a.b", Some(&key), None)
        .await;
    m.call(
        false,
        Method::POST,
        "/api/v1/room/gamma",
        Some(&key),
        Some(json!({"max_members": "x"})),
    )
    .await;
    m.call(false, Method::POST, "/api/v1/room/gamma", Some(&jwt), None)
        .await;

    // Rooms: token and guest joins, chat, whispers, moderation, errors.
    let (st, info) = m
        .call(false, Method::GET, "/api/v1/room/alpha", Some(&key), None)
        .await;
    assert_eq!(st, 200, "{info}");
    let port = info["data"]["port"].as_u64().expect("port") as u16;
    let mut owner =
        Client::with_token(port, &token::token(&jwt, "o1", "Olga", "alpha", "owner")).await;
    let mut member = Client::with_token(port, &token::member(&jwt, "u1", "alpha")).await;
    let mut guest = Client::guest(port, "visitor").await;
    owner.say_acked("hello").await;
    member.say_acked("hi").await;
    guest.say_acked("hey").await;
    member
        .send_json(json!({"type":"whisper","to":"o1","text":"psst"}))
        .await;
    owner.send_json(json!({"type":"history","limit":10})).await;
    owner.send_text("{not json").await;
    owner.send_json(json!({"type":"nope"})).await;
    owner
        .send_json(json!({"type":"mute","user":guest.id(),"secs":5}))
        .await;
    owner.sync().await;
    // Forged tokens: signed with the room key, the admin key, expired.
    for forged in [
        token::member(&key, "x1", "alpha"),
        token::member(&admin_key, "x2", "alpha"),
        token::sign(&jwt, &json!({"sub":"x3","room":"alpha","exp":1})),
        token::member(&jwt, "x4", "beta"),
    ] {
        let (code, _) =
            attack_common::join_code(port, &format!("token={}", enc(&forged)), &[]).await;
        assert!(code >= 4000, "a forged token joined");
    }

    // The admin API: reads, actions, refused keys.
    for path in [
        "/api/v1/",
        "/api/v1/load",
        "/api/v1/rooms",
        "/api/v1/rooms/alpha",
        "/api/v1/log-level",
        "/api/v1/bans",
        "/api/v1/filters",
        "/api/v1/cache",
        "/metrics",
        "/readyz",
        "/livez",
    ] {
        m.call(true, Method::GET, path, Some(&admin_key), None)
            .await;
    }
    m.call(
        true,
        Method::POST,
        "/api/v1/rooms/alpha/broadcast",
        Some(&admin_key),
        Some(json!({"text":"notice"})),
    )
    .await;
    m.call(
        true,
        Method::POST,
        "/api/v1/broadcast",
        Some(&admin_key),
        Some(json!({"text":"all"})),
    )
    .await;
    m.call(
        true,
        Method::POST,
        "/api/v1/rooms/alpha/kick",
        Some(&admin_key),
        Some(json!({"user": guest.id()})),
    )
    .await;
    m.call(true, Method::GET, "/api/v1/load", Some(&key), None)
        .await;
    m.call(true, Method::GET, "/api/v1/load", Some(&jwt), None)
        .await;
    m.call(true, Method::GET, "/api/v1/load", None, None).await;
    let (_, beta) = m
        .call(false, Method::GET, "/api/v1/room/beta", Some(&key), None)
        .await;
    let old_pid = beta["data"]["pid"].as_u64();
    assert!(old_pid.is_some(), "{beta}");
    let (st, v) = m
        .call(
            true,
            Method::POST,
            "/api/v1/rooms/beta/restart",
            Some(&admin_key),
            None,
        )
        .await;
    assert!(st == 202 || st == 200, "restart: {st} {v}");
    m.call(
        true,
        Method::PUT,
        "/api/v1/log-level",
        Some(&admin_key),
        Some(json!({"filter":"trace"})),
    )
    .await;

    // The restarted worker is up again (a new process, a new command line).
    chat_tests::wait_for(Duration::from_secs(20), "beta to run again", || {
        let http = m.http.clone();
        let url = format!("http://127.0.0.1:{}/api/v1/room/beta", m.port);
        let key = key.clone();
        async move {
            let r = http.get(url).header("X-API-Key", key).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            (v["data"]["status"] == "ready" && v["data"]["pid"].as_u64() != old_pid).then_some(())
        }
    })
    .await;

    // Frames the clients saw.
    for c in [&mut owner, &mut member, &mut guest] {
        let mut seen = std::mem::take(&mut c.skipped);
        seen.push(c.welcome.clone());
        m.answers
            .push_str(&serde_json::to_string(&seen).unwrap_or_default());
    }

    let procs_seen = assert_not_in_procs(&m, &secrets);
    assert!(
        procs_seen >= 3,
        "the master and two workers: {procs_seen} processes"
    );
    let logs = m.logs();
    assert!(
        logs.contains("TRACE"),
        "the logs are not at trace level; the test would prove nothing"
    );
    assert!(
        logs.len() > 10_000,
        "suspiciously short logs: {} bytes",
        logs.len()
    );
    assert_not_in(&logs, "the logs (RUST_LOG=trace)", &secrets);
    assert_not_in(&m.answers, "an answer", &secrets);
    let run_files = std::fs::read_dir(&m.run_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    for p in run_files {
        if p.extension().is_some_and(|e| e == "json") && !p.ends_with("keys.json") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            assert_not_in(&text, &p.display().to_string(), &secrets);
        }
    }
}

/// The store URI's password: the master is given a MongoDB URI with a
/// password (for a server that is not there, so the driver's errors are
/// logged too); it appears on no command line, in no log line at trace
/// level and in no answer.
#[tokio::test]
async fn the_store_password_stays_out_of_command_lines_logs_and_answers() {
    let password = random_string(24);
    let closed = procs::free_port();
    let uri = format!("mongodb://chat:{password}@127.0.0.1:{closed}/chat?authSource=admin");
    let key = random_string(32);
    let admin_key = random_string(32);
    let mut m = Master::start(
        &[
            ("KEY", &key),
            ("ADMIN_KEY", &admin_key),
            ("MONGODB_URI", &uri),
        ],
        &[],
    )
    .await;
    let secrets = [("the store password", password.as_str())];
    m.call(false, Method::POST, "/api/v1/room/stored", Some(&key), None)
        .await;
    m.call(false, Method::GET, "/api/v1/health", None, None)
        .await;
    m.call(false, Method::GET, "/api/v1/rooms", Some(&key), None)
        .await;
    for path in [
        "/api/v1/load",
        "/readyz",
        "/api/v1/bans",
        "/api/v1/cache",
        "/metrics",
    ] {
        m.call(true, Method::GET, path, Some(&admin_key), None)
            .await;
    }
    m.call(
        true,
        Method::POST,
        "/api/v1/cache/refresh",
        Some(&admin_key),
        None,
    )
    .await;
    // The store is retried in the background: wait for a logged failure.
    chat_tests::wait_for(
        Duration::from_secs(20),
        "a store error in the logs",
        || async {
            let logs = m.logs();
            (logs.contains("not reachable") || logs.contains("store")).then_some(())
        },
    )
    .await;
    assert_not_in_procs(&m, &secrets);
    assert_not_in(&m.logs(), "the logs (RUST_LOG=trace)", &secrets);
    assert_not_in(&m.answers, "an answer", &secrets);
}

/// The Redis URL's password (`REDIS_URL`, as the README says to give it):
/// neither a Redis that refuses it nor one that is not there puts it on a
/// command line, in a room's environment, in the logs or in `/readyz`.
#[tokio::test]
async fn the_redis_password_stays_out_of_command_lines_logs_and_answers() {
    let redis = chat_tests::RedisServer::start().await;
    let wrong = random_string(24);
    let closed = procs::free_port();
    let key = random_string(32);
    let admin_key = random_string(32);
    for url in [
        format!("redis://:{wrong}@127.0.0.1:{}/0", redis.port),
        format!("redis://:{wrong}@127.0.0.1:{closed}/0"),
    ] {
        let mut m = Master::start(
            &[
                ("KEY", &key),
                ("ADMIN_KEY", &admin_key),
                ("REDIS_URL", &url),
            ],
            &[],
        )
        .await;
        let secrets = [("the redis password", wrong.as_str())];
        m.call(false, Method::POST, "/api/v1/room/r", Some(&key), None)
            .await;
        m.call(
            false,
            Method::GET,
            "/api/v1/users/u1/presence",
            Some(&key),
            None,
        )
        .await;
        // The failure is known (and shown) before anything is checked.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (_, body) = m.call(true, Method::GET, "/readyz", None, None).await;
            if body["data"]["redis"]["last_error"].is_string() {
                assert_eq!(body["data"]["redis"]["up"], false, "{body}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no redis error in /readyz: {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        m.call(true, Method::GET, "/metrics", None, None).await;
        assert_not_in_procs(&m, &secrets);
        assert_not_in(&m.logs(), "the logs (RUST_LOG=trace)", &secrets);
        assert_not_in(&m.answers, "an answer", &secrets);
        assert!(m.logs().contains("redis"), "{}", m.logs());
    }
}

/// Generated keys are written to `keys.json` readable by the owner only
/// (0600), in a run dir only the owner can enter (0700).
#[tokio::test]
async fn generated_key_files_are_owner_only() {
    let s = Server::start(ServerOpts::new().generated_keys()).await;
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let keys = s.run_dir.join("keys.json");
    assert_eq!(mode(&keys), 0o600, "keys.json mode {:o}", mode(&keys));
    assert_eq!(
        mode(&s.run_dir),
        0o700,
        "run dir mode {:o}",
        mode(&s.run_dir)
    );
    // Readable by the owner, and holds the keys the APIs accept.
    let text = std::fs::read_to_string(&keys).expect("reading keys.json");
    assert!(text.contains(&s.key) && text.contains(&s.admin_key));
    assert_eq!(s.api(Method::GET, "/api/v1/rooms").await.status, 200);
    assert_eq!(s.admin(Method::GET, "/api/v1/load").await.status, 200);
}
