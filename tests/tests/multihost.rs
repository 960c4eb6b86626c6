//! Several hosts behind load balancers speaking the original chatserver's
//! protocol (`PUT /register/{name}/{capacity}/{rooms}/{version}`, `DELETE
//! /register/{name}`, `GET /find/{version}`), played by a stand-in inside the
//! test (see `edge_common::FakeLb`).

mod edge_common;

use std::time::Duration;

use chat_tests::{Server, ServerOpts, procs, within};
use edge_common::{Blackhole, FakeLb, lb_name, lb_status_of, master_version};
use reqwest::Method;
use serde_json::Value;

/// How long the stand-in remembers a silent host (the original: 30 s).
const FORGET: Duration = Duration::from_secs(2);
/// Bound of waits for heartbeats (every 200 ms) to show up.
const BEATS: Duration = Duration::from_secs(10);

/// A master that heartbeats `lbs` every 200 ms with `key`, registering as
/// `http://127.0.0.1:PORT`.
async fn host(lbs: &[String], key: &str, room_ports: u16) -> Server {
    let mut opts = ServerOpts::new().args([
        "--load-balancers",
        &lbs.join(","),
        "--lb-key",
        key,
        "--lb-interval",
        "200ms",
        "--host",
        "http://127.0.0.1",
    ]);
    opts.room_ports = room_ports;
    Server::start(opts).await
}

/// Creates a room on whichever host `name` designates (`http://127.0.0.1:PORT`).
async fn create_on(hosts: &[&Server], name: &str, room: &str) -> u16 {
    let s = hosts
        .iter()
        .find(|s| lb_name(s.port) == name)
        .unwrap_or_else(|| panic!("find answered {name}, which is none of the hosts"));
    let r = s
        .request(
            Method::POST,
            &format!("{name}/api/v1/room/{room}"),
            Some(&s.key),
            None,
        )
        .await;
    r.expect(200);
    assert_eq!(r.data()["message"], "Room created", "{}", r.text);
    r.data()["port"].as_u64().unwrap() as u16
}

