//! The load-balancer protocol as the original load balancer needs it, against
//! a stand-in that records every request (`edge_common::FakeLb`):
//! the advertised version (`1.0.0` by default, `--lb-version`), the shape of
//! register and heartbeat requests, unregistration while draining and a new
//! registration on resume, the first heartbeat after a SIGHUP restart
//! (after adoption, with the running rooms), and the cause of a failure.

mod edge_common;

use std::time::Duration;

use chat_tests::{Server, ServerOpts, procs, wait_for};
use edge_common::{FakeLb, Request, lb_name, lb_status_of};
use nix::sys::signal::Signal;
use reqwest::Method;

/// How long the stand-in remembers a silent host.
const FORGET: Duration = Duration::from_secs(5);
/// Heartbeat interval of the masters here.
const EVERY: Duration = Duration::from_millis(200);
/// Bound of waits for heartbeats to show up.
const BEATS: Duration = Duration::from_secs(15);
const KEY: &str = "lb-key";

/// A master registering with `lbs` as `http://127.0.0.1:PORT`, 5 rooms.
async fn host(lbs: &[String], extra: &[&str]) -> Server {
    let mut opts = ServerOpts::new()
        .args([
            "--load-balancers",
            &lbs.join(","),
            "--lb-key",
            KEY,
            "--lb-interval",
            "200ms",
            "--host",
            "http://127.0.0.1",
        ])
        .args(extra.iter().copied());
    opts.room_ports = 5;
    Server::start(opts).await
}

/// The stand-in's requests about `port`'s host: `(method, segments)`.
fn calls(lb: &FakeLb, port: u16) -> Vec<(String, Vec<String>)> {
    let name = lb_name(port);
    lb.stub
        .requests()
        .iter()
        .map(|r: &Request| (r.method.clone(), r.segments()))
        .filter(|(_, seg)| seg.get(1) == Some(&name))
        .collect()
}

fn deletes(calls: &[(String, Vec<String>)]) -> usize {
    calls.iter().filter(|(m, _)| m == "DELETE").count()
}

/// Waits until the stand-in has at least `n` requests about `port`'s host.
async fn wait_calls(lb: &FakeLb, port: u16, n: usize, what: &str) -> Vec<(String, Vec<String>)> {
    wait_for(BEATS, what, || {
        let c = calls(lb, port);
        async move { (c.len() >= n).then_some(c) }
    })
    .await
}

#[tokio::test]
async fn registers_as_1_0_0_with_the_original_shape() {
    let lb = FakeLb::start(KEY, FORGET).await;
    let s = host(&[lb.url()], &[]).await;
    let name = lb_name(s.port);

    let h = lb
        .wait_host(BEATS, &name, "registered", |h| h.beats >= 2)
        .await;
    assert_eq!(h.version, "1.0.0");
    assert_eq!((h.capacity, h.rooms), (5, 0));
    assert_eq!(lb.find("1.0.0").await.as_deref(), Some(name.as_str()));
    // Our crate's version is not what the host advertises.
    assert_eq!(lb.find(env!("CARGO_PKG_VERSION")).await, None);

    // On the wire: PUT /register/{encodeURIComponent(HOST:PORT)}/{capacity}/
    // {rooms}/{version} with the key, and nothing else (the stand-in also
    // recorded the test's own `GET /find`).
    let expected = format!("/register/http%3A%2F%2F127.0.0.1%3A{}/5/0/1.0.0", s.port);
    let host_calls: Vec<Request> = lb
        .stub
        .requests()
        .into_iter()
        .filter(|r| !r.target.starts_with("/find/"))
        .collect();
    assert!(host_calls.len() >= 2, "{host_calls:?}");
    for r in host_calls {
        assert_eq!(r.method, "PUT", "{r:?}");
        assert_eq!(r.target, expected, "{r:?}");
        assert_eq!(r.header("x-api-key"), Some(KEY), "{r:?}");
    }

    // Heartbeats carry the room count.
    s.create_room("one").await;
    let h = lb.wait_host(BEATS, &name, "1 room", |h| h.rooms == 1).await;
    assert_eq!(h.capacity, 5);
}

#[tokio::test]
async fn the_advertised_version_is_settable() {
    let lb = FakeLb::start(KEY, FORGET).await;
    let s = host(&[lb.url()], &["--lb-version", "2.7.1"]).await;
    let name = lb_name(s.port);
    let h = lb.wait_host(BEATS, &name, "registered", |_| true).await;
    assert_eq!(h.version, "2.7.1");
    assert_eq!(lb.find("2.7.1").await.as_deref(), Some(name.as_str()));
    assert_eq!(lb.find("1.0.0").await, None);
}

