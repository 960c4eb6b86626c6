//! Fault tolerance: crashed, hung and crash-looping room workers, a killed
//! master replaced by a new one, a graceful master restart, one master per
//! run dir, and a stale socket file. Every test ends with the harness's
//! leftover check.

mod fault_common;

use std::time::{Duration, Instant};

use chat_tests::metrics::metric_value;
use chat_tests::procs::{self, pid_alive};
use chat_tests::{Client, Event, Server, ServerOpts};
use fault_common::{
    Api, assert_accepts_join, assert_no_leftovers, pid_of, restarted_from, wait_room,
};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Frames of `kind` in `frames`.
fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

/// Reads frames until a frame of `kind` whose `pred` holds (at most `bound`);
/// every frame read on the way is appended to `seen`. Panics on a close.
async fn recv_until(
    c: &mut Client,
    bound: Duration,
    what: &str,
    seen: &mut Vec<Value>,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_event(left).await {
            Event::Json(v) => {
                seen.push(v.clone());
                if pred(&v) {
                    return v;
                }
            }
            other => panic!("waiting for {what}: got {other:?}; frames so far: {seen:?}"),
        }
    }
}

/// Asserts that a client got neither a close nor a `left`/`closing` frame.
#[track_caller]
fn assert_not_disconnected(c: &Client, frames: &[Value], who: &str) {
    assert!(!c.closed, "{who} was disconnected; frames: {frames:?}");
    for kind in ["left", "closing"] {
        assert!(
            of_type(frames, kind).is_empty(),
            "{who} got a {kind} frame: {frames:?}"
        );
    }
}