#[tokio::test]
async fn rooms_go_to_the_emptier_host_and_hosts_leave_the_pool() {
    let lb = FakeLb::start("lb-secret", FORGET).await;
    let lbs = [lb.url()];
    let mut a = host(&lbs, "lb-secret", 10).await;
    let mut b = host(&lbs, "lb-secret", 10).await;
    // The original chatserver's version, whatever our crate's is.
    let version = "1.0.0".to_owned();
    assert_ne!(master_version(&a).await, "", "GET /api/v1 has a version");
    let (na, nb) = (lb_name(a.port), lb_name(b.port));

    // Both register, with their capacity, no rooms and their version.
    for n in [&na, &nb] {
        let h = lb.wait_host(BEATS, n, "registered", |h| h.rooms == 0).await;
        assert_eq!(h.capacity, 10, "{n}: {h:?}");
        assert_eq!(h.version, version);
    }
    assert_eq!(lb.live_hosts(), {
        let mut v = vec![na.clone(), nb.clone()];
        v.sort();
        v
    });
    // Only the exact version is found.
    assert_eq!(lb.find("0.0.0-other").await, None);

    // Three rooms on A directly: find then points at B, and rooms created
    // where it points land on B until both hosts are level.
    for i in 0..3 {
        a.create_room(&format!("a{i}")).await;
    }
    lb.wait_host(BEATS, &na, "3 rooms", |h| h.rooms == 3).await;
    for i in 0..3 {
        let chosen = lb.find(&version).await.expect("a host");
        assert_eq!(chosen, nb, "placement {i}: A has 3 rooms, B has {i}");
        create_on(&[&a, &b], &chosen, &format!("via-lb-{i}")).await;
        lb.wait_host(BEATS, &nb, "the new room", |h| h.rooms == i + 1)
            .await;
    }
    assert_eq!(b.room_names().await.len(), 3);
    assert_eq!(a.room_names().await.len(), 3);

    // Two more on B: A is the emptier host...
    b.create_room("b-extra-1").await;
    b.create_room("b-extra-2").await;
    lb.wait_host(BEATS, &nb, "5 rooms", |h| h.rooms == 5).await;
    assert_eq!(lb.find(&version).await.as_deref(), Some(na.as_str()));

    // ... until A drains: it then unregisters (the load balancer would hand
    // out a full host all the same) and is no longer chosen, although it has
    // fewer rooms.
    a.admin(Method::POST, "/api/v1/drain").await.expect(200);
    chat_tests::wait_for(BEATS, "A's DELETE", || {
        let gone = lb.deleted().contains(&na);
        async move { gone.then_some(()) }
    })
    .await;
    assert_eq!(lb.find(&version).await.as_deref(), Some(nb.as_str()));
    let health = a.api(Method::GET, "/api/v1/health").await;
    assert_eq!(health.status, 503, "{}", health.text);
    assert!(!lb.live_hosts().contains(&na));

    // Resumed, A is chosen again.
    a.admin(Method::POST, "/api/v1/resume").await.expect(200);
    lb.wait_host(BEATS, &na, "capacity back", |h| h.capacity == 10)
        .await;
    assert_eq!(lb.find(&version).await.as_deref(), Some(na.as_str()));

    // Make B the better choice again (A: 6 rooms, B: 5), then SIGKILL B's
    // master: no DELETE, but the load balancer forgets it after FORGET.
    for i in 0..3 {
        a.create_room(&format!("a-more-{i}")).await;
    }
    lb.wait_host(BEATS, &na, "6 rooms", |h| h.rooms == 6).await;
    assert_eq!(lb.find(&version).await.as_deref(), Some(nb.as_str()));
    b.remember_workers().await;
    procs::sigkill(b.pid);
    b.wait_exit(Duration::from_secs(10)).await;
    lb.wait_find(FORGET + BEATS, &version, Some(&na)).await;
    assert_eq!(lb.live_hosts(), vec![na.clone()]);
    assert!(
        !lb.deleted().contains(&nb),
        "a killed host cannot unregister: {:?}",
        lb.deleted()
    );

    // A graceful stop unregisters with DELETE: A is gone at once, not after
    // the timeout.
    let beats_before = lb.host(&na).expect("A is known").beats;
    let status = within(
        Duration::from_secs(20),
        "A's graceful stop",
        a.stop_gracefully(),
    )
    .await;
    assert!(status.success(), "A exited with {status}");
    // Its drain's DELETE, then its stop's.
    assert_eq!(lb.deleted(), vec![na.clone(), na.clone()]);
    assert!(lb.host(&na).is_none(), "A is still known after its DELETE");
    assert!(lb.live_hosts().is_empty(), "{:?}", lb.live_hosts());
    assert_eq!(lb.find(&version).await, None);
    assert!(beats_before >= 1);
    assert_eq!(lb.refused(), 0);
}