#[tokio::test]
async fn draining_unregisters_once_and_resuming_registers_again() {
    let lb = FakeLb::start(KEY, FORGET).await;
    let mut s = host(&[lb.url()], &[]).await;
    let name = lb_name(s.port);
    lb.wait_host(BEATS, &name, "registered", |h| h.beats >= 2)
        .await;

    s.admin(Method::POST, "/api/v1/drain").await.expect(200);
    let at_delete = wait_for(BEATS, "the drain's DELETE", || {
        let c = calls(&lb, s.port);
        async move { (deletes(&c) == 1).then_some(c.len()) }
    })
    .await;
    assert!(lb.host(&name).is_none(), "still registered while draining");
    assert_eq!(lb.find("1.0.0").await, None);
    // While draining: no heartbeat, no second DELETE, over many intervals
    // (a window of absence: nothing to await).
    tokio::time::sleep(EVERY * 10).await;
    let c = calls(&lb, s.port);
    assert_eq!(c.len(), at_delete, "requests while draining: {c:?}");
    assert_eq!(c.last().map(|(m, _)| m.as_str()), Some("DELETE"));
    assert!(lb.host(&name).is_none());

    // Resumed: registered again, with a heartbeat of the original shape.
    s.admin(Method::POST, "/api/v1/resume").await.expect(200);
    let h = lb
        .wait_host(BEATS, &name, "registered again", |_| true)
        .await;
    assert_eq!((h.capacity, h.rooms, h.version.as_str()), (5, 0, "1.0.0"));
    assert_eq!(lb.find("1.0.0").await.as_deref(), Some(name.as_str()));
    let c = wait_calls(&lb, s.port, at_delete + 2, "heartbeats after the resume").await;
    assert!(c[at_delete..].iter().all(|(m, _)| m == "PUT"), "{c:?}");
    assert_eq!(deletes(&c), 1);

    // A graceful stop unregisters once more.
    assert!(s.stop_gracefully().await.success());
    assert_eq!(deletes(&calls(&lb, s.port)), 2);
    assert!(lb.host(&name).is_none());
}

#[tokio::test]
async fn a_drained_host_that_stops_does_not_unregister_twice() {
    let lb = FakeLb::start(KEY, FORGET).await;
    let mut s = host(&[lb.url()], &[]).await;
    let name = lb_name(s.port);
    lb.wait_host(BEATS, &name, "registered", |_| true).await;
    s.admin(Method::POST, "/api/v1/drain").await.expect(200);
    wait_for(BEATS, "the drain's DELETE", || {
        let n = deletes(&calls(&lb, s.port));
        async move { (n == 1).then_some(()) }
    })
    .await;
    assert!(s.stop_gracefully().await.success());
    let c = calls(&lb, s.port);
    assert_eq!(deletes(&c), 1, "{c:?}");
    assert_eq!(c.last().map(|(m, _)| m.as_str()), Some("DELETE"));
}

#[tokio::test]
async fn the_first_heartbeat_after_a_restart_reports_the_adopted_rooms() {
    let lb = FakeLb::start(KEY, FORGET).await;
    let s = host(&[lb.url()], &[]).await;
    let name = lb_name(s.port);
    s.create_room("kept-1").await;
    s.create_room("kept-2").await;
    lb.wait_host(BEATS, &name, "2 rooms", |h| h.rooms == 2)
        .await;
    let before = s.started_at().await.expect("the master answers");

    // The rooms are held still across the restart and let go once the new
    // image answers: a heartbeat sent before their adoption would see none.
    let pids = [s.room_pid("kept-1").await, s.room_pid("kept-2").await];
    for &p in &pids {
        procs::signal(p, Signal::SIGSTOP);
    }
    let at_hup = calls(&lb, s.port).len();
    procs::signal(s.pid, Signal::SIGHUP);
    let restarted = wait_for(BEATS, "the restarted master", || async {
        s.started_at().await.filter(|now| *now != before)
    })
    .await;
    for &p in &pids {
        procs::signal(p, Signal::SIGCONT);
    }
    assert_ne!(restarted, before);
    // The new image heartbeats ...
    let c = wait_calls(&lb, s.port, at_hup + 3, "heartbeats after the restart").await;
    // ... and not one heartbeat since the SIGHUP, its first included, said
    // anything but the two running rooms; nor did it unregister.
    for (method, seg) in &c[at_hup..] {
        assert_eq!(method, "PUT", "{c:?}");
        assert_eq!(seg[2..], ["5", "2", "1.0.0"], "{c:?}");
    }
    let rooms = s.rooms().await;
    assert_eq!(rooms.len(), 2, "{rooms:?}");
}

#[tokio::test]
async fn a_refused_load_balancer_is_reported_with_its_cause() {
    // Nothing listens on this port.
    let dead = format!("http://127.0.0.1:{}", procs::free_port());
    let s = host(std::slice::from_ref(&dead), &[]).await;
    let st = wait_for(BEATS, "a failed heartbeat", || {
        let (s, url) = (&s, dead.clone());
        async move {
            let st = lb_status_of(s, &url).await;
            st["lastError"].as_str().is_some().then_some(st)
        }
    })
    .await;
    let err = st["lastError"].as_str().unwrap_or("").to_lowercase();
    assert!(err.contains("connection refused"), "{st}");
    wait_for(BEATS, "the cause in the log", || {
        let logs = s.logs().to_lowercase();
        async move {
            logs.lines()
                .any(|l| {
                    l.contains("load balancer heartbeat failed") && l.contains("connection refused")
                })
                .then_some(())
        }
    })
    .await;
}
