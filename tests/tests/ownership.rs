//! One room name, one owner, across hosts that share a store (two masters
//! on one nx-27017): a create of a name another host serves answers where
//! it is (its port, `host` and `url`); clients of both hosts chat in the one
//! room and no acknowledged message is lost; when the owner dies and its
//! lease (shortened by the hidden `--owner-lease` flag) ends, the other host
//! takes the name over and the room's history goes on there, in a new epoch.

mod data_common;

use std::time::Duration;

use chat_tests::{Client, Server, ServerOpts, procs};
use data_common::{Nx, history_all, seq_texts};
use mongodb::bson::doc;

const LEASE: &str = "2s";

async fn host(uri: &str, name: &str) -> Server {
    Server::start(ServerOpts::new().args([
        "--store",
        uri,
        "--owner-lease",
        LEASE,
        "--host",
        name,
        "--public-url",
        &format!("http://{name}.example"),
    ]))
    .await
}

/// Says `n` messages, each acked; returns their texts.
async fn chat(c: &mut Client, who: &str, n: usize) -> Vec<String> {
    let mut texts = Vec::new();
    for i in 0..n {
        let text = format!("{who} {i}");
        c.say_acked(&text).await;
        texts.push(text);
    }
    texts
}

#[tokio::test]
async fn one_owner_per_room_name_and_a_takeover_after_the_owner_dies() {
    let nx = Nx::start_memory().await;
    let uri = nx.uri("owners");
    let mut a = host(&uri, "host-a").await;
    let b = host(&uri, "host-b").await;

    // The same name created on both: one room, on A; B says where it is.
    let on_a = a.create_room_with("lobby", None).await;
    on_a.expect(200);
    assert_eq!(on_a.data()["message"], "Room created", "{}", on_a.text);
    let port = on_a.data()["port"].as_u64().expect("port") as u16;
    let on_b = b.create_room_with("lobby", None).await;
    on_b.expect(200);
    assert_eq!(
        on_b.data()["message"],
        "lobby already exists",
        "{}",
        on_b.text
    );
    assert_eq!(on_b.data()["port"].as_u64(), Some(u64::from(port)));
    assert_eq!(on_b.data()["host"], "host-a", "{}", on_b.text);
    assert_eq!(
        on_b.data()["url"],
        format!("ws://host-a.example/rooms/{port}"),
        "{}",
        on_b.text
    );
    assert!(
        !b.room_names().await.contains(&"lobby".to_owned()),
        "B runs no lobby of its own"
    );
    // A name only B was asked for is B's.
    let elsewhere = b.create_room("only-on-b").await;

    // Clients sent by either host chat in the one room; a room on B too.
    let mut alice = Client::guest(port, "alice").await;
    let mut bob = Client::guest(port, "bob").await;
    let mut carol = Client::guest(elsewhere, "carol").await;
    let mut acked = chat(&mut alice, "alice", 5).await;
    acked.extend(chat(&mut bob, "bob", 5).await);
    chat(&mut carol, "carol", 3).await;
    let first_epoch = alice.welcome["epoch"].clone();

    // A dies with its room; once its lease ends, B takes the name over.
    let room_pid = a.room_pid("lobby").await;
    procs::sigkill(a.pid);
    procs::sigkill(room_pid);
    a.wait_exit(Duration::from_secs(10)).await;
    drop((alice, bob));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let new_port = loop {
        let r = b.create_room_with("lobby", None).await;
        r.expect(200);
        if r.data()["message"] == "Room created" {
            break r.data()["port"].as_u64().expect("port") as u16;
        }
        assert_eq!(r.data()["host"], "host-a", "{}", r.text);
        assert!(
            tokio::time::Instant::now() < deadline,
            "B never took the name over: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // History goes on on B, in a new epoch, with every acked message.
    let mut dave = Client::guest(new_port, "dave").await;
    assert_ne!(dave.welcome["epoch"], first_epoch, "{}", dave.welcome);
    let after = chat(&mut dave, "dave", 2).await;
    let texts: Vec<String> = seq_texts(&history_all(&mut dave, 4).await)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let mut expected = acked.clone();
    expected.extend(after.clone());
    assert_eq!(texts, expected, "history after the takeover");

    // The store holds each acked message once.
    let stored = nx.stored_texts("owners", "lobby").await;
    assert_eq!(stored, expected, "messages in the store");
    // The owner of record is B now.
    let owner = nx
        .find("owners", "owners", doc! { "_id": "lobby" }, doc! {})
        .await;
    assert_eq!(
        owner.first().and_then(|d| d.get_str("host").ok()),
        Some("host-b"),
        "{owner:?}"
    );
}