#[tokio::test]
async fn a_wrong_load_balancer_key_is_refused_and_reported() {
    // The host's key matches `good` but not `picky`.
    let good = FakeLb::start("right-key", FORGET).await;
    let picky = FakeLb::start("other-key", FORGET).await;
    let s = host(&[good.url(), picky.url()], "right-key", 5).await;
    let name = lb_name(s.port);

    good.wait_host(BEATS, &name, "registered", |h| h.beats >= 2)
        .await;
    // `picky` answers 400 "Not allowed" every time and knows nothing of it.
    chat_tests::wait_for(BEATS, "3 refusals", || {
        let n = picky.refused();
        async move { (n >= 3).then_some(()) }
    })
    .await;
    assert!(picky.host(&name).is_none());
    assert!(picky.live_hosts().is_empty());
    // On the wire: PUT /register/{encodeURIComponent(HOST:PORT)}/{capacity}/
    // {rooms}/{version} with the host's key.
    let version = "1.0.0";
    let expected = format!(
        "/register/http%3A%2F%2F127.0.0.1%3A{}/5/0/{version}",
        s.port
    );
    for req in picky.stub.requests() {
        assert_eq!(req.method, "PUT");
        assert_eq!(req.target, expected);
        assert_eq!(req.header("x-api-key"), Some("right-key"));
    }

    // The admin API shows the failures of `picky` only.
    let st = chat_tests::wait_for(BEATS, "picky's breaker open", || {
        let s = &s;
        let url = picky.url();
        async move {
            let st = lb_status_of(s, &url).await;
            (st["breaker"] == "open").then_some(st)
        }
    })
    .await;
    assert!(st["totalFailures"].as_u64().unwrap() >= 3, "{st}");
    assert!(st["consecutiveFailures"].as_u64().unwrap() >= 3, "{st}");
    let err = st["lastError"].as_str().unwrap_or("");
    assert!(err.contains("400"), "{st}");
    assert!(err.contains("Not allowed"), "{st}");
    assert!(st["lastSuccessSecsAgo"].is_null(), "{st}");

    let ok = lb_status_of(&s, &good.url()).await;
    assert_eq!(ok["breaker"], "closed", "{ok}");
    assert_eq!(ok["totalFailures"], 0, "{ok}");
    assert!(ok["lastSuccessSecsAgo"].is_u64(), "{ok}");
    assert!(ok["lastError"].is_null(), "{ok}");
}

#[tokio::test]
async fn a_load_balancer_that_never_answers_delays_nothing() {
    let hole = Blackhole::start().await;
    let good = FakeLb::start("k", FORGET).await;
    let s = host(&[hole.url(), good.url()], "k", 5).await;
    let name = lb_name(s.port);

    // The working load balancer hears from the host as usual.
    good.wait_host(BEATS, &name, "registered", |h| h.rooms == 0)
        .await;

    // Rooms are created (and joined) while heartbeats to the black hole hang:
    // generous bounds only.
    let port = within(
        Duration::from_secs(5),
        "creating a room",
        s.create_room("busy"),
    )
    .await;
    let c = within(
        Duration::from_secs(5),
        "joining the room",
        chat_tests::Client::guest(port, "alice"),
    )
    .await;
    assert_eq!(c.welcome["room"], "busy");
    let health = within(
        Duration::from_secs(5),
        "health",
        s.api(Method::GET, "/api/v1/health"),
    )
    .await;
    health.expect(200);
    good.wait_host(BEATS, &name, "the room", |h| h.rooms == 1)
        .await;

    // Three timed-out calls (1 s each) open the black hole's breaker.
    let st = chat_tests::wait_for(Duration::from_secs(20), "the breaker to open", || {
        let s = &s;
        let url = hole.url();
        async move {
            let st = lb_status_of(s, &url).await;
            (st["breaker"] == "open").then_some(st)
        }
    })
    .await;
    assert!(st["consecutiveFailures"].as_u64().unwrap() >= 3, "{st}");
    assert!(st["lastError"].is_string(), "{st}");
    // The good one is unaffected and still fresh.
    let ok = lb_status_of(&s, &good.url()).await;
    assert_eq!(ok["breaker"], "closed", "{ok}");
    let beats = good.host(&name).unwrap().beats;
    good.wait_host(BEATS, &name, "more heartbeats", |h| h.beats > beats)
        .await;

    // Another room, with the breaker open.
    within(
        Duration::from_secs(5),
        "creating a second room",
        s.create_room("busy-2"),
    )
    .await;
    let load = s.admin(Method::GET, "/api/v1/load").await;
    load.expect(200);
    let lbs: &Vec<Value> = load.data()["loadBalancers"].as_array().unwrap();
    assert_eq!(lbs.len(), 2, "{}", load.text);
}
