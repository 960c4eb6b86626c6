//! Users across hosts (issue 13): two masters with their own run dirs and
//! ports share one nx-27017 store and one redis-server (both started here,
//! never skipped). Direct messages, receipts, blocks and presence cross
//! hosts through Redis; a dead host's users go offline within the presence
//! TTL; a Redis outage loses nothing acknowledged and live delivery
//! resumes after it.

mod data_common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use chat_tests::{Client, RedisServer, Server, ServerOpts, procs, token, wait_for, within};
use data_common::Nx;
use hmac::{Hmac, KeyInit, Mac};
use mongodb::bson::doc;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

const DB: &str = "dm_hosts";
/// Presence TTL of the hosts: short, so a dead host is noticed quickly.
const TTL: &str = "3s";
/// Bound of waits that cross Redis (presence refreshes, expiries,
/// reconnects).
const CROSS: Duration = Duration::from_secs(20);

/// Two hosts sharing a store and a Redis.
struct Pool {
    nx: Nx,
    redis: RedisServer,
    secret: String,
    h1: Server,
    h2: Server,
}

impl Pool {
    async fn start() -> Pool {
        Self::start_with(&[], &[]).await
    }

    /// Both hosts with `args` and environment `env` besides.
    async fn start_with(args: &[&str], env: &[(&str, &str)]) -> Pool {
        Self::start_ttl(TTL, args, env).await
    }

    /// Both hosts with presence TTL `ttl`.
    async fn start_ttl(ttl: &str, args: &[&str], env: &[(&str, &str)]) -> Pool {
        let nx = Nx::start_memory().await;
        let redis = RedisServer::start().await;
        let secret = chat_tests::random_string(32);
        let mut args = args.to_vec();
        args.extend(["--presence-ttl", ttl]);
        let h1 = Self::host(&nx, &redis, &secret, "host-1", &args, env).await;
        let h2 = Self::host(&nx, &redis, &secret, "host-2", &args, env).await;
        Pool {
            nx,
            redis,
            secret,
            h1,
            h2,
        }
    }

    /// A master on the shared store and Redis (its URL, with the password,
    /// in the environment only).
    async fn host(
        nx: &Nx,
        redis: &RedisServer,
        secret: &str,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut opts = ServerOpts::new()
            .jwt_secret(secret.to_owned())
            .args(["--store", &nx.uri(DB), "--host", name])
            .args(args.iter().copied())
            .env("REDIS_URL", redis.url());
        for (k, v) in env {
            opts = opts.env(*k, *v);
        }
        Server::start(opts).await
    }

    async fn join(&self, port: u16, room: &str, user: &str) -> Client {
        Client::with_token(port, &token::member(&self.secret, user, room)).await
    }
}

fn dm(to: &str, text: &str, cid: &str) -> Value {
    json!({"type":"dm","to":to,"text":text,"client_id":cid})
}

/// Sends a DM and waits for its ack; the ack.
async fn dm_acked(c: &mut Client, to: &str, text: &str) -> Value {
    let cid = chat_tests::random_string(8);
    c.send_json(dm(to, text, &cid)).await;
    let ack = c.recv_type("ack").await;
    assert_eq!(ack["client_id"], cid.as_str(), "{ack}");
    ack
}

/// `GET /api/v1/users/{user}/presence` on `h` until `online` is `want`.
async fn presence_on(h: &Server, user: &str, want: bool) -> Value {
    wait_for(
        CROSS,
        &format!("{user} online={want} seen from a host"),
        || async {
            let r = h
                .request(
                    Method::GET,
                    &h.api_url(&format!("/api/v1/users/{user}/presence")),
                    Some(&h.key),
                    None,
                )
                .await;
            (r.status == 200 && r.data()["online"] == want).then(|| r.data().clone())
        },
    )
    .await
}

async fn dm_history(c: &mut Client, with: &str) -> Vec<Value> {
    c.send_json(json!({"type":"dm_history","with":with,"limit":100}))
        .await;
    let h = c.recv_type("dm_history").await;
    h["messages"].as_array().cloned().unwrap_or_default()
}

