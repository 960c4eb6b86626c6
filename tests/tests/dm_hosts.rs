//! Users across hosts (issue 13): two masters with their own run dirs and
//! ports share one nx-27017 store and one redis-server (both started here,
//! never skipped). Direct messages, receipts, blocks and presence cross
//! hosts through Redis; a dead host's users go offline within the presence
//! TTL; a Redis outage loses nothing acknowledged and live delivery
//! resumes after it.

mod data_common;

use std::collections::BTreeSet;
use std::time::Duration;

use chat_tests::{Client, RedisServer, Server, ServerOpts, procs, token, wait_for};
use data_common::Nx;
use mongodb::bson::doc;
use reqwest::Method;
use serde_json::{Value, json};

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
        let nx = Nx::start_memory().await;
        let redis = RedisServer::start().await;
        let secret = chat_tests::random_string(32);
        let h1 = Self::host(&nx, &redis, &secret, "host-1", &[]).await;
        let h2 = Self::host(&nx, &redis, &secret, "host-2", &[]).await;
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
    async fn host(nx: &Nx, redis: &RedisServer, secret: &str, name: &str, args: &[&str]) -> Server {
        let opts = ServerOpts::new()
            .jwt_secret(secret.to_owned())
            .args([
                "--store",
                &nx.uri(DB),
                "--host",
                name,
                "--presence-ttl",
                TTL,
            ])
            .args(args.iter().copied())
            .env("REDIS_URL", redis.url());
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
