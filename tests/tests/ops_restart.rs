//! Restarts through the admin API: a room's (clients see 1012 and resume)
//! and the master's in place (rooms and clients stay).

mod ops_common;

use std::collections::BTreeMap;
use std::time::Duration;

use chat_tests::procs::pid_alive;
use chat_tests::{Client, Resp, Server, wait_for};
use ops_common::*;
use reqwest::Method;
use serde_json::{Value, json};

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