/// The stored DM of `conversation` at `seq`.
async fn stored(nx: &Nx, conversation: &str, seq: u64) -> Option<mongodb::bson::Document> {
    nx.database(DB)
        .await
        .collection::<mongodb::bson::Document>("direct_messages")
        .find_one(doc! { "conversation": conversation, "seq": seq as i64 })
        .await
        .expect("read direct_messages")
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_dm_crosses_hosts_to_every_connection() {
    let p = Pool::start().await;
    let pa = p.h1.create_room("ra").await;
    let pa2 = p.h1.create_room("ra2").await;
    let pb = p.h2.create_room("rb").await;
    let mut alice = p.join(pa, "ra", "alice").await;
    let mut alice2 = p.join(pa2, "ra2", "alice").await;
    let mut bob = p.join(pb, "rb", "bob").await;

    // Host 1 sees bob on host 2, with the room and the host's name.
    let seen = presence_on(&p.h1, "bob", true).await;
    assert_eq!(
        seen["rooms"],
        json!([{"name": "rb", "host": "host-2"}]),
        "{seen}"
    );
    let seen = presence_on(&p.h2, "alice", true).await;
    let rooms: BTreeSet<String> = seen["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}@{}",
                r["name"].as_str().unwrap(),
                r["host"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        rooms,
        BTreeSet::from(["ra@host-1".to_owned(), "ra2@host-1".to_owned()]),
        "{seen}"
    );

    let ack = dm_acked(&mut alice, "bob", "hello across hosts").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    assert_eq!(ack["conversation"], "alice:bob", "{ack}");
    // Acked means stored.
    let doc = stored(&p.nx, "alice:bob", 1)
        .await
        .expect("the acked DM is stored");
    assert_eq!(doc.get_str("text").ok(), Some("hello across hosts"));

    let got = bob.recv_type("dm").await;
    assert_eq!(got["seq"], 1, "{got}");
    assert_eq!(got["from"]["id"], "alice", "{got}");
    assert_eq!(got["text"], "hello across hosts", "{got}");
    let copy = alice2.recv_type("dm").await;
    assert_eq!(copy["seq"], 1, "{copy}");
    assert_eq!(copy["to"], "bob", "{copy}");

    // The answer goes back across, to both of alice's connections.
    let ack = dm_acked(&mut bob, "alice", "hi from host 2").await;
    assert_eq!(ack["seq"], 2, "{ack}");
    for c in [&mut alice, &mut alice2] {
        let got = c.recv_type("dm").await;
        assert_eq!(got["seq"], 2, "{got}");
        assert_eq!(got["text"], "hi from host 2", "{got}");
    }
    // The sending connection got no copy of its own message.
    assert!(
        !bob.skipped.iter().any(|f| f["type"] == "dm"),
        "{:?}",
        bob.skipped
    );
    assert_eq!(dm_history(&mut bob, "alice").await.len(), 2);

    // The Redis password is in no process's command line, and no room
    // inherits REDIS_URL.
    for h in [&p.h1, &p.h2] {
        let mut pids = h.remember_workers().await;
        pids.insert(h.pid);
        for pid in pids {
            let cmdline = procs::cmdline_text(pid);
            assert!(!cmdline.contains(&p.redis.password), "{pid}: {cmdline}");
        }
        for pid in procs::children_of(h.pid) {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&env).contains("REDIS_URL"),
                "room {pid} inherited REDIS_URL"
            );
        }
    }
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn seqs_stay_unique_and_ordered_under_senders_on_both_hosts() {
    const N: usize = 10;
    let p = Pool::start().await;
    let pa = p.h1.create_room("ca").await;
    let pb = p.h2.create_room("cb").await;
    let mut alice = p.join(pa, "ca", "alice").await;
    let mut bob = p.join(pb, "cb", "bob").await;
    presence_on(&p.h1, "bob", true).await;
    presence_on(&p.h2, "alice", true).await;
    // Both send without waiting, interleaved, each on its own host.
    for i in 0..N {
        alice
            .send_json(dm("bob", &format!("a{i}"), &format!("a{i}")))
            .await;
        bob.send_json(dm("alice", &format!("b{i}"), &format!("b{i}")))
            .await;
    }
    let mut seqs = BTreeSet::new();
    for (c, me) in [(&mut alice, "a"), (&mut bob, "b")] {
        let (mut acked, mut received) = (Vec::new(), Vec::new());
        while acked.len() < N || received.len() < N {
            let f = c.recv_json().await;
            match f["type"].as_str() {
                Some("ack") => {
                    let seq = f["seq"].as_u64().expect("seq");
                    assert!(seqs.insert(seq), "seq twice: {f}");
                    acked.push((f["client_id"].as_str().unwrap().to_owned(), seq));
                }
                Some("dm") => received.push(f["seq"].as_u64().expect("seq")),
                _ => {}
            }
        }
        // A sender's own messages are numbered in the order it sent them.
        let ids: Vec<String> = acked.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids, (0..N).map(|i| format!("{me}{i}")).collect::<Vec<_>>());
        assert!(acked.windows(2).all(|w| w[0].1 < w[1].1), "{acked:?}");
        // What the other host delivers arrives in seq order.
        assert!(received.windows(2).all(|w| w[0] < w[1]), "{received:?}");
    }
    assert_eq!(seqs, (1..=2 * N as u64).collect(), "every seq once, no gap");
    let stored: Vec<u64> = dm_history(&mut alice, "bob")
        .await
        .iter()
        .map(|m| m["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(stored, (1..=2 * N as u64).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------

/// The next `presence` frame about `user`.
async fn presence_of(c: &mut Client, user: &str) -> Value {
    loop {
        let p = c.recv_type("presence").await;
        if p["user"] == user {
            return p;
        }
    }
}

/// The next `presence` frame about `user`, waiting up to [`CROSS`].
async fn presence_within(c: &mut Client, user: &str) -> Value {
    within(CROSS, &format!("a presence frame about {user}"), async {
        loop {
            match c.next_event(CROSS).await {
                chat_tests::Event::Json(p) if p["type"] == "presence" && p["user"] == user => {
                    return p;
                }
                chat_tests::Event::Json(_) => {}
                other => panic!("waiting for presence of {user}: {other:?}"),
            }
        }
    })
    .await
}

/// Kills a host: its master and its rooms (SIGKILL), as a crash would.
async fn kill_host(h: &mut Server) {
    let mut pids = h.remember_workers().await;
    pids.remove(&h.pid);
    h.kill_master().await;
    for pid in pids {
        procs::sigkill(pid);
    }
}

#[tokio::test]
async fn watch_sees_other_hosts_and_a_dead_hosts_users_go_offline() {
    let mut p = Pool::start().await;
    let pw = p.h1.create_room("wa").await;
    let pw2 = p.h1.create_room("wa2").await;
    let pv = p.h2.create_room("wb").await;
    let mut carol = p.join(pw, "wa", "carol").await;
    carol
        .send_json(json!({"type":"watch","users":["alice","dave"]}))
        .await;
    let a = presence_of(&mut carol, "alice").await;
    assert_eq!(
        a,
        json!({"type":"presence","user":"alice","online":false,"last_seen":null})
    );
    assert_eq!(presence_of(&mut carol, "dave").await["online"], false);

    // Alice comes online on host 2: carol on host 1 hears it.
    let mut alice = p.join(pv, "wb", "alice").await;
    assert_eq!(presence_within(&mut carol, "alice").await["online"], true);
    // A second connection on host 1, then the one on host 2 goes: still
    // online (no change told).
    let mut alice2 = p.join(pw2, "wa2", "alice").await;
    let both = wait_for(CROSS, "alice on both hosts", || async {
        let r = p.h2.api(Method::GET, "/api/v1/users/alice/presence").await;
        (r.data()["rooms"].as_array().map(Vec::len) == Some(2)).then(|| r.data().clone())
    })
    .await;
    assert_eq!(both["online"], true, "{both}");
    alice.close().await;
    presence_on(&p.h1, "alice", true).await;
    wait_for(CROSS, "alice gone from host 2", || async {
        let r = p.h1.api(Method::GET, "/api/v1/users/alice/presence").await;
        (r.data()["rooms"] == json!([{"name": "wa2", "host": "host-1"}])).then_some(())
    })
    .await;
    // Her last connection closes: offline, with the time.
    alice2.close().await;
    let off = presence_within(&mut carol, "alice").await;
    assert_eq!(off["online"], false, "{off}");
    assert!(off["last_seen"].as_u64().is_some(), "{off}");
    let rest = carol.sync().await;
    assert!(
        !rest.iter().any(|f| f["type"] == "presence"),
        "one change per transition: {rest:?}"
    );

    // Dave is on host 2, which dies: within the TTL he is offline.
    let _dave = p.join(pv, "wb", "dave").await;
    assert_eq!(presence_within(&mut carol, "dave").await["online"], true);
    kill_host(&mut p.h2).await;
    let off = presence_within(&mut carol, "dave").await;
    assert_eq!(off["online"], false, "{off}");
    assert!(off["last_seen"].as_u64().is_some(), "{off}");
    let seen = presence_on(&p.h1, "dave", false).await;
    assert_eq!(seen["rooms"], json!([]), "{seen}");
}

// ---------------------------------------------------------------------------

/// `/readyz` on `h` until its `redis.up` is `up`.
async fn redis_ready(h: &Server, up: bool) -> Value {
    wait_for(CROSS, &format!("/readyz with redis up={up}"), || async {
        let r = h.admin(Method::GET, "/readyz").await;
        (r.data()["redis"]["up"] == up).then(|| r.data().clone())
    })
    .await
}

#[tokio::test]
async fn a_redis_outage_loses_nothing_acked_and_live_delivery_resumes() {
    let mut p = Pool::start().await;
    let pa = p.h1.create_room("oa").await;
    let pb = p.h2.create_room("ob").await;
    let mut alice = p.join(pa, "oa", "alice").await;
    let mut bob = p.join(pb, "ob", "bob").await;
    presence_on(&p.h1, "bob", true).await;
    let ready = redis_ready(&p.h1, true).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(dm_acked(&mut alice, "bob", "before").await["seq"], 1);
    assert_eq!(bob.recv_type("dm").await["text"], "before");

    p.redis.kill();
    // The outage shows, and the host stays ready (chat goes on).
    let ready = redis_ready(&p.h1, false).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready["redis"]["down_since"].as_u64().is_some(), "{ready}");
    let m = chat_tests::metrics::scrape(&p.h1).await;
    assert_eq!(m.value("chat_redis_up", &[]), Some(0.0));
    // DMs are still stored and acked, on both hosts.
    let mut acked = vec![1];
    for i in 0..3 {
        acked.push(
            dm_acked(&mut alice, "bob", &format!("during {i}")).await["seq"]
                .as_u64()
                .unwrap(),
        );
    }
    acked.push(
        dm_acked(&mut bob, "alice", "from bob during").await["seq"]
            .as_u64()
            .unwrap(),
    );
    assert_eq!(acked, vec![1, 2, 3, 4, 5]);
    // Acks never wait for Redis; its publications fail once tried (counted).
    wait_for(CROSS, "the lost publications counted", || async {
        let m = chat_tests::metrics::scrape(&p.h1).await;
        (m.sum("chat_redis_errors_total") >= 1.0).then_some(())
    })
    .await;
    let ready = redis_ready(&p.h1, false).await;
    assert_eq!(ready["redis"]["commands"], false, "{ready}");

    p.redis.restart().await;
    redis_ready(&p.h1, true).await;
    redis_ready(&p.h2, true).await;
    let m = chat_tests::metrics::scrape(&p.h1).await;
    assert_eq!(m.value("chat_redis_up", &[]), Some(1.0));
    // The restarted Redis is empty: the hosts publish their presence again.
    presence_on(&p.h1, "bob", true).await;
    presence_on(&p.h2, "alice", true).await;
    // Live delivery resumes.
    assert_eq!(dm_acked(&mut alice, "bob", "after").await["seq"], 6);
    let got = within(CROSS, "the DM after the outage", async {
        loop {
            let f = bob.recv_type("dm").await;
            if f["text"] == "after" {
                return f;
            }
        }
    })
    .await;
    assert_eq!(got["seq"], 6);
    // Nothing acked is lost: the store has all of it, and bob catches up.
    let seqs: Vec<u64> = dm_history(&mut bob, "alice")
        .await
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    let bob2 = p.join(pb, "ob", "bob").await;
    // Unread: what alice sent after bob's own last DM (seq 5).
    let dms = &bob2.welcome["dms"];
    assert_eq!(dms["unread"], 1, "{}", bob2.welcome);
    assert_eq!(dms["conversations"][0]["last"]["seq"], 6, "{dms}");
    let m = chat_tests::metrics::scrape(&p.h2).await;
    assert!(m.sum("chat_redis_received_total") >= 2.0);
}

// ---------------------------------------------------------------------------

/// A webhook receiver: records every POST, answers 200.
struct Receiver {
    url: String,
    got: mpsc::UnboundedReceiver<(HeaderMap, Bytes)>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let (tx, got) = mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((headers, body));
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url: format!("http://127.0.0.1:{port}/hook"),
            got,
            _task: task,
        }
    }

    /// The next `dm.offline` (other events skipped), its signature checked.
    async fn dm_offline(&mut self, secret: &str) -> Value {
        within(CROSS, "a dm.offline webhook", async {
            loop {
                let (headers, body) = self.got.recv().await.expect("receiver stopped");
                let json: Value = serde_json::from_slice(&body).unwrap();
                if json["type"] != "dm.offline" {
                    continue;
                }
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                let ts = h("x-chat-timestamp");
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                mac.update(ts.as_bytes());
                mac.update(b".");
                mac.update(&body);
                let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                assert_eq!(h("x-chat-signature"), want, "bad signature on {json}");
                return json;
            }
        })
        .await
    }
}