/// Messages (`message` frames) in `frames`: `(seq, text)`.
fn messages(frames: &[Value]) -> Vec<(u64, String)> {
    of_type(frames, "message")
        .into_iter()
        .map(|m| {
            (
                m["seq"].as_u64().unwrap(),
                m["text"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn killed_worker_restarts_on_its_port_and_clients_resume() {
    let mut s = Server::default_server().await;
    let api = Api::new(&s);
    let port = s.create_room("crashy").await;
    let old = s.room_pid("crashy").await;

    let mut a = Client::guest(port, "alice").await;
    let mut b = Client::guest(port, "bob").await;
    let epoch = a.welcome["epoch"].as_u64().expect("welcome.epoch");
    a.recv_type("joined").await;
    // Stored (acked) before the crash.
    let mut a_last = 0;
    for i in 0..3 {
        a_last = a.say_acked(&format!("before {i}")).await;
    }
    let mut b_last = 0;
    for _ in 0..3 {
        b_last = b.recv_type("message").await["seq"].as_u64().unwrap();
    }
    assert_eq!(a_last, b_last);

    let killed_at = Instant::now();
    procs::sigkill(old);
    // Both clients lose their connection.
    for c in [&mut a, &mut b] {
        c.expect_close_or_end(Duration::from_secs(5)).await;
    }
    let room = wait_room(
        &api,
        "crashy",
        Duration::from_secs(10),
        "a new worker, ready",
        |r| restarted_from(r, old),
    )
    .await;
    let took = killed_at.elapsed();
    // How fast is for the benchmarks; the wait above is bounded.
    eprintln!("worker restarted in {took:?}");
    assert_eq!(room["port"], port, "the room moved: {room}");
    assert_eq!(room["restarts"], 1, "{room}");
    assert!(!pid_alive(old));

    // alice resumes first, on the same port: nothing to replay.
    let mut a = Client::join(port, &format!("name=alice&since={a_last}&epoch={epoch}")).await;
    assert_eq!(a.welcome["resumed"], true, "welcome: {}", a.welcome);
    assert_eq!(a.welcome["epoch"], epoch, "welcome: {}", a.welcome);
    assert_eq!(a.welcome["seq"], a_last, "welcome: {}", a.welcome);
    let replay = a.sync().await;
    assert!(messages(&replay).is_empty(), "alice replay: {replay:?}");
    // What bob misses: sent (and stored) while bob is away.
    let mut missed = Vec::new();
    for i in 0..3 {
        let text = format!("after {i}");
        let seq = a.say_acked(&text).await;
        missed.push((seq, text));
    }
    assert_eq!(
        missed.iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![a_last + 1, a_last + 2, a_last + 3],
        "seq must continue after the restart"
    );

    let mut b = Client::join(port, &format!("name=bob&since={b_last}&epoch={epoch}")).await;
    assert_eq!(b.welcome["resumed"], true, "welcome: {}", b.welcome);
    assert_eq!(b.welcome["epoch"], epoch, "welcome: {}", b.welcome);
    assert_eq!(
        b.welcome["history"].as_array().map(Vec::len),
        Some(0),
        "a resumed welcome has no history: {}",
        b.welcome
    );
    // Exactly what bob missed, once, in order, then nothing more.
    let frames = b.sync().await;
    assert_eq!(messages(&frames), missed, "bob's replay: {frames:?}");
    let more = b.sync().await;
    assert!(messages(&more).is_empty(), "duplicates: {more:?}");
    // alice sees bob come back, and no message (hers come as acks).
    let a_frames = a.sync().await;
    assert!(messages(&a_frames).is_empty(), "{a_frames:?}");
    // Chat goes on.
    let seq = b.say_acked("bob is back").await;
    assert_eq!(seq, a_last + 4);
    let m = a.recv_type("message").await;
    assert_eq!(m["seq"], seq);

    s.stop_gracefully().await;
    assert_no_leftovers(&mut s).await;
}

/// A server with the given IPC heartbeat intervals (busy, idle).
async fn with_heartbeats(busy: &str, idle: &str) -> Server {
    Server::start(ServerOpts::new().args(["--ipc-heartbeat", busy, "--ipc-idle-heartbeat", idle]))
        .await
}

/// Stops the worker `pid` of `room` (SIGSTOP) and waits up to `bound` for
/// the master to replace it; the room's listing then.
async fn hang_and_await_replacement(api: &Api, room: &str, pid: i32, bound: Duration) -> Value {
    let stopped_at = Instant::now();
    procs::signal(pid, Signal::SIGSTOP);
    let listing = wait_room(api, room, bound, "the hung worker to be replaced", |r| {
        restarted_from(r, pid)
    })
    .await;
    eprintln!(
        "hung worker of {room} replaced in {:?}",
        stopped_at.elapsed()
    );
    listing
}

#[tokio::test]
async fn hung_worker_is_terminated_and_restarted() {
    let mut s = with_heartbeats("200ms", "200ms").await;
    let api = Api::new(&s);
    let port = s.create_room("hung").await;
    let old = s.room_pid("hung").await;
    let room = hang_and_await_replacement(&api, "hung", old, Duration::from_secs(10)).await;
    assert_eq!(room["port"], port, "{room}");
    assert_eq!(room["restarts"], 1, "{room}");
    // The stopped worker was killed (SIGTERM stays pending on a stopped
    // process; the SIGKILL that follows ends it).
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(old) {
        assert!(
            Instant::now() < deadline,
            "the hung worker {old} is still alive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_accepts_join(port, "after-hang").await;
    s.remember_workers().await;
    s.stop_gracefully().await;
    assert_no_leftovers(&mut s).await;
}

/// Heartbeats sent to rooms so far.
async fn heartbeats(s: &Server) -> f64 {
    chat_tests::metrics::scrape(s)
        .await
        .sum("chat_ipc_heartbeats_total")
}

/// Heartbeats sent while `during` runs.
async fn heartbeats_during(s: &Server, during: impl std::future::Future<Output = ()>) -> f64 {
    let before = heartbeats(s).await;
    during.await;
    heartbeats(s).await - before
}

#[tokio::test]
async fn an_idle_room_gets_fewer_heartbeats_and_a_hung_one_is_still_replaced() {
    // Busy 100 ms, idle 800 ms: an idle room backs off to one heartbeat per
    // 800 ms within 0.7 s; without the backoff it would get ten a second.
    let mut s = with_heartbeats("100ms", "800ms").await;
    let api = Api::new(&s);
    let port = s.create_room("quiet").await;
    // Settle (the backoff reaches its cap), then count over 4 s: about 5
    // at 800 ms, 40 at 100 ms.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = heartbeats_during(&s, tokio::time::sleep(Duration::from_secs(4))).await;
    assert!(
        (2.0..=10.0).contains(&idle),
        "an idle room got {idle} heartbeats in 4 s (800 ms idle interval)"
    );

    // A chatting room is back on the busy rhythm (its stats are frames of
    // its own): about 20 in 2 s.
    let mut c = Client::guest(port, "talker").await;
    let busy = heartbeats_during(&s, async {
        for i in 0..10 {
            c.say_acked(&format!("line {i}")).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        busy >= 10.0,
        "a chatting room got {busy} heartbeats in about 2 s (100 ms busy interval)"
    );
    c.close().await;

    // Idle again, then hung: found within four idle intervals and replaced.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let old = s.room_pid("quiet").await;
    let room = hang_and_await_replacement(&api, "quiet", old, Duration::from_secs(15)).await;
    assert_eq!(room["port"], port, "{room}");
    assert_accepts_join(port, "after-idle-hang").await;
    s.remember_workers().await;
    s.stop_gracefully().await;
    assert_no_leftovers(&mut s).await;
}

#[tokio::test]
async fn crash_loop_exhausts_the_restart_budget() {
    let mut s =
        Server::start(ServerOpts::new().args(["--max-restarts", "2", "--restart-window", "60s"]))
            .await;
    let api = Api::new(&s);
    let port = s.create_room("loop").await;
    let mut pid = s.room_pid("loop").await;
    for kill in 1..=3 {
        procs::sigkill(pid);
        if kill == 3 {
            break;
        }
        let room = wait_room(
            &api,
            "loop",
            Duration::from_secs(10),
            "a restarted worker",
            |r| restarted_from(r, pid),
        )
        .await;
        assert_eq!(room["port"], port, "{room}");
        assert_eq!(room["restarts"], kill, "{room}");
        pid = pid_of(&room);
        s.remember_workers().await;
        assert_accepts_join(port, &format!("probe{kill}")).await;
    }
    let room = wait_room(
        &api,
        "loop",
        Duration::from_secs(10),
        "status failed",
        |r| r["status"] == "failed",
    )
    .await;
    let error = room["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("budget"),
        "the error does not mention the restart budget: {room}"
    );
    assert_eq!(room["restarts"], 2, "{room}");
    // A client coming back during the notice period learns why.
    let mut back = Client::connect(port, "name=back").await;
    let closing = back.recv_type("closing").await;
    assert!(
        closing["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("budget"),
        "{closing}"
    );
    let (code, reason) = back.expect_close().await;
    assert_eq!(code, 1011, "{reason}");
    assert!(reason.contains("failed"), "{reason}");
    // After the notice the failed room's port is free again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match std::net::TcpListener::bind(("127.0.0.1", port)) {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "port {port} of the failed room cannot be bound: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No worker for it is left.
    assert!(!pid_alive(pid));
    let metrics = api.metrics().await.expect("GET /metrics");
    let crashes = metric_value(&metrics, "chat_worker_crashes_total")
        .unwrap_or_else(|| panic!("no chat_worker_crashes_total in:\n{metrics}"));
    assert!(crashes >= 3.0, "chat_worker_crashes_total = {crashes}");
    s.stop_gracefully().await;
    assert_no_leftovers(&mut s).await;
}

#[tokio::test]
async fn rooms_outlive_a_killed_master_and_are_adopted() {
    let mut s = Server::start(ServerOpts::new().args(["--shutdown-grace", "5s"])).await;
    let api = Api::new(&s);
    let port = s.create_room("survivor").await;
    let pid = s.room_pid("survivor").await;
    let mut a = Client::guest(port, "alice").await;
    let mut b = Client::guest(port, "bob").await;
    let (mut a_frames, mut b_frames) = (Vec::new(), Vec::new());
    recv_until(
        &mut a,
        Duration::from_secs(5),
        "joined",
        &mut a_frames,
        |f| f["type"] == "joined",
    )
    .await;
    let first = a.say_acked("before the crash").await;
    recv_until(
        &mut b,
        Duration::from_secs(5),
        "message",
        &mut b_frames,
        |f| f["seq"] == first,
    )
    .await;

    s.kill_master().await;
    assert!(pid_alive(pid), "the room died with its master");

    // The room keeps serving: broadcasts flow both ways.
    a.say("while the master is down (a)", "down-a").await;
    let m = recv_until(
        &mut b,
        Duration::from_secs(5),
        "a's message",
        &mut b_frames,
        |f| f["type"] == "message" && f["text"] == "while the master is down (a)",
    )
    .await;
    let seq_a = m["seq"].as_u64().unwrap();
    b.say("while the master is down (b)", "down-b").await;
    let m = recv_until(
        &mut a,
        Duration::from_secs(5),
        "b's message",
        &mut a_frames,
        |f| f["type"] == "message" && f["text"] == "while the master is down (b)",
    )
    .await;
    let seq_b = m["seq"].as_u64().unwrap();
    assert_eq!(seq_a, first + 1);
    assert_eq!(seq_b, first + 2);
    // Nothing can be stored without a master: no ack yet.
    a_frames.extend(a.sync().await);
    b_frames.extend(b.sync().await);
    assert!(of_type(&a_frames, "ack").is_empty(), "{a_frames:?}");
    assert!(of_type(&b_frames, "ack").is_empty(), "{b_frames:?}");

    let started = Instant::now();
    s.start_again("master2").await;
    // The acks arrive once the room is adopted and its messages stored.
    let ack = recv_until(
        &mut a,
        Duration::from_secs(10),
        "a's ack",
        &mut a_frames,
        |f| f["type"] == "ack",
    )
    .await;
    assert_eq!(ack, json!({"type":"ack","client_id":"down-a","seq":seq_a}));
    let ack = recv_until(
        &mut b,
        Duration::from_secs(10),
        "b's ack",
        &mut b_frames,
        |f| f["type"] == "ack",
    )
    .await;
    assert_eq!(ack, json!({"type":"ack","client_id":"down-b","seq":seq_b}));
    eprintln!(
        "acks arrived {:?} after the new master started",
        started.elapsed()
    );

    // The new master lists the room with the same worker.
    let room = wait_room(
        &api,
        "survivor",
        Duration::from_secs(10),
        "the adopted room",
        |r| r["status"] == "ready",
    )
    .await;
    assert_eq!(pid_of(&room), pid, "not adopted: {room}");
    assert_eq!(room["port"], port, "{room}");
    let rooms = api.rooms().await.expect("rooms");
    assert_eq!(rooms.len(), 1, "{rooms:?}");

    // Nobody was disconnected, and chat continues.
    let seq = a.say_acked("after the new master").await;
    recv_until(
        &mut b,
        Duration::from_secs(5),
        "message",
        &mut b_frames,
        |f| f["seq"] == seq,
    )
    .await;
    a_frames.append(&mut a.skipped);
    b_frames.append(&mut b.skipped);
    assert_not_disconnected(&a, &a_frames, "alice");
    assert_not_disconnected(&b, &b_frames, "bob");
    // A newcomer sees everything, in order.
    let c = Client::guest(port, "carol").await;
    let history: Vec<u64> = c.welcome["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(history, vec![first, seq_a, seq_b, seq], "{}", c.welcome);
    drop(c);

    let stopping = Instant::now();
    let status = s.stop_within(Duration::from_secs(20)).await;
    eprintln!("the new master stopped in {:?}", stopping.elapsed());
    assert!(status.success(), "the new master exited with {status}");
    for c in [&mut a, &mut b] {
        let close = c.expect_close_or_end(Duration::from_secs(5)).await;
        assert_eq!(close.map(|c| c.0), Some(1001));
    }
    assert_no_leftovers(&mut s).await;
}

/// `/api/v1/load`'s `startedAt`-like field (changes when the master
/// re-executes).
async fn master_started_at(api: &Api) -> Option<String> {
    let v = api.admin_get("/api/v1/load").await?;
    let d = &v["data"];
    ["startedAt", "started_at"]
        .iter()
        .find_map(|k| d[*k].as_str().map(str::to_owned))
}

/// Waits until the master answers again after a restart (a new start time),
/// with `room` ready on worker `pid`.
async fn await_restarted_master(api: &Api, before: &str, room: &str, pid: i32) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(now) = master_started_at(api).await
            && now != before
            && let Some(r) = api.room(room).await
            && r["status"] == "ready"
            && r["connections"].as_u64().unwrap_or(0) >= 2
        {
            assert_eq!(pid_of(&r), pid, "the room's worker changed: {r}");
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the master did not come back (with the room adopted) within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sighup_restarts_the_master_in_place() {
    let mut s = Server::default_server().await;
    let api = Api::new(&s);
    let port = s.create_room("steady").await;
    let pid = s.room_pid("steady").await;
    let master = s.pid;
    let mut a = Client::guest(port, "alice").await;
    let mut b = Client::guest(port, "bob").await;
    let (mut a_frames, mut b_frames) = (Vec::new(), Vec::new());
    recv_until(
        &mut a,
        Duration::from_secs(5),
        "joined",
        &mut a_frames,
        |f| f["type"] == "joined",
    )
    .await;
    let started = master_started_at(&api)
        .await
        .expect("/api/v1/load startedAt");

    // SIGHUP, then the admin API's restart: both re-execute in place.
    for (round, how) in ["SIGHUP", "POST /api/v1/restart"].iter().enumerate() {
        let before = master_started_at(&api).await.expect("startedAt");
        if round == 0 {
            procs::signal(master, Signal::SIGHUP);
        } else {
            let r = api
                .try_request(reqwest::Method::POST, true, "/api/v1/restart", None)
                .await
                .expect("POST /api/v1/restart");
            assert_eq!(r.0, 202, "{}", r.1);
        }
        let now = await_restarted_master(&api, &before, "steady", pid).await;
        assert_ne!(now, started);
        assert!(s.master_running(), "the master exited after {how}");
        assert_eq!(s.pid, master);
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(s.run_dir.join("master.json")).unwrap())
                .unwrap();
        assert_eq!(json["pid"], master, "{how}: master.json {json}");
        // Both APIs answer again.
        let r = api
            .try_request(reqwest::Method::GET, false, "/api/v1/room/steady", None)
            .await
            .expect("room API");
        assert_eq!(r.0, 200, "{how}: {}", r.1);
        // Chat continues, with acks.
        let text = format!("after {how}");
        let seq = a.say_acked(&text).await;
        recv_until(
            &mut b,
            Duration::from_secs(5),
            "message",
            &mut b_frames,
            |f| f["seq"] == seq,
        )
        .await;
        let seq = b.say_acked(&format!("bob after {how}")).await;
        recv_until(
            &mut a,
            Duration::from_secs(5),
            "message",
            &mut a_frames,
            |f| f["seq"] == seq,
        )
        .await;
        a_frames.append(&mut a.skipped);
        b_frames.append(&mut b.skipped);
        assert_not_disconnected(&a, &a_frames, "alice");
        assert_not_disconnected(&b, &b_frames, "bob");
        assert!(pid_alive(pid));
    }
    s.stop_gracefully().await;
    assert_no_leftovers(&mut s).await;
}

#[tokio::test]
async fn second_master_on_a_run_dir_refuses_to_start() {
    let mut s = Server::default_server().await;
    let port = s.create_room("only").await;
    // Other ports, same run dir: only the lock can stop it.
    let (mut cmd, stderr_path) = s.master_command_on_run_dir(&[], "second");
    let mut child = cmd.spawn().expect("spawning the second master");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the second master is still running after 10 s; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(!status.success(), "the second master exited with {status}");
    assert!(
        stderr.contains("already running"),
        "stderr does not say another master is already running:\n{stderr}"
    );
    // The first one is untouched.
    assert!(s.master_running());
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(s.run_dir.join("master.json")).unwrap())
            .unwrap();
    assert_eq!(json["pid"], s.pid, "master.json was overwritten: {json}");
    assert_accepts_join(port, "still-here").await;
    s.stop_gracefully().await;
    assert_no_leftovers(&mut s).await;
}

#[tokio::test]
async fn stale_socket_file_does_not_prevent_start() {
    let mut s = Server::default_server().await;
    s.stop_gracefully().await;
    assert_no_leftovers(&mut s).await;
    let sock = s.run_dir.join("master.sock");
    assert!(!sock.exists(), "the socket was not removed at shutdown");
    std::fs::write(&sock, b"not a socket").unwrap();

    s.start_again("master2").await;
    let api = Api::new(&s);
    let port = api.create_room("fresh").await;
    assert_accepts_join(port, "ann").await;
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&sock)
            .unwrap()
            .file_type()
            .is_socket(),
        "master.sock is not a socket"
    );
    let status = s.stop_gracefully().await;
    assert!(status.success(), "{status}");
    assert_no_leftovers(&mut s).await;
}