#[tokio::test]
async fn dm_offline_fires_only_when_offline_on_every_host() {
    let hook = Receiver::start().await;
    let secret = "hook-secret";
    let p = Pool::start_with(&["--webhook-url", &hook.url], &[("WEBHOOK_SECRET", secret)]).await;
    let mut hook = hook;
    let pa = p.h1.create_room("fa").await;
    let pb = p.h2.create_room("fb").await;
    let mut alice = p.join(pa, "fa", "alice").await;
    let mut bob = p.join(pb, "fb", "bob").await;
    presence_on(&p.h1, "bob", true).await;
    // Bob is online on host 2 only: no event for him. Carol is nowhere.
    dm_acked(&mut alice, "bob", "you are online").await;
    dm_acked(&mut alice, "carol", "you are not").await;
    // Host 1's events go out in order: the first dm.offline is carol's.
    let ev = hook.dm_offline(secret).await;
    assert_eq!(ev["data"]["to"], "carol", "{ev}");
    assert_eq!(ev["data"]["from"], "alice", "{ev}");
    assert_eq!(ev["data"]["seq"], 1, "{ev}");
    // Bob leaves host 2: now he is offline everywhere.
    bob.close().await;
    presence_on(&p.h1, "bob", false).await;
    dm_acked(&mut alice, "bob", "now you are offline").await;
    let ev = hook.dm_offline(secret).await;
    assert_eq!(ev["data"]["to"], "bob", "{ev}");
    assert_eq!(ev["data"]["seq"], 2, "{ev}");
    assert_eq!(ev["data"]["text"], "now you are offline", "{ev}");
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn blocks_and_read_receipts_cross_hosts() {
    let p = Pool::start().await;
    let pa = p.h1.create_room("ka").await;
    let pb = p.h2.create_room("kb").await;
    let mut alice = p.join(pa, "ka", "alice").await;
    let mut bob = p.join(pb, "kb", "bob").await;
    presence_on(&p.h1, "bob", true).await;
    presence_on(&p.h2, "alice", true).await;

    // Bob (host 2) blocks alice (host 1): refused, nothing stored.
    bob.send_json(json!({"type":"block","user":"alice"})).await;
    assert_eq!(bob.recv_type("blocked").await["blocked"], true);
    alice.send_json(dm("bob", "let me in", "x1")).await;
    let e = alice.recv_type("error").await;
    assert_eq!(e["code"], "forbidden", "{e}");
    assert!(
        stored(&p.nx, "alice:bob", 1).await.is_none(),
        "stored anyway"
    );
    bob.send_json(json!({"type":"unblock","user":"alice"}))
        .await;
    assert_eq!(bob.recv_type("blocked").await["blocked"], false);

    for t in ["one", "two"] {
        dm_acked(&mut alice, "bob", t).await;
        assert_eq!(bob.recv_type("dm").await["text"], t);
    }
    // Nothing from the blocked time reached bob.
    assert!(!bob.skipped.iter().any(|f| f["text"] == "let me in"));
    // Bob reads on host 2: the receipt reaches alice on host 1.
    bob.send_json(json!({"type":"read","with":"alice","seq":2}))
        .await;
    let r = alice.recv_type("read").await;
    assert_eq!(
        r,
        json!({"type":"read","by":"bob","conversation":"alice:bob","seq":2})
    );
    assert_eq!(bob.recv_type("read").await["seq"], 2);
    // Unread counts follow: none left for bob, and alice's welcome on host 2.
    let bob2 = p.join(pb, "kb", "bob").await;
    assert_eq!(bob2.welcome["dms"]["unread"], 0, "{}", bob2.welcome);
    dm_acked(&mut alice, "bob", "three").await;
    let bob3 = p.join(pb, "kb", "bob").await;
    assert_eq!(bob3.welcome["dms"]["unread"], 1, "{}", bob3.welcome);
}

#[tokio::test]
async fn a_host_stopped_on_purpose_takes_its_users_offline_at_once() {
    // A TTL far beyond the wait: only the stopping host's goodbye can do it.
    let mut p = Pool::start_ttl("120s", &[], &[]).await;
    let pa = p.h1.create_room("ga").await;
    let pb = p.h2.create_room("gb").await;
    let mut carol = p.join(pa, "ga", "carol").await;
    let _erin = p.join(pb, "gb", "erin").await;
    carol
        .send_json(json!({"type":"watch","users":["erin"]}))
        .await;
    let mut on = presence_of(&mut carol, "erin").await;
    if on["online"] == false {
        on = presence_within(&mut carol, "erin").await;
    }
    assert_eq!(on["online"], true, "{on}");
    p.h2.stop_gracefully().await;
    let off = presence_within(&mut carol, "erin").await;
    assert_eq!(off["online"], false, "{off}");
    presence_on(&p.h1, "erin", false).await;
}
